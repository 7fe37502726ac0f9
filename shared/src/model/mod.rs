//! Convoy's own domain types, apart from the wire (proto) and Kubernetes edges. The types the
//! render engine needs too live in `convoy-model` (serde only) and are re-exported here;
//! conversions to and from the proto types live here, in one place.

pub mod assignment;
pub mod report;

pub use assignment::{Assignment, AssignmentError, GateQueries, HeldObjects, pack_objects, unpack_objects};
pub use convoy_model::{
    AppAssignment, HealthRule, IgnoreRule, Ignored, NAMESPACE_OF_ANNOTATION, ObjectRef, SyncPolicy, canonical_json,
    document_json,
};

/// `ignoreDifferences` rules, for [`convoy_model::ignore`]'s types on the wire.
pub mod ignore {
    use crate::proto;
    use convoy_model::IgnoreRule;

    /// The wire form of a rule.
    pub fn to_wire(rule: &IgnoreRule) -> proto::IgnoreDifference {
        proto::IgnoreDifference {
            group: rule.group.clone(),
            kind: rule.kind.clone(),
            name: rule.name.clone(),
            namespace: rule.namespace.clone(),
            json_pointers: rule.json_pointers.clone(),
            managed_fields_managers: rule.managed_fields_managers.clone(),
        }
    }

    /// A rule read from the wire.
    pub fn from_wire(rule: &proto::IgnoreDifference) -> IgnoreRule {
        IgnoreRule {
            group: rule.group.clone(),
            kind: rule.kind.clone(),
            name: rule.name.clone(),
            namespace: rule.namespace.clone(),
            json_pointers: rule.json_pointers.clone(),
            managed_fields_managers: rule.managed_fields_managers.clone(),
        }
    }
}

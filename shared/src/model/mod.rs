//! Convoy's own domain types, apart from the wire (proto) and Kubernetes edges. Conversions to
//! and from the proto types live here, in one place.

pub mod assignment;
pub mod ignore;
pub mod report;

pub use assignment::{
    AppAssignment, Assignment, AssignmentError, HeldObjects, NAMESPACE_OF_ANNOTATION, ObjectRef, SyncPolicy,
    canonical_json, document_json, pack_objects, unpack_objects,
};
pub use ignore::{IgnoreRule, Ignored};

//! `ignoreDifferences`: fields of some objects that another manager owns (an HPA's replicas, a
//! webhook's sidecar, a controller's defaults), in the shape Argo CD users know. Written in an
//! app's `app.yaml`, an environment of `convoy.yaml` or the fleet as a whole; carried to the
//! agent with the app. The agent does not report them as drift, does not heal them, and does not
//! send them in its apply once the object exists, so the other manager keeps them.
//!
//! Decisions: which objects a rule covers ([`IgnoreRule::matches`]), and whether a rule is
//! well-formed ([`IgnoreRule::validate`]).

use serde::Deserialize;

use crate::ObjectRef;

/// One `ignoreDifferences` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IgnoreRule {
    /// API group of the objects (`apps`; `""` for the core group). Absent: any group.
    #[serde(default)]
    pub group: Option<String>,
    /// Kind of the objects (`Deployment`).
    pub kind: String,
    /// Only the object of this name. Absent: every object of the kind.
    #[serde(default)]
    pub name: Option<String>,
    /// Only objects in this namespace. Absent: any namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Fields by JSON pointer (RFC 6901): `/spec/replicas`,
    /// `/spec/template/spec/containers/0/resources`.
    #[serde(default)]
    pub json_pointers: Vec<String>,
    /// Every field these managers own in the live object (its `metadata.managedFields`):
    /// `kube-controller-manager`, `vpa-recommender`.
    #[serde(default)]
    pub managed_fields_managers: Vec<String>,
}

impl IgnoreRule {
    /// Whether the rule covers `object`.
    pub fn matches(&self, object: &ObjectRef) -> bool {
        self.kind == object.kind
            && self.group.as_ref().is_none_or(|g| *g == object.group)
            && self.name.as_ref().is_none_or(|n| *n == object.name)
            && self.namespace.as_ref().is_none_or(|n| *n == object.namespace)
    }

    /// Why the rule is not well-formed, if it is not: it must name a kind and at least one
    /// field or manager, and every pointer must start with `/`.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind.is_empty() {
            return Err("kind is empty: name the kind of the objects (e.g. Deployment)".into());
        }
        if self.json_pointers.is_empty() && self.managed_fields_managers.is_empty() {
            return Err(format!(
                "the rule for kind {} ignores nothing: give jsonPointers or managedFieldsManagers",
                self.kind
            ));
        }
        if let Some(bad) = self.json_pointers.iter().find(|p| !p.starts_with('/') || p.len() < 2) {
            return Err(format!("jsonPointers '{bad}' is not a JSON pointer to a field: write it as /spec/replicas"));
        }
        Ok(())
    }
}

/// What the rules of an app ignore on one object: every pointer and manager of the rules that
/// match it. Empty when none does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignored {
    pub json_pointers: Vec<String>,
    pub managers: Vec<String>,
}

impl Ignored {
    /// What `rules` ignore on `object`.
    pub fn of(rules: &[IgnoreRule], object: &ObjectRef) -> Self {
        let mut ignored = Ignored::default();
        for rule in rules.iter().filter(|r| r.matches(object)) {
            ignored.json_pointers.extend(rule.json_pointers.iter().cloned());
            ignored.managers.extend(rule.managed_fields_managers.iter().cloned());
        }
        ignored
    }

    pub fn is_empty(&self) -> bool {
        self.json_pointers.is_empty() && self.managers.is_empty()
    }

    /// Whether the field at JSON pointer `pointer` is ignored (it, or an object or list holding
    /// it, is named by a pointer).
    pub fn covers_pointer(&self, pointer: &str) -> bool {
        self.json_pointers
            .iter()
            .any(|p| pointer == p || pointer.strip_prefix(p.as_str()).is_some_and(|r| r.starts_with('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn rule(yaml: &str) -> IgnoreRule {
        serde_json::from_str(yaml).unwrap()
    }

    #[test]
    fn a_rule_matches_by_kind_and_narrows_by_group_name_and_namespace() {
        let any = rule(r#"{"kind": "Deployment", "jsonPointers": ["/spec/replicas"]}"#);
        assert!(any.matches(&deployment("web", "web")) && any.matches(&deployment("api", "api")));
        let named =
            rule(r#"{"group": "apps", "kind": "Deployment", "name": "web", "jsonPointers": ["/spec/replicas"]}"#);
        assert!(named.matches(&deployment("web", "web")) && !named.matches(&deployment("web", "api")));
        let core = rule(r#"{"group": "", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}"#);
        assert!(!core.matches(&deployment("web", "web")), "an empty group is the core group, not any");
        let scoped = rule(r#"{"kind": "Deployment", "namespace": "api", "managedFieldsManagers": ["hpa"]}"#);
        assert!(!scoped.matches(&deployment("web", "web")) && scoped.matches(&deployment("api", "x")));
    }

    #[test]
    fn what_an_object_ignores_is_every_matching_rules_pointers_and_managers() {
        let rules = [
            rule(r#"{"kind": "Deployment", "jsonPointers": ["/spec/replicas"]}"#),
            rule(r#"{"kind": "Deployment", "name": "web", "managedFieldsManagers": ["vpa-recommender"]}"#),
            rule(r#"{"kind": "ConfigMap", "jsonPointers": ["/data"]}"#),
        ];
        let web = Ignored::of(&rules, &deployment("web", "web"));
        assert_eq!(
            (web.json_pointers.as_slice(), web.managers.as_slice()),
            (&["/spec/replicas".to_string()][..], &["vpa-recommender".to_string()][..])
        );
        assert!(web.covers_pointer("/spec/replicas") && !web.covers_pointer("/spec/replicasX"));
        let data = Ignored::of(&rules[2..], &ObjectRef { kind: "ConfigMap".into(), ..Default::default() });
        assert!(data.covers_pointer("/data/key") && !data.covers_pointer("/metadata"));
        assert!(Ignored::of(&rules, &ObjectRef { kind: "Service".into(), ..Default::default() }).is_empty());
    }

    #[test]
    fn malformed_rules_say_what_to_write() {
        let nothing = rule(r#"{"kind": "Deployment"}"#).validate().unwrap_err();
        assert!(nothing.contains("jsonPointers or managedFieldsManagers"), "{nothing}");
        let relative = rule(r#"{"kind": "Deployment", "jsonPointers": ["spec.replicas"]}"#).validate().unwrap_err();
        assert!(relative.contains("/spec/replicas"), "{relative}");
        assert!(rule(r#"{"kind": "Deployment", "jsonPointers": ["/spec/replicas"]}"#).validate().is_ok());
        assert!(serde_json::from_str::<IgnoreRule>(r#"{"kind": "D", "jqPathExpressions": [".x"]}"#).is_err());
    }
}

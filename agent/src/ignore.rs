//! `ignoreDifferences` in the agent: what an apply carries of the fields other managers own, and
//! which drifted fields are not drift. Pure functions of the body, the live object and the
//! rules; the applier reads the live object and calls [`respect`] before every apply of an
//! object some rule covers, and drift asks [`crate::fields::ignores`] of every drifted field.
//!
//! Decisions: an object that does not exist yet is created with Git's values. Once it exists,
//! an ignored field (a `jsonPointers` entry) is left out of the apply when another manager owns
//! it or the cluster lacks it, so the other manager keeps it; when only convoy-agent ever set it,
//! the apply carries the live value instead, since leaving out a field an applier alone owns
//! makes the API server drop it. Every field a `managedFieldsManagers` manager owns is left out.
//! A drifted field is no drift when a pointer covers it or a listed manager changed it.

use std::cmp::Ordering;

use convoy_shared::model::Ignored;
use serde_json::Value;

use crate::fields::{FIELD_MANAGER, FieldSet, managed_entries, pointer_of};

/// Makes `body` (what the agent is about to apply) leave the fields `ignored` names to the
/// managers that own them in `live`, the object as the cluster holds it.
pub fn respect(body: &mut Value, live: &Value, ignored: &Ignored) {
    let owned_by = |wanted: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut pointers = Vec::new();
        for entry in managed_entries(live) {
            let manager = entry["manager"].as_str().unwrap_or_default();
            let Ok(set) = FieldSet::parse(&entry["fieldsV1"]) else { continue };
            if wanted(manager) {
                pointers.extend(set.leaves().iter().filter_map(|path| pointer_of(body, path)));
            }
        }
        pointers
    };
    let others = owned_by(&|m| m != FIELD_MANAGER);
    let mut remove = owned_by(&|m| ignored.managers.iter().any(|i| i == m));
    for pointer in &ignored.json_pointers {
        if body.pointer(pointer).is_none() {
            continue;
        }
        let held_by_others = others.iter().any(|o| related(o, pointer));
        match live.pointer(pointer) {
            Some(value) if !held_by_others => {
                if let Some(slot) = body.pointer_mut(pointer) {
                    *slot = value.clone();
                }
            }
            _ => remove.push(pointer.clone()),
        }
    }
    // Deepest and last list elements first, so no removal moves what a later one names.
    remove.sort_by(|a, b| compare_pointers(b, a));
    remove.dedup();
    for pointer in remove {
        remove_pointer(body, &pointer);
    }
}

/// One pointer names the other or a field inside it.
fn related(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'));
    a == b || inside(a, b) || inside(b, a)
}

/// Orders pointers token by token, list positions by number.
fn compare_pointers(a: &str, b: &str) -> Ordering {
    let mut left = a.split('/');
    let mut right = b.split('/');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<usize>(), y.parse::<usize>()) {
                    (Ok(i), Ok(j)) => i.cmp(&j),
                    _ => x.cmp(y),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// Removes the field or list element at `pointer`, if there is one.
fn remove_pointer(body: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let last = last.replace("~1", "/").replace("~0", "~");
    match body.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.shift_remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{PathElement, ignores};
    use serde_json::json;

    fn ignored(pointers: &[&str], managers: &[&str]) -> Ignored {
        Ignored {
            json_pointers: pointers.iter().map(|p| p.to_string()).collect(),
            managers: managers.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn deployment(replicas: u32) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "web"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "resources": {"limits": {"cpu": "1"}}}
            ]}}}
        })
    }

    /// `deployment(replicas)` as the cluster holds it, with managedFields entries
    /// (manager, fieldsV1).
    fn live(replicas: u32, entries: &[(&str, Value)]) -> Value {
        let mut live = deployment(replicas);
        live["metadata"]["managedFields"] = entries
            .iter()
            .map(|(manager, fields)| json!({"manager": manager, "operation": "Update", "fieldsV1": fields}))
            .collect();
        live
    }

    fn agent_fields() -> Value {
        json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}, "f:resources": {"f:limits": {"f:cpu": {}}}}
        }}}}})
    }

    #[test]
    fn a_field_another_manager_owns_is_left_out_of_the_apply() {
        let hpa = json!({"f:spec": {"f:replicas": {}}});
        let live = live(7, &[("convoy-agent", agent_fields()), ("kube-controller-manager", hpa)]);
        let mut body = deployment(2);
        respect(&mut body, &live, &ignored(&["/spec/replicas"], &[]));
        assert_eq!(body["spec"].get("replicas"), None, "{body}");
        assert_eq!(body["spec"]["template"], deployment(2)["spec"]["template"], "the rest is untouched");
    }

    #[test]
    fn a_field_only_the_agent_set_keeps_its_live_value_rather_than_being_dropped() {
        let live = live(3, &[("convoy-agent", agent_fields())]);
        let mut body = deployment(2);
        respect(&mut body, &live, &ignored(&["/spec/replicas"], &[]));
        assert_eq!(body["spec"]["replicas"], 3, "{body}");
    }

    #[test]
    fn fields_a_listed_manager_owns_are_left_to_it_and_nothing_else() {
        let vpa = json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {"f:resources": {"f:limits": {"f:cpu": {}}}}
        }}}}});
        let live = live(2, &[("convoy-agent", agent_fields()), ("vpa-recommender", vpa)]);
        let mut body = deployment(2);
        respect(&mut body, &live, &ignored(&[], &["vpa-recommender"]));
        let container = &body["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"].get("cpu"), None, "{body}");
        assert_eq!((container["image"].as_str(), body["spec"]["replicas"].as_u64()), (Some("web:1"), Some(2)));
    }

    #[test]
    fn drift_on_an_ignored_field_or_by_an_ignored_manager_is_none() {
        let desired = deployment(2);
        let replicas = [PathElement::Field("spec".into()), PathElement::Field("replicas".into())];
        let image = [
            PathElement::Field("spec".into()),
            PathElement::Field("template".into()),
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::Key(r#"{"name":"web"}"#.into()),
            PathElement::Field("image".into()),
        ];
        let rules = ignored(&["/spec/replicas"], &["vpa-recommender"]);
        assert!(ignores(&rules, &desired, &replicas, "kube-controller-manager"));
        assert!(!ignores(&rules, &desired, &image, "kubectl-edit"));
        assert!(ignores(&rules, &desired, &image, "vpa-recommender"));
        assert!(ignores(&ignored(&["/spec/template/spec/containers/0"], &[]), &desired, &image, "kubectl-edit"));
    }

    #[test]
    fn removals_run_deepest_and_last_first() {
        let mut list = vec!["/a/1", "/a/10", "/a/2/b", "/a"];
        list.sort_by(|a, b| compare_pointers(b, a));
        assert_eq!(list, ["/a/10", "/a/2/b", "/a/1", "/a"]);
        let mut body = json!({"a": [0, 1, 2, 3], "b/c": {"d": 1}});
        remove_pointer(&mut body, "/a/3");
        remove_pointer(&mut body, "/a/1");
        remove_pointer(&mut body, "/b~1c/d");
        assert_eq!(body, json!({"a": [0, 2], "b/c": {}}));
    }
}

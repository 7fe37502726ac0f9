//! Field ownership: parsing `managedFields` FieldsV1 sets, and comparing the fields the agent
//! owns between what it applied and what the cluster holds — the heart of drift detection.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use convoy_shared::model::Ignored;
use convoy_shared::model::report::FieldDrift;

/// The field manager the agent applies as.
pub const FIELD_MANAGER: &str = "convoy-agent";

/// Errors reading a FieldsV1 set.
#[derive(Debug, thiserror::Error)]
pub enum FieldsError {
    #[error("managedFields entry is not a FieldsV1 object")]
    NotAnObject,
    #[error("managedFields path element {0:?} is not f:, k:, v:, i: or '.'")]
    BadElement(String),
    #[error("managedFields key {element:?} is not valid JSON: {source}")]
    BadJson {
        element: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One step of a field path, as FieldsV1 spells them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    /// `f:name` — a field of an object.
    Field(String),
    /// `k:{"name":"web"}` — the element of an associative list with these key values (JSON text).
    Key(String),
    /// `v:"x"` — the element of a set-like list with this value (JSON text).
    Value(String),
    /// `i:0` — a list element by position.
    Index(usize),
}

/// A set of field paths: a tree of [`PathElement`]s, where `owned` marks a node claimed itself
/// (the `.` entry) and leaves are fields owned whole.
///
/// The drift index keeps one per managed object for as long as the agent runs, and most nodes
/// have one or two children: they sit in a sorted boxed slice, one exact-size allocation per
/// node, where a map would allocate a node of eleven slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    children: Box<[(PathElement, FieldSet)]>,
    pub owned: bool,
}

/// A path from the root of an object.
pub type FieldPath = Vec<PathElement>;

impl FieldSet {
    /// Parses the `fieldsV1` value of one managedFields entry.
    pub fn parse(v: &Value) -> Result<FieldSet, FieldsError> {
        let map = v.as_object().ok_or(FieldsError::NotAnObject)?;
        let mut owned = false;
        let mut children = BTreeMap::new();
        for (k, child) in map {
            if k == "." {
                owned = true;
                continue;
            }
            children.insert(parse_element(k)?, FieldSet::parse(child)?);
        }
        Ok(FieldSet { children: children.into_iter().collect(), owned })
    }

    /// The set of `manager`'s Apply or Update entries in an object's managedFields (union).
    pub fn of_manager(object: &Value, manager: &str) -> Result<FieldSet, FieldsError> {
        let mut set = FieldSet::default();
        for entry in managed_entries(object) {
            if entry["manager"] == manager && entry["subresource"].as_str().unwrap_or("").is_empty() {
                set.union(FieldSet::parse(&entry["fieldsV1"])?);
            }
        }
        Ok(set)
    }

    fn union(&mut self, other: FieldSet) {
        self.owned |= other.owned;
        let mut children: BTreeMap<PathElement, FieldSet> = std::mem::take(&mut self.children).into_iter().collect();
        for (k, v) in other.children {
            children.entry(k).or_default().union(v);
        }
        self.children = children.into_iter().collect();
    }

    /// The child at `element`, if any.
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        let i = self.children.binary_search_by(|(k, _)| k.cmp(element)).ok()?;
        Some(&self.children[i].1)
    }

    /// Is there nothing in this set?
    pub fn is_empty(&self) -> bool {
        self.children.is_empty() && !self.owned
    }

    /// Every leaf path: fields owned whole (no children), including list elements owned only as
    /// an element (`.` with no children).
    pub fn leaves(&self) -> Vec<FieldPath> {
        let mut out = Vec::new();
        self.collect_leaves(&mut Vec::new(), &mut out);
        out
    }

    fn collect_leaves(&self, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
        for (element, child) in self.children.iter() {
            prefix.push(element.clone());
            if child.children.is_empty() {
                out.push(prefix.clone());
            } else {
                child.collect_leaves(prefix, out);
            }
            prefix.pop();
        }
    }

    /// Does this set own `path` itself or an ancestor of it owned whole (a leaf above it)?
    pub fn covers(&self, path: &[PathElement]) -> bool {
        let mut node = self;
        for element in path {
            match node.child(element) {
                Some(child) => {
                    if child.children.is_empty() {
                        return true;
                    }
                    node = child;
                }
                None => return false,
            }
        }
        true
    }
}

fn parse_element(k: &str) -> Result<PathElement, FieldsError> {
    let bad = || FieldsError::BadElement(k.to_string());
    let (prefix, rest) = k.split_once(':').ok_or_else(bad)?;
    let json = |text: &str| -> Result<String, FieldsError> {
        // Normalize to canonical JSON so keys compare whatever the server's spacing.
        let v: Value =
            serde_json::from_str(text).map_err(|source| FieldsError::BadJson { element: k.to_string(), source })?;
        Ok(convoy_shared::model::canonical_json(&v))
    };
    Ok(match prefix {
        "f" => PathElement::Field(rest.to_string()),
        "k" => PathElement::Key(json(rest)?),
        "v" => PathElement::Value(json(rest)?),
        "i" => PathElement::Index(rest.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    })
}

/// The managedFields entries of an object.
pub fn managed_entries(object: &Value) -> &[Value] {
    object.pointer("/metadata/managedFields").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// How to match associative-list keys while walking a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMatch {
    /// Every key field must be present and equal (the live object, where defaults are filled in).
    Exact,
    /// Key fields absent from the element are ignored (the desired object, where the server may
    /// have added a defaulted key such as a port's `protocol`).
    Lenient,
}

/// The value at `path` in `object`, if present.
pub fn resolve<'a>(object: &'a Value, path: &[PathElement], keys: KeyMatch) -> Option<&'a Value> {
    let mut node = object;
    for element in path {
        node = match element {
            PathElement::Field(name) => node.as_object()?.get(name)?,
            list_element => {
                let items = node.as_array()?;
                &items[position(items, list_element, keys)?]
            }
        };
    }
    Some(node)
}

/// Where in `items` the list element `element` (`i:`, `k:` or `v:`) is.
fn position(items: &[Value], element: &PathElement, keys: KeyMatch) -> Option<usize> {
    match element {
        PathElement::Field(_) => None,
        PathElement::Index(i) => (*i < items.len()).then_some(*i),
        PathElement::Value(text) => {
            let want: Value = serde_json::from_str(text).ok()?;
            items.iter().position(|item| same_value(item, &want))
        }
        PathElement::Key(text) => {
            let want: Map<String, Value> = serde_json::from_str(text).ok()?;
            items.iter().position(|item| {
                want.iter().all(|(k, v)| match item.get(k) {
                    Some(have) => same_value(have, v),
                    None => keys == KeyMatch::Lenient,
                })
            })
        }
    }
}

/// The JSON pointer (RFC 6901) of the field at `path` in `object` (as applied: list elements
/// matched leniently), if `object` has it: `spec.containers[name=web].image` in an object whose
/// `web` container comes first is `/spec/containers/0/image`.
pub fn pointer_of(object: &Value, path: &[PathElement]) -> Option<String> {
    let mut node = object;
    let mut pointer = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                node = node.as_object()?.get(name)?;
                pointer.push('/');
                pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
            }
            list_element => {
                let items = node.as_array()?;
                let at = position(items, list_element, KeyMatch::Lenient)?;
                node = &items[at];
                let _ = write!(pointer, "/{at}");
            }
        }
    }
    Some(pointer)
}

/// JSON equality where numbers compare by value (`1` == `1.0`).
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// `spec.template.spec.containers[name=web].image`.
pub fn format_path(path: &[PathElement]) -> String {
    let mut out = String::new();
    for element in path {
        match element {
            PathElement::Field(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            PathElement::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            PathElement::Value(text) => {
                let _ = write!(out, "[={text}]");
            }
            PathElement::Key(text) => {
                let keys: Map<String, Value> = serde_json::from_str(text).unwrap_or_default();
                let parts: Vec<String> = keys
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                let _ = write!(out, "[{}]", parts.join(","));
            }
        }
    }
    out
}

/// Whether a drifted field at `path` of `desired` (changed by `manager`) is ignored.
pub fn ignores(ignored: &Ignored, desired: &Value, path: &[PathElement], manager: &str) -> bool {
    ignored.managers.iter().any(|m| m == manager)
        || pointer_of(desired, path).is_some_and(|pointer| ignored.covers_pointer(&pointer))
}

/// Who owns `path` now, other than `except`: the manager whose set covers it, or "unknown".
pub fn owner_of(live: &Value, path: &[PathElement], except: &str) -> String {
    // Several managers can share a field; the most recent writer is the one that changed it.
    let mut best: Option<(&str, &str)> = None;
    for entry in managed_entries(live) {
        let manager = entry["manager"].as_str().unwrap_or("");
        if manager == except {
            continue;
        }
        let Ok(set) = FieldSet::parse(&entry["fieldsV1"]) else {
            continue;
        };
        if set.covers(path) {
            let time = entry["time"].as_str().unwrap_or("");
            if best.is_none_or(|(t, _)| time >= t) {
                best = Some((time, manager));
            }
        }
    }
    best.map(|(_, m)| m.to_string()).unwrap_or_else(|| "unknown".to_string())
}

/// Compares, field by field, what the agent applied (`desired`) with what the cluster holds
/// (`live`), looking only at the paths in `owned` (the agent's managedFields after its apply).
/// Fields the agent never set — defaults, status, other managers' fields — are never compared.
/// Fields `ignored` names (or that a manager it lists changed) are never drift.
pub fn drifted_fields(desired: &Value, live: &Value, owned: &FieldSet, ignored: &Ignored) -> Vec<FieldDrift> {
    let mut out = Vec::new();
    for path in owned.leaves() {
        // stringData is write-only: the server folds it into data and never returns it.
        if path.first() == Some(&PathElement::Field("stringData".into())) {
            continue;
        }
        let Some(want) = resolve(desired, &path, KeyMatch::Lenient) else {
            continue;
        };
        let have = resolve(live, &path, KeyMatch::Exact);
        let differs = match (want, have) {
            (_, None) => true,
            // A list element owned only as an element: its presence is what counts.
            (_, Some(_)) if matches!(path.last(), Some(PathElement::Key(_) | PathElement::Value(_))) => false,
            (w, Some(h)) => !same_value(w, h),
        };
        if differs {
            let manager = owner_of(live, &path, FIELD_MANAGER);
            if !ignored.is_empty() && ignores(ignored, desired, &path, &manager) {
                continue;
            }
            out.push(FieldDrift {
                path: format_path(&path),
                desired: want.clone(),
                live: have.cloned().unwrap_or(Value::Null),
                manager,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "web", "labels": {"app": "web"}},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image,
                        "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    fn agent_fields() -> Value {
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        })
    }

    #[test]
    fn parses_every_element_kind() {
        let set = FieldSet::parse(&json!({
            "f:a": {".": {}, "f:b": {}},
            "k:{\"port\": 80, \"protocol\":\"TCP\"}": {},
            "v:\"x\"": {},
            "i:2": {}
        }))
        .unwrap();
        let a = set.child(&PathElement::Field("a".into())).unwrap();
        assert!(a.owned);
        assert!(set.child(&PathElement::Key(r#"{"port":80,"protocol":"TCP"}"#.into())).is_some());
        assert!(set.child(&PathElement::Value("\"x\"".into())).is_some());
        assert!(set.child(&PathElement::Index(2)).is_some());
        assert!(FieldSet::parse(&json!({"z:x": {}})).is_err());
        assert!(FieldSet::parse(&json!({"k:{nope": {}})).is_err());
    }

    #[test]
    fn leaves_and_paths_read_like_kubectl() {
        let set = FieldSet::parse(&agent_fields()).unwrap();
        let paths: Vec<String> = set.leaves().iter().map(|p| format_path(p)).collect();
        assert!(paths.contains(&"spec.template.spec.containers[name=web].image".to_string()));
        assert!(paths.contains(&"metadata.labels.app".to_string()));
        assert!(paths.contains(
            &"spec.template.spec.containers[name=web].ports[containerPort=80,protocol=TCP].containerPort".to_string()
        ));
    }

    #[test]
    fn unchanged_object_with_defaults_and_status_has_no_drift() {
        let desired = deployment("nginx:1");
        let mut live = desired.clone();
        live["spec"]["replicas"] = json!(5); // defaulted / another manager's
        live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        live["status"] = json!({"replicas": 5});
        let owned = FieldSet::parse(&agent_fields()).unwrap();
        assert_eq!(drifted_fields(&desired, &live, &owned, &Ignored::default()), vec![]);
    }

    #[test]
    fn a_changed_owned_field_names_path_values_and_manager() {
        let desired = deployment("nginx:1");
        let mut live = deployment("nginx:2");
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        live["metadata"]["managedFields"] = json!([
            {"manager": "convoy-agent", "operation": "Apply", "fieldsV1": {"f:metadata": {}}},
            {"manager": "kubectl-edit", "operation": "Update", "time": "2024-01-01T00:00:00Z",
             "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {"f:image": {}}}}}}}}
        ]);
        let owned = FieldSet::parse(&agent_fields()).unwrap();
        let drift = drifted_fields(&desired, &live, &owned, &Ignored::default());
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert_eq!(drift[0].path, "spec.template.spec.containers[name=web].image");
        assert_eq!(drift[0].desired, json!("nginx:1"));
        assert_eq!(drift[0].live, json!("nginx:2"));
        assert_eq!(drift[0].manager, "kubectl-edit");
    }

    #[test]
    fn a_removed_owned_field_is_drift_with_null_live() {
        let desired = deployment("nginx:1");
        let mut live = desired.clone();
        live["metadata"]["labels"] = json!({});
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        let owned = FieldSet::parse(&agent_fields()).unwrap();
        let drift = drifted_fields(&desired, &live, &owned, &Ignored::default());
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].path, "metadata.labels.app");
        assert_eq!(drift[0].live, Value::Null);
        assert_eq!(drift[0].manager, "unknown");
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(same_value(&json!(1), &json!(1.0)));
        assert!(!same_value(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }
}

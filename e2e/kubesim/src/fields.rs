//! Field paths and field sets in the FieldsV1 format used by Kubernetes managedFields, plus the
//! small slice of schema knowledge (which lists are keyed, by what) that server-side apply needs.

use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;

/// Errors from parsing FieldsV1 or walking an object against the list schema.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A FieldsV1 key that is none of `f:`, `k:`, `v:`, `i:` or `.`.
    #[error("invalid FieldsV1 key {0:?}: expected f:, k:, v:, i: or .")]
    BadKey(String),
    /// A keyed list item lacks one of the list's key fields.
    #[error("associative list {path} has an element that omits key field {key:?}")]
    MissingKey {
        /// Where the list lives.
        path: String,
        /// The missing key field.
        key: String,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One step of a field path, as structured-merge-diff models it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathElement {
    /// A field of a map/struct: `f:name`.
    Field(String),
    /// An item of an associative list identified by its key fields: `k:{"name":"web"}`.
    Key(Vec<(String, Value)>),
    /// An item of a set-like list of scalars: `v:"value"`.
    Value(Value),
    /// An item of a list by position: `i:3` (only for lists without keys, rarely used).
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The FieldsV1 key for this element (`f:name`, `k:{…}`, `v:…`, `i:N`).
    pub fn to_fields_key(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(kv) => {
                let mut m = Map::new();
                for (k, v) in kv {
                    m.insert(k.clone(), v.clone());
                }
                format!("k:{}", Value::Object(m))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn from_fields_key(key: &str) -> Result<PathElement> {
        if let Some(f) = key.strip_prefix("f:") {
            return Ok(PathElement::Field(f.to_string()));
        }
        if let Some(k) = key.strip_prefix("k:") {
            let v: Value = serde_json::from_str(k).map_err(|_| Error::BadKey(key.into()))?;
            let Value::Object(m) = v else {
                return Err(Error::BadKey(key.into()));
            };
            let mut kv: Vec<(String, Value)> = m.into_iter().collect();
            kv.sort_by(|a, b| a.0.cmp(&b.0));
            return Ok(PathElement::Key(kv));
        }
        if let Some(v) = key.strip_prefix("v:") {
            let v: Value = serde_json::from_str(v).map_err(|_| Error::BadKey(key.into()))?;
            return Ok(PathElement::Value(v));
        }
        if let Some(i) = key.strip_prefix("i:") {
            return i.parse().map(PathElement::Index).map_err(|_| Error::BadKey(key.into()));
        }
        Err(Error::BadKey(key.into()))
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                let a: Vec<(&String, String)> = a.iter().map(|(k, v)| (k, v.to_string())).collect();
                let b: Vec<(&String, String)> = b.iter().map(|(k, v)| (k, v.to_string())).collect();
                a.cmp(&b)
            }
            (PathElement::Value(a), PathElement::Value(b)) => a.to_string().cmp(&b.to_string()),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A path from the object root to one field, list item or value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Path(pub Vec<PathElement>);

impl Path {
    /// A path of plain field names, e.g. `Path::fields(&["spec", "replicas"])`.
    pub fn fields(names: &[&str]) -> Path {
        Path(names.iter().map(|n| PathElement::Field(n.to_string())).collect())
    }

    fn child(&self, pe: PathElement) -> Path {
        let mut v = self.0.clone();
        v.push(pe);
        Path(v)
    }

    /// Whether `self` is a strict ancestor of `other`.
    pub fn is_strict_prefix_of(&self, other: &Path) -> bool {
        other.0.len() > self.0.len() && other.0[..self.0.len()] == self.0[..]
    }
}

/// Kubernetes' textual form, as in conflict messages: `.spec.containers[name="web"].image`.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            match pe {
                PathElement::Field(n) => write!(f, ".{n}")?,
                PathElement::Key(kv) => {
                    let parts: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, "[{}]", parts.join(","))?
                }
                PathElement::Value(v) => write!(f, "[={v}]")?,
                PathElement::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A set of paths; serialises to and from FieldsV1 JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSet(pub BTreeSet<Path>);

impl FieldSet {
    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds one path.
    pub fn insert(&mut self, p: Path) {
        self.0.insert(p);
    }

    /// Whether the exact path is a member.
    pub fn contains(&self, p: &Path) -> bool {
        self.0.contains(p)
    }

    /// Whether any member lies strictly below `p`.
    pub fn has_descendant(&self, p: &Path) -> bool {
        use std::ops::Bound;
        self.0.range((Bound::Excluded(p.clone()), Bound::Unbounded)).next().is_some_and(|q| p.is_strict_prefix_of(q))
    }

    /// Members of `self` not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    /// Members of both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Members of either.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    /// Parses FieldsV1 JSON (`{"f:spec":{"f:replicas":{}}}`).
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet> {
        let mut set = FieldSet::default();
        fn walk(v: &Value, at: &Path, set: &mut FieldSet) -> Result<()> {
            if let Value::Object(m) = v {
                for (k, child) in m {
                    if k == "." {
                        set.insert(at.clone());
                        continue;
                    }
                    let p = at.child(PathElement::from_fields_key(k)?);
                    let empty = child.as_object().is_none_or(|c| c.is_empty());
                    if empty {
                        set.insert(p);
                    } else {
                        walk(child, &p, set)?;
                    }
                }
            }
            Ok(())
        }
        walk(v, &Path::default(), &mut set)?;
        Ok(set)
    }

    /// Serialises to FieldsV1 JSON; a member that also has children gets a `.` entry, first.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for p in &self.0 {
            let mut node = &mut root;
            for (i, pe) in p.0.iter().enumerate() {
                let key = pe.to_fields_key();
                let entry = node.entry(key).or_insert_with(|| Value::Object(Map::new()));
                let child = entry.as_object_mut().expect("fieldset nodes are objects");
                // A member with descendants is marked with "."; BTreeSet order visits the
                // member before its descendants, so "." lands first as Kubernetes writes it.
                if i == p.0.len() - 1 && self.has_descendant(p) {
                    child.insert(".".into(), Value::Object(Map::new()));
                }
                node = child;
            }
        }
        Value::Object(root)
    }

    /// Every member path, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }
}

/// How a list is merged and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced and owned as a whole.
    Atomic,
    /// Items identified by these key fields (`x-kubernetes-list-type: map`).
    Map(&'static [&'static str]),
    /// Scalars merged as a set.
    Set,
}

/// Which schema the object follows: built-in kinds have known keyed lists, custom resources
/// (no structural schema support here) treat every list as atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// A built-in Kubernetes kind.
    Builtin,
    /// A custom resource.
    Custom,
}

/// The list type of the list at `path` (the list's own path, ending in its field name).
pub fn list_type(schema: Schema, path: &Path) -> ListType {
    let Some(PathElement::Field(name)) = path.0.last() else {
        return ListType::Atomic;
    };
    if name == "finalizers" && path.0.len() == 2 {
        return ListType::Set;
    }
    if name == "ownerReferences" {
        return ListType::Map(&["uid"]);
    }
    if schema == Schema::Custom {
        return ListType::Atomic;
    }
    let parent_is_list_item = matches!(path.0.len().checked_sub(2).map(|i| &path.0[i]), Some(PathElement::Key(_)));
    match name.as_str() {
        "containers" | "initContainers" | "ephemeralContainers" => ListType::Map(&["name"]),
        "env" | "volumes" | "imagePullSecrets" | "resourceClaims" => ListType::Map(&["name"]),
        "volumeMounts" => ListType::Map(&["mountPath"]),
        "volumeDevices" => ListType::Map(&["devicePath"]),
        "hostAliases" => ListType::Map(&["ip"]),
        "conditions" => ListType::Map(&["type"]),
        "topologySpreadConstraints" => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        "ports" if parent_is_list_item => ListType::Map(&["containerPort", "protocol"]),
        "ports" if path.0.len() == 2 => ListType::Map(&["port", "protocol"]),
        _ => ListType::Atomic,
    }
}

/// Whether the map at `path` is owned and replaced as a whole, like a scalar: the label
/// selectors of built-in kinds (`+structType=atomic`) and the maps marked `+mapType=atomic` (a
/// Service's selector, a pod's nodeSelector).
pub fn is_atomic_map(schema: Schema, path: &Path) -> bool {
    schema == Schema::Builtin
        && matches!(
            path.0.last(),
            Some(PathElement::Field(n))
                if matches!(n.as_str(), "selector" | "podSelector" | "namespaceSelector" | "labelSelector" | "nodeSelector")
        )
}

/// The merge key strategic merge patch uses for a list (one field, unlike SSA's keys).
pub fn strategic_key(path: &Path) -> Option<&'static str> {
    match list_type(Schema::Builtin, path) {
        ListType::Map(keys) => Some(keys[0]),
        _ => None,
    }
}

/// The key element of a keyed list item; `protocol` defaults to TCP as the API server does.
pub fn item_key(keys: &'static [&'static str], item: &Value, list_path: &Path) -> Result<PathElement> {
    let mut kv = Vec::new();
    for k in keys {
        match item.get(*k) {
            Some(v) if !v.is_null() => kv.push((k.to_string(), v.clone())),
            _ if *k == "protocol" => kv.push((k.to_string(), Value::from("TCP"))),
            _ => {
                return Err(Error::MissingKey { path: list_path.to_string(), key: k.to_string() });
            }
        }
    }
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(PathElement::Key(kv))
}

/// Fields that never appear in managedFields (identity and server-owned metadata).
fn ignored(path: &Path) -> bool {
    let f = |i: usize| match path.0.get(i) {
        Some(PathElement::Field(s)) => Some(s.as_str()),
        _ => None,
    };
    matches!(
        (path.0.len(), f(0), f(1)),
        (1, Some("apiVersion" | "kind"), _)
            | (
                2,
                Some("metadata"),
                Some(
                    "name"
                        | "namespace"
                        | "uid"
                        | "resourceVersion"
                        | "generation"
                        | "creationTimestamp"
                        | "managedFields"
                        | "selfLink"
                        | "deletionTimestamp"
                        | "deletionGracePeriodSeconds",
                ),
            )
    )
}

/// Maps whose keys are data, not schema fields; Update-operation sets own them as a unit too.
fn is_free_form_map(path: &Path) -> bool {
    matches!(
        path.0.last(),
        Some(PathElement::Field(n)) if matches!(
            n.as_str(),
            "labels" | "annotations" | "matchLabels" | "nodeSelector" | "data" | "stringData"
                | "binaryData" | "limits" | "requests"
        )
    )
}

/// How [`to_field_set`] marks intermediate maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The set of an applied configuration: leaves, list items, empty maps.
    Apply,
    /// The set used for Update diffs: also free-form maps (labels, data…) as members.
    Update,
}

/// The set of fields an object (or an applied configuration) specifies, as structured-merge-diff
/// computes it: scalars, atomic lists and empty maps are members; keyed list items are members
/// and are walked; maps are walked.
pub fn to_field_set(obj: &Value, schema: Schema, flavor: Flavor) -> Result<FieldSet> {
    let mut set = FieldSet::default();
    walk_value(obj, &Path::default(), schema, flavor, &mut set)?;
    Ok(set)
}

fn walk_value(v: &Value, at: &Path, schema: Schema, flavor: Flavor, set: &mut FieldSet) -> Result<()> {
    match v {
        Value::Object(_) if is_atomic_map(schema, at) => set.insert(at.clone()),
        Value::Object(m) => {
            if !at.0.is_empty() && (m.is_empty() || (flavor == Flavor::Update && is_free_form_map(at))) {
                set.insert(at.clone());
            }
            for (k, child) in m {
                let p = at.child(PathElement::Field(k.clone()));
                if ignored(&p) {
                    continue;
                }
                walk_value(child, &p, schema, flavor, set)?;
            }
        }
        Value::Array(items) => match list_type(schema, at) {
            ListType::Atomic => set.insert(at.clone()),
            ListType::Set => {
                for it in items {
                    set.insert(at.child(PathElement::Value(it.clone())));
                }
            }
            ListType::Map(keys) => {
                for it in items {
                    let p = at.child(item_key(keys, it, at)?);
                    set.insert(p.clone());
                    walk_value(it, &p, schema, flavor, set)?;
                }
            }
        },
        _ => {
            if !at.0.is_empty() {
                set.insert(at.clone())
            }
        }
    }
    Ok(())
}

/// The value at `path` in `obj`, if present.
pub fn get_path<'a>(obj: &'a Value, path: &Path, schema: Schema) -> Option<&'a Value> {
    let mut cur = obj;
    let mut at = Path::default();
    for pe in &path.0 {
        cur = match pe {
            PathElement::Field(f) => cur.get(f)?,
            PathElement::Key(_) => {
                let ListType::Map(keys) = list_type(schema, &at) else {
                    return None;
                };
                cur.as_array()?.iter().find(|it| item_key(keys, it, &at).ok().as_ref() == Some(pe))?
            }
            PathElement::Value(v) => cur.as_array()?.iter().find(|it| *it == v)?,
            PathElement::Index(i) => cur.as_array()?.get(*i)?,
        };
        at = at.child(pe.clone());
    }
    Some(cur)
}

/// Removes the field, list item or set value at `path` from `obj`; returns whether it existed.
pub fn remove_path(obj: &mut Value, path: &Path, schema: Schema) -> bool {
    let Some((last, parent)) = path.0.split_last() else {
        return false;
    };
    let parent_path = Path(parent.to_vec());
    let Some(container) = get_path_mut(obj, &parent_path, schema) else {
        return false;
    };
    match last {
        PathElement::Field(f) => container.as_object_mut().is_some_and(|m| m.shift_remove(f).is_some()),
        PathElement::Key(_) => {
            let ListType::Map(keys) = list_type(schema, &parent_path) else {
                return false;
            };
            let Some(arr) = container.as_array_mut() else {
                return false;
            };
            let before = arr.len();
            arr.retain(|it| item_key(keys, it, &parent_path).ok().as_ref() != Some(last));
            arr.len() != before
        }
        PathElement::Value(v) => {
            let Some(arr) = container.as_array_mut() else {
                return false;
            };
            let before = arr.len();
            arr.retain(|it| it != v);
            arr.len() != before
        }
        PathElement::Index(i) => container.as_array_mut().is_some_and(|a| {
            if *i < a.len() {
                a.remove(*i);
                true
            } else {
                false
            }
        }),
    }
}

fn get_path_mut<'a>(obj: &'a mut Value, path: &Path, schema: Schema) -> Option<&'a mut Value> {
    let mut cur = obj;
    let mut at = Path::default();
    for pe in &path.0 {
        let next_at = at.child(pe.clone());
        cur = match pe {
            PathElement::Field(f) => cur.get_mut(f)?,
            PathElement::Key(_) => {
                let ListType::Map(keys) = list_type(schema, &at) else {
                    return None;
                };
                let at_ref = &at;
                cur.as_array_mut()?.iter_mut().find(|it| item_key(keys, it, at_ref).ok().as_ref() == Some(pe))?
            }
            PathElement::Value(v) => cur.as_array_mut()?.iter_mut().find(|it| *it == v)?,
            PathElement::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
        at = next_at;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applied_deployment_serialises_like_kubernetes() {
        let cfg = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}
            ]}}}
        });
        let set = to_field_set(&cfg, Schema::Builtin, Flavor::Apply).unwrap();
        let v1 = set.to_fields_v1();
        assert_eq!(
            v1,
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {
                        "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}
                        }
                    }}
                }}}}
            })
        );
        // The "." entry comes first, as Kubernetes writes it.
        let item = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(item.as_object().unwrap().keys().next().unwrap(), ".");
        assert_eq!(FieldSet::from_fields_v1(&v1).unwrap(), set);
    }

    #[test]
    fn update_flavor_owns_free_form_maps() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "data": {"k": "v"}});
        let v1 = to_field_set(&obj, Schema::Builtin, Flavor::Update).unwrap().to_fields_v1();
        assert_eq!(v1, json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}}));
    }

    #[test]
    fn path_display_matches_conflict_messages() {
        let p = Path(vec![
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::Key(vec![("name".into(), json!("web"))]),
            PathElement::Field("image".into()),
        ]);
        assert_eq!(p.to_string(), ".spec.containers[name=\"web\"].image");
    }

    #[test]
    fn get_and_remove_keyed_items() {
        let mut obj = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}});
        let p = Path(vec![
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::Key(vec![("name".into(), json!("a"))]),
            PathElement::Field("image".into()),
        ]);
        assert_eq!(get_path(&obj, &p, Schema::Builtin), Some(&json!("x")));
        assert!(remove_path(&mut obj, &p, Schema::Builtin));
        assert_eq!(obj["spec"]["containers"][0], json!({"name": "a"}));
        let item = Path(p.0[..3].to_vec());
        assert!(remove_path(&mut obj, &item, Schema::Builtin));
        assert_eq!(obj["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn label_selectors_are_owned_whole() {
        let cfg = json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {
            "nodeSelector": {"disk": "ssd"}}}}});
        let set = to_field_set(&cfg, Schema::Builtin, Flavor::Apply).unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {"f:selector": {}, "f:template": {"f:spec": {"f:nodeSelector": {}}}}})
        );
    }

    #[test]
    fn custom_resources_treat_lists_as_atomic() {
        let cfg = json!({"spec": {"items": [{"name": "a"}]}});
        let set = to_field_set(&cfg, Schema::Custom, Flavor::Apply).unwrap();
        assert_eq!(set.to_fields_v1(), json!({"f:spec": {"f:items": {}}}));
    }
}

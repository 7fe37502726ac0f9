//! Convoy's own domain types that the render engine shares with the hub and the agent: which
//! object, what one app of an assignment holds and its content digest, the fields an app leaves
//! to other managers, Kubernetes-style names, and the tokens standing for keys and certificates
//! a chart generates (made by the agent). serde, hashing and base64 only: no wire, TLS or
//! runtime, so rendering stays a pure function of a file tree.
#![forbid(unsafe_code)]

pub mod analysis;
pub mod generated;
pub mod health;
mod ignore;

pub use health::HealthRule;
pub use ignore::{IgnoreRule, Ignored};

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Identifies one Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectRef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// Reads apiVersion, kind, metadata.namespace and metadata.name from an object.
    pub fn of(object: &Value) -> ObjectRef {
        let [group, version, kind, namespace, name] = order_key(object).map(str::to_string);
        ObjectRef { group, version, kind, namespace, name }
    }

    /// The apiVersion string (`group/version`, or `version` for the core group).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Identity ignoring the version: the same object served at two versions is one object.
    pub fn key(&self) -> (&str, &str, &str, &str) {
        (&self.group, &self.kind, &self.namespace, &self.name)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.group.is_empty() { self.kind.clone() } else { format!("{}.{}", self.kind, self.group) };
        if self.namespace.is_empty() {
            write!(f, "{kind}/{}", self.name)
        } else {
            write!(f, "{kind} {}/{}", self.namespace, self.name)
        }
    }
}

/// Annotation on the Namespace the hub adds to an app whose sources hold none
/// (`spec.createNamespace`): the app it is made for. The agent settles such a Namespace against
/// the cluster before applying it.
pub const NAMESPACE_OF_ANNOTATION: &str = "convoy.dev/namespace-of";

/// An app's sync policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyncPolicy {
    /// Delete objects that left Git.
    pub prune: bool,
    /// Undo drift by re-applying.
    pub self_heal: bool,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy { prune: true, self_heal: true }
    }
}

/// One app's part of an assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct AppAssignment {
    pub name: String,
    pub policy: SyncPolicy,
    pub depends_on: Vec<String>,
    /// Objects sorted by [`ObjectRef`].
    pub objects: Objects,
    /// Set when this app failed to render for this cluster; `objects` are then the last good ones.
    pub render_error: Option<String>,
    /// Fields of its objects that other managers own (see [`crate::model::ignore`]).
    pub ignore_differences: Vec<crate::IgnoreRule>,
    /// How to judge the health of its objects' kinds: the app's rules, then the fleet's (the
    /// first that matches an object decides; built-in rules come after).
    pub health_rules: Vec<HealthRule>,
}

/// An app's objects, shared: the hub's planner hands a render's objects to every assignment
/// that takes them unchanged (a Helm render per cluster was copied into its assignment, a tenth
/// of a cold plan), and cloning an assignment does not copy them. Read through `Deref`; write
/// through [`Objects::make_mut`], which copies them first when they are shared.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Objects(Arc<Vec<Value>>);

impl Objects {
    /// The objects to change, copied first if anything else holds them.
    pub fn make_mut(&mut self) -> &mut Vec<Value> {
        Arc::make_mut(&mut self.0)
    }

    /// The objects, copied only when something else still holds them.
    pub fn into_vec(self) -> Vec<Value> {
        Arc::unwrap_or_clone(self.0)
    }

    /// Whether both are the very same objects (not only equal ones).
    pub fn ptr_eq(&self, other: &Objects) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Sorts the objects by [`ObjectRef`] (stable), copying them only when they are not sorted.
    pub fn sort(&mut self) {
        let order = {
            let keys: Vec<[&str; 5]> = self.iter().map(order_key).collect();
            if keys.is_sorted() {
                return;
            }
            let mut order: Vec<usize> = (0..keys.len()).collect();
            order.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
            order
        };
        let mut objects: Vec<Option<Value>> = std::mem::take(self).into_vec().into_iter().map(Some).collect();
        *self = order.into_iter().map(|i| objects[i].take().expect("each object once")).collect();
    }
}

/// The fields of an [`ObjectRef`] in its order, borrowed (what [`ObjectRef::of`] owns): sorting
/// by it sorts by `ObjectRef`.
fn order_key(object: &Value) -> [&str; 5] {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let metadata = &object["metadata"];
    [
        group,
        version,
        object["kind"].as_str().unwrap_or_default(),
        metadata["namespace"].as_str().unwrap_or_default(),
        metadata["name"].as_str().unwrap_or_default(),
    ]
}

impl Deref for Objects {
    type Target = [Value];

    fn deref(&self) -> &[Value] {
        &self.0
    }
}

impl From<Vec<Value>> for Objects {
    fn from(objects: Vec<Value>) -> Self {
        Objects(Arc::new(objects))
    }
}

impl FromIterator<Value> for Objects {
    fn from_iter<I: IntoIterator<Item = Value>>(objects: I) -> Self {
        Objects::from(objects.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a Objects {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl AppAssignment {
    /// Sorts the objects by [`ObjectRef`], the order assignments carry them in.
    pub fn sort_objects(&mut self) {
        self.objects.sort();
    }

    /// Content digest of this app: name, policy, dependencies, objects (canonical JSON), render
    /// error and ignored differences. Objects must be sorted ([`AppAssignment::sort_objects`]).
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.name.as_bytes());
        hasher.update([0, self.policy.prune as u8, self.policy.self_heal as u8]);
        for dep in &self.depends_on {
            hasher.update(dep.as_bytes());
            hasher.update([0]);
        }
        let mut json = Vec::new();
        for object in &self.objects {
            json.clear();
            write_canonical(object, &mut json);
            hasher.update(&json);
            hasher.update([0]);
        }
        if let Some(error) = &self.render_error {
            hasher.update([2]);
            hasher.update(error.as_bytes());
        }
        // Absent rules add nothing, so an app without them keeps the digest it always had.
        for rule in &self.ignore_differences {
            hasher.update([3]);
            let fields = [&rule.group, &rule.name, &rule.namespace];
            for field in fields {
                // Absent and empty differ (an empty group is the core group, an absent one any).
                hasher.update(field.as_ref().map_or(&[1u8][..], |f| f.as_bytes()));
                hasher.update([0]);
            }
            hasher.update(rule.kind.as_bytes());
            for (tag, list) in [(4u8, &rule.json_pointers), (5, &rule.managed_fields_managers)] {
                for item in list {
                    hasher.update([tag]);
                    hasher.update(item.as_bytes());
                }
            }
        }
        for rule in &self.health_rules {
            hasher.update([6]);
            let fields = [
                Some(&rule.group),
                Some(&rule.kind),
                Some(&rule.healthy),
                rule.degraded.as_ref(),
                rule.message.as_ref(),
            ];
            for field in fields {
                hasher.update(field.map_or(&[1u8][..], |f| f.as_bytes()));
                hasher.update([0]);
            }
        }
        hasher.finalize().into()
    }
}

/// Objects as JSON in their own key order, as they travel on the wire.
pub fn document_json(objects: &[Value]) -> Vec<String> {
    objects.iter().map(Value::to_string).collect()
}

/// JSON with object keys sorted at every level: equal values give equal bytes.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Writes `value` as [`canonical_json`] does, without building a sorted copy first.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by_key(|(key, _)| *key);
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("writing to memory");
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to memory"),
    }
}

/// A Kubernetes-style name: 1 to 63 lowercase letters, digits and '-', neither first nor last
/// a '-' (clusters, environments, apps).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorting_objects_copies_them_only_when_they_are_out_of_order() {
        let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        let sorted: Objects = vec![cm("a"), cm("b")].into();
        let mut same = sorted.clone();
        same.sort();
        assert!(same.ptr_eq(&sorted), "already sorted: still shared");

        let unsorted: Objects = vec![cm("b"), cm("a"), cm("c")].into();
        let mut resorted = unsorted.clone();
        resorted.sort();
        assert!(!resorted.ptr_eq(&unsorted));
        let names =
            |o: &Objects| o.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(names(&resorted), ["a", "b", "c"]);
        assert_eq!(names(&unsorted), ["b", "a", "c"], "the shared copy is left as it was");
    }

    #[test]
    fn objects_sort_as_their_object_refs_do() {
        let objects: Vec<Value> = [
            ("apps/v1", "Deployment", "b", "web"),
            ("v1", "ConfigMap", "", "z"),
            ("v1", "ConfigMap", "a", "z"),
            ("apps/v1", "Deployment", "a", "web"),
            ("v1", "Namespace", "", "a"),
            ("example.com/v1", "Widget", "a", "w"),
            ("v1", "ConfigMap", "a", "y"),
        ]
        .into_iter()
        .map(|(api, kind, ns, name)| json!({"apiVersion": api, "kind": kind, "metadata": {"namespace": ns, "name": name}}))
        .collect();
        let mut by_ref = objects.clone();
        by_ref.sort_by_cached_key(ObjectRef::of);
        let mut sorted = Objects::from(objects);
        sorted.sort();
        assert_eq!(sorted.to_vec(), by_ref);
    }
}

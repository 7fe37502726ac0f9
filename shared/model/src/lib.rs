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
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        ObjectRef {
            group: group.to_string(),
            version: version.to_string(),
            kind: object["kind"].as_str().unwrap_or_default().to_string(),
            namespace: object["metadata"]["namespace"].as_str().unwrap_or_default().to_string(),
            name: object["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        }
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
    pub objects: Vec<Value>,
    /// Set when this app failed to render for this cluster; `objects` are then the last good ones.
    pub render_error: Option<String>,
    /// Fields of its objects that other managers own (see [`crate::model::ignore`]).
    pub ignore_differences: Vec<crate::IgnoreRule>,
    /// How to judge the health of its objects' kinds: the app's rules, then the fleet's (the
    /// first that matches an object decides; built-in rules come after).
    pub health_rules: Vec<HealthRule>,
}

impl AppAssignment {
    /// Sorts the objects by [`ObjectRef`], the order assignments carry them in.
    pub fn sort_objects(&mut self) {
        self.objects.sort_by_cached_key(ObjectRef::of);
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
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("writing to memory");
                out.push(b':');
                write_canonical(&map[key], out);
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

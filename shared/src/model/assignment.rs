//! An assignment: everything one cluster must run, per app, with a content digest that makes
//! "has anything changed?" a string comparison.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::proto;

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

impl From<&proto::ObjectRef> for ObjectRef {
    fn from(r: &proto::ObjectRef) -> Self {
        ObjectRef {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

impl From<&ObjectRef> for proto::ObjectRef {
    fn from(r: &ObjectRef) -> Self {
        proto::ObjectRef {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

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
}

/// Everything one cluster must run.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub cluster: String,
    pub environment: String,
    /// Commit of the environment branch the objects come from.
    pub revision: String,
    /// Content digest over the apps (not the revision: a commit that changes nothing for this
    /// cluster yields the same digest, and nothing is re-sent).
    pub digest: String,
    /// Apps sorted by name.
    pub apps: Vec<AppAssignment>,
    /// The hub could not resolve this assignment cleanly: apply, never prune.
    pub failed: bool,
    /// W3C trace context of the sync that produced it (see [`crate::telemetry::inject`]); not
    /// part of the digest.
    pub trace_context: HashMap<String, String>,
}

impl Assignment {
    /// Builds an assignment, sorting apps and objects and computing the digest.
    pub fn new(cluster: &str, environment: &str, revision: &str, apps: Vec<AppAssignment>, failed: bool) -> Self {
        let digested = apps
            .into_iter()
            .map(|mut app| {
                app.sort_objects();
                (app.digest(), app)
            })
            .collect();
        Self::from_digested(cluster, environment, revision, digested, failed)
    }

    /// Builds an assignment from apps whose objects are already sorted and whose
    /// [`AppAssignment::digest`] is known (the hub caches both per app and cluster).
    pub fn from_digested(
        cluster: &str,
        environment: &str,
        revision: &str,
        mut apps: Vec<([u8; 32], AppAssignment)>,
        failed: bool,
    ) -> Self {
        apps.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let mut hasher = Sha256::new();
        for (app_digest, _) in &apps {
            hasher.update(app_digest);
        }
        Assignment {
            cluster: cluster.to_string(),
            environment: environment.to_string(),
            revision: revision.to_string(),
            digest: hex::encode(hasher.finalize()),
            apps: apps.into_iter().map(|(_, app)| app).collect(),
            failed,
            trace_context: HashMap::new(),
        }
    }

    /// Every object with the app it belongs to.
    pub fn objects(&self) -> impl Iterator<Item = (&AppAssignment, &Value)> {
        self.apps.iter().flat_map(|app| app.objects.iter().map(move |o| (app, o)))
    }
}

impl AppAssignment {
    /// Sorts the objects by [`ObjectRef`], the order assignments carry them in.
    pub fn sort_objects(&mut self) {
        self.objects.sort_by_cached_key(ObjectRef::of);
    }

    /// Content digest of this app: name, policy, dependencies, objects (canonical JSON) and
    /// render error. Objects must be sorted ([`AppAssignment::sort_objects`]).
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.name.as_bytes());
        hasher.update([0, self.policy.prune as u8, self.policy.self_heal as u8]);
        for dep in &self.depends_on {
            hasher.update(dep.as_bytes());
            hasher.update([0]);
        }
        for object in &self.objects {
            hasher.update(canonical_json(object).as_bytes());
            hasher.update([0]);
        }
        if let Some(error) = &self.render_error {
            hasher.update([2]);
            hasher.update(error.as_bytes());
        }
        hasher.finalize().into()
    }
}

/// JSON with object keys sorted at every level: equal values give equal bytes.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Errors turning a wire assignment into the model.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error("app '{app}' object #{index} is not valid JSON: {source}")]
    Object {
        app: String,
        index: usize,
        #[source]
        source: serde_json::Error,
    },
}

impl TryFrom<&proto::Assignment> for Assignment {
    type Error = AssignmentError;
    fn try_from(a: &proto::Assignment) -> Result<Self, AssignmentError> {
        let apps = a
            .apps
            .iter()
            .map(|app| {
                let objects = app
                    .objects_json
                    .iter()
                    .enumerate()
                    .map(|(index, text)| {
                        serde_json::from_str(text).map_err(|source| AssignmentError::Object {
                            app: app.name.clone(),
                            index,
                            source,
                        })
                    })
                    .collect::<Result<Vec<Value>, _>>()?;
                let policy =
                    app.policy.map(|p| SyncPolicy { prune: p.prune, self_heal: p.self_heal }).unwrap_or_default();
                Ok(AppAssignment {
                    name: app.name.clone(),
                    policy,
                    depends_on: app.depends_on.clone(),
                    objects,
                    render_error: (!app.render_error.is_empty()).then(|| app.render_error.clone()),
                })
            })
            .collect::<Result<Vec<_>, AssignmentError>>()?;
        // Keep the hub's digest: it is what the agent reports back and the hub compares.
        Ok(Assignment {
            cluster: a.cluster.clone(),
            environment: a.environment.clone(),
            revision: a.revision.clone(),
            digest: a.digest.clone(),
            apps,
            failed: a.failed,
            trace_context: a.trace_context.clone(),
        })
    }
}

impl From<&Assignment> for proto::Assignment {
    fn from(a: &Assignment) -> Self {
        proto::Assignment {
            cluster: a.cluster.clone(),
            environment: a.environment.clone(),
            revision: a.revision.clone(),
            digest: a.digest.clone(),
            failed: a.failed,
            trace_context: a.trace_context.clone(),
            apps: a
                .apps
                .iter()
                .map(|app| proto::AppAssignment {
                    name: app.name.clone(),
                    policy: Some(proto::SyncPolicy { prune: app.policy.prune, self_heal: app.policy.self_heal }),
                    depends_on: app.depends_on.clone(),
                    // Document order, not canonical: a SOPS document's MAC covers its values in
                    // the order sops wrote them, so the agent must see that order. The digest
                    // (canonical JSON) does not depend on it.
                    objects_json: app.objects.iter().map(Value::to_string).collect(),
                    render_error: app.render_error.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(name: &str, objects: Vec<Value>) -> AppAssignment {
        AppAssignment {
            name: name.into(),
            policy: SyncPolicy::default(),
            depends_on: vec![],
            objects,
            render_error: None,
        }
    }

    fn cm(name: &str, data: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "web"}, "data": {"k": data}})
    }

    #[test]
    fn digest_ignores_order_and_revision_but_not_content() {
        let a = Assignment::new(
            "eu-1",
            "prod",
            "r1",
            vec![app("b", vec![cm("x", "1"), cm("y", "1")]), app("a", vec![])],
            false,
        );
        let b = Assignment::new(
            "eu-1",
            "prod",
            "r2",
            vec![app("a", vec![]), app("b", vec![cm("y", "1"), cm("x", "1")])],
            false,
        );
        assert_eq!(a.digest, b.digest);
        let c = Assignment::new(
            "eu-1",
            "prod",
            "r2",
            vec![app("a", vec![]), app("b", vec![cm("y", "2"), cm("x", "1")])],
            false,
        );
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": null}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#);
    }

    #[test]
    fn proto_round_trip_keeps_everything() {
        let mut with_error = app("web", vec![cm("x", "1")]);
        with_error.render_error = Some("apps/web/base/kustomization.yaml: missing file".into());
        with_error.policy.prune = false;
        let mut a = Assignment::new("eu-1", "prod", "r1", vec![with_error], true);
        a.trace_context.insert("traceparent".into(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let wire = proto::Assignment::from(&a);
        assert_eq!(Assignment::try_from(&wire).unwrap(), a);
    }

    #[test]
    fn object_refs_split_the_api_version() {
        let r = ObjectRef::of(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "w"}}),
        );
        assert_eq!((r.group.as_str(), r.version.as_str(), r.api_version()), ("apps", "v1", "apps/v1".to_string()));
        assert_eq!(r.to_string(), "Deployment.apps w/web");
    }
}

//! An assignment: everything one cluster must run, per app, with a content digest that makes
//! "has anything changed?" a string comparison.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::HealthRule;
use crate::proto;
pub use convoy_model::{AppAssignment, ObjectRef, SyncPolicy, canonical_json, document_json};

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
    /// Apps sorted by name; shared with the hub's planner, which keeps each app's output once.
    pub apps: Vec<Arc<AppAssignment>>,
    /// Hex content digest of each app ([`AppAssignment::digest`]), parallel to `apps`: the link
    /// sends apps by digest, so only those an agent does not hold travel.
    pub app_digests: Vec<String>,
    /// The hub could not resolve this assignment cleanly: apply, never prune.
    pub failed: bool,
    /// W3C trace context of the sync that produced it (see [`crate::telemetry::inject`]); not
    /// part of the digest.
    pub trace_context: HashMap<String, String>,
    /// Where each app whose chart comes from a chart repository or registry got it, by app
    /// name (`oci://…/demo@1.2.3 sha256:…`): the hub records it in the cluster's history. Not
    /// part of the digest, not sent to agents.
    pub chart_sources: BTreeMap<String, String>,
    /// The metric-gate queries the agent runs (see [`GateQueries`]); part of the digest.
    pub gate_queries: Option<GateQueries>,
}

/// The metric-gate queries an agent runs against its cluster's Prometheus, every interval.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GateQueries {
    pub address: String,
    pub interval_ms: u64,
    /// (check name, PromQL query).
    pub checks: Vec<(String, String)>,
}

impl Assignment {
    /// Builds an assignment, sorting apps and objects and computing the digest.
    pub fn new(cluster: &str, environment: &str, revision: &str, apps: Vec<AppAssignment>, failed: bool) -> Self {
        let digested = apps
            .into_iter()
            .map(|mut app| {
                app.sort_objects();
                (app.digest(), Arc::new(app))
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
        mut apps: Vec<([u8; 32], Arc<AppAssignment>)>,
        failed: bool,
    ) -> Self {
        apps.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let app_digests = apps.iter().map(|(digest, _)| hex::encode(digest)).collect();
        let mut assignment = Assignment {
            cluster: cluster.to_string(),
            environment: environment.to_string(),
            revision: revision.to_string(),
            digest: String::new(),
            apps: apps.into_iter().map(|(_, app)| app).collect(),
            app_digests,
            failed,
            trace_context: HashMap::new(),
            chart_sources: BTreeMap::new(),
            gate_queries: None,
        };
        assignment.digest = assignment.content_digest();
        assignment
    }

    /// This assignment with the agent's metric-gate `queries` (its digest follows).
    pub fn with_gate_queries(mut self, queries: Option<GateQueries>) -> Self {
        if self.gate_queries != queries {
            self.gate_queries = queries;
            self.digest = self.content_digest();
        }
        self
    }

    /// The digest over the apps' digests, then the gate queries when there are any (so an
    /// assignment without them keeps the digest it always had).
    fn content_digest(&self) -> String {
        let mut hasher = Sha256::new();
        for digest in &self.app_digests {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(digest, &mut bytes).expect("app digests are 32 hex-encoded bytes");
            hasher.update(bytes);
        }
        if let Some(q) = &self.gate_queries {
            hasher.update([7]);
            hasher.update(q.address.as_bytes());
            hasher.update(q.interval_ms.to_be_bytes());
            for (name, query) in &q.checks {
                hasher.update([0]);
                hasher.update(name.as_bytes());
                hasher.update([0]);
                hasher.update(query.as_bytes());
            }
        }
        hex::encode(hasher.finalize())
    }

    /// An assignment made of apps' parts taken from others (apps at different commits while
    /// their rollouts differ): (hex digest, app) as [`Assignment::digested_apps`] gives them.
    pub fn compose(
        cluster: &str,
        environment: &str,
        revision: &str,
        parts: Vec<(&str, &Arc<AppAssignment>)>,
        failed: bool,
    ) -> Self {
        let apps = parts
            .into_iter()
            .map(|(digest, app)| {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(digest, &mut bytes).expect("app digests are 32 hex-encoded bytes");
                (bytes, Arc::clone(app))
            })
            .collect();
        Self::from_digested(cluster, environment, revision, apps, failed)
    }

    /// Apps with their hex digests.
    pub fn digested_apps(&self) -> impl Iterator<Item = (&str, &Arc<AppAssignment>)> {
        self.app_digests.iter().map(String::as_str).zip(&self.apps)
    }

    /// Reads a wire assignment. Apps sent by digest come from `held`: the app with that digest,
    /// which the agent holds already ([`HeldObjects::Held`], trusted and shared, not copied: the
    /// digest covers every field of an app) or whose objects were just sent in `AppContent`
    /// parts ([`HeldObjects::Sent`], checked against the digest).
    pub fn from_wire(
        a: &proto::Assignment,
        mut held: impl FnMut(&str) -> Option<HeldObjects>,
    ) -> Result<Self, AssignmentError> {
        let mut apps = Vec::with_capacity(a.apps.len());
        let mut app_digests = Vec::with_capacity(a.apps.len());
        for app in &a.apps {
            let (objects, check) = if app.by_digest {
                match held(&app.digest) {
                    Some(HeldObjects::Held(same)) => {
                        apps.push(same);
                        app_digests.push(app.digest.clone());
                        continue;
                    }
                    Some(HeldObjects::Sent(json)) => (parse_objects(&app.name, &json)?, true),
                    None => {
                        return Err(AssignmentError::MissingApp { app: app.name.clone(), digest: app.digest.clone() });
                    }
                }
            } else {
                (parse_objects(&app.name, &app.objects_json)?, app.digest.is_empty())
            };
            let policy = app.policy.map(|p| SyncPolicy { prune: p.prune, self_heal: p.self_heal }).unwrap_or_default();
            let model = AppAssignment {
                name: app.name.clone(),
                policy,
                depends_on: app.depends_on.clone(),
                objects: objects.into(),
                render_error: (!app.render_error.is_empty()).then(|| app.render_error.clone()),
                ignore_differences: app.ignore_differences.iter().map(crate::model::ignore::from_wire).collect(),
                health_rules: app.health_rules.iter().map(health_from_wire).collect(),
            };
            let digest = if check || app.digest.is_empty() {
                let actual = hex::encode(model.digest());
                if !app.digest.is_empty() && actual != app.digest {
                    return Err(AssignmentError::DigestMismatch {
                        app: app.name.clone(),
                        expected: app.digest.clone(),
                        actual,
                    });
                }
                actual
            } else {
                app.digest.clone()
            };
            apps.push(Arc::new(model));
            app_digests.push(digest);
        }
        // Keep the hub's digest: it is what the agent reports back and the hub compares.
        Ok(Assignment {
            cluster: a.cluster.clone(),
            environment: a.environment.clone(),
            revision: a.revision.clone(),
            digest: a.digest.clone(),
            apps,
            app_digests,
            failed: a.failed,
            trace_context: a.trace_context.clone(),
            chart_sources: BTreeMap::new(),
            gate_queries: a.gate_queries.as_ref().map(|q| GateQueries {
                address: q.address.clone(),
                interval_ms: q.interval_ms,
                checks: q.checks.iter().map(|c| (c.name.clone(), c.query.clone())).collect(),
            }),
        })
    }

    /// The wire form with the objects of the apps `send` picks inline and every other app by
    /// digest (its objects travel in `AppContent` parts, or the agent holds them).
    pub fn to_wire(&self, mut inline: impl FnMut(&str) -> bool) -> proto::Assignment {
        proto::Assignment {
            cluster: self.cluster.clone(),
            environment: self.environment.clone(),
            revision: self.revision.clone(),
            digest: self.digest.clone(),
            failed: self.failed,
            trace_context: self.trace_context.clone(),
            gate_queries: self.gate_queries.as_ref().map(|q| proto::GateQueries {
                address: q.address.clone(),
                interval_ms: q.interval_ms,
                checks: q
                    .checks
                    .iter()
                    .map(|(name, query)| proto::GateQuery { name: name.clone(), query: query.clone() })
                    .collect(),
            }),
            apps: self
                .digested_apps()
                .map(|(digest, app)| {
                    let by_digest = !inline(digest);
                    proto::AppAssignment {
                        name: app.name.clone(),
                        policy: Some(proto::SyncPolicy { prune: app.policy.prune, self_heal: app.policy.self_heal }),
                        depends_on: app.depends_on.clone(),
                        // Document order, not canonical: a SOPS document's MAC covers its values
                        // in the order sops wrote them, so the agent must see that order. The
                        // digest (canonical JSON) does not depend on it.
                        objects_json: if by_digest { Vec::new() } else { document_json(&app.objects) },
                        render_error: app.render_error.clone().unwrap_or_default(),
                        digest: digest.to_string(),
                        by_digest,
                        ignore_differences: app.ignore_differences.iter().map(crate::model::ignore::to_wire).collect(),
                        health_rules: app.health_rules.iter().map(health_to_wire).collect(),
                    }
                })
                .collect(),
        }
    }

    /// Every object with the app it belongs to.
    pub fn objects(&self) -> impl Iterator<Item = (&AppAssignment, &Value)> {
        self.apps.iter().flat_map(|app| app.objects.iter().map(move |o| (&**app, o)))
    }
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
    #[error("app '{app}' was sent by digest {digest}, which this agent neither holds nor was sent")]
    MissingApp { app: String, digest: String },
    #[error("app '{app}' arrived with digest {actual}, not the {expected} the hub announced")]
    DigestMismatch { app: String, expected: String, actual: String },
}

/// Largest uncompressed `AppContent` part an agent takes (far above the hub's 64 KiB parts).
const MAX_CONTENT_PART_BYTES: u64 = 64 << 20;

thread_local! {
    /// One zstd context per thread, reused: a fresh one per part costs more than compressing.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// The objects of one `AppContent` part as one zstd frame (`objects_zstd`): each object's JSON
/// followed by a newline (JSON text never holds a raw one).
pub fn pack_objects(objects: &[String]) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::with_capacity(objects.iter().map(|o| o.len() + 1).sum());
    for object in objects {
        text.extend_from_slice(object.as_bytes());
        text.push(b'\n');
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some(compressor) => compressor,
            empty => empty.insert(zstd::bulk::Compressor::new(zstd::DEFAULT_COMPRESSION_LEVEL)?),
        };
        compressor.compress(&text)
    })
}

/// Reads what [`pack_objects`] wrote.
pub fn unpack_objects(frame: &[u8]) -> Result<Vec<String>, String> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(frame).map_err(|e| e.to_string())?;
    let mut text = String::new();
    let read = decoder.take(MAX_CONTENT_PART_BYTES + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if read as u64 > MAX_CONTENT_PART_BYTES {
        return Err(format!("a part holds more than {} MiB", MAX_CONTENT_PART_BYTES >> 20));
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// Objects of an app sent by digest, as the agent has them.
pub enum HeldObjects {
    /// The app of an assignment the agent holds (already checked when it arrived).
    Held(Arc<AppAssignment>),
    /// Canonical JSON just received in `AppContent` parts: parsed and checked against the digest.
    Sent(Vec<String>),
}

fn parse_objects(app: &str, json: &[String]) -> Result<Vec<Value>, AssignmentError> {
    json.iter()
        .enumerate()
        .map(|(index, text)| {
            serde_json::from_str(text).map_err(|source| AssignmentError::Object { app: app.to_string(), index, source })
        })
        .collect()
}

impl TryFrom<&proto::Assignment> for Assignment {
    type Error = AssignmentError;
    /// Reads an assignment that carries every app's objects (as the cache stores it).
    fn try_from(a: &proto::Assignment) -> Result<Self, AssignmentError> {
        Assignment::from_wire(a, |_| None)
    }
}

impl From<&Assignment> for proto::Assignment {
    /// The whole assignment, every app inline (what the cache stores, and what agents that do
    /// not take apps by digest receive).
    fn from(a: &Assignment) -> Self {
        a.to_wire(|_| true)
    }
}

fn health_from_wire(rule: &proto::HealthRule) -> HealthRule {
    HealthRule {
        group: rule.group.clone(),
        kind: rule.kind.clone(),
        healthy: rule.healthy.clone(),
        degraded: rule.degraded.clone(),
        message: rule.message.clone(),
    }
}

fn health_to_wire(rule: &HealthRule) -> proto::HealthRule {
    proto::HealthRule {
        group: rule.group.clone(),
        kind: rule.kind.clone(),
        healthy: rule.healthy.clone(),
        degraded: rule.degraded.clone(),
        message: rule.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(name: &str, objects: Vec<Value>) -> AppAssignment {
        AppAssignment {
            ignore_differences: Vec::new(),
            health_rules: Vec::new(),
            name: name.into(),
            policy: SyncPolicy::default(),
            depends_on: vec![],
            objects: objects.into(),
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
    fn apps_sent_by_digest_come_from_what_the_agent_holds_or_was_just_sent() {
        let held = Assignment::new(
            "eu-1",
            "prod",
            "r1",
            vec![app("a", vec![cm("x", "1")]), app("b", vec![cm("y", "1")])],
            false,
        );
        let next = Assignment::new(
            "eu-1",
            "prod",
            "r2",
            vec![app("a", vec![cm("x", "1")]), app("b", vec![cm("y", "2")])],
            false,
        );
        assert_eq!(held.app_digests[0], next.app_digests[0], "app a did not change");
        let wire = next.to_wire(|_| false);
        assert!(wire.apps.iter().all(|a| a.by_digest && a.objects_json.is_empty()));
        let sent = proto::Assignment::from(&next).apps[1].objects_json.clone();
        let read = Assignment::from_wire(&wire, |digest| {
            if let Some((_, app)) = held.digested_apps().find(|(d, _)| *d == digest) {
                return Some(HeldObjects::Held(app.clone()));
            }
            (digest == next.app_digests[1]).then(|| HeldObjects::Sent(sent.clone()))
        })
        .unwrap();
        assert_eq!(read, next);
        assert!(Arc::ptr_eq(&read.apps[0], &held.apps[0]), "the app held already is shared, not copied");

        // Never sent: an error naming the app, not an empty app.
        let missing = Assignment::from_wire(&wire, |_| None).unwrap_err();
        assert!(matches!(&missing, AssignmentError::MissingApp { app, .. } if app == "a"), "{missing}");
        // Sent, but not what the digest says: refused.
        let wrong = Assignment::from_wire(&wire, |_| Some(HeldObjects::Sent(vec![canonical_json(&cm("z", "9"))])));
        assert!(matches!(wrong, Err(AssignmentError::DigestMismatch { .. })));
    }

    #[test]
    fn object_refs_split_the_api_version() {
        let r = ObjectRef::of(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "w"}}),
        );
        assert_eq!((r.group.as_str(), r.version.as_str(), r.api_version()), ("apps", "v1", "apps/v1".to_string()));
        assert_eq!(r.to_string(), "Deployment.apps w/web");
    }

    #[test]
    fn packed_content_reads_back_object_for_object_and_a_broken_frame_is_an_error() {
        let objects: Vec<String> = (0..50)
            .map(|i| {
                json!({"kind": "ConfigMap", "metadata": {"name": format!("c{i}")}, "data": {"k": "a\nb"}}).to_string()
            })
            .collect();
        let packed = pack_objects(&objects).unwrap();
        assert!(packed.len() < objects.iter().map(String::len).sum::<usize>() / 4, "{} bytes", packed.len());
        assert_eq!(unpack_objects(&packed).unwrap(), objects);
        assert_eq!(unpack_objects(&pack_objects(&[]).unwrap()).unwrap(), Vec::<String>::new());
        assert!(unpack_objects(&packed[..packed.len() / 2]).is_err());
        assert!(unpack_objects(b"not zstd").is_err());
    }
}

//! The Applier: server-side apply of desired objects through the kube client as field manager
//! `convoy-agent`, in phase order, with bounded concurrency and retries on throttling, server
//! errors, conflicts and lost connections — one result per object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use convoy_shared::backoff::Backoff;
use convoy_shared::model::{Ignored, NAMESPACE_OF_ANNOTATION, ObjectRef};

use crate::api_error::api_message;
use crate::discovery::{Discovery, DiscoveryError, Resource};
use crate::fields::FIELD_MANAGER;
use crate::order::Step;

/// Label naming the cluster on every managed object.
pub const CLUSTER_LABEL: &str = "convoy.dev/cluster";
/// Label naming the app on every managed object.
pub const APP_LABEL: &str = "convoy.dev/app";
/// Annotation carrying the commit the object was last applied from.
pub const REVISION_ANNOTATION: &str = "convoy.dev/revision";
/// Annotation that protects an object from prune when set to `disabled`.
pub const PRUNE_ANNOTATION: &str = "convoy.dev/prune";
/// Annotation the agent keeps on a Namespace it created for an app (`spec.createNamespace`).
pub const NAMESPACE_CREATED_ANNOTATION: &str = "convoy.dev/namespace-created";

/// Settles a Namespace the hub added for an app (annotated [`NAMESPACE_OF_ANNOTATION`])
/// against `live`, the cluster's: one the agent creates now, or created before, says so and
/// follows the app's `deleteNamespace`; one that was there before Convoy is labelled like every
/// managed object but never pruned.
pub fn settle_added_namespace(body: &mut Value, live: Option<&Value>) {
    let created = match live {
        None => true,
        Some(live) => live["metadata"]["annotations"][NAMESPACE_CREATED_ANNOTATION] == "true",
    };
    let Some(annotations) = body.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else { return };
    if created {
        annotations.insert(NAMESPACE_CREATED_ANNOTATION.into(), json!("true"));
    } else {
        annotations.insert(PRUNE_ANNOTATION.into(), json!("disabled"));
    }
}

/// Errors applying one object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{object}: {source}")]
    Discovery {
        object: ObjectRef,
        #[source]
        source: DiscoveryError,
    },
    #[error("{object}: the API server refused the apply: {message}")]
    Rejected { object: ObjectRef, message: String },
    #[error("{object}: gave up after {attempts} attempts: {last}")]
    GaveUp { object: ObjectRef, attempts: u32, last: String },
    #[error("CRD {name} did not become Established; check `kubectl get crd {name} -o yaml`")]
    NotEstablished { name: String },
    #[error("{object}: skipped because an earlier phase failed: {reason}")]
    Blocked { object: ObjectRef, reason: String },
}

/// Module result.
pub type Result<T, E = ApplyError> = std::result::Result<T, E>;

/// Retry with capped exponential backoff and jitter for transient API failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Give up on one object after this long (the next reconcile pass tries again).
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            budget: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The jittered wait after `attempt` + 1 failed calls (many objects retry at once).
    fn delay(&self, attempt: u32) -> Duration {
        Backoff::new(self.initial, self.max).delay(attempt + 1)
    }
}

/// What to do about one failed API call.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transient: try again, after at least this long if the server said so.
    Retry(Option<Duration>),
    /// Permanent: report it.
    Fail,
}

/// Sorts a kube error into retry or fail: 429 (honoring Retry-After), 5xx, 409 conflicts and
/// transport errors are transient; other API answers are not.
pub fn classify(e: &kube::Error) -> Verdict {
    match e {
        kube::Error::Api(s) => {
            let after = s
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s.into()));
            match s.code {
                429 | 409 | 500..=599 => Verdict::Retry(after),
                _ => Verdict::Fail,
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => Verdict::Retry(None),
        _ => Verdict::Fail,
    }
}

/// Runs `call` until it succeeds, fails permanently, or `policy.budget` is spent.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    object: &ObjectRef,
    mut call: F,
) -> Result<T, (kube::Error, u32, bool)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let start = tokio::time::Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => match classify(&e) {
                Verdict::Fail => return Err((e, attempt, false)),
                Verdict::Retry(after) => {
                    let wait = after.unwrap_or_default().max(policy.delay(attempt - 1));
                    if start.elapsed() + wait > policy.budget {
                        return Err((e, attempt, true));
                    }
                    tracing::debug!(%object, attempt, error = %e, wait_ms = wait.as_millis() as u64, "transient API error; retrying");
                    tokio::time::sleep(wait).await;
                }
            },
        }
    }
}

/// A desired object ready to apply: labels and annotation added, namespace settled.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub object: ObjectRef,
    pub app: String,
    pub body: Value,
    /// The body holds secret values (a Secret, or anything decrypted from SOPS): drift on it
    /// is reported without values.
    pub sensitive: bool,
    /// The fields of it that `ignoreDifferences` leaves to other managers (most objects: none).
    pub ignored: Arc<Ignored>,
}

/// Applies desired objects to one cluster.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    discovery: Discovery,
    cluster: String,
    concurrency: usize,
    retry: RetryPolicy,
    force: bool,
}

impl Applier {
    /// An applier for `cluster` with up to `concurrency` requests in flight.
    pub fn new(client: Client, discovery: Discovery, cluster: &str, concurrency: usize) -> Self {
        Applier {
            client,
            discovery,
            cluster: cluster.to_string(),
            concurrency: concurrency.max(1),
            retry: RetryPolicy::default(),
            force: true,
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The discovery cache this applier uses.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// The kube client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Adds the ownership labels and revision annotation, and drops server-owned metadata and
    /// status, which an apply must not carry.
    pub fn prepare(&self, object: &Value, app: &str, revision: &str) -> Prepared {
        let mut body = object.clone();
        if let Some(o) = body.as_object_mut() {
            o.shift_remove("status");
        }
        let meta = body.as_object_mut().map(|o| o.entry("metadata").or_insert_with(|| json!({})));
        if let Some(Value::Object(meta)) = meta {
            for k in ["managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink"] {
                meta.shift_remove(k);
            }
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(labels) = labels {
                labels.insert(CLUSTER_LABEL.into(), json!(self.cluster));
                labels.insert(APP_LABEL.into(), json!(app));
            }
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Value::Object(annotations) = annotations {
                annotations.insert(REVISION_ANNOTATION.into(), json!(revision));
            }
        }
        let object = ObjectRef::of(&body);
        let sensitive = object.group.is_empty() && object.kind == "Secret";
        Prepared { object, app: app.to_string(), body, sensitive, ignored: Arc::default() }
    }

    /// The live object `p` names, if the cluster has it.
    pub async fn get_live(&self, p: &Prepared) -> Result<Option<Value>> {
        let resource = self
            .discovery
            .resolve(&p.object)
            .await
            .map_err(|source| ApplyError::Discovery { object: p.object.clone(), source })?;
        let api = self.api(&resource, &p.object.namespace);
        let live =
            with_retry(&self.retry, &p.object, || api.get_opt(&p.object.name)).await.map_err(|(e, attempts, _)| {
                ApplyError::GaveUp { object: p.object.clone(), attempts, last: api_message(&e) }
            })?;
        Ok(live.map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    /// Settles `p` when it is a Namespace the hub added for an app ([`settle_added_namespace`]);
    /// when the cluster cannot be asked, as one that was there before (never pruned).
    pub async fn settle_namespace(&self, p: &mut Prepared) {
        let added = p.object.kind == "Namespace"
            && p.object.group.is_empty()
            && p.body["metadata"]["annotations"][NAMESPACE_OF_ANNOTATION].is_string();
        if !added {
            return;
        }
        match self.get_live(p).await {
            Ok(live) => settle_added_namespace(&mut p.body, live.as_ref()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the namespace; it is applied as one never to prune");
                settle_added_namespace(&mut p.body, Some(&Value::Null));
            }
        }
    }

    /// Makes `p`'s body leave what `p.ignored` names to the managers that own it in the live
    /// object ([`crate::ignore::respect`]); an object not there yet is created whole. When the
    /// live object cannot be read, the body stays as it is (its apply will say why).
    pub async fn respect_ignored(&self, p: &mut Prepared) {
        if p.ignored.is_empty() {
            return;
        }
        match self.get_live(p).await {
            Ok(Some(live)) => crate::ignore::respect(&mut p.body, &live, &p.ignored),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the live object for ignoreDifferences"),
        }
    }

    /// An `Api` for `object` through `resource`.
    pub fn api(&self, resource: &Resource, namespace: &str) -> Api<DynamicObject> {
        if resource.namespaced {
            let ns = if namespace.is_empty() { "default" } else { namespace };
            Api::namespaced_with(self.client.clone(), ns, &resource.api)
        } else {
            Api::all_with(self.client.clone(), &resource.api)
        }
    }

    /// Server-side applies one prepared object; returns the live object the server answered.
    pub async fn apply_one(&self, p: &Prepared) -> Result<Value> {
        let resource = self
            .discovery
            .resolve(&p.object)
            .await
            .map_err(|source| ApplyError::Discovery { object: p.object.clone(), source })?;
        let mut body = p.body.clone();
        if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            if resource.namespaced {
                if p.object.namespace.is_empty() {
                    meta.insert("namespace".into(), json!("default"));
                }
            } else {
                meta.shift_remove("namespace");
            }
        }
        let api = self.api(&resource, &p.object.namespace);
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = self.force;
        let name = p.object.name.clone();
        let patch = Patch::Apply(&body);
        let live = with_retry(&self.retry, &p.object, || api.patch(&name, &params, &patch)).await.map_err(
            |(e, attempts, transient)| {
                if transient {
                    ApplyError::GaveUp { object: p.object.clone(), attempts, last: api_message(&e) }
                } else {
                    ApplyError::Rejected { object: p.object.clone(), message: api_message(&e) }
                }
            },
        )?;
        Ok(serde_json::to_value(live).unwrap_or(Value::Null))
    }

    /// Applies a set in phase order: Namespaces and CRDs, wait for the CRDs to be Established
    /// (refreshing discovery), then Helm pre-hooks by weight, RBAC/ServiceAccounts, config,
    /// Services, workloads, the rest, and Helm post-hooks by weight ([`Step`]).
    /// Objects of one phase go out concurrently. A CRD that fails blocks the custom resources of
    /// its group; other failures do not stop later phases.
    ///
    /// Each result goes to `record` as soon as it comes, so the live object the server answered
    /// (managedFields and all) lives only as long as recording it takes, not until the set is done.
    pub async fn apply_set(&self, set: Vec<Prepared>, mut record: impl FnMut(Prepared, Result<Value>)) {
        let mut by_phase: BTreeMap<Step, Vec<Prepared>> = BTreeMap::new();
        for p in set {
            by_phase.entry(Step::of(&p.object, &p.body)).or_default().push(p);
        }
        let mut failed_groups: BTreeMap<String, String> = BTreeMap::new();
        for (phase, items) in by_phase {
            let (blocked, items): (Vec<_>, Vec<_>) =
                items.into_iter().partition(|p| failed_groups.contains_key(&p.object.group));
            for p in blocked {
                let reason = failed_groups[&p.object.group].clone();
                let object = p.object.clone();
                record(p, Err(ApplyError::Blocked { object, reason }));
            }
            // CRDs of this phase: (the CRD, its group, why it failed to apply).
            let mut crds: Vec<(ObjectRef, String, Option<String>)> = Vec::new();
            let mut done = futures::stream::iter(items)
                .map(|p| async move {
                    let r = self.apply_one(&p).await;
                    (p, r)
                })
                .buffer_unordered(self.concurrency);
            while let Some((p, r)) = done.next().await {
                if phase == Step::Foundation && p.object.kind == "CustomResourceDefinition" {
                    let group = p.body["spec"]["group"].as_str().unwrap_or("").to_string();
                    crds.push((p.object.clone(), group, r.as_ref().err().map(ToString::to_string)));
                }
                record(p, r);
            }
            for (crd, group, failed) in crds {
                let outcome = match failed {
                    None => self.wait_established(&crd).await,
                    Some(reason) => Err(ApplyError::Blocked { object: crd, reason }),
                };
                match outcome {
                    Ok(()) => self.discovery.invalidate_group(&group).await,
                    Err(e) => {
                        failed_groups.insert(group, e.to_string());
                    }
                }
            }
        }
    }

    /// Polls a CRD until its Established condition is True.
    async fn wait_established(&self, crd: &ObjectRef) -> Result<()> {
        let resource = self
            .discovery
            .resolve(crd)
            .await
            .map_err(|source| ApplyError::Discovery { object: crd.clone(), source })?;
        let api = self.api(&resource, "");
        let deadline = tokio::time::Instant::now() + self.retry.budget;
        let poll = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        let mut polls = 0;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(live)) = api.get_opt(&crd.name).await {
                let live = serde_json::to_value(live).unwrap_or(Value::Null);
                let established = live
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
                if established {
                    return Ok(());
                }
            }
            polls += 1;
            tokio::time::sleep(poll.ceiling(polls)).await;
        }
        Err(ApplyError::NotEstablished { name: crd.name.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::{Status, response::StatusDetails};

    fn api_error(code: u16, retry_after: u32) -> kube::Error {
        let mut s = Status::failure("boom", "Reason");
        s.code = code;
        if retry_after > 0 {
            s.details =
                Some(serde_json::from_value::<StatusDetails>(json!({"retryAfterSeconds": retry_after})).unwrap());
        }
        kube::Error::Api(Box::new(s))
    }

    #[test]
    fn transient_errors_are_retried_and_retry_after_is_honored() {
        assert_eq!(classify(&api_error(429, 2)), Verdict::Retry(Some(Duration::from_secs(2))));
        assert_eq!(classify(&api_error(500, 0)), Verdict::Retry(None));
        assert_eq!(classify(&api_error(503, 0)), Verdict::Retry(None));
        assert_eq!(classify(&api_error(409, 0)), Verdict::Retry(None));
        assert_eq!(classify(&api_error(422, 0)), Verdict::Fail);
        assert_eq!(classify(&api_error(403, 0)), Verdict::Fail);
    }

    #[test]
    fn an_added_namespace_says_whether_the_agent_made_it_and_one_made_before_is_never_pruned() {
        let added = || json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web", "annotations": {"convoy.dev/namespace-of": "web"}}});
        let mut fresh = added();
        settle_added_namespace(&mut fresh, None);
        assert_eq!(fresh["metadata"]["annotations"][NAMESPACE_CREATED_ANNOTATION], "true");
        assert!(fresh["metadata"]["annotations"].get(PRUNE_ANNOTATION).is_none());
        let mut ours = added();
        settle_added_namespace(&mut ours, Some(&fresh));
        assert_eq!(ours, fresh, "one the agent made stays its own");
        let mut theirs = added();
        settle_added_namespace(&mut theirs, Some(&json!({"metadata": {"name": "web", "labels": {"team": "x"}}})));
        assert_eq!(theirs["metadata"]["annotations"][PRUNE_ANNOTATION], "disabled");
        assert!(theirs["metadata"]["annotations"].get(NAMESPACE_CREATED_ANNOTATION).is_none());
    }

    #[test]
    fn backoff_is_capped() {
        let p = RetryPolicy::default();
        for attempt in 0..40 {
            assert!(p.delay(attempt) <= p.max);
        }
    }
}

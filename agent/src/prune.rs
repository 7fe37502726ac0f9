//! The Pruner: deletes objects that left Git (last inventory − new desired), in reverse apply
//! order with Namespaces last, sparing objects annotated `convoy.dev/prune: disabled` and objects
//! this cluster's agent does not manage.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use kube::api::DeleteParams;
use serde_json::Value;

use convoy_shared::model::ObjectRef;

use crate::api_error::api_message;
use crate::applier::{Applier, CLUSTER_LABEL, PRUNE_ANNOTATION, with_retry};
use crate::order::prune_rank;

/// Errors pruning one object.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("{object}: cannot resolve its kind: {message}")]
    Discovery { object: ObjectRef, message: String },
    #[error("{object}: delete failed: {message}")]
    Delete { object: ObjectRef, message: String },
}

/// What happened to each prune candidate.
#[derive(Debug, Default)]
pub struct PruneOutcome {
    /// Deleted now, or already gone.
    pub deleted: Vec<ObjectRef>,
    /// Spared by `convoy.dev/prune: disabled`.
    pub protected: Vec<ObjectRef>,
    /// Not ours (no or another cluster label): left alone.
    pub foreign: Vec<ObjectRef>,
    pub failed: Vec<PruneError>,
}

/// Deletes what left Git.
#[derive(Clone)]
pub struct Pruner {
    applier: Applier,
    cluster: String,
    concurrency: usize,
}

enum One {
    Deleted,
    Protected,
    Foreign,
}

impl Pruner {
    /// A pruner using the applier's client, discovery and retry policy.
    pub fn new(applier: Applier, cluster: &str, concurrency: usize) -> Self {
        Pruner { applier, cluster: cluster.to_string(), concurrency: concurrency.max(1) }
    }

    /// Deletes `candidates`, rank by rank (custom resources and workloads first, CRDs and then
    /// Namespaces last).
    pub async fn prune(&self, candidates: Vec<ObjectRef>) -> PruneOutcome {
        let mut ranks: BTreeMap<(u8, u8), Vec<ObjectRef>> = BTreeMap::new();
        for r in candidates {
            ranks.entry(prune_rank(&r)).or_default().push(r);
        }
        let mut outcome = PruneOutcome::default();
        for (_, refs) in ranks {
            let results: Vec<(ObjectRef, Result<One, PruneError>)> = futures::stream::iter(refs)
                .map(|r| async move {
                    let result = self.prune_one(&r).await;
                    (r, result)
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for (r, result) in results {
                match result {
                    Ok(One::Deleted) => {
                        tracing::info!(object = %r, "pruned");
                        outcome.deleted.push(r)
                    }
                    Ok(One::Protected) => {
                        tracing::info!(object = %r, "left in place: {PRUNE_ANNOTATION}=disabled");
                        outcome.protected.push(r)
                    }
                    Ok(One::Foreign) => {
                        tracing::warn!(object = %r, cluster = %self.cluster, "not pruned: not labeled as managed by this cluster's agent");
                        outcome.foreign.push(r)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "prune failed");
                        outcome.failed.push(e)
                    }
                }
            }
        }
        outcome
    }

    async fn prune_one(&self, r: &ObjectRef) -> Result<One, PruneError> {
        let resource = match self.applier.discovery().resolve(r).await {
            Ok(res) => res,
            // The kind is gone (its CRD was deleted): so are its objects.
            Err(crate::discovery::DiscoveryError::NotServed { .. }) => return Ok(One::Deleted),
            Err(e) => {
                return Err(PruneError::Discovery { object: r.clone(), message: e.to_string() });
            }
        };
        let api = self.applier.api(&resource, &r.namespace);
        let policy = self.applier.retry_policy();
        let fail = |e: &kube::Error| PruneError::Delete { object: r.clone(), message: api_message(e) };
        let live = with_retry(policy, r, || api.get_opt(&r.name)).await.map_err(|(e, _, _)| fail(&e))?;
        let Some(live) = live else {
            return Ok(One::Deleted);
        };
        let live = serde_json::to_value(live).unwrap_or(Value::Null);
        let meta = &live["metadata"];
        if meta["annotations"][PRUNE_ANNOTATION] == "disabled" {
            return Ok(One::Protected);
        }
        if meta["labels"][CLUSTER_LABEL] != self.cluster.as_str() {
            return Ok(One::Foreign);
        }
        let params = DeleteParams::background();
        match with_retry(policy, r, || api.delete(&r.name, &params)).await {
            Ok(_) => Ok(One::Deleted),
            Err((kube::Error::Api(s), _, _)) if s.code == 404 => Ok(One::Deleted),
            Err((e, _, _)) => Err(fail(&e)),
        }
    }
}

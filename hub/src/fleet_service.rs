//! FleetService: what the `convoy` CLI asks the hub — clusters, status, drift, history,
//! environments, promotion diffs and refresh.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use convoy_shared::identity::Role;
use convoy_shared::model::{Assignment, ObjectRef, canonical_json};
use convoy_shared::proto::drift_response::ClusterDrift;
use convoy_shared::proto::fleet_service_server::FleetService;
use convoy_shared::proto::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::planner::{EnvironmentState, PlanStats, Planner};
use crate::state::Hub;

/// How many history entries `History` returns when the request names no limit.
const DEFAULT_HISTORY: u32 = 50;

/// The FleetService implementation.
pub struct FleetApi {
    hub: Arc<Hub>,
    /// Ends `Watch` streams when the hub shuts down, so draining does not wait on watchers.
    shutdown: tokio_util::sync::CancellationToken,
}

impl FleetApi {
    pub fn new(hub: Arc<Hub>, shutdown: tokio_util::sync::CancellationToken) -> Self {
        FleetApi { hub, shutdown }
    }

    fn clusters(&self) -> Vec<ClusterInfo> {
        self.hub.cluster_infos()
    }

    /// The named cluster, or every cluster when `name` is empty.
    fn selected(&self, name: &str) -> Result<Vec<ClusterInfo>, Status> {
        let all = self.clusters();
        if name.is_empty() {
            return Ok(all);
        }
        all.into_iter().find(|c| c.name == name).map(|c| vec![c]).ok_or_else(|| {
            Status::not_found(format!("unknown cluster '{name}': `convoy clusters` lists the clusters the hub knows"))
        })
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<FleetEvent, Status>> + Send>>;

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn list_clusters(&self, _: Request<ListClustersRequest>) -> Result<Response<ListClustersResponse>, Status> {
        Ok(Response::new(ListClustersResponse { clusters: self.clusters() }))
    }

    async fn get_cluster(&self, req: Request<GetClusterRequest>) -> Result<Response<ClusterInfo>, Status> {
        let mut found = self.selected(&req.get_ref().name)?;
        Ok(Response::new(found.remove(0)))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let view = self.hub.view();
        let clusters = self
            .selected(&req.get_ref().cluster)?
            .into_iter()
            .map(|info| {
                let report = self.hub.connections.last_report(&info.name).unwrap_or_default();
                let health: HashMap<&str, &AppStatus> = report.apps.iter().map(|a| (a.name.as_str(), a)).collect();
                let assignment = self.hub.assignments.get(&info.name);
                let apps = assignment
                    .iter()
                    .flat_map(|a| a.apps.iter())
                    .map(|app| {
                        let reported = health.get(app.name.as_str());
                        AppHealth {
                            name: app.name.clone(),
                            health: reported.map_or(Health::Unknown as i32, |r| r.health),
                            message: reported.map(|r| r.message.clone()).unwrap_or_default(),
                            render_error: app.render_error.clone().unwrap_or_default(),
                        }
                    })
                    .collect();
                let mut errors = view.errors.clone();
                match (view.cluster_errors.get(&info.name), &view.fleet) {
                    (Some(own), _) => errors.extend(own.iter().cloned()),
                    // An agent whose certificate names a cluster Git does not declare.
                    (None, Some(fleet)) if !fleet.clusters.contains_key(&info.name) => errors.push(format!(
                        "cluster '{}' is not declared in Git: add clusters/{}.yaml on the fleet branch '{}'; until then it is assigned nothing new",
                        info.name, info.name, fleet.fleet_branch
                    )),
                    _ => {}
                }
                if let Some(problem) = self.hub.connections.problem_of(&info.name) {
                    errors.push(format!("agent: {problem}"));
                }
                ClusterStatus { cluster: Some(info), apps, errors }
            })
            .collect();
        Ok(Response::new(StatusResponse { clusters }))
    }

    async fn drift(&self, req: Request<DriftRequest>) -> Result<Response<DriftResponse>, Status> {
        let clusters = self
            .selected(&req.get_ref().cluster)?
            .into_iter()
            .map(|info| ClusterDrift {
                drifts: self.hub.connections.last_report(&info.name).map(|r| r.drifts).unwrap_or_default(),
                cluster: info.name,
            })
            .collect();
        Ok(Response::new(DriftResponse { clusters }))
    }

    async fn history(&self, req: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let HistoryRequest { cluster, limit } = req.into_inner();
        self.selected(&cluster)?;
        let limit = if limit == 0 { DEFAULT_HISTORY } else { limit } as usize;
        let store = self.hub.store.clone();
        let entries = tokio::task::spawn_blocking(move || store.history(&cluster, limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(HistoryResponse { entries }))
    }

    async fn envs(&self, _: Request<EnvsRequest>) -> Result<Response<EnvsResponse>, Status> {
        let view = self.hub.view();
        let Some(fleet) = &view.fleet else {
            return Err(no_fleet(&view.errors));
        };
        let clusters = self.clusters();
        let environments = fleet
            .environments
            .iter()
            .map(|env| {
                let members: Vec<&ClusterInfo> = clusters.iter().filter(|c| c.environment == env.name).collect();
                EnvironmentInfo {
                    name: env.name.clone(),
                    branch: env.branch.clone(),
                    commit: view.envs.get(&env.name).map(|e| e.snapshot.commit.to_string()).unwrap_or_default(),
                    clusters: members.len() as u32,
                    applied: members.iter().filter(|c| c.in_sync && !c.assigned_digest.is_empty()).count() as u32,
                    healthy: members
                        .iter()
                        .filter(|c| c.in_sync && !c.assigned_digest.is_empty() && c.health == Health::Healthy as i32)
                        .count() as u32,
                }
            })
            .collect();
        Ok(Response::new(EnvsResponse { environments, errors: view.errors.clone() }))
    }

    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let DiffRequest { from_env, to_env } = req.into_inner();
        let view = self.hub.view();
        let Some(fleet) = view.fleet.clone() else {
            return Err(no_fleet(&view.errors));
        };
        let known = || fleet.environments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ");
        // Environments by name, or by their branch (`convoy diff stage main`).
        let resolve = |wanted: &str| {
            let by_name = fleet.environments.iter().find(|e| e.name == wanted);
            by_name.or_else(|| fleet.environments.iter().find(|e| e.branch == wanted)).cloned()
        };
        let unknown =
            |name: &str| Status::not_found(format!("unknown environment '{name}' (environments: {})", known()));
        let from_name = resolve(&from_env).ok_or_else(|| unknown(&from_env))?.name;
        let from = view.envs.get(&from_name).cloned().ok_or_else(|| unknown(&from_env))?;
        let to = resolve(&to_env).ok_or_else(|| unknown(&to_env))?;
        let hub = self.hub.clone();
        let clusters = tokio::task::spawn_blocking(move || {
            // What `to`'s clusters would get if `to`'s branch had `from`'s head: from's files,
            // rendered with to's environment name (so envs/<to> overlays apply).
            let promoted =
                EnvironmentState { environment: to.clone(), snapshot: from.snapshot.clone(), apps: from.apps.clone() };
            let mut planner = Planner::default();
            let mut stats = PlanStats::default();
            fleet
                .clusters
                .values()
                .filter(|c| c.environment == to.name)
                .map(|cluster| {
                    let current = hub.assignments.get(&cluster.name);
                    if let Some(current) = &current {
                        planner.remember(current);
                    }
                    let plan = planner.plan_cluster(cluster, &promoted, &mut stats);
                    ClusterDiff {
                        errors: plan.errors,
                        ..diff_assignments(&cluster.name, current.as_deref(), &plan.assignment)
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(DiffResponse { clusters }))
    }

    async fn refresh(&self, req: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        auth::require_user(&req, Role::Admin)?;
        let before = self.hub.view().synced_at_ms;
        self.hub.refresh.notify_one();
        // Wait (briefly) for the sync to land so the answer shows the new heads.
        for _ in 0..100 {
            let view = self.hub.view();
            if view.synced_at_ms != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Response::new(RefreshResponse { branches: self.hub.view().branches.clone().into_iter().collect() }))
    }

    async fn create_token(&self, req: Request<CreateTokenRequest>) -> Result<Response<CreateTokenResponse>, Status> {
        let (user, _) = auth::require_user(&req, Role::Admin)?;
        let CreateTokenRequest { cluster, labels, ttl_seconds } = req.into_inner();
        let ttl = (ttl_seconds != 0).then(|| Duration::from_secs(ttl_seconds.max(0) as u64));
        let ttl = if ttl_seconds < 0 { Some(Duration::ZERO) } else { ttl };
        let new = self.hub.registry.create_token(&cluster, labels.into_iter().collect(), ttl).await?;
        tracing::info!(user, cluster, "bootstrap token handed out");
        Ok(Response::new(CreateTokenResponse {
            token: new.token,
            cluster: new.record.cluster,
            expires_unix: new.record.expires_unix,
        }))
    }

    async fn revoke_cluster(
        &self,
        req: Request<RevokeClusterRequest>,
    ) -> Result<Response<RevokeClusterResponse>, Status> {
        let (user, _) = auth::require_user(&req, Role::Admin)?;
        let cluster = req.into_inner().cluster;
        let at_ms = self.hub.registry.revoke(&cluster).await?;
        let stream_closed = self.hub.connections.disconnect(&cluster);
        tracing::warn!(user, cluster, stream_closed, "revocation requested");
        Ok(Response::new(RevokeClusterResponse { cluster, revoked_unix: at_ms / 1000, stream_closed }))
    }

    type WatchStream = EventStream;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        use tokio_stream::StreamExt;
        use tokio_stream::wrappers::BroadcastStream;
        use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
        let events = BroadcastStream::new(self.hub.events.subscribe()).map(|event| match event {
            Ok(event) => Ok(event),
            Err(BroadcastStreamRecvError::Lagged(missed)) => Ok(FleetEvent {
                at_unix_ms: convoy_shared::clock::unix_ms(),
                kind: "lagged".into(),
                detail: format!("{missed} events missed: this watcher read too slowly"),
                ..Default::default()
            }),
        });
        let events = futures::StreamExt::take_until(events, self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(events)))
    }
}

fn no_fleet(errors: &[String]) -> Status {
    let why =
        if errors.is_empty() { "the hub has not read the fleet repository yet".to_string() } else { errors.join("; ") };
    Status::failed_precondition(format!("no fleet model: {why}"))
}

/// Objects added, changed and removed going from `current` to `next`.
pub fn diff_assignments(cluster: &str, current: Option<&Assignment>, next: &Assignment) -> ClusterDiff {
    let index = |a: Option<&Assignment>| -> BTreeMap<(String, String, String, String), (ObjectRef, String)> {
        a.into_iter()
            .flat_map(|a| a.objects())
            .map(|(_, o)| {
                let r = ObjectRef::of(o);
                let (g, k, n, m) = r.key();
                ((g.to_string(), k.to_string(), n.to_string(), m.to_string()), (r.clone(), canonical_json(o)))
            })
            .collect()
    };
    let (old, new) = (index(current), index(Some(next)));
    let mut diff = ClusterDiff { cluster: cluster.to_string(), ..Default::default() };
    for (key, (r, json)) in &new {
        match old.get(key) {
            None => diff.added.push(r.into()),
            Some((_, before)) if before != json => diff.changed.push(r.into()),
            Some(_) => {}
        }
    }
    diff.removed = old.iter().filter(|(k, _)| !new.contains_key(*k)).map(|(_, (r, _))| r.into()).collect();
    diff
}

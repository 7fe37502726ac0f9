//! FleetService: what the `convoy` CLI asks the hub — clusters, status, drift, history,
//! environments, promotion diffs and refresh.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use convoy_render::helm::fetch::ChartFetcher;
use convoy_shared::model::report::{failure_line, failures};
use convoy_shared::model::{Assignment, ObjectRef, canonical_json};
use convoy_shared::proto::drift_response::ClusterDrift;
use convoy_shared::proto::fleet_service_server::FleetService;
use convoy_shared::proto::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api::auth::{self, Call};
use crate::plan::planner::Planner;
use crate::release::rollout::{self, Action, Command, Observed, Phase, Rollout, RolloutError};
use crate::source::repository::SyncError;
use crate::state::access::PolicyState;
use crate::state::hub::Hub;
use crate::state::hub::RolloutActionError;
use convoy_render::access::{Denial, Grants, Target, Verb};

/// Lifetime of a user certificate `convoy users issue` asks for without `--hours`.
const DEFAULT_USER_HOURS: u32 = 12;
/// The longest a user certificate may live: a month.
const MAX_USER_HOURS: u32 = 24 * 31;
/// The most audit records one `Audit` call answers from the store.
const MAX_AUDIT_READ: usize = 100_000;

/// How many history entries `History` returns when the request names no limit.
const DEFAULT_HISTORY: u32 = 50;

/// The fleet API behind its interceptor, as tonic serves it and the dashboard calls it.
pub type FleetServer = tonic::service::interceptor::InterceptedService<
    convoy_shared::proto::fleet_service_server::FleetServiceServer<FleetApi>,
    fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
>;

/// The FleetService implementation.
pub struct FleetApi {
    hub: Arc<Hub>,
    /// The sync loop's chart fetcher, so a promotion preview renders remote charts as a sync
    /// would (`None` where the hub fetches none).
    charts: Option<Arc<ChartFetcher>>,
    /// Ends `Watch` streams when the hub shuts down, so draining does not wait on watchers.
    shutdown: tokio_util::sync::CancellationToken,
}

impl FleetApi {
    pub fn new(
        hub: Arc<Hub>,
        charts: Option<Arc<ChartFetcher>>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        FleetApi { hub, charts, shutdown }
    }

    fn clusters(&self) -> Vec<ClusterInfo> {
        self.hub.cluster_infos()
    }

    /// The name of the environment `wanted` names (by name, or by its branch).
    fn environment(&self, wanted: &str) -> Result<String, Status> {
        let view = self.hub.view();
        let fleet = view.fleet.as_ref().ok_or_else(|| no_fleet(&view.errors))?;
        fleet.resolve_environment(wanted).map(|e| e.name.clone()).map_err(unknown_environment)
    }

    /// The named cluster, or every cluster when `name` is empty.
    fn selected(&self, name: &str) -> Result<Vec<ClusterInfo>, Status> {
        if name.is_empty() {
            return Ok(self.clusters());
        }
        self.hub.cluster_info(name).map(|c| vec![c]).ok_or_else(|| {
            Status::not_found(format!("unknown cluster '{name}': `convoy clusters` lists the clusters the hub knows"))
        })
    }

    /// The caller, with `verb` on `target` checked against the access policy. A denial is
    /// audited and refused saying what would allow it.
    async fn allow<T>(&self, req: &Request<T>, verb: Verb, target: Target<'_>, action: &str) -> Result<Call, Status> {
        let call = auth::user_call(req, self.hub.registry())?;
        let checked = self.hub.access().policy().policy.check(&call.caller, verb, target);
        self.refuse_denied(&call, verb, target, action, checked).await?;
        Ok(call)
    }

    /// Turns a policy check's denial into an audited refusal.
    async fn refuse_denied(
        &self,
        call: &Call,
        verb: Verb,
        target: Target<'_>,
        action: &str,
        checked: Result<(), Denial>,
    ) -> Result<(), Status> {
        let Err(denial) = checked else { return Ok(()) };
        tracing::warn!(user = %call.caller.user, %verb, %target, action, "call denied");
        let record = audit_record(call, verb.as_str(), target.to_string(), format!("denied: {denial}"), action);
        if let Err(e) = self.hub.access().record(record).await {
            tracing::error!(error = %e, "a denial could not be audited");
        }
        Err(Status::permission_denied(denial.message))
    }

    /// Like [`FleetApi::allow`], for a call that changes something: it is audited before it
    /// acts, and refused when the audit record cannot be written.
    async fn allow_change<T>(
        &self,
        req: &Request<T>,
        verb: Verb,
        target: Target<'_>,
        action: &str,
        about: String,
    ) -> Result<Call, Status> {
        let call = self.allow(req, verb, target, action).await?;
        let what = if about.is_empty() { target.to_string() } else { format!("{target}: {about}") };
        let record = audit_record(&call, verb.as_str(), what, "allowed".into(), action);
        self.hub.access().record(record).await.map_err(|e| {
            Status::unavailable(format!(
                "the audit log cannot be written ({e}): {action} is refused so that nothing happens unaudited; try again once the hub's store is back"
            ))
        })?;
        Ok(call)
    }

    /// Audits how an allowed change ended when it failed (best-effort: it was recorded as
    /// allowed before it acted), and passes the result on.
    async fn finished<R>(&self, call: &Call, verb: Verb, action: &str, result: Result<R, Status>) -> Result<R, Status> {
        if let Err(status) = &result {
            let record =
                audit_record(call, verb.as_str(), String::new(), format!("failed: {}", status.message()), action);
            if let Err(e) = self.hub.access().record(record).await {
                tracing::error!(error = %e, "a failed call could not be audited");
            }
        }
        result
    }

    /// The caller and the policy in force, for answers filtered to what they may view.
    fn viewer<T>(&self, req: &Request<T>) -> Result<(Call, Arc<PolicyState>), Status> {
        Ok((auth::user_call(req, self.hub.registry())?, self.hub.access().policy()))
    }

    /// The caller's view of one named cluster, or a denial naming what would allow it.
    async fn view_cluster<T>(&self, req: &Request<T>, name: &str) -> Result<Call, Status> {
        let env = self.hub.cluster_info(name).map(|c| c.environment).unwrap_or_default();
        let target = if env.is_empty() { Target::FLEET } else { Target::environment(&env) };
        self.allow(req, Verb::View, target, "view").await
    }
}

/// Whether the holder of `grants` may see cluster `info` (one in no environment: only whoever sees the
/// whole fleet).
fn sees(grants: &Grants, info: &ClusterInfo) -> bool {
    if info.environment.is_empty() {
        grants.allows(Verb::View, Target::FLEET)
    } else {
        grants.may_view(&info.environment, None)
    }
}

/// One audit record of `call`.
fn audit_record(call: &Call, verb: &str, target: String, result: String, action: &str) -> AuditRecord {
    AuditRecord {
        at_unix_ms: convoy_shared::clock::unix_ms(),
        user: call.caller.user.clone(),
        groups: call.caller.groups.clone(),
        verb: verb.to_string(),
        target,
        result,
        source: call.addr.to_string(),
        request_id: call.request_id.clone(),
        action: action.to_string(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<FleetEvent, Status>> + Send>>;

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn list_clusters(&self, req: Request<ListClustersRequest>) -> Result<Response<ListClustersResponse>, Status> {
        let (call, policy) = self.viewer(&req)?;
        let grants = policy.policy.grants(&call.caller);
        let clusters = self.clusters().into_iter().filter(|c| sees(&grants, c)).collect();
        Ok(Response::new(ListClustersResponse { clusters }))
    }

    async fn get_cluster(&self, req: Request<GetClusterRequest>) -> Result<Response<ClusterInfo>, Status> {
        let name = &req.get_ref().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("GetCluster needs a cluster name; `convoy clusters` lists them"));
        }
        self.view_cluster(&req, name).await?;
        let found = self.selected(name)?.pop();
        found.map(Response::new).ok_or_else(|| Status::internal(format!("cluster '{name}' vanished while listing")))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        if !req.get_ref().cluster.is_empty() {
            self.view_cluster(&req, &req.get_ref().cluster).await?;
        }
        let (call, policy) = self.viewer(&req)?;
        let grants = policy.policy.grants(&call.caller);
        let view = self.hub.view();
        let one = !req.get_ref().cluster.is_empty();
        let clusters = self
            .selected(&req.get_ref().cluster)?
            .into_iter()
            .filter(|info| sees(&grants, info))
            .map(|info| {
                let report = self.hub.connections().last_report(&info.name).unwrap_or_default();
                let health: HashMap<&str, &AppStatus> = report.apps.iter().map(|a| (a.name.as_str(), a)).collect();
                let assignment = self.hub.assignment(&info.name);
                let apps = assignment
                    .iter()
                    .flat_map(|a| a.apps.iter())
                    .filter(|app| {
                        info.environment.is_empty() || grants.may_view(&info.environment, Some(&app.name))
                    })
                    .map(|app| {
                        let reported = health.get(app.name.as_str());
                        let (failed, failed_total) = reported.map(|r| failures(r)).unwrap_or_default();
                        AppHealth {
                            name: app.name.clone(),
                            health: reported.map_or(Health::Unknown as i32, |r| r.health),
                            message: reported.map(|r| r.message.clone()).unwrap_or_default(),
                            render_error: app.render_error.clone().unwrap_or_default(),
                            failed,
                            failed_total,
                            objects: match reported {
                                Some(r) if one => r
                                    .objects
                                    .iter()
                                    .map(|o| ObjectHealth {
                                        r#ref: o.r#ref.clone(),
                                        health: o.health,
                                        message: o.message.clone(),
                                        rule: o.rule.clone(),
                                    })
                                    .collect(),
                                _ => Vec::new(),
                            },
                        }
                    })
                    .collect::<Vec<_>>();
                let mut errors: Vec<String> = view.errors.iter().map(ToString::to_string).collect();
                for app in &apps {
                    errors.extend(app.failed.iter().map(|f| failure_line(&app.name, f)));
                    let unnamed = app.failed_total as usize - app.failed.len();
                    if unnamed > 0 {
                        errors.push(format!("{}: {unnamed} more objects failed to apply", app.name));
                    }
                }
                match (view.cluster_errors.get(&info.name), &view.fleet) {
                    (Some(own), _) => errors.extend(own.iter().cloned()),
                    // An agent whose certificate names a cluster Git does not declare.
                    (None, Some(fleet)) if !fleet.clusters.contains_key(&info.name) => errors.push(format!(
                        "cluster '{}' is not declared in Git (orphaned): it keeps what it was last assigned and counts in no environment; add clusters/{}.yaml on the fleet branch '{}' to bring it back, or `convoy clusters retire {}` to forget it",
                        info.name, info.name, fleet.fleet_branch, info.name
                    )),
                    _ => {}
                }
                if let Some(problem) = self.hub.connections().problem_of(&info.name) {
                    errors.push(format!("agent: {problem}"));
                }
                ClusterStatus { cluster: Some(info), apps, errors }
            })
            .collect();
        Ok(Response::new(StatusResponse { clusters }))
    }

    async fn drift(&self, req: Request<DriftRequest>) -> Result<Response<DriftResponse>, Status> {
        if !req.get_ref().cluster.is_empty() {
            self.view_cluster(&req, &req.get_ref().cluster).await?;
        }
        let (call, policy) = self.viewer(&req)?;
        let grants = policy.policy.grants(&call.caller);
        let clusters = self
            .selected(&req.get_ref().cluster)?
            .into_iter()
            .filter(|info| sees(&grants, info))
            .map(|info| {
                let mut drifts = self.hub.connections().last_report(&info.name).map(|r| r.drifts).unwrap_or_default();
                if !info.environment.is_empty() {
                    drifts.retain(|d| grants.may_view(&info.environment, Some(&d.app)));
                }
                ClusterDrift { drifts, cluster: info.name }
            })
            .collect();
        Ok(Response::new(DriftResponse { clusters }))
    }

    async fn history(&self, req: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        self.view_cluster(&req, &req.get_ref().cluster).await?;
        let HistoryRequest { cluster, limit } = req.into_inner();
        self.selected(&cluster)?;
        let limit = if limit == 0 { DEFAULT_HISTORY } else { limit } as usize;
        // What status already shows (an applied report) is in history too: write what is
        // queued first.
        self.hub.flush_store().await;
        let store = self.hub.store().clone();
        let entries = tokio::task::spawn_blocking(move || store.history(&cluster, limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(HistoryResponse { entries }))
    }

    async fn envs(&self, req: Request<EnvsRequest>) -> Result<Response<EnvsResponse>, Status> {
        let (call, policy) = self.viewer(&req)?;
        let grants = policy.policy.grants(&call.caller);
        let view = self.hub.view();
        let Some(fleet) = &view.fleet else {
            return Err(no_fleet(&view.errors));
        };
        let clusters = self.clusters();
        let environments = fleet
            .environments
            .iter()
            .filter(|env| grants.may_view(&env.name, None))
            .map(|env| {
                // A cluster Git no longer declares counts in no environment, and holds none back.
                let members: Vec<&ClusterInfo> =
                    clusters.iter().filter(|c| c.environment == env.name && !c.orphaned).collect();
                let (verified_commit, unverified_reason) =
                    match view.verified(&env.name, &members, convoy_shared::clock::unix_ms()) {
                        Ok(commit) => (commit, String::new()),
                        Err(reasons) => (String::new(), reasons.join("\n")),
                    };
                let lineage = view.lineage.get(&env.name).cloned().unwrap_or_default();
                EnvironmentInfo {
                    verified_commit,
                    unverified_reason,
                    behind: lineage.behind as u32,
                    env_only: lineage.env_only.into_iter().map(|(id, subject)| CommitInfo { id, subject }).collect(),
                    pinned: view.pins.get(&env.name).cloned().unwrap_or_default(),
                    held_by_window: view.holds.get(&env.name).map(|h| h.window.clone()).unwrap_or_default(),
                    held_until_unix_ms: view.holds.get(&env.name).map_or(0, |h| h.until_ms),
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
        let mut errors: Vec<String> = view.errors.iter().map(ToString::to_string).collect();
        if let Some(error) = &policy.error {
            errors.push(format!("{error} (the access policy of {} stays in force)", rollout::short(&policy.commit)));
        }
        Ok(Response::new(EnvsResponse { environments, errors }))
    }

    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let DiffRequest { from_env, to_env } = req.get_ref().clone();
        let view = self.hub.view();
        let Some(fleet) = view.fleet.clone() else {
            return Err(no_fleet(&view.errors));
        };
        let from_env = fleet.resolve_environment(&from_env).map_err(unknown_environment)?.clone();
        let to = fleet.resolve_environment(&to_env).map_err(unknown_environment)?.clone();
        // A diff shows every app's objects: it needs a view of every app of both.
        let call = auth::user_call(&req, self.hub.registry())?;
        let policy = self.hub.access().policy();
        for env in [&from_env.name, &to.name] {
            let checked = policy.policy.check_all_apps(&call.caller, Verb::View, env);
            self.refuse_denied(&call, Verb::View, Target::environment(env), "Diff", checked).await?;
        }
        let from = view.envs.get(&from_env.name).cloned().ok_or_else(|| {
            Status::failed_precondition(format!(
                "the hub has not read branch '{}' of environment '{}' yet",
                from_env.branch, from_env.name
            ))
        })?;
        let compared = DiffResponse {
            clusters: Vec::new(),
            from_env: from_env.name.clone(),
            from_branch: from_env.branch.clone(),
            from_commit: from.snapshot.commit.to_string(),
            to_env: to.name.clone(),
            to_branch: to.branch.clone(),
            to_commit: view.envs.get(&to.name).map(|e| e.snapshot.commit.to_string()).unwrap_or_default(),
        };
        let (hub, charts) = (self.hub.clone(), self.charts.clone());
        let clusters = tokio::task::spawn_blocking(move || {
            Planner::preview_promotion(&fleet, &from, &to, charts.as_ref(), |cluster| hub.assignment(cluster))
                .into_iter()
                .map(|(current, plan)| ClusterDiff {
                    errors: plan.errors.iter().map(ToString::to_string).collect(),
                    current_revision: current.as_ref().map(|c| c.revision.clone()).unwrap_or_default(),
                    ..diff_assignments(&plan.assignment.cluster, current.as_deref(), &plan.assignment)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(DiffResponse { clusters, ..compared }))
    }

    async fn refresh(&self, req: Request<RefreshRequest>) -> Result<Response<RefreshResponse>, Status> {
        self.allow_change(&req, Verb::Refresh, Target::FLEET, "Refresh", String::new()).await?;
        let before = self.hub.view().synced_at_ms;
        self.hub.request_refresh();
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
        let about = format!("a bootstrap token for cluster '{}'", req.get_ref().cluster);
        let call = self.allow_change(&req, Verb::Tokens, Target::FLEET, "CreateToken", about).await?;
        let user = call.caller.user.clone();
        let CreateTokenRequest { cluster, labels, ttl_seconds } = req.into_inner();
        let ttl = (ttl_seconds != 0).then(|| Duration::from_secs(ttl_seconds.max(0) as u64));
        let ttl = if ttl_seconds < 0 { Some(Duration::ZERO) } else { ttl };
        let created = self.hub.registry().create_token(&cluster, labels.into_iter().collect(), ttl).await;
        let new = self.finished(&call, Verb::Tokens, "CreateToken", created.map_err(Status::from)).await?;
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
        let about = format!("revoke cluster '{}'", req.get_ref().cluster);
        let call = self.allow_change(&req, Verb::Tokens, Target::FLEET, "RevokeCluster", about).await?;
        let user = call.caller.user.clone();
        let cluster = req.into_inner().cluster;
        let revoked = self.hub.registry().revoke(&cluster).await.map_err(Status::from);
        let at_ms = self.finished(&call, Verb::Tokens, "RevokeCluster", revoked).await?;
        let stream_closed = self.hub.connections().disconnect(&cluster);
        tracing::warn!(user, cluster, stream_closed, "revocation requested");
        Ok(Response::new(RevokeClusterResponse { cluster, revoked_unix: at_ms / 1000, stream_closed }))
    }

    async fn notifications(
        &self,
        req: Request<NotificationsRequest>,
    ) -> Result<Response<NotificationsResponse>, Status> {
        self.allow(&req, Verb::View, Target::FLEET, "Notifications").await?;
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n.min(1000) as usize,
        };
        Ok(Response::new(crate::api::notifications::list(&self.hub, limit).await?))
    }

    async fn test_notification(
        &self,
        req: Request<TestNotificationRequest>,
    ) -> Result<Response<TestNotificationResponse>, Status> {
        let about = format!("test receiver '{}'", req.get_ref().receiver);
        let call = self.allow_change(&req, Verb::Admin, Target::FLEET, "TestNotification", about).await?;
        let receiver = req.into_inner().receiver;
        let tested = crate::api::notifications::test(&self.hub, &receiver, &call.caller.user).await;
        self.finished(&call, Verb::Admin, "TestNotification", tested).await.map(Response::new)
    }

    async fn retire_cluster(
        &self,
        req: Request<RetireClusterRequest>,
    ) -> Result<Response<RetireClusterResponse>, Status> {
        let about = format!("retire cluster '{}'", req.get_ref().cluster);
        let call = self.allow_change(&req, Verb::Tokens, Target::FLEET, "RetireCluster", about).await?;
        let user = call.caller.user.clone();
        let cluster = req.into_inner().cluster;
        let info = self.hub.cluster_info(&cluster).ok_or_else(|| {
            Status::not_found(format!(
                "unknown cluster '{cluster}': `convoy clusters` lists the clusters the hub knows"
            ))
        })?;
        if !info.orphaned {
            return Err(Status::failed_precondition(format!(
                "cluster '{cluster}' is still declared in Git: remove clusters/{cluster}.yaml on the fleet branch first (its apps stay in the cluster either way)"
            )));
        }
        self.hub.registry().revoke(&cluster).await?;
        let stream_closed = self.hub.forget(&cluster);
        tracing::warn!(user, cluster, stream_closed, "cluster retired");
        Ok(Response::new(RetireClusterResponse { cluster, stream_closed }))
    }

    async fn rollout_status(
        &self,
        req: Request<RolloutStatusRequest>,
    ) -> Result<Response<RolloutStatusResponse>, Status> {
        let (call, policy) = self.viewer(&req)?;
        let grants = policy.policy.grants(&call.caller);
        let mut wanted = req.into_inner().environment;
        if !wanted.is_empty() {
            wanted = self.environment(&wanted)?;
        }
        let view = self.hub.view();
        if !wanted.is_empty() && !view.rollouts.values().any(|r| r.environment == wanted) {
            return Err(Status::not_found(RolloutError::None(wanted).to_string()));
        }
        let rollouts = view
            .rollouts
            .values()
            .filter(|r| wanted.is_empty() || r.environment == wanted)
            .filter(|r| grants.may_view(&r.environment, r.app.as_deref()))
            .map(|r| self.rollout_info(r))
            .collect();
        Ok(Response::new(RolloutStatusResponse { rollouts }))
    }

    async fn rollout_action(
        &self,
        req: Request<RolloutActionRequest>,
    ) -> Result<Response<RolloutActionResponse>, Status> {
        let RolloutActionRequest { environment, action, app, reason } = req.get_ref().clone();
        let environment = self.environment(&environment)?;
        let app = Some(app).filter(|a| !a.is_empty());
        let target = Target { environment: Some(&environment), app: app.as_deref() };
        let about = match reason.is_empty() {
            true => action.clone(),
            false => format!("{action}: {reason}"),
        };
        let call = self.allow_change(&req, Verb::Rollout, target, "RolloutAction", about).await?;
        let user = call.caller.user.clone();
        let command = match action.as_str() {
            "pause" => Command::Rollout { action: Action::Pause, app: app.clone() },
            "resume" => Command::Rollout { action: Action::Resume, app: app.clone() },
            "approve" => Command::Rollout { action: Action::Approve, app: app.clone() },
            "abort" => Command::Rollout { action: Action::Abort, app: app.clone() },
            "override" if reason.trim().is_empty() => {
                return Err(Status::invalid_argument(
                    "an override needs a reason (--reason TEXT): it is kept in each cluster's history",
                ));
            }
            "override" => Command::Override { by: user.clone(), reason: reason.trim().to_string() },
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown rollout action '{other}': use pause, resume, approve, abort or override"
                )));
            }
        };
        let track = rollout::track(&environment, app.as_deref());
        let done = self.hub.command(&environment, command).await.map_err(command_status);
        let message = self.finished(&call, Verb::Rollout, "RolloutAction", done).await?;
        tracing::info!(user, track, action, message, "rollout action");
        let rollout = self.hub.view().rollouts.get(&track).map(|r| self.rollout_info(r));
        Ok(Response::new(RolloutActionResponse { message, rollout }))
    }

    async fn rollback(&self, req: Request<RollbackRequest>) -> Result<Response<RollbackResponse>, Status> {
        let RollbackRequest { environment, to_revision, release } = req.get_ref().clone();
        let environment = self.environment(&environment)?;
        let about = if release { "release the pin".to_string() } else { format!("pin at '{to_revision}'") };
        let call =
            self.allow_change(&req, Verb::Rollback, Target::environment(&environment), "Rollback", about).await?;
        let user = call.caller.user.clone();
        if release {
            let done = self.hub.command(&environment, Command::Release).await.map_err(command_status);
            let message = self.finished(&call, Verb::Rollback, "Rollback", done).await?;
            tracing::info!(user, environment, "rollback released");
            return Ok(Response::new(RollbackResponse { message, pinned: String::new() }));
        }
        let applied = self.applied_revisions(&environment).await?;
        let target = if to_revision.is_empty() {
            applied.get(1).cloned().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "environment '{environment}' has applied only one revision: there is nothing earlier to roll back to"
                ))
            })?
        } else {
            let matching: Vec<&String> = applied.iter().filter(|r| r.starts_with(&to_revision)).collect();
            match matching[..] {
                [one] => one.clone(),
                [] => {
                    let known: Vec<&str> = applied.iter().map(|r| rollout::short(r)).collect();
                    return Err(Status::not_found(format!(
                        "environment '{environment}' never applied {to_revision}; it applied {}",
                        known.join(", ")
                    )));
                }
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "{to_revision} matches several revisions; give more of it"
                    )));
                }
            }
        };
        let done =
            self.hub.command(&environment, Command::Pin { commit: target.clone() }).await.map_err(command_status);
        let message = self.finished(&call, Verb::Rollback, "Rollback", done).await?;
        tracing::warn!(user, environment, revision = %target, "rollback: environment pinned");
        Ok(Response::new(RollbackResponse { message, pinned: target }))
    }

    async fn app(&self, req: Request<AppRequest>) -> Result<Response<AppResponse>, Status> {
        let (call, policy) = self.viewer(&req)?;
        let grants = policy.policy.grants(&call.caller);
        let AppRequest { name, cluster } = req.into_inner();
        if name.is_empty() {
            return Err(Status::invalid_argument("App needs an app name"));
        }
        let mut clusters = Vec::new();
        for info in self.clusters() {
            let Some(assignment) = self.hub.assignment(&info.name) else { continue };
            let Some(at) = assignment.apps.iter().position(|a| a.name == name) else { continue };
            if !grants.may_view(&assignment.environment, Some(&name)) {
                continue;
            }
            let report = self.hub.connections().last_report(&info.name);
            let reported = report.as_ref().and_then(|r| r.apps.iter().find(|a| a.name == name));
            clusters.push(AppPlacement {
                environment: assignment.environment.clone(),
                revision: assignment.revision.clone(),
                digest: assignment.app_digests.get(at).cloned().unwrap_or_default(),
                health: reported.map_or(Health::Unknown as i32, |r| r.health),
                message: reported.map(|r| r.message.clone()).unwrap_or_default(),
                render_error: assignment.apps[at].render_error.clone().unwrap_or_default(),
                applied: info.applied_digest == assignment.digest,
                cluster: info.name,
            });
        }
        if clusters.is_empty() {
            return Err(Status::not_found(format!(
                "no cluster is assigned app '{name}': `convoy status` lists each cluster's apps"
            )));
        }
        let objects = if cluster.is_empty() {
            Vec::new()
        } else {
            self.selected(&cluster)?;
            if !clusters.iter().any(|c| c.cluster == cluster) {
                return Err(Status::not_found(format!(
                    "cluster '{cluster}' is not assigned app '{name}' (that you may view)"
                )));
            }
            let assignment = self.hub.assignment(&cluster);
            let app = assignment.as_ref().and_then(|a| a.apps.iter().find(|a| a.name == name));
            let app =
                app.ok_or_else(|| Status::not_found(format!("cluster '{cluster}' is not assigned app '{name}'")))?;
            app.objects.iter().map(rendered).collect()
        };
        Ok(Response::new(AppResponse { name, clusters, cluster, objects }))
    }

    type WatchStream = EventStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        use tokio_stream::StreamExt;
        use tokio_stream::wrappers::BroadcastStream;
        use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
        let (call, _) = self.viewer(&req)?;
        let hub = self.hub.clone();
        let caller = call.caller.clone();
        // Each event is filtered by the policy in force when it happens.
        let events = BroadcastStream::new(self.hub.subscribe_events()).filter_map(move |event| match event {
            Ok(event) => {
                let policy = hub.access().policy();
                let grants = policy.policy.grants(&caller);
                // Whoever may view the whole fleet sees every event: no cluster to look up.
                let visible = grants.allows(Verb::View, Target::FLEET)
                    || match hub.cluster_info(&event.cluster) {
                        Some(info) => sees(&grants, &info),
                        // Fleet-wide events (a sync, a rollout): for whoever may view anything.
                        None => hub
                            .view()
                            .fleet
                            .as_ref()
                            .is_some_and(|f| f.environments.iter().any(|e| grants.may_view(&e.name, None))),
                    };
                visible.then_some(Ok(event))
            }
            Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Ok(FleetEvent {
                at_unix_ms: convoy_shared::clock::unix_ms(),
                kind: "lagged".into(),
                detail: format!("{missed} events missed: this watcher read too slowly"),
                ..Default::default()
            })),
        });
        let events = futures::StreamExt::take_until(events, self.shutdown.clone().cancelled_owned());
        let events = futures::StreamExt::take_until(events, self.hub.access().until_revoked(call.caller.user));
        Ok(Response::new(Box::pin(events)))
    }

    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let (call, policy) = self.viewer(&req)?;
        Ok(Response::new(WhoAmIResponse {
            roles: policy.policy.roles_of(&call.caller).into_iter().collect(),
            may: policy.policy.summary(&call.caller),
            policy_commit: policy.commit.clone(),
            policy_error: policy.error.clone().unwrap_or_default(),
            certificate_role: call.role.as_str().to_string(),
            certificate_not_after_unix: call.not_after,
            user: call.caller.user,
            groups: call.caller.groups,
        }))
    }

    async fn issue_user(&self, req: Request<IssueUserRequest>) -> Result<Response<IssueUserResponse>, Status> {
        let IssueUserRequest { name, groups, hours, csr_pem } = req.get_ref().clone();
        let hours = if hours == 0 { DEFAULT_USER_HOURS } else { hours.min(MAX_USER_HOURS) };
        let about = format!("a certificate for user '{name}' (groups: {}) for {hours} h", groups.join(", "));
        let call = self.allow_change(&req, Verb::Users, Target::FLEET, "IssueUser", about).await?;
        let lifetime = Duration::from_secs(u64::from(hours) * 3600);
        let signed = self.hub.registry().issue_user(&name, &groups, lifetime, &csr_pem).map_err(Status::from);
        let signed = self.finished(&call, Verb::Users, "IssueUser", signed).await?;
        Ok(Response::new(IssueUserResponse {
            user: name,
            cert_pem: signed.cert_pem,
            ca_pem: signed.ca_pem,
            not_after_unix: signed.not_after_unix,
        }))
    }

    async fn revoke_user(&self, req: Request<RevokeUserRequest>) -> Result<Response<RevokeUserResponse>, Status> {
        let name = req.get_ref().name.clone();
        let call =
            self.allow_change(&req, Verb::Users, Target::FLEET, "RevokeUser", format!("revoke user '{name}'")).await?;
        let revoked = self.hub.registry().revoke_user(&name).await.map_err(Status::from);
        let at = self.finished(&call, Verb::Users, "RevokeUser", revoked).await?;
        let streams_closed = self.hub.access().user_revoked(&name) as u32;
        Ok(Response::new(RevokeUserResponse { name, revoked_unix_ms: at, streams_closed }))
    }

    type AuditStream = Pin<Box<dyn Stream<Item = Result<AuditRecord, Status>> + Send>>;

    async fn audit(&self, req: Request<AuditRequest>) -> Result<Response<Self::AuditStream>, Status> {
        use tokio_stream::StreamExt;
        let call = self.allow(&req, Verb::Audit, Target::FLEET, "Audit").await?;
        let AuditRequest { since_unix_ms, user, follow } = req.into_inner();
        // Subscribed before reading, so nothing written in between is missed (a record may come twice).
        let live = self.hub.access().follow();
        let stored = self
            .hub
            .access()
            .read(since_unix_ms, user.clone(), MAX_AUDIT_READ)
            .await
            .map_err(|e| Status::unavailable(format!("the audit log cannot be read: {e}")))?;
        let last = stored.last().map(|r| (r.at_unix_ms, r.request_id.clone(), r.verb.clone()));
        let stored = tokio_stream::iter(stored.into_iter().map(Ok));
        if !follow {
            return Ok(Response::new(Box::pin(stored)));
        }
        let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |r| {
            let r = r.ok()?;
            let seen = last.as_ref().is_some_and(|(at, id, verb)| {
                r.at_unix_ms < *at || (r.at_unix_ms == *at && &r.request_id == id && &r.verb == verb)
            });
            (!seen && (user.is_empty() || r.user == user)).then_some(Ok(r))
        });
        let live = futures::StreamExt::take_until(live, self.shutdown.clone().cancelled_owned());
        let live = futures::StreamExt::take_until(live, self.hub.access().until_revoked(call.caller.user));
        Ok(Response::new(Box::pin(stored.chain(live))))
    }
}

impl FleetApi {
    /// The revisions the clusters of `environment` applied, newest first, each once.
    async fn applied_revisions(&self, environment: &str) -> Result<Vec<String>, Status> {
        let clusters: Vec<String> =
            self.clusters().into_iter().filter(|c| c.environment == environment).map(|c| c.name).collect();
        if clusters.is_empty() {
            return Err(Status::not_found(format!("environment '{environment}' has no clusters the hub knows")));
        }
        let store = self.hub.store().clone();
        let entries = tokio::task::spawn_blocking(move || -> Result<Vec<HistoryEntry>, crate::store::StoreError> {
            let mut all = Vec::new();
            for cluster in &clusters {
                all.extend(store.history(cluster, ROLLBACK_HISTORY)?);
            }
            Ok(all)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut applied: Vec<&HistoryEntry> = entries.iter().filter(|e| e.event == "applied").collect();
        applied.sort_by_key(|e| std::cmp::Reverse(e.at_unix_ms));
        let mut revisions: Vec<String> = Vec::new();
        for entry in applied {
            if !revisions.contains(&entry.revision) {
                revisions.push(entry.revision.clone());
            }
        }
        Ok(revisions)
    }

    /// A rollout as the CLI shows it, with each wave's clusters counted from their reports.
    fn rollout_info(&self, rollout: &Rollout) -> RolloutInfo {
        // A released cluster's assignment carries the new revision's parts for this rollout
        // (the environment's rollout: the assignment is built at that revision).
        let observe = |cluster: &str| {
            let assigned =
                self.hub.assignment(cluster).filter(|a| rollout.app.is_some() || a.revision == rollout.revision);
            let info = self.hub.connections().get(cluster).unwrap_or_default();
            let runs_new = assigned.is_some_and(|a| a.digest == info.applied_digest);
            Observed::of(true, runs_new, info.health)
        };
        let count = |clusters: &[String], f: &dyn Fn(&str) -> bool| clusters.iter().filter(|c| f(c)).count() as u32;
        let waves = rollout
            .waves
            .iter()
            .enumerate()
            .map(|(i, wave)| {
                let released = |c: &str| rollout.phase != Phase::Aborted && rollout.takes_new(c);
                WaveInfo {
                    name: wave.name.clone(),
                    clusters: wave.clusters.len() as u32,
                    released: count(&wave.clusters, &released),
                    done: count(&wave.clusters, &|c| released(c) && observe(c).done),
                    failed: count(&wave.clusters, &|c| released(c) && observe(c).failed),
                    open: i < rollout.opened,
                    max_unavailable: wave.max_unavailable as u32,
                }
            })
            .collect();
        let from: std::collections::BTreeSet<&str> = rollout.from.values().map(|c| rollout::short(c)).collect();
        let hold = self.hub.view().holds.get(&rollout.environment).cloned();
        RolloutInfo {
            held_by_window: hold.as_ref().map(|h| h.window.clone()).unwrap_or_default(),
            held_until_unix_ms: hold.map_or(0, |h| h.until_ms),
            environment: rollout.environment.clone(),
            revision: rollout.revision.clone(),
            from_revisions: from.into_iter().map(str::to_string).collect(),
            phase: rollout.phase.as_str().to_string(),
            reason: rollout.reason.clone(),
            waves,
            soak_left_ms: rollout.soak_left_ms(convoy_shared::clock::unix_ms()),
            started_unix_ms: rollout.started_ms,
            app: rollout.app.clone().unwrap_or_default(),
        }
    }
}

/// How many history entries per cluster a rollback looks through for earlier revisions.
const ROLLBACK_HISTORY: usize = 200;

fn command_status(e: RolloutActionError) -> Status {
    match e {
        RolloutActionError::NoSource => Status::failed_precondition(e.to_string()),
        RolloutActionError::Refused(RolloutError::None(_) | RolloutError::UnknownEnvironment(_)) => {
            Status::not_found(e.to_string())
        }
        RolloutActionError::Refused(_) => Status::failed_precondition(e.to_string()),
    }
}

/// The one answer to a name that is no environment (every call that takes one gives it).
fn unknown_environment(e: convoy_render::fleet::UnknownEnvironment) -> Status {
    Status::not_found(e.to_string())
}

fn no_fleet(errors: &[SyncError]) -> Status {
    let why = if errors.is_empty() {
        "the hub has not read the fleet repository yet".to_string()
    } else {
        errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    };
    Status::failed_precondition(format!("no fleet model: {why}"))
}

/// Objects added, changed and removed going from `current` to `next`.
/// An object as the dashboard shows it: YAML, with the values of a Secret's `data` and
/// `stringData` redacted (whoever may view the fleet need not read its credentials).
fn rendered(object: &serde_json::Value) -> RenderedObject {
    let r = ObjectRef::of(object);
    let mut shown = object.clone();
    if r.group.is_empty() && r.kind == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(values) = shown.get_mut(field).and_then(serde_json::Value::as_object_mut) {
                values.values_mut().for_each(|v| *v = "<redacted>".into());
            }
        }
    }
    let yaml = serde_saphyr::to_string(&shown).unwrap_or_else(|e| format!("# cannot show as YAML: {e}\n"));
    RenderedObject { r#ref: Some((&r).into()), yaml }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::registry::RegistryConfig;
    use crate::store::memory::MemoryStore;
    use crate::store::{Redeemed, Registration, Store, StoreError, StoreEvent, TokenRecord};
    use convoy_shared::identity::{Identity, Role};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A store whose audit log can go away (a database outage) while the rest works.
    #[derive(Debug, Default)]
    struct AuditOutage {
        inner: MemoryStore,
        down: AtomicBool,
    }

    impl Store for AuditOutage {
        fn write(&self, events: &[StoreEvent]) -> crate::store::Result<()> {
            self.inner.write(events)
        }
        fn last_reports(&self) -> crate::store::Result<Vec<(String, Report)>> {
            self.inner.last_reports()
        }
        fn history(&self, cluster: &str, limit: usize) -> crate::store::Result<Vec<HistoryEntry>> {
            self.inner.history(cluster, limit)
        }
        fn put_token(&self, hash: &str, token: &TokenRecord) -> crate::store::Result<()> {
            self.inner.put_token(hash, token)
        }
        fn redeem_token(&self, hash: &str, now: i64) -> crate::store::Result<Redeemed> {
            self.inner.redeem_token(hash, now)
        }
        fn put_registration(&self, registration: &Registration) -> crate::store::Result<()> {
            self.inner.put_registration(registration)
        }
        fn registrations(&self) -> crate::store::Result<Vec<Registration>> {
            self.inner.registrations()
        }
        fn put_revocation(&self, cluster: &str, at: i64) -> crate::store::Result<()> {
            self.inner.put_revocation(cluster, at)
        }
        fn revocations(&self) -> crate::store::Result<Vec<(String, i64)>> {
            self.inner.revocations()
        }
        fn rollouts(&self) -> crate::store::Result<Vec<(String, String)>> {
            self.inner.rollouts()
        }
        fn pins(&self) -> crate::store::Result<Vec<(String, String)>> {
            self.inner.pins()
        }
        fn access_policy(&self) -> crate::store::Result<Option<(String, String)>> {
            self.inner.access_policy()
        }
        fn append_audit(&self, record: &AuditRecord) -> crate::store::Result<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Db("connection refused".into()));
            }
            self.inner.append_audit(record)
        }
        fn audit(&self, since_ms: i64, user: &str, limit: usize) -> crate::store::Result<Vec<AuditRecord>> {
            self.inner.audit(since_ms, user, limit)
        }
        fn outbox_push(&self, entries: &[crate::store::OutboxEntry]) -> crate::store::Result<()> {
            self.inner.outbox_push(entries)
        }
        fn outbox_pending(
            &self,
            receiver: Option<&str>,
            limit: usize,
        ) -> crate::store::Result<Vec<crate::store::OutboxEntry>> {
            self.inner.outbox_pending(receiver, limit)
        }
        fn outbox_settle(&self, entry: &crate::store::OutboxEntry) -> crate::store::Result<()> {
            self.inner.outbox_settle(entry)
        }
        fn outbox_recent(&self, limit: usize) -> crate::store::Result<Vec<crate::store::OutboxEntry>> {
            self.inner.outbox_recent(limit)
        }
    }

    fn as_admin<T>(message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.extensions_mut().insert(auth::PeerInfo {
            addr: "127.0.0.1:5000".parse().unwrap(),
            identity: Some(Identity::User { name: "root".into(), role: Role::Admin }),
            validity: None,
            groups: Vec::new(),
        });
        req
    }

    #[tokio::test]
    async fn a_change_that_cannot_be_audited_does_not_happen() {
        let store = Arc::new(AuditOutage::default());
        let (hub, _publisher) = Hub::new(store.clone(), RegistryConfig::default()).unwrap();
        let api = FleetApi::new(hub.clone(), None, Default::default());

        store.down.store(true, Ordering::SeqCst);
        let refused = api.revoke_user(as_admin(RevokeUserRequest { name: "wendy".into() })).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.message().contains("nothing happens unaudited"), "{}", refused.message());
        assert!(hub.registry().refuses_user("wendy", 0).is_none(), "wendy was not revoked");
        let refused = api.revoke_cluster(as_admin(RevokeClusterRequest { cluster: "eu-1".into() })).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(hub.registry().revoked_at("eu-1").is_none(), "eu-1 was not revoked");
        assert!(store.inner.audit(0, "", 10).unwrap().is_empty());

        store.down.store(false, Ordering::SeqCst);
        api.revoke_user(as_admin(RevokeUserRequest { name: "wendy".into() })).await.unwrap();
        assert!(hub.registry().refuses_user("wendy", 0).is_some());
        let records = store.inner.audit(0, "", 10).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].user.as_str(), records[0].verb.as_str(), records[0].action.as_str()),
            ("root", "users", "RevokeUser")
        );
        assert_eq!(records[0].source, "127.0.0.1:5000");
    }
}

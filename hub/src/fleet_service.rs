//! FleetService: what the `convoy` CLI asks the hub.

use std::pin::Pin;
use std::sync::Arc;

use convoy_shared::identity::Role;
use convoy_shared::proto::drift_response::ClusterDrift;
use convoy_shared::proto::fleet_service_server::FleetService;
use convoy_shared::proto::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::state::Hub;

/// The FleetService implementation.
pub struct FleetApi {
    hub: Arc<Hub>,
}

impl FleetApi {
    pub fn new(hub: Arc<Hub>) -> Self {
        FleetApi { hub }
    }

    fn cluster(&self, name: &str) -> Result<ClusterInfo, Status> {
        self.hub.connections.get(name).ok_or_else(|| {
            Status::not_found(format!(
                "unknown cluster '{name}': `convoy clusters` lists the clusters the hub knows"
            ))
        })
    }

    /// The named cluster, or every cluster when `name` is empty.
    fn selected(&self, name: &str) -> Result<Vec<ClusterInfo>, Status> {
        if name.is_empty() {
            Ok(self.hub.connections.list())
        } else {
            Ok(vec![self.cluster(name)?])
        }
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} needs the Git source, which this hub does not run yet"
    ))
}

type EventStream = Pin<Box<dyn Stream<Item = Result<FleetEvent, Status>> + Send>>;

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn list_clusters(
        &self,
        _: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        Ok(Response::new(ListClustersResponse {
            clusters: self.hub.connections.list(),
        }))
    }

    async fn get_cluster(
        &self,
        req: Request<GetClusterRequest>,
    ) -> Result<Response<ClusterInfo>, Status> {
        Ok(Response::new(self.cluster(&req.get_ref().name)?))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let clusters = self
            .selected(&req.get_ref().cluster)?
            .into_iter()
            .map(|info| {
                let report = self
                    .hub
                    .connections
                    .last_report(&info.name)
                    .unwrap_or_default();
                let apps = report
                    .apps
                    .iter()
                    .map(|a| AppHealth {
                        name: a.name.clone(),
                        health: a.health,
                        message: a.message.clone(),
                        ..Default::default()
                    })
                    .collect();
                ClusterStatus {
                    cluster: Some(info),
                    apps,
                    errors: Vec::new(),
                }
            })
            .collect();
        Ok(Response::new(StatusResponse { clusters }))
    }

    async fn drift(&self, req: Request<DriftRequest>) -> Result<Response<DriftResponse>, Status> {
        let clusters = self
            .selected(&req.get_ref().cluster)?
            .into_iter()
            .map(|info| ClusterDrift {
                drifts: self
                    .hub
                    .connections
                    .last_report(&info.name)
                    .map(|r| r.drifts)
                    .unwrap_or_default(),
                cluster: info.name,
            })
            .collect();
        Ok(Response::new(DriftResponse { clusters }))
    }

    async fn history(
        &self,
        _: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        Err(not_yet("history"))
    }

    async fn envs(&self, _: Request<EnvsRequest>) -> Result<Response<EnvsResponse>, Status> {
        Err(not_yet("envs"))
    }

    async fn diff(&self, _: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        Err(not_yet("diff"))
    }

    async fn refresh(
        &self,
        req: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        auth::require_user(&req, Role::Admin)?;
        Err(not_yet("refresh"))
    }

    type WatchStream = EventStream;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        Err(not_yet("watch"))
    }
}

//! RegistrationService: the gRPC edge of the [`Registry`]. Register needs no client
//! certificate (the bootstrap token is the credential); Renew needs the cluster's current one.

use std::sync::Arc;

use convoy_shared::proto::registration_service_server::RegistrationService;
use convoy_shared::proto::{CertificateResponse, RegisterRequest, RenewRequest};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::registry::Registry;

/// The RegistrationService implementation.
pub struct RegistrationApi {
    registry: Arc<Registry>,
}

impl RegistrationApi {
    /// The service over the hub's `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        RegistrationApi { registry }
    }
}

#[tonic::async_trait]
impl RegistrationService for RegistrationApi {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<CertificateResponse>, Status> {
        // No client certificate needed: the token is the credential.
        let peer = req.extensions().get::<auth::PeerInfo>().map(|p| p.addr);
        let peer = peer.ok_or_else(|| Status::internal("connection carries no TLS peer information"))?;
        let RegisterRequest { bootstrap_token, csr_pem } = req.into_inner();
        match self.registry.register(&bootstrap_token, &csr_pem, peer).await {
            Ok(response) => Ok(Response::new(response)),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "registration refused");
                Err(e.into())
            }
        }
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<CertificateResponse>, Status> {
        let (cluster, _) = auth::require_registered_cluster(&req, &self.registry)?;
        Ok(Response::new(self.registry.renew(&cluster, &req.get_ref().csr_pem)?))
    }
}

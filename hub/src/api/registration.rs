//! RegistrationService: the gRPC edge of the [`Registry`]. Register needs no client
//! certificate (the bootstrap token is the credential; failed attempts are rate-limited per
//! address); Renew needs the cluster's current one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convoy_shared::proto::registration_service_server::RegistrationService;
use convoy_shared::proto::{
    AuditRecord, CertificateResponse, RegisterRequest, RenewRequest, SignInConfigRequest, SignInConfigResponse,
    SignInRequest, SignInResponse,
};
use tonic::{Code, Request, Response, Status};

use crate::api::auth;
use crate::api::oidc::{Nonce, OidcVerifier};

/// Hours a certificate from single sign-on lives (a working day, as `convoy users issue`).
pub const SIGN_IN_HOURS: u64 = 12;
use crate::state::hub::Hub;
use crate::state::registry::Registry;

/// Failed registrations (unknown, spent or expired tokens) one address may make per
/// [`GUESS_WINDOW`]; beyond, its registrations are refused before any token is looked at. With
/// 256-bit tokens guessing is hopeless anyway; this keeps a guesser from loading the store.
const GUESSES_PER_WINDOW: u32 = 10;
const GUESS_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past it, those whose window is over are forgotten.
const TRACKED_ADDRESSES: usize = 10_000;

/// The RegistrationService implementation.
pub struct RegistrationApi {
    hub: Arc<Hub>,
    /// Single sign-on, when the hub has an OpenID provider.
    sign_in: Option<Arc<OidcVerifier>>,
    registry: Arc<Registry>,
    /// Per source address: when its window started and how many registrations failed in it.
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RegistrationApi {
    /// The service over the hub's registry, auditing each certificate it signs.
    pub fn new(hub: Arc<Hub>, sign_in: Option<Arc<OidcVerifier>>) -> Self {
        RegistrationApi { registry: hub.registry().clone(), hub, sign_in, failures: Mutex::default() }
    }

    fn sign_in(&self) -> Result<&OidcVerifier, Status> {
        self.sign_in.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this hub has no single sign-on: it was started without --oidc-issuer; ask for a certificate (`convoy users issue`)",
            )
        })
    }

    /// An audit record of a certificate signed for `cluster` (best-effort: the agent already
    /// holds it).
    async fn audit(&self, verb: &str, cluster: &str, peer: SocketAddr, response: &CertificateResponse) {
        let record = AuditRecord {
            at_unix_ms: convoy_shared::clock::unix_ms(),
            user: format!("cluster {cluster}"),
            verb: verb.into(),
            target: format!("cluster '{cluster}'"),
            result: format!("done: a certificate valid until unix {}", response.not_after_unix),
            source: peer.to_string(),
            action: if verb == "register" { "Register" } else { "Renew" }.into(),
            ..Default::default()
        };
        if let Err(e) = self.hub.access().record(record).await {
            tracing::error!(cluster, error = %e, "a signed certificate could not be audited");
        }
    }

    /// Refuses `source` while it has used up its failed attempts.
    fn check_guesses(&self, source: IpAddr) -> Result<(), Status> {
        let failures = self.failures.lock().expect("failures lock");
        match failures.get(&source) {
            Some((since, count)) if *count >= GUESSES_PER_WINDOW && since.elapsed() < GUESS_WINDOW => {
                let wait = GUESS_WINDOW.saturating_sub(since.elapsed()).as_secs() + 1;
                Err(Status::resource_exhausted(format!(
                    "too many failed registrations from {source}; try again in {wait} s with a valid token (`convoy token create --cluster NAME`)"
                )))
            }
            _ => Ok(()),
        }
    }

    fn count_failure(&self, source: IpAddr) {
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() >= TRACKED_ADDRESSES {
            failures.retain(|_, (since, _)| since.elapsed() < GUESS_WINDOW);
        }
        let entry = failures.entry(source).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= GUESS_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[tonic::async_trait]
impl RegistrationService for RegistrationApi {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<CertificateResponse>, Status> {
        // No client certificate needed: the token is the credential.
        let peer = req.extensions().get::<auth::PeerInfo>().map(|p| p.addr);
        let peer = peer.ok_or_else(|| Status::internal("connection carries no TLS peer information"))?;
        if let Err(refused) = self.check_guesses(peer.ip()) {
            tracing::warn!(%peer, "registration refused: too many failed attempts from this address");
            return Err(refused);
        }
        let RegisterRequest { bootstrap_token, csr_pem } = req.into_inner();
        match self.registry.register(&bootstrap_token, &csr_pem, peer).await {
            Ok(response) => {
                self.audit("register", &response.cluster, peer, &response).await;
                Ok(Response::new(response))
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "registration refused");
                let status = Status::from(e);
                if matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied) {
                    self.count_failure(peer.ip());
                }
                Err(status)
            }
        }
    }

    async fn sign_in_config(&self, _: Request<SignInConfigRequest>) -> Result<Response<SignInConfigResponse>, Status> {
        let config = self.sign_in()?.config();
        Ok(Response::new(SignInConfigResponse { issuer: config.issuer.clone(), client_id: config.client_id.clone() }))
    }

    async fn sign_in(&self, req: Request<SignInRequest>) -> Result<Response<SignInResponse>, Status> {
        let peer = req.extensions().get::<auth::PeerInfo>().map(|p| p.addr);
        let peer = peer.ok_or_else(|| Status::internal("connection carries no TLS peer information"))?;
        self.check_guesses(peer.ip())?;
        let SignInRequest { id_token, nonce, csr_pem, device_flow } = req.into_inner();
        let record = |user: String, groups: Vec<String>, result: String| AuditRecord {
            at_unix_ms: convoy_shared::clock::unix_ms(),
            user,
            groups,
            verb: "sign-in".into(),
            target: self.sign_in.as_ref().map(|v| v.config().issuer.clone()).unwrap_or_default(),
            result,
            source: peer.to_string(),
            action: "SignIn".into(),
            ..Default::default()
        };
        let nonce = if device_flow { Nonce::IfCarried(&nonce) } else { Nonce::Required(&nonce) };
        let who = match self.sign_in()?.verify(&id_token, nonce).await {
            Ok(who) => who,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "sign-in refused");
                self.count_failure(peer.ip());
                if let Err(audit) =
                    self.hub.access().record(record(String::new(), Vec::new(), format!("denied: {e}"))).await
                {
                    tracing::error!(error = %audit, "a refused sign-in could not be audited");
                }
                return Err(Status::unauthenticated(e.to_string()));
            }
        };
        // The certificate lives no longer than a working day, nor past what the provider allows.
        let lifetime = Duration::from_secs(SIGN_IN_HOURS * 3600);
        let signed = self.registry.issue_user(&who.user, &who.groups, lifetime, &csr_pem)?;
        let done = format!("done: a certificate valid until unix {}", signed.not_after_unix);
        self.hub.access().record(record(who.user.clone(), who.groups.clone(), done)).await.map_err(|e| {
            Status::unavailable(format!("the audit log cannot be written ({e}): sign-in refused; try again later"))
        })?;
        tracing::info!(user = who.user, groups = ?who.groups, %peer, "signed in");
        Ok(Response::new(SignInResponse {
            user: who.user,
            groups: who.groups,
            cert_pem: signed.cert_pem,
            ca_pem: signed.ca_pem,
            not_after_unix: signed.not_after_unix,
        }))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<CertificateResponse>, Status> {
        let (cluster, peer) = auth::require_registered_cluster(&req, &self.registry)?;
        let response = self.registry.renew(&cluster, &req.get_ref().csr_pem)?;
        self.audit("renew", &cluster, peer, &response).await;
        Ok(Response::new(response))
    }
}

//! Who may call what. The identity comes from the client certificate the TLS layer verified;
//! agent certificates may only open agent streams, CLI certificates may only use the fleet API.

use std::net::SocketAddr;

use convoy_render::access::{self, Caller};
use convoy_shared::identity::{Identity, Role};
use tonic::{Request, Status};

/// What the TLS layer learned about a connection; tonic puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// `None` when the client presented no certificate (allowed only for registration).
    pub identity: Option<Identity>,
    /// The client certificate's validity (Unix seconds): revocation compares when it starts,
    /// the dashboard shows when it ends.
    pub validity: Option<convoy_shared::enrollment::Validity>,
    /// The groups a user certificate names, for the access policy.
    pub groups: Vec<String>,
}

/// A CLI user's call: who (for the access policy), from where, and its request id.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Caller,
    pub role: Role,
    pub addr: SocketAddr,
    pub request_id: String,
    /// When the certificate expires (Unix seconds; 0: unknown).
    pub not_after: i64,
}

/// The user calling the fleet API, refused when their certificates were revoked. The request
/// id is the client's `x-request-id` when it sent a usable one, else a fresh one.
pub fn user_call<T>(req: &Request<T>, registry: &crate::state::registry::Registry) -> Result<Call, Status> {
    let (user, role) = require_user(req, Role::Member)?;
    let peer = peer(req)?;
    let not_before = peer.validity.map_or(i64::MIN, |v| v.not_before);
    if let Some(at_ms) = registry.refuses_user(&user, not_before) {
        tracing::warn!(peer = %peer.addr, user, revoked_unix_ms = at_ms, "refused call: user revoked");
        return Err(Status::unauthenticated(format!(
            "user '{user}' was revoked (at {at_ms} ms since the epoch): certificates issued before are refused; ask for a new one (`convoy users issue`)"
        )));
    }
    let request_id = req
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .map_or_else(|| hex::encode(rand::random::<[u8; 8]>()), str::to_string);
    let builtin = match role {
        Role::Admin => Some(access::ADMIN),
        Role::Viewer => Some(access::VIEWER),
        Role::Member => None,
    };
    Ok(Call {
        caller: Caller { user, groups: peer.groups.clone(), builtin },
        role,
        addr: peer.addr,
        request_id,
        not_after: peer.validity.map_or(0, |v| v.not_after),
    })
}

fn peer<T>(req: &Request<T>) -> Result<&PeerInfo, Status> {
    req.extensions().get::<PeerInfo>().ok_or_else(|| Status::internal("connection carries no TLS peer information"))
}

/// The cluster an agent stream belongs to, from its certificate.
pub fn require_cluster<T>(req: &Request<T>) -> Result<(String, SocketAddr), Status> {
    let peer = peer(req)?;
    match &peer.identity {
        Some(Identity::Cluster(name)) => Ok((name.clone(), peer.addr)),
        other => Err(refuse(
            peer,
            other.as_ref(),
            "AgentService",
            "agent streams need a cluster certificate (`convoy-hub certs issue --cluster NAME`)",
        )),
    }
}

/// Like [`require_cluster`], and refuses certificates of a revoked cluster issued before its
/// revocation.
pub fn require_registered_cluster<T>(
    req: &Request<T>,
    registry: &crate::state::registry::Registry,
) -> Result<(String, SocketAddr), Status> {
    let (cluster, addr) = require_cluster(req)?;
    let not_before = peer(req)?.validity.map_or(i64::MIN, |v| v.not_before);
    if let Some(at_ms) = registry.refuses(&cluster, not_before) {
        tracing::warn!(peer = %addr, cluster, revoked_unix_ms = at_ms, "refused call: cluster certificate revoked");
        return Err(Status::permission_denied(format!(
            "cluster '{cluster}' was revoked (at {at_ms} ms since the epoch) and its certificate is no longer accepted; \
             register it again with a new token: `convoy token create --cluster {cluster}`"
        )));
    }
    Ok((cluster, addr))
}

/// The CLI user calling the fleet API and their role.
pub fn require_user<T>(req: &Request<T>, min: Role) -> Result<(String, Role), Status> {
    let peer = peer(req)?;
    match &peer.identity {
        Some(Identity::User { name, role }) if *role == Role::Admin || min != Role::Admin => Ok((name.clone(), *role)),
        Some(Identity::User { .. }) => Err(refuse(
            peer,
            peer.identity.as_ref(),
            "FleetService",
            "this call needs an admin certificate (`convoy-hub certs issue --user NAME --role admin`)",
        )),
        other => Err(refuse(
            peer,
            other.as_ref(),
            "FleetService",
            "the fleet API needs a CLI certificate (`convoy-hub certs issue --user NAME --role viewer`)",
        )),
    }
}

/// Interceptor for [`convoy_shared::proto::fleet_service_server::FleetServiceServer`]: any CLI
/// certificate may pass; methods that change the fleet check for admin themselves.
pub fn fleet_interceptor(req: Request<()>) -> Result<Request<()>, Status> {
    require_user(&req, Role::Viewer)?;
    Ok(req)
}

/// Interceptor for the agent service: only cluster certificates pass.
pub fn agent_interceptor(req: Request<()>) -> Result<Request<()>, Status> {
    require_cluster(&req)?;
    Ok(req)
}

fn refuse(peer: &PeerInfo, identity: Option<&Identity>, service: &str, remedy: &str) -> Status {
    let who = identity.map_or_else(|| "no client certificate".to_string(), |id| format!("a certificate for {id}"));
    tracing::warn!(peer = %peer.addr, service, presented = %who, "refused call");
    let message = format!("{service} refused {who}: {remedy}");
    match identity {
        None => Status::unauthenticated(message),
        Some(_) => Status::permission_denied(message),
    }
}

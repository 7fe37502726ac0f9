//! The registry: single-use bootstrap tokens, signing agent CSRs (with a token, or renewing
//! over mTLS), and revocation. The RegistrationService edge is [`crate::api::registration`].
//!
//! Decisions:
//! - A token is 32 random bytes shown once; the store keeps its SHA-256 with the cluster, labels
//!   and expiry. Spending it is one store transaction, so two agents racing with one token get
//!   one certificate between them.
//! - Revocation is a point in time per cluster: every certificate of that cluster whose validity
//!   starts before it is refused (agent streams and Renew), and tokens created before it are
//!   refused too. The cluster comes back only through a *new* token: certificates the hub signs
//!   after a revocation start no earlier than the revocation, so they pass.
//! - Labels given with a token are recorded with the registration for operators; the fleet
//!   repository (`clusters/<name>.yaml`) stays the only source of the labels apps target.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use convoy_shared::clock::{unix_ms, unix_secs};
use convoy_shared::identity::{Identity, valid_name, valid_user_name};
use convoy_shared::pki::{CertificateAuthority, LeafRequest};
use convoy_shared::proto::CertificateResponse;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tonic::Status;

use crate::store::{Redeemed, Registration, Store, StoreError, TokenRecord};

/// How long a token lives unless the request says otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest a token may live: a bootstrap secret is not a credential to keep around.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default lifetime of the certificates registration signs; agents renew at two thirds.
pub const DEFAULT_AGENT_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The shortest certificate lifetime the registry signs.
const MIN_CERT_LIFETIME: Duration = Duration::from_secs(3);
/// Tokens look like `cvt_<64 hex digits>`.
const TOKEN_PREFIX: &str = "cvt_";

/// Registration errors; each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("'{0}' is not a valid cluster name: use lowercase letters, digits and '-'")]
    InvalidName(String),
    #[error("'{0}' is not a valid user or group name: use letters, digits and . _ @ + - (an email address is fine)")]
    InvalidUserName(String),
    #[error("a token may live between one second and 30 days; asked for {0} s")]
    InvalidTtl(i64),
    #[error("the bootstrap token is not known to this hub; create one with `convoy token create --cluster NAME`")]
    UnknownToken,
    #[error(
        "the bootstrap token for cluster '{cluster}' was already used; tokens are single-use: create a new one with `convoy token create --cluster {cluster}`"
    )]
    TokenUsed { cluster: String },
    #[error(
        "the bootstrap token for cluster '{cluster}' expired; create a new one with `convoy token create --cluster {cluster}`"
    )]
    TokenExpired { cluster: String },
    #[error(
        "cluster '{cluster}' was revoked after this token was created; create a new one with `convoy token create --cluster {cluster}`"
    )]
    TokenRevoked { cluster: String },
    #[error("the certificate signing request cannot be signed: {0}")]
    BadCsr(#[source] convoy_shared::pki::PkiError),
    #[error(
        "this hub cannot sign certificates: its certificate directory has no CA key (ca.key); registration is disabled"
    )]
    NoAuthority,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the registration task failed: {0}")]
    Task(String),
}

pub type Result<T, E = RegistrationError> = std::result::Result<T, E>;

impl From<RegistrationError> for Status {
    fn from(e: RegistrationError) -> Status {
        use RegistrationError as E;
        let message = e.to_string();
        match e {
            E::InvalidName(_) | E::InvalidUserName(_) | E::InvalidTtl(_) | E::BadCsr(_) => {
                Status::invalid_argument(message)
            }
            E::UnknownToken | E::TokenExpired { .. } => Status::unauthenticated(message),
            E::TokenUsed { .. } | E::TokenRevoked { .. } => Status::permission_denied(message),
            E::NoAuthority => Status::failed_precondition(message),
            E::Store(_) | E::Task(_) => Status::unavailable(message),
        }
    }
}

/// A token just created: its text (shown once) and what the store keeps.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: String,
    pub record: TokenRecord,
}

/// How the registry signs: given once, when the hub is built.
#[derive(Clone)]
pub struct RegistryConfig {
    /// The CA that signs agent CSRs; `None` (a hub holding only `ca.crt`) disables registration.
    pub authority: Option<Arc<CertificateAuthority>>,
    /// Lifetime of the certificates registration signs (at least a few seconds).
    pub cert_lifetime: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { authority: None, cert_lifetime: DEFAULT_AGENT_CERT_LIFETIME }
    }
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("signs", &self.authority.is_some())
            .field("cert_lifetime", &self.cert_lifetime)
            .finish()
    }
}

/// Registration state shared by the services: the CA that signs, and revocations (kept in
/// memory so every agent stream is checked without a store read).
pub struct Registry {
    store: Arc<dyn Store>,
    authority: Option<Arc<CertificateAuthority>>,
    cert_lifetime: Duration,
    /// Cluster → revocation time (Unix milliseconds).
    revoked: DashMap<String, i64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("revoked", &self.revoked).finish_non_exhaustive()
    }
}

/// Milliseconds rounded up to whole seconds (certificate times have second resolution).
fn ceil_seconds(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}

/// The SHA-256 (hex) under which a token is stored.
/// Where a user's revocation is kept beside the clusters' (cluster names hold no `/`).
pub fn user_key(name: &str) -> String {
    format!("user/{name}")
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system random number generator works");
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| RegistrationError::Task(e.to_string()))?
}

impl Registry {
    /// The registry over `store`, with the revocations it kept, signing as `config` says.
    pub fn load(store: Arc<dyn Store>, config: RegistryConfig) -> Result<Self, StoreError> {
        let revoked = store.revocations()?.into_iter().collect();
        Ok(Registry {
            store,
            authority: config.authority,
            cert_lifetime: config.cert_lifetime.max(MIN_CERT_LIFETIME),
            revoked,
        })
    }

    /// When `cluster` was revoked (Unix milliseconds), if it ever was.
    pub fn revoked_at(&self, cluster: &str) -> Option<i64> {
        self.revoked.get(cluster).map(|at| *at)
    }

    /// Whether a certificate of `cluster` valid from `not_before` (Unix seconds) is refused:
    /// returns the revocation time (Unix milliseconds) when it is.
    pub fn refuses(&self, cluster: &str, not_before: i64) -> Option<i64> {
        self.revoked_at(cluster).filter(|at| not_before.saturating_mul(1000) < *at)
    }

    /// Creates a single-use bootstrap token for `cluster`.
    pub async fn create_token(
        &self,
        cluster: &str,
        labels: BTreeMap<String, String>,
        ttl: Option<Duration>,
    ) -> Result<NewToken> {
        if !valid_name(cluster) {
            return Err(RegistrationError::InvalidName(cluster.to_string()));
        }
        let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(RegistrationError::InvalidTtl(ttl.as_secs() as i64));
        }
        let now = unix_secs();
        let record = TokenRecord {
            cluster: cluster.to_string(),
            labels,
            // Created after any revocation it follows, even within the same millisecond.
            created_unix_ms: unix_ms().max(self.revoked_at(cluster).map_or(i64::MIN, |at| at + 1)),
            expires_unix: now + ttl.as_secs().max(1) as i64,
            used_unix: None,
        };
        let token = random_token();
        let (store, hash, stored) = (self.store.clone(), token_hash(&token), record.clone());
        blocking(move || Ok(store.put_token(&hash, &stored)?)).await?;
        tracing::info!(cluster, expires_unix = record.expires_unix, "bootstrap token created");
        Ok(NewToken { token, record })
    }

    /// Revokes `cluster` now; returns the revocation time (Unix milliseconds). The caller
    /// closes its live stream.
    pub async fn revoke(&self, cluster: &str) -> Result<i64> {
        if !valid_name(cluster) {
            return Err(RegistrationError::InvalidName(cluster.to_string()));
        }
        let at = self.revoke_key(cluster).await?;
        tracing::warn!(cluster, revoked_unix_ms = at, "cluster revoked");
        Ok(at)
    }

    /// Revokes every certificate of user `name` issued so far; returns when (Unix
    /// milliseconds). The caller closes their open streams.
    pub async fn revoke_user(&self, name: &str) -> Result<i64> {
        if !valid_user_name(name) {
            return Err(RegistrationError::InvalidUserName(name.to_string()));
        }
        let at = self.revoke_key(&user_key(name)).await?;
        tracing::warn!(user = name, revoked_unix_ms = at, "user revoked");
        Ok(at)
    }

    /// Records a revocation of `key` (a cluster, or [`user_key`]) in the store, then here.
    async fn revoke_key(&self, key: &str) -> Result<i64> {
        let at = unix_ms();
        let (store, name) = (self.store.clone(), key.to_string());
        blocking(move || Ok(store.put_revocation(&name, at)?)).await?;
        self.revoked.insert(key.to_string(), at);
        Ok(at)
    }

    /// Whether a certificate of user `name` valid from `not_before` (Unix seconds) is refused:
    /// returns the revocation time (Unix milliseconds) when it is.
    pub fn refuses_user(&self, name: &str, not_before: i64) -> Option<i64> {
        self.refuses(&user_key(name), not_before)
    }

    /// Signs `csr_pem` for user `name` with `groups` (role `member`: the access policy decides
    /// what they may do), valid for `lifetime`.
    pub fn issue_user(
        &self,
        name: &str,
        groups: &[String],
        lifetime: Duration,
        csr_pem: &str,
    ) -> Result<CertificateResponse> {
        if let Some(bad) = std::iter::once(name).chain(groups.iter().map(String::as_str)).find(|n| !valid_user_name(n))
        {
            return Err(RegistrationError::InvalidUserName(bad.to_string()));
        }
        let identity = Identity::User { name: name.to_string(), role: convoy_shared::identity::Role::Member };
        let response = self.sign_leaf(&*self.authority()?, identity, groups, &user_key(name), lifetime, csr_pem)?;
        tracing::info!(user = name, ?groups, not_after_unix = response.not_after_unix, "user certificate issued");
        Ok(response)
    }

    /// Takes a revocation another hub replica recorded (in the store they share).
    pub fn relay_revocation(&self, cluster: &str, at: i64) {
        self.revoked.insert(cluster.to_string(), at);
    }

    /// Spends `token` and signs `csr_pem` for the token's cluster.
    pub async fn register(&self, token: &str, csr_pem: &str, peer: SocketAddr) -> Result<CertificateResponse> {
        let authority = self.authority()?;
        let (store, hash) = (self.store.clone(), token_hash(token));
        let now = unix_secs();
        let record = match blocking(move || Ok(store.redeem_token(&hash, now)?)).await? {
            Redeemed::Spent(record) => record,
            Redeemed::Unknown => return Err(RegistrationError::UnknownToken),
            Redeemed::AlreadyUsed(r) => return Err(RegistrationError::TokenUsed { cluster: r.cluster }),
            Redeemed::Expired(r) => return Err(RegistrationError::TokenExpired { cluster: r.cluster }),
        };
        if let Some(at) = self.revoked_at(&record.cluster) {
            // A token minted in the revocation's very millisecond counts as revoked.
            if record.created_unix_ms <= at {
                return Err(RegistrationError::TokenRevoked { cluster: record.cluster });
            }
            // The new certificate must start at or after the revocation (whole seconds), and
            // must not start in the future: within the revocation's second, wait for the next.
            let ready_ms = ceil_seconds(at) * 1000;
            let wait = ready_ms - unix_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
        }
        let response = self.sign(&authority, &record.cluster, csr_pem)?;
        let registration = Registration {
            cluster: record.cluster.clone(),
            labels: record.labels,
            registered_unix: now,
            peer: peer.to_string(),
        };
        let store = self.store.clone();
        blocking(move || Ok(store.put_registration(&registration)?)).await?;
        tracing::info!(cluster = %record.cluster, %peer, not_after_unix = response.not_after_unix, "agent registered");
        Ok(response)
    }

    /// Signs a fresh certificate for `cluster` (already authenticated by its current one).
    pub fn renew(&self, cluster: &str, csr_pem: &str) -> Result<CertificateResponse> {
        let response = self.sign(&*self.authority()?, cluster, csr_pem)?;
        tracing::info!(cluster, not_after_unix = response.not_after_unix, "agent certificate renewed");
        Ok(response)
    }

    fn authority(&self) -> Result<Arc<CertificateAuthority>> {
        self.authority.clone().ok_or(RegistrationError::NoAuthority)
    }

    fn sign(&self, authority: &CertificateAuthority, cluster: &str, csr_pem: &str) -> Result<CertificateResponse> {
        let identity = Identity::Cluster(cluster.to_string());
        self.sign_leaf(authority, identity, &[], cluster, self.cert_lifetime, csr_pem)
    }

    /// Signs `csr_pem` for `identity` (and `groups`) for `lifetime`, starting no earlier than
    /// the last revocation of `revocation_key`, or it would be refused with the old ones.
    fn sign_leaf(
        &self,
        authority: &CertificateAuthority,
        identity: Identity,
        groups: &[String],
        revocation_key: &str,
        lifetime: Duration,
        csr_pem: &str,
    ) -> Result<CertificateResponse> {
        let now = unix_secs();
        let revoked = self.revoked_at(revocation_key).map_or(i64::MIN, ceil_seconds);
        let not_before = (now - convoy_shared::pki::CLOCK_SKEW.whole_seconds()).max(revoked).min(now);
        let not_after = now + lifetime.as_secs() as i64;
        let name = match &identity {
            Identity::Cluster(name) | Identity::User { name, .. } => name.clone(),
            Identity::Hub => String::new(),
        };
        let mut request = LeafRequest::new(identity, 1);
        request.groups = groups.to_vec();
        request.not_before = OffsetDateTime::from_unix_timestamp(not_before).expect("a valid time");
        request.not_after = OffsetDateTime::from_unix_timestamp(not_after).expect("a valid time");
        let cert_pem = authority.sign_csr(csr_pem, &request).map_err(RegistrationError::BadCsr)?;
        Ok(CertificateResponse {
            cluster: name,
            cert_pem,
            ca_pem: authority.cert_pem().to_string(),
            not_after_unix: not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn registry() -> Registry {
        let authority = CertificateAuthority::generate("test-ca", 1).unwrap().0;
        let config = RegistryConfig { authority: Some(Arc::new(authority)), ..RegistryConfig::default() };
        Registry::load(Arc::new(MemoryStore::default()), config).unwrap()
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test]
    async fn a_token_registers_once_and_only_for_its_cluster() {
        let registry = registry();
        let new = registry.create_token("eu-1", BTreeMap::new(), None).await.unwrap();
        assert!(new.token.starts_with(TOKEN_PREFIX));
        let csr = convoy_shared::enrollment::generate_csr("victim").unwrap();
        let cert = registry.register(&new.token, &csr.cert_pem, peer()).await.unwrap();
        assert_eq!(cert.cluster, "eu-1");
        let again = registry.register(&new.token, &csr.cert_pem, peer()).await.unwrap_err();
        assert!(matches!(again, RegistrationError::TokenUsed { .. }), "{again}");
        let unknown = registry.register("cvt_nope", &csr.cert_pem, peer()).await.unwrap_err();
        assert!(matches!(unknown, RegistrationError::UnknownToken));
    }

    #[tokio::test]
    async fn revocation_refuses_older_certificates_and_tokens_but_not_new_ones() {
        let registry = registry();
        let old_token = registry.create_token("eu-1", BTreeMap::new(), None).await.unwrap();
        let at = registry.revoke("eu-1").await.unwrap();
        assert_eq!(registry.refuses("eu-1", at / 1000 - 1), Some(at));
        assert_eq!(registry.refuses("eu-2", 0), None);
        let csr = convoy_shared::enrollment::generate_csr("eu-1").unwrap();
        let refused = registry.register(&old_token.token, &csr.cert_pem, peer()).await.unwrap_err();
        assert!(matches!(refused, RegistrationError::TokenRevoked { .. }), "{refused}");
        let new_token = registry.create_token("eu-1", BTreeMap::new(), None).await.unwrap();
        let cert = registry.register(&new_token.token, &csr.cert_pem, peer()).await.unwrap();
        let validity = convoy_shared::enrollment::validity(&cert.cert_pem, "test").unwrap();
        assert_eq!(registry.refuses("eu-1", validity.not_before), None);
    }

    #[tokio::test]
    async fn bad_names_and_ttls_are_refused() {
        let registry = registry();
        assert!(registry.create_token("Not_A_Name", BTreeMap::new(), None).await.is_err());
        assert!(registry.create_token("eu-1", BTreeMap::new(), Some(Duration::ZERO)).await.is_err());
        assert!(registry.create_token("eu-1", BTreeMap::new(), Some(MAX_TOKEN_TTL * 2)).await.is_err());
    }
}

//! `POST /webhook`: GitHub, Gitea and GitLab push events (signature checked, replays refused)
//! that make the sync loop fetch at once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::state::hub::Hub;

/// Accepted deliveries remembered to refuse replays (bodies differ between pushes: each names
/// its before and after commits).
const REMEMBERED_DELIVERIES: usize = 4096;

#[derive(Clone)]
struct WebhookState {
    hub: Arc<Hub>,
    secret: Option<Arc<str>>,
    accepted: Arc<Mutex<Deliveries>>,
}

/// SHA-256 digests of the bodies of recently accepted deliveries, oldest first.
#[derive(Default)]
struct Deliveries {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Deliveries {
    /// Remembers `body`; false when it was accepted before (a replay).
    fn first_time(&mut self, body: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(body).into();
        if !self.seen.insert(digest) {
            return false;
        }
        self.order.push_back(digest);
        if self.order.len() > REMEMBERED_DELIVERIES
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

/// The `/webhook` route. Without a secret it refuses every call: an unauthenticated trigger
/// would let anyone make the hub fetch in a loop.
pub fn routes(hub: Arc<Hub>, secret: Option<String>) -> Router {
    let secret = secret.filter(|s| !s.is_empty()).map(Arc::from);
    let state = WebhookState { hub, secret, accepted: Arc::default() };
    Router::new().route("/webhook", post(webhook)).with_state(state)
}

async fn webhook(State(state): State<WebhookState>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    let Some(secret) = &state.secret else {
        tracing::warn!("webhook called but no --webhook-secret is configured; refused");
        return (StatusCode::UNAUTHORIZED, "no webhook secret configured on the hub\n");
    };
    match verify(secret.as_bytes(), &headers, &body) {
        Ok(provider) if !state.accepted.lock().expect("deliveries lock").first_time(&body) => {
            tracing::warn!(provider, "webhook refused: this signed body was accepted before (a replay)");
            (StatusCode::CONFLICT, "replayed delivery: this body was already accepted\n")
        }
        Ok(provider) => {
            tracing::info!(provider, "webhook accepted; fetching now");
            state.hub.request_refresh();
            (StatusCode::ACCEPTED, "fetching\n")
        }
        Err(reason) => {
            tracing::warn!(reason, "webhook refused");
            (StatusCode::UNAUTHORIZED, "bad or missing signature\n")
        }
    }
}

/// Checks the request's signature; returns which provider's scheme matched.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<&'static str, &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(sig) = header("x-hub-signature-256") {
        let hex_sig = sig.strip_prefix("sha256=").ok_or("X-Hub-Signature-256 is not sha256=…")?;
        return hmac_matches(secret, body, hex_sig).then_some("github").ok_or("GitHub signature mismatch");
    }
    if let Some(sig) = header("x-gitea-signature").or_else(|| header("x-gogs-signature")) {
        return hmac_matches(secret, body, sig).then_some("gitea").ok_or("Gitea signature mismatch");
    }
    if let Some(token) = header("x-gitlab-token") {
        return convoy_shared::constant_time_eq(token.as_bytes(), secret)
            .then_some("gitlab")
            .ok_or("GitLab token mismatch");
    }
    Err("no signature header (X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token)")
}

fn hmac_matches(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(expected) = hex::decode(hex_sig.trim()) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The `X-Hub-Signature-256` value GitHub would send for `body` (tests and benchmarks use it).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn each_provider_scheme_is_checked() {
        let body = br#"{"ref":"refs/heads/dev"}"#;
        let good = github_signature(b"s3cret", body);
        assert_eq!(verify(b"s3cret", &headers(&[("x-hub-signature-256", &good)]), body), Ok("github"));
        assert!(verify(b"other", &headers(&[("x-hub-signature-256", &good)]), body).is_err());
        assert!(verify(b"s3cret", &headers(&[("x-hub-signature-256", &good)]), b"tampered").is_err());
        let gitea = good.trim_start_matches("sha256=").to_string();
        assert_eq!(verify(b"s3cret", &headers(&[("x-gitea-signature", &gitea)]), body), Ok("gitea"));
        assert_eq!(verify(b"s3cret", &headers(&[("x-gitlab-token", "s3cret")]), body), Ok("gitlab"));
        assert!(verify(b"s3cret", &headers(&[("x-gitlab-token", "s3cre")]), body).is_err());
        assert!(verify(b"s3cret", &HeaderMap::new(), body).is_err());
    }
}

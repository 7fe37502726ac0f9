//! The OpenID client steps of signing in, shared by `convoy login` (a loopback redirect or the
//! device flow) and the hub's dashboard (a redirect to the hub): find the provider's endpoints,
//! send the person to sign in, and trade what comes back for an ID token. Checking the ID token
//! is the hub's alone (`convoy_hub::api::oidc`).
//!
//! Decisions:
//! - The provider's endpoints come from its discovery document, whose `issuer` must be the
//!   configured one exactly (a provider answering for another issuer is refused).
//! - The authorization-code flow always uses PKCE (S256) and a fresh random state and nonce; an
//!   answer whose state is not the sign-in's is refused before any code is traded.
//! - The device flow (RFC 8628) sends the same nonce and polls at the provider's interval,
//!   slowing down by 5 s when told to, until the provider's deadline.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The scopes every sign-in asks for: the user's email and groups.
pub const SCOPE: &str = "openid email groups";

/// Why a sign-in step failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SignInError(pub String);

fn failed(message: impl Into<String>) -> SignInError {
    SignInError(message.into())
}

/// 32 random bytes, URL-safe: states, nonces, PKCE verifiers and session ids.
pub fn random() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// An HTTP client for the provider (its TLS takes the process's crypto provider).
pub fn http_client() -> reqwest::Client {
    convoy_shared::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("an HTTP client")
}

/// How Convoy is registered at the provider.
#[derive(Debug, Clone)]
pub struct ClientId {
    pub id: String,
    /// A confidential client's secret (client_secret_basic); `None` for a public client.
    pub secret: Option<String>,
}

/// A provider's endpoints, from its discovery document.
#[derive(Debug, Clone)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub device_authorization_endpoint: Option<String>,
}

/// One authorization-code sign-in in progress: where to send the person, and what the answer
/// must match.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub url: reqwest::Url,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// One device-flow sign-in in progress.
#[derive(Debug, Clone)]
pub struct Device {
    /// The code the person types, and where.
    pub user_code: String,
    pub verification_uri: String,
    /// The same address with the code filled in, when the provider gives one.
    pub verification_uri_complete: Option<String>,
    pub nonce: String,
    device_code: String,
    interval: Duration,
    expires_in: Duration,
}

async fn json(answer: Result<reqwest::Response, reqwest::Error>, what: &str) -> Result<Value, SignInError> {
    let answer = answer.map_err(|e| failed(format!("{what}: {e}")))?;
    let status = answer.status();
    let body = answer.bytes().await.map_err(|e| failed(format!("{what}: {e}")))?;
    let value: Option<Value> = serde_json::from_slice(&body).ok();
    match value {
        Some(value) if status.is_success() => Ok(value),
        _ if status.is_success() => Err(failed(format!("{what} answered something that is not JSON"))),
        _ => Err(failed(format!("{what} answered {status}: {}", String::from_utf8_lossy(&body)))),
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut form = reqwest::Url::parse("http://form.invalid/").expect("a static URL");
    form.query_pairs_mut().extend_pairs(pairs);
    form.query().unwrap_or_default().to_string()
}

impl Provider {
    /// Reads `ISSUER/.well-known/openid-configuration`.
    pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Provider, SignInError> {
        let base = issuer.trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let doc = json(http.get(&url).send().await, &format!("the provider's discovery {url}")).await?;
        if doc["issuer"].as_str() != Some(issuer) {
            return Err(failed(format!(
                "the provider at {issuer} names issuer {} in its discovery document: check --oidc-issuer (it must match exactly)",
                doc["issuer"]
            )));
        }
        let endpoint = |name: &str| {
            doc[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| failed(format!("the provider {issuer} names no {name}")))
        };
        Ok(Provider {
            issuer: issuer.to_string(),
            authorization_endpoint: endpoint("authorization_endpoint")?,
            token_endpoint: endpoint("token_endpoint")?,
            jwks_uri: endpoint("jwks_uri")?,
            device_authorization_endpoint: endpoint("device_authorization_endpoint").ok(),
        })
    }

    /// Where to send the person to sign in for `client`, coming back to `redirect_uri`.
    pub fn authorize(&self, client: &ClientId, redirect_uri: &str) -> Result<Authorization, SignInError> {
        let (verifier, state, nonce) = (random(), random(), random());
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = reqwest::Url::parse(&self.authorization_endpoint)
            .map_err(|e| failed(format!("{}: {e}", self.authorization_endpoint)))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", SCOPE)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(Authorization { url, state, nonce, verifier })
    }

    /// The code of the provider's answer (its redirect's query `params`), refused when it is an
    /// error or its state is not `state`.
    pub fn code(params: &[(String, String)], state: &str) -> Result<String, SignInError> {
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if let Some(error) = param("error") {
            return Err(failed(format!(
                "the provider refused: {error} {}",
                param("error_description").unwrap_or_default()
            )));
        }
        if param("state").as_deref() != Some(state) {
            return Err(failed("the answer's state is not this sign-in's: refused (sign in again)"));
        }
        param("code").ok_or_else(|| failed("the provider's answer holds no code"))
    }

    async fn token(&self, http: &reqwest::Client, client: &ClientId, pairs: &[(&str, &str)]) -> Value {
        let mut request = http.post(&self.token_endpoint).header("content-type", "application/x-www-form-urlencoded");
        let mut pairs = pairs.to_vec();
        match &client.secret {
            Some(secret) => request = request.basic_auth(&client.id, Some(secret)),
            None => pairs.push(("client_id", client.id.as_str())),
        }
        let answer = request.body(form(&pairs)).send().await;
        // An error answer is JSON too ({"error": ...}): the caller reads it.
        match answer {
            Ok(answer) => serde_json::from_slice(&answer.bytes().await.unwrap_or_default()).unwrap_or(Value::Null),
            Err(e) => serde_json::json!({"error": "unreachable", "error_description": e.to_string()}),
        }
    }

    /// Trades `code` (from [`Provider::authorize`]'s sign-in) for an ID token.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        client: &ClientId,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, SignInError> {
        let pairs = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        id_token(self.token(http, client, &pairs).await, &self.token_endpoint)
    }

    /// Starts a device-flow sign-in for `client`.
    pub async fn device(&self, http: &reqwest::Client, client: &ClientId) -> Result<Device, SignInError> {
        let endpoint = self.device_authorization_endpoint.as_deref().ok_or_else(|| {
            failed(format!(
                "the provider {} offers no device flow (no device_authorization_endpoint): sign in without --device",
                self.issuer
            ))
        })?;
        let nonce = random();
        let mut request = http.post(endpoint).header("content-type", "application/x-www-form-urlencoded");
        let mut pairs = vec![("scope", SCOPE), ("nonce", nonce.as_str())];
        match &client.secret {
            Some(secret) => request = request.basic_auth(&client.id, Some(secret)),
            None => pairs.push(("client_id", client.id.as_str())),
        }
        let answer =
            json(request.body(form(&pairs)).send().await, &format!("the provider's device endpoint {endpoint}"))
                .await?;
        let text = |name: &str| answer[name].as_str().map(str::to_string);
        let (Some(device_code), Some(user_code), Some(verification_uri)) =
            (text("device_code"), text("user_code"), text("verification_uri"))
        else {
            return Err(failed(format!("the provider's device endpoint {endpoint} answered no device or user code")));
        };
        Ok(Device {
            user_code,
            verification_uri,
            verification_uri_complete: text("verification_uri_complete"),
            nonce,
            device_code,
            interval: Duration::from_secs(answer["interval"].as_u64().unwrap_or(5).max(1)),
            expires_in: Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(600)),
        })
    }

    /// Waits until the person has signed in on another device; the ID token.
    pub async fn poll(
        &self,
        http: &reqwest::Client,
        client: &ClientId,
        device: &Device,
    ) -> Result<String, SignInError> {
        let deadline = tokio::time::Instant::now() + device.expires_in;
        let mut interval = device.interval;
        let pairs = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device.device_code.as_str()),
        ];
        loop {
            tokio::time::sleep(interval).await;
            let answer = self.token(http, client, &pairs).await;
            match answer["error"].as_str() {
                Some("authorization_pending") => {}
                Some("slow_down") => interval += Duration::from_secs(5),
                _ => return id_token(answer, &self.token_endpoint),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(failed(format!(
                    "no sign-in within {} s: the code {} expired (start again)",
                    device.expires_in.as_secs(),
                    device.user_code
                )));
            }
        }
    }
}

/// The ID token of a token endpoint's answer, or what it said instead.
fn id_token(answer: Value, endpoint: &str) -> Result<String, SignInError> {
    if let Some(error) = answer["error"].as_str() {
        let description = answer["error_description"].as_str().unwrap_or_default();
        return Err(failed(format!("the provider's token endpoint {endpoint} refused: {error} {description}")));
    }
    answer["id_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| failed(format!("the provider's token endpoint {endpoint} returned no ID token")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Provider {
        Provider {
            issuer: "https://id.example".into(),
            authorization_endpoint: "https://id.example/auth?tenant=a".into(),
            token_endpoint: "https://id.example/token".into(),
            jwks_uri: "https://id.example/jwks".into(),
            device_authorization_endpoint: None,
        }
    }

    #[test]
    fn every_sign_in_has_its_own_state_nonce_and_pkce_challenge() {
        let client = ClientId { id: "convoy".into(), secret: None };
        let a = provider().authorize(&client, "https://hub.example/auth/callback").unwrap();
        let b = provider().authorize(&client, "https://hub.example/auth/callback").unwrap();
        assert!(a.state != b.state && a.nonce != b.nonce && a.verifier != b.verifier);
        let query: std::collections::HashMap<_, _> = a.url.query_pairs().into_owned().collect();
        assert_eq!(query["tenant"], "a", "the endpoint's own query is kept");
        assert_eq!(query["code_challenge_method"], "S256");
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(a.verifier.as_bytes()));
        assert_eq!(query["code_challenge"], challenge);
        assert_eq!((query["state"].as_str(), query["nonce"].as_str()), (a.state.as_str(), a.nonce.as_str()));
        assert!(!a.url.as_str().contains(&a.verifier), "the verifier never leaves");
    }

    #[test]
    fn an_answer_is_refused_unless_it_is_this_sign_ins() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(Provider::code(&params(&[("code", "c"), ("state", "s")]), "s").unwrap(), "c");
        let foreign = Provider::code(&params(&[("code", "c"), ("state", "other")]), "s").unwrap_err();
        assert!(foreign.0.contains("state"), "{foreign}");
        let refused =
            Provider::code(&params(&[("error", "access_denied"), ("error_description", "no"), ("state", "s")]), "s");
        assert!(refused.unwrap_err().0.contains("access_denied"));
        assert!(Provider::code(&params(&[("state", "s")]), "s").is_err());
    }

    #[test]
    fn a_token_answer_without_an_id_token_says_what_the_provider_said() {
        let refused = id_token(serde_json::json!({"error": "invalid_grant", "error_description": "used"}), "T");
        assert_eq!(refused.unwrap_err().0, "the provider's token endpoint T refused: invalid_grant used");
        assert!(id_token(serde_json::json!({"access_token": "a"}), "T").unwrap_err().0.contains("no ID token"));
        assert_eq!(id_token(serde_json::json!({"id_token": "x.y.z"}), "T").unwrap(), "x.y.z");
    }
}

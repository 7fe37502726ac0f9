//! Single sign-on (issue 31): checks an ID token from the hub's OpenID provider before the hub
//! signs a CLI certificate for the person it names.
//!
//! Decisions:
//! - The provider is found by discovery (`ISSUER/.well-known/openid-configuration`), whose
//!   `issuer` must be the configured one exactly; its keys come from `jwks_uri`, cached. A token
//!   signed with a key id the cache lacks makes one refetch (key rotation), at most every 10 s,
//!   so unknown key ids cannot make the hub hammer the provider.
//! - A token is accepted when its signature checks with the provider's key of its `kid` (RS256,
//!   RS384, RS512, PS256, ES256, ES384 or EdDSA; never `none`, never HMAC), its `iss` is the
//!   issuer, its `aud` holds the client id, it has not expired (30 s of leeway), and its `nonce`
//!   is the one the sign-in sent (in the device flow, where providers need not echo one, a
//!   token may carry none). A token and its nonce are spent once: either again is refused
//!   until the token would have expired.
//! - The user is the configured claim (default `email`, else `sub`); groups are the configured
//!   claim (default `groups`: a list of strings, or one string). Names that are not valid user
//!   or group names are refused, not mangled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use convoy_shared::identity::valid_user_name;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::Digest as _;

/// How the hub signs people in.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub user_claim: String,
    pub groups_claim: String,
}

/// Why a sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("cannot reach the OpenID provider {issuer}: {message}")]
    Provider { issuer: String, message: String },
    #[error("the ID token is refused: {0}")]
    Token(String),
    #[error("the ID token's nonce was already used: sign in again (`convoy login`)")]
    Replayed,
    #[error("the ID token names no usable {claim}: {message}")]
    Claim { claim: String, message: String },
}

/// Who an accepted ID token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub user: String,
    pub groups: Vec<String>,
    /// When the token expires (Unix seconds).
    pub expires: i64,
}

/// What the ID token's `nonce` claim must be.
#[derive(Debug, Clone, Copy)]
pub enum Nonce<'a> {
    /// The authorization-code flow: the nonce the sign-in sent, always.
    Required(&'a str),
    /// The device flow, where providers need not echo it: the sent one if the token carries any.
    IfCarried(&'a str),
}

/// Least time between two fetches of the provider's keys for an unknown key id.
const REFETCH: Duration = Duration::from_secs(10);

/// The ID token checker of one hub.
pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<Option<(JwkSet, Instant)>>,
    /// Spent nonces and when their tokens expire (Unix seconds).
    nonces: Mutex<HashMap<String, i64>>,
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> OidcVerifier {
        let http = convoy_web::oidc::http_client();
        OidcVerifier { config, http, keys: Default::default(), nonces: Default::default() }
    }

    /// A verifier that trusts `keys` as the provider's (tests).
    pub fn with_keys(config: OidcConfig, keys: JwkSet) -> OidcVerifier {
        let verifier = OidcVerifier::new(config);
        *verifier.keys.try_lock().expect("new") = Some((keys, Instant::now()));
        verifier
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Fetches the provider's keys by discovery.
    async fn fetch_keys(&self) -> Result<JwkSet, OidcError> {
        let failed = |message: String| OidcError::Provider { issuer: self.config.issuer.clone(), message };
        let provider = convoy_web::oidc::Provider::discover(&self.http, &self.config.issuer)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let url = &provider.jwks_uri;
        let answer = self.http.get(url).send().await.map_err(|e| failed(format!("{url}: {e}")))?;
        if !answer.status().is_success() {
            return Err(failed(format!("{url} answered {}", answer.status())));
        }
        let body = answer.bytes().await.map_err(|e| failed(format!("{url}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| failed(format!("{url} holds no key set: {e}")))
    }

    /// The key `kid` names, fetching the keys when they are not cached or lack it.
    async fn key(&self, kid: Option<&str>) -> Result<jsonwebtoken::jwk::Jwk, OidcError> {
        let mut cached = self.keys.lock().await;
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        if let Some((set, _)) = cached.as_ref()
            && let Some(key) = find(set)
        {
            return Ok(key);
        }
        let may_fetch = cached.as_ref().is_none_or(|(_, at)| at.elapsed() >= REFETCH);
        if may_fetch {
            *cached = Some((self.fetch_keys().await?, Instant::now()));
        }
        cached.as_ref().and_then(|(set, _)| find(set)).ok_or_else(|| {
            OidcError::Token(format!("it is signed with key {kid:?}, which the provider does not publish"))
        })
    }

    /// Checks `id_token` and its nonce (see [`Nonce`]); spends the token and its nonce.
    pub async fn verify(&self, id_token: &str, nonce: Nonce<'_>) -> Result<SignedIn, OidcError> {
        let bad = |e: jsonwebtoken::errors::Error| OidcError::Token(e.to_string());
        let header = jsonwebtoken::decode_header(id_token).map_err(bad)?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        if !allowed.contains(&header.alg) {
            return Err(OidcError::Token(format!("it is signed with {:?}, which the hub does not accept", header.alg)));
        }
        let key = DecodingKey::from_jwk(&self.key(header.kid.as_deref()).await?).map_err(bad)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let claims: Value = jsonwebtoken::decode(id_token, &key, &validation).map_err(bad)?.claims;
        let carried = claims["nonce"].as_str();
        let nonce_holds = match nonce {
            Nonce::Required(sent) => !sent.is_empty() && carried == Some(sent),
            Nonce::IfCarried(sent) => carried.is_none_or(|c| c == sent),
        };
        if !nonce_holds {
            return Err(OidcError::Token("its nonce is not the one this sign-in sent".into()));
        }
        let expires = claims["exp"].as_i64().unwrap_or_default();
        {
            let now = convoy_shared::clock::unix_secs();
            let mut spent = self.nonces.lock().expect("nonces lock");
            spent.retain(|_, until| *until + 30 >= now);
            // The token itself is spent, and its nonce when it carries one.
            let token_key = format!("token:{}", hex::encode(sha2::Sha256::digest(id_token.as_bytes())));
            let keys = std::iter::once(token_key).chain(carried.map(|c| format!("nonce:{c}")));
            let mut replayed = false;
            for key in keys {
                replayed |= spent.insert(key, expires).is_some();
            }
            if replayed {
                return Err(OidcError::Replayed);
            }
        }
        let user_claim = &self.config.user_claim;
        let user = claims[user_claim.as_str()].as_str().or_else(|| claims["sub"].as_str()).unwrap_or_default();
        if !valid_user_name(user) {
            return Err(OidcError::Claim {
                claim: user_claim.clone(),
                message: format!("'{user}' is not a valid user name (letters, digits and . _ @ + -)"),
            });
        }
        let groups: Vec<String> = match &claims[self.config.groups_claim.as_str()] {
            Value::Array(items) => items.iter().filter_map(|g| g.as_str().map(str::to_string)).collect(),
            Value::String(one) => vec![one.clone()],
            _ => Vec::new(),
        };
        if let Some(bad) = groups.iter().find(|g| !valid_user_name(g)) {
            return Err(OidcError::Claim {
                claim: self.config.groups_claim.clone(),
                message: format!("group '{bad}' is not a valid group name"),
            });
        }
        Ok(SignedIn { user: user.to_string(), groups, expires })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};

    const ISSUER: &str = "https://id.example";

    /// An ES256 key pair: its signing key and its JWK.
    fn key(kid: &str) -> (EncodingKey, jsonwebtoken::jwk::Jwk) {
        let pair = rcgen::KeyPair::generate().unwrap();
        let point = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65])});
        (EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), serde_json::from_value(jwk).unwrap())
    }

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: ISSUER.into(),
            client_id: "convoy".into(),
            user_claim: "email".into(),
            groups_claim: "groups".into(),
        }
    }

    fn token(signer: &EncodingKey, kid: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, signer).unwrap()
    }

    fn claims(nonce: &str, aud: &str, exp: i64) -> serde_json::Value {
        serde_json::json!({"iss": ISSUER, "aud": aud, "sub": "u1", "exp": exp, "iat": exp - 300,
            "nonce": nonce, "email": "wendy@example.com", "groups": ["web-team", "ops"]})
    }

    #[tokio::test]
    async fn a_good_token_names_its_user_and_groups_once() {
        let (signer, jwk) = key("k1");
        let verifier = OidcVerifier::with_keys(config(), JwkSet { keys: vec![jwk] });
        let later = convoy_shared::clock::unix_secs() + 300;
        let good = token(&signer, "k1", claims("n1", "convoy", later));
        let who = verifier.verify(&good, Nonce::Required("n1")).await.unwrap();
        assert_eq!(
            (who.user.as_str(), who.groups.clone()),
            ("wendy@example.com", vec!["web-team".to_string(), "ops".into()])
        );
        assert!(
            matches!(verifier.verify(&good, Nonce::Required("n1")).await, Err(OidcError::Replayed)),
            "a replayed nonce is refused"
        );
    }

    #[tokio::test]
    async fn a_device_flow_token_may_lack_a_nonce_and_is_still_spent_once() {
        let (signer, jwk) = key("k1");
        let verifier = OidcVerifier::with_keys(config(), JwkSet { keys: vec![jwk] });
        let later = convoy_shared::clock::unix_secs() + 300;
        let mut bare = claims("", "convoy", later);
        bare.as_object_mut().unwrap().remove("nonce");
        let bare = token(&signer, "k1", bare);
        let required = verifier.verify(&bare, Nonce::Required("n")).await.unwrap_err();
        assert!(required.to_string().contains("nonce"), "the code flow always needs it: {required}");
        assert!(verifier.verify(&bare, Nonce::IfCarried("n")).await.is_ok());
        let again = verifier.verify(&bare, Nonce::IfCarried("n")).await;
        assert!(matches!(again, Err(OidcError::Replayed)), "the same token twice: {again:?}");
        let other = token(&signer, "k1", claims("someone-elses", "convoy", later));
        let foreign = verifier.verify(&other, Nonce::IfCarried("n")).await.unwrap_err();
        assert!(foreign.to_string().contains("nonce"), "a carried nonce must be ours: {foreign}");
    }

    #[tokio::test]
    async fn wrong_audience_expired_foreign_key_and_wrong_nonce_are_refused() {
        let (signer, jwk) = key("k1");
        let (stranger, _) = key("k1");
        let verifier = OidcVerifier::with_keys(config(), JwkSet { keys: vec![jwk] });
        let now = convoy_shared::clock::unix_secs();
        let refused = |r: Result<SignedIn, OidcError>| r.unwrap_err().to_string();
        let aud = refused(
            verifier.verify(&token(&signer, "k1", claims("a", "other-client", now + 300)), Nonce::Required("a")).await,
        );
        assert!(aud.contains("InvalidAudience"), "{aud}");
        let expired = refused(
            verifier.verify(&token(&signer, "k1", claims("b", "convoy", now - 120)), Nonce::Required("b")).await,
        );
        assert!(expired.contains("ExpiredSignature"), "{expired}");
        let forged = refused(
            verifier.verify(&token(&stranger, "k1", claims("c", "convoy", now + 300)), Nonce::Required("c")).await,
        );
        assert!(forged.contains("InvalidSignature"), "{forged}");
        let nonce = refused(
            verifier.verify(&token(&signer, "k1", claims("d", "convoy", now + 300)), Nonce::Required("other")).await,
        );
        assert!(nonce.contains("nonce"), "{nonce}");
        let mut wrong_issuer = claims("e", "convoy", now + 300);
        wrong_issuer["iss"] = "https://evil.example".into();
        let issuer = refused(verifier.verify(&token(&signer, "k1", wrong_issuer), Nonce::Required("e")).await);
        assert!(issuer.contains("InvalidIssuer"), "{issuer}");
        let mut hmac_header = Header::new(Algorithm::HS256);
        hmac_header.kid = Some("k1".into());
        let hmac =
            jsonwebtoken::encode(&hmac_header, &claims("f", "convoy", now + 300), &EncodingKey::from_secret(b"s"))
                .unwrap();
        assert!(refused(verifier.verify(&hmac, Nonce::Required("f")).await).contains("does not accept"));
    }
}

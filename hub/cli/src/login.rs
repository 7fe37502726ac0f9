//! `convoy login`: single sign-on through the hub's OpenID provider, for a short-lived CLI
//! certificate of the person and their groups.
//!
//! Decisions:
//! - The hub names the provider and the client id (`SignInConfig`); the provider's endpoints
//!   come from its discovery document.
//! - The authorization-code flow with PKCE (S256), a fresh random state and nonce per sign-in,
//!   and a redirect to a listener on 127.0.0.1 that takes one request (RFC 8252); an answer
//!   whose state is not ours is refused.
//! - The ID token goes to the hub with the nonce and a certificate signing request: the key is
//!   made here and never leaves this machine; the hub checks the token and signs.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use convoy_shared::proto::registration_service_client::RegistrationServiceClient;
use convoy_shared::proto::{IssueUserResponse, SignInConfigRequest, SignInRequest};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::users::{Written, write_config};
use crate::{CliError, Context};

/// How long the person has to sign in in the browser.
const SIGN_IN_WAIT: Duration = Duration::from_secs(300);

fn failed(message: impl Into<String>) -> CliError {
    CliError::SignIn(message.into())
}

fn random() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

async fn json(answer: Result<reqwest::Response, reqwest::Error>, what: &str) -> Result<Value, CliError> {
    let answer = answer.map_err(|e| failed(format!("{what}: {e}")))?;
    let status = answer.status();
    let body = answer.bytes().await.map_err(|e| failed(format!("{what}: {e}")))?;
    if !status.is_success() {
        return Err(failed(format!("{what} answered {status}: {}", String::from_utf8_lossy(&body))));
    }
    serde_json::from_slice(&body).map_err(|e| failed(format!("{what} is not JSON: {e}")))
}

/// Waits for the provider's redirect on `listener`; returns its query parameters.
async fn redirect(listener: tokio::net::TcpListener) -> Result<Vec<(String, String)>, CliError> {
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|e| failed(format!("the sign-in redirect: {e}")))?;
        let mut request = vec![0u8; 16 * 1024];
        let n = stream.read(&mut request).await.unwrap_or(0);
        let line = String::from_utf8_lossy(&request[..n]).lines().next().unwrap_or_default().to_string();
        let target = line.split_whitespace().nth(1).unwrap_or_default();
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
            continue;
        };
        let url = reqwest::Url::parse(&format!("http://127.0.0.1/?{query}")).map_err(|e| failed(e.to_string()))?;
        let body =
            "<!doctype html><title>Convoy</title><p>Signed in: you may close this window and return to the terminal.";
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        return Ok(url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect());
    }
}

/// Signs in through the hub `context` names (its CA; no certificate needed) and writes the CLI
/// config `out` for the certificate the hub signs. `open` opens the browser; the address is
/// printed on stderr either way.
pub async fn login(context: &Context, out: &Path, open: bool) -> Result<Written, CliError> {
    let mut hub = RegistrationServiceClient::new(context.connect_anonymous().await?);
    let config = hub.sign_in_config(SignInConfigRequest {}).await?.into_inner();
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| failed(e.to_string()))?;
    let issuer = config.issuer.trim_end_matches('/');
    let discovery =
        json(http.get(format!("{issuer}/.well-known/openid-configuration")).send().await, "the provider's discovery")
            .await?;
    let endpoint = |name: &str| {
        discovery[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| failed(format!("the provider {issuer} names no {name}")))
    };
    let (authorize, token) = (endpoint("authorization_endpoint")?, endpoint("token_endpoint")?);

    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| failed(format!("a loopback port: {e}")))?;
    let port = listener.local_addr().map_err(|e| failed(e.to_string()))?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let (verifier, state, nonce) = (random(), random(), random());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = reqwest::Url::parse(&authorize).map_err(|e| failed(format!("{authorize}: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "openid email groups")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    eprintln!("Sign in at: {url}");
    if open {
        let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
        if let Err(e) = std::process::Command::new(opener).arg(url.as_str()).spawn() {
            eprintln!("convoy: could not open a browser ({opener}: {e}); open the address above yourself");
        }
    }
    let params = tokio::time::timeout(SIGN_IN_WAIT, redirect(listener))
        .await
        .map_err(|_| failed(format!("no sign-in within {} s", SIGN_IN_WAIT.as_secs())))??;
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some(error) = param("error") {
        return Err(failed(format!(
            "the provider refused: {error} {}",
            param("error_description").unwrap_or_default()
        )));
    }
    if param("state").as_deref() != Some(state.as_str()) {
        return Err(failed("the answer's state is not this sign-in's: refused (start `convoy login` again)"));
    }
    let code = param("code").ok_or_else(|| failed("the provider's answer holds no code"))?;
    let mut form = reqwest::Url::parse("http://127.0.0.1/").expect("a static URL");
    form.query_pairs_mut()
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("client_id", &config.client_id)
        .append_pair("code_verifier", &verifier);
    let exchanged = http
        .post(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.query().unwrap_or_default().to_string())
        .send()
        .await;
    let tokens = json(exchanged, "the provider's token endpoint").await?;
    let id_token = tokens["id_token"].as_str().ok_or_else(|| failed("the provider returned no ID token"))?;

    let csr = convoy_shared::enrollment::generate_csr("sign-in").map_err(|e| failed(e.to_string()))?;
    let request = SignInRequest { id_token: id_token.to_string(), nonce, csr_pem: csr.cert_pem };
    let signed = hub.sign_in(request).await?.into_inner();
    let issued = IssueUserResponse {
        user: signed.user,
        cert_pem: signed.cert_pem,
        ca_pem: signed.ca_pem,
        not_after_unix: signed.not_after_unix,
    };
    write_config(out, context, &issued, &csr.key_pem)
}

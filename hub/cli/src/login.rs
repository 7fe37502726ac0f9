//! `convoy login`: single sign-on through the hub's OpenID provider, for a short-lived CLI
//! certificate of the person and their groups.
//!
//! Decisions:
//! - The hub names the provider and the client id (`SignInConfig`); the provider's endpoints
//!   come from its discovery document.
//! - The authorization-code flow with PKCE (S256), a fresh random state and nonce per sign-in,
//!   and a redirect to a listener on 127.0.0.1 that takes one request (RFC 8252); an answer
//!   whose state is not ours is refused ([`convoy_web::oidc`]). With `--device`, the device
//!   flow instead: a code to type in any browser, for machines without one.
//! - The ID token goes to the hub with the nonce and a certificate signing request: the key is
//!   made here and never leaves this machine; the hub checks the token and signs.

use std::path::Path;
use std::time::Duration;

use convoy_shared::proto::registration_service_client::RegistrationServiceClient;
use convoy_shared::proto::{IssueUserResponse, SignInConfigRequest, SignInRequest};
use convoy_web::oidc::{ClientId, Provider};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::users::{Written, write_config};
use crate::{CliError, Context};

/// How long the person has to sign in in the browser.
const SIGN_IN_WAIT: Duration = Duration::from_secs(300);

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::SignIn(e.to_string())
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
        let url = reqwest::Url::parse(&format!("http://127.0.0.1/?{query}")).map_err(failed)?;
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

/// How `convoy login` reaches the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// A browser on this machine, coming back to a loopback port; `open` opens it.
    Browser { open: bool },
    /// A code to type on any device (RFC 8628), for machines without a browser.
    Device,
}

/// Signs in through the hub `context` names (its CA; no certificate needed) and writes the CLI
/// config `out` for the certificate the hub signs. The sign-in address is printed on stderr.
pub async fn login(context: &Context, out: &Path, flow: Flow) -> Result<Written, CliError> {
    let mut hub = RegistrationServiceClient::new(context.connect_anonymous().await?);
    let config = hub.sign_in_config(SignInConfigRequest {}).await?.into_inner();
    let http = convoy_web::oidc::http_client();
    let provider = Provider::discover(&http, &config.issuer).await.map_err(failed)?;
    let client = ClientId { id: config.client_id, secret: None };
    let (id_token, nonce, device_flow) = match flow {
        Flow::Browser { open } => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| failed(format!("a loopback port: {e}")))?;
            let port = listener.local_addr().map_err(failed)?.port();
            let redirect_uri = format!("http://127.0.0.1:{port}/callback");
            let sign_in = provider.authorize(&client, &redirect_uri).map_err(failed)?;
            eprintln!("Sign in at: {}", sign_in.url);
            if open {
                let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
                if let Err(e) = std::process::Command::new(opener).arg(sign_in.url.as_str()).spawn() {
                    eprintln!("convoy: could not open a browser ({opener}: {e}); open the address above yourself");
                }
            }
            let params = tokio::time::timeout(SIGN_IN_WAIT, redirect(listener))
                .await
                .map_err(|_| failed(format!("no sign-in within {} s", SIGN_IN_WAIT.as_secs())))??;
            let code = Provider::code(&params, &sign_in.state).map_err(failed)?;
            let id_token =
                provider.exchange(&http, &client, &code, &redirect_uri, &sign_in.verifier).await.map_err(failed)?;
            (id_token, sign_in.nonce, false)
        }
        Flow::Device => {
            let device = provider.device(&http, &client).await.map_err(failed)?;
            match &device.verification_uri_complete {
                Some(complete) => eprintln!(
                    "Sign in at: {complete}\n(or at {} with the code {})",
                    device.verification_uri, device.user_code
                ),
                None => eprintln!("Sign in at: {} with the code {}", device.verification_uri, device.user_code),
            }
            (provider.poll(&http, &client, &device).await.map_err(failed)?, device.nonce, true)
        }
    };

    let csr = convoy_shared::enrollment::generate_csr("sign-in").map_err(failed)?;
    let request = SignInRequest { id_token, nonce, csr_pem: csr.cert_pem, device_flow };
    let signed = hub.sign_in(request).await?.into_inner();
    let issued = IssueUserResponse {
        user: signed.user,
        cert_pem: signed.cert_pem,
        ca_pem: signed.ca_pem,
        not_after_unix: signed.not_after_unix,
    };
    write_config(out, context, &issued, &csr.key_pem)
}

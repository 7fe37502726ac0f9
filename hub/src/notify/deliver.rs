//! How a notice or a commit status reaches the outside: the HTTP request for each kind of
//! receiver (a signed generic webhook, Slack, Microsoft Teams) and each forge's status API
//! (GitHub, GitLab, Gitea/Forgejo), built by pure functions; [`send`] sends one.
//!
//! Decisions:
//! - A webhook body is the notice's JSON; with a key it carries `X-Convoy-Timestamp` (Unix
//!   seconds) and `X-Convoy-Signature: sha256=HEX(HMAC-SHA256(key, "TIMESTAMP.BODY"))`, so a
//!   receiver can check it and refuse old timestamps (replays).
//! - Slack and Teams get a readable message: what happened, where, and a link.
//! - A forge gets one status per environment and commit, context `convoy/<env>`; descriptions
//!   are cut to the 140 characters GitHub takes.
//! - Secrets are files of the secrets directory, read at each use (a rotated file needs no
//!   restart); a missing one is an error naming the file.
//! - Any 2xx answer is delivered (and GitLab's refusal to set the state a status already has);
//!   anything else, or no answer in 10 s, is a failure to retry.

use std::path::PathBuf;
use std::time::Duration;

use convoy_render::notifications::{CommitStatusSpec, Provider, Receiver, ReceiverKind};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::notify::observer::{CommitStatus, Notice, StatusState};

/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error(
        "the secret file {path} cannot be read ({message}): create it in the hub's --secrets-dir (the hub chart mounts a Secret there)"
    )]
    Secret { path: PathBuf, message: String },
    #[error("receiver '{0}' is not in spec.notifications of convoy.yaml (any more)")]
    UnknownReceiver(String),
    #[error("spec.commitStatus is not set in convoy.yaml (any more)")]
    NoForge,
    #[error("{url} answered HTTP {status}: {body}")]
    Refused { url: String, status: u16, body: String },
    #[error("{url} cannot be reached: {message}")]
    Unreachable { url: String, message: String },
    #[error("the entry cannot be read: {0}")]
    Payload(String),
}

impl DeliveryError {
    /// Whether the answer says the forge already has this status: GitLab refuses to set a
    /// commit status to the state it is in with 400 "Cannot transition status via :run from
    /// :running" (a restarted hub posts each environment's status again).
    pub fn already_there(&self) -> bool {
        matches!(self, DeliveryError::Refused { status: 400, body, .. } if body.contains("Cannot transition status"))
    }

    /// Whether trying again cannot help: the receiver refused the request itself (4xx other
    /// than 408 and 429), as opposed to failing or being away.
    pub fn refused_for_good(&self) -> bool {
        matches!(self, DeliveryError::Refused { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

/// One HTTP POST to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The hub's secrets directory (`--secrets-dir`).
#[derive(Debug, Clone)]
pub struct Secrets {
    pub dir: PathBuf,
}

impl Secrets {
    /// The content of secret file `name`, without surrounding whitespace.
    pub fn read(&self, name: &str) -> Result<String, DeliveryError> {
        let path = self.dir.join(name);
        std::fs::read_to_string(&path)
            .map(|text| text.trim().to_string())
            .map_err(|e| DeliveryError::Secret { path, message: e.to_string() })
    }
}

/// The request telling `receiver` about `notice`, at Unix time `now_s`.
pub fn to_receiver(
    receiver: &Receiver,
    secrets: &Secrets,
    notice: &Notice,
    now_s: i64,
) -> Result<Request, DeliveryError> {
    let url = match receiver.url() {
        Ok(url) => url.to_string(),
        Err(file) => secrets.read(file)?,
    };
    let secret = match receiver.webhook.as_ref().and_then(|w| w.secret_ref.as_deref()) {
        Some(file) => Some(secrets.read(file)?),
        None => None,
    };
    Ok(match receiver.kind() {
        ReceiverKind::Webhook => webhook(url, secret.as_deref().map(str::as_bytes), notice, now_s),
        ReceiverKind::Slack => json_post(url, &slack(notice), Vec::new()),
        ReceiverKind::Msteams => json_post(url, &msteams(notice), Vec::new()),
    })
}

/// A signed generic webhook request.
pub fn webhook(url: String, key: Option<&[u8]>, notice: &Notice, now_s: i64) -> Request {
    let body = serde_json::to_vec(notice).expect("a notice is JSON");
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("x-convoy-event".to_string(), notice.kind.clone()),
        ("x-convoy-delivery".to_string(), notice.id.clone()),
    ];
    if let Some(key) = key {
        headers.push(("x-convoy-timestamp".into(), now_s.to_string()));
        headers.push(("x-convoy-signature".into(), format!("sha256={}", sign(key, now_s, &body))));
    }
    Request { url, headers, body }
}

/// HEX(HMAC-SHA256(key, "TIMESTAMP.BODY")).
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn json_post(url: String, body: &serde_json::Value, mut headers: Vec<(String, String)>) -> Request {
    headers.insert(0, ("content-type".into(), "application/json".into()));
    Request { url, headers, body: serde_json::to_vec(body).expect("JSON") }
}

/// The headline of a notice: type and environment.
fn headline(notice: &Notice) -> String {
    match &notice.app {
        Some(app) => format!("Convoy {} in {} ({app})", notice.kind, notice.environment),
        None => format!("Convoy {} in {}", notice.kind, notice.environment),
    }
}

/// A Slack incoming-webhook message (mrkdwn).
pub fn slack(notice: &Notice) -> serde_json::Value {
    let mut text = format!("*{}*\n{}", headline(notice), notice.message);
    if !notice.link.is_empty() {
        text.push_str(&format!("\n<{}|Open in Convoy>", notice.link));
    }
    json!({"text": text})
}

/// A Microsoft Teams message: an Adaptive Card, as Teams' workflow webhooks take it.
pub fn msteams(notice: &Notice) -> serde_json::Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": headline(notice), "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "TextBlock", "text": notice.message, "wrap": true}),
    ];
    body.push(json!({"type": "TextBlock", "text": notice.time, "isSubtle": true, "spacing": "None"}));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if !notice.link.is_empty() {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open in Convoy", "url": notice.link}]);
    }
    json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]})
}

/// The request posting `status` to the forge `spec` names, with `token`.
pub fn to_forge(spec: &CommitStatusSpec, token: &str, status: &CommitStatus) -> Request {
    let base = spec.api_base();
    let context = format!("convoy/{}", status.environment);
    let description: String = status.description.chars().take(140).collect();
    let state = |github: bool| match status.state {
        StatusState::Pending => "pending",
        StatusState::Success => "success",
        StatusState::Failure if github => "failure",
        StatusState::Failure => "failed",
    };
    let mut body = json!({"description": description, "context": context});
    if !status.link.is_empty() {
        body["target_url"] = status.link.clone().into();
    }
    match spec.provider {
        Provider::Github => {
            body["state"] = state(true).into();
            let headers = vec![
                ("authorization".into(), format!("Bearer {token}")),
                ("accept".into(), "application/vnd.github+json".into()),
                ("x-github-api-version".into(), "2022-11-28".into()),
            ];
            json_post(format!("{base}/repos/{}/statuses/{}", spec.repository, status.sha), &body, headers)
        }
        Provider::Gitea => {
            body["state"] = state(true).into();
            let headers = vec![("authorization".into(), format!("token {token}"))];
            json_post(format!("{base}/repos/{}/statuses/{}", spec.repository, status.sha), &body, headers)
        }
        Provider::Gitlab => {
            body["state"] = state(false).into();
            body["name"] = body["context"].take();
            body.as_object_mut().expect("an object").remove("context");
            let project = spec.repository.replace('/', "%2F");
            let headers = vec![("private-token".into(), token.to_string())];
            json_post(format!("{base}/projects/{project}/statuses/{}", status.sha), &body, headers)
        }
    }
}

/// Sends `request`; a 2xx answer is delivered.
pub async fn send(http: &reqwest::Client, request: Request) -> Result<(), DeliveryError> {
    let mut post = http.post(&request.url).timeout(TIMEOUT).body(request.body);
    for (name, value) in &request.headers {
        post = post.header(name, value);
    }
    let url = redact_url(&request.url);
    let answer = post
        .header("user-agent", concat!("convoy-hub/", env!("CARGO_PKG_VERSION")))
        .send()
        .await
        .map_err(|e| DeliveryError::Unreachable { url: url.clone(), message: cause(&e) })?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let body = answer.text().await.unwrap_or_default();
    Err(DeliveryError::Refused { url, status: status.as_u16(), body: body.chars().take(200).collect() })
}

/// A URL as messages show it: scheme, host and path, never a query (chat webhook URLs carry
/// their credential in the path, so only the host is kept for those).
fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    match without_query.split_once("://") {
        Some((scheme, rest)) if rest.contains("hooks.") || rest.contains("webhook.office") => {
            let host = rest.split('/').next().unwrap_or(rest);
            format!("{scheme}://{host}/…")
        }
        _ => without_query.to_string(),
    }
}

fn cause(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::observer::Revisions;

    fn mk_notice() -> Notice {
        Notice {
            id: "r-1-1".into(),
            kind: "rollout.paused".into(),
            time: "2026-12-07T10:00:00Z".into(),
            environment: "prod".into(),
            clusters: vec![],
            cluster_count: 0,
            app: None,
            revisions: Revisions { from: "a".into(), to: "b".into() },
            message: "prod: rollout of b paused".into(),
            link: "https://ui.example/rollouts".into(),
        }
    }

    fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_webhook_is_signed_over_timestamp_and_body() {
        let r = webhook("https://hooks.example/convoy".into(), Some(b"k3y"), &mk_notice(), 1_700_000_000);
        assert_eq!(header(&r, "x-convoy-timestamp"), Some("1700000000"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k3y").unwrap();
        mac.update(format!("1700000000.{}", String::from_utf8(r.body.clone()).unwrap()).as_bytes());
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(header(&r, "x-convoy-signature"), Some(want.as_str()));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "rollout.paused");
        assert_eq!(body["revisions"]["to"], "b");
        let unsigned = webhook("https://x".into(), None, &mk_notice(), 1);
        assert_eq!(header(&unsigned, "x-convoy-signature"), None);
    }

    #[test]
    fn chat_messages_read_as_sentences_with_a_link() {
        let s = slack(&mk_notice());
        assert_eq!(
            s["text"],
            "*Convoy rollout.paused in prod*\nprod: rollout of b paused\n<https://ui.example/rollouts|Open in Convoy>"
        );
        let t = msteams(&mk_notice());
        let card = &t["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][1]["text"], "prod: rollout of b paused");
        assert_eq!(card["actions"][0]["url"], "https://ui.example/rollouts");
    }

    #[test]
    fn each_forge_gets_its_own_request_shape() {
        let status = CommitStatus {
            environment: "prod".into(),
            sha: "abc123".into(),
            state: StatusState::Failure,
            description: "x".repeat(200),
            link: "https://ui/rollouts".into(),
        };
        let spec = |yaml: &str| serde_saphyr::from_str::<CommitStatusSpec>(yaml).unwrap();
        let gh = to_forge(&spec("{provider: github, repository: org/fleet, tokenRef: t}"), "tok", &status);
        assert_eq!(gh.url, "https://api.github.com/repos/org/fleet/statuses/abc123");
        assert_eq!(header(&gh, "authorization"), Some("Bearer tok"));
        let body: serde_json::Value = serde_json::from_slice(&gh.body).unwrap();
        assert_eq!((body["state"].as_str(), body["context"].as_str()), (Some("failure"), Some("convoy/prod")));
        assert_eq!(body["description"].as_str().unwrap().len(), 140);
        let gl = to_forge(&spec("{provider: gitlab, repository: grp/sub/fleet, tokenRef: t}"), "tok", &status);
        assert_eq!(gl.url, "https://gitlab.com/api/v4/projects/grp%2Fsub%2Ffleet/statuses/abc123");
        let body: serde_json::Value = serde_json::from_slice(&gl.body).unwrap();
        assert_eq!((body["state"].as_str(), body["name"].as_str()), (Some("failed"), Some("convoy/prod")));
        assert!(body.get("context").is_none());
        assert_eq!(header(&gl, "private-token"), Some("tok"));
        let gt = to_forge(
            &spec("{provider: gitea, repository: org/fleet, tokenRef: t, apiURL: 'https://git.example/api/v1'}"),
            "tok",
            &status,
        );
        assert_eq!(gt.url, "https://git.example/api/v1/repos/org/fleet/statuses/abc123");
        assert_eq!(header(&gt, "authorization"), Some("token tok"));
    }

    #[test]
    fn a_missing_secret_names_its_file_and_urls_in_messages_hide_credentials() {
        let secrets = Secrets { dir: PathBuf::from("/nonexistent/secrets") };
        let err = secrets.read("slack-url").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/secrets/slack-url") && err.contains("--secrets-dir"), "{err}");
        assert_eq!(redact_url("https://hooks.slack.com/services/T0/B0/XYZ"), "https://hooks.slack.com/…");
        assert_eq!(
            redact_url("https://api.github.com/repos/a/b/statuses/c?x=1"),
            "https://api.github.com/repos/a/b/statuses/c"
        );
    }
}

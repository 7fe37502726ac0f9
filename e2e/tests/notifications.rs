//! Notifications and commit statuses from a real `convoy-hub` process to a local HTTP server
//! standing in for a webhook receiver and a forge: every webhook is signed over its timestamp
//! and body, events reach the receiver in order although it answers 500 at first (retried),
//! none is delivered twice across a hub killed with SIGKILL and restarted on the same data, and
//! the forge gets one status per environment and commit in GitHub's request shape.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use convoy_e2e::fleet_repo::{FleetRepo, standard_fleet};
use convoy_e2e::harness::{HubProcess, TestCa, eventually};
use convoy_shared::identity::Role;
use convoy_shared::proto::{NotificationsRequest, TestNotificationRequest};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const KEY: &str = "s3cr3t-hmac-key";
const TOKEN: &str = "ghp_forge_token";

/// What the stand-in received.
#[derive(Default)]
struct Received {
    /// Webhook requests: headers and body, in arrival order (refused ones too).
    hooks: Vec<(HeaderMap, Vec<u8>, StatusCode)>,
    /// Forge requests: sha, authorization header, body.
    statuses: Vec<(String, String, Value)>,
    /// Webhook requests still to refuse with 500.
    refuse: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn hook(State(state): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let mut state = state.lock().unwrap();
    let status = if state.refuse > 0 {
        state.refuse -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    state.hooks.push((headers, body.to_vec(), status));
    status
}

async fn github_status(
    State(state): State<Shared>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    assert_eq!((owner.as_str(), repo.as_str()), ("org", "fleet"));
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body: Value = serde_json::from_slice(&body).expect("a JSON status");
    // GitHub's documented answer: 201 with the status created.
    let answer = serde_json::json!({"id": 1, "state": body["state"], "context": body["context"]});
    state.lock().unwrap().statuses.push((sha, auth, body));
    (StatusCode::CREATED, axum::Json(answer))
}

/// Starts the stand-in; returns its base URL.
async fn stand_in(state: Shared) -> String {
    let router = axum::Router::new()
        .route("/hook", post(hook))
        .route("/api/repos/{owner}/{repo}/statuses/{sha}", post(github_status))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

fn notifications_yaml(base: &str) -> String {
    format!(
        "  notifications:
    receivers:
    - {{name: ops, webhook: {{url: '{base}/hook', secretRef: ops-hmac}}}}
    routes:
    - receiver: ops
      events: [rollout.started, rollout.completed, promotion.ready]
      environments: [dev]
  commitStatus: {{provider: github, repository: org/fleet, tokenRef: forge-token, apiURL: '{base}/api'}}
"
    )
}

/// Delivered webhooks as (id, type, revision it is about).
fn delivered(state: &Shared) -> Vec<(String, String, String)> {
    let state = state.lock().unwrap();
    state
        .hooks
        .iter()
        .filter(|(_, _, status)| status.is_success())
        .map(|(_, body, _)| {
            let event: Value = serde_json::from_slice(body).unwrap();
            let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (field(&event["id"]), field(&event["type"]), field(&event["revisions"]["to"]))
        })
        .collect()
}

fn commit_on_dev(repo: &FleetRepo, greeting: &str) -> String {
    repo.write(
        "apps/web/base/config.yaml",
        &convoy_e2e::fleet_repo::configmap_yaml("web-config", &[("greeting", greeting)]),
    );
    repo.commit(&format!("web says {greeting}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_in_order_and_never_repeated_across_a_restart_and_the_forge_gets_statuses() {
    let state: Shared = Arc::default();
    let base = stand_in(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(dir.path());
    repo.checkout("main");
    let fleet = std::fs::read_to_string(dir.path().join("convoy.yaml")).unwrap();
    repo.write("convoy.yaml", &format!("{fleet}{}", notifications_yaml(&base)));
    repo.commit("notify ops of dev, statuses to the forge");
    repo.checkout("dev");
    repo.merge("main");

    let data = tempfile::tempdir().unwrap();
    let secrets = data.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("ops-hmac"), format!("{KEY}\n")).unwrap();
    std::fs::write(secrets.join("forge-token"), TOKEN).unwrap();
    let ca = TestCa::new();
    let serve = ["--repo", &repo.url(), "--data", data.path().to_str().unwrap(), "--poll-seconds", "1"];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let address = hub.address.clone();

    // The first look is the baseline: each environment's status, pending (no agent applied).
    let dev_head = repo.head();
    eventually("a status for each environment's head", || async {
        let s = state.lock().unwrap();
        (s.statuses.len() >= 3 && s.statuses.iter().any(|(sha, _, b)| *sha == dev_head && b["context"] == "convoy/dev"))
            .then_some(())
    })
    .await;
    {
        let s = state.lock().unwrap();
        let (_, auth, body) = s.statuses.iter().find(|(sha, _, _)| *sha == dev_head).unwrap();
        assert_eq!(auth, &format!("Bearer {TOKEN}"));
        assert_eq!(body["state"], "pending");
        assert_eq!(body["description"], "0/1 clusters applied and healthy");
        let contexts: std::collections::BTreeSet<&str> =
            s.statuses.iter().filter_map(|(_, _, b)| b["context"].as_str()).collect();
        assert_eq!(contexts, ["convoy/dev", "convoy/prod", "convoy/stage"].into(), "one context per environment");
        assert!(s.hooks.is_empty(), "the baseline tells the receiver nothing");
    }

    // Two commits while the receiver fails: both are retried and arrive in order.
    state.lock().unwrap().refuse = 2;
    let c2 = commit_on_dev(&repo, "two");
    eventually("c2 seen", || async { state.lock().unwrap().hooks.first().map(|_| ()) }).await;
    let c3 = commit_on_dev(&repo, "three");
    eventually("both delivered", || async { (delivered(&state).len() >= 2).then_some(()) }).await;
    let got = delivered(&state);
    assert_eq!(
        got.iter().map(|(_, kind, to)| (kind.as_str(), to.as_str())).collect::<Vec<_>>(),
        [("rollout.started", c2.as_str()), ("rollout.started", c3.as_str())],
        "in order, after the 500s"
    );
    {
        let s = state.lock().unwrap();
        assert!(s.hooks.iter().filter(|(_, _, st)| !st.is_success()).count() == 2, "two refused attempts");
        for (headers, body, _) in &s.hooks {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let timestamp = header("x-convoy-timestamp");
            let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
            mac.update(format!("{timestamp}.").as_bytes());
            mac.update(body);
            let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(header("x-convoy-signature"), want, "signed over timestamp.body");
            let age = convoy_shared::clock::unix_ms() / 1000 - timestamp.parse::<i64>().unwrap();
            assert!((0..600).contains(&age), "a fresh timestamp");
        }
    }

    // The CLI's view of the outbox: delivered, nothing pending.
    let admin = ca.cli(&address, Role::Admin).await;
    eventually("the outbox settled", || {
        let mut admin = admin.clone();
        async move {
            let answer = admin.notifications(NotificationsRequest { limit: 100 }).await.ok()?.into_inner();
            let ops = answer.receivers.iter().find(|r| r.name == "ops")?;
            (ops.pending == 0 && answer.entries.iter().all(|e| e.state == "delivered")).then_some(())
        }
    })
    .await;

    let statuses_before = state.lock().unwrap().statuses.len();
    hub.kill();
    let restarted = HubProcess::start_with(&ca.certs.0, &address, "info", &serve);
    // The restarted hub's first look re-posts each environment's status (a forge may have
    // missed one); after it, a new commit is news.
    eventually("the restarted hub looked", || async {
        (state.lock().unwrap().statuses.len() >= statuses_before + 3).then_some(())
    })
    .await;
    let c4 = commit_on_dev(&repo, "four");
    eventually("c4 delivered", || async { delivered(&state).iter().any(|(_, _, to)| *to == c4).then_some(()) }).await;
    let mut admin = ca.cli(&address, Role::Admin).await;
    let tested =
        admin.test_notification(TestNotificationRequest { receiver: "ops".into() }).await.unwrap().into_inner();
    assert!(tested.delivered, "{tested:?}");
    let unknown = admin.test_notification(TestNotificationRequest { receiver: "pager".into() }).await.unwrap_err();
    assert!(unknown.message().contains("receiver 'pager' is not in spec.notifications"), "{unknown:?}");
    let all = delivered(&state);
    let ids: std::collections::BTreeSet<&str> = all.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "no event delivered twice across the restart: {all:?}");
    let about: Vec<&str> =
        all.iter().filter(|(_, kind, _)| kind == "rollout.started").map(|(_, _, to)| to.as_str()).collect();
    assert_eq!(about, [c2.as_str(), c3.as_str(), c4.as_str()]);
    drop(restarted);
}

/// A forge stand-in that checks each request against the forge's documented API (path,
/// authentication header, body fields and their allowed values) and answers as the forge does:
/// 201 with the created status. Like GitLab, it refuses to set a status to the state it has.
async fn forge(kind: &'static str, seen: Arc<Mutex<Vec<Value>>>) -> String {
    let handler = move |Path(parts): Path<Vec<(String, String)>>, headers: HeaderMap, body: axum::body::Bytes| {
        let seen = seen.clone();
        async move {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let part = |name: &str| parts.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
            let body: Value = match serde_json::from_slice(&body) {
                Ok(body) => body,
                Err(_) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(serde_json::json!({"message": "Problems parsing JSON"})),
                    );
                }
            };
            let (auth_ok, states, context_field): (bool, &[&str], &str) = match kind {
                "github" => (
                    header("authorization") == "Bearer tok" && header("accept") == "application/vnd.github+json",
                    &["error", "failure", "pending", "success"],
                    "context",
                ),
                "gitlab" => (
                    header("private-token") == "tok" && part("id") == "grp/sub/fleet",
                    &["pending", "running", "success", "failed", "canceled", "skipped"],
                    "name",
                ),
                _ => (
                    header("authorization") == "token tok",
                    &["pending", "success", "error", "failure", "warning"],
                    "context",
                ),
            };
            if !auth_ok {
                return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"message": "Bad credentials"})));
            }
            let state = body["state"].as_str().unwrap_or_default();
            let fine = states.contains(&state)
                && body[context_field].as_str().is_some_and(|c| c.starts_with("convoy/"))
                && body["description"].as_str().is_some_and(|d| d.chars().count() <= 140)
                && part("sha").len() == 40;
            if !fine {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(serde_json::json!({"message": "Validation Failed"})),
                );
            }
            let mut seen = seen.lock().unwrap();
            if kind == "gitlab" && seen.last().is_some_and(|last: &Value| last["state"] == state) {
                let message = format!("Cannot transition status via :{state} from :{state}");
                return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"message": message})));
            }
            seen.push(body.clone());
            (StatusCode::CREATED, axum::Json(serde_json::json!({"id": seen.len(), "state": state, "sha": part("sha")})))
        }
    };
    let path = match kind {
        "github" => "/repos/{owner}/{repo}/statuses/{sha}",
        "gitlab" => "/api/v4/projects/{id}/statuses/{sha}",
        _ => "/api/v1/repos/{owner}/{repo}/statuses/{sha}",
    };
    let router = axum::Router::new().route(path, post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    match kind {
        "github" => format!("http://{address}"),
        "gitlab" => format!("http://{address}/api/v4"),
        _ => format!("http://{address}/api/v1"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_statuses_match_each_forges_documented_api() {
    use convoy_hub::notify::deliver::{send, to_forge};
    use convoy_hub::notify::observer::{CommitStatus, StatusState};
    use convoy_hub::notify::outbox::settle;
    use convoy_hub::store::{Delivery, OutboxEntry};

    convoy_shared::install_crypto_provider();
    let http = reqwest::Client::new();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    for (kind, repository, failed) in
        [("github", "org/fleet", "failure"), ("gitlab", "grp/sub/fleet", "failed"), ("gitea", "org/fleet", "failure")]
    {
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let api = forge(kind, seen.clone()).await;
        let spec = serde_saphyr::from_str(&format!(
            "{{provider: {kind}, repository: {repository}, tokenRef: t, apiURL: '{api}'}}"
        ))
        .unwrap();
        let status = |state, description: &str| CommitStatus {
            environment: "prod".into(),
            sha: sha.into(),
            state,
            description: description.into(),
            link: "https://convoy.example/rollouts".into(),
        };
        for s in [
            status(StatusState::Pending, "3/12 clusters applied and healthy"),
            status(StatusState::Failure, &"rollout paused: degraded after taking it ".repeat(5)),
            status(StatusState::Success, "12/12 clusters applied and healthy"),
        ] {
            send(&http, to_forge(&spec, "tok", &s)).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        let states: Vec<String> =
            seen.lock().unwrap().iter().map(|b| b["state"].as_str().unwrap().to_string()).collect();
        assert_eq!(states, ["pending", failed, "success"], "{kind}");
        let bad = send(&http, to_forge(&spec, "wrong", &status(StatusState::Pending, "x"))).await.unwrap_err();
        assert!(bad.refused_for_good(), "{kind}: a bad token is refused for good: {bad}");
        let again = send(&http, to_forge(&spec, "tok", &status(StatusState::Success, "again"))).await;
        let entry = OutboxEntry {
            seq: 1,
            receiver: "commit-status".into(),
            payload: String::new(),
            created_ms: 0,
            attempts: 0,
            next_ms: 0,
            state: Delivery::Pending,
            last_error: String::new(),
        };
        assert_eq!(settle(entry, again, 1).state, Delivery::Delivered, "{kind}: the same state again is no failure");
    }
}

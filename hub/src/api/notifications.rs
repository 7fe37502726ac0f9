//! `convoy notifications`: what the fleet service answers about the outbox. Listing reads
//! convoy.yaml's receivers and the outbox's newest entries; a test puts one event in the outbox
//! and waits for its first attempt.

use std::time::Duration;

use convoy_render::notifications::ReceiverKind;
use convoy_shared::clock::unix_ms;
use convoy_shared::proto::{NotificationReceiver, NotificationsResponse, OutboxItem, TestNotificationResponse};
use tonic::Status;

use crate::notify::observer::{CommitStatus, Notice, Revisions};
use crate::state::hub::Hub;
use crate::store::{COMMIT_STATUS, Delivery, OutboxEntry};

/// How long a test waits for its first attempt (a delivery gives up after 10 s).
const TEST_WAIT: Duration = Duration::from_secs(15);

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the outbox cannot be read: {e}"))
}

/// The receivers, the forge and the newest `limit` outbox entries.
pub async fn list(hub: &Hub, limit: usize) -> Result<NotificationsResponse, Status> {
    let store = hub.store().clone();
    let entries = tokio::task::spawn_blocking(move || store.outbox_recent(limit))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    let view = hub.view();
    let mut answer = NotificationsResponse::default();
    if let Some(fleet) = &view.fleet {
        let errors: Vec<String> = [fleet.notifications.as_ref().err(), fleet.commit_status.as_ref().err()]
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        answer.error = errors.join("; ");
        if let Ok(spec) = &fleet.notifications {
            for r in &spec.receivers {
                let count = |state| entries.iter().filter(|e| e.receiver == r.name && e.state == state).count() as u32;
                answer.receivers.push(NotificationReceiver {
                    name: r.name.clone(),
                    kind: match r.kind() {
                        ReceiverKind::Webhook => "webhook",
                        ReceiverKind::Slack => "slack",
                        ReceiverKind::Msteams => "msteams",
                    }
                    .into(),
                    routes: spec.routes.iter().filter(|route| route.receiver == r.name).count() as u32,
                    pending: count(Delivery::Pending),
                    dead: count(Delivery::Dead),
                });
            }
        }
        if let Ok(Some(forge)) = &fleet.commit_status {
            answer.commit_status = format!("{:?} {}", forge.provider, forge.repository).to_lowercase();
        }
    }
    answer.entries = entries.iter().map(item).collect();
    Ok(answer)
}

/// An outbox entry as the CLI shows it.
fn item(e: &OutboxEntry) -> OutboxItem {
    let (kind, environment, message) = if e.receiver == COMMIT_STATUS {
        match serde_json::from_str::<CommitStatus>(&e.payload) {
            Ok(s) => (format!("{:?}", s.state).to_lowercase(), s.environment, format!("{} {}", s.sha, s.description)),
            Err(_) => Default::default(),
        }
    } else {
        match serde_json::from_str::<Notice>(&e.payload) {
            Ok(n) => (n.kind, n.environment, n.message),
            Err(_) => Default::default(),
        }
    };
    OutboxItem {
        seq: e.seq,
        receiver: e.receiver.clone(),
        r#type: kind,
        environment,
        message,
        state: e.state.as_str().into(),
        attempts: e.attempts,
        created_unix_ms: e.created_ms,
        next_unix_ms: e.next_ms,
        last_error: e.last_error.clone(),
    }
}

/// Puts a test event for `receiver` in the outbox; answers after its first attempt.
pub async fn test(hub: &Hub, receiver: &str, user: &str) -> Result<TestNotificationResponse, Status> {
    let view = hub.view();
    let known = view
        .fleet
        .as_ref()
        .and_then(|f| f.notifications.as_ref().ok())
        .is_some_and(|spec| spec.receivers.iter().any(|r| r.name == receiver));
    if !known {
        return Err(Status::not_found(format!(
            "receiver '{receiver}' is not in spec.notifications of convoy.yaml on the fleet branch: `convoy notifications` lists them"
        )));
    }
    let now = unix_ms();
    let id = format!("test-{now}-{:08x}", rand::random::<u32>());
    let notice = Notice {
        id: id.clone(),
        kind: "test".into(),
        time: convoy_shared::clock::rfc3339(now),
        environment: String::new(),
        clusters: Vec::new(),
        cluster_count: 0,
        app: None,
        revisions: Revisions::default(),
        message: format!("A test event from Convoy, sent by {user} with `convoy notifications test {receiver}`"),
        link: String::new(),
    };
    let entry = OutboxEntry {
        seq: 0,
        receiver: receiver.to_string(),
        payload: serde_json::to_string(&notice).expect("JSON"),
        created_ms: now,
        attempts: 0,
        next_ms: now,
        state: Delivery::Pending,
        last_error: String::new(),
    };
    let store = hub.store().clone();
    tokio::task::spawn_blocking(move || store.outbox_push(&[entry]))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    let deadline = tokio::time::Instant::now() + TEST_WAIT;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let store = hub.store().clone();
        let recent = tokio::task::spawn_blocking(move || store.outbox_recent(200))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let Some(entry) = recent.into_iter().find(|e| e.payload.contains(&id)) else { continue };
        if entry.attempts > 0 {
            let delivered = entry.state == Delivery::Delivered;
            return Ok(TestNotificationResponse { delivered, error: entry.last_error, seq: entry.seq });
        }
    }
    Err(Status::deadline_exceeded(format!(
        "the test event for '{receiver}' was not tried within {} s: is another entry for it waiting on retries (`convoy notifications`)?",
        TEST_WAIT.as_secs()
    )))
}

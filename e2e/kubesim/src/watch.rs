//! Watch streams: newline-delimited JSON events from a resourceVersion (replayed from the
//! retained window, or 410 Gone as an ERROR event), bookmarks, streaming lists
//! (`sendInitialEvents`), timeouts, and drops on fault injection.

use super::cluster::{ClusterState, EventType, ListOptions, WatchEvent};
use super::resources::ResourceType;
use super::status_error::{ApiError, Result};
use super::table;
use axum::body::{Body, Bytes};
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Parameters of a watch request.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    /// `resourceVersion` as sent ("" when absent).
    pub resource_version: String,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// Render objects as Tables (kubectl get -w), with this includeObject policy.
    pub table: Option<String>,
}

struct Filter {
    rt: Arc<ResourceType>,
    ns: Option<String>,
    opts: ListOptions,
}

impl Filter {
    fn matches_obj(&self, o: &Value) -> bool {
        let ns_ok =
            self.ns.as_deref().is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns));
        ns_ok && self.opts.labels.matches(o) && self.opts.fields.matches(o)
    }

    /// The event type this watcher sees, honouring selector transitions.
    fn view(&self, ev: &WatchEvent) -> Option<EventType> {
        if ev.group != self.rt.group || ev.plural != self.rt.plural {
            return None;
        }
        let now = self.matches_obj(&ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.matches_obj(p));
        match ev.kind {
            EventType::Deleted => before.then_some(EventType::Deleted),
            EventType::Added => now.then_some(EventType::Added),
            EventType::Modified => match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
        }
    }
}

fn line(ty: &str, object: Value) -> Bytes {
    let mut s = json!({"type": ty, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// Starts a watch; the returned body streams events until timeout, client disconnect, a dropped
/// watch fault, or cancellation.
pub fn start(
    state: Arc<ClusterState>,
    rt: Arc<ResourceType>,
    ns: Option<String>,
    opts: ListOptions,
    params: WatchParams,
    cancel: CancellationToken,
) -> Result<Body> {
    let filter = Filter { rt, ns, opts };
    let render = {
        let rt = filter.rt.clone();
        let table_mode = params.table.clone();
        move |o: &Value| match &table_mode {
            Some(include) => table::table(&rt, std::slice::from_ref(o), json!({}), include),
            None => o.clone(),
        }
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let (rx, start_rv) = {
        let inner = state.lock();
        let rx = state.subscribe_locked(&inner);
        let current = inner.rv;
        let from = match params.resource_version.as_str() {
            "" | "0" => None,
            s => Some(s.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?),
        };
        let resume = from.filter(|_| !params.send_initial_events);
        if let Some(from) = resume {
            match ClusterState::events_since(&inner, from) {
                Some(evs) => {
                    for ev in evs {
                        if let Some(kind) = filter.view(&ev) {
                            initial.push(line(kind.as_str(), render(&ev.object)));
                        }
                    }
                    (rx, current)
                }
                None => {
                    let status = ApiError::gone(format!("too old resource version: {from} ({})", inner.evicted_rv + 1))
                        .to_status();
                    let body = line("ERROR", status);
                    return Ok(Body::from(body));
                }
            }
        } else {
            for o in ClusterState::objects_of(&inner, &filter.rt, filter.ns.as_deref()) {
                if filter.matches_obj(&o) {
                    initial.push(line("ADDED", render(&o)));
                }
            }
            // kube-apiserver closes the initial events with a bookmark saying so when asked for
            // a streaming list, and for any watch from no resourceVersion that allows bookmarks.
            if params.send_initial_events || (params.bookmarks && params.resource_version.is_empty()) {
                initial.push(line("BOOKMARK", bookmark(&filter.rt, current, true)));
            }
            (rx, current)
        }
    };

    let (tx, out_rx) = mpsc::channel::<Bytes>(256);
    // kube-apiserver also bookmarks two seconds before the timeout ends a watch.
    let bookmark_every = match params.timeout {
        Some(t) if t > Duration::from_secs(2) => state.config().bookmark_interval.min(t - Duration::from_secs(2)),
        _ => state.config().bookmark_interval,
    };
    let mut drops = state.faults.watch_epoch();
    drops.borrow_and_update();
    let timeout = params.timeout.unwrap_or(Duration::from_secs(1800));
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let mut rx = rx;
        let mut last_rv = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut deadline => return,
                _ = drops.changed() => return,
                _ = ticker.tick(), if params.bookmarks => {
                    if tx.send(line("BOOKMARK", bookmark(&filter.rt, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        if let Some(kind) = filter.view(&ev)
                            && tx.send(line(kind.as_str(), render(&ev.object))).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher that fell behind is closed; the client resumes from its last
                    // resourceVersion, as after any dropped watch.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(out_rx).map(Ok::<_, std::io::Error>);
    Ok(Body::from_stream(stream))
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta})
}

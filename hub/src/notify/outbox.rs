//! The outbox's two tasks. The observing task looks at the hub every second (on the replica
//! that leads), hands what it sees to the [`Observer`], and appends what is worth telling to the
//! store's outbox, one entry per receiver a route picks (and one per commit status). The
//! delivering task runs one worker per receiver with pending entries: each sends its entries in
//! order, retrying the first until it goes through or a day has passed (a dead letter). Neither
//! ever waits on the sync loop or makes it wait: they read the published view.
//!
//! Decisions:
//! - What a route picks: every receiver of a matching route, once per notice.
//! - Settings that do not load keep the last good ones (as for access and windows).
//! - After a failure the entry waits the backoff (1 s doubling to 5 min, with jitter); after a
//!   day of failures it is dead and the next entry goes ([`settle`]). A receiver that refuses
//!   the request itself (4xx but 408 and 429: a bad URL, a wrong token) gets five tries, about
//!   half a minute, so one bad entry never holds the others back for a day.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use convoy_render::fleet::Fleet;
use convoy_render::notifications::{CommitStatusSpec, NotificationsSpec};
use convoy_shared::backoff::Backoff;
use convoy_shared::clock::unix_ms;
use convoy_shared::proto::{ClusterInfo, Health};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::notify::deliver::{self, DeliveryError, Secrets};
use crate::notify::observer::{ClusterFacts, CommitStatus, EnvFacts, Facts, Notice, Observed, Observer, TrackFacts};
use crate::state::hub::Hub;
use crate::state::view::FleetView;
use crate::store::{COMMIT_STATUS, Delivery, OutboxEntry};

/// How often the observer looks.
const LOOK: Duration = Duration::from_secs(1);
/// How long an entry is retried before it is a dead letter.
pub const DEAD_AFTER_MS: i64 = 24 * 3600 * 1000;
/// Retries: 1 s doubling to 5 min.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
/// Tries of an entry the receiver refuses outright (4xx).
const REFUSED_TRIES: u32 = 5;
/// Pending entries one read brings.
const BATCH: usize = 1000;

/// What the outbox needs from `convoy-hub serve`.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Where `secretRef`, `urlRef` and `tokenRef` files are (`--secrets-dir`).
    pub secrets_dir: PathBuf,
    /// The dashboard's URL notices link to (empty: none).
    pub dashboard_url: String,
}

/// The receivers and forge in force: the last that loaded.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub notifications: NotificationsSpec,
    pub commit_status: Option<CommitStatusSpec>,
}

impl Settings {
    /// Whether nothing is to be sent: no routes and no forge.
    fn is_off(&self) -> bool {
        self.notifications.routes.is_empty() && self.commit_status.is_none()
    }

    /// Takes what `fleet` says, where it loaded.
    fn update(&mut self, fleet: &Fleet) {
        if let Ok(n) = &fleet.notifications {
            self.notifications = n.clone();
        }
        if let Ok(c) = &fleet.commit_status {
            self.commit_status = c.clone();
        }
    }

    /// The outbox entries for what one look found.
    fn entries(&self, observed: Observed, now_ms: i64) -> Vec<OutboxEntry> {
        let mut out = Vec::new();
        for notice in &observed.notices {
            let payload = serde_json::to_string(notice).expect("a notice is JSON");
            for receiver in self.receivers_of(notice) {
                out.push(pending(receiver, payload.clone(), now_ms));
            }
        }
        if self.commit_status.is_some() {
            for status in &observed.statuses {
                out.push(pending(COMMIT_STATUS, serde_json::to_string(status).expect("JSON"), now_ms));
            }
        }
        out
    }

    /// Every receiver in force: those routes name, and the forge's.
    fn receivers(&self) -> impl Iterator<Item = String> + '_ {
        let forge = self.commit_status.as_ref().map(|_| COMMIT_STATUS.to_string());
        self.notifications.routes.iter().map(|r| r.receiver.clone()).chain(forge)
    }

    /// The receivers routes pick for `notice`, each once.
    fn receivers_of(&self, notice: &Notice) -> BTreeSet<&str> {
        let routes = self.notifications.routes.iter();
        routes
            .filter(|r| r.matches(&notice.kind, &notice.environment, notice.app.as_deref()))
            .map(|r| r.receiver.as_str())
            .collect()
    }

    /// The request delivering `entry`.
    pub fn request(
        &self,
        secrets: &Secrets,
        entry: &OutboxEntry,
        now_ms: i64,
    ) -> Result<deliver::Request, DeliveryError> {
        let payload = |e: serde_json::Error| DeliveryError::Payload(e.to_string());
        if entry.receiver == COMMIT_STATUS {
            let spec = self.commit_status.as_ref().ok_or(DeliveryError::NoForge)?;
            let status: CommitStatus = serde_json::from_str(&entry.payload).map_err(payload)?;
            return Ok(deliver::to_forge(spec, &secrets.read(&spec.token_ref)?, &status));
        }
        let receiver = self
            .notifications
            .receivers
            .iter()
            .find(|r| r.name == entry.receiver)
            .ok_or_else(|| DeliveryError::UnknownReceiver(entry.receiver.clone()))?;
        let notice: Notice = serde_json::from_str(&entry.payload).map_err(payload)?;
        deliver::to_receiver(receiver, secrets, &notice, now_ms / 1000)
    }
}

fn pending(receiver: &str, payload: String, now_ms: i64) -> OutboxEntry {
    OutboxEntry {
        seq: 0,
        receiver: receiver.to_string(),
        payload,
        created_ms: now_ms,
        attempts: 0,
        next_ms: now_ms,
        state: Delivery::Pending,
        last_error: String::new(),
    }
}

/// `entry` after an attempt at `now_ms` that ended in `result`.
pub fn settle(mut entry: OutboxEntry, result: Result<(), DeliveryError>, now_ms: i64) -> OutboxEntry {
    entry.attempts += 1;
    let result = match result {
        Err(e) if e.already_there() => Ok(()),
        other => other,
    };
    match result {
        Ok(()) => {
            entry.state = Delivery::Delivered;
            entry.last_error.clear();
        }
        Err(e) => {
            entry.last_error = e.to_string();
            if now_ms - entry.created_ms >= DEAD_AFTER_MS || (e.refused_for_good() && entry.attempts >= REFUSED_TRIES) {
                entry.state = Delivery::Dead;
            } else {
                entry.next_ms = now_ms + RETRY.delay(entry.attempts).as_millis() as i64;
            }
        }
    }
    entry
}

/// Runs the observing and delivering tasks until `shutdown`.
pub async fn run(hub: Arc<Hub>, config: NotifyConfig, shutdown: CancellationToken) {
    let (settings, watched) = watch::channel(Settings::default());
    let wake = Arc::new(Notify::new());
    let secrets = Secrets { dir: config.secrets_dir };
    let observing = observe(hub.clone(), config.dashboard_url, settings, wake.clone(), shutdown.clone());
    let delivering = deliver_all(hub, secrets, watched, wake, shutdown);
    tokio::join!(observing.instrument(tracing::info_span!("observe")), delivering);
}

/// Looks at the hub every second and appends what is worth telling to the outbox.
async fn observe(
    hub: Arc<Hub>,
    dashboard: String,
    settings: watch::Sender<Settings>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut events = hub.subscribe_events();
    let run: String = format!("{:08x}", rand::random::<u32>());
    let mut observer = Observer::new(&dashboard, &run);
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    let mut render_errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut look = tokio::time::interval(LOOK);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => {
                if let Ok(event) = event && event.kind == "apply-failed" {
                    failing.entry(event.cluster).or_insert(event.detail);
                }
            }
            _ = look.tick() => {
                let view = hub.view();
                // Only the replica that runs the sync (the leader) tells anyone anything.
                let Some(fleet) = view.fleet.clone() else { continue };
                settings.send_modify(|s| s.update(&fleet));
                if settings.borrow().is_off() {
                    // Nothing to tell anyone: no look (a fleet of 10,000 pays nothing), and the
                    // first look once settings arrive is a baseline again.
                    observer = Observer::new(&dashboard, &run);
                    failing.clear();
                    continue;
                }
                for (cluster, errors) in &view.cluster_errors {
                    if render_errors.get(cluster) != Some(errors) && let Some(first) = errors.first() {
                        failing.entry(cluster.clone()).or_insert_with(|| first.clone());
                    }
                }
                render_errors.clone_from(&view.cluster_errors);
                let now = unix_ms();
                let facts = facts(&hub.cluster_infos(), &view, &fleet, std::mem::take(&mut failing), now);
                let entries = settings.borrow().entries(observer.observe(facts, now), now);
                if entries.is_empty() {
                    continue;
                }
                let store = hub.store().clone();
                let count = entries.len();
                match tokio::task::spawn_blocking(move || store.outbox_push(&entries)).await {
                    Ok(Ok(())) => wake.notify_one(),
                    Ok(Err(e)) => tracing::error!(error = %e, count, "notifications not queued"),
                    Err(e) => tracing::error!(error = %e, count, "notifications not queued"),
                }
            }
        }
    }
}

/// What the observer looks at, from the published view and the clusters' links.
fn facts(
    clusters: &[ClusterInfo],
    view: &FleetView,
    fleet: &Fleet,
    mut failing: BTreeMap<String, String>,
    now_ms: i64,
) -> Facts {
    let declared: Vec<&ClusterInfo> = clusters.iter().filter(|c| !c.orphaned && !c.environment.is_empty()).collect();
    let mut environments = BTreeMap::new();
    let head = |env: &str| view.envs.get(env).map(|e| e.snapshot.commit.to_string());
    for (i, env) in fleet.environments.iter().enumerate() {
        let members: Vec<&ClusterInfo> = declared.iter().copied().filter(|c| c.environment == env.name).collect();
        let ready = members.iter().filter(|c| c.in_sync && c.health == Health::Healthy as i32).count();
        let tracks = view
            .rollouts
            .iter()
            .filter(|(_, r)| r.environment == env.name)
            .map(|(track, r)| {
                let facts = TrackFacts {
                    app: r.app.clone(),
                    revision: r.revision.clone(),
                    phase: r.phase,
                    reason: r.reason.clone(),
                };
                (track.clone(), facts)
            })
            .collect();
        let facts = EnvFacts {
            head: head(&env.name),
            verified: view.verified(&env.name, &members, now_ms).ok(),
            next: fleet.environments.get(i + 1).map(|next| (next.name.clone(), head(&next.name))),
            tracks,
            pin: view.pins.get(&env.name).cloned(),
            hold: view.holds.get(&env.name).map(|h| (h.window.clone(), convoy_shared::clock::rfc3339(h.until_ms))),
            ready: (ready, members.len()),
        };
        environments.insert(env.name.clone(), facts);
    }
    let clusters = declared
        .into_iter()
        .map(|c| {
            let facts = ClusterFacts {
                environment: c.environment.clone(),
                health: c.health,
                connected: c.connected,
                drifted: c.drift_count,
                failing: failing.remove(&c.name).unwrap_or_default(),
            };
            (c.name.clone(), facts)
        })
        .collect();
    Facts { environments, clusters }
}

/// Runs a worker per receiver with pending entries, while this replica leads.
async fn deliver_all(
    hub: Arc<Hub>,
    secrets: Secrets,
    settings: watch::Receiver<Settings>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder().timeout(deliver::TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: notifications and commit statuses stay in the outbox");
            return;
        }
    };
    let mut workers: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(LOOK) => {}
        }
        while running.try_join_next().is_some() {}
        workers.retain(|_, handle| !handle.is_finished());
        if hub.view().fleet.is_none() {
            continue;
        }
        let store = hub.store().clone();
        let pending = match tokio::task::spawn_blocking(move || store.outbox_pending(None, BATCH)).await {
            Ok(Ok(pending)) => pending,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                continue;
            }
            Err(_) => continue,
        };
        // Every receiver in force gets a worker even when the oldest entries are all another's
        // (a receiver down for hours); a worker with nothing to send returns at once.
        let mut receivers: BTreeSet<String> = pending.into_iter().map(|e| e.receiver).collect();
        receivers.extend(settings.borrow().receivers());
        for receiver in receivers {
            if workers.contains_key(&receiver) {
                continue;
            }
            let worker = Worker {
                hub: hub.clone(),
                secrets: secrets.clone(),
                settings: settings.clone(),
                http: http.clone(),
                receiver: receiver.clone(),
            };
            let span = tracing::info_span!("deliver", receiver = %receiver);
            let handle = running.spawn(worker.run(shutdown.clone()).instrument(span));
            workers.insert(receiver, handle);
        }
    }
    running.shutdown().await;
}

/// Delivers one receiver's entries in order.
struct Worker {
    hub: Arc<Hub>,
    secrets: Secrets,
    settings: watch::Receiver<Settings>,
    http: reqwest::Client,
    receiver: String,
}

impl Worker {
    /// Sends the receiver's pending entries, oldest first; returns when there are none.
    async fn run(self, shutdown: CancellationToken) {
        loop {
            let store = self.hub.store().clone();
            let receiver = self.receiver.clone();
            let queue = match tokio::task::spawn_blocking(move || store.outbox_pending(Some(&receiver), BATCH)).await {
                Ok(Ok(pending)) => pending,
                _ => return,
            };
            if queue.is_empty() {
                return;
            }
            for mut entry in queue {
                loop {
                    let wait = entry.next_ms - unix_ms();
                    if wait > 0 {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                        }
                    }
                    let now = unix_ms();
                    let request = self.settings.borrow().request(&self.secrets, &entry, now);
                    let result = match request {
                        Ok(request) => tokio::select! {
                            _ = shutdown.cancelled() => return,
                            sent = deliver::send(&self.http, request) => sent,
                        },
                        Err(e) => Err(e),
                    };
                    if let Err(e) = &result {
                        tracing::warn!(seq = entry.seq, attempts = entry.attempts + 1, error = %e, "delivery failed");
                    }
                    entry = settle(entry, result, unix_ms());
                    let (store, settled) = (self.hub.store().clone(), entry.clone());
                    match tokio::task::spawn_blocking(move || store.outbox_settle(&settled)).await {
                        Ok(Ok(())) => {}
                        _ => {
                            tracing::error!(seq = entry.seq, "cannot record a delivery; it may be sent again");
                            return;
                        }
                    }
                    if entry.state != Delivery::Pending {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_entry_waits_its_backoff_and_is_dead_after_a_day() {
        let entry = pending("ops", "{}".into(), 1_000);
        let refused = || Err(DeliveryError::Refused { url: "u".into(), status: 500, body: "down".into() });
        let once = settle(entry.clone(), refused(), 2_000);
        assert_eq!((once.state, once.attempts), (Delivery::Pending, 1));
        assert!((2_500..=3_000).contains(&once.next_ms), "1 s with jitter: {}", once.next_ms);
        assert!(once.last_error.contains("HTTP 500"));
        let twice = settle(once, refused(), 3_000);
        assert!((4_000..=5_000).contains(&twice.next_ms), "2 s with jitter: {}", twice.next_ms);
        let late = settle(twice.clone(), refused(), 1_000 + DEAD_AFTER_MS);
        assert_eq!(late.state, Delivery::Dead);
        let delivered = settle(twice.clone(), Ok(()), 4_000);
        assert_eq!((delivered.state, delivered.attempts, delivered.last_error.as_str()), (Delivery::Delivered, 3, ""));

        let gone = || Err(DeliveryError::Refused { url: "u".into(), status: 404, body: "no such hook".into() });
        let mut refused = entry.clone();
        for _ in 0..REFUSED_TRIES - 1 {
            refused = settle(refused, gone(), 2_000);
            assert_eq!(refused.state, Delivery::Pending, "a 4xx is tried again a few times");
        }
        assert_eq!(settle(refused, gone(), 2_000).state, Delivery::Dead, "then given up on, so the next goes");
        let limited = || Err(DeliveryError::Refused { url: "u".into(), status: 429, body: String::new() });
        let mut throttled = entry.clone();
        for _ in 0..REFUSED_TRIES * 2 {
            throttled = settle(throttled, limited(), 2_000);
        }
        assert_eq!(throttled.state, Delivery::Pending, "429 is a reason to wait, not to give up");
        let same = Err(DeliveryError::Refused {
            url: "u".into(),
            status: 400,
            body: r#"{"message":"Cannot transition status via :enqueue from :pending"}"#.into(),
        });
        assert_eq!(settle(entry, same, 2_000).state, Delivery::Delivered, "GitLab already has that status");
    }

    #[test]
    fn a_notice_goes_once_to_every_receiver_a_route_picks_and_statuses_only_with_a_forge() {
        let notifications: NotificationsSpec = serde_saphyr::from_str(
            "receivers:
- {name: ops, webhook: {url: 'https://ops'}}
- {name: chat, slack: {urlRef: s}}
routes:
- {receiver: ops, events: [rollout.paused]}
- {receiver: ops, environments: [prod]}
- {receiver: chat, events: [drift.detected]}",
        )
        .unwrap();
        let mut settings = Settings { notifications, commit_status: None };
        let mut observer = Observer::new("", "r");
        let mut env = EnvFacts { head: Some("c1".into()), ..Default::default() };
        let mut track = TrackFacts {
            app: None,
            revision: "c1".into(),
            phase: crate::release::rollout::Phase::Progressing,
            reason: String::new(),
        };
        env.tracks.insert("prod".into(), track.clone());
        observer.observe(Facts { environments: [("prod".into(), env.clone())].into(), ..Default::default() }, 0);
        track.phase = crate::release::rollout::Phase::Paused;
        env.tracks.insert("prod".into(), track);
        let observed = observer.observe(Facts { environments: [("prod".into(), env)].into(), ..Default::default() }, 1);
        assert_eq!(observed.statuses.len(), 1);
        let entries = settings.entries(observed, 5);
        assert_eq!(entries.iter().map(|e| e.receiver.as_str()).collect::<Vec<_>>(), ["ops"], "once, and no forge");
        settings.commit_status =
            Some(serde_saphyr::from_str("{provider: github, repository: o/f, tokenRef: t}").unwrap());
        let observed = Observed {
            notices: Vec::new(),
            statuses: vec![CommitStatus {
                environment: "prod".into(),
                sha: "c1".into(),
                state: crate::notify::observer::StatusState::Failure,
                description: "x".into(),
                link: String::new(),
            }],
        };
        assert_eq!(settings.entries(observed, 5)[0].receiver, COMMIT_STATUS);
    }
}

//! What is worth telling people: the observer compares what the hub sees now ([`Facts`]) with
//! what it saw at the last look and turns the differences into notices and commit statuses. A
//! pure state machine: the edge ([`super::outbox`]) builds the facts and passes the time.
//!
//! Decisions:
//! - The first look is the baseline: it tells nothing (a restarted hub does not announce the
//!   fleet again), except each environment's commit status, which a forge may have missed.
//! - One notice per rollout transition (started, paused, aborted, completed), pin (rollback),
//!   window hold, and verified commit the next environment lacks (promotion.ready). An
//!   environment without a `rollout:` of its own "starts" when its head moves and "completes"
//!   when the head is verified.
//! - Cluster events (degraded, recovered, disconnected, drift, failed apply) seen in one look are
//!   grouped per type and environment into one notice naming the clusters, however many.
//! - A cluster that flaps is told about at most once per [`FLAP_MS`] per event type; what was
//!   held back is counted in its next notice.
//! - Commit status per environment and head commit: failure when the head's rollout paused,
//!   aborted or a rollback pinned the environment elsewhere; success when the head is verified;
//!   pending otherwise. Sent only when the state changes, never per cluster.

use std::collections::{BTreeMap, HashMap};

use convoy_shared::proto::Health;
use serde::{Deserialize, Serialize};

use crate::release::rollout::{Phase, short};

/// How long a cluster's repeat of an event type is held back.
pub const FLAP_MS: i64 = 10 * 60 * 1000;
/// Clusters a notice names (the rest are counted).
const NAMED: usize = 20;

/// One event for people, as receivers get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// Unique and stable across retries: receivers drop what they have seen.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339.
    pub time: String,
    pub environment: String,
    /// The clusters it is about (at most 20 named), and how many there are.
    pub clusters: Vec<String>,
    pub cluster_count: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub revisions: Revisions,
    pub message: String,
    /// The dashboard's page for it (empty: the hub serves no dashboard).
    pub link: String,
}

/// The commits a notice is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revisions {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
}

/// The state a commit status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    Pending,
    Success,
    Failure,
}

/// One environment's status for one commit (context `convoy/<env>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitStatus {
    pub environment: String,
    pub sha: String,
    pub state: StatusState,
    pub description: String,
    pub link: String,
}

/// One rollout track as the observer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFacts {
    pub app: Option<String>,
    pub revision: String,
    pub phase: Phase,
    pub reason: String,
}

/// One environment as the hub sees it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFacts {
    /// Its branch's head, once read.
    pub head: Option<String>,
    /// Its verified commit, if any.
    pub verified: Option<String>,
    /// The next environment in promotion order, and its head.
    pub next: Option<(String, Option<String>)>,
    /// Its rollouts, by track.
    pub tracks: BTreeMap<String, TrackFacts>,
    /// The commit a rollback pinned it at.
    pub pin: Option<String>,
    /// The window holding a revision back, and until when (RFC 3339).
    pub hold: Option<(String, String)>,
    /// Clusters that applied their assignment and are Healthy, of how many.
    pub ready: (usize, usize),
}

/// One cluster as the hub sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    pub environment: String,
    pub health: i32,
    pub connected: bool,
    pub drifted: u32,
    /// What fails for it since the last look (an apply failure its agent reported, or a render
    /// error of one of its apps); empty: nothing new.
    pub failing: String,
}

/// Everything the observer looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub environments: BTreeMap<String, EnvFacts>,
    pub clusters: BTreeMap<String, ClusterFacts>,
}

/// What one look found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub notices: Vec<Notice>,
    pub statuses: Vec<CommitStatus>,
}

/// How often a cluster was told about one event type.
#[derive(Debug, Clone, Copy)]
struct Flap {
    last_ms: i64,
    held_back: u32,
}

/// The observer: the last look, and what it remembers of flapping clusters and statuses sent.
#[derive(Debug)]
pub struct Observer {
    /// The dashboard's URL (empty: none); notices and statuses link into it.
    dashboard: String,
    previous: Option<Facts>,
    flaps: HashMap<(String, &'static str), Flap>,
    /// The last status sent per environment: commit and state.
    statuses: BTreeMap<String, (String, StatusState)>,
    /// Makes ids unique within one millisecond.
    counter: u64,
    /// Makes ids unique across runs of the hub.
    run: String,
}

impl Observer {
    /// An observer whose notices link into the dashboard at `dashboard` (empty: none); `run`
    /// tells this run's notice ids from another's.
    pub fn new(dashboard: &str, run: &str) -> Self {
        Observer {
            dashboard: dashboard.trim_end_matches('/').to_string(),
            previous: None,
            flaps: HashMap::new(),
            statuses: BTreeMap::new(),
            counter: 0,
            run: run.to_string(),
        }
    }

    /// Compares `facts` with the last look, at `now_ms`.
    pub fn observe(&mut self, facts: Facts, now_ms: i64) -> Observed {
        let mut out = Observed::default();
        for (name, env) in &facts.environments {
            if let Some(status) = self.status(name, env) {
                out.statuses.push(status);
            }
        }
        let Some(before) = self.previous.take() else {
            self.previous = Some(facts);
            return out;
        };
        let now = &facts;
        let mut found = Vec::new();
        for (name, env) in &now.environments {
            let was = before.environments.get(name).cloned().unwrap_or_default();
            environment_changes(name, &was, env, &mut found);
        }
        let mut groups: BTreeMap<(&'static str, String), Vec<(String, String)>> = BTreeMap::new();
        for (name, cluster) in &now.clusters {
            let was = before.clusters.get(name);
            for (kind, detail) in cluster_changes(was, cluster) {
                if self.let_through(name, kind, now_ms) {
                    groups.entry((kind, cluster.environment.clone())).or_default().push((name.clone(), detail));
                }
            }
        }
        for ((kind, environment), clusters) in groups {
            found.push(self.grouped(kind, environment, clusters, now_ms));
        }
        self.previous = Some(facts);
        out.notices = found.into_iter().map(|draft| self.notice(draft, now_ms)).collect();
        out
    }

    /// Whether `cluster`'s `kind` event may be told now; counts it when held back.
    fn let_through(&mut self, cluster: &str, kind: &'static str, now_ms: i64) -> bool {
        let flap = self.flaps.entry((cluster.to_string(), kind)).or_insert(Flap { last_ms: i64::MIN, held_back: 0 });
        if flap.last_ms != i64::MIN && now_ms - flap.last_ms < FLAP_MS {
            flap.held_back += 1;
            return false;
        }
        flap.last_ms = now_ms;
        true
    }

    /// One notice for every cluster of `environment` that had a `kind` event in this look.
    fn grouped(
        &mut self,
        kind: &'static str,
        environment: String,
        clusters: Vec<(String, String)>,
        now_ms: i64,
    ) -> Draft {
        let mut held_back = 0;
        for (name, _) in &clusters {
            if let Some(flap) = self.flaps.get_mut(&(name.clone(), kind)) {
                held_back += std::mem::take(&mut flap.held_back);
            }
        }
        self.flaps.retain(|_, flap| now_ms - flap.last_ms < FLAP_MS || flap.held_back > 0);
        let what = match kind {
            "cluster.degraded" => "degraded",
            "cluster.recovered" => "recovered",
            "cluster.disconnected" => "disconnected from the hub",
            "drift.detected" => "drifted from Git",
            _ => "failing to sync",
        };
        let count = clusters.len();
        let names: Vec<&str> = clusters.iter().map(|(n, _)| n.as_str()).take(NAMED).collect();
        let mut message = match count {
            1 => format!("{} {what}: {}", clusters[0].0, clusters[0].1),
            _ => format!("{count} clusters of {environment} {what}: {}", names.join(", ")),
        };
        if count > NAMED {
            message.push_str(&format!(" and {} more", count - NAMED));
        }
        if held_back > 0 {
            message.push_str(&format!(" ({held_back} repeats held back as flapping)"));
        }
        let page = if count == 1 { format!("/clusters/{}", clusters[0].0) } else { "/".into() };
        Draft {
            kind,
            environment,
            clusters: clusters.into_iter().map(|(n, _)| n).collect(),
            app: None,
            revisions: Revisions::default(),
            message,
            page,
        }
    }

    fn notice(&mut self, draft: Draft, now_ms: i64) -> Notice {
        self.counter += 1;
        let cluster_count = draft.clusters.len();
        Notice {
            id: format!("{}-{now_ms}-{}", self.run, self.counter),
            kind: draft.kind.to_string(),
            time: convoy_shared::clock::rfc3339(now_ms),
            environment: draft.environment,
            clusters: draft.clusters.into_iter().take(NAMED).collect(),
            cluster_count,
            app: draft.app,
            revisions: draft.revisions,
            message: draft.message,
            link: self.link(&draft.page),
        }
    }

    fn link(&self, page: &str) -> String {
        if self.dashboard.is_empty() { String::new() } else { format!("{}{page}", self.dashboard) }
    }

    /// `environment`'s commit status, when it differs from the last one sent.
    fn status(&mut self, environment: &str, env: &EnvFacts) -> Option<CommitStatus> {
        let head = env.head.clone()?;
        let (ready, total) = env.ready;
        let counted = format!("{ready}/{total} clusters applied and healthy");
        let stopped = env
            .tracks
            .values()
            .find(|t| t.revision == head && t.app.is_none() && matches!(t.phase, Phase::Paused | Phase::Aborted));
        let (state, description) = match (&env.pin, stopped) {
            (Some(pin), _) if *pin != head => {
                (StatusState::Failure, format!("rolled back: {environment} pinned at {}", short(pin)))
            }
            (_, Some(track)) => (StatusState::Failure, format!("rollout {}: {}", track.phase.as_str(), track.reason)),
            _ if env.verified.as_deref() == Some(head.as_str()) => (StatusState::Success, counted),
            _ => (StatusState::Pending, counted),
        };
        if self.statuses.get(environment) == Some(&(head.clone(), state)) {
            return None;
        }
        self.statuses.insert(environment.to_string(), (head.clone(), state));
        Some(CommitStatus {
            environment: environment.to_string(),
            sha: head,
            state,
            description,
            link: self.link("/rollouts"),
        })
    }
}

/// A notice before it gets its id, time and link.
struct Draft {
    kind: &'static str,
    environment: String,
    clusters: Vec<String>,
    app: Option<String>,
    revisions: Revisions,
    message: String,
    /// The dashboard page it links to.
    page: String,
}

impl Draft {
    fn of(kind: &'static str, environment: &str, message: String, page: &str) -> Self {
        Draft {
            kind,
            environment: environment.to_string(),
            clusters: Vec::new(),
            app: None,
            revisions: Revisions::default(),
            message,
            page: page.to_string(),
        }
    }
}

/// Notices about `name` going from `was` to `now`.
fn environment_changes(name: &str, was: &EnvFacts, now: &EnvFacts, out: &mut Vec<Draft>) {
    let has_track = now.tracks.values().any(|t| t.app.is_none());
    for (track, t) in &now.tracks {
        let before = was.tracks.get(track);
        let what = match &t.app {
            Some(app) => format!("{name}/{app}"),
            None => name.to_string(),
        };
        let mut draft = |kind: &'static str, message: String| {
            let mut draft = Draft::of(kind, name, message, "/rollouts");
            draft.app = t.app.clone();
            draft.revisions = Revisions {
                from: before.map(|b| b.revision.clone()).filter(|r| *r != t.revision).unwrap_or_default(),
                to: t.revision.clone(),
            };
            out.push(draft);
        };
        let new = before.is_none_or(|b| b.revision != t.revision);
        if new && t.phase != Phase::Complete {
            draft("rollout.started", format!("{what}: rolling out {}", short(&t.revision)));
        }
        if before.is_some_and(|b| b.phase == t.phase && !new) {
            continue;
        }
        match t.phase {
            Phase::Paused => {
                draft("rollout.paused", format!("{what}: rollout of {} paused: {}", short(&t.revision), t.reason))
            }
            Phase::Aborted => {
                draft("rollout.aborted", format!("{what}: rollout of {} aborted: {}", short(&t.revision), t.reason))
            }
            Phase::Complete if before.is_some() => {
                draft("rollout.completed", format!("{what}: every cluster runs {}", short(&t.revision)))
            }
            _ => {}
        }
    }
    if !has_track && let Some(head) = &now.head {
        let revisions = Revisions { from: was.head.clone().unwrap_or_default(), to: head.clone() };
        if was.head.as_ref().is_some_and(|h| h != head) {
            let mut draft =
                Draft::of("rollout.started", name, format!("{name}: rolling out {}", short(head)), "/rollouts");
            draft.revisions = revisions.clone();
            out.push(draft);
        }
        if now.verified.as_ref() == Some(head) && was.verified.as_ref() != Some(head) && was.head.is_some() {
            let (ready, _) = now.ready;
            let message = format!("{name}: every cluster runs {} ({ready} applied and healthy)", short(head));
            let mut draft = Draft::of("rollout.completed", name, message, "/rollouts");
            draft.revisions = Revisions { from: String::new(), to: head.clone() };
            out.push(draft);
        }
    }
    if let Some(pin) = &now.pin
        && was.pin.as_ref() != Some(pin)
    {
        let message =
            format!("{name}: rolled back, pinned at {}; `convoy rollback {name} --release` lifts it", short(pin));
        let mut draft = Draft::of("rollback", name, message, "/rollouts");
        draft.revisions = Revisions { from: now.head.clone().unwrap_or_default(), to: pin.clone() };
        out.push(draft);
    }
    if let Some((window, until)) = &now.hold
        && was.hold.as_ref().is_none_or(|(w, _)| w != window)
    {
        let message = format!("{name}: new revisions held by window {window} until {until}");
        let mut draft = Draft::of("window.held", name, message, "/rollouts");
        draft.revisions.to = now.head.clone().unwrap_or_default();
        out.push(draft);
    }
    if let (Some(verified), Some((next, next_head))) = (&now.verified, &now.next)
        && was.verified.as_ref() != Some(verified)
        && next_head.as_ref() != Some(verified)
    {
        let message = format!("{name} verified {}: `convoy promote {name} {next}` takes it to {next}", short(verified));
        let mut draft = Draft::of("promotion.ready", name, message, "/promotion");
        draft.revisions = Revisions { from: next_head.clone().unwrap_or_default(), to: verified.clone() };
        out.push(draft);
    }
}

/// The events of one cluster going from `was` (unknown before: none) to `now`, with details.
fn cluster_changes(was: Option<&ClusterFacts>, now: &ClusterFacts) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let healthy = Health::Healthy as i32;
    let degraded = Health::Degraded as i32;
    if let Some(was) = was {
        if now.health == degraded && was.health != degraded {
            out.push(("cluster.degraded", format!("{} → Degraded", convoy_shared::health_label(was.health))));
        }
        if was.health == degraded && now.health == healthy {
            out.push(("cluster.recovered", "Degraded → Healthy".to_string()));
        }
        if was.connected && !now.connected {
            out.push(("cluster.disconnected", "its agent's stream closed".to_string()));
        }
        if was.drifted == 0 && now.drifted > 0 {
            out.push(("drift.detected", format!("{} objects differ from Git", now.drifted)));
        }
    }
    if !now.failing.is_empty() {
        out.push(("sync.failed", now.failing.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const H1: &str = "1111111111aaaaaaaaaa";
    const H2: &str = "2222222222bbbbbbbbbb";

    fn mk_cluster(env: &str, health: Health) -> ClusterFacts {
        ClusterFacts {
            environment: env.into(),
            health: health as i32,
            connected: true,
            drifted: 0,
            failing: String::new(),
        }
    }

    fn mk_env(head: &str, ready: (usize, usize)) -> EnvFacts {
        EnvFacts { head: Some(head.into()), ready, ..Default::default() }
    }

    fn track(revision: &str, phase: Phase) -> TrackFacts {
        TrackFacts { app: None, revision: revision.into(), phase, reason: "degraded after taking it: eu-1".into() }
    }

    /// Clusters named in a set of notices.
    fn named(notices: &[Notice]) -> BTreeSet<&str> {
        notices.iter().flat_map(|n| n.clusters.iter().map(String::as_str)).collect()
    }

    fn kinds(o: &Observed) -> Vec<&str> {
        o.notices.iter().map(|n| n.kind.as_str()).collect()
    }

    fn fleet(envs: &[(&str, EnvFacts)], clusters: &[(&str, ClusterFacts)]) -> Facts {
        Facts {
            environments: envs.iter().map(|(n, e)| (n.to_string(), e.clone())).collect(),
            clusters: clusters.iter().map(|(n, c)| (n.to_string(), c.clone())).collect(),
        }
    }

    #[test]
    fn the_first_look_tells_nothing_but_each_environments_commit_status() {
        let mut o = Observer::new("https://ui.example/", "r");
        let first =
            o.observe(fleet(&[("prod", mk_env(H1, (1, 2)))], &[("eu-1", mk_cluster("prod", Health::Degraded))]), 0);
        assert!(first.notices.is_empty());
        assert_eq!(first.statuses.len(), 1);
        let status = &first.statuses[0];
        assert_eq!(
            (status.state, status.description.as_str()),
            (StatusState::Pending, "1/2 clusters applied and healthy")
        );
        assert_eq!(status.link, "https://ui.example/rollouts");
        let again = o.observe(fleet(&[("prod", mk_env(H1, (2, 2)))], &[]), 1);
        assert_eq!(again, Observed::default(), "the same state is not sent again, however the counts move");
    }

    #[test]
    fn a_rollouts_transitions_are_one_notice_each_and_the_status_follows() {
        let mut o = Observer::new("", "r");
        let mut env = mk_env(H1, (2, 2));
        env.tracks.insert("prod".into(), track(H1, Phase::Complete));
        o.observe(fleet(&[("prod", env.clone())], &[]), 0);

        env.head = Some(H2.into());
        env.ready = (0, 2);
        env.tracks.insert("prod".into(), track(H2, Phase::Progressing));
        let started = o.observe(fleet(&[("prod", env.clone())], &[]), 1);
        assert_eq!(kinds(&started), ["rollout.started"]);
        assert_eq!(started.notices[0].revisions, Revisions { from: H1.into(), to: H2.into() });
        assert_eq!(started.statuses[0].state, StatusState::Pending);

        env.tracks.insert("prod".into(), track(H2, Phase::Paused));
        let paused = o.observe(fleet(&[("prod", env.clone())], &[]), 2);
        assert_eq!(kinds(&paused), ["rollout.paused"]);
        assert!(paused.notices[0].message.contains("degraded after taking it"));
        assert_eq!(paused.statuses[0].state, StatusState::Failure);
        assert_eq!(o.observe(fleet(&[("prod", env.clone())], &[]), 3), Observed::default(), "nothing new");

        env.tracks.insert("prod".into(), track(H2, Phase::Complete));
        env.verified = Some(H2.into());
        env.ready = (2, 2);
        let done = o.observe(fleet(&[("prod", env.clone())], &[]), 4);
        assert_eq!(kinds(&done), ["rollout.completed"]);
        assert_eq!(
            (done.statuses[0].state, done.statuses[0].description.as_str()),
            (StatusState::Success, "2/2 clusters applied and healthy")
        );
    }

    #[test]
    fn an_environment_without_a_rollout_starts_on_a_new_head_and_completes_when_verified() {
        let mut o = Observer::new("", "r");
        let mut dev = mk_env(H1, (1, 1));
        dev.verified = Some(H1.into());
        dev.next = Some(("prod".into(), Some(H1.into())));
        o.observe(fleet(&[("dev", dev.clone())], &[]), 0);
        dev.head = Some(H2.into());
        dev.verified = None;
        assert_eq!(kinds(&o.observe(fleet(&[("dev", dev.clone())], &[]), 1)), ["rollout.started"]);
        dev.verified = Some(H2.into());
        let verified = o.observe(fleet(&[("dev", dev.clone())], &[]), 2);
        assert_eq!(kinds(&verified), ["rollout.completed", "promotion.ready"]);
        assert!(verified.notices[1].message.contains("convoy promote dev prod"), "{:?}", verified.notices[1]);
    }

    #[test]
    fn a_pin_and_a_window_hold_are_told_once() {
        let mut o = Observer::new("", "r");
        let mut env = mk_env(H2, (2, 2));
        o.observe(fleet(&[("prod", env.clone())], &[]), 0);
        env.pin = Some(H1.into());
        env.hold = Some(("freeze".into(), "2026-12-07T09:00:00Z".into()));
        let seen = o.observe(fleet(&[("prod", env.clone())], &[]), 1);
        assert_eq!(kinds(&seen), ["rollback", "window.held"]);
        assert_eq!(seen.statuses[0].state, StatusState::Failure);
        assert!(seen.statuses[0].description.contains(&format!("pinned at {}", short(H1))));
        assert!(o.observe(fleet(&[("prod", env)], &[]), 2).notices.is_empty());
    }

    #[test]
    fn ten_thousand_degraded_clusters_are_one_notice_and_a_flapping_one_is_held_back() {
        let mut o = Observer::new("", "r");
        let names: Vec<String> = (0..10_000).map(|i| format!("c{i:05}")).collect();
        let all = |health: Health| -> Vec<(&str, ClusterFacts)> {
            names.iter().map(|n| (n.as_str(), mk_cluster("prod", health))).collect()
        };
        o.observe(fleet(&[], &all(Health::Healthy)), 0);
        let down = o.observe(fleet(&[], &all(Health::Degraded)), 1);
        assert_eq!(kinds(&down), ["cluster.degraded"]);
        assert_eq!((down.notices[0].cluster_count, down.notices[0].clusters.len()), (10_000, NAMED));
        assert!(down.notices[0].message.contains("10000 clusters of prod degraded"));
        assert!(down.notices[0].message.ends_with("and 9980 more"));

        let flapper = |health: Health| fleet(&[], &[("eu-1", mk_cluster("prod", health))]);
        let mut o = Observer::new("", "r");
        o.observe(flapper(Health::Healthy), 0);
        assert_eq!(kinds(&o.observe(flapper(Health::Degraded), 1_000)), ["cluster.degraded"]);
        assert_eq!(kinds(&o.observe(flapper(Health::Healthy), 2_000)), ["cluster.recovered"]);
        for t in 0..5 {
            assert!(o.observe(flapper(Health::Degraded), 3_000 + t * 2_000).notices.is_empty(), "held back");
            o.observe(flapper(Health::Healthy), 4_000 + t * 2_000);
        }
        let later = o.observe(flapper(Health::Degraded), 1_000 + FLAP_MS);
        assert_eq!(kinds(&later), ["cluster.degraded"]);
        assert!(later.notices[0].message.contains("5 repeats held back"), "{}", later.notices[0].message);
    }

    #[test]
    fn disconnects_drift_and_failures_are_grouped_per_environment() {
        let mut o = Observer::new("https://ui", "run1");
        let c = |env: &str| mk_cluster(env, Health::Healthy);
        o.observe(fleet(&[], &[("a", c("dev")), ("b", c("dev")), ("p", c("prod"))]), 0);
        let (mut a, mut b, mut p) = (c("dev"), c("dev"), c("prod"));
        a.connected = false;
        b.connected = false;
        p.drifted = 3;
        b.failing = "apps/web: Deployment web: 422 invalid".into();
        let seen = o.observe(fleet(&[], &[("a", a), ("b", b), ("p", p)]), 5);
        assert_eq!(kinds(&seen), ["cluster.disconnected", "drift.detected", "sync.failed"]);
        assert_eq!(seen.notices[0].clusters, ["a", "b"]);
        assert_eq!(seen.notices[1].link, "https://ui/clusters/p");
        assert!(seen.notices[2].message.contains("422 invalid"));
        assert_eq!(named(&seen.notices), BTreeSet::from(["a", "b", "p"]));
        let ids: BTreeSet<&str> = seen.notices.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids.len(), 3, "ids are unique");
        assert!(ids.iter().all(|id| id.starts_with("run1-5-")));
    }
}

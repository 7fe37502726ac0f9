//! Rollouts: a new revision reaches an environment's clusters wave by wave. A rollout is per
//! (environment, revision); the releaser ([`crate::release::releaser`]) owns every [`Rollout`],
//! steps it as reports come in, and publishes to each cluster either the new revision or the
//! one it ran when the rollout began. Rollouts are plain data, stored as JSON, so a restarted
//! hub resumes where it was.
//!
//! Decisions:
//! - A cluster belongs to the first wave whose selector matches it; a wave without a selector
//!   takes every cluster not yet in a wave; clusters no wave takes make a last wave, "rest".
//! - Within the wave that is open, at most `maxUnavailable` clusters are *in flight* (given the
//!   new revision and not yet applied and Healthy). Waves before it are fully released.
//! - A wave is done when each of its clusters runs the new revision, applied and Healthy; it then
//!   soaks (stays done for `soak`) before the next opens, or waits for `convoy rollout approve`;
//!   the last wave completes the rollout without a soak.
//!   A wave in which no cluster's objects change skips its soak.
//! - A released cluster that applied the new revision and turned Degraded is a failure;
//!   `failureThreshold` failures pause the rollout. `resume` accepts the failures seen so far.
//! - A newer commit supersedes a rollout that is still going *from the wave it reached*: the
//!   clusters of waves already opened take the newest revision (the change they were soaking is
//!   in it, and a fix for a failing canary must reach the canary first), the rest keep what they
//!   ran. Abort returns every cluster to the revision it ran when the rollout began.
//! - Clusters that were not in the fleet when the rollout began have nothing to protect and
//!   take the new revision at once.
//! - An app with `rollout:` in its app.yaml has a track of its own in each environment (keyed
//!   `ENV/APP`): its objects move through its waves, the other apps' through the environment's.
//!   A cluster's assignment is composed of each app's part at the commit its track gives the
//!   cluster. An app that gains its own rollout starts it from what its clusters ran, so the
//!   commit that adds the override is already rolled out by it.

use std::collections::{BTreeMap, BTreeSet};

use convoy_shared::proto::Health;
use serde::{Deserialize, Serialize};

use convoy_model::analysis::{CheckSpec, Measurement, OnFailure, QueryFrom, holds};
use convoy_render::fleet::{Cluster, RolloutSpec};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Handing the new revision to the open wave's clusters.
    Progressing,
    /// The open wave is done; waiting out its soak.
    Soaking,
    /// The open wave is done and soaked; `convoy rollout approve` opens the next.
    AwaitingApproval,
    /// Stopped by failures or by a person; clusters not yet released keep what they run.
    Paused,
    /// Every cluster runs the new revision.
    Complete,
    /// Every cluster was returned to what it ran when the rollout began.
    Aborted,
}

impl Phase {
    /// The word the CLI and events show.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Soaking => "soaking",
            Phase::AwaitingApproval => "awaiting-approval",
            Phase::Paused => "paused",
            Phase::Complete => "complete",
            Phase::Aborted => "aborted",
        }
    }
}

/// One wave as the rollout began it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    pub name: String,
    pub clusters: Vec<String>,
    pub max_unavailable: usize,
}

/// What the hub sees of one cluster of the rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// The new revision changes this cluster's objects.
    pub changed: bool,
    /// The cluster applied the new revision's assignment and is Healthy.
    pub done: bool,
    /// The cluster applied the new revision's assignment and is Degraded.
    pub failed: bool,
}

impl Observed {
    /// A cluster whose objects the new revision changes (or not), that `runs_new` (was given
    /// the new revision and applied it) or not, with its reported health.
    pub fn of(changed: bool, runs_new: bool, health: i32) -> Observed {
        Observed {
            changed,
            done: runs_new && health == Health::Healthy as i32,
            failed: runs_new && health == Health::Degraded as i32,
        }
    }
}

/// A person's word on an environment, carried out by the sync loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An action on the environment's rollout, or on an app's own in it.
    Rollout { action: Action, app: Option<String> },
    /// Pin every cluster of the environment at `commit` (a rollback); new commits are held.
    Pin { commit: String },
    /// Lift the pin: the environment's head rolls out again.
    Release,
    /// Let the revision a change window holds back through, once (`convoy rollout override`).
    Override { by: String, reason: String },
}

/// A person's word on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Approve,
    Abort,
}

/// Why an action does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "{} has no rollout: give the environment `rollout:` in convoy.yaml (or the app `rollout:` in its app.yaml), or wait for a commit",
        describe(.0)
    )]
    None(String),
    #[error("the rollout of '{environment}' to {revision} is {phase}; {action} does not apply")]
    NotApplicable { environment: String, revision: String, phase: &'static str, action: &'static str },
    #[error("environment '{0}' is not in convoy.yaml")]
    UnknownEnvironment(String),
    #[error("environment '{0}' is not pinned; nothing to release")]
    NotPinned(String),
    #[error("environment '{environment}' is pinned at {commit}: `convoy rollback {environment} --release` first")]
    Pinned { environment: String, commit: String },
    #[error("no change window holds anything of '{0}' back; nothing to override")]
    NotHeld(String),
}

/// One environment's rollout of one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub environment: String,
    /// The app whose own rollout this is (`rollout:` in its app.yaml); none: the environment's,
    /// which moves every app without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The commit being rolled out.
    pub revision: String,
    /// The commit each cluster ran when the rollout began (absent: it ran nothing from this
    /// environment): what it keeps until released, and what abort returns it to.
    pub from: BTreeMap<String, String>,
    pub waves: Vec<Wave>,
    /// Waves opened so far (the last of them is the one in progress).
    pub opened: usize,
    /// Clusters handed the new revision.
    pub released: BTreeSet<String>,
    pub phase: Phase,
    /// Why it is paused or aborted.
    pub reason: String,
    pub soak_ms: u64,
    /// When the open wave was first seen done (soak start).
    pub soak_started_ms: Option<i64>,
    pub failure_threshold: u32,
    pub approval: bool,
    /// Failures `resume` accepted: they no longer count.
    pub accepted_failures: BTreeSet<String>,
    pub started_ms: i64,
    /// When every cluster ran the new revision (what promotion's soak counts from).
    #[serde(default)]
    pub completed_ms: Option<i64>,
    /// The metric gate each wave's soak must pass, as the rollout began with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// Failed measurements of each check during the current soak.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gate_failures: BTreeMap<String, u32>,
    /// The last measurement counted, per `SOURCE/CHECK` (a cluster, or `hub`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gate_counted: BTreeMap<String, i64>,
    /// A failing gate rolled it back: the releaser pins the environment where it was.
    #[serde(default)]
    pub rolled_back: bool,
}

/// A rollout's metric gate: checks judged while each wave soaks, and what a failure does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub checks: Vec<CheckSpec>,
    pub on_failure: OnFailure,
    pub from: QueryFrom,
}

/// Where a gate is during a soak.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GateState {
    /// Every check's latest measurement from every source holds.
    Passed,
    /// Some measurement is missing or inconclusive: the soak waits.
    Waiting(String),
    /// A check failed more often than its limit.
    Failed(String),
}

impl Rollout {
    /// A rollout of `revision` over `clusters` that ran `from` (cluster → commit). `reached`
    /// waves open at once (a superseded rollout's progress).
    pub fn begin(
        environment: &str,
        spec: &RolloutSpec,
        revision: &str,
        clusters: &[&Cluster],
        from: BTreeMap<String, String>,
        reached: usize,
        now_ms: i64,
    ) -> Rollout {
        Rollout {
            environment: environment.to_string(),
            app: None,
            revision: revision.to_string(),
            from,
            waves: waves(spec, clusters),
            opened: reached.max(1),
            released: BTreeSet::new(),
            phase: Phase::Progressing,
            reason: String::new(),
            soak_ms: spec.soak().as_millis() as u64,
            soak_started_ms: None,
            failure_threshold: spec.failure_threshold,
            approval: spec.approval,
            accepted_failures: BTreeSet::new(),
            started_ms: now_ms,
            completed_ms: None,
            gate: spec.analysis.as_ref().map(|a| Gate {
                checks: a.checks.clone(),
                on_failure: spec.on_failure,
                from: a.from,
            }),
            gate_failures: BTreeMap::new(),
            gate_counted: BTreeMap::new(),
            rolled_back: false,
        }
    }

    /// A finished rollout of `revision` that every cluster already runs: the starting point
    /// when the hub first sees an environment.
    pub fn settled(environment: &str, spec: &RolloutSpec, revision: &str, clusters: &[&Cluster], now_ms: i64) -> Self {
        let mut rollout = Rollout::begin(environment, spec, revision, clusters, BTreeMap::new(), 0, now_ms);
        rollout.opened = rollout.waves.len();
        rollout.phase = Phase::Complete;
        rollout.completed_ms = Some(now_ms);
        rollout
    }

    /// This rollout as `app`'s own (`None`: the environment's).
    pub fn of_app(mut self, app: Option<&str>) -> Self {
        self.app = app.map(str::to_string);
        self
    }

    /// Where it is kept and how people name it: `ENV`, or `ENV/APP` for an app's own.
    pub fn track(&self) -> String {
        track(&self.environment, self.app.as_deref())
    }

    /// Whether it decides `app`'s part of an assignment, given the apps of its environment that
    /// have rollouts of their own.
    pub fn governs(&self, app: &str, own: &BTreeSet<String>) -> bool {
        match &self.app {
            Some(mine) => mine == app,
            None => !own.contains(app),
        }
    }

    /// The rollout that takes `revision` on from this one: clusters released here move on to
    /// `revision`, the others keep what they run; waves this one opened open at once.
    pub fn successor(&self, spec: &RolloutSpec, revision: &str, clusters: &[&Cluster], now_ms: i64) -> Rollout {
        let from = clusters
            .iter()
            .filter_map(|c| self.running(&c.name).map(|commit| (c.name.clone(), commit.to_string())))
            .collect();
        let reached = if self.is_active() { self.opened } else { 0 };
        let next = Rollout::begin(&self.environment, spec, revision, clusters, from, reached, now_ms);
        Rollout { app: self.app.clone(), ..next }
    }

    /// Whether the rollout still decides what clusters run (not complete).
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Progressing | Phase::Soaking | Phase::AwaitingApproval | Phase::Paused)
    }

    /// The commit `cluster` runs (or is being given) under this rollout; `None` when nothing.
    pub fn running(&self, cluster: &str) -> Option<&str> {
        if self.takes_new(cluster) { Some(&self.revision) } else { self.held_at(cluster) }
    }

    /// The commit `cluster` is held at; `None` when it is to run the new revision.
    pub fn held_at(&self, cluster: &str) -> Option<&str> {
        if self.takes_new(cluster) { None } else { self.from.get(cluster).map(String::as_str) }
    }

    /// Whether `cluster` is to run the new revision.
    pub fn takes_new(&self, cluster: &str) -> bool {
        match self.phase {
            Phase::Complete => true,
            Phase::Aborted => !self.from.contains_key(cluster),
            _ => self.released.contains(cluster) || !self.from.contains_key(cluster),
        }
    }

    /// Clusters still held at what they ran, with that commit.
    pub fn held(&self) -> impl Iterator<Item = (&str, &str)> {
        self.from.keys().filter_map(|c| Some((c.as_str(), self.held_at(c)?)))
    }

    /// Moves the rollout on from what the hub sees (`observe`) and the gate's latest
    /// measurements from each source (`measured`: a cluster, or `hub`); returns events worth
    /// telling watchers.
    pub fn step(
        &mut self,
        now_ms: i64,
        observe: impl Fn(&str) -> Observed,
        measured: impl Fn(&str) -> Vec<Measurement>,
    ) -> Vec<String> {
        let mut events = Vec::new();
        while self.phase == Phase::Progressing || self.phase == Phase::Soaking {
            let failed: Vec<&String> =
                self.released.iter().filter(|c| !self.accepted_failures.contains(*c) && observe(c).failed).collect();
            if failed.len() >= self.failure_threshold as usize {
                let names: Vec<&str> = failed.iter().map(|c| c.as_str()).collect();
                self.reason = format!("degraded after taking {}: {}", short(&self.revision), names.join(", "));
                self.phase = Phase::Paused;
                events.push(format!("paused: {}", self.reason));
                break;
            }
            let current = self.opened - 1;
            for wave in &self.waves[..current] {
                self.released.extend(wave.clusters.iter().cloned());
            }
            let wave = &self.waves[current];
            let in_flight = wave.clusters.iter().filter(|c| self.released.contains(*c) && !observe(c).done).count();
            let room = wave.max_unavailable.saturating_sub(in_flight);
            let next: Vec<String> =
                wave.clusters.iter().filter(|c| !self.released.contains(*c)).take(room).cloned().collect();
            self.released.extend(next);
            let all_done = wave.clusters.iter().all(|c| self.released.contains(c) && observe(c).done);
            if !all_done {
                self.phase = Phase::Progressing;
                self.soak_started_ms = None;
                break;
            }
            if self.opened == self.waves.len() {
                // The soak guards the next wave; after the last there is none.
                self.phase = Phase::Complete;
                self.completed_ms = Some(now_ms);
                events.push(format!("complete: every cluster runs {}", short(&self.revision)));
                break;
            }
            let changed = wave.clusters.iter().any(|c| observe(c).changed);
            if self.soak_started_ms.is_none() {
                self.gate_failures.clear();
            }
            let soaked_since = *self.soak_started_ms.get_or_insert(now_ms);
            let wave_name = wave.name.clone();
            if changed && let Some(gate) = self.gate.clone() {
                let soaked = now_ms - soaked_since >= self.soak_ms as i64;
                match self.judge_gate(&gate, soaked_since, &measured) {
                    GateState::Failed(why) => {
                        self.soak_started_ms = None;
                        match gate.on_failure {
                            OnFailure::Pause => {
                                self.reason = why;
                                self.phase = Phase::Paused;
                                events.push(format!("paused: {}", self.reason));
                            }
                            OnFailure::Rollback => {
                                self.reason = format!("rolled back: {why}");
                                self.phase = Phase::Aborted;
                                self.released.clear();
                                self.rolled_back = true;
                                events.push(self.reason.clone());
                            }
                        }
                        break;
                    }
                    GateState::Waiting(why) => {
                        if soaked && self.reason != why {
                            events.push(format!("wave {wave_name} soaked; {why}"));
                        }
                        self.reason = why;
                        if soaked {
                            self.phase = Phase::Soaking;
                            break;
                        }
                    }
                    GateState::Passed => self.reason.clear(),
                }
            }
            let wave = &self.waves[current];
            if changed && now_ms - soaked_since < self.soak_ms as i64 {
                if self.phase != Phase::Soaking {
                    events.push(format!("wave {} soaking", wave.name));
                }
                self.phase = Phase::Soaking;
                break;
            }
            self.soak_started_ms = None;
            if self.approval {
                self.phase = Phase::AwaitingApproval;
                events.push(format!("wave {} done; waiting for `convoy rollout approve`", wave.name));
                break;
            }
            self.opened += 1;
            self.phase = Phase::Progressing;
            events.push(format!("wave {} opened", self.waves[self.opened - 1].name));
        }
        events
    }

    /// Judges the gate's measurements taken since `since`: counts each new failure once, and
    /// says whether every check holds everywhere, waits on something, or failed.
    fn judge_gate(&mut self, gate: &Gate, since: i64, measured: &impl Fn(&str) -> Vec<Measurement>) -> GateState {
        let sources: Vec<String> = match gate.from {
            QueryFrom::Hub => vec!["hub".to_string()],
            QueryFrom::Agent => self.released.iter().cloned().collect(),
        };
        let mut waiting = None;
        for source in &sources {
            let latest = measured(source);
            for check in &gate.checks {
                let last = latest
                    .iter()
                    .filter(|m| m.check == check.name && m.at_unix_ms >= since)
                    .max_by_key(|m| m.at_unix_ms);
                let Some(m) = last else {
                    waiting
                        .get_or_insert(format!("waiting for check {}: no measurement from {source} yet", check.name));
                    continue;
                };
                let verdict = match m.value {
                    Some(value) => holds(&check.success_condition, value).map(|ok| (ok, value)),
                    None => Err(m.error.clone()),
                };
                let key = format!("{source}/{}", check.name);
                let new = self.gate_counted.get(&key).is_none_or(|at| *at < m.at_unix_ms);
                if new {
                    self.gate_counted.insert(key, m.at_unix_ms);
                }
                match verdict {
                    Ok((true, _)) => {}
                    Ok((false, value)) => {
                        let failures = self.gate_failures.entry(check.name.clone()).or_default();
                        *failures += u32::from(new);
                        if *failures > check.failure_limit {
                            return GateState::Failed(format!(
                                "check {} failed: result {value} on {source} does not meet {} ({} failed measurements, limit {})",
                                check.name, check.success_condition, failures, check.failure_limit
                            ));
                        }
                        waiting.get_or_insert(format!(
                            "waiting for check {}: result {value} on {source} does not meet {} ({failures} of {} failures tolerated)",
                            check.name, check.success_condition, check.failure_limit
                        ));
                    }
                    Err(why) => {
                        waiting.get_or_insert(format!(
                            "waiting for check {}: inconclusive on {source}: {why}",
                            check.name
                        ));
                    }
                }
            }
        }
        match waiting {
            Some(why) => GateState::Waiting(why),
            None => GateState::Passed,
        }
    }

    /// Applies a person's action.
    pub fn act(&mut self, action: Action, observe: impl Fn(&str) -> Observed) -> Result<String, RolloutError> {
        let refuse = |r: &Rollout, name: &'static str| RolloutError::NotApplicable {
            environment: r.track(),
            revision: short(&r.revision).to_string(),
            phase: r.phase.as_str(),
            action: name,
        };
        match action {
            Action::Pause if matches!(self.phase, Phase::Progressing | Phase::Soaking | Phase::AwaitingApproval) => {
                self.phase = Phase::Paused;
                self.reason = "paused by a person".into();
                Ok("paused".into())
            }
            Action::Resume if self.phase == Phase::Paused => {
                let failed: Vec<String> = self.released.iter().filter(|c| observe(c).failed).cloned().collect();
                self.accepted_failures.extend(failed);
                // The gate's failures so far are accepted too; it judges what comes next.
                self.gate_failures.clear();
                self.phase = Phase::Progressing;
                self.reason.clear();
                Ok("resumed".into())
            }
            Action::Approve if self.phase == Phase::AwaitingApproval => {
                self.opened += 1;
                self.phase = Phase::Progressing;
                Ok(format!("approved: wave {} opened", self.waves[self.opened - 1].name))
            }
            Action::Abort if self.is_active() => {
                self.phase = Phase::Aborted;
                self.reason = "aborted by a person".into();
                self.released.clear();
                Ok("aborted: every cluster returns to what it ran before".into())
            }
            Action::Pause => Err(refuse(self, "pause")),
            Action::Resume => Err(refuse(self, "resume")),
            Action::Approve => Err(refuse(self, "approve")),
            Action::Abort => Err(refuse(self, "abort")),
        }
    }

    /// Milliseconds of soak left for the open wave (0 when not soaking).
    pub fn soak_left_ms(&self, now_ms: i64) -> i64 {
        match (self.phase, self.soak_started_ms) {
            (Phase::Soaking, Some(since)) => (self.soak_ms as i64 - (now_ms - since)).max(0),
            _ => 0,
        }
    }
}

/// The waves of `spec` over `clusters`, in order.
fn waves(spec: &RolloutSpec, clusters: &[&Cluster]) -> Vec<Wave> {
    let mut waves: Vec<Wave> =
        spec.waves.iter().map(|w| Wave { name: w.name.clone(), clusters: Vec::new(), max_unavailable: 0 }).collect();
    let mut rest = Vec::new();
    for cluster in clusters {
        let taken =
            spec.waves.iter().position(|w| w.cluster_selector.as_ref().is_none_or(|s| s.matches(&cluster.labels)));
        match taken {
            Some(i) => waves[i].clusters.push(cluster.name.clone()),
            None => rest.push(cluster.name.clone()),
        }
    }
    if !rest.is_empty() || waves.is_empty() {
        waves.push(Wave { name: "rest".into(), clusters: rest, max_unavailable: 0 });
    }
    for (i, wave) in waves.iter_mut().enumerate() {
        let limit = spec.waves.get(i).and_then(|w| w.max_unavailable.as_ref());
        wave.max_unavailable = limit.map_or(wave.clusters.len(), |q| q.of(wave.clusters.len())).max(1);
    }
    waves
}

/// The key of an environment's rollout (`ENV`) or an app's own in it (`ENV/APP`).
pub fn track(environment: &str, app: Option<&str>) -> String {
    match app {
        Some(app) => format!("{environment}/{app}"),
        None => environment.to_string(),
    }
}

/// A track key as words: `environment 'prod'` or `app 'web' in 'prod'`.
pub fn describe(track: &str) -> String {
    match track.split_once('/') {
        Some((environment, app)) => format!("app '{app}' in '{environment}'"),
        None => format!("environment '{track}'"),
    }
}

/// A commit's short form.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_render::fleet::{LabelSelector, Quantity, WaveSpec};
    use std::cell::RefCell;

    fn mk_cluster(name: &str, tier: &str) -> Cluster {
        Cluster {
            name: name.into(),
            environment: "prod".into(),
            labels: [("tier".to_string(), tier.to_string())].into(),
        }
    }

    fn spec(soak: &str, approval: bool) -> RolloutSpec {
        let canary =
            LabelSelector { match_labels: [("tier".to_string(), "canary".to_string())].into(), ..Default::default() };
        RolloutSpec {
            waves: vec![
                WaveSpec { name: "canary".into(), cluster_selector: Some(canary), max_unavailable: None },
                WaveSpec { name: "rest".into(), cluster_selector: None, max_unavailable: Some(Quantity::Count(2)) },
            ],
            soak: Some(soak.into()),
            failure_threshold: 1,
            approval,
            analysis: None,
            on_failure: OnFailure::Pause,
        }
    }

    fn fleet() -> Vec<Cluster> {
        let mut clusters = vec![mk_cluster("c0", "canary")];
        clusters.extend((1..=5).map(|i| mk_cluster(&format!("p{i}"), "main")));
        clusters
    }

    fn rollout(spec: &RolloutSpec, clusters: &[Cluster]) -> Rollout {
        let refs: Vec<&Cluster> = clusters.iter().collect();
        let from = clusters.iter().map(|c| (c.name.clone(), "old".to_string())).collect();
        Rollout::begin("prod", spec, "new", &refs, from, 0, 0)
    }

    /// A fleet whose clusters finish whatever they are released to, unless told otherwise.
    struct World {
        done: RefCell<BTreeSet<String>>,
        failed: RefCell<BTreeSet<String>>,
        /// The latest measurement of each source's error-rate check.
        measured: RefCell<BTreeMap<String, Measurement>>,
    }

    impl World {
        fn new() -> World {
            World { done: RefCell::default(), failed: RefCell::default(), measured: RefCell::default() }
        }
        fn measured(&self) -> impl Fn(&str) -> Vec<Measurement> + '_ {
            |source| self.measured.borrow().get(source).cloned().into_iter().collect()
        }
        /// `source` measures `value` (None: inconclusive) at `at`.
        fn measure(&self, source: &str, at: i64, value: Option<f64>) {
            let error = if value.is_none() { "no data".to_string() } else { String::new() };
            let m = Measurement { check: "error-rate".into(), at_unix_ms: at, value, error };
            self.measured.borrow_mut().insert(source.to_string(), m);
        }
        fn observe(&self) -> impl Fn(&str) -> Observed + '_ {
            |c| Observed {
                changed: true,
                done: self.done.borrow().contains(c),
                failed: self.failed.borrow().contains(c),
            }
        }
        fn finish(&self, r: &Rollout) {
            self.done.borrow_mut().extend(r.released.iter().filter(|c| !self.failed.borrow().contains(*c)).cloned());
        }
    }

    #[test]
    fn waves_open_in_order_with_max_unavailable_and_soak() {
        let clusters = fleet();
        let mut r = rollout(&spec("10s", false), &clusters);
        assert_eq!(r.waves.iter().map(|w| w.clusters.len()).collect::<Vec<_>>(), [1, 5]);
        let world = World::new();
        r.step(0, world.observe(), world.measured());
        assert_eq!(r.released, ["c0".to_string()].into(), "only the canary first");
        assert!(!r.takes_new("p1") && r.running("p1") == Some("old"));
        world.finish(&r);
        r.step(1_000, world.observe(), world.measured());
        assert_eq!(r.phase, Phase::Soaking);
        r.step(5_000, world.observe(), world.measured());
        assert_eq!(r.released.len(), 1, "soak holds the next wave");
        assert_eq!(r.soak_left_ms(5_000), 6_000);
        let events = r.step(11_000, world.observe(), world.measured());
        assert!(events.contains(&"wave rest opened".to_string()), "{events:?}");
        assert_eq!(r.released.len(), 3, "two of the rest at a time");
        world.finish(&r);
        r.step(12_000, world.observe(), world.measured());
        assert_eq!(r.released.len(), 5);
        world.finish(&r);
        r.step(13_000, world.observe(), world.measured());
        world.finish(&r);
        r.step(14_000, world.observe(), world.measured());
        assert_eq!(r.phase, Phase::Complete, "no soak after the last wave");
        assert!(clusters.iter().all(|c| r.takes_new(&c.name)));
    }

    #[test]
    fn a_degraded_canary_pauses_and_later_clusters_keep_the_old_revision() {
        let clusters = fleet();
        let mut r = rollout(&spec("0", false), &clusters);
        let world = World::new();
        world.failed.borrow_mut().insert("c0".into());
        r.step(0, world.observe(), world.measured());
        let events = r.step(1, world.observe(), world.measured());
        assert_eq!(r.phase, Phase::Paused, "{events:?}");
        assert!(r.reason.contains("c0"), "{}", r.reason);
        r.step(2, world.observe(), world.measured());
        assert_eq!(r.released.len(), 1);
        assert_eq!(r.held().count(), 5);
        // Resume accepts the failure seen so far; the rollout goes on.
        r.act(Action::Resume, world.observe()).unwrap();
        world.done.borrow_mut().insert("c0".into());
        world.failed.borrow_mut().clear();
        r.step(4, world.observe(), world.measured());
        assert_eq!(r.released.len(), 3);
    }

    #[test]
    fn approval_waits_and_abort_returns_everyone() {
        let clusters = fleet();
        let mut r = rollout(&spec("0", true), &clusters);
        let world = World::new();
        r.step(0, world.observe(), world.measured());
        world.finish(&r);
        r.step(1, world.observe(), world.measured());
        assert_eq!(r.phase, Phase::AwaitingApproval);
        assert!(r.act(Action::Resume, world.observe()).is_err());
        r.act(Action::Approve, world.observe()).unwrap();
        r.step(3, world.observe(), world.measured());
        assert_eq!(r.released.len(), 3);
        r.act(Action::Abort, world.observe()).unwrap();
        assert!(clusters.iter().all(|c| r.running(&c.name) == Some("old")));
        assert!(r.act(Action::Abort, world.observe()).is_err());
    }

    #[test]
    fn a_newer_commit_takes_over_from_the_wave_reached() {
        let clusters = fleet();
        let refs: Vec<&Cluster> = clusters.iter().collect();
        let mut r = rollout(&spec("0", false), &clusters);
        let world = World::new();
        r.step(0, world.observe(), world.measured());
        world.finish(&r);
        r.step(1, world.observe(), world.measured());
        assert_eq!(r.opened, 2);
        let next = r.successor(&spec("0", false), "newer", &refs, 2);
        assert_eq!(next.opened, 2, "the waves reached stay open");
        assert_eq!(next.from["c0"], "new", "the canary moves on from what it runs");
        assert_eq!(next.from["p5"], "old", "a cluster not yet released keeps what it ran");
        let done = Rollout::settled("prod", &spec("0", false), "new", &refs, 0);
        let after = done.successor(&spec("0", false), "newer", &refs, 2);
        assert_eq!(after.opened, 1, "after a finished rollout the next starts at the first wave");
        assert!(after.from.values().all(|c| c == "new"));
    }

    #[test]
    fn clusters_no_wave_takes_form_the_rest_and_new_clusters_are_not_held() {
        let clusters = fleet();
        let only_canary = RolloutSpec { waves: spec("0", false).waves[..1].to_vec(), ..spec("0", false) };
        let refs: Vec<&Cluster> = clusters.iter().collect();
        let from = [("c0".to_string(), "old".to_string())].into();
        let r = Rollout::begin("prod", &only_canary, "new", &refs, from, 0, 0);
        assert_eq!(r.waves.last().map(|w| (w.name.as_str(), w.clusters.len())), Some(("rest", 5)));
        assert!(r.takes_new("p1"), "p1 ran nothing here before: nothing to protect");
        assert!(!r.takes_new("c0"));
    }

    fn gated(on_failure: OnFailure, failure_limit: u32) -> RolloutSpec {
        let check = CheckSpec {
            name: "error-rate".into(),
            query: "sum(rate(errors[2m]))".into(),
            success_condition: "result < 0.01".into(),
            failure_limit,
        };
        let analysis = convoy_model::analysis::AnalysisSpec {
            prometheus: convoy_model::analysis::PrometheusSpec { address: "http://prometheus:9090".into() },
            from: QueryFrom::Agent,
            interval: Some("1s".into()),
            checks: vec![check],
        };
        RolloutSpec { analysis: Some(analysis), on_failure, ..spec("10s", false) }
    }

    #[test]
    fn a_gate_that_passes_opens_the_next_wave_and_inconclusive_data_makes_it_wait() {
        let clusters = fleet();
        let mut r = rollout(&gated(OnFailure::Pause, 0), &clusters);
        let world = World::new();
        r.step(0, world.observe(), world.measured());
        world.finish(&r);
        r.step(1_000, world.observe(), world.measured());
        assert_eq!(r.phase, Phase::Soaking, "the canary soaks from 1 s");
        world.measure("c0", 500, Some(0.5));
        r.step(5_000, world.observe(), world.measured());
        assert_eq!(r.phase, Phase::Soaking, "a measurement from before the soak does not count");
        world.measure("c0", 6_000, None);
        r.step(12_000, world.observe(), world.measured());
        assert_eq!((r.phase, r.opened), (Phase::Soaking, 1), "soaked, but no data is never success");
        assert!(r.reason.contains("inconclusive on c0: no data"), "{}", r.reason);
        world.measure("c0", 12_500, Some(0.001));
        let events = r.step(13_000, world.observe(), world.measured());
        assert_eq!(r.opened, 2, "the gate passed: {events:?}");
        assert!(r.reason.is_empty());
    }

    #[test]
    fn a_gate_that_fails_past_its_limit_pauses_or_rolls_back() {
        let clusters = fleet();
        for (on_failure, phase) in [(OnFailure::Pause, Phase::Paused), (OnFailure::Rollback, Phase::Aborted)] {
            let mut r = rollout(&gated(on_failure, 1), &clusters);
            let world = World::new();
            r.step(0, world.observe(), world.measured());
            world.finish(&r);
            r.step(1_000, world.observe(), world.measured());
            world.measure("c0", 2_000, Some(0.2));
            r.step(2_100, world.observe(), world.measured());
            r.step(2_200, world.observe(), world.measured());
            assert_eq!(r.phase, Phase::Soaking, "one failure is within the limit, counted once");
            assert!(r.reason.contains("1 of 1 failures tolerated"), "{}", r.reason);
            world.measure("c0", 3_000, Some(0.3));
            let events = r.step(3_100, world.observe(), world.measured());
            assert_eq!(r.phase, phase, "{events:?}");
            assert!(
                r.reason.contains("check error-rate failed: result 0.3 on c0 does not meet result < 0.01"),
                "{}",
                r.reason
            );
            assert_eq!(r.rolled_back, on_failure == OnFailure::Rollback);
            if on_failure == OnFailure::Rollback {
                assert!(
                    r.released.is_empty() && r.held_at("c0") == Some("old"),
                    "the canary returns to the old revision"
                );
            } else {
                r.act(Action::Resume, world.observe()).unwrap();
                r.step(4_000, world.observe(), world.measured());
                assert_eq!(r.phase, Phase::Soaking, "resumed: the wave soaks again, from now");
                world.measure("c0", 4_500, Some(0.0));
                r.step(14_000, world.observe(), world.measured());
                assert_eq!(r.opened, 2, "the failures before are accepted and the gate passes");
            }
        }
    }
}

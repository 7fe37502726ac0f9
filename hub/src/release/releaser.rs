//! The releaser: what each cluster is to run now. The plan gives every cluster's assignment at
//! its environment's head; rollouts hold clusters at the commit they ran before, a rollback pins
//! an environment at a commit, and an app with a rollout of its own moves its part of each
//! assignment on its own track. The releaser owns every rollout and pin, plans the clusters they
//! hold against those earlier commits (the held plans), composes each cluster's assignment from
//! its apps' parts, and carries out people's commands (rollout actions, pin, release).
//!
//! What it decides goes to a [`Ledger`] (the state stage's publisher): it never sees the hub.
//! The current time is a parameter of every step.
//!
//! Decisions:
//! - A rollout begins for every environment (and every app with `rollout:` of its own) whose
//!   head moved, from the previous rollout's state; an environment the hub sees first is settled
//!   at its head, and an app's new track starts from what its clusters ran.
//! - A pinned environment's clusters run the pinned commit; new commits wait for the release,
//!   after which every rollout of the environment starts over from the pinned commit.
//! - A cluster's assignment is composed of each app's part at the commit its track gives it;
//!   a cluster waits (keeps what it has) while a commit it needs is not planned.
//! - A change window (`spec.windows`) that holds an app of an environment keeps that app's part
//!   of each cluster's assignment as the cluster last had it; a pin (rollback) and a person's
//!   override (`convoy rollout override`, for the environment's head of that moment) go
//!   through. A cluster never given anything has nothing to protect and takes its head. The
//!   last windows that loaded stay in force when newer ones do not.
//! - Assignments the ledger could not record (the store refused them) count as not given: the
//!   next publish gives them again, due after [`PUBLISH_RETRY`] (1 s doubling up to 30 s).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use convoy_model::analysis::Measurement;
use convoy_render::fleet::{Cluster, Environment, Fleet, FleetError, RolloutSpec};
use convoy_render::windows::{Hold, Windows};
use convoy_shared::backoff::Backoff;
use convoy_shared::model::{AppAssignment, Assignment};
use gix::ObjectId;

use crate::plan::planner::Planner;
use crate::release::rollout::{self, Action, Command, Observed, Phase, Rollout, RolloutError};
use crate::source::repository::{EnvironmentState, Repository, SyncError};

/// How long after the ledger refused assignments they are published again.
pub const PUBLISH_RETRY: Backoff = Backoff::new(std::time::Duration::from_secs(1), std::time::Duration::from_secs(30));

/// Where the releaser's decisions go, and what it reads back: assignments published to
/// clusters, rollouts and pins kept in the store, notes in a cluster's history, events for
/// watchers, and what each cluster's agent last reported. The state stage's
/// [`Publisher`](crate::state::hub::Publisher) is the one the hub uses.
pub trait Ledger {
    /// Publishes clusters' assignments, all at once; returns how many changed in content, or
    /// `None` when they could not be recorded (none was given to its cluster).
    fn publish(&self, assignments: Vec<Arc<Assignment>>) -> Option<usize>;
    /// Keeps `rollout`, replacing its track's previous one.
    fn keep_rollout(&self, rollout: &Rollout);
    /// Keeps (or with `None` lifts) an environment's pin.
    fn keep_pin(&self, environment: &str, commit: Option<&str>);
    /// Records `event` in `cluster`'s history.
    fn note(&self, cluster: &str, event: &str, revision: &str, detail: &str);
    /// Tells watchers what happened to the fleet (`kind`: rollout, rollback).
    fn event(&self, kind: &str, detail: String);
    /// The digest `cluster`'s agent last applied and the health it reported (empty, Unknown:
    /// no report).
    fn applied(&self, cluster: &str) -> (String, i32);
    /// The assignment `cluster` was last given (by this run of the hub or one before it).
    fn assigned(&self, cluster: &str) -> Option<Arc<Assignment>>;
    /// The latest metric-gate measurements from `source`: a cluster's agent, or `hub` (the
    /// hub's own queries for `environment`).
    fn measured(&self, environment: &str, source: &str) -> Vec<Measurement>;
}

/// Every rollout and pin, and the assignments they choose between.
pub struct Releaser {
    /// Plans what clusters held by a rollout or a pin run: a revision other than their
    /// branch's head.
    held_planner: Planner,
    /// Every cluster's assignment at its environment's head (from the last plan).
    desired: HashMap<String, Arc<Assignment>>,
    /// Clusters' assignments at the earlier commits rollouts began from and pins hold, by
    /// (cluster, commit).
    held: HashMap<(String, String), Arc<Assignment>>,
    /// Snapshots of the commits clusters are held at, by (environment, commit).
    held_envs: HashMap<(String, ObjectId), Arc<EnvironmentState>>,
    /// What was last published to each cluster.
    published: HashMap<String, Arc<Assignment>>,
    /// Each track's latest rollout: an environment's (`ENV`) or an app's own (`ENV/APP`).
    rollouts: BTreeMap<String, Rollout>,
    /// Environments a rollback pinned at a commit.
    pins: BTreeMap<String, String>,
    /// The change windows in force (the last ones that loaded).
    windows: Windows,
    /// Environments whose head a person let through the windows (`convoy rollout override`),
    /// and that head.
    overrides: BTreeMap<String, String>,
    /// Environments with a revision held back by a window at the last publish.
    holds: BTreeMap<String, Hold>,
    /// Publishes the ledger refused in a row, and when the next is due (ms).
    refused: Option<(u32, i64)>,
}

impl Releaser {
    /// A releaser with no rollouts or pins yet, planning held clusters with `held_planner`.
    pub fn new(held_planner: Planner) -> Self {
        Releaser {
            held_planner,
            desired: HashMap::new(),
            held: HashMap::new(),
            held_envs: HashMap::new(),
            published: HashMap::new(),
            rollouts: BTreeMap::new(),
            pins: BTreeMap::new(),
            windows: Windows::default(),
            overrides: BTreeMap::new(),
            holds: BTreeMap::new(),
            refused: None,
        }
    }

    /// When assignments the ledger refused are due to be published again, if any were.
    pub fn retry_at(&self) -> Option<i64> {
        self.refused.map(|(_, at)| at)
    }

    /// Puts `windows` in force when they loaded; broken ones leave the last good in force.
    pub fn set_windows(&mut self, windows: &Result<Windows, FleetError>) {
        if let Ok(windows) = windows {
            self.windows = windows.clone();
        }
    }

    /// Environments with a revision a window holds back, and until when.
    pub fn holds(&self) -> &BTreeMap<String, Hold> {
        &self.holds
    }

    /// Takes the rollouts and pins a previous run of the hub kept.
    pub fn restore(&mut self, rollouts: BTreeMap<String, Rollout>, pins: BTreeMap<String, String>) {
        self.rollouts = rollouts;
        self.pins = pins;
    }

    /// Each track's latest rollout.
    pub fn rollouts(&self) -> &BTreeMap<String, Rollout> {
        &self.rollouts
    }

    /// Pinned environments and their commits.
    pub fn pins(&self) -> &BTreeMap<String, String> {
        &self.pins
    }

    /// Whether something moves with time: a rollout in progress (in an environment no pin
    /// holds), or a revision a window holds back.
    pub fn active(&self) -> bool {
        !self.holds.is_empty()
            || self.rollouts.values().any(|r| r.is_active() && !self.pins.contains_key(&r.environment))
    }

    /// Takes `cluster`'s assignment at its environment's head, from a new plan.
    pub fn desire(&mut self, assignment: Arc<Assignment>) {
        self.desired.insert(assignment.cluster.clone(), assignment);
    }

    /// Forgets the clusters `fleet` no longer declares.
    pub fn forget_gone(&mut self, fleet: &Fleet) {
        self.desired.retain(|cluster, _| fleet.clusters.contains_key(cluster));
    }

    /// Starts a rollout for every environment with `rollout:`, and every app with a `rollout:`
    /// of its own, whose head moved from `previous` to `envs`: from the previous rollout's
    /// state, or settled at the head when the hub sees it first. An app's rollout that is new
    /// starts from what its clusters ran.
    pub fn begin_rollouts(
        &mut self,
        ledger: &dyn Ledger,
        fleet: &Fleet,
        previous: &HashMap<String, Arc<EnvironmentState>>,
        envs: &HashMap<String, Arc<EnvironmentState>>,
        now_ms: i64,
    ) {
        for env in &fleet.environments {
            if self.pins.contains_key(&env.name) {
                // New commits wait for the pin's release.
                continue;
            }
            let Some(state) = envs.get(&env.name) else {
                self.rollouts.retain(|_, r| r.environment != env.name);
                continue;
            };
            let head = state.snapshot.commit.to_string();
            let clusters: Vec<&Cluster> = fleet.clusters.values().filter(|c| c.environment == env.name).collect();
            let previous_head = previous.get(&env.name).map(|e| e.snapshot.commit.to_string()).filter(|c| *c != head);
            let env_before = self.rollouts.get(&env.name).cloned();
            let specs = rollout_specs(env, state);
            // An app whose app.yaml does not read keeps its rollout as it is.
            let unread = state.apps.iter().filter(|(_, app)| app.is_err()).map(|(name, _)| Some(name.as_str()));
            let kept: BTreeSet<String> =
                specs.iter().map(|(app, _)| *app).chain(unread).map(|app| rollout::track(&env.name, app)).collect();
            self.rollouts.retain(|key, r| r.environment != env.name || kept.contains(key));
            for (app, spec) in specs {
                let next = match (self.rollouts.get(&rollout::track(&env.name, app)), &previous_head) {
                    (Some(current), _) if current.revision == head => continue,
                    (Some(current), _) => current.successor(spec, &head, &clusters, now_ms),
                    (None, Some(previous)) if app.is_some() => {
                        let ran = |c: &Cluster| match &env_before {
                            Some(r) => r.running(&c.name).map(str::to_string),
                            None => Some(previous.clone()),
                        };
                        let from =
                            clusters.iter().filter_map(|c| ran(c).map(|commit| (c.name.clone(), commit))).collect();
                        Rollout::begin(&env.name, spec, &head, &clusters, from, 0, now_ms).of_app(app)
                    }
                    (None, _) => Rollout::settled(&env.name, spec, &head, &clusters, now_ms).of_app(app),
                };
                if next.phase != Phase::Complete {
                    let detail = format!(
                        "{}: rolling out {} in {} waves (from wave {})",
                        next.track(),
                        rollout::short(&head),
                        next.waves.len(),
                        next.opened
                    );
                    ledger.event("rollout", detail);
                }
                ledger.keep_rollout(&next);
                self.rollouts.insert(next.track(), next);
            }
        }
    }

    /// Plans, against that commit, the clusters rollouts began from an earlier commit (held
    /// there, or the baseline a released one is measured against) and those a pin holds.
    pub fn plan_held(&mut self, fleet: &Fleet, repository: &mut Repository, errors: &mut Vec<SyncError>) {
        let mut groups: BTreeMap<(String, String), BTreeMap<String, Cluster>> = BTreeMap::new();
        for rollout in self.rollouts.values().filter(|r| r.phase != Phase::Complete) {
            if self.pins.contains_key(&rollout.environment) {
                continue;
            }
            for (name, commit) in &rollout.from {
                if let Some(cluster) = fleet.clusters.get(name) {
                    let key = (rollout.environment.clone(), commit.clone());
                    groups.entry(key).or_default().insert(name.clone(), cluster.clone());
                }
            }
        }
        for (environment, commit) in &self.pins {
            for cluster in fleet.clusters.values().filter(|c| &c.environment == environment) {
                let key = (environment.clone(), commit.clone());
                groups.entry(key).or_default().insert(cluster.name.clone(), cluster.clone());
            }
        }
        let mut held = HashMap::new();
        let mut used = std::collections::HashSet::new();
        for ((environment, commit), clusters) in groups {
            let Some(env) = fleet.environment(&environment) else { continue };
            let Ok(id) = ObjectId::from_hex(commit.as_bytes()) else { continue };
            let key = (environment.clone(), id);
            let state = match self.held_envs.get(&key) {
                Some(state) => state.clone(),
                None => match repository.environment_at(env, id) {
                    Ok(state) => state,
                    Err(e) => {
                        errors.push(SyncError::Snapshot(Arc::new(e)));
                        continue;
                    }
                },
            };
            used.insert(key.clone());
            self.held_envs.insert(key, state.clone());
            let (plans, _) = self.held_planner.plan(&clusters, &HashMap::from([(environment, state)]));
            held.extend(
                plans.into_iter().map(|plan| ((plan.assignment.cluster.clone(), commit.clone()), plan.assignment)),
            );
        }
        self.held_envs.retain(|key, _| used.contains(key));
        self.held = held;
    }

    /// `cluster`'s assignment at `commit` (`None`: its head's).
    fn at(&self, cluster: &str, commit: Option<&str>) -> Option<&Arc<Assignment>> {
        match commit {
            None => self.desired.get(cluster),
            Some(commit) => self.held.get(&(cluster.to_string(), commit.to_string())),
        }
    }

    /// The rollouts of `environment`, and the apps among them with rollouts of their own.
    fn tracks(&self, environment: &str) -> (Vec<&Rollout>, BTreeSet<String>) {
        let tracks: Vec<&Rollout> = self.rollouts.values().filter(|r| r.environment == environment).collect();
        let own = tracks.iter().filter_map(|r| r.app.clone()).collect();
        (tracks, own)
    }

    /// What `cluster` is to run now: its head's assignment, the one a pin holds it at, or the
    /// apps' parts at the commits their rollouts give it: each app's own rollout for its part,
    /// the environment's for the rest. `None` while a commit it needs is not planned.
    fn target(&self, cluster: &str, desired: &Arc<Assignment>) -> Option<Arc<Assignment>> {
        if let Some(pin) = self.pins.get(&desired.environment) {
            return self.at(cluster, Some(pin)).cloned();
        }
        let (tracks, own) = self.tracks(&desired.environment);
        let base = tracks.iter().find(|r| r.app.is_none()).and_then(|r| r.held_at(cluster));
        let apps: Vec<(&str, Option<&str>)> =
            tracks.iter().filter_map(|r| r.app.as_deref().map(|app| (app, r.held_at(cluster)))).collect();
        let base_assignment = self.at(cluster, base)?;
        if apps.iter().all(|(_, c)| *c == base) {
            return Some(base_assignment.clone());
        }
        let mut failed = base_assignment.failed;
        let mut parts: Vec<(&str, &Arc<AppAssignment>)> =
            base_assignment.digested_apps().filter(|(_, part)| !own.contains(&part.name)).collect();
        let mut chart_sources = base_assignment.chart_sources.clone();
        chart_sources.retain(|app, _| !own.contains(app));
        for (app, commit) in apps {
            let source = self.at(cluster, commit)?;
            failed |= source.failed;
            parts.extend(source.digested_apps().filter(|(_, part)| part.name == app));
            chart_sources.extend(source.chart_sources.get(app).map(|chart| (app.to_string(), chart.clone())));
        }
        let revision = &base_assignment.revision;
        let mut composed = Assignment::compose(cluster, &desired.environment, revision, parts, failed)
            .with_gate_queries(desired.gate_queries.clone());
        composed.trace_context = desired.trace_context.clone();
        composed.chart_sources = chart_sources;
        Some(Arc::new(composed))
    }

    /// Publishes to each cluster what it is to run now (its pin, its tracks, less what a change
    /// window holds back at `now_ms`) where that differs from what it was last given. Returns
    /// how many assignments changed.
    pub fn publish(&mut self, ledger: &dyn Ledger, now_ms: i64) -> usize {
        let _span = tracing::info_span!("publish", published = tracing::field::Empty).entered();
        let mut holds = BTreeMap::new();
        let mut judged = HashMap::new();
        let mut changed = Vec::new();
        for (cluster, desired) in &self.desired {
            let Some(mut target) = self.target(cluster, desired) else { continue };
            let environment = &desired.environment;
            let windows_apply = !self.windows.is_empty()
                && !self.pins.contains_key(environment)
                && self.overrides.get(environment) != Some(&desired.revision);
            if windows_apply
                && let Some(current) = self.published.get(cluster).cloned().or_else(|| ledger.assigned(cluster))
            {
                let mut hold = |app: &str| {
                    judged
                        .entry((environment.clone(), app.to_string()))
                        .or_insert_with(|| self.windows.hold(environment, app, now_ms))
                        .clone()
                };
                if let Some((kept, hold)) = hold_back(target.clone(), &current, &mut hold) {
                    target = kept;
                    holds.entry(environment.clone()).or_insert(hold);
                }
            }
            let same = |last: &Arc<Assignment>| {
                Arc::ptr_eq(last, &target) || (last.digest == target.digest && last.revision == target.revision)
            };
            if self.published.get(cluster).is_some_and(same) {
                continue;
            }
            changed.push(target);
        }
        let published = match ledger.publish(changed.clone()) {
            Some(published) => {
                for target in changed {
                    self.published.insert(target.cluster.clone(), target);
                }
                self.refused = None;
                published
            }
            None => {
                let failures = self.refused.map_or(1, |(n, _)| n + 1);
                let wait = PUBLISH_RETRY.ceiling(failures).as_millis() as i64;
                self.refused = Some((failures, now_ms + wait));
                0
            }
        };
        for (environment, hold) in &holds {
            if self.holds.get(environment) != Some(hold) {
                let until = convoy_shared::clock::rfc3339(hold.until_ms);
                ledger.event("window", format!("{environment}: held by window {} until {until}", hold.window));
            }
        }
        for environment in self.holds.keys().filter(|e| !holds.contains_key(*e)) {
            ledger.event("window", format!("{environment}: no window holds it; held revisions go out"));
        }
        self.holds = holds;
        tracing::Span::current().record("published", published);
        published
    }

    /// What the hub sees of `cluster` for `rollout`: the parts of its assignment the rollout
    /// decides, at the new revision against the commit it began from, and whether the
    /// assignment it was last given carries them and is applied.
    fn observe(&self, ledger: &dyn Ledger, rollout: &Rollout, own: &BTreeSet<String>, cluster: &str) -> Observed {
        let parts = |a| governed(a, rollout, own);
        let new = parts(self.desired.get(cluster));
        let from = parts(rollout.from.get(cluster).and_then(|commit| self.at(cluster, Some(commit))));
        let (applied, health) = ledger.applied(cluster);
        let runs_new = self.desired.contains_key(cluster)
            && self.published.get(cluster).is_some_and(|p| p.digest == applied && parts(Some(p)) == new);
        Observed::of(new != from, runs_new, health)
    }

    /// Steps every rollout in progress at `now_ms`; true when one moved (then what it releases
    /// is for [`Self::publish`]).
    pub fn step_rollouts(&mut self, ledger: &dyn Ledger, now_ms: i64) -> bool {
        let mut stepped = Vec::new();
        for rollout in self.rollouts.values().filter(|r| r.is_active()) {
            let mut next = rollout.clone();
            let _span = tracing::info_span!("rollout", track = %rollout.track()).entered();
            let (_, own) = self.tracks(&rollout.environment);
            // A step looks at each cluster several times; read its link once per step.
            let seen = std::cell::RefCell::new(HashMap::new());
            let observe = |c: &str| {
                *seen.borrow_mut().entry(c.to_string()).or_insert_with(|| self.observe(ledger, rollout, &own, c))
            };
            let measured = |source: &str| ledger.measured(&rollout.environment, source);
            for event in next.step(now_ms, observe, measured) {
                tracing::info!(revision = %rollout.revision, "{event}");
                ledger.event("rollout", format!("{}: {event}", rollout.track()));
            }
            if next != *rollout {
                ledger.keep_rollout(&next);
                stepped.push(next);
            }
        }
        let changed = !stepped.is_empty();
        for next in stepped {
            if next.rolled_back && !self.pins.contains_key(&next.environment) {
                self.pin_after_failed_gate(ledger, &next);
            }
            self.rollouts.insert(next.track(), next);
        }
        changed
    }

    /// Pins the environment of `rolled_back` (a failing gate aborted it) at the commit most of
    /// its clusters ran before, each cluster's history saying which check failed and how.
    fn pin_after_failed_gate(&mut self, ledger: &dyn Ledger, rolled_back: &Rollout) {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for commit in rolled_back.from.values() {
            *counts.entry(commit.as_str()).or_default() += 1;
        }
        let Some((commit, _)) = counts.into_iter().max_by_key(|(_, n)| *n) else { return };
        let commit = commit.to_string();
        let environment = rolled_back.environment.clone();
        for cluster in rolled_back.from.keys() {
            ledger.note(cluster, "rolled back", &commit, &rolled_back.reason);
        }
        let short = rollout::short(&commit).to_string();
        ledger.event(
            "rollback",
            format!(
                "{environment}: pinned at {short} ({}); `convoy rollback {environment} --release` lifts it",
                rolled_back.reason
            ),
        );
        ledger.keep_pin(&environment, Some(&commit));
        self.pins.insert(environment, commit);
    }

    /// Carries out a person's `command` on `environment` at `now_ms`: a rollout action, a pin
    /// or a release. `fleet` and `envs` are the fleet model and heads as last read.
    pub fn command(
        &mut self,
        ledger: &dyn Ledger,
        environment: &str,
        command: Command,
        fleet: Option<&Arc<Fleet>>,
        envs: &HashMap<String, Arc<EnvironmentState>>,
        now_ms: i64,
    ) -> Result<String, RolloutError> {
        match command {
            Command::Rollout { action, app } => self.act(ledger, environment, app.as_deref(), action),
            Command::Pin { commit } => self.pin(ledger, environment, commit, fleet),
            Command::Release => self.release(ledger, environment, fleet, envs, now_ms),
            Command::Override { by, reason } => self.let_through(ledger, environment, &by, &reason),
        }
    }

    /// Lets the head of `environment`, which a change window holds back, through once: its
    /// clusters take it; the next commit is held again. Each cluster's history says who and why.
    fn let_through(
        &mut self,
        ledger: &dyn Ledger,
        environment: &str,
        by: &str,
        reason: &str,
    ) -> Result<String, RolloutError> {
        let hold = self.holds.get(environment).ok_or_else(|| RolloutError::NotHeld(environment.into()))?;
        let head = self.desired.values().find(|a| a.environment == environment).map(|a| a.revision.clone());
        let head = head.ok_or_else(|| RolloutError::NotHeld(environment.into()))?;
        let detail = format!("{by} let it through window {}: {reason}", hold.window);
        let clusters: BTreeSet<&str> =
            self.desired.values().filter(|a| a.environment == environment).map(|a| a.cluster.as_str()).collect();
        for cluster in clusters {
            ledger.note(cluster, "override", &head, &detail);
        }
        let short = rollout::short(&head).to_string();
        ledger.event("window", format!("{environment}: {short} let through window {} by {by}: {reason}", hold.window));
        let message =
            format!("{environment}: {short} goes out despite window {} (asked by {by}: {reason})", hold.window);
        self.overrides.retain(|env, _| env != environment);
        self.overrides.insert(environment.to_string(), head);
        Ok(message)
    }

    /// Carries out `action` on `environment`'s rollout, or on `app`'s own in it.
    fn act(
        &mut self,
        ledger: &dyn Ledger,
        environment: &str,
        app: Option<&str>,
        action: Action,
    ) -> Result<String, RolloutError> {
        if let Some(commit) = self.pins.get(environment) {
            return Err(RolloutError::Pinned { environment: environment.to_string(), commit: commit.clone() });
        }
        let key = rollout::track(environment, app);
        let current = self.rollouts.get(&key).ok_or_else(|| RolloutError::None(key.clone()))?;
        let (_, own) = self.tracks(environment);
        let mut next = current.clone();
        let message = next.act(action, |c| self.observe(ledger, current, &own, c))?;
        ledger.event("rollout", format!("{key}: {message}"));
        ledger.keep_rollout(&next);
        self.rollouts.insert(key, next);
        Ok(message)
    }

    /// Pins `environment` at `commit`: every cluster of it runs that commit, new ones wait.
    fn pin(
        &mut self,
        ledger: &dyn Ledger,
        environment: &str,
        commit: String,
        fleet: Option<&Arc<Fleet>>,
    ) -> Result<String, RolloutError> {
        let fleet = fleet.ok_or_else(|| RolloutError::UnknownEnvironment(environment.into()))?;
        if fleet.environment(environment).is_none() {
            return Err(RolloutError::UnknownEnvironment(environment.into()));
        }
        for cluster in fleet.clusters.values().filter(|c| c.environment == environment) {
            ledger.note(&cluster.name, "pinned", &commit, "convoy rollback");
        }
        let short = rollout::short(&commit).to_string();
        ledger.event("rollback", format!("{environment}: pinned at {short}"));
        ledger.keep_pin(environment, Some(&commit));
        self.pins.insert(environment.to_string(), commit);
        Ok(format!("{environment} pinned at {short}; new commits wait for `convoy rollback {environment} --release`"))
    }

    /// Lifts `environment`'s pin: its head reaches its clusters again, in waves when it has a
    /// rollout (starting from the pinned commit).
    fn release(
        &mut self,
        ledger: &dyn Ledger,
        environment: &str,
        fleet: Option<&Arc<Fleet>>,
        envs: &HashMap<String, Arc<EnvironmentState>>,
        now_ms: i64,
    ) -> Result<String, RolloutError> {
        let pinned = self.pins.remove(environment).ok_or_else(|| RolloutError::NotPinned(environment.into()))?;
        ledger.keep_pin(environment, None);
        let env = fleet.and_then(|f| f.environment(environment));
        let state = envs.get(environment).map(|state| (state.snapshot.commit.to_string(), state.clone()));
        if let (Some(fleet), Some(env), Some((head, state))) = (fleet, env, state)
            && head != pinned
        {
            // Every rollout of the environment starts over from the pinned commit.
            let clusters: Vec<&Cluster> = fleet.clusters.values().filter(|c| c.environment == environment).collect();
            let from: BTreeMap<String, String> = clusters.iter().map(|c| (c.name.clone(), pinned.clone())).collect();
            for (app, spec) in rollout_specs(env, &state) {
                let next = Rollout::begin(environment, spec, &head, &clusters, from.clone(), 0, now_ms).of_app(app);
                ledger.keep_rollout(&next);
                self.rollouts.insert(next.track(), next);
            }
        }
        let short = rollout::short(&pinned);
        ledger.event("rollback", format!("{environment}: released from {short}"));
        Ok(format!("{environment} released from {short}; its head reaches its clusters again"))
    }
}

/// `target` less what change windows hold back: the part of each app `hold` holds stays as
/// in `current`. `None` when nothing is held back (no app that moves is held); else the
/// assignment to give and the first hold.
fn hold_back(
    target: Arc<Assignment>,
    current: &Arc<Assignment>,
    hold: &mut dyn FnMut(&str) -> Option<Hold>,
) -> Option<(Arc<Assignment>, Hold)> {
    let digest =
        |a: &Arc<Assignment>, app: &str| a.digested_apps().find(|(_, p)| p.name == app).map(|(d, _)| d.to_string());
    let names: BTreeSet<&str> = target.apps.iter().chain(&current.apps).map(|a| a.name.as_str()).collect();
    let moving: Vec<&str> = names.into_iter().filter(|app| digest(&target, app) != digest(current, app)).collect();
    let mut first = None;
    let mut held = BTreeSet::new();
    for app in &moving {
        if let Some(h) = hold(app) {
            first.get_or_insert(h);
            held.insert(app.to_string());
        }
    }
    let first = first?;
    if held.len() == moving.len() {
        return Some((current.clone(), first));
    }
    let mut parts: Vec<(&str, &Arc<AppAssignment>)> =
        target.digested_apps().filter(|(_, part)| !held.contains(&part.name)).collect();
    parts.extend(current.digested_apps().filter(|(_, part)| held.contains(&part.name)));
    let mut kept = Assignment::compose(&target.cluster, &target.environment, &target.revision, parts, target.failed)
        .with_gate_queries(target.gate_queries.clone());
    kept.trace_context = target.trace_context.clone();
    kept.chart_sources = target.chart_sources.clone();
    kept.chart_sources.retain(|app, _| !held.contains(app));
    kept.chart_sources.extend(
        current.chart_sources.iter().filter(|(app, _)| held.contains(*app)).map(|(a, c)| (a.clone(), c.clone())),
    );
    Some((Arc::new(kept), first))
}

/// The rollouts `env` has at `state`'s commit: the environment's (app `None`), then each app's
/// own.
fn rollout_specs<'a>(env: &'a Environment, state: &'a EnvironmentState) -> Vec<(Option<&'a str>, &'a RolloutSpec)> {
    let apps =
        state.apps.iter().filter_map(|(name, app)| Some((Some(name.as_str()), app.as_ref().ok()?.rollout.as_ref()?)));
    env.rollout.iter().map(|spec| (None, spec)).chain(apps).collect()
}

/// The (app, digest) parts of `assignment` that `rollout` decides.
fn governed<'a>(
    assignment: Option<&'a Arc<Assignment>>,
    rollout: &Rollout,
    own: &BTreeSet<String>,
) -> Vec<(&'a str, &'a str)> {
    let Some(assignment) = assignment else { return Vec::new() };
    assignment
        .digested_apps()
        .filter(|(_, app)| rollout.governs(&app.name, own))
        .map(|(digest, app)| (app.name.as_str(), digest))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A ledger that writes down what it is told; every cluster reports nothing applied.
    #[derive(Default)]
    struct Notebook {
        published: RefCell<Vec<(String, String)>>,
        /// Publishes still to refuse, as a store that went away does.
        refuse: std::cell::Cell<u32>,
        pins: RefCell<Vec<(String, Option<String>)>>,
        notes: RefCell<Vec<(String, String)>>,
        events: RefCell<Vec<String>>,
    }

    impl Ledger for Notebook {
        fn publish(&self, assignments: Vec<Arc<Assignment>>) -> Option<usize> {
            if self.refuse.get() > 0 {
                self.refuse.set(self.refuse.get() - 1);
                return None;
            }
            let mut published = self.published.borrow_mut();
            published.extend(assignments.iter().map(|a| (a.cluster.clone(), a.revision.clone())));
            Some(assignments.len())
        }
        fn keep_rollout(&self, _: &Rollout) {}
        fn keep_pin(&self, environment: &str, commit: Option<&str>) {
            self.pins.borrow_mut().push((environment.into(), commit.map(str::to_string)));
        }
        fn note(&self, cluster: &str, event: &str, _: &str, _: &str) {
            self.notes.borrow_mut().push((cluster.into(), event.into()));
        }
        fn event(&self, kind: &str, detail: String) {
            self.events.borrow_mut().push(format!("{kind}: {detail}"));
        }
        fn applied(&self, _: &str) -> (String, i32) {
            Default::default()
        }
        fn assigned(&self, _: &str) -> Option<Arc<Assignment>> {
            None
        }
        fn measured(&self, _: &str, _: &str) -> Vec<Measurement> {
            Vec::new()
        }
    }

    fn mk_cluster(name: &str) -> Cluster {
        Cluster { name: name.into(), environment: "prod".into(), labels: BTreeMap::new() }
    }

    /// `prod` on branch `main`, without a rollout, with clusters eu-1 and eu-2.
    fn mk_fleet() -> Arc<Fleet> {
        Arc::new(Fleet {
            fleet_branch: "main".into(),
            environments: vec![Environment {
                name: "prod".into(),
                branch: "main".into(),
                rollout: None,
                ignore_differences: Vec::new(),
                health: Vec::new(),
            }],
            clusters: ["eu-1", "eu-2"].map(|name| (name.to_string(), mk_cluster(name))).into(),
            cluster_errors: Vec::new(),
            access: Ok(Default::default()),
            windows: Ok(Default::default()),
            health_errors: Vec::new(),
            notifications: Ok(Default::default()),
            commit_status: Ok(None),
        })
    }

    /// A releaser whose plan put eu-1 and eu-2 at `revision`.
    fn mk_releaser(revision: &str) -> Releaser {
        let mut releaser = Releaser::new(Planner::fetching(None));
        for cluster in ["eu-1", "eu-2"] {
            releaser.desire(Arc::new(crate::testing::assignment(cluster, revision)));
        }
        releaser
    }

    #[test]
    fn each_cluster_is_given_its_head_once_and_again_when_it_changes() {
        let (mut releaser, ledger) = (mk_releaser("r1"), Notebook::default());
        assert_eq!(releaser.publish(&ledger, 0), 2);
        assert_eq!(releaser.publish(&ledger, 0), 0, "nothing changed");
        releaser.desire(Arc::new(crate::testing::assignment("eu-1", "r2")));
        assert_eq!(releaser.publish(&ledger, 0), 1);
        assert_eq!(ledger.published.borrow().last(), Some(&("eu-1".to_string(), "r2".to_string())));
        assert!(!releaser.step_rollouts(&ledger, 0), "no rollout, nothing steps");
    }

    #[test]
    fn assignments_the_store_refused_are_given_again_after_a_backoff() {
        let (mut releaser, ledger) = (mk_releaser("r1"), Notebook::default());
        ledger.refuse.set(2);
        assert_eq!(releaser.publish(&ledger, 0), 0);
        assert_eq!(releaser.retry_at(), Some(1_000), "again in 1 s");
        assert_eq!(releaser.publish(&ledger, 1_000), 0);
        assert_eq!(releaser.retry_at(), Some(3_000), "then 2 s later");
        assert!(ledger.published.borrow().is_empty());
        assert_eq!(releaser.publish(&ledger, 3_000), 2, "both clusters, as if never published");
        assert_eq!(releaser.retry_at(), None);
        assert_eq!(releaser.publish(&ledger, 3_000), 0, "and then only once");
    }

    #[test]
    fn a_pin_holds_its_clusters_until_released() {
        let (mut releaser, ledger, fleet) = (mk_releaser("r1"), Notebook::default(), mk_fleet());
        let envs = HashMap::new();
        let pin = Command::Pin { commit: "c0ffee0012345678".into() };
        let pinned = releaser.command(&ledger, "prod", pin, Some(&fleet), &envs, 0).unwrap();
        assert!(pinned.starts_with("prod pinned at c0ffee00"), "{pinned}");
        assert_eq!(*ledger.pins.borrow(), [("prod".to_string(), Some("c0ffee0012345678".to_string()))]);
        let notes = ledger.notes.borrow().clone();
        assert_eq!(notes, [("eu-1".into(), "pinned".into()), ("eu-2".into(), "pinned".into())]);
        assert_eq!(*ledger.events.borrow(), ["rollback: prod: pinned at c0ffee00"]);
        // The pinned commit is not planned (no held plan yet): its clusters wait, given nothing.
        assert_eq!(releaser.publish(&ledger, 0), 0);
        let pause = Command::Rollout { action: Action::Pause, app: None };
        let refused = releaser.command(&ledger, "prod", pause, Some(&fleet), &envs, 0).unwrap_err();
        assert!(matches!(refused, RolloutError::Pinned { .. }), "{refused}");

        let released = releaser.command(&ledger, "prod", Command::Release, Some(&fleet), &envs, 0).unwrap();
        assert!(released.starts_with("prod released from c0ffee00"), "{released}");
        assert_eq!(ledger.pins.borrow().last(), Some(&("prod".to_string(), None)));
        assert_eq!(releaser.publish(&ledger, 0), 2, "the heads reach the clusters again");
    }

    #[test]
    fn pin_and_release_name_what_does_not_apply() {
        let (mut releaser, ledger, fleet) = (mk_releaser("r1"), Notebook::default(), mk_fleet());
        let envs = HashMap::new();
        let released = releaser.command(&ledger, "prod", Command::Release, Some(&fleet), &envs, 0);
        assert_eq!(released, Err(RolloutError::NotPinned("prod".into())));
        let pin = || Command::Pin { commit: "c0ffee00".into() };
        let unknown = releaser.command(&ledger, "qa", pin(), Some(&fleet), &envs, 0);
        assert_eq!(unknown, Err(RolloutError::UnknownEnvironment("qa".into())));
        let unread = releaser.command(&ledger, "prod", pin(), None, &envs, 0);
        assert_eq!(unread, Err(RolloutError::UnknownEnvironment("prod".into())), "no fleet model read yet");
        assert!(ledger.pins.borrow().is_empty());
    }

    #[test]
    fn a_window_holds_new_revisions_back_until_it_closes_or_someone_lets_them_through() {
        use convoy_render::windows::{Kind, WindowSpec};
        let (mut releaser, ledger, fleet) = (mk_releaser("r1"), Notebook::default(), mk_fleet());
        let freeze = WindowSpec {
            name: "freeze".into(),
            kind: Kind::Deny,
            schedule: "0 0 * * *".into(),
            duration: "12h".into(),
            time_zone: None,
            environments: vec!["prod".into()],
            apps: vec![],
        };
        releaser.set_windows(&Ok(Windows::new(vec![freeze], &["prod"]).unwrap()));
        let hour = |h: i64| 1_796_601_600_000 + h * 3_600_000; // 2026-12-07T00:00:00Z + h
        assert_eq!(releaser.publish(&ledger, hour(6)), 2, "first assignments: nothing running to protect");
        let desire = |releaser: &mut Releaser, revision: &str| {
            for cluster in ["eu-1", "eu-2"] {
                releaser.desire(Arc::new(crate::testing::assignment(cluster, revision)));
            }
        };
        desire(&mut releaser, "r2");
        assert_eq!(releaser.publish(&ledger, hour(6)), 0, "inside the freeze the clusters keep r1");
        assert_eq!(releaser.holds()["prod"].until_ms, hour(12));
        assert!(releaser.active(), "the hold ends with time: the loop ticks");
        assert_eq!(
            ledger.events.borrow().last().unwrap(),
            "window: prod: held by window freeze until 2026-12-07T12:00:00Z"
        );

        let through = Command::Override { by: "alice".into(), reason: "hotfix for the outage".into() };
        let message = releaser.command(&ledger, "prod", through, Some(&fleet), &HashMap::new(), hour(6)).unwrap();
        assert!(message.contains("r2") && message.contains("alice") && message.contains("hotfix"), "{message}");
        assert_eq!(*ledger.notes.borrow(), [("eu-1".into(), "override".into()), ("eu-2".into(), "override".into())]);
        assert_eq!(releaser.publish(&ledger, hour(6)), 2, "r2 goes out once");
        desire(&mut releaser, "r3");
        assert_eq!(releaser.publish(&ledger, hour(7)), 0, "the next commit is held again");
        assert_eq!(releaser.publish(&ledger, hour(13)), 2, "after the freeze r3 goes out");
        assert!(releaser.holds().is_empty() && !releaser.active());
        let nothing = Command::Override { by: "alice".into(), reason: "again".into() };
        let refused = releaser.command(&ledger, "prod", nothing, Some(&fleet), &HashMap::new(), hour(13));
        assert_eq!(refused, Err(RolloutError::NotHeld("prod".into())));
    }

    #[test]
    fn a_window_over_one_app_holds_only_that_apps_part() {
        let app = |name: &str, value: &str| AppAssignment {
            name: name.into(),
            policy: Default::default(),
            depends_on: vec![],
            objects: vec![serde_json::json!({"kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}})]
                .into(),
            render_error: None,
            ignore_differences: Vec::new(),
            health_rules: Vec::new(),
        };
        let at = |revision: &str, web: &str, api: &str| {
            Arc::new(Assignment::new("eu-1", "prod", revision, vec![app("web", web), app("api", api)], false))
        };
        let (current, target) = (at("r1", "1", "1"), at("r2", "2", "2"));
        let mut web_held = |name: &str| {
            (name == "web").then(|| Hold {
                window: "office".into(),
                kind: convoy_render::windows::Kind::Allow,
                until_ms: 9,
            })
        };
        let (kept, hold) = hold_back(target.clone(), &current, &mut web_held).unwrap();
        assert_eq!(hold.window, "office");
        let part = |a: &Assignment, name: &str| {
            a.apps.iter().find(|p| p.name == name).unwrap().objects[0]["data"]["v"].clone()
        };
        assert_eq!((part(&kept, "web"), part(&kept, "api")), (serde_json::json!("1"), serde_json::json!("2")));
        assert_eq!(kept.revision, "r2");
        assert!(hold_back(target.clone(), &current, &mut |_| None).is_none(), "no window: nothing held");
        let same_web = at("r2", "1", "2");
        assert!(hold_back(same_web, &current, &mut web_held).is_none(), "web does not move: nothing to hold");
        let all = hold_back(target, &current, &mut |_| web_held("web")).unwrap();
        assert!(Arc::ptr_eq(&all.0, &current), "everything held: the cluster keeps what it has");
    }
}

//! The Reconciler: takes the current assignment, applies it (apps in dependsOn order, objects in
//! phase order), prunes what left Git when that is safe, keeps the inventory, starts the drift
//! watches, and turns every apply result, drift change and health change into a report.
//!
//! Decisions:
//! - An app is applied once its dependencies are applied and Healthy; a dependsOn cycle or a
//!   dependency not assigned here holds it back, with the reason in its status.
//! - Prune runs only after every app of a fresh, not-failed assignment applied cleanly, never
//!   from the cached assignment at start-up.
//! - After a pass ([`Progress::after_pass`]): errors requeue with backoff; a blocked app whose
//!   dependency became healthy passes again now; otherwise wait for a change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use convoy_shared::backoff::Backoff;
use convoy_shared::model::report::{AppStatus, Health, ObjectStatus, Report};
use convoy_shared::model::{AppAssignment, Assignment, Ignored, ObjectRef, canonical_json};
use convoy_shared::telemetry;
use tracing::Instrument;

use crate::applier::{Applier, ApplyError, Prepared, RetryPolicy};
use crate::cache::Cache;
use crate::discovery::Discovery;
use crate::drift::{DriftWatcher, HealPolicy, Live, ObjKey, key_of};
use crate::generated::Generated;
use crate::inventory::{Entry, Inventory, InventoryStore, entry_id};
use crate::metrics::PassMetrics;
use crate::order;
use crate::prune::Pruner;
use crate::report_queue::ReportQueue;
use crate::sops::{self, AgeKeys};
use convoy_shared::clock::unix_ms;

/// Errors that stop the reconciler (none today: every failure is reported and retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

/// How the reconciler behaves.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// The cluster name, written into the `convoy.dev/cluster` label.
    pub cluster: String,
    /// The agent's namespace, where the inventory ConfigMap lives.
    pub namespace: String,
    /// Where the assignment and inventory are cached.
    pub cache_dir: std::path::PathBuf,
    /// API requests in flight during one apply phase or prune rank.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub heal: HealPolicy,
    /// Longest wait between retries of a pass that left errors.
    pub max_retry_interval: Duration,
    /// The age identities SOPS-encrypted objects are decrypted with, just before apply.
    pub sops: AgeKeys,
}

impl ReconcilerConfig {
    /// Defaults for `cluster` with its cache in `cache_dir`.
    pub fn new(cluster: &str, cache_dir: impl Into<std::path::PathBuf>) -> Self {
        ReconcilerConfig {
            cluster: cluster.to_string(),
            namespace: "convoy-system".into(),
            cache_dir: cache_dir.into(),
            concurrency: 16,
            retry: RetryPolicy::default(),
            heal: HealPolicy::default(),
            max_retry_interval: Duration::from_secs(60),
            sops: AgeKeys::default(),
        }
    }
}

/// Where the reconciler is with the current assignment.
struct Progress {
    assignment: Arc<Assignment>,
    /// The assignment came fresh from the hub (not the cache at start-up) and is not failed.
    prune_allowed: bool,
    pruned: bool,
    /// Apps whose every object applied cleanly for this assignment.
    applied_apps: HashSet<String>,
    /// Apps held back, with the reason.
    blocked: BTreeMap<String, String>,
    /// Last apply error per object (by inventory id).
    errors: HashMap<String, String>,
    /// Normalized reference per inventory id of the raw object, for the objects whose reference
    /// normalizing changed (a namespace settled, a version resolved); the others are their raw one.
    refs: HashMap<String, ObjectRef>,
    failures: u32,
}

impl Progress {
    fn new(assignment: Arc<Assignment>, prune_allowed: bool) -> Self {
        Progress {
            prune_allowed: prune_allowed && !assignment.failed,
            assignment,
            pruned: false,
            applied_apps: HashSet::new(),
            blocked: BTreeMap::new(),
            errors: HashMap::new(),
            refs: HashMap::new(),
            failures: 0,
        }
    }

    fn all_applied(&self) -> bool {
        self.assignment.apps.iter().all(|a| self.applied_apps.contains(&a.name))
    }

    /// What to do after a pass. Errors back off (1 s doubling up to `max_retry`); an app held
    /// back for a dependency that became healthy during the pass runs now; other held-back apps
    /// wait for a health change, with `max_retry` as a safety net; a clean pass waits.
    fn after_pass(&mut self, unblocked: bool, max_retry: Duration) -> Next {
        if !self.errors.is_empty() {
            self.failures += 1;
            return Next::RequeueAfter(Backoff::new(Duration::from_secs(1), max_retry).ceiling(self.failures));
        }
        if unblocked {
            return Next::Pass;
        }
        self.failures = 0;
        if self.blocked.is_empty() { Next::Wait } else { Next::RequeueAfter(max_retry) }
    }

    /// Is some blocked app ready now, by `health` of its dependencies?
    fn unblocked(&self, health: &dyn Fn(&AppAssignment) -> Health) -> bool {
        let apps: HashMap<&str, &AppAssignment> =
            self.assignment.apps.iter().map(|a| (a.name.as_str(), &**a)).collect();
        self.blocked.keys().any(|name| {
            apps.get(name.as_str()).is_some_and(|app| {
                app.depends_on.iter().all(|d| {
                    self.applied_apps.contains(d)
                        && apps.get(d.as_str()).is_some_and(|dep| health(dep) == Health::Healthy)
                })
            })
        })
    }

    /// The apps of `assignment` to apply in this pass: not applied yet, every dependency applied
    /// and `health` says Healthy. The others are held back in `blocked`, with the reason.
    fn ready_apps<'a>(
        &mut self,
        assignment: &'a Assignment,
        health: &dyn Fn(&AppAssignment) -> Health,
    ) -> Vec<&'a AppAssignment> {
        let deps: BTreeMap<String, Vec<String>> =
            assignment.apps.iter().map(|a| (a.name.clone(), a.depends_on.clone())).collect();
        let in_cycle: HashSet<String> = match order::waves(&deps) {
            Ok(_) => HashSet::new(),
            Err(order::OrderError::Cycle(apps)) => apps.into_iter().collect(),
        };
        self.blocked.clear();
        let mut ready = Vec::new();
        for app in &assignment.apps {
            if self.applied_apps.contains(&app.name) {
                continue;
            }
            if in_cycle.contains(&app.name) {
                self.blocked.insert(app.name.clone(), format!("dependsOn cycle among {in_cycle:?}"));
                continue;
            }
            let waiting: Vec<String> = app
                .depends_on
                .iter()
                .filter_map(|d| match assignment.apps.iter().find(|a| &a.name == d) {
                    None => Some(format!("{d} (not assigned to this cluster)")),
                    Some(dep) => {
                        let h = health(dep);
                        (!self.applied_apps.contains(d) || h != Health::Healthy)
                            .then(|| format!("{d} ({})", h.as_str()))
                    }
                })
                .collect();
            if !waiting.is_empty() {
                self.blocked.insert(app.name.clone(), format!("waiting for {}", waiting.join(", ")));
                continue;
            }
            ready.push(&**app);
        }
        ready
    }
}

/// What the reconcile loop does after a pass, as a controller's requeue decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Pass again at once.
    Pass,
    /// Pass again after this long, unless something happens first.
    RequeueAfter(Duration),
    /// Pass again only on a change: a new assignment or a dependency's health.
    Wait,
}

/// [`Next`] pinned to the clock: a requeue keeps its deadline while other events come and go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schedule {
    Pass,
    At(tokio::time::Instant),
    Wait,
}

impl Schedule {
    fn of(next: Next) -> Schedule {
        match next {
            Next::Pass => Schedule::Pass,
            Next::RequeueAfter(after) => Schedule::At(tokio::time::Instant::now() + after),
            Next::Wait => Schedule::Wait,
        }
    }
}

/// Reconciles one cluster to its assignment.
pub struct Reconciler {
    config: ReconcilerConfig,
    applier: Applier,
    pruner: Pruner,
    store: InventoryStore,
    cache: Cache,
    generated: Generated,
    live: Live,
    metrics: PassMetrics,
}

fn content_hash(app: &str, object: &Value) -> String {
    let mut h = Sha256::new();
    h.update(app.as_bytes());
    h.update([0]);
    h.update(canonical_json(object).as_bytes());
    hex::encode(&h.finalize()[..12])
}

/// What a pass writes, and what it leaves alone.
#[derive(Default)]
struct Plan {
    /// Objects to apply, each with the content hash its inventory entry will carry.
    writes: Vec<(Prepared, String)>,
    /// Objects already applied, present and clean (by inventory id).
    unchanged: Vec<String>,
    /// SOPS-encrypted objects that could not be decrypted: (app, inventory id, error).
    sealed: Vec<(String, String, String)>,
}

/// What came of a pass's writes.
#[derive(Default)]
struct Applied {
    /// Inventory entries of the objects applied, with their app.
    entries: Vec<(String, Entry)>,
    /// Apps with an object that failed to apply.
    failed_apps: HashSet<String>,
}

/// The inventory entry of an applied object, with the revision its body was stamped with.
fn inventory_entry(prepared: &Prepared, hash: String) -> Entry {
    let mut entry = Entry::from(&prepared.object);
    entry.hash = hash;
    entry.revision = prepared.body["metadata"]["annotations"][crate::applier::REVISION_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_string();
    entry
}

/// The app owning each object of `assignment`, by inventory id (normalized where `refs` knows
/// the object).
fn owners<'a>(assignment: &'a Assignment, refs: &HashMap<String, ObjectRef>) -> HashMap<String, &'a str> {
    assignment
        .objects()
        .map(|(a, o)| {
            let raw = ObjectRef::of(o);
            let id = entry_id(refs.get(&entry_id(&raw)).unwrap_or(&raw));
            (id, a.name.as_str())
        })
        .collect()
}

/// Adds the applied `entries` to the inventory under their app; an object that moved between
/// apps belongs to its new app (`owner`) only.
fn add_to_inventory(
    inventory: &mut Inventory,
    assignment: &Assignment,
    owner: &HashMap<String, &str>,
    entries: Vec<(String, Entry)>,
) {
    let prune: HashMap<&str, bool> = assignment.apps.iter().map(|a| (a.name.as_str(), a.policy.prune)).collect();
    for (app, entry) in entries {
        inventory.add(&app, prune.get(app.as_str()).copied().unwrap_or(false), [entry]);
    }
    for (app, inv) in inventory.apps.iter_mut() {
        inv.objects.retain(|id, _| owner.get(id).is_none_or(|o| *o == app.as_str()));
    }
}

impl Reconciler {
    /// A reconciler for `client`'s cluster.
    pub fn new(config: ReconcilerConfig, client: Client) -> Self {
        let discovery = Discovery::new(client.clone());
        let applier =
            Applier::new(client.clone(), discovery, &config.cluster, config.concurrency).with_retry(config.retry);
        let pruner = Pruner::new(applier.clone(), &config.cluster, config.concurrency);
        let cache = Cache::new(config.cache_dir.clone());
        let store = InventoryStore::new(client.clone(), &config.namespace, cache.clone());
        let generated = Generated::new(client, &config.namespace);
        Reconciler {
            config,
            applier,
            pruner,
            store,
            cache,
            generated,
            live: Live::default(),
            metrics: PassMetrics::default(),
        }
    }

    /// Durations and outcomes of this reconciler's passes, for `/metrics`.
    pub fn pass_metrics(&self) -> PassMetrics {
        self.metrics.clone()
    }

    /// The shared live index (health and drift), e.g. for tests and benchmarks.
    pub fn live(&self) -> Live {
        self.live.clone()
    }

    /// The assignment cached by an earlier run, if any.
    pub async fn cached_assignment(&self) -> Option<Assignment> {
        match self.cache.load_assignment().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the cached assignment");
                None
            }
        }
    }

    /// Runs until `shutdown`: enforces the assignment in `assignments` (its value at start is
    /// treated as cached: applied, never pruned) and every later one, and pushes reports.
    pub async fn run(
        self,
        mut assignments: watch::Receiver<Option<Arc<Assignment>>>,
        reports: ReportQueue,
        shutdown: CancellationToken,
    ) -> Result<(), ReconcileError> {
        let mut watcher = DriftWatcher::new(
            self.live.clone(),
            self.applier.clone(),
            &self.config.cluster,
            self.config.heal,
            shutdown.child_token(),
        );
        let mut inventory = self.store.load().await;
        reports.set_applied_revision(&inventory.revision);
        tracing::info!(objects = inventory.len(), revision = %inventory.revision, "inventory loaded");
        // The value held at start is the cached assignment (enforced, never pruned from) unless
        // it differs from the cache: then it came from the hub before we got here.
        // Only what tells the two apart is kept: a second parsed copy of every object would stay
        // resident for as long as the reconciler runs.
        let cached = self.cached_assignment().await.map(|c| (c.digest, c.failed));
        let initial = assignments.borrow_and_update().clone();
        let mut progress = match initial {
            None => None,
            Some(a) => {
                let fresh = cached.as_ref().is_none_or(|(digest, failed)| *digest != a.digest || *failed != a.failed);
                if fresh && let Err(e) = self.cache.store_assignment(&a).await {
                    tracing::warn!(error = %e, "cannot cache the assignment");
                }
                Some(Progress::new(a, fresh))
            }
        };
        let mut changes = self.live.subscribe();
        let mut link_open = true;
        let mut next = if progress.is_some() { Schedule::Pass } else { Schedule::Wait };
        loop {
            if next == Schedule::Pass
                && let Some(p) = progress.as_mut()
            {
                // Each pass joins the trace of the hub sync that produced the assignment.
                let span = tracing::info_span!(
                    "apply",
                    cluster = %self.config.cluster,
                    revision = %p.assignment.revision,
                    objects = p.assignment.objects().count(),
                    errors = tracing::field::Empty,
                );
                telemetry::continue_trace(&span, &p.assignment.trace_context);
                let started = std::time::Instant::now();
                self.pass(p, &mut inventory, &mut watcher).instrument(span.clone()).await;
                span.record("errors", p.errors.len());
                self.metrics.observe(started.elapsed(), p.errors.is_empty());
                reports.push(self.report(p));
                let unblocked = self.unblocked(p);
                let decided = p.after_pass(unblocked, self.config.max_retry_interval);
                if let Next::RequeueAfter(after) = decided
                    && !p.errors.is_empty()
                {
                    tracing::info!(
                        errors = p.errors.len(),
                        retry_in_ms = after.as_millis() as u64,
                        "pass left errors; retrying"
                    );
                }
                next = Schedule::of(decided);
                changes.borrow_and_update();
                if next == Schedule::Pass {
                    continue;
                }
            }
            let retry = async {
                match next {
                    Schedule::At(t) => tokio::time::sleep_until(t).await,
                    Schedule::Pass | Schedule::Wait => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = assignments.changed(), if link_open => {
                    if changed.is_err() {
                        link_open = false;
                        continue;
                    }
                    let Some(assigned) = assignments.borrow_and_update().clone() else { continue };
                    // The digest covers content only: a failed assignment turning good (same
                    // objects) is news, since it may now prune.
                    if progress.as_ref().is_some_and(|p| {
                        p.assignment.digest == assigned.digest && p.assignment.failed == assigned.failed
                    }) {
                        continue;
                    }
                    tracing::info!(revision = %assigned.revision, digest = %assigned.digest, failed = assigned.failed, "applying new assignment");
                    if let Err(e) = self.cache.store_assignment(&assigned).await {
                        tracing::warn!(error = %e, "cannot cache the assignment");
                    }
                    progress = Some(Progress::new(assigned, true));
                    next = Schedule::Pass;
                }
                _ = changes.changed() => {
                    // Coalesce a burst of watch events into one report.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    changes.borrow_and_update();
                    if let Some(p) = progress.as_ref() {
                        if self.unblocked(p) {
                            next = Schedule::Pass;
                        }
                        let report = self.report(p);
                        if reports.last().is_none_or(|last| !last.same_state(&report)) {
                            reports.push(report);
                        }
                    }
                }
                _ = retry => next = Schedule::Pass,
            }
        }
        watcher.shutdown().await;
        Ok(())
    }

    /// Health of an app from the live index: the worst of its objects.
    fn app_health(&self, p: &Progress, app: &AppAssignment) -> Health {
        let ix = self.live.lock();
        app.objects.iter().fold(Health::Healthy, |h, o| {
            let key = self.key_for(p, o);
            h.worst(ix.state_of(&key).health)
        })
    }

    fn key_for(&self, p: &Progress, object: &Value) -> ObjKey {
        let raw = ObjectRef::of(object);
        let id = entry_id(&raw);
        key_of(p.refs.get(&id).unwrap_or(&raw))
    }

    /// Is some blocked app ready now?
    fn unblocked(&self, p: &Progress) -> bool {
        p.unblocked(&|app| self.app_health(p, app))
    }

    /// One pass: apply every app that is not applied yet and whose dependencies are healthy;
    /// when everything applied cleanly, prune (if allowed); keep the inventory.
    async fn pass(&self, p: &mut Progress, inventory: &mut Inventory, watcher: &mut DriftWatcher) {
        let assignment = p.assignment.clone();
        self.forget_unassigned(p);
        let ready = self.ready_apps(p, &assignment);
        let plan = self.plan(p, inventory, &ready).await;
        let written = plan.writes.len();
        let mut applied = self.apply(p, plan.writes, watcher).await;
        for id in plan.unchanged {
            p.errors.remove(&id);
        }
        // An object that cannot be decrypted fails alone; its app is not applied, so nothing
        // is pruned.
        for (app, id, message) in plan.sealed {
            p.errors.insert(id, message);
            applied.failed_apps.insert(app);
        }
        for app in &ready {
            if !applied.failed_apps.contains(&app.name) {
                p.applied_apps.insert(app.name.clone());
            }
        }
        tracing::info!(
            revision = %assignment.revision,
            written,
            errors = p.errors.len(),
            blocked = p.blocked.len(),
            "apply pass done"
        );

        // Inventory: what we applied joins it now, so a crash before prune never orphans it.
        let before = inventory.clone();
        let owner = owners(&assignment, &p.refs);
        add_to_inventory(inventory, &assignment, &owner, applied.entries);
        if p.all_applied() && !p.pruned && p.prune_allowed {
            self.prune(p, inventory, &owner).await;
        }
        self.store_inventory(p, inventory, &before).await;
    }

    /// Forgets desired objects that left the assignment: they are no longer judged for drift.
    fn forget_unassigned(&self, p: &Progress) {
        let wanted: HashSet<ObjKey> = p.assignment.objects().map(|(_, o)| self.key_for(p, o)).collect();
        self.live.update(|ix| {
            ix.retain_desired(&wanted);
            true
        });
    }

    /// The apps of `assignment` to apply in this pass ([`Progress::ready_apps`]).
    fn ready_apps<'a>(&self, p: &mut Progress, assignment: &'a Assignment) -> Vec<&'a AppAssignment> {
        // Health is read only for apps others depend on.
        let depended: HashSet<&str> =
            assignment.apps.iter().flat_map(|a| a.depends_on.iter().map(String::as_str)).collect();
        let health: HashMap<&str, Health> = assignment
            .apps
            .iter()
            .filter(|a| depended.contains(a.name.as_str()))
            .map(|a| (a.name.as_str(), self.app_health(p, a)))
            .collect();
        p.ready_apps(assignment, &|app| health.get(app.name.as_str()).copied().unwrap_or(Health::Unknown))
    }

    /// Prepares every object of the `ready` apps and sorts out what to write: an object whose
    /// content is unchanged since the inventory recorded it, present and clean, is left alone.
    /// Each write is marked in flight in the live index, so its apply is not taken for drift.
    async fn plan(&self, p: &mut Progress, inventory: &Inventory, ready: &[&AppAssignment]) -> Plan {
        let mut plan = Plan::default();
        for app in ready {
            self.live.update(|ix| {
                ix.set_rules(&app.name, &app.health_rules);
                false
            });
            for object in &app.objects {
                let raw = ObjectRef::of(object);
                let id = entry_id(&raw);
                let hash = content_hash(&app.name, object);
                let previous = inventory.get(&app.name, &id).filter(|e| e.hash == hash);
                // An unchanged object keeps the revision it was first applied at.
                let revision = previous.map_or(&p.assignment.revision, |e| &e.revision);
                let Some(desired) = self.decrypted(&app.name, &raw, object, &id, &mut plan) else {
                    continue;
                };
                // Keys and certificates the chart generated are made here, never at the hub.
                let (desired, generated) = match self.generated.fill(&app.name, &desired).await {
                    Ok(Some(filled)) => (std::borrow::Cow::Owned(filled), true),
                    Ok(None) => (desired, false),
                    Err(message) => {
                        tracing::warn!(app = %app.name, error = %message, "generated keys unavailable; the object is not applied");
                        plan.sealed.push((app.name.clone(), id, format!("{raw}: {message}")));
                        continue;
                    }
                };
                let mut prepared = self.normalize(self.applier.prepare(&desired, &app.name, revision)).await;
                prepared.sensitive |= generated || sops::is_encrypted(object);
                self.applier.settle_namespace(&mut prepared).await;
                if !app.ignore_differences.is_empty() {
                    prepared.ignored = Arc::new(Ignored::of(&app.ignore_differences, &prepared.object));
                    self.applier.respect_ignored(&mut prepared).await;
                }
                // Kept only where normalizing changed the reference: the rest read as their raw one.
                if prepared.object == raw {
                    p.refs.remove(&id);
                } else {
                    p.refs.insert(id.clone(), prepared.object.clone());
                }
                let key = key_of(&prepared.object);
                if previous.is_some() && self.live.lock().in_sync(&key, &prepared.body) {
                    plan.unchanged.push(id);
                    continue;
                }
                self.live.update(|ix| {
                    ix.begin_apply(&prepared, app.policy.self_heal);
                    false
                });
                plan.writes.push((prepared, hash));
            }
        }
        plan
    }

    /// `object` as it is applied: decrypted in memory when SOPS-encrypted (the assignment, its
    /// cache and the content hash keep the ciphertext). None when it cannot be decrypted: the
    /// error, which never holds a cleartext value, goes to `plan.sealed`.
    fn decrypted<'a>(
        &self,
        app: &str,
        raw: &ObjectRef,
        object: &'a Value,
        id: &str,
        plan: &mut Plan,
    ) -> Option<std::borrow::Cow<'a, Value>> {
        if !sops::is_encrypted(object) {
            return Some(std::borrow::Cow::Borrowed(object));
        }
        match sops::decrypt(object, &self.config.sops) {
            Ok(clear) => Some(std::borrow::Cow::Owned(clear)),
            Err(e) => {
                // With the whole document encrypted, even kind and name are ciphertext.
                let what = if raw.kind.starts_with("ENC[") || raw.name.starts_with("ENC[") {
                    format!("a SOPS-encrypted object of app {app}")
                } else {
                    raw.to_string()
                };
                let message = format!("{what}: cannot decrypt: {e}");
                tracing::warn!(app, error = %message, "SOPS decryption refused; the object is not applied");
                plan.sealed.push((app.to_string(), id.to_string(), message));
                None
            }
        }
    }

    /// Applies the plan's writes (in phase order: see [`Applier::apply_set`]) and records each
    /// result as it comes: in the live index, in `p.errors`, and as a drift watch on the kinds
    /// written.
    async fn apply(&self, p: &mut Progress, writes: Vec<(Prepared, String)>, watcher: &mut DriftWatcher) -> Applied {
        let self_heal: HashMap<&str, bool> =
            p.assignment.apps.iter().map(|a| (a.name.as_str(), a.policy.self_heal)).collect();
        let hashes: HashMap<String, String> = writes.iter().map(|(pr, h)| (entry_id(&pr.object), h.clone())).collect();
        let errors = &mut p.errors;
        let mut applied = Applied::default();
        // One object of each kind applied, to start its watch with.
        let mut kinds: HashMap<(String, String, String), ObjectRef> = HashMap::new();
        let record = |prepared: Prepared, result: Result<Value, ApplyError>| {
            let id = entry_id(&prepared.object);
            match result {
                Ok(live) => {
                    errors.remove(&id);
                    let self_heal = self_heal.get(prepared.app.as_str()).copied().unwrap_or(false);
                    let hash = hashes.get(&id).cloned().unwrap_or_default();
                    applied.entries.push((prepared.app.clone(), inventory_entry(&prepared, hash)));
                    let o = &prepared.object;
                    kinds.entry((o.group.clone(), o.version.clone(), o.kind.clone())).or_insert_with(|| o.clone());
                    self.live.update(|ix| {
                        ix.applied(prepared, self_heal, &live);
                        true
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "apply failed");
                    self.live.update(|ix| {
                        ix.apply_failed(&key_of(&prepared.object));
                        false
                    });
                    applied.failed_apps.insert(prepared.app.clone());
                    let message = match e {
                        ApplyError::Rejected { message, .. } => message,
                        other => other.to_string(),
                    };
                    errors.insert(id, message);
                }
            }
        };
        self.applier.apply_set(writes.into_iter().map(|(pr, _)| pr).collect(), record).await;
        for object in kinds.values() {
            if let Ok(resource) = self.applier.discovery().resolve(object).await {
                watcher.ensure_watch(&resource);
            }
        }
        applied
    }

    /// Once every app applied cleanly, the inventory is at the assignment's revision; it is
    /// stored when it changed since `before`.
    async fn store_inventory(&self, p: &Progress, inventory: &mut Inventory, before: &Inventory) {
        if p.all_applied() && p.errors.is_empty() {
            inventory.revision = p.assignment.revision.clone();
            inventory.digest = p.assignment.digest.clone();
        }
        if inventory != before {
            inventory.updated_unix_ms = unix_ms();
            if let Err(e) = self.store.store(inventory).await {
                tracing::warn!(error = %e, "cannot store the inventory; will retry on the next pass");
            }
        }
    }

    /// Prune = last inventory − new desired, app by app as policy allows: never for an app with
    /// a render error or `prune: false`.
    async fn prune(&self, p: &mut Progress, inventory: &mut Inventory, owner: &HashMap<String, &str>) {
        let apps: HashMap<&str, &AppAssignment> = p.assignment.apps.iter().map(|a| (a.name.as_str(), &**a)).collect();
        let mut candidates: Vec<(String, String, ObjectRef)> = Vec::new();
        for (app, inv) in &inventory.apps {
            let allowed = match apps.get(app.as_str()) {
                Some(a) => a.policy.prune && a.render_error.is_none(),
                None => inv.prune,
            };
            if !allowed {
                continue;
            }
            for (id, entry) in &inv.objects {
                if !owner.contains_key(id) {
                    candidates.push((app.clone(), id.clone(), ObjectRef::from(entry)));
                }
            }
        }
        if candidates.is_empty() {
            p.pruned = true;
            return;
        }
        tracing::info!(count = candidates.len(), "pruning objects that left the assignment");
        let outcome = self.pruner.prune(candidates.iter().map(|(_, _, r)| r.clone()).collect()).await;
        let gone: HashSet<String> =
            outcome.deleted.iter().chain(&outcome.protected).chain(&outcome.foreign).map(entry_id).collect();
        for (app, id, _) in &candidates {
            if gone.contains(id)
                && let Some(inv) = inventory.apps.get_mut(app)
            {
                inv.objects.remove(id);
            }
        }
        inventory.apps.retain(|app, inv| apps.contains_key(app.as_str()) || !inv.objects.is_empty());
        if outcome.failed.is_empty() {
            p.pruned = true;
        } else {
            for e in &outcome.failed {
                tracing::warn!(error = %e, "prune failed; will retry");
            }
            p.errors.insert("prune".into(), format!("{} objects could not be pruned", outcome.failed.len()));
        }
    }

    /// Settles the namespace of a prepared object from discovery when its kind is known.
    async fn normalize(&self, mut prepared: Prepared) -> Prepared {
        if let Ok(resource) = self.applier.discovery().resolve(&prepared.object).await {
            let meta = prepared.body.get_mut("metadata").and_then(Value::as_object_mut);
            if let Some(meta) = meta {
                if resource.namespaced {
                    if prepared.object.namespace.is_empty() {
                        meta.insert("namespace".into(), Value::String("default".into()));
                        prepared.object.namespace = "default".into();
                    }
                } else if !prepared.object.namespace.is_empty() {
                    meta.shift_remove("namespace");
                    prepared.object.namespace.clear();
                }
            }
        }
        prepared
    }

    /// A snapshot report of the current assignment.
    fn report(&self, p: &Progress) -> Report {
        let a = &p.assignment;
        let ix = self.live.lock();
        let apps = a
            .apps
            .iter()
            .map(|app| {
                let objects: Vec<ObjectStatus> = app
                    .objects
                    .iter()
                    .map(|o| {
                        let raw = ObjectRef::of(o);
                        let id = entry_id(&raw);
                        let object = p.refs.get(&id).cloned().unwrap_or(raw);
                        let state = ix.state_of(&key_of(&object));
                        let apply_error = p.errors.get(&entry_id(&object)).cloned();
                        ObjectStatus {
                            health: if apply_error.is_some() {
                                state.health.worst(Health::Degraded)
                            } else {
                                state.health
                            },
                            message: state.message,
                            rule: state.rule,
                            apply_error,
                            object,
                        }
                    })
                    .collect();
                let mut health = objects.iter().fold(Health::Healthy, |h, o| h.worst(o.health));
                let mut message = String::new();
                if let Some(reason) = p.blocked.get(&app.name) {
                    health = health.worst(Health::Progressing);
                    message = reason.clone();
                }
                if let Some(e) = &app.render_error {
                    health = health.worst(Health::Degraded);
                    message = format!("render error (running the last good objects): {e}");
                }
                let failed = objects.iter().filter(|o| o.apply_error.is_some()).count();
                if failed > 0 && message.is_empty() {
                    message = format!("{failed} objects failed to apply");
                }
                AppStatus { name: app.name.clone(), health, message, objects }
            })
            .collect();
        let mut drifts = ix.active_drifts();
        drifts.extend(ix.recent_heals().cloned());
        Report {
            revision: a.revision.clone(),
            digest: a.digest.clone(),
            at_unix_ms: unix_ms(),
            apps,
            drifts,
            summarized_reports: 0,
            applied: p.all_applied() && p.errors.is_empty(),
            measurements: ix.measurements(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{app, assignment};

    const MAX: Duration = Duration::from_secs(30);

    /// web depends on db; db depends on nothing; jobs depends on queue, which is not assigned.
    fn progress() -> Progress {
        let apps = vec![app("db", &[], vec![]), app("web", &["db"], vec![]), app("jobs", &["queue"], vec![])];
        Progress::new(Arc::new(assignment("c1", "r1", apps)), true)
    }

    fn healthy(names: &'static [&'static str]) -> impl Fn(&AppAssignment) -> Health {
        move |a| if names.contains(&a.name.as_str()) { Health::Healthy } else { Health::Progressing }
    }

    fn names(apps: &[&AppAssignment]) -> Vec<String> {
        apps.iter().map(|a| a.name.clone()).collect()
    }

    #[test]
    fn apps_wait_for_dependencies_applied_and_healthy() {
        let mut p = progress();
        let assignment = p.assignment.clone();
        assert_eq!(names(&p.ready_apps(&assignment, &healthy(&[]))), ["db"]);
        assert_eq!(p.blocked["web"], "waiting for db (progressing)");
        assert_eq!(p.blocked["jobs"], "waiting for queue (not assigned to this cluster)");

        // db applied but not healthy yet: web still waits, and nothing is unblocked.
        p.applied_apps.insert("db".into());
        assert!(p.ready_apps(&assignment, &healthy(&[])).is_empty());
        assert!(!p.unblocked(&healthy(&[])));
        // db healthy: web is unblocked and goes; applied apps are not applied again.
        assert!(p.unblocked(&healthy(&["db"])));
        assert_eq!(names(&p.ready_apps(&assignment, &healthy(&["db"]))), ["web"]);
        assert_eq!(p.blocked.keys().collect::<Vec<_>>(), ["jobs"]);
    }

    #[test]
    fn a_dependency_cycle_holds_its_apps_back() {
        let apps = vec![app("a", &["b"], vec![]), app("b", &["a"], vec![]), app("c", &[], vec![])];
        let mut p = Progress::new(Arc::new(assignment("c1", "r1", apps)), true);
        let assignment = p.assignment.clone();
        assert_eq!(names(&p.ready_apps(&assignment, &healthy(&["a", "b"]))), ["c"]);
        assert!(p.blocked["a"].starts_with("dependsOn cycle among"), "{:?}", p.blocked);
        assert!(p.blocked.contains_key("b"));
    }

    #[test]
    fn errors_back_off_up_to_the_ceiling_and_a_clean_pass_resets() {
        let mut p = progress();
        p.errors.insert("ConfigMap/x".into(), "422".into());
        let delays: Vec<Next> = (0..7).map(|_| p.after_pass(false, MAX)).collect();
        assert_eq!(delays[0], Next::RequeueAfter(Duration::from_secs(1)));
        assert_eq!(delays[1], Next::RequeueAfter(Duration::from_secs(2)));
        assert_eq!(delays[6], Next::RequeueAfter(MAX));
        // Errors win over an unblocked app: the retry carries it.
        assert!(matches!(p.after_pass(true, MAX), Next::RequeueAfter(_)));

        p.errors.clear();
        assert_eq!(p.after_pass(false, MAX), Next::Wait);
        p.errors.insert("ConfigMap/x".into(), "422".into());
        assert_eq!(p.after_pass(false, MAX), Next::RequeueAfter(Duration::from_secs(1)), "failures were reset");
    }

    #[test]
    fn blocked_apps_pass_again_when_unblocked_else_wait_with_a_safety_net() {
        let mut p = progress();
        p.blocked.insert("web".into(), "waiting for db (Progressing)".into());
        assert_eq!(p.after_pass(true, MAX), Next::Pass);
        assert_eq!(p.after_pass(false, MAX), Next::RequeueAfter(MAX));
        p.blocked.clear();
        assert_eq!(p.after_pass(false, MAX), Next::Wait);
    }
}

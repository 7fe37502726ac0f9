//! The DriftWatcher: one watch task per managed kind (label `convoy.dev/cluster=<name>`), which
//! keeps every managed object's health and drift current, and a healer task that re-applies
//! drifted objects of self-healing apps, rate limited.
//!
//! Drift is judged only on the fields `convoy-agent` owned after its own apply (FieldsV1 of its
//! managedFields entry): defaulted fields, status and other managers' fields are never drift.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use convoy_shared::backoff::Backoff;
use convoy_shared::clock::unix_ms;
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, TypeMeta};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use convoy_shared::model::report::{Drift, Health};
use convoy_shared::model::{Ignored, ObjectRef, canonical_json};

use crate::applier::{Applier, CLUSTER_LABEL, Prepared};
use crate::discovery::Resource;
use crate::fields::{FIELD_MANAGER, FieldSet, drifted_fields};
use crate::health::{HealthRules, object_health};

/// Errors of the drift watcher.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("reading convoy-agent's managedFields of {object}: {source}")]
    Fields {
        object: ObjectRef,
        #[source]
        source: crate::fields::FieldsError,
    },
}

/// Identity of an object ignoring its version: (group, kind, namespace, name).
pub type ObjKey = (String, String, String, String);

/// The key of an object reference.
pub fn key_of(r: &ObjectRef) -> ObjKey {
    (r.group.clone(), r.kind.clone(), r.namespace.clone(), r.name.clone())
}

/// What the agent applied for one object.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    pub object: ObjectRef,
    pub app: String,
    /// The body as applied (labels and annotation included).
    pub body: AppliedBody,
    /// Drift on it is reported without values (see [`Prepared::sensitive`]).
    pub sensitive: bool,
    /// The fields convoy-agent owned right after its apply.
    pub owned: FieldSet,
    pub self_heal: bool,
    /// An apply of this object is in flight: judge health, not drift.
    pub applying: bool,
    /// Events older than the resourceVersion of our last apply are stale.
    pub min_rv: u64,
    /// What `ignoreDifferences` leaves to other managers: never drift, never healed.
    pub ignored: Arc<Ignored>,
}

/// A body as applied, kept as its canonical JSON text: the index holds one per managed object
/// for as long as the agent runs, and parsed (a map and its hash index per JSON object) a body
/// weighs several times its text. Drift and heal parse it back when they need it; two bodies
/// are the same when their canonical texts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedBody(Arc<str>);

impl AppliedBody {
    /// The text of `body`.
    pub fn of(body: &Value) -> Self {
        AppliedBody(canonical_json(body).into())
    }

    /// The body, parsed back.
    pub fn parse(&self) -> Value {
        // The text was written from a Value, so it always parses.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// The live side of one managed object.
#[derive(Debug, Clone, Default)]
pub struct ObjectState {
    pub health: Health,
    pub message: String,
    /// The rule that judged its health.
    pub rule: String,
    pub present: bool,
    /// Boxed: most objects have none, and every state sits in the index's table (a thousand
    /// objects: 2,048 slots).
    pub drift: Option<Box<Drift>>,
}

/// Everything the watchers know, shared with the reconciler (short critical sections only).
/// The reconciler tells it about applies ([`LiveIndex::begin_apply`], [`LiveIndex::applied`],
/// [`LiveIndex::apply_failed`]); the watches and the healer keep the rest.
#[derive(Debug, Default)]
pub struct LiveIndex {
    desired: HashMap<ObjKey, DesiredObject>,
    states: HashMap<ObjKey, ObjectState>,
    /// Recently healed drifts, newest last.
    healed: VecDeque<Drift>,
    /// (group, kind) whose watch has completed its initial list.
    synced: HashSet<(String, String)>,
    /// Each app's health rules (from its assignment).
    rules: HashMap<String, (Vec<convoy_model::HealthRule>, Arc<HealthRules>)>,
    /// The latest run of each metric-gate query, by check.
    measurements: std::collections::BTreeMap<String, convoy_model::analysis::Measurement>,
}

const HEALED_HISTORY: usize = 50;

fn rv_of(live: &Value) -> u64 {
    live.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl LiveIndex {
    /// Keeps `m` as its check's latest run; true (a report is due) when it says something new.
    pub fn measured(&mut self, m: convoy_model::analysis::Measurement) -> bool {
        let before = self.measurements.insert(m.check.clone(), m.clone());
        before.is_none_or(|b| b != m)
    }

    /// Forgets the measurements of checks not in `checks` (the gate changed or went away).
    pub fn retain_checks(&mut self, checks: &[String]) -> bool {
        let before = self.measurements.len();
        self.measurements.retain(|check, _| checks.contains(check));
        self.measurements.len() != before
    }

    /// The latest run of each check.
    pub fn measurements(&self) -> Vec<convoy_model::analysis::Measurement> {
        self.measurements.values().cloned().collect()
    }

    /// Takes `app`'s health rules. When they changed, its objects are no longer taken as
    /// applied, so the next pass applies them again (writing nothing new) and the new rules
    /// judge what the API server returns.
    pub fn set_rules(&mut self, app: &str, rules: &[convoy_model::HealthRule]) {
        if self.rules.get(app).is_some_and(|(had, _)| had == rules) {
            return;
        }
        self.rules.insert(app.to_string(), (rules.to_vec(), HealthRules::compile(rules)));
        for desired in self.desired.values_mut().filter(|d| d.app == app) {
            desired.owned = FieldSet::default();
        }
    }

    /// Forgets desired objects outside `wanted` (they left the assignment): they are no longer
    /// judged for drift.
    pub fn retain_desired(&mut self, wanted: &HashSet<ObjKey>) {
        self.desired.retain(|k, _| wanted.contains(k));
        self.states.retain(|k, _| wanted.contains(k));
    }

    /// Was `body` applied to `key` already, and is the object there without drift? Then there is
    /// nothing to write.
    pub fn in_sync(&self, key: &ObjKey, body: &Value) -> bool {
        self.desired.get(key).is_some_and(|d| !d.owned.is_empty() && d.body == AppliedBody::of(body))
            && self.states.get(key).is_some_and(|s| s.present && s.drift.is_none())
    }

    /// An apply of `prepared` starts: until it ends, the object is judged for health, not drift.
    /// An object new to the index is recorded with nothing owned yet.
    pub fn begin_apply(&mut self, prepared: &Prepared, self_heal: bool) {
        let desired = self.desired.entry(key_of(&prepared.object)).or_insert_with(|| DesiredObject {
            object: prepared.object.clone(),
            app: prepared.app.clone(),
            body: AppliedBody::of(&prepared.body),
            sensitive: prepared.sensitive,
            owned: FieldSet::default(),
            self_heal,
            applying: true,
            min_rv: 0,
            ignored: prepared.ignored.clone(),
        });
        desired.applying = true;
    }

    /// An apply of `prepared` returned `live`: from now on drift is judged against this body, on
    /// the fields convoy-agent owns in `live`, for events no older than `live`.
    pub fn applied(&mut self, prepared: Prepared, self_heal: bool, live: &Value) {
        let key = key_of(&prepared.object);
        self.desired.insert(
            key.clone(),
            DesiredObject {
                object: prepared.object,
                app: prepared.app,
                body: AppliedBody::of(&prepared.body),
                sensitive: prepared.sensitive,
                owned: FieldSet::of_manager(live, FIELD_MANAGER).unwrap_or_default(),
                self_heal,
                applying: false,
                min_rv: rv_of(live),
                ignored: prepared.ignored,
            },
        );
        // A fresh apply resolves any drift it overwrote.
        if let Some(s) = self.states.get_mut(&key) {
            s.drift = None;
        }
        self.observe(live);
    }

    /// An apply of `key` failed: its drift is judged again, against the last body applied.
    pub fn apply_failed(&mut self, key: &ObjKey) {
        if let Some(d) = self.desired.get_mut(key) {
            d.applying = false;
        }
    }

    /// Healed drifts still worth reporting, oldest first.
    pub fn recent_heals(&self) -> impl Iterator<Item = &Drift> {
        self.healed.iter()
    }

    /// Has `key` drifted (fields changed or the object gone)?
    fn is_drifted(&self, key: &ObjKey) -> bool {
        self.states.get(key).is_some_and(|s| s.drift.is_some())
    }

    /// Drifted objects of self-healing apps with no apply in flight, with what to re-apply.
    fn heal_candidates(&self) -> Vec<(ObjKey, DesiredObject, Drift)> {
        self.states
            .iter()
            .filter_map(|(k, s)| {
                let d = self.desired.get(k)?;
                let drift = s.drift.as_deref().cloned()?;
                (d.self_heal && !d.applying && !d.owned.is_empty()).then(|| (k.clone(), d.clone(), drift))
            })
            .collect()
    }

    /// A heal of `key` starts: judge health, not drift, until it ends.
    fn begin_heal(&mut self, key: &ObjKey) {
        if let Some(d) = self.desired.get_mut(key) {
            d.applying = true;
        }
    }

    /// A heal of `drift` re-applied `key` and got `live`, convoy-agent owning `owned` in it.
    fn healed(&mut self, key: &ObjKey, live: &Value, owned: FieldSet, mut drift: Drift) {
        if let Some(d) = self.desired.get_mut(key) {
            d.applying = false;
            if !owned.is_empty() {
                d.owned = owned;
            }
            d.min_rv = rv_of(live);
        }
        if let Some(s) = self.states.get_mut(key) {
            s.drift = None;
        }
        self.observe(live);
        drift.healed = true;
        self.healed.push_back(drift);
        while self.healed.len() > HEALED_HISTORY {
            self.healed.pop_front();
        }
    }

    /// The watch of (`group`, `kind`) has (re)listed `listed`: applied objects of that kind it
    /// did not list are gone. Returns whether any of them became drift.
    fn relisted(&mut self, group: &str, kind: &str, listed: &HashSet<ObjKey>) -> bool {
        self.synced.insert((group.to_string(), kind.to_string()));
        let gone: Vec<ObjKey> = self
            .desired
            .iter()
            .filter(|(k, d)| k.0 == group && k.1 == kind && !d.owned.is_empty() && !listed.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        let mut drifted = false;
        for k in gone {
            drifted |= self.vanished(&k);
        }
        drifted
    }

    /// The state of `key`, Missing/Unknown when never seen.
    pub fn state_of(&self, key: &ObjKey) -> ObjectState {
        if let Some(s) = self.states.get(key) {
            return s.clone();
        }
        let synced = self.synced.contains(&(key.0.clone(), key.1.clone()));
        ObjectState {
            health: if synced { Health::Missing } else { Health::Unknown },
            message: if synced { "not found in the cluster".into() } else { "not observed yet".into() },
            rule: String::new(),
            present: false,
            drift: None,
        }
    }

    /// Records a live object seen by a watch or returned by an apply. Returns whether anything
    /// reportable changed.
    pub fn observe(&mut self, live: &Value) -> bool {
        let object = ObjectRef::of(live);
        let key = key_of(&object);
        let Some(desired) = self.desired.get(&key) else {
            return false;
        };
        let rv = rv_of(live);
        if rv != 0 && rv < desired.min_rv {
            return false;
        }
        let no_rules = Arc::default();
        let rules = self.rules.get(&desired.app).map_or(&no_rules, |(_, compiled)| compiled);
        let judged = object_health(live, rules);
        let (health, message, rule) = (judged.health, judged.message, judged.rule);
        let previous = self.states.get(&key).cloned().unwrap_or_default();
        let drift = if desired.applying || desired.owned.is_empty() {
            previous.drift.clone().filter(|d| !d.missing)
        } else {
            let mut fields = drifted_fields(&desired.body.parse(), live, &desired.owned, &desired.ignored);
            if desired.sensitive {
                fields.iter_mut().for_each(redact);
            }
            if fields.is_empty() {
                None
            } else {
                let detected =
                    previous.drift.as_ref().filter(|d| !d.missing).map(|d| d.detected_unix_ms).unwrap_or_else(unix_ms);
                Some(Box::new(Drift {
                    object: desired.object.clone(),
                    app: desired.app.clone(),
                    missing: false,
                    fields,
                    healed: false,
                    detected_unix_ms: detected,
                }))
            }
        };
        if let Some(d) = &drift
            && previous.drift.as_ref().map(|p| &p.fields) != Some(&d.fields)
        {
            tracing::info!(object = %d.object, app = %d.app, fields = ?d.fields.iter().map(|f| (&f.path, &f.manager)).collect::<Vec<_>>(), "drift detected");
        }
        let next = ObjectState { health, message, rule, present: true, drift };
        let changed = previous.health != next.health
            || previous.message != next.message
            || previous.rule != next.rule
            || !previous.present
            || previous.drift != next.drift;
        self.states.insert(key, next);
        changed
    }

    /// Records that a managed object is gone.
    pub fn vanished(&mut self, key: &ObjKey) -> bool {
        let Some(desired) = self.desired.get(key) else {
            return false;
        };
        if desired.applying {
            return false;
        }
        let previous = self.states.get(key).cloned().unwrap_or_default();
        if previous.drift.as_ref().is_some_and(|d| d.missing) {
            return false;
        }
        tracing::info!(object = %desired.object, app = %desired.app, "managed object vanished");
        let drift = Drift {
            object: desired.object.clone(),
            app: desired.app.clone(),
            missing: true,
            fields: vec![],
            healed: false,
            detected_unix_ms: unix_ms(),
        };
        self.states.insert(
            key.clone(),
            ObjectState {
                health: Health::Missing,
                message: "deleted from the cluster".into(),
                rule: String::new(),
                present: false,
                drift: Some(Box::new(drift)),
            },
        );
        true
    }

    /// Current drifts (not yet resolved), in a stable order.
    pub fn active_drifts(&self) -> Vec<Drift> {
        let mut out: Vec<Drift> = self
            .states
            .iter()
            .filter(|(k, _)| self.desired.contains_key(*k))
            .filter_map(|(_, s)| s.drift.as_deref().cloned())
            .collect();
        out.sort_by(|a, b| a.object.cmp(&b.object));
        out
    }
}

/// What a report says of a changed secret value: the field and its manager, never a value.
pub const SECRET_VALUE_CHANGED: &str = "secret value changed";

/// Drops the values of a drifted field of a sensitive object: the report keeps the path and
/// manager, and says whether the field changed or went away.
fn redact(field: &mut convoy_shared::model::report::FieldDrift) {
    field.desired = Value::String("(secret)".into());
    field.live = if field.live.is_null() { Value::Null } else { Value::String(SECRET_VALUE_CHANGED.into()) };
}

/// The shared index plus its change counter.
#[derive(Clone)]
pub struct Live {
    index: Arc<Mutex<LiveIndex>>,
    changes: watch::Sender<u64>,
}

impl Default for Live {
    fn default() -> Self {
        Live { index: Arc::default(), changes: watch::channel(0).0 }
    }
}

impl Live {
    /// Locks the index; never hold the guard across an await.
    pub fn lock(&self) -> MutexGuard<'_, LiveIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signals that reportable state changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Runs `f` on the index and signals a change if it says so.
    pub fn update(&self, f: impl FnOnce(&mut LiveIndex) -> bool) {
        let changed = f(&mut self.lock());
        if changed {
            self.changed();
        }
    }
}

/// Self-heal pacing: at most one heal per `min_interval` overall, and per object a backoff that
/// doubles while the object keeps drifting (a fight with another controller) up to `max_backoff`.
#[derive(Debug, Clone, Copy)]
pub struct HealPolicy {
    pub min_interval: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for HealPolicy {
    fn default() -> Self {
        HealPolicy {
            min_interval: Duration::from_millis(50),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Watches every managed kind and heals drift.
pub struct DriftWatcher {
    live: Live,
    applier: Applier,
    cluster: String,
    watches: HashMap<(String, String, String), CancellationToken>,
    tasks: JoinSet<()>,
    cancel: CancellationToken,
    /// Wakes the healer when drift appears.
    heal_wake: Arc<Notify>,
}

impl DriftWatcher {
    /// Starts the healer; watches start with [`DriftWatcher::ensure_watch`].
    pub fn new(live: Live, applier: Applier, cluster: &str, heal: HealPolicy, cancel: CancellationToken) -> Self {
        let mut tasks = JoinSet::new();
        let heal_wake = Arc::new(Notify::new());
        let healer = Healer {
            live: live.clone(),
            applier: applier.clone(),
            policy: heal,
            wake: heal_wake.clone(),
            backoff: HashMap::new(),
        };
        tasks.spawn(healer.run(cancel.clone()).instrument(tracing::info_span!("healer", cluster = %cluster)));
        DriftWatcher { live, applier, cluster: cluster.to_string(), watches: HashMap::new(), tasks, cancel, heal_wake }
    }

    /// The shared index.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Nudges the healer (e.g. after a self-heal policy changed).
    pub fn wake_healer(&self) {
        self.heal_wake.notify_one();
    }

    /// Starts a watch on `resource` unless one runs.
    pub fn ensure_watch(&mut self, resource: &Resource) {
        let ar = &resource.api;
        let id = (ar.group.clone(), ar.version.clone(), ar.kind.clone());
        if self.watches.contains_key(&id) {
            return;
        }
        let token = self.cancel.child_token();
        self.watches.insert(id, token.clone());
        let api: Api<DynamicObject> = Api::all_with(self.applier.client().clone(), ar);
        let span =
            tracing::info_span!("watch", cluster = %self.cluster, kind = %ar.kind, api_version = %ar.api_version);
        let task = WatchTask {
            live: self.live.clone(),
            heal_wake: self.heal_wake.clone(),
            group: ar.group.clone(),
            kind: ar.kind.clone(),
            api_version: ar.api_version.clone(),
        };
        let selector = format!("{CLUSTER_LABEL}={}", self.cluster);
        self.tasks.spawn(task.run(api, selector, token).instrument(span));
    }

    /// Stops watches on kinds no longer managed.
    pub fn retain_watches(&mut self, keep: &HashSet<(String, String, String)>) {
        self.watches.retain(|id, token| {
            let keep = keep.contains(id);
            if !keep {
                token.cancel();
            }
            keep
        });
    }

    /// How many watches run.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// Cancels every watch and the healer, and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Objects per page of a watch's (re)list.
const LIST_PAGE: u32 = 50;

struct WatchTask {
    live: Live,
    heal_wake: Arc<Notify>,
    group: String,
    kind: String,
    api_version: String,
}

impl WatchTask {
    /// `o` as JSON with its apiVersion and kind. A real API server leaves them out of the items
    /// of a list (watch events carry them), and an object without them would key as nothing:
    /// never observed, and reported missing after every (re)list.
    fn typed(&self, mut o: DynamicObject) -> Value {
        if o.types.as_ref().is_none_or(|t| t.kind.is_empty()) {
            o.types = Some(TypeMeta { api_version: self.api_version.clone(), kind: self.kind.clone() });
        }
        serde_json::to_value(o).unwrap_or(Value::Null)
    }

    async fn run(self, api: Api<DynamicObject>, selector: String, cancel: CancellationToken) {
        // Pages of 50, not client-go's 500: a page is held whole (every object with its
        // managedFields, twice while the response is read), and the first lists of every kind
        // come right after an apply pass, so their pages set the agent's peak, and with it the
        // memory malloc keeps afterwards.
        let config = watcher::Config::default().labels(&selector).page_size(LIST_PAGE);
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut listed: HashSet<ObjKey> = HashSet::new();
        tracing::debug!("watch started");
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = stream.next() => event,
            };
            let Some(event) = event else { break };
            match event {
                Ok(Event::Init) => listed.clear(),
                Ok(Event::InitApply(o)) => {
                    let live = self.typed(o);
                    listed.insert(key_of(&ObjectRef::of(&live)));
                    self.observe(&live);
                }
                Ok(Event::InitDone) => self.relisted(&listed),
                Ok(Event::Apply(o)) => {
                    let live = self.typed(o);
                    self.observe(&live);
                }
                Ok(Event::Delete(o)) => {
                    let live = self.typed(o);
                    let key = key_of(&ObjectRef::of(&live));
                    let mut drifted = false;
                    self.live.update(|ix| {
                        let changed = ix.vanished(&key);
                        drifted = changed;
                        changed
                    });
                    if drifted {
                        self.heal_wake.notify_one();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watch error; retrying with backoff"),
            }
        }
        tracing::debug!("watch stopped");
    }

    fn observe(&self, live: &Value) {
        let mut drifted = false;
        self.live.update(|ix| {
            let changed = ix.observe(live);
            drifted = changed && ix.is_drifted(&key_of(&ObjectRef::of(live)));
            changed
        });
        if drifted {
            self.heal_wake.notify_one();
        }
    }

    /// After a (re)list: desired objects of this kind that were applied but not listed are gone.
    fn relisted(&self, listed: &HashSet<ObjKey>) {
        let mut drifted = false;
        self.live.update(|ix| {
            drifted = ix.relisted(&self.group, &self.kind, listed);
            // The first list settles Missing vs Unknown, so it is news even when nothing vanished.
            true
        });
        if drifted {
            self.heal_wake.notify_one();
        }
    }
}

struct Healer {
    live: Live,
    applier: Applier,
    policy: HealPolicy,
    wake: Arc<Notify>,
    /// Per object: when it may be healed next, and how many heals in a row it has needed.
    backoff: HashMap<ObjKey, (Instant, u32)>,
}

impl Healer {
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            let next_due = self.heal_due(&cancel).await;
            let wait = next_due.unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Heals every drifted object of a self-healing app whose backoff has passed; returns how long
    /// until the next one is due.
    async fn heal_due(&mut self, cancel: &CancellationToken) -> Option<Duration> {
        let candidates = self.live.lock().heal_candidates();
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        for (key, desired, drift) in candidates {
            if cancel.is_cancelled() {
                return None;
            }
            if let Some((due, _)) = self.backoff.get(&key)
                && *due > now
            {
                let left = *due - now;
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
            self.heal(&key, desired, drift).await;
            tokio::time::sleep(self.policy.min_interval).await;
        }
        next
    }

    async fn heal(&mut self, key: &ObjKey, desired: DesiredObject, drift: Drift) {
        let mut prepared = Prepared {
            object: desired.object.clone(),
            app: desired.app.clone(),
            body: desired.body.parse(),
            sensitive: desired.sensitive,
            ignored: desired.ignored.clone(),
        };
        // What other managers took since the last apply stays theirs.
        self.applier.respect_ignored(&mut prepared).await;
        // Back off harder when the object drifted again soon after the last heal.
        let in_a_row = match self.backoff.get(key) {
            Some((due, heals)) if due.elapsed() < Duration::from_secs(60) => heals + 1,
            _ => 1,
        };
        let backoff = Backoff::new(self.policy.first_backoff, self.policy.max_backoff).ceiling(in_a_row);
        self.backoff.insert(key.clone(), (Instant::now() + backoff, in_a_row));
        self.live.update(|ix| {
            ix.begin_heal(key);
            false
        });
        let result = self.applier.apply_one(&prepared).await;
        match result {
            Ok(live) => {
                let owned = FieldSet::of_manager(&live, FIELD_MANAGER).unwrap_or_default();
                tracing::info!(object = %drift.object, app = %drift.app, "drift healed");
                self.live.update(|ix| {
                    ix.healed(key, &live, owned, drift);
                    true
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "self-heal failed; will retry");
                self.live.update(|ix| {
                    ix.apply_failed(key);
                    false
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(value: &str, managers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "web", "resourceVersion": "10", "managedFields": managers},
            "data": {"k": value}})
    }

    fn index_with_desired() -> (LiveIndex, ObjKey) {
        let body = cm("v1", json!([]));
        let object = ObjectRef::of(&body);
        let key = key_of(&object);
        let mut ix = LiveIndex::default();
        ix.desired.insert(
            key.clone(),
            DesiredObject {
                object,
                app: "web".into(),
                body: AppliedBody::of(&body),
                sensitive: false,
                owned: FieldSet::parse(&json!({"f:data": {"f:k": {}}})).unwrap(),
                self_heal: false,
                applying: false,
                min_rv: 0,
                ignored: Arc::default(),
            },
        );
        (ix, key)
    }

    #[test]
    fn drift_appears_names_the_manager_and_clears_when_restored() {
        let (mut ix, key) = index_with_desired();
        assert!(ix.observe(&cm("v1", json!([]))));
        assert!(ix.active_drifts().is_empty());
        let edited =
            cm("v2", json!([{"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {"f:k": {}}}}]));
        assert!(ix.observe(&edited));
        let drifts = ix.active_drifts();
        assert_eq!(drifts.len(), 1);
        assert_eq!(drifts[0].fields[0].path, "data.k");
        assert_eq!(drifts[0].fields[0].manager, "kubectl-edit");
        assert!(!ix.observe(&edited), "the same drift again is no change");
        assert!(ix.observe(&cm("v1", json!([]))));
        assert!(ix.active_drifts().is_empty());
        assert!(ix.vanished(&key));
        assert!(ix.active_drifts()[0].missing);
        assert_eq!(ix.state_of(&key).health, Health::Missing);
    }

    #[test]
    fn drift_on_a_sensitive_object_names_the_field_without_values() {
        let (mut ix, key) = index_with_desired();
        ix.desired.get_mut(&key).unwrap().sensitive = true;
        let edited =
            cm("v2", json!([{"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {"f:k": {}}}}]));
        assert!(ix.observe(&edited));
        let field = &ix.active_drifts()[0].fields[0];
        assert_eq!((field.path.as_str(), field.manager.as_str()), ("data.k", "kubectl-edit"));
        assert_eq!((&field.desired, &field.live), (&json!("(secret)"), &json!(SECRET_VALUE_CHANGED)));
    }

    #[test]
    fn stale_events_and_in_flight_applies_are_not_drift() {
        let (mut ix, key) = index_with_desired();
        ix.desired.get_mut(&key).unwrap().min_rv = 11;
        assert!(!ix.observe(&cm("old", json!([]))), "older than our apply");
        ix.desired.get_mut(&key).unwrap().min_rv = 0;
        ix.desired.get_mut(&key).unwrap().applying = true;
        ix.observe(&cm("new", json!([])));
        assert!(ix.active_drifts().is_empty());
    }
}

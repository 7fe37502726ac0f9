//! The state of one simulated cluster: served types, objects, the global resourceVersion, the
//! retained watch-event window, and every write path (create, update, patch, apply, delete with
//! namespace cascade and ownerReference garbage collection, CRD registration).

use super::apply::{self, Applier, ManagedEntry, Updater};
use super::defaults;
use super::faults::Faults;
use super::patch;
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::status::now_rfc3339;
use super::status_error::{ApiError, FieldError, Result};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

/// `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as retained for watches.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Group of the object's resource.
    pub group: String,
    /// Plural of the object's resource.
    pub plural: String,
    /// The object after the change (before it, for deletions).
    pub object: Arc<Value>,
    /// Name, namespace and labels of the object before the change, for selector transitions
    /// (only these, so retained events do not keep whole old versions alive).
    pub prev: Option<Value>,
}

type ResourceKey = (String, String);
/// group, plural, namespace, name: one object awaiting status progression.
pub(crate) type PendingKey = (String, String, String, String);
type ObjectKey = (String, String);

/// Everything behind the cluster's lock; operations are short and never await while holding it.
pub(crate) struct Inner {
    pub(crate) types: Vec<Arc<ResourceType>>,
    objects: HashMap<ResourceKey, BTreeMap<ObjectKey, Arc<Value>>>,
    pub(crate) rv: u64,
    events: VecDeque<Arc<WatchEvent>>,
    /// Highest resourceVersion dropped from `events`; watching from below it is 410 Gone.
    pub(crate) evicted_rv: u64,
    next_ip: u32,
    /// Objects awaiting status progression, by due time.
    pub(crate) pending_status: BTreeMap<PendingKey, Instant>,
}

/// Tunables of a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How long workloads take to become ready / complete / bound.
    pub ready_delay: Duration,
    /// How many events are kept for watches resuming from a resourceVersion.
    pub event_window: usize,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            ready_delay: Duration::from_millis(200),
            event_window: 1000,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// How a write was requested.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Field manager (fieldManager param or derived from the User-Agent).
    pub manager: String,
    /// `dryRun=All`: validate and return, store nothing.
    pub dry_run: bool,
    /// `force=true` on apply.
    pub force: bool,
}

/// The patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/apply-patch+yaml`.
    Apply,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
}

/// Options of list and watch requests.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Page size (0: no limit).
    pub limit: usize,
    /// Continue token from a previous page.
    pub continue_token: Option<String>,
}

/// One simulated cluster's state and API operations.
pub struct ClusterState {
    /// Cluster name.
    pub name: String,
    inner: Mutex<Inner>,
    events_tx: broadcast::Sender<Arc<WatchEvent>>,
    /// Fault injection settings.
    pub faults: Faults,
    config: Mutex<SimConfig>,
    /// Wakes the status simulator when something is scheduled.
    pub(crate) status_notify: Notify,
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn meta_str<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o.get("metadata")?.get(k)?.as_str()
}

fn without_managed(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    o
}

/// The object without metadata and status: what bumps `generation` when it changes.
fn spec_part(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(m) = o.as_object_mut() {
        m.shift_remove("metadata");
        m.shift_remove("status");
    }
    o
}

/// Equality ignoring managedFields timestamps: a write that changes nothing else is a no-op.
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    let strip = |o: &Value| {
        let mut o = o.clone();
        if let Some(mf) = o.pointer_mut("/metadata/managedFields").and_then(Value::as_array_mut) {
            for e in mf.iter_mut().filter_map(Value::as_object_mut) {
                e.shift_remove("time");
            }
        }
        o
    };
    strip(a) == strip(b)
}

/// The manager name Kubernetes derives from a User-Agent: the part before the first `/`.
pub fn manager_from_user_agent(ua: &str) -> String {
    let m = ua.split('/').next().unwrap_or("").trim();
    if m.is_empty() { "unknown".into() } else { m.chars().take(128).collect() }
}

impl ClusterState {
    /// A cluster serving the built-in types, with the usual namespaces.
    pub fn new(name: &str, config: SimConfig) -> Arc<ClusterState> {
        let (events_tx, _) = broadcast::channel(4096);
        let state = Arc::new(ClusterState {
            name: name.to_string(),
            inner: Mutex::new(Inner {
                types: resources::builtins(),
                objects: HashMap::new(),
                rv: 0,
                events: VecDeque::new(),
                evicted_rv: 0,
                next_ip: 10,
                pending_status: BTreeMap::new(),
            }),
            events_tx,
            faults: Faults::default(),
            config: Mutex::new(config),
            status_notify: Notify::new(),
        });
        let ns_type = state.resolve("", "v1", "namespaces").expect("built-in");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let opts = WriteOptions { manager: "kube-apiserver".into(), ..Default::default() };
            state.create(&ns_type, None, body, &opts).expect("built-in namespaces are valid");
        }
        state
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current tunables.
    pub fn config(&self) -> SimConfig {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes how long workloads take to become ready.
    pub fn set_ready_delay(&self, d: Duration) {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).ready_delay = d;
    }

    /// Every served type.
    pub fn types(&self) -> Vec<Arc<ResourceType>> {
        self.lock().types.clone()
    }

    /// The type served at group/version/plural.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.lock().types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }

    /// The type of `apiVersion` + `kind`.
    pub fn resolve_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.lock().types.iter().find(|t| t.api_version() == api_version && t.kind == kind).cloned()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Forgets every retained event, as a compacted etcd does: a watch resuming from any earlier
    /// resourceVersion is 410 Gone and its client must list again.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.events.clear();
        inner.evicted_rv = inner.rv;
    }

    /// Subscribes to future events; with the lock held so no event falls between a snapshot and
    /// the subscription.
    pub(crate) fn subscribe_locked(&self, _inner: &Inner) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.events_tx.subscribe()
    }

    /// Retained events newer than `rv`, or None if `rv` is older than the window.
    pub(crate) fn events_since(inner: &Inner, rv: u64) -> Option<Vec<Arc<WatchEvent>>> {
        if rv < inner.evicted_rv {
            return None;
        }
        Some(inner.events.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Every object of one resource (optionally in one namespace), in name order.
    pub(crate) fn objects_of(inner: &Inner, rt: &ResourceType, ns: Option<&str>) -> Vec<Arc<Value>> {
        inner
            .objects
            .get(&(rt.group.clone(), rt.plural.clone()))
            .map(|m| m.iter().filter(|((n, _), _)| ns.is_none_or(|ns| ns == n)).map(|(_, v)| v.clone()).collect())
            .unwrap_or_default()
    }

    /// Every stored object, across resources.
    pub fn list_all(&self) -> Vec<Value> {
        let inner = self.lock();
        inner.objects.values().flat_map(|m| m.values().map(|v| (**v).clone())).collect()
    }

    fn get_locked(inner: &Inner, rt: &ResourceType, ns: &str, name: &str) -> Option<Arc<Value>> {
        inner.objects.get(&(rt.group.clone(), rt.plural.clone()))?.get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// GET one object.
    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value> {
        let inner = self.lock();
        Self::get_locked(&inner, rt, ns.unwrap_or(""), name)
            .map(|v| (*v).clone())
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// LIST with selectors and paging.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>, opts: &ListOptions) -> Result<Value> {
        let inner = self.lock();
        let start = match &opts.continue_token {
            Some(t) => Some(decode_continue(t)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        if let Some(m) = inner.objects.get(&(rt.group.clone(), rt.plural.clone())) {
            for ((n, name), v) in m {
                if ns.is_some_and(|ns| ns != n) {
                    continue;
                }
                if let Some((sn, sname)) = &start
                    && (n, name) <= (sn, sname)
                {
                    continue;
                }
                if !opts.labels.matches(v) || !opts.fields.matches(v) {
                    continue;
                }
                if opts.limit > 0 && items.len() >= opts.limit {
                    remaining += 1;
                    continue;
                }
                if opts.limit > 0 && items.len() + 1 == opts.limit {
                    next = Some((n.clone(), name.clone()));
                }
                items.push((**v).clone());
            }
        }
        let mut meta = json!({"resourceVersion": inner.rv.to_string()});
        if remaining > 0
            && let Some((n, name)) = next
        {
            meta["continue"] = json!(encode_continue(&n, &name));
            // kube-apiserver counts what remains only when no selector filters the list.
            if opts.labels == LabelSelector::default() && opts.fields == FieldSelector::default() {
                meta["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
            "metadata": meta, "items": items}))
    }

    fn check_namespace(inner: &Inner, rt: &ResourceType, ns: Option<&str>) -> Result<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns = ns.ok_or_else(|| ApiError::bad_request("the namespace of the object must be set"))?;
        let exists = inner
            .objects
            .get(&(String::new(), "namespaces".into()))
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())));
        let terminating = inner
            .objects
            .get(&(String::new(), "namespaces".into()))
            .and_then(|m| m.get(&(String::new(), ns.to_string())))
            .is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_some());
        if !exists {
            Err(ApiError::namespace_not_found(ns))
        } else if terminating {
            let mut e = ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} is forbidden: unable to create new content in namespace {ns} because it \
                     is being terminated",
                    rt.qualified()
                ),
            );
            e.details = Some(Box::new(json!({"kind": rt.plural})));
            Err(e)
        } else {
            Ok(())
        }
    }

    /// Common preparation of a new object state: status subresource rules, identity metadata,
    /// generation, defaults.
    fn prepare(
        inner: &mut Inner,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        old: Option<&Value>,
        mut new: Value,
        subresource: &str,
    ) -> Result<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the body of the request must be an object"));
        }
        if subresource == "status" {
            let old = old.ok_or_else(|| ApiError::not_found(rt, name))?;
            let mut merged = old.clone();
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.shift_remove("status");
                    }
                }
            }
            new = merged;
        } else if rt.has_status {
            let m = new.as_object_mut().expect("checked");
            match old.and_then(|o| o.get("status")) {
                Some(s) => {
                    m.insert("status".into(), s.clone());
                }
                // kube-apiserver always writes a built-in kind's status, empty until set.
                None if rt.schema == super::fields::Schema::Builtin => {
                    m.insert("status".into(), json!({}));
                }
                None => {
                    m.shift_remove("status");
                }
            }
        }
        {
            let m = new.as_object_mut().expect("checked");
            m.insert("apiVersion".into(), json!(rt.api_version()));
            m.insert("kind".into(), json!(rt.kind));
        }
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        let meta = new["metadata"].as_object_mut().expect("set above");
        meta.insert("name".into(), json!(name));
        match ns {
            Some(ns) if rt.namespaced => {
                meta.insert("namespace".into(), json!(ns));
            }
            _ => {
                meta.shift_remove("namespace");
            }
        }
        let (uid, created) = match old {
            Some(o) => (
                meta_str(o, "uid").unwrap_or_default().to_string(),
                meta_str(o, "creationTimestamp").unwrap_or_default().to_string(),
            ),
            None => (new_uid(), now_rfc3339()),
        };
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(created));
        meta.shift_remove("selfLink");
        if let Some(ts) = old.and_then(|o| o.pointer("/metadata/deletionTimestamp")) {
            meta.insert("deletionTimestamp".into(), ts.clone());
        }
        let mut next_ip = inner.next_ip;
        defaults::apply_defaults(&rt.kind, &mut new, &mut || {
            next_ip += 1;
            format!("10.96.{}.{}", next_ip / 250, next_ip % 250 + 1)
        });
        inner.next_ip = next_ip;
        if rt.has_generation {
            let gen_old = old.and_then(|o| o.pointer("/metadata/generation")).and_then(Value::as_i64);
            let generation = match (old, gen_old) {
                (Some(o), Some(g)) if spec_part(o) == spec_part(&new) => g,
                (Some(_), Some(g)) => g + 1,
                _ => 1,
            };
            new["metadata"]["generation"] = json!(generation);
        }
        validate(rt, name, &new)?;
        Ok(new)
    }

    /// Stores a prepared object (unless dry-run), assigns its resourceVersion, emits the event and
    /// runs the post-write hooks. A write that changes nothing is a no-op, as in Kubernetes.
    fn commit(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        old: Option<Arc<Value>>,
        mut new: Value,
        dry_run: bool,
    ) -> Result<Value> {
        if let Some(o) = &old {
            let mut probe = new.clone();
            probe["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
            if same_ignoring_times(&probe, o) {
                return Ok((**o).clone());
            }
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            self.crd_written(inner, &mut new, old.is_none())?;
        }
        if dry_run {
            if let Some(o) = &old {
                new["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
            }
            return Ok(new);
        }
        inner.rv += 1;
        new["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let ns = meta_str(&new, "namespace").unwrap_or("").to_string();
        let name = meta_str(&new, "name").unwrap_or("").to_string();
        let arc = Arc::new(new);
        inner
            .objects
            .entry((rt.group.clone(), rt.plural.clone()))
            .or_default()
            .insert((ns.clone(), name.clone()), arc.clone());
        let kind = if old.is_some() { EventType::Modified } else { EventType::Added };
        self.push_event(inner, rt, kind, arc.clone(), old);
        if super::status::wants_progress(rt, &arc) {
            let due = Instant::now() + self.config().ready_delay;
            inner.pending_status.insert((rt.group.clone(), rt.plural.clone(), ns, name), due);
            self.status_notify.notify_one();
        }
        Ok((*arc).clone())
    }

    fn push_event(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        kind: EventType,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(WatchEvent {
            rv: inner.rv,
            kind,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            object,
            prev: prev.map(|p| selector_view(&p)),
        });
        inner.events.push_back(ev.clone());
        let window = self.config().event_window.max(1);
        while inner.events.len() > window {
            if let Some(e) = inner.events.pop_front() {
                inner.evicted_rv = e.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events_tx.send(ev);
    }

    /// Registers (or re-registers) a CRD's types and marks it Established.
    fn crd_written(&self, inner: &mut Inner, crd: &mut Value, created: bool) -> Result<()> {
        let crd_type = inner.types.iter().find(|t| t.plural == "customresourcedefinitions").cloned().expect("built-in");
        let name = meta_str(crd, "name").unwrap_or("").to_string();
        let new_types = resources::from_crd(crd).map_err(|e| ApiError::invalid(&crd_type, &name, &e.to_string()))?;
        let (group, plural) = (new_types[0].group.clone(), new_types[0].plural.clone());
        if created && inner.types.iter().any(|t| t.group == group && t.plural == plural) {
            return Err(ApiError::invalid(&crd_type, &name, "spec.names.plural: resource is already served"));
        }
        inner.types.retain(|t| !(t.group == group && t.plural == plural));
        inner.types.extend(new_types);
        let now = now_rfc3339();
        let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let versions: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        let keep_time = |t: &str| {
            crd.pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now))
        };
        crd["status"] = json!({
            "acceptedNames": names,
            "conditions": [
                {"lastTransitionTime": keep_time("NamesAccepted"), "message": "no conflicts found",
                 "reason": "NoConflicts", "status": "True", "type": "NamesAccepted"},
                {"lastTransitionTime": keep_time("Established"),
                 "message": "the initial names have been accepted",
                 "reason": "InitialNamesAccepted", "status": "True", "type": "Established"}
            ],
            "storedVersions": versions
        });
        Ok(())
    }

    /// POST: create an object.
    pub fn create(&self, rt: &ResourceType, ns: Option<&str>, body: Value, opts: &WriteOptions) -> Result<Value> {
        let mut inner = self.lock();
        let name = match meta_str(&body, "name") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta_str(&body, "generateName") {
                Some(p) => format!("{p}{}", &new_uid()[..5]),
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        check_body_namespace(&body, ns)?;
        Self::check_namespace(&inner, rt, ns)?;
        if Self::get_locked(&inner, rt, ns.unwrap_or(""), &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        let mut new = Self::prepare(&mut inner, rt, ns, &name, None, body, "")?;
        let stripped = without_managed(&new);
        let entries = apply::update(
            &Value::Null,
            &stripped,
            &[],
            &Updater { manager: &opts.manager, api_version: &rt.api_version(), now: &now_rfc3339(), subresource: "" },
            rt.schema,
        )
        .map_err(|e| ApiError::invalid(rt, &name, &e.to_string()))?;
        apply::write_entries(&mut new, &entries);
        self.commit(&mut inner, rt, None, new, opts.dry_run)
    }

    /// PUT: replace an object (or its status).
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        body: Value,
        subresource: &str,
        opts: &WriteOptions,
    ) -> Result<Value> {
        let mut inner = self.lock();
        let old = Self::get_locked(&inner, rt, ns.unwrap_or(""), name).ok_or_else(|| ApiError::not_found(rt, name))?;
        self.update_locked(&mut inner, rt, ns, name, old, body, subresource, opts)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_locked(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        old: Arc<Value>,
        body: Value,
        subresource: &str,
        opts: &WriteOptions,
    ) -> Result<Value> {
        if let Some(n) = meta_str(&body, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        check_body_namespace(&body, ns)?;
        if let Some(rv) = meta_str(&body, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(rt, name));
        }
        // A request that rewrites managedFields itself (kubectl's client-side-apply upgrade,
        // or `[{}]` to reset them) is taken as given, as the API server does.
        let explicit = body
            .pointer("/metadata/managedFields")
            .filter(|m| Some(*m) != old.pointer("/metadata/managedFields"))
            .cloned();
        let mut new = Self::prepare(inner, rt, ns, name, Some(&old), body, subresource)?;
        if let Some(m) = explicit {
            let given = apply::read_entries(&json!({"metadata": {"managedFields": m}}))
                .map_err(|e| ApiError::invalid(rt, name, &format!("metadata.managedFields: {e}")))?;
            apply::write_entries(&mut new, &given);
            return self.commit(inner, rt, Some(old), new, opts.dry_run);
        }
        let entries = apply::read_entries(&old).unwrap_or_default();
        let entries = apply::update(
            &without_managed(&old),
            &without_managed(&new),
            &entries,
            &Updater { manager: &opts.manager, api_version: &rt.api_version(), now: &now_rfc3339(), subresource },
            rt.schema,
        )
        .map_err(|e| ApiError::invalid(rt, name, &e.to_string()))?;
        apply::write_entries(&mut new, &entries);
        self.commit(inner, rt, Some(old), new, opts.dry_run)
    }

    /// PATCH in any of the four flavours.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        kind: PatchType,
        body: Value,
        subresource: &str,
        opts: &WriteOptions,
    ) -> Result<Value> {
        if kind == PatchType::Apply {
            return self.apply(rt, ns, name, body, subresource, opts);
        }
        let mut inner = self.lock();
        let old = Self::get_locked(&inner, rt, ns.unwrap_or(""), name).ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut doc = (*old).clone();
        match kind {
            PatchType::Merge => patch::merge_patch(&mut doc, &body),
            PatchType::Json => {
                patch::json_patch(&mut doc, &body).map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?
            }
            PatchType::Strategic => {
                if rt.schema == super::fields::Schema::Custom {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types \
                         include: application/json-patch+json, application/merge-patch+json, \
                         application/apply-patch+yaml",
                    ));
                }
                patch::strategic_merge_patch(&mut doc, &body).map_err(|e| ApiError::bad_request(e.to_string()))?
            }
            PatchType::Apply => unreachable!("handled above"),
        }
        self.update_locked(&mut inner, rt, ns, name, old, doc, subresource, opts)
    }

    /// Server-side apply.
    fn apply(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut config: Value,
        subresource: &str,
        opts: &WriteOptions,
    ) -> Result<Value> {
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requires fieldManager parameter"));
        }
        let api_version = config.get("apiVersion").and_then(Value::as_str);
        let kind = config.get("kind").and_then(Value::as_str);
        if api_version != Some(&rt.api_version()) || kind != Some(&rt.kind) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({}), \
                 or the kind ({}) does not match {}",
                api_version.unwrap_or(""),
                rt.api_version(),
                kind.unwrap_or(""),
                rt.kind
            )));
        }
        if let Some(n) = meta_str(&config, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        check_body_namespace(&config, ns)?;
        let mut inner = self.lock();
        let old = Self::get_locked(&inner, rt, ns.unwrap_or(""), name);
        if old.is_none() {
            Self::check_namespace(&inner, rt, ns)?;
        }
        if let (Some(rv), Some(o)) = (meta_str(&config, "resourceVersion"), &old)
            && Some(rv) != meta_str(o, "resourceVersion")
        {
            return Err(ApiError::stale(rt, name));
        }
        if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["managedFields", "resourceVersion", "uid", "creationTimestamp", "generation"] {
                m.shift_remove(k);
            }
        }
        if let Some(m) = config.as_object_mut() {
            if subresource.is_empty() && rt.has_status {
                m.shift_remove("status");
            } else if subresource == "status" {
                m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            }
        }
        let (live, entries) = match &old {
            Some(o) => (without_managed(o), apply::read_entries(o).unwrap_or_default()),
            None => (json!({}), Vec::new()),
        };
        let now = now_rfc3339();
        let api_version = rt.api_version();
        let who =
            Applier { manager: &opts.manager, api_version: &api_version, force: opts.force, now: &now, subresource };
        let (merged, entries) = apply::apply(&live, &config, &entries, &who, rt.schema).map_err(|e| match e {
            apply::Error::Conflicts(cs) => conflict_error(&cs),
            other => ApiError::invalid(rt, name, &other.to_string()),
        })?;
        let mut new = Self::prepare(&mut inner, rt, ns, name, old.as_deref(), merged, subresource)?;
        write_managed(&mut new, &entries);
        self.commit(&mut inner, rt, old, new, opts.dry_run)
    }

    /// DELETE one object; cascades to namespace contents, CRD instances and owned dependents.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
        orphan: bool,
    ) -> Result<Value> {
        let mut inner = self.lock();
        let old = Self::get_locked(&inner, rt, ns.unwrap_or(""), name).ok_or_else(|| ApiError::not_found(rt, name))?;
        if rt.group.is_empty() && rt.plural == "namespaces" {
            return self.terminate_namespace(&mut inner, rt, old, dry_run);
        }
        if !dry_run {
            self.delete_locked(&mut inner, rt, &old, orphan);
        }
        let mut details = json!({"name": name, "kind": rt.plural,
            "uid": meta_str(&old, "uid").unwrap_or("")});
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}))
    }

    /// Namespaces terminate asynchronously, as in Kubernetes: the namespace turns Terminating
    /// (so later deletes of its contents in the same `kubectl delete -f` still find them), and
    /// its contents and then the namespace go shortly after.
    fn terminate_namespace(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        old: Arc<Value>,
        dry_run: bool,
    ) -> Result<Value> {
        if old.pointer("/metadata/deletionTimestamp").is_some() || dry_run {
            return Ok((*old).clone());
        }
        let mut new = (*old).clone();
        new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        new["status"] = json!({"phase": "Terminating"});
        let name = meta_str(&old, "name").unwrap_or("").to_string();
        let out = self.commit(inner, rt, Some(old), new, false)?;
        let due = Instant::now() + Duration::from_millis(100);
        inner.pending_status.insert((String::new(), "namespaces".into(), String::new(), name), due);
        self.status_notify.notify_one();
        Ok(out)
    }

    fn delete_locked(&self, inner: &mut Inner, rt: &ResourceType, obj: &Arc<Value>, orphan: bool) {
        let ns = meta_str(obj, "namespace").unwrap_or("").to_string();
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        let removed = inner
            .objects
            .get_mut(&(rt.group.clone(), rt.plural.clone()))
            .and_then(|m| m.remove(&(ns.clone(), name.clone())));
        let Some(removed) = removed else { return };
        inner.rv += 1;
        let mut gone = (*removed).clone();
        gone["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        self.push_event(inner, rt, EventType::Deleted, Arc::new(gone), Some(removed));
        inner.pending_status.remove(&(rt.group.clone(), rt.plural.clone(), ns, name.clone()));

        let mut dependents: Vec<(Arc<ResourceType>, Arc<Value>)> = Vec::new();
        if rt.group.is_empty() && rt.plural == "namespaces" {
            for t in inner.types.iter().filter(|t| t.namespaced) {
                for o in Self::objects_of(inner, t, Some(&name)) {
                    dependents.push((t.clone(), o));
                }
            }
        }
        if rt.plural == "customresourcedefinitions"
            && let Ok(defined) = resources::from_crd(obj)
        {
            let (g, p) = (defined[0].group.clone(), defined[0].plural.clone());
            let t = inner.types.iter().find(|t| t.group == g && t.plural == p).cloned();
            if let Some(t) = t {
                for o in Self::objects_of(inner, &t, None) {
                    dependents.push((t.clone(), o));
                }
            }
            inner.types.retain(|t| !(t.group == g && t.plural == p));
        }
        if !orphan && let Some(uid) = meta_str(obj, "uid") {
            for t in inner.types.clone() {
                for o in Self::objects_of(inner, &t, None) {
                    let owned = o
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
                    if owned {
                        dependents.push((t.clone(), o));
                    }
                }
            }
        }
        for (t, o) in dependents {
            self.delete_locked(inner, &t, &o, false);
        }
        // Types of a deleted CRD vanish after their objects' DELETED events went out.
    }

    /// DELETE on a collection.
    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
        dry_run: bool,
    ) -> Result<Value> {
        let mut inner = self.lock();
        let victims: Vec<Arc<Value>> = Self::objects_of(&inner, rt, ns)
            .into_iter()
            .filter(|o| opts.labels.matches(o) && opts.fields.matches(o))
            .collect();
        let items: Vec<Value> = victims.iter().map(|v| (**v).clone()).collect();
        if !dry_run {
            for v in &victims {
                self.delete_locked(&mut inner, rt, v, false);
            }
        }
        Ok(json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}))
    }

    /// The `autoscaling/v1` Scale of a Deployment or StatefulSet.
    pub fn get_scale(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value> {
        let o = self.get(rt, ns, name)?;
        Ok(scale_of(&o))
    }

    /// Writes `spec.replicas` through the scale subresource, as an HPA or `kubectl scale` does.
    pub fn set_scale(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        replicas: i64,
        opts: &WriteOptions,
    ) -> Result<Value> {
        let mut inner = self.lock();
        let old = Self::get_locked(&inner, rt, ns.unwrap_or(""), name).ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut body = (*old).clone();
        body["spec"]["replicas"] = json!(replicas);
        let out = self.update_locked(&mut inner, rt, ns, name, old, body, "scale", opts)?;
        Ok(scale_of(&out))
    }

    /// The status simulator's write: replaces `status` as `kube-controller-manager` would.
    pub(crate) fn progress_status(&self, key: &PendingKey) {
        let mut inner = self.lock();
        let (group, plural, ns, name) = key;
        let Some(rt) = inner.types.iter().find(|t| &t.group == group && &t.plural == plural).cloned() else {
            return;
        };
        let Some(old) = Self::get_locked(&inner, &rt, ns, name) else {
            return;
        };
        if rt.plural == "namespaces" && old.pointer("/metadata/deletionTimestamp").is_some() {
            self.delete_locked(&mut inner, &rt, &old, false);
            return;
        }
        let stuck = rt.group == "apps" && rt.kind == "Deployment" && self.faults.stuck(&super::status::images(&old));
        let status =
            if stuck { super::status::stuck_deployment_status(&old) } else { super::status::ready_status(&rt, &old) };
        let Some(status) = status else {
            return;
        };
        if old.get("status") == Some(&status) {
            return;
        }
        let mut body = (*old).clone();
        body["status"] = status;
        let opts = WriteOptions { manager: "kube-controller-manager".into(), ..Default::default() };
        let ns = (!ns.is_empty()).then_some(ns.as_str());
        // The object exists and only status changes, so this cannot fail in practice; a failure
        // just leaves the object unready, which tests would notice.
        let _ = self.update_locked(&mut inner, &rt, ns, name, old, body, "status", &opts);
    }

    /// Takes the status progressions due by `now` and returns the next due time.
    pub(crate) fn take_due(&self, now: Instant) -> (Vec<PendingKey>, Option<Instant>) {
        let mut inner = self.lock();
        let due: Vec<_> = inner.pending_status.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        for k in &due {
            inner.pending_status.remove(k);
        }
        let next = inner.pending_status.values().min().copied();
        (due, next)
    }
}

/// The parts of an object label and field selectors look at.
fn selector_view(o: &Value) -> Value {
    let mut meta = serde_json::Map::new();
    for k in ["name", "namespace", "labels"] {
        if let Some(v) = o.get("metadata").and_then(|m| m.get(k)) {
            meta.insert(k.into(), v.clone());
        }
    }
    json!({"metadata": meta})
}

fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    apply::write_entries(obj, entries);
}

fn scale_of(o: &Value) -> Value {
    let replicas = o.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
    let mut meta = json!({});
    for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = o.get("metadata").and_then(|m| m.get(k)) {
            meta[k] = v.clone();
        }
    }
    let selector = o
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
        "spec": {"replicas": replicas},
        "status": {"replicas": o.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
                   "selector": selector}})
}

fn check_body_namespace(body: &Value, ns: Option<&str>) -> Result<()> {
    match (meta_str(body, "namespace"), ns) {
        (Some(b), Some(u)) if !b.is_empty() && b != u => Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the \
             request ({b} vs {u})"
        ))),
        _ => Ok(()),
    }
}

/// Minimal validation the real API server would do and that clients rely on, reported field by
/// field as kube-apiserver reports it.
fn validate(rt: &ResourceType, name: &str, o: &Value) -> Result<()> {
    let mut errors = Vec::new();
    let dns_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    // RBAC names may hold colons (system:…); other resources must be DNS subdomains.
    if !rt.group.starts_with("rbac") && !dns_ok(name) {
        errors.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
             validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    // A workload's pods must match its own selector, as kube-apiserver checks (matchLabels only);
    // a missing selector matches nothing.
    let workload =
        rt.group == "apps" && matches!(rt.kind.as_str(), "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet");
    if workload {
        let selector = o.pointer("/spec/selector");
        if selector.is_none() {
            errors.push(FieldError::required("spec.selector"));
        }
        let wanted = selector.and_then(|s| s.get("matchLabels")).and_then(Value::as_object);
        let labels = o.pointer("/spec/template/metadata/labels").cloned().unwrap_or(Value::Null);
        let matches = wanted.is_some_and(|w| w.iter().all(|(k, v)| labels.get(k) == Some(v)));
        if (selector.is_none() || wanted.is_some()) && !matches {
            errors.push(FieldError::invalid(
                "spec.template.metadata.labels",
                &labels,
                "`selector` does not match template `labels`",
            ));
        }
    }
    // A ConfigMap's or Secret's values hold at most 1 MiB (kube-apiserver's MaxSecretSize); it
    // names the whole ConfigMap (`[]`) and a Secret's `data`.
    if rt.group.is_empty() && matches!(rt.kind.as_str(), "ConfigMap" | "Secret") && data_bytes(o) > MAX_DATA_BYTES {
        let field = if rt.kind == "Secret" { "data" } else { "[]" };
        errors.push(FieldError::too_long(field, MAX_DATA_BYTES));
    }
    if errors.is_empty() { Ok(()) } else { Err(ApiError::invalid_fields(rt, name, &errors)) }
}

const MAX_DATA_BYTES: usize = 1024 * 1024;

/// The bytes of a ConfigMap's or Secret's values: `data` and `stringData` as text, `binaryData`
/// and a Secret's `data` decoded from base64.
fn data_bytes(o: &Value) -> usize {
    let values = |field: &str| o[field].as_object().into_iter().flat_map(|m| m.values());
    let text = |v: &Value| v.as_str().map_or(0, str::len);
    let decoded = |v: &Value| {
        let text = v.as_str().unwrap_or_default();
        base64::engine::general_purpose::STANDARD.decode(text).map_or(text.len(), |b| b.len())
    };
    let data: usize =
        if o["kind"] == "Secret" { values("data").map(decoded).sum() } else { values("data").map(text).sum() };
    data + values("stringData").map(text).sum::<usize>() + values("binaryData").map(decoded).sum::<usize>()
}

fn conflict_error(cs: &[apply::Conflict]) -> ApiError {
    let causes: Vec<Value> = cs
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.print_manager()),
                "field": c.path.to_string()})
        })
        .collect();
    let mut e = ApiError::new(409, "Conflict", apply::conflict_message(cs));
    e.details = Some(Box::new(json!({"causes": causes})));
    e
}

fn encode_continue(ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"ns": ns, "name": name}).to_string())
}

fn decode_continue(t: &str) -> Result<(String, String)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((v["ns"].as_str().ok_or_else(bad)?.to_string(), v["name"].as_str().ok_or_else(bad)?.to_string()))
}

/// Runs the status simulator ([`super::status`]) for one cluster until cancelled: sleeps until the next due object, then
/// writes its settled status.
pub async fn run_status(state: Arc<ClusterState>, cancel: CancellationToken) {
    loop {
        let (due, next) = state.take_due(Instant::now());
        for key in &due {
            state.progress_status(key);
        }
        let wait = next.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = state.status_notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

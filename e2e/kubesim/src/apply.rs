//! Server-side apply and managedFields bookkeeping: merging an applied configuration into the
//! live object, per-manager ownership, removal of dropped fields, conflicts, and the ownership
//! changes an Update (PUT or non-apply PATCH) makes.

use super::fields::{self, FieldSet, Flavor, ListType, Path, PathElement, Schema};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Errors from server-side apply and managedFields handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration or live object does not fit the list schema.
    #[error(transparent)]
    Fields(#[from] fields::Error),
    /// Other managers own fields this apply would change.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// Manager name (`kubectl`, `convoy-agent`…).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the manager used.
    pub api_version: String,
    /// When the manager last wrote (Update managers are printed with it).
    pub time: Option<String>,
    /// The contested field.
    pub path: Path,
}

impl Conflict {
    /// The manager as the API server prints it: `"kubectl"` for appliers, or
    /// `"kubectl-edit" using apps/v1` (with ` at TIME` when known) for Update managers.
    pub fn print_manager(&self) -> String {
        if self.operation == "Update" {
            match &self.time {
                Some(t) => format!("{:?} using {} at {}", self.manager, self.api_version, t),
                None => format!("{:?} using {}", self.manager, self.api_version),
            }
        } else {
            format!("{:?}", self.manager)
        }
    }
}

/// The message Kubernetes returns for apply conflicts, word for word.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if conflicts.len() == 1 {
        let c = &conflicts[0];
        return format!("Apply failed with 1 conflict: conflict with {}: {}", c.print_manager(), c.path);
    }
    let mut by_manager: BTreeMap<String, Vec<&Path>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry(c.print_manager()).or_default().push(&c.path);
    }
    let mut lines = Vec::new();
    for (m, paths) in by_manager {
        lines.push(format!("conflicts with {m}:"));
        for p in paths {
            lines.push(format!("- {p}"));
        }
    }
    format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
}

/// One `metadata.managedFields` entry with its set parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// Manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// API version used by the manager.
    pub api_version: String,
    /// RFC 3339 time of the last change.
    pub time: Option<String>,
    /// `status`, `scale`… or empty for the main resource.
    pub subresource: String,
    /// Owned fields.
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn same_identity(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    /// Reads an entry from its JSON form.
    pub fn from_json(v: &Value) -> Result<ManagedEntry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(ManagedEntry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation").unwrap_or_default(),
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").unwrap_or_default(),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Null))?,
        })
    }

    /// The JSON form, in the key order Kubernetes uses.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("apiVersion".into(), json!(self.api_version));
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        Value::Object(m)
    }
}

/// Reads `metadata.managedFields` of an object.
pub fn read_entries(obj: &Value) -> Result<Vec<ManagedEntry>> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(ManagedEntry::from_json).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

/// Writes entries into `metadata.managedFields` (removing the key when there are none), in the
/// order kube-apiserver stores them: by operation (`Apply` first), then the second each
/// was written in, then manager, apiVersion and subresource.
pub fn write_entries(obj: &mut Value, entries: &[ManagedEntry]) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let mut kept: Vec<&ManagedEntry> = entries.iter().filter(|e| !e.fields.is_empty()).collect();
    // RFC 3339 times of one format order as text; an entry without one counts as the epoch.
    kept.sort_by(|a, b| {
        (&a.operation, a.time.as_deref().unwrap_or(""), &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.operation,
            b.time.as_deref().unwrap_or(""),
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let kept: Vec<Value> = kept.into_iter().map(ManagedEntry::to_json).collect();
    if kept.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(kept));
    }
}

/// Who is applying.
#[derive(Debug, Clone)]
pub struct Applier<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// apiVersion of the configuration.
    pub api_version: &'a str,
    /// Take ownership of conflicting fields instead of failing.
    pub force: bool,
    /// Timestamp to record.
    pub now: &'a str,
    /// Subresource applied to ("" for the main resource).
    pub subresource: &'a str,
}

/// Applies `config` (an applied configuration) over `live` (without managedFields) given the
/// current entries; returns the merged object and new entries, or the conflicts.
pub fn apply(
    live: &Value,
    config: &Value,
    entries: &[ManagedEntry],
    who: &Applier<'_>,
    schema: Schema,
) -> Result<(Value, Vec<ManagedEntry>)> {
    let new_set = fields::to_field_set(config, schema, Flavor::Apply)?;
    let mut entries: Vec<ManagedEntry> = entries.to_vec();
    let mine = entries.iter().position(|e| e.same_identity(who.manager, "Apply", who.subresource));
    let prev_set = mine.map(|i| entries[i].fields.clone()).unwrap_or_default();

    // Conflicts: fields another manager owns whose value this apply changes.
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == mine {
            continue;
        }
        for p in e.fields.intersection(&new_set).iter() {
            let live_v = fields::get_path(live, p, schema);
            let cfg_v = fields::get_path(config, p, schema);
            let changes = match (live_v, cfg_v) {
                (Some(l), Some(c)) => (is_leaf(c) || fields::is_atomic_map(schema, p)) && !same_value(l, c),
                (None, Some(_)) => true,
                _ => false,
            };
            if changes {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation.clone(),
                    api_version: e.api_version.clone(),
                    time: e.time.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !who.force {
        return Err(Error::Conflicts(conflicts));
    }
    // Forcing moves ownership of the contested fields to the applier.
    for c in &conflicts {
        for e in entries.iter_mut() {
            if e.manager == c.manager && e.operation == c.operation {
                e.fields.0.remove(&c.path);
            }
        }
    }

    let mut merged = merge(live, config, &Path::default(), schema)?;

    // Fields this manager applied before but not now are removed, unless someone else owns them
    // (or something beneath them).
    let mut others = FieldSet::default();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != mine {
            others = others.union(&e.fields);
        }
    }
    let keep = others.union(&new_set);
    let dropped = prev_set.difference(&keep);
    let mut removed: Vec<&Path> = Vec::new();
    for p in dropped.iter() {
        if keep.has_descendant(p) || removed.iter().any(|r| r.is_strict_prefix_of(p)) {
            continue;
        }
        if fields::remove_path(&mut merged, p, schema) {
            remove_emptied(&mut merged, p, schema);
            removed.push(p);
        }
    }

    let entry = ManagedEntry {
        manager: who.manager.to_string(),
        operation: "Apply".into(),
        api_version: who.api_version.to_string(),
        time: Some(who.now.to_string()),
        subresource: who.subresource.to_string(),
        fields: new_set,
    };
    match mine {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    let entries = prune_missing(&merged, entries, schema);
    Ok((merged, entries))
}

/// Removes the maps and lists that removing `path` left empty, from its parent up, as
/// structured-merge-diff drops what a removal emptied (`env: []` does not stay behind).
fn remove_emptied(obj: &mut Value, path: &Path, schema: Schema) {
    let mut at = path.clone();
    while at.0.len() > 1 {
        at.0.pop();
        let emptied = match fields::get_path(obj, &at, schema) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if !emptied || !fields::remove_path(obj, &at, schema) {
            return;
        }
    }
}

/// Drops from every entry the paths that no longer exist in the object, and empty entries.
fn prune_missing(obj: &Value, entries: Vec<ManagedEntry>, schema: Schema) -> Vec<ManagedEntry> {
    entries
        .into_iter()
        .map(|mut e| {
            e.fields.0.retain(|p| fields::get_path(obj, p, schema).is_some());
            e
        })
        .filter(|e| !e.fields.is_empty())
        .collect()
}

fn is_leaf(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        _ => true,
    }
}

/// Value equality where numbers compare numerically (1 == 1.0), as Kubernetes compares them.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Merges an applied configuration into a live value following the list schema: maps merge
/// field by field, keyed lists item by item, sets by union, everything else is replaced.
pub fn merge(live: &Value, config: &Value, at: &Path, schema: Schema) -> Result<Value> {
    match (live, config) {
        (Value::Object(_), Value::Object(_)) if fields::is_atomic_map(schema, at) => Ok(config.clone()),
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                let p = Path({
                    let mut v = at.0.clone();
                    v.push(PathElement::Field(k.clone()));
                    v
                });
                if cv.is_null() {
                    out.shift_remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, &p, schema)?,
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Value::Array(l), Value::Array(c)) => match fields::list_type(schema, at) {
            ListType::Atomic => Ok(config.clone()),
            ListType::Set => {
                let mut out = l.clone();
                for v in c {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
                Ok(Value::Array(out))
            }
            ListType::Map(keys) => {
                let mut out = l.clone();
                for ci in c {
                    let k = fields::item_key(keys, ci, at)?;
                    let item_path = Path({
                        let mut v = at.0.clone();
                        v.push(k.clone());
                        v
                    });
                    match out.iter().position(|li| fields::item_key(keys, li, at).ok().as_ref() == Some(&k)) {
                        Some(i) => out[i] = merge(&out[i], ci, &item_path, schema)?,
                        None => out.push(ci.clone()),
                    }
                }
                Ok(Value::Array(out))
            }
        },
        _ => Ok(config.clone()),
    }
}

/// Who is updating (PUT or a non-apply PATCH).
#[derive(Debug, Clone)]
pub struct Updater<'a> {
    /// Field manager name.
    pub manager: &'a str,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// Timestamp to record.
    pub now: &'a str,
    /// Subresource written ("" for the main resource).
    pub subresource: &'a str,
}

/// The ownership change of an Update from `old` to `new` (both without managedFields): the
/// updater gains every field it added or changed, other managers lose those, and removed fields
/// leave every set. `old` is `Null` on create.
pub fn update(
    old: &Value,
    new: &Value,
    entries: &[ManagedEntry],
    who: &Updater<'_>,
    schema: Schema,
) -> Result<Vec<ManagedEntry>> {
    let old_set = fields::to_field_set(old, schema, Flavor::Update)?;
    let new_set = fields::to_field_set(new, schema, Flavor::Update)?;
    let mut changed = FieldSet::default();
    for p in new_set.iter() {
        let differs = match (fields::get_path(old, p, schema), fields::get_path(new, p, schema)) {
            (Some(o), Some(n)) => (is_leaf(n) || fields::is_atomic_map(schema, p)) && !same_value(o, n),
            _ => true,
        };
        if differs {
            changed.insert(p.clone());
        }
    }
    let removed = old_set.difference(&new_set);
    let mut entries: Vec<ManagedEntry> = entries.to_vec();
    for e in entries.iter_mut() {
        e.fields = e.fields.difference(&removed).difference(&changed);
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.same_identity(who.manager, "Update", who.subresource)) {
            Some(e) => {
                e.fields = e.fields.union(&changed);
                e.time = Some(who.now.to_string());
                e.api_version = who.api_version.to_string();
            }
            None => entries.push(ManagedEntry {
                manager: who.manager.to_string(),
                operation: "Update".into(),
                api_version: who.api_version.to_string(),
                time: Some(who.now.to_string()),
                subresource: who.subresource.to_string(),
                fields: changed,
            }),
        }
    }
    Ok(prune_missing(new, entries, schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-01T00:00:00Z";

    fn applier(manager: &str, force: bool) -> Applier<'_> {
        Applier { manager, api_version: "apps/v1", force, now: NOW, subresource: "" }
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": image}]}}}})
    }

    #[test]
    fn first_apply_owns_exactly_the_applied_fields() {
        let cfg = deploy(2, "nginx:1");
        let (obj, entries) = apply(&json!({}), &cfg, &[], &applier("a", false), Schema::Builtin).unwrap();
        assert_eq!(obj["spec"]["replicas"], 2);
        assert_eq!(entries.len(), 1);
        assert!(entries[0].fields.contains(&Path::fields(&["spec", "replicas"])));
        assert!(!entries[0].fields.contains(&Path::fields(&["kind"])));
    }

    #[test]
    fn conflicting_apply_names_manager_and_field() {
        let (obj, entries) =
            apply(&json!({}), &deploy(2, "nginx:1"), &[], &applier("a", false), Schema::Builtin).unwrap();
        let err = apply(&obj, &deploy(3, "nginx:1"), &entries, &applier("b", false), Schema::Builtin).unwrap_err();
        assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas");
        // Same value: shared ownership, no conflict.
        let (_, shared) = apply(&obj, &deploy(2, "nginx:1"), &entries, &applier("b", false), Schema::Builtin).unwrap();
        assert_eq!(shared.len(), 2);
        // Forced: ownership moves.
        let (obj2, forced) =
            apply(&obj, &deploy(3, "nginx:1"), &entries, &applier("b", true), Schema::Builtin).unwrap();
        assert_eq!(obj2["spec"]["replicas"], 3);
        let a = forced.iter().find(|e| e.manager == "a").unwrap();
        assert!(!a.fields.contains(&Path::fields(&["spec", "replicas"])));
    }

    #[test]
    fn dropping_the_last_item_drops_the_list() {
        let mut cfg = deploy(2, "nginx:1");
        cfg["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
        let (obj, entries) = apply(&json!({}), &cfg, &[], &applier("a", false), Schema::Builtin).unwrap();
        let (obj, _) = apply(&obj, &deploy(2, "nginx:1"), &entries, &applier("a", false), Schema::Builtin).unwrap();
        assert_eq!(obj["spec"]["template"]["spec"]["containers"][0], json!({"name": "web", "image": "nginx:1"}));
    }

    #[test]
    fn entries_are_written_apply_first_then_by_time_and_manager() {
        let entry = |manager: &str, operation: &str, time: &str| ManagedEntry {
            manager: manager.into(),
            operation: operation.into(),
            api_version: "v1".into(),
            time: Some(time.into()),
            subresource: String::new(),
            fields: FieldSet::from_fields_v1(&json!({"f:data": {}})).unwrap(),
        };
        let mut obj = json!({"metadata": {}});
        write_entries(
            &mut obj,
            &[
                entry("kubectl", "Update", "2025-01-01T00:00:00Z"),
                entry("b", "Apply", "2025-01-01T00:00:00Z"),
                entry("a", "Apply", "2025-01-01T00:00:01Z"),
                entry("c", "Apply", "2025-01-01T00:00:00Z"),
            ],
        );
        let order: Vec<&str> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["b", "c", "a", "kubectl"]);
    }

    #[test]
    fn multiple_conflicts_are_listed_per_manager() {
        let c = |m: &str, f: &str| Conflict {
            manager: m.into(),
            operation: "Apply".into(),
            api_version: "v1".into(),
            time: None,
            path: Path::fields(&["data", f]),
        };
        assert_eq!(
            conflict_message(&[c("x", "a"), c("x", "b")]),
            "Apply failed with 2 conflicts: conflicts with \"x\":\n- .data.a\n- .data.b"
        );
    }

    #[test]
    fn dropped_field_is_removed_unless_co_owned() {
        let mut cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a": "1", "b": "2"}});
        let (obj, entries) = apply(&json!({}), &cfg, &[], &applier("a", false), Schema::Builtin).unwrap();
        // Another manager updates data.b to the same value via Update: no change, so it owns
        // nothing; instead let it co-own b by applying the same value.
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"b": "2"}});
        let (obj, entries) = apply(&obj, &other, &entries, &applier("b", false), Schema::Builtin).unwrap();
        cfg["data"] = json!({});
        cfg["data"] = json!({"x": "9"});
        let (obj, entries) = apply(&obj, &cfg, &entries, &applier("a", false), Schema::Builtin).unwrap();
        assert_eq!(obj["data"], json!({"b": "2", "x": "9"}));
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn dropped_container_is_removed() {
        let mut cfg = deploy(1, "nginx");
        cfg["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "web", "image": "a"}, {"name": "side", "image": "b"}]);
        let (obj, entries) = apply(&json!({}), &cfg, &[], &applier("a", false), Schema::Builtin).unwrap();
        let (obj, _) = apply(&obj, &deploy(1, "a"), &entries, &applier("a", false), Schema::Builtin).unwrap();
        assert_eq!(obj["spec"]["template"]["spec"]["containers"], json!([{"name": "web", "image": "a"}]));
    }

    #[test]
    fn update_takes_changed_fields_from_appliers() {
        let (obj, entries) =
            apply(&json!({}), &deploy(2, "nginx"), &[], &applier("a", false), Schema::Builtin).unwrap();
        let mut new = obj.clone();
        new["spec"]["replicas"] = json!(5);
        let who = Updater { manager: "hpa", api_version: "apps/v1", now: NOW, subresource: "scale" };
        let entries = update(&obj, &new, &entries, &who, Schema::Builtin).unwrap();
        let hpa = entries.iter().find(|e| e.manager == "hpa").unwrap();
        assert_eq!(hpa.fields.to_fields_v1(), json!({"f:spec": {"f:replicas": {}}}));
        let a = entries.iter().find(|e| e.manager == "a").unwrap();
        assert!(!a.fields.contains(&Path::fields(&["spec", "replicas"])));
        let err = apply(&new, &deploy(2, "nginx"), &entries, &applier("a", false), Schema::Builtin).unwrap_err();
        assert!(err.to_string().contains("conflict with \"hpa\" using apps/v1 at"));
    }
}

//! Strategic merge patch as kustomize (kyaml `merge2`) applies it: maps merge, `null`
//! deletes, `$patch: delete|replace` directives (other SMP directives are kept as fields),
//! a custom `openapi:` schema when one is set, and lists of built-in types merged by
//! their keys (containers by name; ports by containerPort and protocol, …) with the patch's
//! elements first. Lists of unknown kinds (custom resources) are replaced, as kyaml does
//! without a schema.
//!
//! Decisions: a keyed list merges exactly as kyaml's `walkAssociativeSequence` does, odd
//! corners included (`kubectl kustomize` is the oracle, and kustomize users' overlays are
//! written against it): a port named by containerPort alone, where the list's ports also
//! name their protocol, neither matches nor deletes a port that has one; an element whose
//! keys all match is merged in place; an element matching nothing is put before the list's
//! own elements.

use serde_json::{Map, Value};

/// How a list field is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListStrategy {
    Replace,
    /// Merged by these keys (most lists: one; ports: the port and its protocol).
    Key(Vec<String>),
    Primitive,
}

/// A custom OpenAPI schema (kustomization `openapi: {path: …}`): when set, it alone decides
/// how lists merge, for every kind, as in kustomize (kinds it lacks replace their lists).
#[derive(Debug, Default)]
pub(crate) struct OpenApi {
    definitions: Map<String, Value>,
    by_gvk: std::collections::HashMap<(String, String, String), String>,
}

impl OpenApi {
    /// Reads the `definitions` of a swagger document.
    pub fn new(doc: &Value) -> OpenApi {
        let definitions = doc.get("definitions").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut by_gvk = std::collections::HashMap::new();
        for (name, def) in &definitions {
            for g in def.get("x-kubernetes-group-version-kind").and_then(Value::as_array).into_iter().flatten() {
                let s = |k: &str| g.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                by_gvk.insert((s("group"), s("version"), s("kind")), name.clone());
            }
        }
        OpenApi { definitions, by_gvk }
    }

    fn deref<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/definitions/")) {
                Some(name) => match self.definitions.get(name) {
                    Some(d) => node = d,
                    None => break,
                },
                None => break,
            }
        }
        node
    }

    fn strategy(&self, api_version: &str, kind: &str, path: &[String], field: &str) -> ListStrategy {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let key = (group.to_string(), version.to_string(), kind.to_string());
        let Some(mut node) = self.by_gvk.get(&key).and_then(|n| self.definitions.get(n)) else {
            return ListStrategy::Replace;
        };
        for seg in path.iter().map(String::as_str).chain(std::iter::once(field)) {
            node = self.deref(node);
            if let Some(items) = node.get("items") {
                node = self.deref(items);
            }
            match node.get("properties").and_then(|p| p.get(seg)) {
                Some(n) => node = n,
                None => return ListStrategy::Replace,
            }
        }
        let strategy = node.get("x-kubernetes-patch-strategy").and_then(Value::as_str).unwrap_or("");
        if !strategy.split(',').any(|s| s.trim() == "merge") {
            return ListStrategy::Replace;
        }
        // As kyaml's `PatchStrategyAndKeyList`: the list-map keys when the schema has them, else
        // the patch merge key.
        let map_keys: Vec<String> = node
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|ks| ks.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if !map_keys.is_empty() {
            return ListStrategy::Key(map_keys);
        }
        match node.get("x-kubernetes-patch-merge-key").and_then(Value::as_str) {
            Some(k) => ListStrategy::Key(vec![k.to_string()]),
            None => ListStrategy::Primitive,
        }
    }
}

/// API groups whose kinds kyaml knows a schema for.
fn is_builtin_group(group: &str) -> bool {
    matches!(
        group,
        "" | "apps"
            | "batch"
            | "extensions"
            | "policy"
            | "autoscaling"
            | "rbac.authorization.k8s.io"
            | "networking.k8s.io"
            | "storage.k8s.io"
            | "admissionregistration.k8s.io"
            | "apiextensions.k8s.io"
            | "scheduling.k8s.io"
            | "coordination.k8s.io"
            | "node.k8s.io"
            | "discovery.k8s.io"
            | "certificates.k8s.io"
            | "apiregistration.k8s.io"
            | "events.k8s.io"
            | "flowcontrol.apiserver.k8s.io"
            | "resource.k8s.io"
    )
}

/// The merge behaviour of the list `field` found in the map at `path` of a `kind` object.
fn list_strategy(kind: &str, path: &[String], field: &str) -> ListStrategy {
    let parent = path.last().map(String::as_str).unwrap_or("");
    let in_container = matches!(parent, "containers" | "initContainers" | "ephemeralContainers");
    let key = |k: &str| ListStrategy::Key(vec![k.to_string()]);
    let keys = |k: [&str; 2]| ListStrategy::Key(k.map(str::to_string).to_vec());
    match field {
        "containers" | "initContainers" | "ephemeralContainers" => key("name"),
        "env" if in_container => key("name"),
        "ports" if in_container => keys(["containerPort", "protocol"]),
        "ports" if kind == "Service" && path.len() == 1 && parent == "spec" => keys(["port", "protocol"]),
        "volumeMounts" if in_container => key("mountPath"),
        "volumeDevices" if in_container => key("devicePath"),
        "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" => key("name"),
        "hostAliases" => key("ip"),
        "topologySpreadConstraints" => keys(["topologyKey", "whenUnsatisfiable"]),
        "finalizers" if parent == "metadata" => ListStrategy::Primitive,
        "ownerReferences" if parent == "metadata" => key("uid"),
        "conditions" if path.first().map(String::as_str) == Some("status") => key("type"),
        "webhooks" if kind.ends_with("WebhookConfiguration") && path.is_empty() => key("name"),
        "secrets" if kind == "ServiceAccount" && path.is_empty() => key("name"),
        _ => ListStrategy::Replace,
    }
}

struct Ctx<'a> {
    builtin: bool,
    kind: &'a str,
    api_version: &'a str,
    schema: Option<&'a OpenApi>,
}

/// Applies `patch` to `target` in place. Returns `false` when the patch deletes the whole
/// object (`$patch: delete` at the top).
#[cfg(test)]
pub(crate) fn apply_strategic_merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> bool {
    apply_strategic_merge_with(target, patch, None)
}

/// [`apply_strategic_merge`] with an optional custom schema deciding list merges.
pub(crate) fn apply_strategic_merge_with(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<&OpenApi>,
) -> bool {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return false,
        Some("replace") => {
            let mut fresh = Map::new();
            let kind = patch.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
            let api = patch.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
            let ctx = ctx_for(&api, &kind);
            merge_map(
                &mut fresh,
                patch,
                &Ctx { builtin: ctx, kind: &kind, api_version: &api, schema },
                &mut Vec::new(),
            );
            *target = fresh;
            return true;
        }
        _ => {}
    }
    let kind = target.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let api = target.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let ctx = Ctx { builtin: ctx_for(&api, &kind), kind: &kind, api_version: &api, schema };
    merge_map(target, patch, &ctx, &mut Vec::new());
    if ctx.builtin && schema.is_none() {
        collapse_duplicate_keys(target, &ctx, &mut Vec::new());
    }
    true
}

/// kyaml's merge walks the whole object, not only what the patch names, and rebuilds every
/// keyed list from its distinct keys: elements sharing a key (two `env` entries named `A`,
/// as a JSON patch appending to a list can leave) collapse into one, where the first stood,
/// holding the last. So any strategic merge patch does this to every keyed list of the
/// object, in every container: the keyed merge with nothing to merge in.
fn collapse_duplicate_keys(m: &mut Map<String, Value>, ctx: &Ctx<'_>, path: &mut Vec<String>) {
    for (k, v) in m.iter_mut() {
        match v {
            Value::Object(inner) => {
                path.push(k.clone());
                collapse_duplicate_keys(inner, ctx, path);
                path.pop();
            }
            Value::Array(items) => {
                let ListStrategy::Key(keys) = list_strategy(ctx.kind, path, k) else { continue };
                path.push(k.clone());
                // A list whose elements all have distinct, whole keys comes out as it went in;
                // any other takes kyaml's walk with nothing to merge in.
                if !distinct_whole_keys(items, &used_keys(items, &[], &keys)) {
                    *items = merge_walk(items, &[], &keys, ctx, path);
                }
                for item in items.iter_mut().filter_map(Value::as_object_mut) {
                    collapse_duplicate_keys(item, ctx, path);
                }
                path.pop();
            }
            _ => {}
        }
    }
}

fn ctx_for(api_version: &str, _kind: &str) -> bool {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    is_builtin_group(group)
}

/// kyaml's merge knows only `$patch`; other SMP directives (`$retainKeys`,
/// `$setElementOrder/…`, `$deleteFromPrimitiveList/…`) are copied like ordinary fields.
fn is_directive_key(k: &str) -> bool {
    k == "$patch"
}

/// A patch value as it lands where nothing was before: nulls and deleted parts dropped.
fn clean(patch: &Map<String, Value>, ctx: &Ctx<'_>, path: &mut Vec<String>) -> Map<String, Value> {
    let mut fresh = Map::new();
    merge_map(&mut fresh, patch, ctx, path);
    fresh
}

fn merge_map(dest: &mut Map<String, Value>, patch: &Map<String, Value>, ctx: &Ctx<'_>, path: &mut Vec<String>) {
    for (k, pv) in patch {
        if is_directive_key(k) {
            continue;
        }
        match pv {
            Value::Null => {
                dest.remove(k);
            }
            Value::Object(pm) => {
                path.push(k.clone());
                match pm.get("$patch").and_then(Value::as_str) {
                    Some("delete") => {
                        dest.remove(k);
                    }
                    Some("replace") => {
                        let fresh = clean(pm, ctx, path);
                        dest.insert(k.clone(), Value::Object(fresh));
                    }
                    _ => match dest.get_mut(k) {
                        Some(Value::Object(dm)) => merge_map(dm, pm, ctx, path),
                        _ => {
                            let fresh = clean(pm, ctx, path);
                            dest.insert(k.clone(), Value::Object(fresh));
                        }
                    },
                }
                path.pop();
            }
            Value::Array(pa) => {
                let strategy = match ctx.schema {
                    Some(schema) => schema.strategy(ctx.api_version, ctx.kind, path, k),
                    None if ctx.builtin => list_strategy(ctx.kind, path, k),
                    None => ListStrategy::Replace,
                };
                let merged = match strategy {
                    ListStrategy::Replace => pv.clone(),
                    ListStrategy::Primitive => {
                        let existing = dest.get(k).and_then(Value::as_array);
                        Value::Array(merge_primitive(existing.map(Vec::as_slice), pa))
                    }
                    ListStrategy::Key(keys) => {
                        let existing = dest.get(k).and_then(Value::as_array);
                        path.push(k.clone());
                        let out = merge_keyed(existing.map(Vec::as_slice).unwrap_or(&[]), pa, &keys, ctx, path);
                        path.pop();
                        Value::Array(out)
                    }
                };
                dest.insert(k.clone(), merged);
            }
            scalar => {
                dest.insert(k.clone(), scalar.clone());
            }
        }
    }
}

/// The text kyaml reads for a key of a list element (`80` and `"80"` are the same key):
/// `None` when the element lacks the field; an empty, null or non-scalar value reads as `""`.
fn key_text(v: &Value, key: &str) -> Option<String> {
    Some(match v.as_object()?.get(key)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null | Value::Object(_) | Value::Array(_) => String::new(),
    })
}

/// A key value kyaml writes back into an element that lost it in the merge: the scalar the
/// text reads as.
fn key_value(text: &str) -> Value {
    text.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// One element's values for the list's keys, `""` where it has none (kyaml's
/// `ElementValuesList`).
type KeyValues = Vec<String>;

fn key_values(v: &Value, keys: &[String]) -> KeyValues {
    keys.iter().map(|k| key_text(v, k).unwrap_or_default()).collect()
}

/// Whether `v` holds every key with exactly that text, `""` included (kyaml's
/// `MatchElementList`, which finds an element's counterpart in each source).
fn holds_exactly(v: &Value, keys: &[String], values: &[String]) -> bool {
    v.is_object() && keys.iter().zip(values).all(|(k, want)| key_text(v, k).as_deref() == Some(want.as_str()))
}

/// kyaml's `ElementSetter` on a list: every element matching `values` (only as many keys as
/// there are values are compared; an empty value matches any value, a missing field never)
/// is replaced by `element`, or removed when there is none; `element` is appended when none
/// matched. Null and empty-map elements go; with no values at all, every map element goes.
fn set_element(list: &mut Vec<Value>, element: Option<&Value>, keys: &[String], values: &[String]) {
    let matches = |v: &Value| {
        !values.is_empty()
            && keys
                .iter()
                .zip(values)
                .all(|(k, want)| key_text(v, k).is_some_and(|have| want.is_empty() || have == *want))
    };
    let mut found = false;
    let mut out = Vec::with_capacity(list.len() + 1);
    for v in list.drain(..) {
        match &v {
            Value::Null => continue,
            Value::Object(m) if m.is_empty() => continue,
            Value::Object(_) => {}
            _ => {
                out.push(v);
                continue;
            }
        }
        if !matches(&v) {
            if !values.is_empty() {
                out.push(v);
            }
            continue;
        }
        found = true;
        out.extend(element.cloned());
    }
    if !found {
        out.extend(element.cloned());
    }
    *list = out;
}

/// kyaml's `mergeValues`, for lists with several keys: two elements' key values that agree
/// where both have one (and agree somewhere) stand for the same element, with the union of
/// their values.
fn merge_values(list: &mut [KeyValues]) {
    for i in 0..list.len() {
        let first = list[i].clone();
        for j in 0..list.len() {
            if let Some(union) = union_of(&first, &list[j]) {
                list[i] = union.clone();
                list[j] = union;
            }
        }
    }
}

fn union_of(a: &[String], b: &[String]) -> Option<KeyValues> {
    let mut common = false;
    let mut out = Vec::with_capacity(a.len());
    for (x, y) in a.iter().zip(b) {
        if x == y {
            common = true;
            out.push(x.clone());
        } else if !x.is_empty() && !y.is_empty() {
            return None;
        } else {
            out.push(if x.is_empty() { y.clone() } else { x.clone() });
        }
    }
    common.then_some(out)
}

/// kyaml's `validateKeys`: the keys some element of the list has a value for (all keys when
/// none has any), and this element's values for them.
fn valid_keys(list: &[KeyValues], values: &[String], keys: &[String]) -> (Vec<String>, KeyValues) {
    let used: Vec<bool> = (0..keys.len()).map(|i| list.iter().any(|vs| !vs[i].is_empty())).collect();
    if !used.contains(&true) {
        return (keys.to_vec(), values.to_vec());
    }
    let pick = |i: &usize| used[*i];
    let valid_keys = (0..keys.len()).filter(pick).map(|i| keys[i].clone()).collect();
    let valid_values =
        (0..keys.len()).filter(|i| pick(i) || !values[*i].is_empty()).map(|i| values[i].clone()).collect();
    (valid_keys, valid_values)
}

/// [`valid_keys`] of one element alone: the keys it has a value for.
fn valid_keys_of_one(values: &[String], keys: &[String]) -> (Vec<String>, KeyValues) {
    valid_keys(&[values.to_vec()], values, keys)
}

/// One element merged as kyaml's map walk does: `dest` alone stays; the patch's element
/// lands cleaned where there was none; `$patch: delete` removes it.
fn merge_element(dest: Option<&Value>, patch: Option<&Value>, ctx: &Ctx<'_>, path: &mut Vec<String>) -> Option<Value> {
    let Some(Value::Object(pm)) = patch else { return dest.cloned() };
    match (pm.get("$patch").and_then(Value::as_str), dest) {
        (Some("delete"), _) => None,
        // kyaml ignores `$patch: replace` on an element that exists.
        (Some("replace"), Some(d)) => Some(d.clone()),
        (_, Some(Value::Object(dm))) => {
            let mut dm = dm.clone();
            merge_map(&mut dm, pm, ctx, path);
            Some(Value::Object(dm))
        }
        _ => Some(Value::Object(clean(pm, ctx, path))),
    }
}

/// A keyed list merged as kyaml's `walkAssociativeSequence` does when kustomize applies a
/// strategic merge patch (the patch's new elements before the list's own).
fn merge_keyed(dest: &[Value], patch: &[Value], keys: &[String], ctx: &Ctx<'_>, path: &mut Vec<String>) -> Vec<Value> {
    // An element `{$patch: replace}` makes the patch's other elements the whole list.
    let is_replace = |v: &Value| {
        v.as_object().is_some_and(|m| m.len() == 1 && m.get("$patch").and_then(Value::as_str) == Some("replace"))
    };
    if patch.iter().any(is_replace) {
        let kept: Vec<Value> = patch.iter().filter(|v| !is_replace(v)).cloned().collect();
        return merge_keyed(&[], &kept, keys, ctx, path);
    }
    let used = used_keys(dest, patch, keys);
    if distinct_whole_keys(dest, &used) && distinct_whole_keys(patch, &used) {
        return merge_distinct(dest, patch, &used, ctx, path);
    }
    merge_walk(dest, patch, keys, ctx, path)
}

/// kyaml's `walkAssociativeSequence` step by step (`setAssociativeSequenceElements`, then
/// `appendListNode` of the list's own elements into what was added).
fn merge_walk(dest: &[Value], patch: &[Value], keys: &[String], ctx: &Ctx<'_>, path: &mut Vec<String>) -> Vec<Value> {
    let mut dest: Vec<Value> = dest.to_vec();
    let mut list: Vec<KeyValues> = Vec::new();
    for v in patch.iter().chain(dest.iter()) {
        let values = key_values(v, keys);
        if !list.contains(&values) {
            list.push(values);
        }
    }
    if list.is_empty() {
        return dest;
    }
    if keys.len() > 1 {
        merge_values(&mut list);
    }
    let mut added: Vec<Value> = Vec::new();
    let mut last_keys = keys.to_vec();
    for values in &list {
        let (valid_keys, valid_values) = valid_keys(&list, values, keys);
        // Each side's counterpart is found by the keys this element has values for.
        let (find_keys, find_values) = valid_keys_of_one(&valid_values, &valid_keys);
        let d = dest.iter().position(|v| holds_exactly(v, &find_keys, &find_values));
        let p = patch.iter().find(|v| holds_exactly(v, &find_keys, &find_values));
        match merge_element(d.map(|i| &dest[i]), p, ctx, path) {
            Some(Value::Object(mut m)) if !m.is_empty() => {
                for (k, v) in valid_keys.iter().zip(&valid_values) {
                    if !m.contains_key(k) && !v.is_empty() {
                        m.insert(k.clone(), key_value(v));
                    }
                }
                let merged = Value::Object(m);
                // kyaml merges into the list's own element, in place.
                if let Some(i) = d {
                    dest[i] = merged.clone();
                }
                set_element(&mut added, Some(&merged), &valid_keys, &valid_values);
            }
            _ => set_element(&mut dest, None, &valid_keys, &valid_values),
        }
        last_keys = valid_keys;
    }
    // The list's own elements set into what was added, by the keys the last element used.
    for v in &dest {
        let mut values = Vec::new();
        for k in &last_keys {
            match key_text(v, k) {
                Some(t) => values.push(t),
                None => added.push(v.clone()),
            }
        }
        if last_keys.len() > 1 {
            set_element(&mut added, None, &last_keys, &values);
        }
        set_element(&mut added, Some(v), &last_keys, &values);
    }
    added
}

/// The keys some element of either list has a value for (ports without any protocol are keyed
/// by containerPort alone, as [`valid_keys`] decides).
fn used_keys(dest: &[Value], patch: &[Value], keys: &[String]) -> Vec<String> {
    let used = |k: &&String| dest.iter().chain(patch).any(|v| key_text(v, k).is_some_and(|t| !t.is_empty()));
    keys.iter().filter(used).cloned().collect()
}

/// Whether every element is a map with a value for every key (of at least one), no two alike:
/// the common case, where kyaml's walk comes down to [`merge_distinct`].
fn distinct_whole_keys(list: &[Value], keys: &[String]) -> bool {
    if keys.is_empty() {
        return false;
    }
    let mut seen: Vec<KeyValues> = Vec::with_capacity(list.len());
    for v in list {
        let values = key_values(v, keys);
        if !v.is_object() || values.iter().any(String::is_empty) || seen.contains(&values) {
            return false;
        }
        seen.push(values);
    }
    true
}

/// [`merge_keyed`] where both lists have [`distinct_whole_keys`]: with one key, the patch's
/// elements (merged into the list's own where they match) in the patch's order, then the
/// list's others; with several, the patch's new elements, then the list's own, merged where they
/// stand.
fn merge_distinct(
    dest: &[Value],
    patch: &[Value],
    keys: &[String],
    ctx: &Ctx<'_>,
    path: &mut Vec<String>,
) -> Vec<Value> {
    let same = |a: &Value, b: &Value| keys.iter().all(|k| key_text(a, k) == key_text(b, k));
    let kept = |merged: Option<Value>| merged.filter(|m| m.as_object().is_some_and(|m| !m.is_empty()));
    let mut out = Vec::with_capacity(dest.len() + patch.len());
    for p in patch {
        let d = dest.iter().find(|d| same(d, p));
        if d.is_none() || keys.len() == 1 {
            out.extend(kept(merge_element(d, Some(p), ctx, path)));
        }
    }
    for d in dest {
        let p = patch.iter().find(|p| same(d, p));
        if p.is_none() || keys.len() > 1 {
            out.extend(kept(merge_element(Some(d), p, ctx, path)));
        }
    }
    out
}

fn merge_primitive(dest: Option<&[Value]>, patch: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in patch.iter().chain(dest.unwrap_or(&[]).iter()) {
        if !v.is_null() && !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn deployment() -> Map<String, Value> {
        obj(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"a": "1"}},
            "spec": {"template": {"spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80}]},
                    {"name": "sidecar", "image": "side:1"}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "x"}]
            }}}
        }))
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let mut d = deployment();
        let p = obj(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}
        ]}}}}));
        assert!(apply_strategic_merge(&mut d, &p));
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["name"], "app");
        assert_eq!(c[0]["image"], "app:2");
        assert_eq!(c[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(
            c[0]["env"],
            json!([{"name": "B", "value": "3"}, {"name": "C", "value": "4"}, {"name": "A", "value": "1"}])
        );
        assert_eq!(c[1]["name"], "sidecar");
    }

    #[test]
    fn delete_and_replace_directives_and_null() {
        let mut d = deployment();
        let p = obj(json!({"metadata": {"labels": {"a": null, "b": "2"}},
        "spec": {"template": {"spec": {
            "containers": [{"name": "sidecar", "$patch": "delete"}],
            "volumes": [{"name": "data", "$patch": "replace", "configMap": {"name": "c"}}],
            "tolerations": [{"key": "y"}]
        }}}}));
        assert!(apply_strategic_merge(&mut d, &p));
        assert_eq!(d["metadata"]["labels"], json!({"b": "2"}));
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["containers"].as_array().map(Vec::len), Some(1));
        // kyaml ignores `$patch: replace` on an element that exists (checked with kubectl).
        assert_eq!(spec["volumes"], json!([{"name": "data", "emptyDir": {}}]));
        assert_eq!(spec["tolerations"], json!([{"key": "y"}]));
    }

    #[test]
    fn top_level_delete_removes_object() {
        let mut d = deployment();
        assert!(!apply_strategic_merge(&mut d, &obj(json!({"$patch": "delete"}))));
    }

    #[test]
    fn custom_resources_replace_lists() {
        let mut d = obj(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "spec": {"items": [{"name": "a", "v": 1}, {"name": "b"}], "m": {"x": 1}}}));
        let p = obj(json!({"spec": {"items": [{"name": "a", "v": 2}], "m": {"y": 2}}}));
        assert!(apply_strategic_merge(&mut d, &p));
        assert_eq!(d["spec"]["items"], json!([{"name": "a", "v": 2}]));
        assert_eq!(d["spec"]["m"], json!({"x": 1, "y": 2}));
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let mut d = obj(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"finalizers": ["a", "b"]}}));
        let p = obj(json!({"metadata": {"finalizers": ["c", "a"]}}));
        assert!(apply_strategic_merge(&mut d, &p));
        assert_eq!(d["metadata"]["finalizers"], json!(["c", "a", "b"]));
    }

    fn ports_after(base: Value, patch: Value) -> Value {
        let mut d = obj(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "spec": {"template": {"spec": {"containers": [{"name": "c", "ports": base}]}}}}));
        let p = obj(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": patch}]}}}}));
        assert!(apply_strategic_merge(&mut d, &p));
        d["spec"]["template"]["spec"]["containers"][0]["ports"].clone()
    }

    // Expected values below are what `kubectl kustomize` (kustomize 5.8) prints.
    #[test]
    fn ports_match_by_port_and_protocol() {
        let both = json!([{"containerPort": 9443, "protocol": "TCP"}, {"containerPort": 8443, "protocol": "TCP"}]);
        // A port named by containerPort alone neither deletes nor changes one with a protocol.
        assert_eq!(ports_after(both.clone(), json!([{"containerPort": 9443, "$patch": "delete"}])), both);
        assert_eq!(ports_after(both.clone(), json!([{"containerPort": 8443, "name": "y"}])), both);
        // Naming both deletes.
        assert_eq!(
            ports_after(both.clone(), json!([{"containerPort": 9443, "protocol": "TCP", "$patch": "delete"}])),
            json!([{"containerPort": 8443, "protocol": "TCP"}])
        );
        // New ports go first, in the patch's order; a matched one is merged where it stands.
        assert_eq!(
            ports_after(
                both,
                json!([{"containerPort": 7000}, {"containerPort": 8443, "protocol": "TCP", "name": "z"},
                       {"containerPort": 6000, "protocol": "UDP"}])
            ),
            json!([{"containerPort": 7000}, {"containerPort": 6000, "protocol": "UDP"},
                   {"containerPort": 9443, "protocol": "TCP"}, {"containerPort": 8443, "protocol": "TCP", "name": "z"}])
        );
        // The same port with another protocol is another port.
        assert_eq!(
            ports_after(
                json!([{"containerPort": 53, "protocol": "TCP"}]),
                json!([{"containerPort": 53, "protocol": "UDP"}])
            ),
            json!([{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53, "protocol": "TCP"}])
        );
    }

    #[test]
    fn ports_without_any_protocol_match_by_port() {
        assert_eq!(
            ports_after(
                json!([{"containerPort": 9443}, {"containerPort": 8443}]),
                json!([{"containerPort": 9443, "$patch": "delete"}])
            ),
            json!([{"containerPort": 8443}])
        );
        assert_eq!(
            ports_after(json!([{"containerPort": 9443}]), json!([{"containerPort": 9443, "name": "x"}])),
            json!([{"containerPort": 9443, "name": "x"}])
        );
        // One port with a protocol in the list is enough for the protocol to count.
        let mixed = json!([{"containerPort": 9443}, {"containerPort": 8443, "protocol": "TCP"}]);
        assert_eq!(ports_after(mixed.clone(), json!([{"containerPort": 9443, "$patch": "delete"}])), mixed);
    }

    #[test]
    fn the_shortcut_for_distinct_whole_keys_is_the_walk() {
        let ctx = Ctx { builtin: true, kind: "Deployment", api_version: "apps/v1", schema: None };
        let ports = json!([{"containerPort": 80, "protocol": "TCP", "name": "a"}, {"containerPort": 53, "protocol": "UDP"},
                           {"containerPort": 53, "protocol": "TCP"}, {"containerPort": 9, "protocol": "SCTP"}]);
        let port_patches = [
            json!([]),
            json!([{"containerPort": 53, "protocol": "TCP", "name": "dns"}, {"containerPort": 7, "protocol": "TCP"}]),
            json!([{"containerPort": 9, "protocol": "SCTP", "$patch": "delete"}, {"containerPort": 1, "protocol": "UDP"},
                   {"containerPort": 80, "protocol": "TCP", "name": null}]),
        ];
        let bare = json!([{"containerPort": 80}, {"containerPort": 443, "name": "https"}]);
        let bare_patches = [
            json!([{"containerPort": 443, "name": "tls"}, {"containerPort": 8080}]),
            json!([{"containerPort": 80, "$patch": "delete"}]),
        ];
        let env = json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]);
        let env_patches = [
            json!([]),
            json!([{"name": "C", "value": "x"}, {"name": "D"}, {"name": "A", "$patch": "delete"}]),
            json!([{"name": "Z"}, {"name": "B", "$patch": "replace", "value": "r"}]),
        ];
        let cases = port_patches
            .iter()
            .map(|p| (&ports, p, vec!["containerPort".to_string(), "protocol".to_string()]))
            .chain(bare_patches.iter().map(|p| (&bare, p, vec!["containerPort".to_string(), "protocol".to_string()])))
            .chain(env_patches.iter().map(|p| (&env, p, vec!["name".to_string()])));
        for (dest, patch, keys) in cases {
            let (dest, patch) = (dest.as_array().unwrap(), patch.as_array().unwrap());
            let used = used_keys(dest, patch, &keys);
            assert!(distinct_whole_keys(dest, &used) && distinct_whole_keys(patch, &used));
            assert_eq!(
                merge_distinct(dest, patch, &used, &ctx, &mut Vec::new()),
                merge_walk(dest, patch, &keys, &ctx, &mut Vec::new()),
                "{patch:?}"
            );
        }
    }
}

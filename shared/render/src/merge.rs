//! Strategic merge patch as kustomize (kyaml `merge2`) applies it: maps merge, `null`
//! deletes, `$patch: delete|replace` directives (other SMP directives are kept as fields),
//! a custom `openapi:` schema when one is set, and lists of built-in types merged by
//! their patch merge key (containers by name, ports by containerPort, …) with the patch's
//! elements first. Lists of unknown kinds (custom resources) are replaced, as kyaml does
//! without a schema.

use serde_json::{Map, Value};

/// How a list field is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListStrategy {
    Replace,
    Key(String),
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
        match node.get("x-kubernetes-patch-merge-key").and_then(Value::as_str) {
            Some(k) => ListStrategy::Key(k.to_string()),
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
    match field {
        "containers" | "initContainers" | "ephemeralContainers" => ListStrategy::Key("name".into()),
        "env" if in_container => ListStrategy::Key("name".into()),
        "ports" if in_container => ListStrategy::Key("containerPort".into()),
        "ports" if kind == "Service" && path.len() == 1 && parent == "spec" => ListStrategy::Key("port".into()),
        "volumeMounts" if in_container => ListStrategy::Key("mountPath".into()),
        "volumeDevices" if in_container => ListStrategy::Key("devicePath".into()),
        "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" => ListStrategy::Key("name".into()),
        "hostAliases" => ListStrategy::Key("ip".into()),
        "topologySpreadConstraints" => ListStrategy::Key("topologyKey".into()),
        "finalizers" if parent == "metadata" => ListStrategy::Primitive,
        "ownerReferences" if parent == "metadata" => ListStrategy::Key("uid".into()),
        "conditions" if path.first().map(String::as_str) == Some("status") => ListStrategy::Key("type".into()),
        "webhooks" if kind.ends_with("WebhookConfiguration") && path.is_empty() => ListStrategy::Key("name".into()),
        "secrets" if kind == "ServiceAccount" && path.is_empty() => ListStrategy::Key("name".into()),
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
/// object, in every container.
fn collapse_duplicate_keys(m: &mut Map<String, Value>, ctx: &Ctx<'_>, path: &mut Vec<String>) {
    for (k, v) in m.iter_mut() {
        match v {
            Value::Object(inner) => {
                path.push(k.clone());
                collapse_duplicate_keys(inner, ctx, path);
                path.pop();
            }
            Value::Array(items) => {
                let ListStrategy::Key(key) = list_strategy(ctx.kind, path, k) else { continue };
                let mut out: Vec<Value> = Vec::with_capacity(items.len());
                for item in items.drain(..) {
                    let slot = key_text(&item, &key)
                        .and_then(|t| out.iter().position(|o| key_text(o, &key).as_deref() == Some(t.as_str())));
                    match slot {
                        Some(i) => out[i] = item,
                        None => out.push(item),
                    }
                }
                path.push(k.clone());
                for item in out.iter_mut().filter_map(Value::as_object_mut) {
                    collapse_duplicate_keys(item, ctx, path);
                }
                path.pop();
                *items = out;
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
                    ListStrategy::Key(key) => {
                        let existing = dest.get(k).and_then(Value::as_array);
                        path.push(k.clone());
                        let out = merge_keyed(existing.map(Vec::as_slice).unwrap_or(&[]), pa, &key, ctx, path);
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

/// The text of a scalar merge-key value (`80` and `"80"` are the same key).
fn key_text(v: &Value, key: &str) -> Option<String> {
    match v.as_object()?.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn merge_keyed(dest: &[Value], patch: &[Value], key: &str, ctx: &Ctx<'_>, path: &mut Vec<String>) -> Vec<Value> {
    // An element `{$patch: replace}` makes the patch's other elements the whole list.
    let is_replace = |v: &Value| {
        v.as_object().is_some_and(|m| m.len() == 1 && m.get("$patch").and_then(Value::as_str) == Some("replace"))
    };
    if patch.iter().any(is_replace) {
        let kept: Vec<Value> = patch.iter().filter(|v| !is_replace(v)).cloned().collect();
        return merge_keyed(&[], &kept, key, ctx, path);
    }
    let mut order: Vec<String> = Vec::new();
    for v in patch.iter().chain(dest.iter()) {
        if let Some(t) = key_text(v, key)
            && !order.contains(&t)
        {
            order.push(t);
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for kv in &order {
        let d = dest.iter().find(|v| key_text(v, key).as_deref() == Some(kv));
        let p = patch.iter().find(|v| key_text(v, key).as_deref() == Some(kv));
        let merged: Option<Map<String, Value>> = match (d, p) {
            (Some(d), None) => d.as_object().cloned(),
            (d, Some(Value::Object(pm))) => match pm.get("$patch").and_then(Value::as_str) {
                Some("delete") => None,
                // kyaml ignores `$patch: replace` on an element that exists.
                Some("replace") => match d {
                    Some(Value::Object(dm)) => Some(dm.clone()),
                    _ => Some(clean(pm, ctx, path)),
                },
                _ => match d {
                    Some(Value::Object(dm)) => {
                        let mut dm = dm.clone();
                        merge_map(&mut dm, pm, ctx, path);
                        Some(dm)
                    }
                    _ => Some(clean(pm, ctx, path)),
                },
            },
            _ => None,
        };
        let Some(mut m) = merged else { continue };
        if m.is_empty() {
            continue;
        }
        if !m.contains_key(key) {
            m.insert(key.to_string(), Value::String(kv.clone()));
        }
        out.push(Value::Object(m));
    }
    out.extend(dest.iter().filter(|v| key_text(v, key).is_none()).cloned());
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
}

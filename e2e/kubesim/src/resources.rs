//! The resource types a simulated cluster serves (built-ins plus CRD-defined ones) and the
//! discovery documents built from them: legacy discovery, aggregated discovery (apidiscovery v2)
//! and a minimal OpenAPI v3 index that tells kubectl which query parameters PATCH accepts.

use super::fields::Schema;
use serde_json::{Value, json};
use std::sync::Arc;

/// Errors from reading a CustomResourceDefinition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRD lacks a field the simulator needs.
    #[error("CustomResourceDefinition {name:?} is invalid: {what}")]
    InvalidCrd {
        /// CRD name.
        name: String,
        /// What is wrong.
        what: String,
    },
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One served resource (one version of it).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// API group, "" for core.
    pub group: String,
    /// Version served.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural resource name, e.g. `deployments`.
    pub plural: String,
    /// Singular name, e.g. `deployment`.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`deploy`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Whether a `/status` subresource exists (spec writes then ignore status).
    pub has_status: bool,
    /// Whether a `/scale` subresource exists.
    pub has_scale: bool,
    /// Whether `metadata.generation` is tracked.
    pub has_generation: bool,
    /// Built-in or CRD-defined.
    pub schema: Schema,
}

impl ResourceType {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The verbs discovery lists: every one, except that namespaces are deleted one by one.
    pub fn verbs(&self) -> Vec<&'static str> {
        let whole_collection = !(self.group.is_empty() && self.plural == "namespaces");
        VERBS.iter().copied().filter(|v| whole_collection || *v != "deletecollection").collect()
    }

    /// `deployments.apps`, or `configmaps` for core — how error messages name the resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    all: bool,
    status: bool,
) -> Arc<ResourceType> {
    let has_generation = !group.is_empty() && !group.starts_with("rbac") && group != "scheduling.k8s.io";
    Arc::new(ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: match (all, group) {
            (true, _) => vec!["all".into()],
            (false, "apiextensions.k8s.io") => vec!["api-extensions".into()],
            (false, _) => vec![],
        },
        has_status: status,
        has_scale: matches!(kind, "Deployment" | "StatefulSet"),
        has_generation,
        schema: Schema::Builtin,
    })
}

/// The built-in resources every simulated cluster serves.
pub fn builtins() -> Vec<Arc<ResourceType>> {
    vec![
        builtin("", "v1", "Namespace", "namespaces", false, &["ns"], false, true),
        builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], false, false),
        builtin("", "v1", "Secret", "secrets", true, &[], false, false),
        builtin("", "v1", "Service", "services", true, &["svc"], true, true),
        builtin("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], false, false),
        builtin("", "v1", "Pod", "pods", true, &["po"], true, true),
        builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, &["pvc"], false, true),
        builtin("", "v1", "ResourceQuota", "resourcequotas", true, &["quota"], false, true),
        builtin("apps", "v1", "Deployment", "deployments", true, &["deploy"], true, true),
        builtin("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"], true, true),
        builtin("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true, true),
        builtin("batch", "v1", "Job", "jobs", true, &[], true, true),
        builtin("batch", "v1", "CronJob", "cronjobs", true, &["cj"], true, true),
        builtin("networking.k8s.io", "v1", "Ingress", "ingresses", true, &["ing"], false, true),
        builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, &["netpol"], false, false),
        builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[], false, false),
        builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[], false, false),
        builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[], false, false),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[],
            false,
            false,
        ),
        builtin("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, &["hpa"], true, true),
        builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"], false, true),
        builtin("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, &["pc"], false, false),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            false,
            true,
        ),
    ]
}

/// The resource types a CRD defines (one per served version).
pub fn from_crd(crd: &Value) -> Result<Vec<Arc<ResourceType>>> {
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let bad = |what: &str| Error::InvalidCrd { name: name.clone(), what: what.into() };
    let spec = crd.get("spec").ok_or_else(|| bad("spec is required"))?;
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).map(str::to_string);
    let group = s("/group").ok_or_else(|| bad("spec.group is required"))?;
    let kind = s("/names/kind").ok_or_else(|| bad("spec.names.kind is required"))?;
    let plural = s("/names/plural").ok_or_else(|| bad("spec.names.plural is required"))?;
    if name != format!("{plural}.{group}") {
        return Err(bad(&format!("metadata.name: must be spec.names.plural+\".\"+spec.group ({plural}.{group})")));
    }
    let singular = s("/names/singular").unwrap_or_else(|| kind.to_lowercase());
    let namespaced = s("/scope").as_deref() != Some("Cluster");
    let strs = |p: &str| -> Vec<String> {
        spec.pointer(p)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let versions = spec.get("versions").and_then(Value::as_array).ok_or_else(|| bad("spec.versions is required"))?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let version = v.get("name").and_then(Value::as_str).ok_or_else(|| bad("spec.versions[].name is required"))?;
        out.push(Arc::new(ResourceType {
            group: group.clone(),
            version: version.into(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strs("/names/shortNames"),
            categories: strs("/names/categories"),
            has_status: v.pointer("/subresources/status").is_some(),
            has_scale: v.pointer("/subresources/scale").is_some(),
            has_generation: true,
            schema: Schema::Custom,
        }));
    }
    if out.is_empty() {
        return Err(bad("no served version"));
    }
    Ok(out)
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Groups in order of first appearance, each with its versions in order.
fn groups(types: &[Arc<ResourceType>]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for t in types {
        match out.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, vs)) if !vs.contains(&t.version) => vs.push(t.version.clone()),
            Some(_) => {}
            None => out.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    out
}

/// `/api`: the legacy core versions document.
pub fn api_versions(server_addr: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}]})
}

/// `/apis`: the legacy group list (core excluded).
pub fn api_group_list(types: &[Arc<ResourceType>]) -> Value {
    let groups: Vec<Value> = groups(types)
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1`, `/apis/G/V`: the resource list of one group version, or None if not served.
pub fn api_resource_list(types: &[Arc<ResourceType>], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in types.iter().filter(|t| t.group == group && t.version == version) {
        let mut r = json!({"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": t.verbs()});
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.has_status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "",
                "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.has_scale {
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "",
                "namespaced": t.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// The content type of aggregated discovery responses.
pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Aggregated discovery (`apidiscovery.k8s.io/v2`) for `/api` (core only) or `/apis` (the rest).
pub fn aggregated(types: &[Arc<ResourceType>], core: bool) -> Value {
    let items: Vec<Value> = groups(types)
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = types
                        .iter()
                        .filter(|t| t.group == g && &t.version == v)
                        .map(|t| {
                            let kind = json!({"group": t.group, "version": t.version, "kind": t.kind});
                            let mut subs = Vec::new();
                            if t.has_status {
                                subs.push(json!({"subresource": "status", "responseKind": kind,
                                    "verbs": ["get", "patch", "update"]}));
                            }
                            if t.has_scale {
                                subs.push(json!({"subresource": "scale", "responseKind":
                                    {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                                    "verbs": ["get", "patch", "update"]}));
                            }
                            let mut r = json!({"resource": t.plural, "responseKind": kind,
                                "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": t.singular, "verbs": t.verbs()});
                            if !t.short_names.is_empty() {
                                r["shortNames"] = json!(t.short_names);
                            }
                            if !t.categories.is_empty() {
                                r["categories"] = json!(t.categories);
                            }
                            if !subs.is_empty() {
                                r["subresources"] = json!(subs);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut item = json!({"metadata": {"creationTimestamp": null}, "versions": versions});
            if !g.is_empty() {
                item["metadata"]["name"] = json!(g);
            }
            item
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {}, "items": items})
}

/// `/openapi/v3`: one entry per served group version.
pub fn openapi_v3_index(types: &[Arc<ResourceType>]) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in groups(types) {
        for v in vs {
            let key = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
            let url = format!("/openapi/v3/{key}?hash=kubesim");
            paths.insert(key, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/G/V`: PATCH operations per resource declaring the
/// `fieldValidation` parameter (kubectl checks for it to choose server-side validation), and
/// object schemas that accept any field.
pub fn openapi_v3_group_version(types: &[Arc<ResourceType>], group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        {"name": "force", "in": "query", "schema": {"type": "boolean"}}
    ]);
    let mut any = false;
    for t in types.iter().filter(|t| t.group == group && t.version == version) {
        any = true;
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}", t.kind), "parameters": params,
                "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}}})
        };
        let item = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        let coll = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{prefix}/{}", t.plural)
        };
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        paths.insert(coll, json!({"get": op("list"), "post": op("post")}));
        let schema_name =
            format!("io.kubesim.{}.{}.{}", if t.group.is_empty() { "core" } else { &t.group }, t.version, t.kind);
        schemas.insert(
            schema_name,
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": [gvk]}),
        );
    }
    any.then(|| {
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.36.0"},
            "paths": paths, "components": {"schemas": schemas}})
    })
}

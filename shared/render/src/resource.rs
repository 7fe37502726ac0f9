//! One object being rendered, with the bookkeeping kustomize keeps beside it (previous
//! names, applied prefixes, hash-suffix wish), its identity and kustomize's output order.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

/// How a generated object combines with an existing one of the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behavior {
    Create,
    Merge,
    Replace,
}

/// A name/namespace/kind the object had before a transformer changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrevId {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// One builtin transformer run over an object (for `buildMetadata: [transformerAnnotations]`).
#[derive(Debug, Clone)]
pub(crate) struct Transformation {
    /// The kustomization or plugin config file that configured it.
    pub file: Arc<PathBuf>,
    /// The transformer kind (`PrefixTransformer`, …).
    pub kind: String,
    /// The plugin config's `metadata.name`, for transformers listed under `transformers:`.
    pub name: Option<String>,
}

/// An object and its kustomize bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub obj: Map<String, Value>,
    pub prev: Vec<PrevId>,
    pub prefixes: Vec<String>,
    pub suffixes: Vec<String>,
    pub needs_hash: bool,
    pub behavior: Behavior,
    /// Names of the vars that read this object.
    pub ref_vars: Vec<String>,
    /// The builtin generator kind that made this object (its `file` is then the
    /// kustomization), for `buildMetadata: [originAnnotations]`.
    pub generator: Option<&'static str>,
    /// The `metadata.name` of the generator plugin config that made this object.
    pub generator_name: Option<String>,
    /// File the object came from (for error messages).
    pub file: Arc<PathBuf>,
    /// The builtin transformers that ran over this object, with the file that configured
    /// each (a kustomization, or a plugin config with its name), in order; recorded only for
    /// `buildMetadata: [transformerAnnotations]`.
    pub transformations: Vec<Transformation>,
}

/// Group, version and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    pub fn from_api_version(api_version: &str, kind: &str) -> Gvk {
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        Gvk { group, version, kind: kind.to_string() }
    }

    /// kustomize's legacy sort string `group_version_kind`.
    fn legacy_string(&self) -> String {
        let or = |s: &str, d: &str| {
            if s.is_empty() { d.to_string() } else { s.to_string() }
        };
        format!("{}_{}_{}", or(&self.group, "~G"), or(&self.version, "~V"), or(&self.kind, "~K"))
    }
}

/// Kinds kustomize knows to be cluster-scoped (never given a namespace).
pub(crate) fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "PersistentVolume"
            | "StorageClass"
            | "PriorityClass"
            | "ValidatingWebhookConfiguration"
            | "MutatingWebhookConfiguration"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "MutatingAdmissionPolicy"
            | "MutatingAdmissionPolicyBinding"
            | "APIService"
            | "PodSecurityPolicy"
            | "Node"
            | "CSIDriver"
            | "CSINode"
            | "IngressClass"
            | "RuntimeClass"
            | "VolumeAttachment"
            | "ComponentStatus"
            | "CertificateSigningRequest"
            | "ClusterTrustBundle"
            | "FlowSchema"
            | "PriorityLevelConfiguration"
            | "TokenReview"
            | "SelfSubjectAccessReview"
            | "SelfSubjectRulesReview"
            | "SelfSubjectReview"
            | "SubjectAccessReview"
            | "DeviceClass"
            | "VolumeAttributesClass"
            | "IPAddress"
            | "ServiceCIDR"
            | "StorageVersion"
            | "StorageVersionMigration"
    )
}

/// Whether kustomize's namespace transformer leaves an object without a namespace: kustomize
/// asks its built-in OpenAPI schema (Kubernetes 1.21's), by group, version and kind, so a
/// kind that schema does not know at that version (`flowcontrol…/v1` FlowSchema,
/// ValidatingAdmissionPolicy, a CRD's cluster-scoped kind) is namespaced to it and gets the
/// namespace. Checked against `kubectl kustomize` over every version of every cluster-scoped
/// kind Kubernetes has.
pub(crate) fn kustomize_cluster_scoped(api_version: &str, kind: &str) -> bool {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let versions: &[&str] = match (group, kind) {
        ("", "Namespace" | "Node" | "PersistentVolume" | "ComponentStatus") => &["v1"],
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration")
        | ("apiextensions.k8s.io", "CustomResourceDefinition")
        | ("apiregistration.k8s.io", "APIService")
        | ("certificates.k8s.io", "CertificateSigningRequest")
        | ("networking.k8s.io", "IngressClass")
        | ("node.k8s.io", "RuntimeClass")
        | ("rbac.authorization.k8s.io", "ClusterRole" | "ClusterRoleBinding")
        | ("scheduling.k8s.io", "PriorityClass")
        | ("storage.k8s.io", "CSIDriver" | "CSINode" | "StorageClass" | "VolumeAttachment") => &["v1", "v1beta1"],
        ("flowcontrol.apiserver.k8s.io", "FlowSchema" | "PriorityLevelConfiguration")
        | ("policy", "PodSecurityPolicy") => &["v1beta1"],
        _ => &[],
    };
    versions.contains(&version)
}

/// The namespace kustomize compares with: `default` for an unset namespace of a
/// namespaced kind.
pub(crate) fn effective_ns<'a>(kind: &str, ns: &'a str) -> &'a str {
    if is_cluster_scoped(kind) {
        "_non_namespaceable_"
    } else if ns.is_empty() {
        "default"
    } else {
        ns
    }
}

/// Maps up to this many keys are searched by comparing keys rather than by hashing.
const SCAN_LIMIT: usize = 8;

/// `m[key]`. An object's own maps (top level, metadata, pod spec, …) hold a handful of keys,
/// and comparing them is several times cheaper than hashing `key` with serde_json's SipHash,
/// which was a fifth of a kustomize render's instructions; large maps are still hashed.
pub(crate) fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if m.len() > SCAN_LIMIT {
        return m.get(key);
    }
    m.iter().find_map(|(k, v)| (k == key).then_some(v))
}

/// [`field`], mutable.
pub(crate) fn field_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Value> {
    if m.len() > SCAN_LIMIT {
        return m.get_mut(key);
    }
    m.iter_mut().find_map(|(k, v)| (k == key).then_some(v))
}

fn str_at<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    field(m, key).and_then(Value::as_str).unwrap_or("")
}

impl Resource {
    pub fn new(obj: Map<String, Value>, file: Arc<PathBuf>) -> Resource {
        Resource {
            obj,
            prev: Vec::new(),
            prefixes: Vec::new(),
            suffixes: Vec::new(),
            needs_hash: false,
            behavior: Behavior::Create,
            ref_vars: Vec::new(),
            transformations: Vec::new(),
            generator: None,
            generator_name: None,
            file,
        }
    }

    pub fn api_version(&self) -> &str {
        str_at(&self.obj, "apiVersion")
    }

    pub fn kind(&self) -> &str {
        str_at(&self.obj, "kind")
    }

    pub fn gvk(&self) -> Gvk {
        Gvk::from_api_version(self.api_version(), self.kind())
    }

    /// The group and version of [`Self::gvk`], borrowed.
    fn group_version(&self) -> (&str, &str) {
        let api_version = self.api_version();
        api_version.rsplit_once('/').unwrap_or(("", api_version))
    }

    fn metadata(&self) -> Option<&Map<String, Value>> {
        field(&self.obj, "metadata").and_then(Value::as_object)
    }

    pub fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        let md = self.obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if !md.is_object() {
            *md = Value::Object(Map::new());
        }
        match md {
            Value::Object(m) => m,
            _ => unreachable!("metadata was just made an object"),
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().map(|m| str_at(m, "name")).unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.metadata().map(|m| str_at(m, "namespace")).unwrap_or("")
    }

    pub fn set_name(&mut self, name: &str) {
        self.metadata_mut().insert("name".into(), Value::String(name.into()));
    }

    pub fn set_namespace(&mut self, ns: &str) {
        if ns.is_empty() {
            self.metadata_mut().remove("namespace");
        } else {
            self.metadata_mut().insert("namespace".into(), Value::String(ns.into()));
        }
    }

    /// A string map under metadata (`labels` or `annotations`).
    pub fn meta_map(&self, key: &str) -> Option<&Map<String, Value>> {
        self.metadata().and_then(|m| field(m, key)).and_then(Value::as_object)
    }

    /// Records the current kind/name/namespace as a previous id.
    pub fn store_prev(&mut self) {
        let id = PrevId {
            kind: self.kind().to_string(),
            name: self.name().to_string(),
            namespace: self.namespace().to_string(),
        };
        self.prev.push(id);
    }

    /// The id the object had when first read.
    pub fn org_name_ns(&self) -> (&str, &str) {
        match self.prev.first() {
            Some(p) => (&p.name, &p.namespace),
            None => (self.name(), self.namespace()),
        }
    }

    /// Whether the current id or any previous id equals (gvk, name, namespace).
    pub fn any_id_equals(&self, gvk: &Gvk, name: &str, ns: &str) -> bool {
        let mine = self.gvk();
        if mine.group != gvk.group || mine.version != gvk.version {
            return false;
        }
        let target_ns = effective_ns(&gvk.kind, ns);
        let cur =
            mine.kind == gvk.kind && self.name() == name && effective_ns(self.kind(), self.namespace()) == target_ns;
        cur || self
            .prev
            .iter()
            .any(|p| p.kind == gvk.kind && p.name == name && effective_ns(&p.kind, &p.namespace) == target_ns)
    }

    /// Whether the current id equals another resource's current id.
    pub fn same_cur_id(&self, other: &Resource) -> bool {
        self.kind() == other.kind()
            && self.group_version() == other.group_version()
            && self.name() == other.name()
            && effective_ns(self.kind(), self.namespace()) == effective_ns(other.kind(), other.namespace())
    }

    /// A readable id for messages, e.g. `apps/v1 Deployment web (namespace prod)`.
    pub fn id_string(&self) -> String {
        let ns = self.namespace();
        if ns.is_empty() {
            format!("{} {} {}", self.api_version(), self.kind(), self.name())
        } else {
            format!("{} {} {} (namespace {ns})", self.api_version(), self.kind(), self.name())
        }
    }
}

const ORDER_FIRST: [&str; 22] = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
const ORDER_LAST: [&str; 2] = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"];

fn type_order(kind: &str) -> i32 {
    if let Some(i) = ORDER_FIRST.iter().position(|k| *k == kind) {
        return i as i32 - ORDER_FIRST.len() as i32;
    }
    if let Some(i) = ORDER_LAST.iter().position(|k| *k == kind) {
        return 1 + i as i32;
    }
    0
}

/// Sorts resources into kustomize's legacy output order.
pub(crate) fn legacy_sort(resources: &mut [Resource]) {
    legacy_sort_with(resources, None)
}

/// Legacy order with the kinds `sortOptions.legacySortOptions` puts first and last.
pub(crate) fn legacy_sort_with(resources: &mut [Resource], custom: Option<(&[String], &[String])>) {
    let rank = |kind: &str| -> i32 {
        let Some((first, last)) = custom else { return type_order(kind) };
        if let Some(i) = first.iter().position(|k| k == kind) {
            return i as i32 - first.len() as i32;
        }
        if let Some(i) = last.iter().position(|k| k == kind) {
            return 1 + i as i32;
        }
        0
    };
    resources.sort_by_cached_key(|r| {
        let gvk = r.gvk();
        let g = gvk.legacy_string();
        let ns = if r.namespace().is_empty() { "~X" } else { r.namespace() };
        let name = if r.name().is_empty() { "~N" } else { r.name() };
        (rank(&gvk.kind), g.clone(), format!("{g}|{ns}|{name}"))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk(api: &str, kind: &str, name: &str) -> Resource {
        let obj = json!({"apiVersion": api, "kind": kind, "metadata": {"name": name}});
        Resource::new(obj.as_object().cloned().unwrap_or_default(), Arc::new(PathBuf::from("t.yaml")))
    }

    #[test]
    fn legacy_order_puts_namespaces_first_and_webhooks_last() {
        let mut rs = vec![
            mk("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "v"),
            mk("apps/v1", "Deployment", "b"),
            mk("example.com/v1", "Widget", "w"),
            mk("apps/v1", "Deployment", "a"),
            mk("v1", "Namespace", "ns"),
            mk("v1", "ConfigMap", "c"),
        ];
        legacy_sort(&mut rs);
        let names: Vec<_> = rs.iter().map(|r| r.name().to_string()).collect();
        assert_eq!(names, ["ns", "c", "a", "b", "w", "v"]);
    }
}

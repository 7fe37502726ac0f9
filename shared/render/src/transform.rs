//! The built-in transformers of a kustomization: namespace, name prefix/suffix, labels,
//! annotations, images and replicas, with kustomize's default field specs, plus the same
//! operations at extra field specs (from `configurations:` or plugin configs).

use std::path::Path;

use serde_json::{Map, Value};

use super::config::{FieldSpec as ConfigFieldSpec, apply_field_specs, walk_path};
use super::kustomization::{ImageSpec, ReplicaSpec, scalar_string};
use super::resource::{Resource, field_mut, kustomize_cluster_scoped};
use super::yaml::DocCache;
use super::{RenderError, Result};

/// Where a transformer writes: kinds it applies to and a `/`-separated path.
struct FieldSpec {
    group: Option<&'static str>,
    version: Option<&'static str>,
    kind: Option<&'static str>,
    path: &'static str,
    create: bool,
}

const fn fs(group: Option<&'static str>, kind: Option<&'static str>, path: &'static str, create: bool) -> FieldSpec {
    FieldSpec { group, version: None, kind, path, create }
}

const fn core(kind: &'static str, path: &'static str, create: bool) -> FieldSpec {
    FieldSpec { group: Some(""), version: Some("v1"), kind: Some(kind), path, create }
}

impl FieldSpec {
    fn selects(&self, gvk: &super::resource::Gvk) -> bool {
        self.group.is_none_or(|g| g == gvk.group)
            && self.version.is_none_or(|v| v == gvk.version)
            && self.kind.is_none_or(|k| k == gvk.kind)
    }
}

const AFFINITY: [&str; 5] = [
    "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
    "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
    "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
    "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
    "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
];

const METADATA_LABELS: [FieldSpec; 1] = [fs(None, None, "metadata/labels", true)];

const TEMPLATE_LABELS: [FieldSpec; 9] = [
    core("ReplicationController", "spec/template/metadata/labels", true),
    fs(None, Some("Deployment"), "spec/template/metadata/labels", true),
    fs(None, Some("ReplicaSet"), "spec/template/metadata/labels", true),
    fs(None, Some("DaemonSet"), "spec/template/metadata/labels", true),
    fs(Some("apps"), Some("StatefulSet"), "spec/template/metadata/labels", true),
    fs(Some("batch"), Some("Job"), "spec/template/metadata/labels", true),
    fs(Some("batch"), Some("CronJob"), "spec/jobTemplate/spec/template/metadata/labels", true),
    fs(Some("batch"), Some("CronJob"), "spec/jobTemplate/metadata/labels", true),
    fs(Some("apps"), Some("StatefulSet"), "spec/volumeClaimTemplates[]/metadata/labels", true),
];

const SELECTOR_LABELS: [FieldSpec; 12] = [
    core("Service", "spec/selector", true),
    core("ReplicationController", "spec/selector", true),
    fs(None, Some("Deployment"), "spec/selector/matchLabels", true),
    fs(None, Some("ReplicaSet"), "spec/selector/matchLabels", true),
    fs(None, Some("DaemonSet"), "spec/selector/matchLabels", true),
    fs(Some("apps"), Some("StatefulSet"), "spec/selector/matchLabels", true),
    fs(Some("batch"), Some("Job"), "spec/selector/matchLabels", false),
    fs(Some("batch"), Some("CronJob"), "spec/jobTemplate/spec/selector/matchLabels", false),
    fs(Some("policy"), Some("PodDisruptionBudget"), "spec/selector/matchLabels", false),
    fs(Some("networking.k8s.io"), Some("NetworkPolicy"), "spec/podSelector/matchLabels", false),
    fs(Some("networking.k8s.io"), Some("NetworkPolicy"), "spec/ingress/from/podSelector/matchLabels", false),
    fs(Some("networking.k8s.io"), Some("NetworkPolicy"), "spec/egress/to/podSelector/matchLabels", false),
];

/// Only these kinds get labels in pod (anti-)affinity and topology spread selectors, as in
/// kustomize's default config (not DaemonSets, ReplicaSets or Jobs).
/// Namespace references kustomize's namespace transformer sets besides `metadata/namespace`
/// (its builtin `namespace:` field specs).
const NAMESPACE_REFS: [FieldSpec; 2] = [
    fs(Some("apiregistration.k8s.io"), Some("APIService"), "spec/service/namespace", true),
    fs(
        Some("apiextensions.k8s.io"),
        Some("CustomResourceDefinition"),
        "spec/conversion/webhook/clientConfig/service/namespace",
        false,
    ),
];

const AFFINITY_KINDS: [(Option<&str>, &str); 2] = [(Some("apps"), "Deployment"), (Some("apps"), "StatefulSet")];

const ANNOTATIONS: [FieldSpec; 9] = [
    fs(None, None, "metadata/annotations", true),
    core("ReplicationController", "spec/template/metadata/annotations", true),
    fs(None, Some("Deployment"), "spec/template/metadata/annotations", true),
    fs(None, Some("ReplicaSet"), "spec/template/metadata/annotations", true),
    fs(None, Some("DaemonSet"), "spec/template/metadata/annotations", true),
    fs(Some("apps"), Some("StatefulSet"), "spec/template/metadata/annotations", true),
    fs(Some("batch"), Some("Job"), "spec/template/metadata/annotations", true),
    fs(Some("batch"), Some("CronJob"), "spec/jobTemplate/metadata/annotations", true),
    fs(Some("batch"), Some("CronJob"), "spec/jobTemplate/spec/template/metadata/annotations", true),
];

/// Calls `f` on every value at `segs` below `v`, stepping through lists, creating missing
/// maps when `create` is set.
fn walk(v: &mut Value, path: &str, create: bool, f: &mut dyn FnMut(&mut Value)) {
    if path.is_empty() {
        f(v);
        return;
    }
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    match v {
        Value::Array(items) => {
            for item in items {
                walk(item, path, create, f);
            }
        }
        Value::Object(m) => {
            let is_list = first.ends_with("[]");
            let key = first.trim_end_matches("[]");
            if let Some(child) = field_mut(m, key).filter(|c| !c.is_null()) {
                walk(child, rest, create, f);
                return;
            }
            if !create || is_list {
                return;
            }
            m.insert(key.to_string(), Value::Object(Map::new()));
            if let Some(child) = m.get_mut(key) {
                walk(child, rest, create, f);
            }
        }
        _ => {}
    }
}

fn apply_specs(r: &mut Resource, gvk: &super::resource::Gvk, specs: &[FieldSpec], f: &mut dyn FnMut(&mut Value)) {
    let mut root: Option<Value> = None;
    for spec in specs.iter().filter(|s| s.selects(gvk)) {
        let v = root.get_or_insert_with(|| Value::Object(std::mem::take(&mut r.obj)));
        walk(v, spec.path, spec.create, f);
    }
    if let Some(Value::Object(m)) = root {
        r.obj = m;
    }
}

fn set_pairs(pairs: &Map<String, Value>) -> impl FnMut(&mut Value) + '_ {
    move |v: &mut Value| {
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        if let Value::Object(m) = v {
            for (k, val) in pairs {
                m.insert(k.clone(), Value::String(scalar_string(val)));
            }
        }
    }
}

/// Which label field specs a label set uses.
pub(crate) struct LabelScope {
    pub selectors: bool,
    pub templates: bool,
}

/// Adds labels (commonLabels or one `labels:` entry) to every resource.
pub(crate) fn add_labels(rs: &mut [Resource], pairs: &Map<String, Value>, scope: &LabelScope) {
    if pairs.is_empty() {
        return;
    }
    let mut f = set_pairs(pairs);
    for r in rs.iter_mut() {
        let gvk = r.gvk();
        apply_specs(r, &gvk, &METADATA_LABELS, &mut f);
        if scope.templates || scope.selectors {
            apply_specs(r, &gvk, &TEMPLATE_LABELS, &mut f);
        }
        if scope.selectors {
            apply_specs(r, &gvk, &SELECTOR_LABELS, &mut f);
            if AFFINITY_KINDS.iter().any(|(g, k)| *k == gvk.kind && g.is_none_or(|g| g == gvk.group)) {
                let specs = AFFINITY.map(|p| fs(None, None, p, false));
                apply_specs(r, &gvk, &specs, &mut f);
            }
        }
    }
}

/// Adds annotations to every resource (and pod templates).
pub(crate) fn add_annotations(rs: &mut [Resource], pairs: &Map<String, Value>) {
    if pairs.is_empty() {
        return;
    }
    let mut f = set_pairs(pairs);
    for r in rs.iter_mut() {
        let gvk = r.gvk();
        apply_specs(r, &gvk, &ANNOTATIONS, &mut f);
    }
}

/// Sets the namespace of every namespaced resource, and of RoleBinding subjects naming
/// the `default` ServiceAccount.
pub(crate) fn set_namespace(rs: &mut [Resource], ns: &str, kfile: &Path) -> Result<()> {
    for r in rs.iter_mut() {
        let kind = r.kind().to_string();
        if (kind == "RoleBinding" || kind == "ClusterRoleBinding")
            && let Some(Value::Array(subjects)) = r.obj.get_mut("subjects")
        {
            for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
                let is_default_sa = s.get("kind").and_then(Value::as_str) == Some("ServiceAccount")
                    && s.get("name").and_then(Value::as_str) == Some("default");
                if is_default_sa {
                    s.insert("namespace".into(), Value::String(ns.into()));
                }
            }
        }
        if kind == "Namespace" && r.api_version() == "v1" {
            // kustomize renames Namespace objects to the target namespace.
            r.store_prev();
            r.set_name(ns);
            continue;
        }
        let gvk = r.gvk();
        apply_specs(r, &gvk, &NAMESPACE_REFS, &mut |v| *v = Value::String(ns.into()));
        if kustomize_cluster_scoped(r.api_version(), &kind) {
            continue;
        }
        r.store_prev();
        r.set_namespace(ns);
    }
    for (i, a) in rs.iter().enumerate() {
        if let Some(b) = rs[i + 1..].iter().find(|b| b.name() == a.name() && b.same_cur_id(a)) {
            return Err(RenderError::invalid(
                kfile,
                format!(
                    "namespace '{ns}' makes two resources identical: {} (from {}) and {} (from {})",
                    a.id_string(),
                    a.file.display(),
                    b.id_string(),
                    b.file.display()
                ),
            ));
        }
    }
    Ok(())
}

fn skips_name_change(r: &Resource) -> bool {
    let gvk = r.gvk();
    gvk.kind == "Namespace"
        || gvk.kind == "CustomResourceDefinition"
        || (gvk.kind == "APIService" && gvk.group == "apiregistration.k8s.io")
}

/// Prepends `prefix` to every name kustomize renames.
pub(crate) fn add_prefix(rs: &mut [Resource], prefix: &str) {
    add_prefix_where(rs, prefix, &|_| true);
}

/// Prepends `prefix` to the names of the objects `pick` selects.
pub(crate) fn add_prefix_where(rs: &mut [Resource], prefix: &str, pick: &dyn Fn(&Resource) -> bool) {
    for r in rs.iter_mut().filter(|r| !skips_name_change(r) && pick(r)) {
        r.store_prev();
        let name = format!("{prefix}{}", r.name());
        r.set_name(&name);
        r.prefixes.push(prefix.to_string());
    }
}

/// Appends `suffix` to every name kustomize renames.
pub(crate) fn add_suffix(rs: &mut [Resource], suffix: &str) {
    add_suffix_where(rs, suffix, &|_| true);
}

/// Appends `suffix` to the names of the objects `pick` selects.
pub(crate) fn add_suffix_where(rs: &mut [Resource], suffix: &str, pick: &dyn Fn(&Resource) -> bool) {
    for r in rs.iter_mut().filter(|r| !skips_name_change(r) && pick(r)) {
        r.store_prev();
        let name = format!("{}{suffix}", r.name());
        r.set_name(&name);
        r.suffixes.push(suffix.to_string());
    }
}

/// Splits an image reference into name, tag and digest like kustomize's `image.Split`.
fn split_image(image: &str) -> (&str, &str, &str) {
    let slash = image.find('/').filter(|i| *i > 0).unwrap_or(0);
    let search = &image[slash..];
    let at = search.find('@').map(|i| i + slash);
    let colon = search.find(':').map(|i| i + slash);
    match (colon, at) {
        (None, None) => (image, "", ""),
        (c, Some(d)) if c.is_none_or(|c| d < c) => (&image[..d], "", &image[d + 1..]),
        (Some(c), Some(d)) => (&image[..c], &image[c + 1..d], &image[d + 1..]),
        (Some(c), None) => (&image[..c], &image[c + 1..], ""),
        (None, Some(d)) => (&image[..d], "", &image[d + 1..]),
    }
}

/// Compiled `images:` entries.
pub(crate) struct ImageRule {
    matcher: regex::Regex,
    new_name: String,
    new_tag: String,
    digest: String,
    tag_suffix: String,
}

impl ImageRule {
    /// Compiles an `images:` entry. kustomize builds a regular expression from the name as
    /// written (so `a+b` matches `aab`), and crashes on a name that does not compile; that
    /// is an error here, naming the entry.
    pub fn new(spec: &ImageSpec, kfile: &Path, cache: &DocCache) -> Result<ImageRule> {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        let matcher = cache
            .regex(&format!("^{}(:[a-zA-Z0-9_.{{}}-]*)?(@sha256:[a-zA-Z0-9_.{{}}-]*)?$", spec.name))
            .map_err(|_| {
                RenderError::invalid(
                    kfile,
                    format!(
                        "images: name '{}' is not a valid regular expression (kustomize matches image names as regular expressions); escape its special characters",
                        spec.name
                    ),
                )
            })?;
        Ok(ImageRule {
            matcher,
            new_name: s(&spec.new_name),
            new_tag: s(&spec.new_tag),
            digest: s(&spec.digest),
            tag_suffix: s(&spec.tag_suffix),
        })
    }

    fn apply(&self, image: &str) -> Option<String> {
        if !self.matcher.is_match(image) {
            return None;
        }
        let (name, tag, digest) = split_image(image);
        let mut name = name.to_string();
        let (mut tag, mut digest) = (tag.to_string(), digest.to_string());
        if !self.new_name.is_empty() {
            name = self.new_name.clone();
        }
        if !self.new_tag.is_empty() && !self.digest.is_empty() {
            tag = self.new_tag.clone();
            digest = self.digest.clone();
        } else if !self.new_tag.is_empty() {
            tag = self.new_tag.clone();
            digest.clear();
        } else if !self.digest.is_empty() {
            tag.clear();
            digest = self.digest.clone();
        } else if !self.tag_suffix.is_empty() {
            tag.push_str(&self.tag_suffix);
            digest.clear();
        }
        if !tag.is_empty() {
            name = format!("{name}:{tag}");
        }
        if !digest.is_empty() {
            name = format!("{name}@{digest}");
        }
        Some(name)
    }
}

/// Runs image rules like kustomize's ImageTagTransformers, one per rule in order: each
/// rewrites every `containers`/`initContainers` image anywhere in an object, then the
/// images at `specs` (a `tagSuffix` therefore lands twice where both reach).
/// `kustomize_defaults` adds the container paths of kustomize's default image specs.
pub(crate) fn transform_images(
    rs: &mut [Resource],
    rules: &[ImageRule],
    specs: &[ConfigFieldSpec],
    kustomize_defaults: bool,
) {
    fn visit(v: &mut Value, rule: &ImageRule) {
        match v {
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    if (k == "containers" || k == "initContainers")
                        && let Value::Array(items) = child
                    {
                        for c in items.iter_mut().filter_map(Value::as_object_mut) {
                            if let Some(Value::String(img)) = c.get_mut("image")
                                && let Some(new) = rule.apply(img)
                            {
                                *img = new;
                            }
                        }
                    }
                    visit(child, rule);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| visit(i, rule)),
            _ => {}
        }
    }
    for r in rs.iter_mut() {
        let selected: Vec<&str> = specs.iter().filter(|s| s.selects_resource(r)).map(|s| s.path.as_str()).collect();
        let mut root = Value::Object(std::mem::take(&mut r.obj));
        for rule in rules {
            visit(&mut root, rule);
            let doubled =
                if kustomize_defaults && !rule.tag_suffix.is_empty() { &CONTAINER_IMAGE_PATHS[..] } else { &[][..] };
            for path in selected.iter().copied().chain(doubled.iter().copied()) {
                walk_path(&mut root, path, false, &mut |v| {
                    if let Value::String(img) = v
                        && let Some(new) = rule.apply(img)
                    {
                        *img = new;
                    }
                });
            }
        }
        if let Value::Object(m) = root {
            r.obj = m;
        }
    }
}

/// Sets `spec.replicas` of the named workloads; a name that matches nothing is an error.
pub(crate) fn set_replicas(
    rs: &mut [Resource],
    specs: &[ReplicaSpec],
    extra: &[ConfigFieldSpec],
    kfile: &Path,
) -> Result<()> {
    const KINDS: [&str; 4] = ["Deployment", "ReplicationController", "ReplicaSet", "StatefulSet"];
    for spec in specs {
        let mut found = false;
        for r in rs.iter_mut() {
            let named = r.name() == spec.name || r.prev.iter().any(|p| p.name == spec.name);
            if !named {
                continue;
            }
            if !extra.is_empty() {
                let gvk = r.gvk();
                if extra.iter().any(|f| f.selects(&gvk)) {
                    found = true;
                    apply_field_specs(r, extra, &mut |v| *v = Value::from(spec.count));
                }
            }
            if !KINDS.contains(&r.kind()) {
                continue;
            }
            found = true;
            let mut root = Value::Object(std::mem::take(&mut r.obj));
            walk(&mut root, "spec/replicas", true, &mut |v| {
                *v = Value::from(spec.count);
            });
            if let Value::Object(m) = root {
                r.obj = m;
            }
        }
        if !found {
            return Err(RenderError::invalid(
                kfile,
                format!(
                    "replicas: resource with name '{}' does not match a Deployment, ReplicationController, ReplicaSet or StatefulSet",
                    spec.name
                ),
            ));
        }
    }
    Ok(())
}

/// Sets a string (a namespace) at extra field specs.
pub(crate) fn set_string_at(rs: &mut [Resource], specs: &[ConfigFieldSpec], value: &str) {
    for r in rs.iter_mut() {
        apply_field_specs(r, specs, &mut |v| *v = Value::String(value.to_string()));
    }
}

/// Adds label or annotation pairs at extra field specs.
pub(crate) fn add_pairs_at(rs: &mut [Resource], specs: &[ConfigFieldSpec], pairs: &Map<String, Value>) {
    if pairs.is_empty() {
        return;
    }
    let mut f = set_pairs(pairs);
    for r in rs.iter_mut() {
        apply_field_specs(r, specs, &mut f);
    }
}

/// Adds a prefix and suffix to the strings at extra field specs (never `metadata/name`,
/// which [`add_prefix`] and [`add_suffix`] handle with their bookkeeping).
pub(crate) fn affix_at(rs: &mut [Resource], specs: &[ConfigFieldSpec], prefix: &str, suffix: &str) {
    let specs: Vec<ConfigFieldSpec> = specs.iter().filter(|s| s.path != "metadata/name").cloned().collect();
    for r in rs.iter_mut() {
        apply_field_specs(r, &specs, &mut |v| {
            if let Value::String(s) = v {
                *s = format!("{prefix}{s}{suffix}");
            }
        });
    }
}

/// kustomize's default `images` field specs, which it applies after its legacy pass over
/// every `containers`/`initContainers` list, and which also reach image volumes. The
/// container ones only change anything for a `tagSuffix` (which so lands twice, as in
/// kustomize); every other rule gives the same image when applied again.
pub(crate) fn default_image_specs() -> Vec<ConfigFieldSpec> {
    ["spec/volumes[]/image/reference", "spec/template/spec/volumes[]/image/reference"]
        .iter()
        .map(|p| ConfigFieldSpec::any(p, false))
        .collect()
}

/// The container paths of kustomize's default `images` field specs (see
/// [`default_image_specs`]).
const CONTAINER_IMAGE_PATHS: [&str; 4] = [
    "spec/containers[]/image",
    "spec/initContainers[]/image",
    "spec/template/spec/containers[]/image",
    "spec/template/spec/initContainers[]/image",
];

/// Sets replica counts at extra field specs of the named objects.
pub(crate) fn replicas_at(rs: &mut [Resource], specs: &[ConfigFieldSpec], replicas: &[ReplicaSpec]) {
    for spec in replicas {
        for r in rs.iter_mut() {
            let named = r.name() == spec.name || r.prev.iter().any(|p| p.name == spec.name);
            if named {
                apply_field_specs(r, specs, &mut |v| *v = Value::from(spec.count));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_split_and_rewrite() {
        assert_eq!(split_image("nginx"), ("nginx", "", ""));
        assert_eq!(split_image("nginx:1.2"), ("nginx", "1.2", ""));
        assert_eq!(split_image("reg:5000/app:v1@sha256:abc"), ("reg:5000/app", "v1", "sha256:abc"));
        assert_eq!(split_image("app@sha256:abc"), ("app", "", "sha256:abc"));
        let rule = ImageRule::new(
            &ImageSpec {
                name: "nginx".into(),
                new_name: Some("reg/nginx".into()),
                new_tag: Some("2".into()),
                ..ImageSpec::default()
            },
            Path::new("kustomization.yaml"),
            &DocCache::default(),
        )
        .expect("valid");
        assert_eq!(rule.apply("nginx:1").as_deref(), Some("reg/nginx:2"));
        assert_eq!(rule.apply("nginx2:1"), None);
    }
}

//! Transformer configurations (`configurations:` files): extra field specs that tell the
//! builtin transformers where custom resources keep names, namespaces, labels, images and
//! references. They add to the builtin field specs and propagate from bases up to the
//! kustomizations that include them, as in kustomize.

use std::path::Path;

use serde_json::{Map, Value};

use super::resource::{Gvk, Resource, field_mut};
use super::{RenderError, Result};

/// A place in objects of some kinds: a `/`-separated path, created when missing if `create`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FieldSpec {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub path: String,
    pub create: bool,
}

impl FieldSpec {
    /// A spec for every kind.
    pub fn any(path: &str, create: bool) -> FieldSpec {
        FieldSpec { path: path.to_string(), create, ..FieldSpec::default() }
    }

    /// A spec for one kind.
    pub fn kind(kind: &str, path: &str) -> FieldSpec {
        FieldSpec { kind: Some(kind.to_string()), path: path.to_string(), ..FieldSpec::default() }
    }

    /// Whether the spec applies to the resource (without allocating its gvk).
    pub fn selects_resource(&self, r: &Resource) -> bool {
        if self.group.is_none() && self.version.is_none() && self.kind.is_none() {
            return true;
        }
        let api = r.api_version();
        let (group, version) = api.rsplit_once('/').unwrap_or(("", api));
        self.group.as_deref().is_none_or(|g| g == group)
            && self.version.as_deref().is_none_or(|v| v == version)
            && self.kind.as_deref().is_none_or(|k| k == r.kind())
    }

    /// Whether the spec applies to objects of `gvk`.
    pub fn selects(&self, gvk: &Gvk) -> bool {
        self.group.as_deref().is_none_or(|g| g == gvk.group)
            && self.version.as_deref().is_none_or(|v| v == gvk.version)
            && self.kind.as_deref().is_none_or(|k| k == gvk.kind)
    }

    fn parse(file: &Path, v: &Value) -> Result<FieldSpec> {
        let m = v.as_object().ok_or_else(|| RenderError::invalid(file, "a field spec must be a mapping"))?;
        let s = |k: &str| m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let path = s("path").ok_or_else(|| RenderError::invalid(file, "a field spec needs a 'path'"))?;
        Ok(FieldSpec {
            group: s("group"),
            version: s("version"),
            kind: s("kind"),
            path,
            create: m.get("create").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// Parses a list of field specs (the `fields:` of a `labels:` entry, plugin configs).
    pub fn parse_list(file: &Path, v: Option<&Value>) -> Result<Vec<FieldSpec>> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(|i| FieldSpec::parse(file, i)).collect(),
            Some(_) => Err(RenderError::invalid(file, "field specs must be a list")),
        }
    }
}

/// One `nameReference` entry: objects of the target kind are referred to by name at the
/// field specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameRef {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: String,
    pub fields: Vec<FieldSpec>,
}

/// The extra field specs of all `configurations:` in scope.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransformerConfig {
    pub name_prefix: Vec<FieldSpec>,
    pub name_suffix: Vec<FieldSpec>,
    pub namespace: Vec<FieldSpec>,
    pub common_labels: Vec<FieldSpec>,
    pub template_labels: Vec<FieldSpec>,
    pub common_annotations: Vec<FieldSpec>,
    pub images: Vec<FieldSpec>,
    pub replicas: Vec<FieldSpec>,
    pub var_reference: Vec<FieldSpec>,
    pub name_reference: Vec<NameRef>,
}

fn add_unique(into: &mut Vec<FieldSpec>, from: &[FieldSpec]) {
    for f in from {
        if !into.contains(f) {
            into.push(f.clone());
        }
    }
}

impl TransformerConfig {
    /// Parses one configuration file.
    pub fn parse(file: &Path, doc: &Value) -> Result<TransformerConfig> {
        let Some(m) = doc.as_object() else {
            return Ok(TransformerConfig::default());
        };
        let list = |k: &str| FieldSpec::parse_list(file, m.get(k));
        let mut name_reference = Vec::new();
        if let Some(Value::Array(items)) = m.get("nameReference") {
            for item in items {
                let o = item
                    .as_object()
                    .ok_or_else(|| RenderError::invalid(file, "a nameReference entry must be a mapping"))?;
                let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
                let kind = s("kind").ok_or_else(|| RenderError::invalid(file, "a nameReference entry needs a kind"))?;
                name_reference.push(NameRef {
                    group: s("group"),
                    version: s("version"),
                    kind,
                    fields: FieldSpec::parse_list(file, o.get("fieldSpecs"))?,
                });
            }
        }
        Ok(TransformerConfig {
            name_prefix: list("namePrefix")?,
            name_suffix: list("nameSuffix")?,
            namespace: list("namespace")?,
            common_labels: list("commonLabels")?,
            template_labels: list("templateLabels")?,
            common_annotations: list("commonAnnotations")?,
            images: list("images")?,
            replicas: list("replicas")?,
            var_reference: list("varReference")?,
            name_reference,
        })
    }

    /// Adds another configuration's specs (duplicates are kept once).
    pub fn merge(&mut self, other: &TransformerConfig) {
        add_unique(&mut self.name_prefix, &other.name_prefix);
        add_unique(&mut self.name_suffix, &other.name_suffix);
        add_unique(&mut self.namespace, &other.namespace);
        add_unique(&mut self.common_labels, &other.common_labels);
        add_unique(&mut self.template_labels, &other.template_labels);
        add_unique(&mut self.common_annotations, &other.common_annotations);
        add_unique(&mut self.images, &other.images);
        add_unique(&mut self.replicas, &other.replicas);
        add_unique(&mut self.var_reference, &other.var_reference);
        for nr in &other.name_reference {
            match self
                .name_reference
                .iter_mut()
                .find(|x| x.kind == nr.kind && x.group == nr.group && x.version == nr.version)
            {
                Some(x) => add_unique(&mut x.fields, &nr.fields),
                None => self.name_reference.push(nr.clone()),
            }
        }
    }
}

/// The field specs a `crds:` file (OpenAPI definitions keyed by Go type name) implies:
/// properties marked `x-kubernetes-annotation`, `-label-selector`, `-identity` and
/// `-object-ref-api-version`/`-object-ref-kind` (kustomize's `LoadConfigFromCRDs`).
pub(crate) fn config_from_crds(doc: &Value) -> TransformerConfig {
    let mut tc = TransformerConfig::default();
    let Some(defs) = doc.as_object() else { return tc };
    for (name, def) in defs {
        let props = def.pointer("/Schema/properties").and_then(Value::as_object);
        let looks_k8s =
            props.is_some_and(|p| p.contains_key("kind") && p.contains_key("apiVersion") && p.contains_key("metadata"));
        if !looks_k8s {
            continue;
        }
        let kind = name.rsplit('.').next().unwrap_or(name).to_string();
        crd_properties(&mut tc, &kind, defs, name, &mut Vec::new(), 0);
    }
    tc
}

fn crd_properties(
    tc: &mut TransformerConfig,
    kind: &str,
    defs: &Map<String, Value>,
    type_name: &str,
    path: &mut Vec<String>,
    depth: usize,
) {
    let Some(props) = defs.get(type_name).and_then(|d| d.pointer("/Schema/properties")).and_then(Value::as_object)
    else {
        return;
    };
    if depth > 32 {
        return;
    }
    let spec =
        |path: &[String]| FieldSpec { kind: Some(kind.to_string()), path: path.join("/"), ..FieldSpec::default() };
    for (prop, schema) in props {
        let ext = |k: &str| schema.get(k).and_then(Value::as_str);
        path.push(prop.clone());
        if ext("x-kubernetes-annotation").is_some() {
            add_unique(&mut tc.common_annotations, &[spec(path)]);
        }
        if ext("x-kubernetes-label-selector").is_some() {
            add_unique(&mut tc.common_labels, &[spec(path)]);
        }
        if ext("x-kubernetes-identity").is_some() {
            add_unique(&mut tc.name_prefix, &[spec(path)]);
        }
        if let (Some(version), Some(target)) =
            (ext("x-kubernetes-object-ref-api-version"), ext("x-kubernetes-object-ref-kind"))
        {
            let key = ext("x-kubernetes-object-ref-name-key").unwrap_or("name");
            let mut p = path.clone();
            p.push(key.to_string());
            let nr = NameRef {
                group: None,
                version: Some(version.to_string()),
                kind: target.to_string(),
                fields: vec![spec(&p)],
            };
            let mut other = TransformerConfig::default();
            other.name_reference.push(nr);
            tc.merge(&other);
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            crd_properties(tc, kind, defs, r, path, depth + 1);
        }
        path.pop();
    }
}

/// Splits a field-spec path into segments; `\/` escapes a slash inside a key.
pub(crate) fn split_path(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'/') => {
                cur.push('/');
                chars.next();
            }
            '/' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|s| !s.is_empty());
    out
}

/// Calls `f` on every value at `segs` below `v`, stepping through lists, creating missing
/// maps (and the final field, as `null` for `f` to fill) when `create` is set.
pub(crate) fn walk_segs(v: &mut Value, segs: &[String], create: bool, f: &mut dyn FnMut(&mut Value)) {
    let Some((first, rest)) = segs.split_first() else {
        f(v);
        return;
    };
    match v {
        Value::Array(items) => {
            for item in items {
                walk_segs(item, segs, create, f);
            }
        }
        Value::Object(m) => {
            let is_list = first.ends_with("[]");
            let key = first.trim_end_matches("[]");
            if !m.contains_key(key) || m.get(key).is_some_and(Value::is_null) {
                if !create || is_list {
                    return;
                }
                let fresh = if rest.is_empty() { Value::Null } else { Value::Object(Map::new()) };
                m.insert(key.to_string(), fresh);
            }
            if let Some(child) = m.get_mut(key) {
                walk_segs(child, rest, create, f);
            }
        }
        _ => {}
    }
}

/// [`walk_segs`] on a `/`-separated path, splitting as it goes (no allocation unless the
/// path escapes a slash).
pub(crate) fn walk_path(v: &mut Value, path: &str, create: bool, f: &mut dyn FnMut(&mut Value)) {
    if path.contains('\\') {
        walk_segs(v, &split_path(path), create, f);
        return;
    }
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        f(v);
        return;
    }
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    match v {
        Value::Array(items) => {
            for item in items {
                walk_path(item, path, create, f);
            }
        }
        Value::Object(m) => {
            let is_list = first.ends_with("[]");
            let key = first.trim_end_matches("[]");
            if let Some(child) = field_mut(m, key).filter(|c| !c.is_null()) {
                walk_path(child, rest, create, f);
                return;
            }
            if !create || is_list {
                return;
            }
            let fresh = if rest.is_empty() { Value::Null } else { Value::Object(Map::new()) };
            m.insert(key.to_string(), fresh);
            if let Some(child) = m.get_mut(key) {
                walk_path(child, rest, create, f);
            }
        }
        _ => {}
    }
}

/// Applies `f` at every spec of `specs` that selects the resource.
pub(crate) fn apply_field_specs(r: &mut Resource, specs: &[FieldSpec], f: &mut dyn FnMut(&mut Value)) {
    let selected: Vec<&FieldSpec> = specs.iter().filter(|s| s.selects_resource(r)).collect();
    if selected.is_empty() {
        return;
    }
    let mut root: Option<Value> = None;
    for spec in selected {
        let v = root.get_or_insert_with(|| Value::Object(std::mem::take(&mut r.obj)));
        walk_path(v, &spec.path, spec.create, f);
    }
    if let Some(Value::Object(m)) = root {
        r.obj = m;
    }
}

/// kustomize's default `varReference` field specs.
pub(crate) fn default_var_reference() -> Vec<FieldSpec> {
    const PODS: [(&str, &str); 7] = [
        ("CronJob", "spec/jobTemplate/spec/template/spec"),
        ("DaemonSet", "spec/template/spec"),
        ("Deployment", "spec/template/spec"),
        ("Job", "spec/template/spec"),
        ("Pod", "spec"),
        ("ReplicaSet", "spec/template/spec"),
        ("StatefulSet", "spec/template/spec"),
    ];
    const FIELDS: [&str; 4] = ["args", "command", "env/value", "volumeMounts/mountPath"];
    let mut out = Vec::new();
    for (kind, base) in PODS {
        for list in ["containers", "initContainers"] {
            for f in FIELDS {
                out.push(FieldSpec::kind(kind, &format!("{base}/{list}/{f}")));
            }
        }
    }
    // kustomize's NFS server paths, as its builtin list writes them (CronJob's lacks a `spec`).
    for (kind, path) in [
        ("CronJob", "spec/jobTemplate/spec/template/volumes/nfs/server"),
        ("DaemonSet", "spec/template/spec/volumes/nfs/server"),
        ("Deployment", "spec/template/spec/volumes/nfs/server"),
        ("Job", "spec/template/spec/volumes/nfs/server"),
        ("Pod", "spec/volumes/nfs/server"),
        ("ReplicaSet", "spec/template/spec/volumes/nfs/server"),
        ("StatefulSet", "spec/volumeClaimTemplates/spec/nfs/server"),
        ("PersistentVolume", "spec/nfs/server"),
        ("Deployment", "spec/template/metadata/annotations"),
    ] {
        out.push(FieldSpec::kind(kind, path));
    }
    for p in ["spec/rules/host", "spec/tls/hosts", "spec/tls/secretName"] {
        out.push(FieldSpec::kind("Ingress", p));
    }
    for p in ["spec/ports/port", "spec/ports/targetPort"] {
        out.push(FieldSpec::kind("Service", p));
    }
    out.push(FieldSpec::any("metadata/labels", false));
    out.push(FieldSpec::any("metadata/annotations", false));
    out
}

//! Name-reference fix-up: after prefixes, suffixes, namespaces and hashes changed names,
//! rewrite the fields that refer to those objects (ConfigMap/Secret/ServiceAccount/PVC
//! references in pod templates, RBAC roleRef and subjects, Service backends, …), choosing
//! the referred object the way kustomize's `nameref` filter does.

use serde_json::{Map, Value};

use super::config::{NameRef, split_path};
use super::resource::{PrevId, Resource, effective_ns, is_cluster_scoped};
use super::{RenderError, Result};

/// A field in a referrer that holds the name of an object of kind `target`.
struct RefSpec {
    target: &'static str,
    /// Kinds that hold the reference; empty means any kind.
    referrers: &'static [&'static str],
    /// Path to the map holding the `field`.
    path: &'static str,
    field: &'static str,
    /// The holding map's `kind` must equal `target` (roleRef, scaleTargetRef, subjects).
    check_kind: bool,
    /// The holding map has a `namespace` that follows the referral (subjects, services).
    with_ns: bool,
}

const fn r(
    target: &'static str,
    referrers: &'static [&'static str],
    path: &'static str,
    field: &'static str,
) -> RefSpec {
    RefSpec { target, referrers, path, field, check_kind: false, with_ns: false }
}

/// References inside a pod spec, relative to it.
const POD_REFS: [(&str, &str, &str); 19] = [
    ("ConfigMap", "volumes/configMap", "name"),
    ("ConfigMap", "volumes/projected/sources/configMap", "name"),
    ("ConfigMap", "containers/env/valueFrom/configMapKeyRef", "name"),
    ("ConfigMap", "initContainers/env/valueFrom/configMapKeyRef", "name"),
    ("ConfigMap", "containers/envFrom/configMapRef", "name"),
    ("ConfigMap", "initContainers/envFrom/configMapRef", "name"),
    ("Secret", "volumes/secret", "secretName"),
    ("Secret", "volumes/projected/sources/secret", "name"),
    ("Secret", "containers/env/valueFrom/secretKeyRef", "name"),
    ("Secret", "initContainers/env/valueFrom/secretKeyRef", "name"),
    ("Secret", "containers/envFrom/secretRef", "name"),
    ("Secret", "initContainers/envFrom/secretRef", "name"),
    ("Secret", "imagePullSecrets", "name"),
    ("Secret", "volumes/csi/nodePublishSecretRef", "name"),
    ("ServiceAccount", "", "serviceAccountName"),
    ("PersistentVolumeClaim", "volumes/persistentVolumeClaim", "claimName"),
    ("PriorityClass", "", "priorityClassName"),
    ("RuntimeClass", "", "runtimeClassName"),
    ("ConfigMap", "ephemeralContainers/envFrom/configMapRef", "name"),
];

/// Kinds with a pod spec and where it is.
const POD_HOLDERS: [(&str, &str); 8] = [
    ("Pod", "spec"),
    ("Deployment", "spec/template/spec"),
    ("ReplicaSet", "spec/template/spec"),
    ("DaemonSet", "spec/template/spec"),
    ("StatefulSet", "spec/template/spec"),
    ("Job", "spec/template/spec"),
    ("ReplicationController", "spec/template/spec"),
    ("CronJob", "spec/jobTemplate/spec/template/spec"),
];

const OTHER_REFS: [RefSpec; 21] = [
    r("Secret", &["ServiceAccount"], "imagePullSecrets", "name"),
    r("Secret", &["ServiceAccount"], "secrets", "name"),
    r("Secret", &["Ingress"], "spec/tls", "secretName"),
    r("Service", &["StatefulSet"], "spec", "serviceName"),
    r("Service", &["Ingress"], "spec/rules/http/paths/backend/service", "name"),
    r("Service", &["Ingress"], "spec/rules/http/paths/backend", "serviceName"),
    r("Service", &["Ingress"], "spec/defaultBackend/service", "name"),
    r("Service", &["Ingress"], "spec/backend", "serviceName"),
    r("Service", &["APIService"], "spec/service", "name"),
    RefSpec {
        with_ns: true,
        ..r(
            "Service",
            &["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"],
            "webhooks/clientConfig/service",
            "name",
        )
    },
    RefSpec { check_kind: true, ..r("Role", &["RoleBinding"], "roleRef", "name") },
    RefSpec { check_kind: true, ..r("ClusterRole", &["RoleBinding", "ClusterRoleBinding"], "roleRef", "name") },
    RefSpec {
        check_kind: true,
        with_ns: true,
        ..r("ServiceAccount", &["RoleBinding", "ClusterRoleBinding"], "subjects", "name")
    },
    RefSpec { check_kind: true, ..r("Deployment", &["HorizontalPodAutoscaler"], "spec/scaleTargetRef", "name") },
    RefSpec { check_kind: true, ..r("StatefulSet", &["HorizontalPodAutoscaler"], "spec/scaleTargetRef", "name") },
    RefSpec { check_kind: true, ..r("ReplicaSet", &["HorizontalPodAutoscaler"], "spec/scaleTargetRef", "name") },
    RefSpec {
        check_kind: true,
        ..r("ReplicationController", &["HorizontalPodAutoscaler"], "spec/scaleTargetRef", "name")
    },
    r("PersistentVolume", &["PersistentVolumeClaim"], "spec", "volumeName"),
    r("StorageClass", &["PersistentVolumeClaim", "PersistentVolume"], "spec", "storageClassName"),
    r("StorageClass", &["StatefulSet"], "spec/volumeClaimTemplates/spec", "storageClassName"),
    r("IngressClass", &["Ingress"], "spec", "ingressClassName"),
];

/// What the fix-up needs to know about each object, frozen before any rewrite.
struct Info {
    group: String,
    kind: String,
    name: String,
    namespace: String,
    prev: Vec<PrevId>,
    prefixes: Vec<String>,
    suffixes: Vec<String>,
}

/// Rewrites references to renamed objects in all resources.
pub(crate) fn fix_references(rs: &mut [Resource], custom: &[NameRef]) -> Result<()> {
    let infos: Vec<Info> = rs
        .iter()
        .map(|r| Info {
            group: r.gvk().group,
            kind: r.kind().to_string(),
            name: r.name().to_string(),
            namespace: r.namespace().to_string(),
            prev: r.prev.clone(),
            prefixes: r.prefixes.clone(),
            suffixes: r.suffixes.clone(),
        })
        .collect();
    if infos.iter().all(|i| i.prev.is_empty()) {
        return Ok(());
    }
    for (idx, res) in rs.iter_mut().enumerate() {
        let kind = res.kind().to_string();
        let gvk = res.gvk();
        let referrer = &infos[idx];
        let mut root = Value::Object(std::mem::take(&mut res.obj));
        let mut outcome = Ok(());
        if let Some((_, base)) = POD_HOLDERS.iter().find(|(k, _)| *k == kind) {
            for (target, path, field) in POD_REFS {
                let full = if path.is_empty() { base.to_string() } else { format!("{base}/{path}") };
                let spec = r(target, &[], "", field);
                outcome = outcome.and(fix_at(&mut root, &full, &spec, referrer, &infos));
            }
        }
        for spec in OTHER_REFS.iter().filter(|s| s.referrers.contains(&kind.as_str())) {
            outcome = outcome.and(fix_at(&mut root, spec.path, spec, referrer, &infos));
        }
        if !custom.is_empty() {
            for nr in custom {
                for fs in nr.fields.iter().filter(|f| f.selects(&gvk)) {
                    outcome = outcome.and(fix_custom(&mut root, nr, &fs.path, referrer, &infos));
                }
            }
        }
        if let Value::Object(m) = root {
            res.obj = m;
        }
        outcome.map_err(|message| RenderError::invalid(&res.file, message))?;
    }
    Ok(())
}

fn fix_at(
    root: &mut Value,
    path: &str,
    spec: &RefSpec,
    referrer: &Info,
    infos: &[Info],
) -> std::result::Result<(), String> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut result = Ok(());
    visit_maps(root, &segs, &mut |m| {
        if result.is_err() {
            return;
        }
        if spec.check_kind && m.get("kind").and_then(Value::as_str) != Some(spec.target) {
            return;
        }
        let Some(old) = m.get(spec.field).and_then(Value::as_str).map(str::to_string) else {
            return;
        };
        let ns_hint = if spec.with_ns { m.get("namespace").and_then(Value::as_str).map(str::to_string) } else { None };
        match select(infos, spec.target, &old, ns_hint.as_deref(), referrer) {
            Ok(Some(i)) => {
                let found = &infos[i];
                m.insert(spec.field.to_string(), Value::String(found.name.clone()));
                if spec.with_ns && (m.contains_key("namespace") || !found.namespace.is_empty()) {
                    m.insert("namespace".to_string(), Value::String(found.namespace.clone()));
                }
            }
            Ok(None) => {}
            Err(e) => result = Err(e),
        }
    });
    result
}

/// Fixes references at a field spec from `configurations:`: the field holds a name, a
/// list of names, or a map with `name` (and `namespace`).
fn fix_custom(
    root: &mut Value,
    nr: &NameRef,
    path: &str,
    referrer: &Info,
    infos: &[Info],
) -> std::result::Result<(), String> {
    let segs = split_path(path);
    let Some((field, parent)) = segs.split_last() else { return Ok(()) };
    let field = field.trim_end_matches("[]").to_string();
    let parent: Vec<&str> = parent.iter().map(|s| s.trim_end_matches("[]")).collect();
    let mut result = Ok(());
    let group_ok = |i: &Info| nr.group.as_deref().is_none_or(|g| g == i.group);
    let mut pick = |old: &str, ns: Option<&str>| -> Option<usize> {
        match select(infos, &nr.kind, old, ns, referrer) {
            Ok(Some(i)) if group_ok(&infos[i]) => Some(i),
            Ok(_) => None,
            Err(e) => {
                result = Err(e);
                None
            }
        }
    };
    visit_maps(root, &parent, &mut |m| match m.get_mut(&field) {
        Some(Value::String(old)) => {
            if let Some(i) = pick(old, None) {
                *old = infos[i].name.clone();
            }
        }
        Some(Value::Array(items)) => {
            for item in items.iter_mut() {
                match item {
                    Value::String(old) => {
                        if let Some(i) = pick(old, None) {
                            *old = infos[i].name.clone();
                        }
                    }
                    Value::Object(o) => fix_named_map(o, &mut pick, infos),
                    _ => {}
                }
            }
        }
        Some(Value::Object(o)) => fix_named_map(o, &mut pick, infos),
        _ => {}
    });
    result
}

fn fix_named_map(
    o: &mut Map<String, Value>,
    pick: &mut dyn FnMut(&str, Option<&str>) -> Option<usize>,
    infos: &[Info],
) {
    let Some(old) = o.get("name").and_then(Value::as_str).map(str::to_string) else { return };
    let ns = o.get("namespace").and_then(Value::as_str).map(str::to_string);
    if let Some(i) = pick(&old, ns.as_deref()) {
        o.insert("name".into(), Value::String(infos[i].name.clone()));
        if ns.is_some() && !infos[i].namespace.is_empty() {
            o.insert("namespace".into(), Value::String(infos[i].namespace.clone()));
        }
    }
}

fn visit_maps(v: &mut Value, segs: &[&str], f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| visit_maps(i, segs, f)),
        Value::Object(m) => match segs.split_first() {
            None => f(m),
            Some((first, rest)) => {
                if let Some(child) = m.get_mut(*first) {
                    visit_maps(child, rest, f);
                }
            }
        },
        _ => {}
    }
}

/// Picks the object a reference `old` (of kind `target`) means, like kustomize's
/// `selectReferral`: by previous name, then namespace, then prefix/suffix lineage.
fn select(
    infos: &[Info],
    target: &str,
    old: &str,
    ns_hint: Option<&str>,
    referrer: &Info,
) -> std::result::Result<Option<usize>, String> {
    let mut cands: Vec<usize> = infos
        .iter()
        .enumerate()
        .filter(|(_, i)| {
            i.kind == target
                && i.prev.iter().any(|p| {
                    p.name == old
                        && ns_hint.is_none_or(|ns| effective_ns(&p.kind, &p.namespace) == effective_ns(&p.kind, ns))
                })
        })
        .map(|(i, _)| i)
        .collect();
    if !is_cluster_scoped(&referrer.kind) {
        let mine = effective_ns(&referrer.kind, &referrer.namespace);
        cands.retain(|&c| {
            let i = &infos[c];
            is_cluster_scoped(&i.kind) || i.kind == "ServiceAccount" || effective_ns(&i.kind, &i.namespace) == mine
        });
    }
    if cands.len() <= 1 {
        return Ok(cands.first().copied());
    }
    cands.retain(|&c| lineage_matches(&infos[c], referrer));
    match cands.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => {
            let first = &infos[many[0]].name;
            if many.iter().all(|&c| infos[c].name == *first) {
                Ok(Some(many[0]))
            } else {
                let names: Vec<&str> = many.iter().map(|&c| infos[c].name.as_str()).collect();
                Err(format!("found multiple possible referrals for {target} '{old}': {}", names.join(", ")))
            }
        }
    }
}

fn same_ending(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[a.len() - n..] == b[b.len() - n..]
}

fn lineage_matches(cand: &Info, referrer: &Info) -> bool {
    let prefix_ok =
        cand.prefixes.is_empty() || referrer.prefixes.is_empty() || same_ending(&cand.prefixes, &referrer.prefixes);
    let suffix_ok =
        cand.suffixes.is_empty() || referrer.suffixes.is_empty() || same_ending(&cand.suffixes, &referrer.suffixes);
    prefix_ok && suffix_ok
}

//! Name-reference fix-up: after prefixes, suffixes, namespaces and hashes changed names,
//! rewrite the fields that refer to those objects (ConfigMap/Secret/ServiceAccount/PVC
//! references in pod templates, RBAC roleRef and subjects, Service backends, …), choosing
//! the referred object the way kustomize's `nameref` filter does.

use serde_json::{Map, Value};

use super::config::{FieldSpec, NameRef, split_path};
use super::resource::{PrevId, Resource, effective_ns, field_mut, is_cluster_scoped};
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
const POD_REFS: [(&str, &str, &str); 16] = [
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
    ("ServiceAccount", "", "serviceAccountName"),
    ("PersistentVolumeClaim", "volumes/persistentVolumeClaim", "claimName"),
    ("PriorityClass", "", "priorityClassName"),
];

/// Kinds with a pod spec, where it is, and whether kustomize's default config follows
/// ConfigMap/Secret references in it and ServiceAccount/PVC/PriorityClass references in it
/// (its lists differ: ReplicaSets only have the first, ReplicationControllers the second).
const POD_HOLDERS: [(&str, &str, bool, bool); 9] = [
    ("Pod", "spec", true, true),
    ("PodTemplate", "template/spec", true, false),
    ("Deployment", "spec/template/spec", true, true),
    ("ReplicaSet", "spec/template/spec", true, false),
    ("DaemonSet", "spec/template/spec", true, true),
    ("StatefulSet", "spec/template/spec", true, true),
    ("Job", "spec/template/spec", true, true),
    ("ReplicationController", "spec/template/spec", false, true),
    ("CronJob", "spec/jobTemplate/spec/template/spec", true, true),
];

/// Further references of kustomize's default name-reference config, in the form
/// `configurations:` use: (target kind, referrer group, referrer kind, path).
const PLAIN_REFS: [(&str, &str, &str, &str); 16] = [
    ("ConfigMap", "", "Node", "spec/configSource/configMap"),
    ("ConfigMap", "", "Role", "rules/resourceNames"),
    ("ConfigMap", "", "ClusterRole", "rules/resourceNames"),
    ("ConfigMap", "", "Ingress", "metadata/annotations/nginx.ingress.kubernetes.io\\/fastcgi-params-configmap"),
    ("Secret", "", "Ingress", "metadata/annotations/ingress.kubernetes.io\\/auth-secret"),
    ("Secret", "", "Ingress", "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-secret"),
    ("Secret", "", "Ingress", "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-tls-secret"),
    ("Secret", "", "StorageClass", "parameters/secretName"),
    ("Secret", "", "StorageClass", "parameters/adminSecretName"),
    ("Secret", "", "StorageClass", "parameters/userSecretName"),
    ("Secret", "", "StorageClass", "parameters/secretRef"),
    ("Secret", "", "Role", "rules/resourceNames"),
    ("Secret", "", "ClusterRole", "rules/resourceNames"),
    ("Secret", "serving.knative.dev", "Service", "spec/template/spec/containers/env/valueFrom/secretKeyRef/name"),
    ("Secret", "", "PersistentVolume", "spec/azureFile/secretName"),
    ("PersistentVolume", "", "ClusterRole", "rules/resourceNames"),
];

/// A reference inside a pod spec: target kind, path segments from the object, field.
type PodRef = (&'static str, Vec<&'static str>, &'static str);

/// The pod spec references `kind` holds (none for a kind without a pod spec), their paths
/// split once per process: the fix-up asks for them for every object of every render.
fn pod_refs(kind: &str) -> &'static [PodRef] {
    static REFS: std::sync::OnceLock<Vec<(&str, Vec<PodRef>)>> = std::sync::OnceLock::new();
    let holders = REFS.get_or_init(|| {
        POD_HOLDERS
            .iter()
            .map(|&(holder, base, configs, accounts)| {
                let refs = POD_REFS
                    .iter()
                    .filter(|(target, ..)| if matches!(*target, "ConfigMap" | "Secret") { configs } else { accounts })
                    .map(|&(target, path, field)| {
                        let segs = base.split('/').chain(path.split('/')).filter(|s| !s.is_empty()).collect();
                        (target, segs, field)
                    })
                    .collect();
                (holder, refs)
            })
            .collect()
    });
    holders.iter().find(|(holder, _)| *holder == kind).map_or(&[], |(_, refs)| refs.as_slice())
}

fn plain_refs() -> &'static [NameRef] {
    static REFS: std::sync::OnceLock<Vec<NameRef>> = std::sync::OnceLock::new();
    REFS.get_or_init(|| {
        let mut out: Vec<NameRef> = Vec::new();
        for (target, group, kind, path) in PLAIN_REFS {
            let spec = FieldSpec {
                group: (!group.is_empty()).then(|| group.to_string()),
                kind: Some(kind.to_string()),
                path: path.to_string(),
                ..FieldSpec::default()
            };
            match out.iter_mut().find(|n| n.kind == target) {
                Some(n) => n.fields.push(spec),
                None => out.push(NameRef { group: None, version: None, kind: target.to_string(), fields: vec![spec] }),
            }
        }
        out
    })
}

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
        for &(target, ref segs, field) in pod_refs(&kind) {
            let spec = r(target, &[], "", field);
            outcome = outcome.and(fix_at(&mut root, segs, &spec, referrer, &infos));
        }
        for spec in OTHER_REFS.iter().filter(|s| s.referrers.contains(&kind.as_str())) {
            let segs: Vec<&str> = spec.path.split('/').filter(|s| !s.is_empty()).collect();
            outcome = outcome.and(fix_at(&mut root, &segs, spec, referrer, &infos));
        }
        {
            for nr in plain_refs().iter().chain(custom) {
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
    segs: &[&str],
    spec: &RefSpec,
    referrer: &Info,
    infos: &[Info],
) -> std::result::Result<(), String> {
    let mut result = Ok(());
    visit_maps(root, segs, &mut |m| {
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
                if let Some(child) = field_mut(m, first) {
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
            (i.kind == target || i.prev.iter().any(|p| p.kind == target))
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

//! Apply order: Namespaces and CRDs first, then cluster-scoped RBAC and ServiceAccounts, config,
//! Services, workloads, and the rest; prune walks the same phases backwards, Namespaces last.
//! Also the dependsOn graph between apps.

use std::collections::{BTreeMap, BTreeSet};

use convoy_shared::model::ObjectRef;

/// The phases of one apply, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Namespaces and CustomResourceDefinitions (then wait until the CRDs are Established).
    Foundation,
    /// RBAC, ServiceAccounts and other cluster-wide policy objects.
    Access,
    /// ConfigMaps, Secrets and storage claims.
    Config,
    /// Services.
    Services,
    /// Deployments, StatefulSets, DaemonSets, Jobs…
    Workloads,
    /// Everything else, custom resources included.
    Rest,
}

impl Phase {
    /// Every phase in apply order.
    pub const ALL: [Phase; 6] =
        [Phase::Foundation, Phase::Access, Phase::Config, Phase::Services, Phase::Workloads, Phase::Rest];

    /// The phase an object belongs to.
    pub fn of(r: &ObjectRef) -> Phase {
        match (r.group.as_str(), r.kind.as_str()) {
            ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition") => Phase::Foundation,
            ("rbac.authorization.k8s.io", _)
            | ("", "ServiceAccount")
            | ("", "LimitRange")
            | ("", "ResourceQuota")
            | ("scheduling.k8s.io", "PriorityClass")
            | ("policy", "PodSecurityPolicy")
            | ("storage.k8s.io", "StorageClass") => Phase::Access,
            ("", "ConfigMap") | ("", "Secret") | ("", "PersistentVolume") | ("", "PersistentVolumeClaim") => {
                Phase::Config
            }
            ("", "Service") => Phase::Services,
            ("apps", _) | ("batch", _) | ("", "Pod") | ("", "ReplicationController") => Phase::Workloads,
            _ => Phase::Rest,
        }
    }
}

/// Where an object goes in one apply. Helm hooks (from charts; they keep their `helm.sh/hook`
/// annotation) map onto the phases as Helm runs them: `pre-install`/`pre-upgrade` hooks after
/// Namespaces and CRDs and before everything else, `post-install`/`post-upgrade` hooks after
/// everything, each by `helm.sh/hook-weight` (lowest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Namespaces and CRDs.
    Foundation,
    /// Pre-install/pre-upgrade hooks of this weight.
    PreHook(i64),
    /// Every other phase.
    Main(Phase),
    /// Post-install/post-upgrade hooks of this weight.
    PostHook(i64),
}

impl Step {
    /// The step of `object`, whose body is `body`.
    pub fn of(object: &ObjectRef, body: &serde_json::Value) -> Step {
        let phase = Phase::of(object);
        if phase == Phase::Foundation {
            return Step::Foundation;
        }
        let annotations = &body["metadata"]["annotations"];
        let Some(hook) = annotations["helm.sh/hook"].as_str() else { return Step::Main(phase) };
        let weight = annotations["helm.sh/hook-weight"].as_str().and_then(|w| w.trim().parse().ok()).unwrap_or(0);
        let hooks: Vec<&str> = hook.split(',').map(str::trim).collect();
        if hooks.iter().any(|h| *h == "pre-install" || *h == "pre-upgrade") {
            Step::PreHook(weight)
        } else if hooks.iter().any(|h| *h == "post-install" || *h == "post-upgrade") {
            Step::PostHook(weight)
        } else {
            Step::Main(phase)
        }
    }
}

/// Sort key for pruning: reverse apply phase, and within Foundation, CRDs before Namespaces, so
/// Namespaces always go last.
pub fn prune_rank(r: &ObjectRef) -> (u8, u8) {
    let phase = Phase::ALL.len() as u8 - Phase::of(r) as u8;
    let namespace_last = (r.group.is_empty() && r.kind == "Namespace") as u8;
    (phase, namespace_last)
}

/// Errors in the dependsOn graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("apps {0:?} depend on each other in a cycle; break the cycle in their app.yaml dependsOn")]
    Cycle(Vec<String>),
}

/// Apps in waves: every app of a wave depends only on apps of earlier waves. Dependencies on apps
/// absent from the assignment are kept (they block their dependents, which is reported).
pub fn waves(deps: &BTreeMap<String, Vec<String>>) -> Result<Vec<Vec<String>>, OrderError> {
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut waves = Vec::new();
    let mut left: BTreeSet<&String> = deps.keys().collect();
    while !left.is_empty() {
        let wave: Vec<String> = left
            .iter()
            .filter(|app| deps[**app].iter().all(|d| placed.contains(d) || !deps.contains_key(d)))
            .map(|a| a.to_string())
            .collect();
        if wave.is_empty() {
            return Err(OrderError::Cycle(left.iter().map(|a| a.to_string()).collect()));
        }
        for app in &wave {
            left.remove(app);
            placed.insert(app.clone());
        }
        waves.push(wave);
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_hooks_run_around_the_rest_by_weight() {
        let step = |kind: &str, annotations: serde_json::Value| {
            let body = serde_json::json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "annotations": annotations}});
            Step::of(&ObjectRef::of(&body), &body)
        };
        let none = serde_json::json!({});
        let mut steps = [
            step("Job", serde_json::json!({"helm.sh/hook": "post-install,post-upgrade"})),
            step("ConfigMap", serde_json::json!({"helm.sh/hook": "pre-install", "helm.sh/hook-weight": "5"})),
            step("Service", none.clone()),
            step("Namespace", serde_json::json!({"helm.sh/hook": "pre-install"})),
            step("Secret", serde_json::json!({"helm.sh/hook": "pre-upgrade", "helm.sh/hook-weight": "-1"})),
        ];
        steps.sort();
        assert_eq!(
            steps,
            [Step::Foundation, Step::PreHook(-1), Step::PreHook(5), Step::Main(Phase::Services), Step::PostHook(0)]
        );
    }

    fn r(group: &str, kind: &str) -> ObjectRef {
        ObjectRef {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: String::new(),
            name: "x".into(),
        }
    }

    #[test]
    fn phases_follow_the_design() {
        let mut refs = vec![
            r("example.com", "Widget"),
            r("apps", "Deployment"),
            r("", "Service"),
            r("", "ConfigMap"),
            r("rbac.authorization.k8s.io", "ClusterRole"),
            r("", "ServiceAccount"),
            r("apiextensions.k8s.io", "CustomResourceDefinition"),
            r("", "Namespace"),
            r("networking.k8s.io", "Ingress"),
            r("batch", "Job"),
        ];
        refs.sort_by_key(Phase::of);
        let kinds: Vec<&str> = refs.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "Namespace",
                "ClusterRole",
                "ServiceAccount",
                "ConfigMap",
                "Service",
                "Deployment",
                "Job",
                "Widget",
                "Ingress"
            ]
        );
    }

    #[test]
    fn prune_goes_backwards_with_namespaces_last() {
        let mut refs = [
            r("", "Namespace"),
            r("apiextensions.k8s.io", "CustomResourceDefinition"),
            r("", "ConfigMap"),
            r("example.com", "Widget"),
            r("apps", "Deployment"),
        ];
        refs.sort_by_key(prune_rank);
        let kinds: Vec<&str> = refs.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["Widget", "Deployment", "ConfigMap", "CustomResourceDefinition", "Namespace"]);
    }

    #[test]
    fn waves_respect_depends_on_and_find_cycles() {
        let deps: BTreeMap<String, Vec<String>> =
            [("web", vec!["db", "infra"]), ("db", vec!["infra"]), ("infra", vec![]), ("tools", vec!["not-here"])]
                .into_iter()
                .map(|(a, d)| (a.to_string(), d.into_iter().map(String::from).collect()))
                .collect();
        assert_eq!(waves(&deps).unwrap(), vec![vec!["infra", "tools"], vec!["db"], vec!["web"]]);
        let cycle: BTreeMap<String, Vec<String>> = [("a", vec!["b"]), ("b", vec!["a"])]
            .into_iter()
            .map(|(a, d)| (a.to_string(), d.into_iter().map(String::from).collect()))
            .collect();
        assert!(matches!(waves(&cycle), Err(OrderError::Cycle(_))));
    }
}

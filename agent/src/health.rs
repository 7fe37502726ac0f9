//! Object health: the rules an app brings (`spec.health` of its app.yaml, then of convoy.yaml,
//! CEL over the live object), then Convoy's built-in CEL rules for common custom resources
//! (Flux, cert-manager, External Secrets, Argo Rollouts, KEDA), then the kstatus rules:
//! rollouts complete, Jobs done, claims bound, and the generic Ready/Available conditions;
//! anything else is healthy once it exists.
//!
//! Decisions:
//! - An object being deleted, or whose controller has not seen its latest spec, is Progressing
//!   whatever the rules say.
//! - The first rule whose group and kind match decides, and the judgement names it.
//! - A rule's expression that fails makes the object Unknown with what failed.

use std::sync::{Arc, LazyLock, OnceLock};

use convoy_model::HealthRule;
use convoy_model::health::{CompiledRule, Verdict};
use serde_json::Value;

use convoy_shared::model::report::Health;

/// How an object was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub health: Health,
    /// Why (e.g. "1 of 3 replicas updated").
    pub message: String,
    /// The rule that decided: `spec.health: G/K`, `built-in: G/K`, or `built-in: status.conditions`.
    pub rule: String,
}

/// An app's compiled health rules (its own, then the fleet's).
#[derive(Debug, Default)]
pub struct HealthRules(Vec<CompiledRule>);

impl HealthRules {
    /// Compiles `rules`; one that does not compile (the hub refuses those already) is skipped
    /// with a warning.
    pub fn compile(rules: &[HealthRule]) -> Arc<HealthRules> {
        let compiled = rules
            .iter()
            .filter_map(|rule| {
                rule.compile()
                    .inspect_err(|e| tracing::warn!(rule = %rule.target(), error = %e, "health rule skipped"))
                    .ok()
            })
            .collect();
        Arc::new(HealthRules(compiled))
    }
}

/// A condition-based rule for a custom resource: Ready True is Healthy; Ready False is Degraded
/// unless its reason says it is still working.
fn ready_rule(group: &str, kind: &str, working: &[&str]) -> HealthRule {
    let ready = "has(self.status) && has(self.status.conditions) && self.status.conditions.exists(c, c.type == 'Ready'";
    let working: Vec<String> = working.iter().map(|r| format!("'{r}'")).collect();
    HealthRule {
        group: group.into(),
        kind: kind.into(),
        healthy: format!("{ready} && c.status == 'True')"),
        degraded: Some(format!(
            "{ready} && c.status == 'False' && !(has(c.reason) && c.reason in [{}]))",
            working.join(", ")
        )),
        message: Some(format!(
            "{ready} && has(c.message)) ? self.status.conditions.filter(c, c.type == 'Ready')[0].message : ''"
        )),
    }
}

/// One of Convoy's own rules, compiled when the first object of its kind is judged: most
/// clusters have none of these kinds, and the CEL parser keeps megabytes once it has run.
struct BuiltIn {
    rule: HealthRule,
    compiled: OnceLock<CompiledRule>,
}

/// Convoy's own CEL rules, after an app's and before the kstatus ones.
static BUILT_IN: LazyLock<Vec<BuiltIn>> = LazyLock::new(|| {
    let flux = ["Progressing", "DependencyNotReady", "ReconciliationInProgress"];
    let rules = [
        ready_rule("kustomize.toolkit.fluxcd.io", "Kustomization", &flux),
        ready_rule("helm.toolkit.fluxcd.io", "HelmRelease", &flux),
        ready_rule("source.toolkit.fluxcd.io", "GitRepository", &flux),
        ready_rule("source.toolkit.fluxcd.io", "HelmRepository", &flux),
        ready_rule("cert-manager.io", "Certificate", &["InProgress", "Issuing", "DoesNotExist"]),
        ready_rule("cert-manager.io", "Issuer", &[]),
        ready_rule("cert-manager.io", "ClusterIssuer", &[]),
        ready_rule("external-secrets.io", "ExternalSecret", &[]),
        ready_rule("external-secrets.io", "SecretStore", &[]),
        ready_rule("external-secrets.io", "ClusterSecretStore", &[]),
        ready_rule("keda.sh", "ScaledObject", &[]),
        ready_rule("keda.sh", "ScaledJob", &[]),
        HealthRule {
            group: "argoproj.io".into(),
            kind: "Rollout".into(),
            healthy: "has(self.status) && has(self.status.phase) && self.status.phase == 'Healthy'".into(),
            degraded: Some("has(self.status) && has(self.status.phase) && self.status.phase == 'Degraded'".into()),
            message: Some("has(self.status) && has(self.status.message) ? self.status.message : ''".into()),
        },
    ];
    rules.into_iter().map(|rule| BuiltIn { rule, compiled: OnceLock::new() }).collect()
});

/// The health of one live object, judged by `rules` first (an app's), then the built-in ones.
pub fn object_health(object: &Value, rules: &HealthRules) -> Judged {
    let group = object["apiVersion"].as_str().and_then(|v| v.split_once('/').map(|(g, _)| g)).unwrap_or("");
    let kind = object["kind"].as_str().unwrap_or("");
    let target = if group.is_empty() { kind.to_string() } else { format!("{group}/{kind}") };
    let judged = |(health, message): (Health, String), rule: String| Judged { health, message, rule };
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        return judged((Health::Progressing, "being deleted".into()), "built-in: deletion".into());
    }
    if let Some(stale) = stale_generation(object) {
        return judged((Health::Progressing, stale), "built-in: observedGeneration".into());
    }
    let by_rule = |rule: &CompiledRule, origin: &str| {
        let (verdict, message) = rule.judge(object);
        let health = match verdict {
            Verdict::Healthy => Health::Healthy,
            Verdict::Progressing => Health::Progressing,
            Verdict::Degraded => Health::Degraded,
            Verdict::Unknown => Health::Unknown,
        };
        judged((health, message), format!("{origin}: {target}"))
    };
    if let Some(rule) = rules.0.iter().find(|r| r.rule.matches(group, kind)) {
        return by_rule(rule, "spec.health");
    }
    if let Some(built_in) = BUILT_IN.iter().find(|b| b.rule.matches(group, kind)) {
        let rule =
            built_in.compiled.get_or_init(|| built_in.rule.compile().expect("the built-in health rules compile"));
        return by_rule(rule, "built-in");
    }
    let builtin = match (group, kind) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => statefulset(object),
        ("apps", "DaemonSet") => daemonset(object),
        ("batch", "Job") => job(object),
        ("", "PersistentVolumeClaim") => pvc(object),
        ("", "Pod") => pod(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if condition(object, "Established") == Some("True") {
                ok()
            } else {
                (Health::Progressing, "not established yet".into())
            }
        }
        _ => return judged(generic(object), "built-in: status.conditions".into()),
    };
    judged(builtin, format!("built-in: {target}"))
}

fn ok() -> (Health, String) {
    (Health::Healthy, String::new())
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn condition<'a>(object: &'a Value, ty: &str) -> Option<&'a str> {
    condition_entry(object, ty).and_then(|c| c["status"].as_str())
}

fn condition_entry<'a>(object: &'a Value, ty: &str) -> Option<&'a Value> {
    object.pointer("/status/conditions").and_then(Value::as_array).and_then(|cs| cs.iter().find(|c| c["type"] == ty))
}

/// `status.observedGeneration` behind `metadata.generation`: the controller has not seen the
/// latest spec yet.
fn stale_generation(object: &Value) -> Option<String> {
    let generation = int(object, "/metadata/generation")?;
    let observed = int(object, "/status/observedGeneration")?;
    (observed < generation).then(|| format!("controller has seen generation {observed} of {generation}"))
}

fn deployment(d: &Value) -> (Health, String) {
    if d.get("status").is_none() || int(d, "/status/observedGeneration").is_none() {
        return (Health::Progressing, "rollout not started".into());
    }
    if let Some(p) = condition_entry(d, "Progressing")
        && p["reason"] == "ProgressDeadlineExceeded"
    {
        return (Health::Degraded, "progress deadline exceeded".into());
    }
    if d.pointer("/spec/paused") == Some(&Value::Bool(true)) {
        return ok();
    }
    let want = int(d, "/spec/replicas").unwrap_or(1);
    let updated = int(d, "/status/updatedReplicas").unwrap_or(0);
    let replicas = int(d, "/status/replicas").unwrap_or(0);
    let available = int(d, "/status/availableReplicas").unwrap_or(0);
    if updated < want {
        return (Health::Progressing, format!("{updated} of {want} replicas updated"));
    }
    if replicas > updated {
        return (Health::Progressing, format!("{} old replicas pending termination", replicas - updated));
    }
    if available < updated {
        return (Health::Progressing, format!("{available} of {updated} updated replicas available"));
    }
    if condition(d, "Available") == Some("False") {
        return (Health::Progressing, "not available".into());
    }
    ok()
}

fn statefulset(s: &Value) -> (Health, String) {
    if int(s, "/status/observedGeneration").is_none() {
        return (Health::Progressing, "rollout not started".into());
    }
    let want = int(s, "/spec/replicas").unwrap_or(1);
    let ready = int(s, "/status/readyReplicas").unwrap_or(0);
    let updated = int(s, "/status/updatedReplicas").unwrap_or(0);
    if ready < want {
        return (Health::Progressing, format!("{ready} of {want} replicas ready"));
    }
    let rolling =
        s.pointer("/spec/updateStrategy/type").and_then(Value::as_str).unwrap_or("RollingUpdate") == "RollingUpdate";
    if rolling {
        if updated < want {
            return (Health::Progressing, format!("{updated} of {want} replicas updated"));
        }
        let current = s.pointer("/status/currentRevision");
        let update = s.pointer("/status/updateRevision");
        if update.is_some() && current != update {
            return (Health::Progressing, "rolling update in progress".into());
        }
    }
    ok()
}

fn daemonset(d: &Value) -> (Health, String) {
    if int(d, "/status/observedGeneration").is_none() {
        return (Health::Progressing, "rollout not started".into());
    }
    let desired = int(d, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int(d, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int(d, "/status/numberAvailable").unwrap_or(0);
    let ready = int(d, "/status/numberReady").unwrap_or(0);
    if updated < desired || available < desired || ready < desired {
        return (Health::Progressing, format!("{ready} of {desired} pods ready, {updated} updated"));
    }
    ok()
}

fn job(j: &Value) -> (Health, String) {
    if condition(j, "Failed") == Some("True") {
        let message = condition_entry(j, "Failed").and_then(|c| c["message"].as_str()).unwrap_or("job failed");
        return (Health::Degraded, message.to_string());
    }
    if condition(j, "Complete") == Some("True") {
        return ok();
    }
    (Health::Progressing, "job running".into())
}

fn pvc(p: &Value) -> (Health, String) {
    match p.pointer("/status/phase").and_then(Value::as_str) {
        Some("Bound") => ok(),
        Some("Lost") => (Health::Degraded, "claim lost its volume".into()),
        other => (Health::Progressing, format!("claim is {}", other.unwrap_or("Pending"))),
    }
}

fn pod(p: &Value) -> (Health, String) {
    match p.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded") => return ok(),
        Some("Failed") => return (Health::Degraded, "pod failed".into()),
        _ => {}
    }
    if condition(p, "Ready") == Some("True") { ok() } else { (Health::Progressing, "pod not ready".into()) }
}

fn generic(o: &Value) -> (Health, String) {
    if condition(o, "Stalled") == Some("True") {
        return (Health::Degraded, "stalled".into());
    }
    for ty in ["Ready", "Available"] {
        match condition(o, ty) {
            Some("True") => return ok(),
            Some(_) => {
                let message = condition_entry(o, ty)
                    .and_then(|c| c["message"].as_str())
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{ty} is not True"));
                return (Health::Progressing, message);
            }
            None => {}
        }
    }
    ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object_health(object: &Value) -> (Health, String) {
        let judged = super::object_health(object, &HealthRules::default());
        (judged.health, judged.message)
    }

    fn deploy(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn deployment_rollout_rules() {
        let done = deploy(json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
            "availableReplicas": 3, "conditions": [{"type": "Available", "status": "True"}]}));
        assert_eq!(object_health(&done).0, Health::Healthy);
        let stale = deploy(json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
            "availableReplicas": 3}));
        assert_eq!(object_health(&stale).0, Health::Progressing);
        let rolling = deploy(json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 2,
            "availableReplicas": 2}));
        let (h, m) = object_health(&rolling);
        assert_eq!(h, Health::Progressing);
        assert!(m.contains("2 of 3"), "{m}");
        let unavailable = deploy(json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 3, "availableReplicas": 1}));
        assert_eq!(object_health(&unavailable).0, Health::Progressing);
        let stuck = deploy(json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}));
        assert_eq!(object_health(&stuck).0, Health::Degraded);
        let fresh = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}});
        assert_eq!(object_health(&fresh).0, Health::Progressing);
    }

    #[test]
    fn statefulset_and_daemonset_ready() {
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1},
            "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "readyReplicas": 2,
            "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "a"}});
        assert_eq!(object_health(&sts).0, Health::Healthy);
        let mut half = sts.clone();
        half["status"]["readyReplicas"] = json!(1);
        assert_eq!(object_health(&half).0, Health::Progressing);
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 1, "updatedNumberScheduled": 1,
            "numberAvailable": 1, "numberReady": 1}});
        assert_eq!(object_health(&ds).0, Health::Healthy);
    }

    #[test]
    fn jobs_claims_and_conditions() {
        let job = |ty: &str| {
            json!({"apiVersion": "batch/v1", "kind": "Job",
            "status": {"conditions": [{"type": ty, "status": "True", "message": "BackoffLimitExceeded"}]}})
        };
        assert_eq!(object_health(&job("Complete")).0, Health::Healthy);
        assert_eq!(object_health(&job("Failed")).0, Health::Degraded);
        let running = json!({"apiVersion": "batch/v1", "kind": "Job", "status": {}});
        assert_eq!(object_health(&running).0, Health::Progressing);
        let pvc =
            |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": phase}});
        assert_eq!(object_health(&pvc("Bound")).0, Health::Healthy);
        assert_eq!(object_health(&pvc("Pending")).0, Health::Progressing);
        let cr = |status: &str| {
            json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "status": {"conditions": [{"type": "Ready", "status": status}]}})
        };
        assert_eq!(object_health(&cr("True")).0, Health::Healthy);
        assert_eq!(object_health(&cr("False")).0, Health::Progressing);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert_eq!(object_health(&cm).0, Health::Healthy);
        let deleting = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "deletionTimestamp": "2024-01-01T00:00:00Z"}});
        assert_eq!(object_health(&deleting).0, Health::Progressing);
    }

    #[test]
    fn an_apps_rule_comes_before_the_built_in_ones_and_the_judgement_names_the_rule() {
        let certificate = |ready: &str| {
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "web"},
                "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "Issuing", "message": "m"}]}})
        };
        let none = HealthRules::default();
        let built_in = super::object_health(&certificate("True"), &none);
        assert_eq!(
            (built_in.health, built_in.rule.as_str()),
            (Health::Healthy, "built-in: cert-manager.io/Certificate")
        );
        assert_eq!(super::object_health(&certificate("False"), &none).health, Health::Progressing, "still issuing");
        // An app that says a Certificate is healthy only once it names a secret.
        let own = HealthRules::compile(&[HealthRule {
            group: "cert-manager.io".into(),
            kind: "Certificate".into(),
            healthy: "has(self.status.secretName)".into(),
            degraded: None,
            message: Some("'waiting for the secret'".into()),
        }]);
        let judged = super::object_health(&certificate("True"), &own);
        assert_eq!(
            judged,
            Judged {
                health: Health::Progressing,
                message: "waiting for the secret".into(),
                rule: "spec.health: cert-manager.io/Certificate".into()
            }
        );
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}});
        assert_eq!(super::object_health(&deploy, &own).rule, "built-in: apps/Deployment");
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}});
        assert_eq!(super::object_health(&widget, &own).rule, "built-in: status.conditions");
    }

    #[test]
    fn built_in_rules_cover_flux_argo_rollouts_and_keda() {
        let none = HealthRules::default();
        let flux = |status: &str, reason: &str| {
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "x"},
                "status": {"conditions": [{"type": "Ready", "status": status, "reason": reason, "message": "install failed"}]}})
        };
        assert_eq!(super::object_health(&flux("True", "Succeeded"), &none).health, Health::Healthy);
        let failed = super::object_health(&flux("False", "InstallFailed"), &none);
        assert_eq!((failed.health, failed.message.as_str()), (Health::Degraded, "install failed"));
        assert_eq!(super::object_health(&flux("False", "Progressing"), &none).health, Health::Progressing);
        let rollout = |phase: &str| json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "x"}, "status": {"phase": phase}});
        assert_eq!(super::object_health(&rollout("Healthy"), &none).health, Health::Healthy);
        assert_eq!(super::object_health(&rollout("Degraded"), &none).health, Health::Degraded);
        assert_eq!(super::object_health(&rollout("Paused"), &none).health, Health::Progressing);
        let fresh = json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}});
        let judged = super::object_health(&fresh, &none);
        assert_eq!((judged.health, judged.rule.as_str()), (Health::Progressing, "built-in: keda.sh/ScaledObject"));
    }

    #[test]
    fn every_built_in_rule_compiles() {
        // They compile on first use, so a broken one would otherwise panic only on a cluster
        // that has its kind.
        for built_in in super::BUILT_IN.iter() {
            assert!(built_in.rule.compile().is_ok(), "{}", built_in.rule.target());
        }
    }
}

//! The status simulator: what the controllers of a real cluster would write into `status`
//! (Deployments/StatefulSets/DaemonSets ready, Jobs complete, PVCs bound, Pods running) after a
//! configurable delay, written through the status subresource as `kube-controller-manager`.

use super::resources::ResourceType;
use serde_json::{Map, Value, json};

/// Now, as Kubernetes writes times (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Whether `obj` has a status the simulator would still change.
pub fn wants_progress(rt: &ResourceType, obj: &Value) -> bool {
    ready_status(rt, obj).is_some_and(|s| obj.get("status") != Some(&s))
}

fn int(v: Option<&Value>, default: i64) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(default)
}

/// A condition, keeping the old transition time when its status did not change.
fn condition(old: &Value, ty: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = now_rfc3339();
    let prev =
        old.pointer("/status/conditions").and_then(Value::as_array).and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    let same = prev.is_some_and(|p| p["status"] == status && p["reason"] == reason);
    let keep = |k: &str| prev.filter(|_| same).and_then(|p| p.get(k).cloned()).unwrap_or_else(|| json!(now));
    let mut c = Map::new();
    c.insert("type".into(), json!(ty));
    c.insert("status".into(), json!(status));
    if ty == "Available" || ty == "Progressing" {
        c.insert("lastUpdateTime".into(), keep("lastUpdateTime"));
    }
    c.insert("lastTransitionTime".into(), keep("lastTransitionTime"));
    c.insert("reason".into(), json!(reason));
    c.insert("message".into(), json!(message));
    Value::Object(c)
}

/// Puts counters in, omitting zeros as the API's `omitempty` does.
fn counters(m: &mut Map<String, Value>, pairs: &[(&str, i64)]) {
    for (k, v) in pairs {
        if *v != 0 {
            m.insert(k.to_string(), json!(v));
        }
    }
}

/// The container images of a workload's pod template.
pub fn images(obj: &Value) -> Vec<&str> {
    let containers = obj.pointer("/spec/template/spec/containers").and_then(Value::as_array);
    containers.into_iter().flatten().filter_map(|c| c.get("image").and_then(Value::as_str)).collect()
}

/// The status of a Deployment whose new pods never become ready: no replica available, and
/// the progress deadline exceeded, as the deployment controller reports it.
pub fn stuck_deployment_status(obj: &Value) -> Option<Value> {
    let generation = int(obj.pointer("/metadata/generation"), 1);
    let name = obj.pointer("/metadata/name")?.as_str()?;
    let n = int(obj.pointer("/spec/replicas"), 1);
    let mut s = Map::new();
    s.insert("observedGeneration".into(), json!(generation));
    counters(&mut s, &[("replicas", n), ("updatedReplicas", n), ("unavailableReplicas", n)]);
    s.insert(
        "conditions".into(),
        json!([
            condition(
                obj,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability."
            ),
            condition(
                obj,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{name}-7d4b9c8f6d\" has timed out progressing.")
            )
        ]),
    );
    Some(Value::Object(s))
}

/// The settled status of `obj`, or None for kinds the simulator leaves alone.
pub fn ready_status(rt: &ResourceType, obj: &Value) -> Option<Value> {
    let generation = int(obj.pointer("/metadata/generation"), 1);
    let name = obj.pointer("/metadata/name")?.as_str()?;
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") => {
            if obj.pointer("/spec/paused") == Some(&json!(true)) {
                return None;
            }
            let n = int(obj.pointer("/spec/replicas"), 1);
            let mut s = Map::new();
            s.insert("observedGeneration".into(), json!(generation));
            counters(
                &mut s,
                &[("replicas", n), ("updatedReplicas", n), ("readyReplicas", n), ("availableReplicas", n)],
            );
            s.insert(
                "conditions".into(),
                json!([
                    condition(
                        obj,
                        "Available",
                        "True",
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability."
                    ),
                    condition(
                        obj,
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        &format!("ReplicaSet \"{name}-7d4b9c8f6d\" has successfully progressed.")
                    )
                ]),
            );
            Some(Value::Object(s))
        }
        ("apps", "StatefulSet") => {
            let n = int(obj.pointer("/spec/replicas"), 1);
            let rev = format!("{name}-5d8f7c9b6");
            let mut s = Map::new();
            s.insert("observedGeneration".into(), json!(generation));
            s.insert("replicas".into(), json!(n));
            counters(
                &mut s,
                &[("readyReplicas", n), ("currentReplicas", n), ("updatedReplicas", n), ("availableReplicas", n)],
            );
            s.insert("currentRevision".into(), json!(rev));
            s.insert("updateRevision".into(), json!(rev));
            s.insert("collisionCount".into(), json!(0));
            Some(Value::Object(s))
        }
        ("apps", "DaemonSet") => {
            let n = 1;
            Some(json!({"currentNumberScheduled": n, "desiredNumberScheduled": n,
                "numberAvailable": n, "numberMisscheduled": 0, "numberReady": n,
                "observedGeneration": generation, "updatedNumberScheduled": n}))
        }
        ("batch", "Job") => {
            if obj.pointer("/spec/suspend") == Some(&json!(true)) {
                return None;
            }
            let completions = int(obj.pointer("/spec/completions"), 1);
            let now = now_rfc3339();
            let start = obj.pointer("/status/startTime").cloned().unwrap_or_else(|| json!(now));
            let done = obj.pointer("/status/completionTime").cloned().unwrap_or_else(|| json!(now));
            Some(json!({
                "conditions": [
                    condition(obj, "SuccessCriteriaMet", "True", "CompletionsReached",
                        "Reached expected number of succeeded pods"),
                    condition(obj, "Complete", "True", "CompletionsReached",
                        "Reached expected number of succeeded pods")
                ],
                "startTime": start, "completionTime": done, "succeeded": completions,
                "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}
            }))
        }
        ("", "PersistentVolumeClaim") => {
            let storage = obj.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("1Gi"));
            let modes = obj.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"]));
            Some(json!({"accessModes": modes, "capacity": {"storage": storage}, "phase": "Bound"}))
        }
        ("", "Pod") => {
            let start = obj.pointer("/status/startTime").cloned().unwrap_or_else(|| json!(now_rfc3339()));
            Some(json!({
                "conditions": [
                    condition(obj, "PodReadyToStartContainers", "True", "", ""),
                    condition(obj, "Initialized", "True", "", ""),
                    condition(obj, "Ready", "True", "", ""),
                    condition(obj, "ContainersReady", "True", "", ""),
                    condition(obj, "PodScheduled", "True", "", "")
                ],
                "hostIP": "10.0.0.2", "phase": "Running", "podIP": "10.244.0.5",
                "qosClass": "BestEffort", "startTime": start
            }))
        }
        _ => None,
    }
}

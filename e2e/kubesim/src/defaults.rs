//! Defaulting of common fields, as the API server's defaulters fill them in on every write.

use serde_json::{Map, Value, json};

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.into(), v);
    }
}

fn child<'a>(m: &'a mut Map<String, Value>, k: &str) -> &'a mut Map<String, Value> {
    if !m.get(k).is_some_and(Value::is_object) {
        m.insert(k.into(), json!({}));
    }
    m.get_mut(k).and_then(Value::as_object_mut).expect("just set")
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent`.
pub fn image_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        _ if image.contains('@') => "IfNotPresent",
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(c: &mut Value) {
    let Some(m) = obj(c) else { return };
    let image = m.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    set_default(m, "imagePullPolicy", json!(image_pull_policy(&image)));
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    set_default(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Defaults of a PodSpec; `restart_policy` is None for Job templates (which must set it).
fn pod_spec(spec: &mut Map<String, Value>, restart_policy: Option<&str>) {
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
    if let Some(rp) = restart_policy {
        set_default(spec, "restartPolicy", json!(rp));
    }
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
}

fn template(spec: &mut Map<String, Value>, restart_policy: Option<&str>) {
    let t = child(spec, "template");
    child(t, "metadata");
    pod_spec(child(t, "spec"), restart_policy);
}

/// A Secret's `stringData` is write-only, as in kube-apiserver: each value is base64-encoded
/// into `data` (winning over the same key there) and `stringData` is never stored.
fn merge_string_data(secret: &mut Map<String, Value>) {
    use base64::Engine as _;
    let Some(Value::Object(strings)) = secret.remove("stringData") else { return };
    let data = child(secret, "data");
    for (key, value) in strings {
        let text = value.as_str().unwrap_or_default();
        data.insert(key, json!(base64::engine::general_purpose::STANDARD.encode(text)));
    }
}

/// Fills defaults for `kind` in place. `cluster_ip` allocates a Service address when needed.
pub fn apply_defaults(kind: &str, o: &mut Value, cluster_ip: &mut dyn FnMut() -> String) {
    let Some(root) = obj(o) else { return };
    match kind {
        "Deployment" => {
            let spec = child(root, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = child(spec, "strategy");
            set_default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = child(strategy, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
            template(spec, Some("Always"));
        }
        "StatefulSet" => {
            let spec = child(root, "spec");
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            let us = child(spec, "updateStrategy");
            set_default(us, "type", json!("RollingUpdate"));
            if us.get("type") == Some(&json!("RollingUpdate")) {
                set_default(child(us, "rollingUpdate"), "partition", json!(0));
            }
            let rp = child(spec, "persistentVolumeClaimRetentionPolicy");
            set_default(rp, "whenDeleted", json!("Retain"));
            set_default(rp, "whenScaled", json!("Retain"));
            template(spec, Some("Always"));
        }
        "DaemonSet" => {
            let spec = child(root, "spec");
            set_default(spec, "revisionHistoryLimit", json!(10));
            let us = child(spec, "updateStrategy");
            set_default(us, "type", json!("RollingUpdate"));
            if us.get("type") == Some(&json!("RollingUpdate")) {
                let ru = child(us, "rollingUpdate");
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
            template(spec, Some("Always"));
        }
        "Job" => job_spec(child(root, "spec")),
        "CronJob" => {
            let spec = child(root, "spec");
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            job_spec(child(child(spec, "jobTemplate"), "spec"));
        }
        "Pod" => pod_spec(child(root, "spec"), Some("Always")),
        "Service" => {
            let spec = child(root, "spec");
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            let external = spec.get("type") == Some(&json!("ExternalName"));
            if !external {
                if spec.get("clusterIP").is_none_or(|v| v == "") {
                    spec.insert("clusterIP".into(), json!(cluster_ip()));
                }
                let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
                set_default(spec, "clusterIPs", json!([ip]));
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        set_default(p, "targetPort", port);
                    }
                }
            }
            if matches!(spec.get("type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer")) {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            child(child(root, "status"), "loadBalancer");
        }
        "Secret" => {
            set_default(root, "type", json!("Opaque"));
            merge_string_data(root);
        }
        "PersistentVolumeClaim" => {
            set_default(child(root, "spec"), "volumeMode", json!("Filesystem"));
            set_default(child(root, "status"), "phase", json!("Pending"));
        }
        "Namespace" => {
            let name = root.get("metadata").and_then(|m| m.get("name")).cloned().unwrap_or(Value::Null);
            let labels = child(child(root, "metadata"), "labels");
            set_default(labels, "kubernetes.io/metadata.name", name);
            set_default(child(root, "spec"), "finalizers", json!(["kubernetes"]));
            set_default(child(root, "status"), "phase", json!("Active"));
        }
        "NetworkPolicy" => {
            let spec = child(root, "spec");
            if spec.get("policyTypes").is_none() {
                let mut types = vec![json!("Ingress")];
                if spec.get("egress").is_some() {
                    types.push(json!("Egress"));
                }
                spec.insert("policyTypes".into(), Value::Array(types));
            }
        }
        _ => {}
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completions", json!(1));
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    template(spec, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(image_pull_policy("r.io/app@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply_defaults("Deployment", &mut d, &mut || "10.96.0.10".into());
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn service_defaults() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults("Service", &mut s, &mut || "10.96.0.10".into());
        assert_eq!(s["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    }
}

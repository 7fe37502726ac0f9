//! Server-side printing: `meta.k8s.io/v1` Table responses, as `kubectl get` asks for them.

use super::resources::ResourceType;
use serde_json::{Value, json};

fn col(name: &str, ty: &str, format: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
}

/// Column definitions for a kind (the important ones of the real printers).
fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = col("Name", "string", "name", 0);
    let age = col("Age", "string", "", 0);
    match rt.kind.as_str() {
        "Deployment" => vec![
            name,
            col("Ready", "string", "", 0),
            col("Up-to-date", "integer", "", 0),
            col("Available", "integer", "", 0),
            age,
            col("Containers", "string", "", 1),
            col("Images", "string", "", 1),
        ],
        "StatefulSet" => vec![name, col("Ready", "string", "", 0), age],
        "Service" => vec![
            name,
            col("Type", "string", "", 0),
            col("Cluster-IP", "string", "", 0),
            col("External-IP", "string", "", 0),
            col("Port(s)", "string", "", 0),
            age,
        ],
        "Namespace" => vec![name, col("Status", "string", "", 0), age],
        "ConfigMap" => vec![name, col("Data", "integer", "", 0), age],
        "Secret" => vec![name, col("Type", "string", "", 0), col("Data", "integer", "", 0), age],
        "Pod" => vec![
            name,
            col("Ready", "string", "", 0),
            col("Status", "string", "", 0),
            col("Restarts", "string", "", 0),
            age,
        ],
        "Job" => vec![name, col("Status", "string", "", 0), col("Completions", "string", "", 0), age],
        "PersistentVolumeClaim" => vec![name, col("Status", "string", "", 0), age],
        "CustomResourceDefinition" => vec![name, col("Created At", "date", "", 0)],
        _ => vec![name, age],
    }
}

/// Kubernetes' short human durations: `45s`, `3m12s`, `5h`, `2d3h`…
pub fn human_age(created: &str) -> String {
    let Ok(t) = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339) else {
        return "<unknown>".into();
    };
    let s = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => {
            if s % 60 == 0 {
                format!("{m}m")
            } else {
                format!("{m}m{}s", s % 60)
            }
        }
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let p = |ptr: &str| o.pointer(ptr).cloned().unwrap_or(Value::Null);
    let i = |ptr: &str| o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0);
    let name = p("/metadata/name");
    let created = o.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or("");
    let age = json!(human_age(created));
    let count = |ptr: &str| o.pointer(ptr).and_then(Value::as_object).map_or(0, |m| m.len());
    match rt.kind.as_str() {
        "Deployment" => {
            let cs = o.pointer("/spec/template/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
            let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
            let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
            vec![
                name,
                json!(format!("{}/{}", i("/status/readyReplicas"), i("/spec/replicas"))),
                json!(i("/status/updatedReplicas")),
                json!(i("/status/availableReplicas")),
                age,
                json!(names.join(",")),
                json!(images.join(",")),
            ]
        }
        "StatefulSet" => vec![name, json!(format!("{}/{}", i("/status/readyReplicas"), i("/spec/replicas"))), age],
        "Service" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter().map(|pt| format!("{}/{}", pt["port"], pt["protocol"].as_str().unwrap_or("TCP"))).collect()
                })
                .unwrap_or_default();
            vec![
                name,
                p("/spec/type"),
                p("/spec/clusterIP"),
                json!("<none>"),
                json!(if ports.is_empty() { "<none>".into() } else { ports.join(",") }),
                age,
            ]
        }
        "Namespace" => vec![name, p("/status/phase"), age],
        "ConfigMap" => vec![name, json!(count("/data") + count("/binaryData")), age],
        "Secret" => vec![name, p("/type"), json!(count("/data")), age],
        "Pod" => {
            let n = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let running = o.pointer("/status/phase") == Some(&json!("Running"));
            vec![
                name,
                json!(format!("{}/{n}", if running { n } else { 0 })),
                json!(o.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending")),
                json!("0"),
                age,
            ]
        }
        "Job" => {
            let done = i("/status/succeeded");
            let total = o.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1);
            let status = if done >= total { "Complete" } else { "Running" };
            vec![name, json!(status), json!(format!("{done}/{total}")), age]
        }
        "PersistentVolumeClaim" => vec![name, p("/status/phase"), age],
        "CustomResourceDefinition" => vec![name, json!(created)],
        _ => vec![name, age],
    }
}

fn partial(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A Table of `items`; `include` is the includeObject parameter (None, Metadata, Object).
pub fn table(rt: &ResourceType, items: &[Value], list_meta: Value, include: &str) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(rt, o)});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => row["object"] = partial(o),
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": columns(rt), "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let t = time::OffsetDateTime::now_utc() - time::Duration::seconds(200);
        let s = t.replace_nanosecond(0).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap();
        assert_eq!(human_age(&s), "3m20s");
    }
}

//! A stand-in kubelet, scheduler and volume provisioner for a [`super::RealCluster`], so
//! workloads become ready with no container runtime: one Node registered Ready, every pod bound
//! to it and moved to Running and Ready (a Job's pods to Succeeded) through the status
//! subresource, a deleted pod removed at once, and a PersistentVolume made for each pending claim
//! (the controller-manager's binder binds them). The controllers do the rest, as on a cluster.
//!
//! Why not KWOK: it does the same with a Go program of its own to build, configure and start
//! per cluster; the few rules tests need are clearer here, beside the harness.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The field manager of everything this stand-in writes.
const MANAGER: &str = "realkube-kubelet";

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Creates the node (if missing) and marks it Ready with room for many pods.
pub async fn register_node(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
    }))
    .expect("a valid Node");
    match nodes.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let t = now();
    let room = json!({"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "1Ti"});
    let status = json!({"status": {
        "capacity": room, "allocatable": room,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "realkube stand-in",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
        ],
        "nodeInfo": {"kubeletVersion": super::binaries::kubernetes_version(), "operatingSystem": "linux",
            "architecture": "amd64", "containerRuntimeVersion": "realkube://0", "kernelVersion": "",
            "osImage": "", "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""},
    }});
    nodes
        .patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&status_object("Node", name, status)))
        .await?;
    // The TaintNodesByCondition admission plugin creates every node tainted not-ready; the node
    // lifecycle controller (off here: no heartbeats) lifts it once the node reports Ready.
    nodes.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": null}}))).await?;
    Ok(())
}

/// `status` as a whole object for a server-side apply of the status subresource.
fn status_object(kind: &str, name: &str, mut status: Value) -> Value {
    status["apiVersion"] = json!("v1");
    status["kind"] = json!(kind);
    status["metadata"] = json!({"name": name});
    status
}

/// Runs until `cancel`: pods bound to `node` and run, claims given volumes.
pub async fn run(client: kube::Client, node: String, cancel: CancellationToken) {
    let pods = async {
        let api: Api<Pod> = Api::all(client.clone());
        let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(event) = events.next().await {
            if let Ok(pod) = event
                && let Err(e) = pod_changed(&client, &node, &pod).await
            {
                tracing::debug!(error = %e, pod = ?pod.metadata.name, "stand-in kubelet: will retry on the next event");
            }
        }
    };
    let claims = async {
        let api: Api<PersistentVolumeClaim> = Api::all(client.clone());
        let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(event) = events.next().await {
            if let Ok(claim) = event
                && let Err(e) = claim_changed(&client, &claim).await
            {
                tracing::debug!(error = %e, claim = ?claim.metadata.name, "stand-in provisioner: will retry");
            }
        }
    };
    tokio::select! {
        () = cancel.cancelled() => {}
        () = pods => {}
        () = claims => {}
    }
}

fn ignore_codes(r: Result<(), kube::Error>, codes: &[u16]) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if codes.contains(&e.code) => Ok(()),
        other => other,
    }
}

/// One pod seen: removed if being deleted, bound if unscheduled, run if bound here.
async fn pod_changed(client: &kube::Client, node: &str, pod: &Pod) -> Result<(), kube::Error> {
    let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
        return Ok(());
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let spec = pod.spec.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        // A kubelet confirms a graceful deletion once its containers stopped; none run here.
        let r = api.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
        return ignore_codes(r.map(drop), &[404, 409]);
    }
    let Some(bound) = spec.node_name.as_deref() else {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        let r = api.create_subresource::<Value, Value>("binding", name, &PostParams::default(), &binding).await;
        return ignore_codes(r.map(drop), &[404, 409]);
    };
    if bound != node {
        return Ok(());
    }
    let job = pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "Job");
    let phase = if job { "Succeeded" } else { "Running" };
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
        return Ok(());
    }
    let t = now();
    let state = if job {
        json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}})
    } else {
        json!({"running": {"startedAt": t}})
    };
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "ready": !job, "started": !job, "restartCount": 0, "state": state})
        })
        .collect();
    let ready = if job { "False" } else { "True" };
    let condition = |ty: &str, status: &str| json!({"type": ty, "status": status, "lastTransitionTime": t});
    let status = json!({"status": {
        "phase": phase, "startTime": t, "containerStatuses": containers,
        "conditions": [condition("PodScheduled", "True"), condition("Initialized", "True"),
            condition("ContainersReady", ready), condition("Ready", ready)],
    }});
    let patch = Patch::Apply(status_object("Pod", name, status));
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &patch).await.map(drop)
}

/// One claim seen: a pending claim with no volume gets a PersistentVolume pre-bound to it.
async fn claim_changed(client: &kube::Client, claim: &PersistentVolumeClaim) -> Result<(), kube::Error> {
    let meta = &claim.metadata;
    let (Some(ns), Some(name), Some(uid)) = (meta.namespace.as_deref(), meta.name.as_deref(), meta.uid.as_deref())
    else {
        return Ok(());
    };
    let spec = claim.spec.clone().unwrap_or_default();
    let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|p| p == "Pending");
    if meta.deletion_timestamp.is_some() || spec.volume_name.is_some() || !pending {
        return Ok(());
    }
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let volume: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("realkube-{uid}")},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            // Never mounted: no kubelet runs a pod here.
            "hostPath": {"path": format!("/realkube/{ns}/{name}")},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
        }
    }))
    .expect("a valid PersistentVolume");
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let r = api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &volume).await;
    ignore_codes(r.map(drop), &[409])
}

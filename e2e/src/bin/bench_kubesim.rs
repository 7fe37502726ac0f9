//! `bench_kubesim`: server-side applies per second through kube on loopback, with plain GETs
//! per second as the peer in the same run, and resident memory of 100 clusters × 200 objects.

use anyhow::Context as _;
use convoy_e2e::bench::rss_kib;
use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kubesim::{FleetOptions, SimConfig, SimFleet};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 8;
const OPS: usize = 4000;
const CLUSTERS: usize = 100;
const OBJECTS: usize = 200;

fn deployment(i: usize, rev: usize) -> Value {
    let name = format!("app-{i}");
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"app": name, "convoy.dev/app": "bench"},
            "annotations": {"convoy.dev/revision": rev.to_string()}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": format!("nginx:1.{rev}"),
                    "ports": [{"containerPort": 8080}],
                    "env": [{"name": "REV", "value": rev.to_string()}]}]}}}})
}

fn object(i: usize) -> Value {
    match i % 4 {
        0 => deployment(i, 1),
        1 => json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": "default"},
            "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"port": 80}]}}),
        _ => json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "namespace": "default", "labels": {"i": i.to_string()}},
            "data": {"config.yaml": "x".repeat(512), "i": i.to_string()}}),
    }
}

/// Runs `OPS` operations over `CONCURRENCY` tasks and returns operations per second.
async fn rate<F, Fut>(op: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> =
        futures::stream::iter(0..OPS).map(&op).buffer_unordered(CONCURRENCY).collect().await;
    for r in results {
        r?;
    }
    Ok(OPS as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let baseline_kib = rss_kib(std::process::id());

    // 1. Throughput through kube on loopback.
    let fleet = SimFleet::start(&["bench"]).await.context("starting kubesim")?;
    let cluster = fleet.cluster("bench").context("bench cluster")?;
    let client = cluster.client().await?;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"));
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let pp = PatchParams::apply("convoy-agent");
    // Warm up: connections, discovery-free paths, initial objects.
    for i in 0..64 {
        let o: DynamicObject = serde_json::from_value(deployment(i, 0))?;
        api.patch(&format!("app-{i}"), &pp, &Patch::Apply(&o)).await?;
    }
    let apply_rate = rate(|n| {
        let api = api.clone();
        let pp = pp.clone();
        async move {
            // Every apply changes the object (new revision), so each is a real write.
            let i = n % 64;
            let o: DynamicObject = serde_json::from_value(deployment(i, n + 1))?;
            api.patch(&format!("app-{i}"), &pp, &Patch::Apply(&o)).await?;
            Ok(())
        }
    })
    .await?;
    let get_rate = rate(|n| {
        let api = api.clone();
        async move {
            api.get(&format!("app-{}", n % 64)).await?;
            Ok(())
        }
    })
    .await?;
    fleet.shutdown().await;

    println!("kubesim benchmark (loopback HTTPS, kube client, concurrency {CONCURRENCY}, {OPS} ops)");
    println!("  server-side apply (changing Deployment): {apply_rate:>9.0} applies/s");
    println!("  plain GET (peer):                        {get_rate:>9.0} gets/s");
    println!("  ratio apply/get:                         {:>9.2}", apply_rate / get_rate);

    // 2. Memory of many clusters holding many objects.
    let before_kib = rss_kib(std::process::id());
    let names: Vec<String> = (0..CLUSTERS).map(|i| format!("c{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let start = Instant::now();
    let opts = FleetOptions {
        dir: None,
        config: SimConfig { ready_delay: Duration::from_millis(100), ..SimConfig::default() },
    };
    let fleet = SimFleet::start_with(&refs, opts).await?;
    let empty_kib = rss_kib(std::process::id());
    for c in fleet.clusters() {
        for i in 0..OBJECTS {
            c.apply("convoy-agent", &object(i), false)?;
        }
    }
    // Let the status simulator settle every Deployment before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_kib = rss_kib(std::process::id());
    let all: Vec<Value> = fleet.clusters().iter().flat_map(|c| c.list_all()).collect();
    let total = all.len();
    let json_bytes: usize = all.iter().map(|o| serde_json::to_vec(o).map_or(0, |v| v.len())).sum();
    drop(all);
    let used = after_kib.saturating_sub(before_kib);
    println!(
        "memory: {CLUSTERS} clusters × {OBJECTS} objects ({total} stored incl. namespaces), \
         loaded in {:.2}s",
        start.elapsed().as_secs_f64()
    );
    println!(
        "  RSS baseline {:.1} MiB, before fleet {:.1} MiB, after {:.1} MiB",
        baseline_kib as f64 / 1024.0,
        before_kib as f64 / 1024.0,
        after_kib as f64 / 1024.0
    );
    println!(
        "  fleet cost {:.1} MiB = {:.1} KiB per cluster, {:.2} KiB per object",
        used as f64 / 1024.0,
        used as f64 / CLUSTERS as f64,
        used as f64 / (CLUSTERS * OBJECTS) as f64
    );
    let objects_kib = after_kib.saturating_sub(empty_kib);
    println!(
        "  of which empty clusters {:.1} MiB ({:.0} KiB each); objects {:.1} MiB ({:.2} KiB each)",
        empty_kib.saturating_sub(before_kib) as f64 / 1024.0,
        empty_kib.saturating_sub(before_kib) as f64 / CLUSTERS as f64,
        objects_kib as f64 / 1024.0,
        objects_kib as f64 / (CLUSTERS * OBJECTS) as f64,
    );
    // The gap to the JSON size is serde_json::Value's per-map overhead (managedFields trees
    // are many tiny maps), retained watch-event versions and allocator slack.
    println!(
        "  stored JSON (incl. managedFields and status): {:.2} KiB per object",
        json_bytes as f64 / 1024.0 / total.max(1) as f64
    );
    fleet.shutdown().await;
    Ok(())
}

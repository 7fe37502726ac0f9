//! `bench_sandbox`: commit to running, end to end, on the sandbox fleet (the hub, four kubesim
//! clusters and their agents in this process, over real sockets and mutual TLS).
//!
//! - A commit to `dev` changing app web's ConfigMap: `git push` to the origin, the refresh a
//!   webhook triggers, fetch, render, publish, push to dev-1's agent, server-side apply, and the
//!   agent's report back at the hub saying it applied that commit. Median and p99 over N commits.
//! - Peer, same run and cluster: the same change by hand, `kubectl apply --server-side -f` of the
//!   rendered ConfigMap (no Git, no hub, no report).
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench_sandbox [N]` (N = 20).

use std::time::{Duration, Instant};

use convoy_e2e::bench::{kubectl_apply, median_p99, ms};
use convoy_e2e::fleet_repo::{FleetRepo, configmap_yaml};
use convoy_e2e::sandbox::{Sandbox, SandboxConfig};
use convoy_hub::state::hub::Hub;
use tokio_util::sync::CancellationToken;

/// Polls `done` every millisecond; panics naming `what` after two minutes.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until `cluster` reports it applied `revision` and runs what it is assigned.
async fn applied(hub: &Hub, cluster: &str, revision: &str) {
    until(&format!("{cluster} applies {revision}"), || {
        hub.cluster_infos().iter().any(|c| c.name == cluster && c.applied_revision == revision && c.in_sync)
    })
    .await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    convoy_shared::install_crypto_provider();
    let commits: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().expect("temp dir");
    let shutdown = CancellationToken::new();
    // Polling off in effect: every fetch below is the one a webhook would trigger.
    let config = SandboxConfig {
        dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        extra_clusters: 0,
        real_clusters: 0,
        poll: Duration::from_secs(3600),
        hook: None,
    };
    let sandbox = Sandbox::start(&config, shutdown.clone()).await.expect("sandbox");
    let repo = FleetRepo { dir: sandbox.repo.clone() };
    applied(&sandbox.hub, "dev-1", &repo.head()).await;

    let (mut ours, mut pushes, mut plans) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..commits {
        repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("greeting", &format!("hello {i}"))]));
        let commit = repo.commit(&format!("web: greeting {i}"));
        let started = Instant::now();
        repo.git(&["push", "-q", "origin", "dev"]);
        pushes.push(started.elapsed());
        sandbox.hub.request_refresh();
        // The view is replaced once every changed assignment is published.
        until("the hub publishes the commit", || sandbox.hub.view().branches.get("dev") == Some(&commit)).await;
        plans.push(started.elapsed());
        applied(&sandbox.hub, "dev-1", &commit).await;
        ours.push(started.elapsed());
    }

    let kubeconfig = dir.path().join("kube").join("dev-1.kubeconfig");
    let file = dir.path().join("by-hand.yaml");
    let mut peer = Vec::new();
    for i in 0..commits {
        let object = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: by-hand\n  namespace: web\ndata:\n  greeting: hello {i}\n"
        );
        std::fs::write(&file, object).expect("write the peer's manifest");
        let started = Instant::now();
        kubectl_apply(&kubeconfig, &file);
        peer.push(started.elapsed());
    }
    shutdown.cancel();
    sandbox.drain().await;

    let ((ours_median, ours_p99), (peer_median, peer_p99)) = (median_p99(&mut ours), median_p99(&mut peer));
    let ((push_median, _), (plan_median, _)) = (median_p99(&mut pushes), median_p99(&mut plans));
    println!("sandbox fleet, {commits} commits to dev changing one ConfigMap on dev-1");
    println!(
        "  git push -> refresh -> fetch, render, publish -> agent apply -> report at the hub: median {:.1} ms, p99 {:.1} ms",
        ms(ours_median),
        ms(ours_p99)
    );
    println!(
        "    medians from the commit: git push done {:.1} ms, assignments published {:.1} ms",
        ms(push_median),
        ms(plan_median)
    );
    println!(
        "  peer: kubectl apply --server-side of the same ConfigMap by hand: median {:.1} ms, p99 {:.1} ms",
        ms(peer_median),
        ms(peer_p99)
    );
    println!("  ratio (commit to reported running / kubectl apply), median: {:.2}", ms(ours_median) / ms(peer_median));
}

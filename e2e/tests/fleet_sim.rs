//! `fleetsim` against a real `convoy-hub` process: 200 simulated agents, each over its own
//! mutual-TLS stream with its own certificate, all connect and apply their assignment; one
//! commit reaches every one of them; after the hub is killed and restarted on the same data they
//! all come back in sync without being sent their assignment again. (`bench_fleet` measures the
//! same at 10,000.)

use convoy_e2e::fleet_repo::{change_generated_base, generated_fleet};
use convoy_e2e::harness::{
    HubProcess, TestCa, WEBHOOK_SECRET, connected_and_in_sync, eventually, list_clusters, post_webhook, push_event,
    spawn_fleetsim,
};
use convoy_shared::identity::Role;

const AGENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_agents_connect_take_a_commit_and_come_back_in_sync_after_a_hub_restart() {
    let dir = tempfile::tempdir().unwrap();
    let repo = generated_fleet(dir.path(), AGENTS, 4);
    let data = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let url = repo.url();
    let serve = [
        "--repo",
        &url,
        "--data",
        data.path().to_str().unwrap(),
        "--poll-seconds",
        "3600",
        "--webhook-secret",
        WEBHOOK_SECRET,
    ];
    let hub = HubProcess::start_with(&ca.certs.0, "127.0.0.1:0", "info", &serve);
    let address = hub.address.clone();
    let sim = spawn_fleetsim(&address, &ca.certs, 0..AGENTS);
    let viewer = ca.cli(&address, Role::Viewer).await;

    eventually("every simulated agent connected and running its assignment", || async {
        let clusters = list_clusters(&viewer).await?;
        (connected_and_in_sync(&clusters) == (AGENTS, AGENTS)).then_some(())
    })
    .await;
    sim.wait_for_line(&format!("{AGENTS}/{AGENTS} connected, {AGENTS} assignments applied"));

    // One commit per environment branch changes every cluster's assignment.
    let commits = change_generated_base(&repo, 0, "v2");
    post_webhook(&hub.http_address, WEBHOOK_SECRET, &push_event("refs/heads/main", &commits[2])).unwrap();
    eventually("every agent to apply the change", || async {
        let clusters = list_clusters(&viewer).await?;
        let applied = clusters.iter().filter(|c| c.in_sync && commits.contains(&c.applied_revision)).count();
        (applied == AGENTS).then_some(())
    })
    .await;
    let mut history = ca.cli(&address, Role::Viewer).await;
    let request = convoy_shared::proto::HistoryRequest { cluster: "c-00123".into(), limit: 10 };
    let entries = history.history(request).await.unwrap().into_inner().entries;
    assert!(
        entries.iter().any(|e| e.event == "applied" && commits.contains(&e.revision)),
        "the hub recorded the applied change: {entries:?}"
    );

    // Killed and restarted: every agent reconnects (jittered backoff) and is in sync again.
    let before = list_clusters(&viewer).await.unwrap();
    hub.kill();
    let _hub = HubProcess::start_with(&ca.certs.0, &address, "info", &serve);
    let viewer = ca.cli(&address, Role::Viewer).await;
    eventually("every agent back on the restarted hub and in sync", || async {
        let clusters = list_clusters(&viewer).await?;
        (connected_and_in_sync(&clusters) == (AGENTS, AGENTS)).then_some(clusters)
    })
    .await
    .iter()
    .zip(&before)
    .for_each(|(after, before)| {
        assert_eq!(after.name, before.name);
        assert!(after.connected_since_unix_ms > before.connected_since_unix_ms, "{} opened a new stream", after.name);
        assert_eq!(after.applied_digest, before.applied_digest, "{} runs what it ran", after.name);
    });
    // The restarted hub answered each Hello "unchanged": nothing was sent or applied again.
    eventually("the simulator to count every agent back", || async {
        let last = sim.log_lines(" connected, ").pop().unwrap_or_default();
        last.contains(&format!("{AGENTS}/{AGENTS} connected, {} assignments applied", 2 * AGENTS)).then_some(())
    })
    .await;
}

//! 1,000 clusters × 10 apps: a one-line change in one app's environment overlay re-renders
//! exactly that overlay and rebuilds and publishes exactly the pairs it affects.

use convoy_e2e::fleet_repo::{configmap_yaml, generated_fleet};
use convoy_e2e::harness::{InProcessHub, TestCa};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_line_overlay_change_rerenders_only_the_affected_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = generated_fleet(dir.path(), 1000, 10);
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let first = hub.hub.view().stats;
    // 10 apps × 3 environment overlays; 5 apps everywhere (1000 clusters) + 5 on region eu (500).
    assert_eq!(first.renders, 30);
    assert_eq!(first.pairs, 5 * 1000 + 5 * 500);
    assert_eq!(hub.hub.view().published, 1000);

    let stage_clusters: Vec<String> = (0..1000).filter(|i| i % 3 == 1).map(|i| format!("c-{i:05}")).collect();
    let before: Vec<String> = (0..1000).map(|i| hub.digest(&format!("c-{i:05}"))).collect();

    // app-3 is odd: it runs on region eu only, i.e. even-numbered clusters.
    repo.checkout("stage");
    repo.write("apps/app-3/envs/stage/config.yaml", &configmap_yaml("app-3-config", &[("env", "stage-2")]));
    let head = repo.commit("app-3: one line in the stage overlay");
    hub.sync("stage", &head).await;

    let stats = hub.hub.view().stats;
    let affected: Vec<&String> = stage_clusters.iter().filter(|c| c[2..].parse::<usize>().unwrap() % 2 == 0).collect();
    assert_eq!(stats.renders, 1, "only apps/app-3/envs/stage is rendered again");
    assert_eq!(stats.pairs_rebuilt, affected.len(), "pairs rebuilt: app-3 on stage clusters in region eu");
    assert_eq!(hub.hub.view().published, affected.len());
    let changed: Vec<String> = (0..1000)
        .map(|i| format!("c-{i:05}"))
        .zip(&before)
        .filter(|(c, d)| hub.digest(c) != **d)
        .map(|(c, _)| c)
        .collect();
    assert_eq!(changed.iter().collect::<Vec<_>>(), affected);
    println!(
        "1000 clusters x 10 apps: {} pairs planned, {} renders, {} pairs rebuilt, {} assignments published",
        stats.pairs,
        stats.renders,
        stats.pairs_rebuilt,
        hub.hub.view().published
    );
    hub.stop().await;
}

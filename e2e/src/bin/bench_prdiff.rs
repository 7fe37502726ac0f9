//! Benchmark: the fleet diff of a pull request. A fleet repository of 50 clusters (40 in prod on
//! `main`, 10 in stage) × 30 kustomize apps (a base of a Deployment, a Service and a ConfigMap,
//! and an overlay per environment); a head commit changes the image of 3 apps. Times `convoy
//! diff --base main --head pr --all-envs` (every cluster, every app, rendered at both commits and
//! diffed; the release binary beside this one, median of 3) against its peer measured in the
//! same run: `kubectl kustomize` of each (cluster, app) overlay twice, at base and at head (two
//! checkouts), one process each, in a loop — rendering alone, no diff. Prints both in seconds and
//! their ratio.
//!
//! kubectl comes from `CONVOY_KUBECTL`, else `e2e/.venv/bin/kubectl` (installed by
//! `bash e2e/test.sh`), else `kubectl` on PATH. Build first: `cargo build --release -p
//! convoy-cli -p convoy-e2e --bins`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use convoy_e2e::fleet_repo::{FleetRepo, app_yaml, cluster_yaml, configmap_yaml, fleet_yaml, kustomization_yaml};
use convoy_e2e::harness::workspace_binary;

const CLUSTERS: usize = 50;
const STAGE_CLUSTERS: usize = 10;
const APPS: usize = 30;
/// Apps whose image the head commit changes.
const CHANGED: [usize; 3] = [3, 14, 27];

fn deployment(app: &str, tag: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\n  labels: {{app: {app}}}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {app}}}\n  template:\n    metadata:\n      labels: {{app: {app}}}\n    spec:\n      containers:\n      - name: {app}\n        image: registry.example/{app}:{tag}\n        ports:\n        - containerPort: 8080\n        envFrom:\n        - configMapRef: {{name: {app}-settings}}\n        resources:\n          requests: {{cpu: 100m, memory: 128Mi}}\n"
    )
}

fn service(app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\nspec:\n  selector: {{app: {app}}}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
    )
}

/// The fleet on `main` (and `stage` at the same commit) and the head commit on branch `pr`.
fn generate(dir: &Path) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    repo.write("convoy.yaml", &fleet_yaml(&[("stage", "stage"), ("prod", "main")]));
    for c in 0..CLUSTERS {
        let (name, env) =
            if c < STAGE_CLUSTERS { (format!("stage-{c:02}"), "stage") } else { (format!("prod-{c:02}"), "prod") };
        let region = if c % 2 == 0 { "eu" } else { "us" };
        repo.write(&format!("clusters/{name}.yaml"), &cluster_yaml(&name, env, &[("region", region)]));
    }
    for a in 0..APPS {
        let app = format!("app-{a:02}");
        repo.write(&format!("apps/{app}/app.yaml"), &app_yaml(&app, &app, &[]));
        repo.write(
            &format!("apps/{app}/base/kustomization.yaml"),
            &kustomization_yaml(&["deployment.yaml", "service.yaml", "settings.yaml"], &[]),
        );
        repo.write(&format!("apps/{app}/base/deployment.yaml"), &deployment(&app, "1.0.0"));
        repo.write(&format!("apps/{app}/base/service.yaml"), &service(&app));
        repo.write(
            &format!("apps/{app}/base/settings.yaml"),
            &configmap_yaml(&format!("{app}-settings"), &[("LOG_LEVEL", "info"), ("FEATURES", "a,b")]),
        );
        for (env, replicas) in [("stage", 1), ("prod", 3)] {
            let overlay = format!("apps/{app}/envs/{env}");
            repo.write(
                &format!("{overlay}/kustomization.yaml"),
                &format!(
                    "{}commonLabels:\n  env: {env}\nreplicas:\n- name: {app}\n  count: {replicas}\n",
                    kustomization_yaml(&["../../base"], &["settings.yaml"])
                ),
            );
            repo.write(
                &format!("{overlay}/settings.yaml"),
                &configmap_yaml(
                    &format!("{app}-settings"),
                    &[("LOG_LEVEL", if env == "prod" { "warn" } else { "debug" })],
                ),
            );
        }
    }
    repo.commit(&format!("{CLUSTERS} clusters, {APPS} apps"));
    repo.git(&["branch", "stage"]);
    repo.checkout("pr");
    for a in CHANGED {
        let app = format!("app-{a:02}");
        repo.write(&format!("apps/{app}/base/deployment.yaml"), &deployment(&app, "1.1.0"));
    }
    repo.commit("three apps: 1.1.0");
    repo.checkout("main");
    repo
}

/// `convoy diff` once: its wall time and what it printed.
fn convoy_diff(convoy: &Path, repo: &Path) -> Result<(Duration, serde_json::Value)> {
    let start = Instant::now();
    let out = Command::new(convoy)
        .args(["diff", "--base", "main", "--head", "pr", "--all-envs", "-o", "json"])
        .current_dir(repo)
        .output()
        .with_context(|| format!("running {}", convoy.display()))?;
    let took = start.elapsed();
    ensure!(
        out.status.code() == Some(1),
        "convoy diff exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((took, serde_json::from_slice(&out.stdout).context("convoy diff -o json")?))
}

fn main() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = generate(&tmp.path().join("fleet"));
    let convoy = workspace_binary("convoy");
    let kubectl = kubesim::kubectl::kubectl_path();

    let mut runs = Vec::new();
    let mut answer = serde_json::Value::Null;
    for _ in 0..3 {
        let (took, json) = convoy_diff(&convoy, &repo.dir)?;
        runs.push(took);
        answer = json;
    }
    let summary = &answer["summary"];
    ensure!(summary["clusters"] == CLUSTERS && summary["clustersChanged"] == CLUSTERS, "unexpected diff: {summary}");
    ensure!(summary["changed"] == CLUSTERS * CHANGED.len(), "unexpected diff: {summary}");
    runs.sort();
    let ours = runs[1].as_secs_f64();

    // The peer reads files: base and head checked out side by side (the fleet's own work tree
    // is never touched by convoy; these are the peer's).
    let checkouts = [("base", "main"), ("head", "pr")].map(|(side, commit)| {
        let dir = tmp.path().join(side);
        repo.git(&["worktree", "add", "-q", "--detach", dir.to_str().expect("UTF-8 path"), commit]);
        dir
    });
    let renders = CLUSTERS * APPS * checkouts.len();
    let start = Instant::now();
    for c in 0..CLUSTERS {
        let env = if c < STAGE_CLUSTERS { "stage" } else { "prod" };
        for a in 0..APPS {
            for checkout in &checkouts {
                let overlay = checkout.join(format!("apps/app-{a:02}/envs/{env}"));
                let out =
                    Command::new(&kubectl).arg("kustomize").arg(&overlay).output().with_context(|| {
                        format!("running {} (run `bash e2e/test.sh` to install it)", kubectl.display())
                    })?;
                if !out.status.success() {
                    bail!("kubectl kustomize {} failed: {}", overlay.display(), String::from_utf8_lossy(&out.stderr));
                }
            }
        }
    }
    let peer = start.elapsed().as_secs_f64();

    println!(
        "bench_prdiff: {CLUSTERS} clusters x {APPS} kustomize apps, a head commit changing {} apps ({} objects changed over all clusters)",
        CHANGED.len(),
        summary["changed"]
    );
    println!(
        "  convoy diff --base --head --all-envs : {ours:>8.2} s (median of 3: {}; every app of every cluster rendered at both commits, diffed, grouped)",
        runs.iter().map(|d| format!("{:.2}", d.as_secs_f64())).collect::<Vec<_>>().join(", ")
    );
    println!(
        "  kubectl kustomize in a loop           : {peer:>8.2} s ({renders} renders, one process each, {:.1} ms/render; no diff)",
        peer * 1000.0 / renders as f64
    );
    println!("  ratio                                 : {:>8.1}x faster than the loop", peer / ours);
    Ok(())
}

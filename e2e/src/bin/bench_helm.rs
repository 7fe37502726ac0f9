//! Benchmark of Helm apps. (1) One chart for 1,000 clusters, each with its own values file
//! (`apps/web/clusters/<name>/values.yaml`): the hub's planner, cold (chart load, values, 1,000
//! renders, variables, digests), against calling Helm's own engine (PyPI helm-python-sdk) once
//! per cluster in one Python process, as a Helm-based fleet manager would run `helm template`
//! per cluster. Goal: ≥ 30×. Then the same fleet with one set of values for every cluster: one
//! render whose output every cluster holds, against Helm's engine once per cluster (no goal).
//! (2) One render of each chart of the conformance corpus with its defaults: our median against
//! Helm's, both timing the render only. Goal: the median of the per-chart ratios ≥ 20×.
//!
//! Run: `bash e2e/bench.sh helm` (or `target/release/bench_helm [CLUSTERS]` after
//! `source e2e/peers.sh`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_e2e::bench::{median_p99, ms};
use convoy_e2e::fleet_repo::{FleetRepo, cluster_yaml, fleet_yaml};
use convoy_e2e::harness::{InProcessHub, TestCa};
use convoy_hub::plan::planner::Planner;
use convoy_render::FsSource;
use convoy_render::helm::{Chart, ReleaseOptions, render};
use serde_json::{Value, json};

/// Issue 34's goals: the planner against Helm's engine, and the median per-chart ratio.
const GOAL: f64 = 30.0;
const CHART_GOAL: f64 = 20.0;

/// The planner runs here on the allocator the hub binary runs it on.
#[global_allocator]
static ALLOCATOR: convoy_hub::allocator::Allocator = convoy_hub::allocator::Allocator {};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/render/tests/helm")
}

fn python() -> PathBuf {
    std::env::var_os("CONVOY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Runs `script` in Helm's engine's Python with `input` on stdin; its stdout.
fn helm_python(script: &str, input: &Value) -> anyhow::Result<String> {
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("{}: {e} (run `source e2e/peers.sh` first)", python().display()))?;
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "helm-python-sdk failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn cluster_values(i: usize) -> Value {
    json!({"replicaCount": i % 5 + 1, "nameOverride": format!("c{i}"), "podLabels": {"cluster": format!("cluster-{i}")}})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    convoy_shared::install_crypto_provider();
    let clusters: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    fleet(clusters, Values::PerCluster).await?;
    fleet(clusters, Values::Shared).await?;
    corpus_medians()
}

/// Where the fleet's clusters take their values from.
#[derive(Clone, Copy, PartialEq)]
enum Values {
    /// A values file per cluster: a render each (issue 34's goal).
    PerCluster,
    /// The chart's defaults for every cluster: one render, one output all clusters hold.
    Shared,
}

async fn fleet(clusters: usize, values: Values) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = FleetRepo::init(dir.path());
    repo.write("convoy.yaml", &fleet_yaml(&[("prod", "main")]));
    copy_dir(&corpus().join("charts/scaffold"), &dir.path().join("charts/scaffold"))?;
    repo.write(
        "apps/web/app.yaml",
        "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: web}\nspec:\n  namespace: web\n  helm: {chart: charts/scaffold, releaseName: web}\n",
    );
    for i in 0..clusters {
        let name = format!("c-{i:05}");
        repo.write(&format!("clusters/{name}.yaml"), &cluster_yaml(&name, "prod", &[("region", "eu")]));
        if values == Values::PerCluster {
            repo.write(&format!("apps/web/clusters/{name}/values.yaml"), &cluster_values(i).to_string());
        }
    }
    repo.commit("web: a chart for every cluster");
    repo.checkout("main");
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let view = hub.hub.view();
    anyhow::ensure!(view.errors.is_empty(), "the fleet did not plan: {:?}", view.errors);
    let fleet = view.fleet.clone().expect("fleet loaded");
    let envs: HashMap<_, _> = view.envs.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
    let mut ours: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        // A new planner each run (cold), dropped after the clock stops: a hub keeps its caches.
        let mut planner = Planner::default();
        let t0 = Instant::now();
        let (plans, stats) = planner.plan(&fleet.clusters, &envs);
        ours.push(t0.elapsed());
        let renders = if values == Values::PerCluster { clusters } else { 1 };
        anyhow::ensure!(plans.len() == clusters && stats.renders == renders, "{} plans, {stats:?}", plans.len());
        anyhow::ensure!(plans.iter().all(|p| p.errors.is_empty()), "{:?}", plans[0].errors);
    }
    hub.stop().await;

    let chart = dir.path().join("charts/scaffold");
    let script = format!(
        "import helm_python as h, json, sys, time\nvals = json.load(sys.stdin)\nt = time.perf_counter()\nfor v in vals:\n    h.Chart.load({chart:?}).render(v, name='web', namespace='web')\nprint(time.perf_counter() - t)\n",
        chart = chart.display().to_string()
    );
    let per_cluster: Vec<Value> =
        (0..clusters).map(|i| if values == Values::PerCluster { cluster_values(i) } else { json!({}) }).collect();
    let helm = helm_python(&script, &Value::Array(per_cluster))?.trim().parse::<f64>()?;
    let (median, _) = median_p99(&mut ours);
    let ratio = helm * 1000.0 / ms(median);
    let peer = format!("  peer: Helm's engine (helm-python-sdk), load + render per cluster: {:.1} ms", helm * 1000.0);
    match values {
        Values::PerCluster => {
            println!("one chart (scaffold) for {clusters} clusters, a values file each:");
            println!(
                "  convoy's planner, cold (load, values, {clusters} renders, assemble): median of 5 {:.1} ms",
                ms(median)
            );
            println!("{peer}");
            println!("  ratio {ratio:.1}x (goal >= {GOAL}x){}", if ratio >= GOAL { "" } else { "  -- goal missed" });
        }
        Values::Shared => {
            println!("one chart (scaffold) for {clusters} clusters, the same values for all:");
            println!("  convoy's planner, cold (load, 1 render, one output for all): median of 5 {:.1} ms", ms(median));
            println!("{peer}");
            println!("  ratio {ratio:.1}x");
        }
    }
    Ok(())
}

/// Charts of the corpus that render with their defaults (the others exist to test errors).
fn corpus_charts() -> Vec<PathBuf> {
    let mut charts: Vec<PathBuf> = std::fs::read_dir(corpus().join("charts"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    charts.sort();
    charts
        .into_iter()
        .filter(|dir| {
            let source = FsSource::new(dir.parent().expect("parent"));
            Chart::load(&source, Path::new(dir.file_name().expect("name")))
                .is_ok_and(|chart| render(&chart, &json!({}), &ReleaseOptions::new("rel", "ns")).is_ok())
        })
        .collect()
}

fn corpus_medians() -> anyhow::Result<()> {
    const RUNS: usize = 20;
    let charts = corpus_charts();
    let mut ours = Vec::new();
    for dir in &charts {
        let source = FsSource::new(dir.parent().expect("parent"));
        let chart = Chart::load(&source, Path::new(dir.file_name().expect("name")))?;
        let opts = ReleaseOptions::new("rel", "ns");
        let mut times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let t0 = Instant::now();
                let _ = render(&chart, &json!({}), &opts);
                t0.elapsed()
            })
            .collect();
        ours.push(median_p99(&mut times).0);
    }
    let script = format!(
        "import helm_python as h, json, sys, time\nout = []\nfor d in json.load(sys.stdin):\n    ts = []\n    for _ in range({RUNS}):\n        c = h.Chart.load(d)\n        t = time.perf_counter()\n        c.render({{}}, name='rel', namespace='ns')\n        ts.append(time.perf_counter() - t)\n    ts.sort()\n    out.append(ts[len(ts) // 2])\nprint(json.dumps(out))\n"
    );
    let dirs: Vec<Value> = charts.iter().map(|d| json!(d.display().to_string())).collect();
    let helm: Vec<f64> = serde_json::from_str(&helm_python(&script, &Value::Array(dirs))?)?;
    let mut ratios: Vec<f64> = ours.iter().zip(&helm).map(|(o, h)| h * 1000.0 / ms(*o).max(1e-6)).collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    let mut ours_ms: Vec<f64> = ours.iter().map(|d| ms(*d)).collect();
    ours_ms.sort_by(|a, b| a.total_cmp(b));
    let mut helm_ms: Vec<f64> = helm.iter().map(|h| h * 1000.0).collect();
    helm_ms.sort_by(|a, b| a.total_cmp(b));
    let mid = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    println!("one render of each of {} corpus charts (defaults), render only, median of {RUNS} each:", charts.len());
    println!(
        "  convoy: median over charts {:.3} ms; Helm's engine: {:.3} ms; per-chart ratio median {:.1}x (min {:.1}x, max {:.1}x) (goal median >= {CHART_GOAL}x){}",
        mid(&ours_ms),
        mid(&helm_ms),
        mid(&ratios),
        ratios.first().copied().unwrap_or(f64::NAN),
        ratios.last().copied().unwrap_or(f64::NAN),
        if mid(&ratios) >= CHART_GOAL { "" } else { "  -- goal missed" }
    );
    Ok(())
}

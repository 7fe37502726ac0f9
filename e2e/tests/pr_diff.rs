//! The fleet diff of a pull request, black box: the built `convoy` binary runs `convoy diff
//! --base --head` on a sample fleet repository (environments stage and prod, four clusters, a
//! kustomize app with an overlay per environment and a Secret, a Helm app from a chart in the
//! repository) whose pull-request branch changes an image, adds an object, removes one, changes
//! the Secret and one cluster's chart values. The Markdown must read as the golden file
//! `e2e/tests/golden/pr_diff.md` (regenerate it with `CONVOY_UPDATE_GOLDEN=1 cargo test -p
//! convoy-e2e --test pr_diff`), no Secret value may show in any format, and the exit status says
//! what CI needs: 1 changes, 0 none, 2 an error.

use std::path::Path;
use std::process::Command;

use convoy_e2e::fleet_repo::{
    FleetRepo, app_yaml, cluster_yaml, configmap_yaml, deployment_yaml, fleet_yaml, kustomization_yaml,
};
use convoy_e2e::harness::workspace_binary;

const GOLDEN: &str = "tests/golden/pr_diff.md";

/// Values of the sample's Secret, at base and head (clear and base64): none may be printed.
const SECRET_VALUES: [&str; 6] = [
    "hunter2-base-secret",
    "swordfish-head-secret",
    "base-api-key-value",
    "YmFzZS1hcGkta2V5LXZhbHVl",
    "head-api-key-value",
    "aGVhZC1hcGkta2V5LXZhbHVl",
];

fn secret_yaml(password: &str, api_key_base64: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-credentials\nstringData:\n  password: {password}\n  user: web\ndata:\n  api-key: {api_key_base64}\n"
    )
}

const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n";

const CHART: &str = "apiVersion: v2\nname: cache\nversion: 0.3.0\nappVersion: \"7.2\"\n";
const CHART_VALUES: &str = "replicas: 1\nimage: registry.example/cache:7.2\nregion: none\n";
const CHART_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  labels: {app.kubernetes.io/managed-by: {{ .Release.Service }}}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels: {app: cache}\n  template:\n    metadata:\n      labels: {app: cache}\n    spec:\n      containers:\n      - name: cache\n        image: {{ .Values.image }}\n        env:\n        - {name: REGION, value: {{ .Values.region | quote }}}\n";

/// The sample fleet on `main` (prod, and the fleet branch) and `stage`, and the pull request's
/// branch `pr` off `main`; `main` checked out with an edit left uncommitted (never read).
fn sample_fleet(dir: &Path) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    repo.write("convoy.yaml", &fleet_yaml(&[("stage", "stage"), ("prod", "main")]));
    repo.write("clusters/stage-1.yaml", &cluster_yaml("stage-1", "stage", &[("region", "eu")]));
    repo.write("clusters/prod-eu-1.yaml", &cluster_yaml("prod-eu-1", "prod", &[("region", "eu")]));
    repo.write("clusters/prod-eu-2.yaml", &cluster_yaml("prod-eu-2", "prod", &[("region", "eu")]));
    repo.write("clusters/prod-us-1.yaml", &cluster_yaml("prod-us-1", "prod", &[("region", "us")]));
    repo.write("apps/web/app.yaml", &app_yaml("web", "web", &[]));
    let base = ["deployment.yaml", "service.yaml", "legacy.yaml", "secret.yaml"];
    repo.write("apps/web/base/kustomization.yaml", &kustomization_yaml(&base, &[]));
    repo.write("apps/web/base/deployment.yaml", &deployment_yaml("web", 1));
    repo.write("apps/web/base/service.yaml", SERVICE);
    repo.write("apps/web/base/legacy.yaml", &configmap_yaml("web-legacy", &[("mode", "compat")]));
    repo.write("apps/web/base/secret.yaml", &secret_yaml("hunter2-base-secret", "YmFzZS1hcGkta2V5LXZhbHVl"));
    for (env, replicas) in [("stage", 2), ("prod", 3)] {
        let overlay = format!("apps/web/envs/{env}");
        repo.write(&format!("{overlay}/kustomization.yaml"), &kustomization_yaml(&["../../base"], &["replicas.yaml"]));
        repo.write(
            &format!("{overlay}/replicas.yaml"),
            &format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n"),
        );
    }
    repo.write("charts/cache/Chart.yaml", CHART);
    repo.write("charts/cache/values.yaml", CHART_VALUES);
    repo.write("charts/cache/templates/deployment.yaml", CHART_DEPLOYMENT);
    repo.write(
        "apps/cache/app.yaml",
        "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: cache}\nspec:\n  namespace: cache\n  helm:\n    chart: charts/cache\n",
    );
    repo.write("apps/cache/values.yaml", "region: ${cluster.labels.region}\n");
    repo.commit("sample fleet: web (kustomize), cache (Helm)");
    repo.git(&["branch", "stage"]);
    repo.checkout("pr");
    let deployment = deployment_yaml("web", 1).replace("web:1.0", "web:1.1");
    repo.write("apps/web/base/deployment.yaml", &deployment);
    repo.remove("apps/web/base/legacy.yaml");
    repo.write(
        "apps/web/base/kustomization.yaml",
        &kustomization_yaml(&["deployment.yaml", "service.yaml", "secret.yaml"], &[]),
    );
    repo.write("apps/web/base/secret.yaml", &secret_yaml("swordfish-head-secret", "aGVhZC1hcGkta2V5LXZhbHVl"));
    repo.write(
        "apps/web/envs/prod/kustomization.yaml",
        &kustomization_yaml(&["../../base", "flags.yaml"], &["replicas.yaml"]),
    );
    repo.write("apps/web/envs/prod/flags.yaml", &configmap_yaml("web-flags", &[("checkout-v2", "on")]));
    repo.write("apps/cache/clusters/prod-us-1/values.yaml", "replicas: 2\n");
    repo.commit("web 1.1 with flags, without legacy; new credentials; cache: two replicas in us");
    repo.checkout("main");
    repo.write("apps/web/base/service.yaml", "uncommitted: true\n");
    repo
}

/// Runs the built `convoy` in `dir`: (exit status, stdout, stderr).
fn convoy(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(workspace_binary("convoy")).args(args).current_dir(dir).output().expect("run convoy");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn assert_no_secret(output: &str, what: &str) {
    for value in SECRET_VALUES {
        assert!(!output.contains(value), "{what} shows the Secret value {value}:\n{output}");
    }
}

#[test]
fn a_pull_requests_fleet_diff_reads_as_the_golden_markdown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = sample_fleet(tmp.path());
    let (base, head) = (repo.git(&["rev-parse", "main"]), repo.git(&["rev-parse", "pr"]));
    let (code, markdown, stderr) = convoy(&repo.dir, &["diff", "--base", "main", "--head", "pr", "-o", "markdown"]);
    assert_eq!(code, Some(1), "changes exit 1: {stderr}");
    assert_no_secret(&markdown, "-o markdown");
    let actual = markdown.replace(&base[..8], "<base-commit>").replace(&head[..8], "<head-commit>");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("CONVOY_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().expect("golden dir")).expect("create the golden dir");
        std::fs::write(&golden, &actual).expect("write the golden file");
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    if actual != expected {
        let diff = similar::TextDiff::from_lines(&expected, &actual);
        panic!(
            "convoy diff -o markdown differs from {GOLDEN} (- golden, + now):\n{}\nIf the change is intended, regenerate it: CONVOY_UPDATE_GOLDEN=1 cargo test -p convoy-e2e --test pr_diff",
            diff.unified_diff().context_radius(3)
        );
    }
    assert_eq!(repo.git(&["status", "--porcelain"]), "M apps/web/base/service.yaml", "the work tree is left as it was");
}

#[test]
fn text_and_json_say_the_same_without_secret_values_and_exit_for_ci() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = sample_fleet(tmp.path());
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let repo_dir = repo.dir.to_str().expect("a UTF-8 path");

    let (code, text, stderr) =
        convoy(elsewhere.path(), &["diff", "--base", "main", "--head", "pr", "--repo", repo_dir]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_no_secret(&text, "text");
    assert!(text.contains("+      - image: registry.example/web:1.1"), "{text}");
    assert!(text.contains("password: '<redacted: changed>'"), "{text}");
    assert!(!text.contains("stage-1"), "stage reads another branch: {text}");

    let (code, json, stderr) = convoy(&repo.dir, &["diff", "--base", "main", "--head", "pr", "-o", "json"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_no_secret(&json, "-o json");
    let answer: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(answer["summary"]["clustersChanged"], 3, "{answer:#}");
    let groups = &answer["environments"][0]["groups"];
    assert_eq!(groups[0]["clusters"], serde_json::json!(["prod-eu-1", "prod-eu-2"]), "{answer:#}");
    assert_eq!(groups[0]["added"][0]["name"], "web-flags");
    assert_eq!(groups[0]["removed"][0]["name"], "web-legacy");
    assert_eq!(groups[1]["clusters"], serde_json::json!(["prod-us-1"]));

    let (code, all, stderr) =
        convoy(&repo.dir, &["diff", "--base", "main", "--head", "pr", "--all-envs", "-o", "json"]);
    assert_eq!(code, Some(1), "{stderr}");
    let all: serde_json::Value = serde_json::from_str(&all).expect("JSON");
    let names: Vec<&str> =
        all["environments"].as_array().expect("environments").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["stage", "prod"]);

    let (code, same, stderr) = convoy(&repo.dir, &["diff", "--base", "main", "--head", "main"]);
    assert_eq!(code, Some(0), "base == head is no change: {same}{stderr}");
    assert!(same.contains("no change"), "{same}");

    let (code, _, stderr) = convoy(&repo.dir, &["diff", "--base", "no-such-branch", "--head", "pr"]);
    assert_eq!(code, Some(2), "a bad ref is an error: {stderr}");
    assert!(stderr.contains("'no-such-branch' names no commit"), "{stderr}");

    let (code, _, stderr) = convoy(&repo.dir, &["diff", "--base", "pr", "--head", "pr"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("stage from stage, prod from main") && stderr.contains("--all-envs"), "{stderr}");

    repo.checkout("pr");
    repo.write("apps/web/envs/prod/kustomization.yaml", "resources: [../../base, missing.yaml]\n");
    repo.commit("a broken overlay");
    let (code, broken, stderr) = convoy(&repo.dir, &["diff", "--base", "main", "--head", "pr"]);
    assert_eq!(code, Some(2), "a render error the head brings: {broken}{stderr}");
    assert!(broken.contains("render error at head, app web (apps/web/envs/prod)"), "{broken}");
    assert!(!broken.contains("web-legacy"), "objects of an app that does not render are not removed: {broken}");
}

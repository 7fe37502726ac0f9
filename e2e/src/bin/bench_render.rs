//! Benchmark: renders 200 generated overlay directories (base → env → cluster, ~20 objects
//! each) with Convoy's in-process renderer and with `kubectl kustomize`, in the same run,
//! checks both agree, and prints both throughputs and their ratio.
//!
//! kubectl comes from `CONVOY_KUBECTL`, else `e2e/.venv/bin/kubectl` (installed by
//! `bash e2e/test.sh`), else `kubectl` on PATH. Run with `--release`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use convoy_render::Renderer;
use serde_json::Value;

const CLUSTERS: usize = 200;
/// Issue 34's goal: the in-process renderer against `kubectl kustomize`, throughput.
const GOAL: f64 = 300.0;
const ENVS: [&str; 3] = ["dev", "stage", "prod"];

fn write(root: &Path, rel: &str, text: &str) -> Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
}

fn deployment(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      serviceAccountName: shop\n      containers:\n      - name: {name}\n        image: registry.example.com/shop/{name}:1.0.0\n        ports:\n        - containerPort: 8080\n        env:\n        - name: SERVICE\n          value: {name}\n        envFrom:\n        - configMapRef:\n            name: shop-settings\n        volumeMounts:\n        - name: tls\n          mountPath: /tls\n      volumes:\n      - name: tls\n        secret:\n          secretName: shop-tls\n"
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
    )
}

/// Writes the fleet: one base of 18 objects plus 2 generated, 3 env overlays, 200 clusters.
fn generate(root: &Path) -> Result<Vec<PathBuf>> {
    let services = ["cart", "catalog", "checkout", "payments", "search", "users", "orders", "reviews"];
    let mut resources = String::from("resources:\n");
    for s in services {
        write(root, &format!("shop/base/{s}.yaml"), &(deployment(s) + "---\n" + &service(s)))?;
        resources.push_str(&format!("- {s}.yaml\n"));
    }
    write(
        root,
        "shop/base/rbac.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: shop\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: shop-view\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: ServiceAccount\n  name: shop\n",
    )?;
    resources.push_str("- rbac.yaml\n");
    write(
        root,
        "shop/base/kustomization.yaml",
        &format!(
            "{resources}commonLabels:\n  app.kubernetes.io/part-of: shop\nconfigMapGenerator:\n- name: shop-settings\n  literals:\n  - LOG_LEVEL=info\n  - REGION=none\nsecretGenerator:\n- name: shop-tls\n  literals:\n  - tls.crt=cert\n  - tls.key=key\n"
        ),
    )?;
    for (i, env) in ENVS.iter().enumerate() {
        write(
            root,
            &format!("shop/envs/{env}/kustomization.yaml"),
            &format!(
                "resources:\n- ../../base\nnamespace: shop-{env}\nnamePrefix: {env}-\nlabels:\n- pairs:\n    env: {env}\n  includeSelectors: false\nreplicas:\n- name: checkout\n  count: {}\nconfigMapGenerator:\n- name: shop-settings\n  behavior: merge\n  literals:\n  - LOG_LEVEL={}\npatches:\n- target:\n    kind: Deployment\n  patch: |-\n    - op: add\n      path: /spec/template/spec/containers/0/resources\n      value:\n        limits:\n          memory: 256Mi\n",
                i + 1,
                if *env == "prod" { "warn" } else { "debug" }
            ),
        )?;
    }
    let mut dirs = Vec::with_capacity(CLUSTERS);
    for c in 0..CLUSTERS {
        let env = ENVS[c % ENVS.len()];
        let rel = format!("shop/clusters/{env}-{c:03}");
        write(
            root,
            &format!("{rel}/kustomization.yaml"),
            &format!(
                "resources:\n- ../../envs/{env}\ncommonAnnotations:\n  convoy.dev/cluster: {env}-{c:03}\nimages:\n- name: registry.example.com/shop/cart\n  newTag: \"1.0.{c}\"\nconfigMapGenerator:\n- name: shop-settings\n  behavior: merge\n  literals:\n  - REGION=region-{}\npatches:\n- path: scale.yaml\n",
                c % 7
            ),
        )?;
        write(
            root,
            &format!("{rel}/scale.yaml"),
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: search\n  namespace: shop-{env}\nspec:\n  template:\n    spec:\n      containers:\n      - name: search\n        env:\n        - name: SHARDS\n          value: \"{}\"\n",
                c % 5 + 1
            ),
        )?;
        dirs.push(PathBuf::from(rel));
    }
    Ok(dirs)
}

fn main() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let dirs = generate(root)?;
    let kubectl = kubesim::kubectl::kubectl_path();

    let renderer = Renderer::new(root);
    // Warm-up and correctness: every directory must render like kubectl does.
    let mut ours_out = Vec::with_capacity(dirs.len());
    let cold_start = Instant::now();
    for d in &dirs {
        ours_out.push(renderer.render(d).with_context(|| format!("rendering {}", d.display()))?);
    }
    let cold_rate = dirs.len() as f64 / cold_start.elapsed().as_secs_f64();
    let objects: usize = ours_out.iter().map(Vec::len).sum();

    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        for d in &dirs {
            let objs = renderer.render(d)?;
            std::hint::black_box(objs);
        }
    }
    let ours_secs = start.elapsed().as_secs_f64();
    let ours_rate = (rounds * dirs.len()) as f64 / ours_secs;

    let start = Instant::now();
    let mut kubectl_out = Vec::with_capacity(dirs.len());
    for d in &dirs {
        let out = Command::new(&kubectl)
            .arg("kustomize")
            .arg(root.join(d))
            .output()
            .with_context(|| format!("running {} (run `bash e2e/test.sh` to install it)", kubectl.display()))?;
        if !out.status.success() {
            bail!("kubectl kustomize {} failed: {}", d.display(), String::from_utf8_lossy(&out.stderr));
        }
        kubectl_out.push(out.stdout);
    }
    let kubectl_secs = start.elapsed().as_secs_f64();
    let kubectl_rate = dirs.len() as f64 / kubectl_secs;

    for (i, (stdout, ours)) in kubectl_out.iter().zip(&ours_out).enumerate() {
        let text = String::from_utf8_lossy(stdout);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)?;
        let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
        if &docs != ours {
            bail!("output differs from kubectl for {}", dirs[i].display());
        }
    }

    println!(
        "bench_render: {} overlay directories (base -> env -> cluster), {} objects each on average",
        dirs.len(),
        objects / dirs.len()
    );
    println!(
        "  convoy renderer : {ours_rate:>10.1} renders/s ({:.3} ms/render, {rounds} rounds in-process)",
        1000.0 / ours_rate
    );
    println!("  convoy, 1st pass : {cold_rate:>10.1} renders/s (fresh renderer, parse cache cold)");
    println!(
        "  kubectl kustomize: {kubectl_rate:>10.1} renders/s ({:.1} ms/render, one process per directory)",
        1000.0 / kubectl_rate
    );
    println!(
        "  ratio           : {:>10.1}x kubectl's throughput (outputs identical for all {} directories) (goal >= {GOAL}x){}",
        ours_rate / kubectl_rate,
        dirs.len(),
        if ours_rate / kubectl_rate >= GOAL { "" } else { "  -- goal missed" }
    );
    Ok(())
}

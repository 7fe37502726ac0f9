//! Real Git fleet repositories for tests, benchmarks and the sandbox: a work tree driven with
//! the `git` command (commits, branches, merges, force-pushes), served to the hub as file://.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fleet repository work tree.
pub struct FleetRepo {
    pub dir: PathBuf,
}

impl FleetRepo {
    /// `git init` in `dir` with `main` checked out.
    pub fn init(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create repo dir");
        let repo = FleetRepo { dir: dir.to_path_buf() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "fleet@convoy.dev"]);
        repo.git(&["config", "user.name", "Convoy Fleet"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    /// Runs git in the work tree and returns its stdout; panics with stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git").args(args).current_dir(&self.dir).output().expect("run git");
        assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The URL the hub fetches.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Writes a file (creating directories).
    pub fn write(&self, path: &str, contents: &str) {
        let full = self.dir.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, contents).expect("write file");
    }

    /// Removes a file or directory.
    pub fn remove(&self, path: &str) {
        self.git(&["rm", "-r", "-q", path]);
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// The commit checked out.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Checks out `branch`, creating it from the current commit when it does not exist.
    pub fn checkout(&self, branch: &str) {
        let exists = Command::new("git")
            .args(["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")])
            .current_dir(&self.dir)
            .output()
            .expect("run git")
            .status
            .success();
        if exists {
            self.git(&["checkout", "-q", branch]);
        } else {
            self.git(&["checkout", "-q", "-b", branch]);
        }
    }

    /// Merges `from` into the checked-out branch (a promotion).
    pub fn merge(&self, from: &str) -> String {
        self.git(&["merge", "-q", "--no-ff", "--no-edit", from]);
        self.head()
    }
}

/// `clusters/<name>.yaml`.
pub fn cluster_yaml(name: &str, environment: &str, labels: &[(&str, &str)]) -> String {
    let labels: BTreeMap<_, _> = labels.iter().copied().collect();
    let labels = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
    format!(
        "apiVersion: convoy.dev/v1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  environment: {environment}\n"
    )
}

/// `convoy.yaml` with environments (name, branch) in promotion order.
pub fn fleet_yaml(environments: &[(&str, &str)]) -> String {
    let envs: String = environments.iter().map(|(n, b)| format!("  - {{name: {n}, branch: {b}}}\n")).collect();
    format!("apiVersion: convoy.dev/v1\nkind: Fleet\nspec:\n  fleetBranch: main\n  environments:\n{envs}")
}

/// `apps/<name>/app.yaml`; `selector` is a matchLabels map, empty for every cluster.
pub fn app_yaml(name: &str, namespace: &str, selector: &[(&str, &str)]) -> String {
    let targets = if selector.is_empty() {
        String::new()
    } else {
        let labels: String = selector.iter().map(|(k, v)| format!("{k}: {v}, ")).collect();
        format!("  targets:\n    clusterSelector:\n      matchLabels: {{{}}}\n", labels.trim_end_matches(", "))
    };
    format!(
        "apiVersion: convoy.dev/v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  namespace: {namespace}\n{targets}"
    )
}

/// A ConfigMap manifest.
pub fn configmap_yaml(name: &str, data: &[(&str, &str)]) -> String {
    let data: String = data.iter().map(|(k, v)| format!("  {k}: \"{v}\"\n")).collect();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n{data}")
}

/// A kustomization listing `resources`, optionally with strategic-merge `patches` files.
pub fn kustomization_yaml(resources: &[&str], patches: &[&str]) -> String {
    let mut out = String::from("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n");
    for r in resources {
        out.push_str(&format!("- {r}\n"));
    }
    if !patches.is_empty() {
        out.push_str("patches:\n");
        for p in patches {
            out.push_str(&format!("- path: {p}\n"));
        }
    }
    out
}

/// The standard test fleet: environments dev (branch dev), stage (branch stage), prod (branch
/// main); clusters dev-1, stage-1, prod-eu (region eu), prod-us (region us); app `web` on every
/// cluster (base ConfigMap `web-config`, a stage overlay setting `tier: stage`, a prod-eu
/// overlay setting `region: eu`) and app `api` on region eu only. Returns the repo with `main`,
/// `stage` and `dev` branches at the same commit, `dev` checked out.
pub fn standard_fleet(dir: &Path) -> FleetRepo {
    standard_fleet_on(dir, ["dev", "stage"])
}

/// [`standard_fleet`] with dev and stage read from the branches `[dev, stage]` (prod from
/// `main`, the fleet branch), so a test can tell an environment's name from its branch's.
/// Returns the repo with the three branches at the same commit, dev's checked out.
pub fn standard_fleet_on(dir: &Path, [dev, stage]: [&str; 2]) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    repo.write("convoy.yaml", &fleet_yaml(&[("dev", dev), ("stage", stage), ("prod", "main")]));
    repo.write("clusters/dev-1.yaml", &cluster_yaml("dev-1", "dev", &[("region", "eu")]));
    repo.write("clusters/stage-1.yaml", &cluster_yaml("stage-1", "stage", &[("region", "us")]));
    repo.write("clusters/prod-eu.yaml", &cluster_yaml("prod-eu", "prod", &[("region", "eu")]));
    repo.write("clusters/prod-us.yaml", &cluster_yaml("prod-us", "prod", &[("region", "us")]));
    repo.write("apps/web/app.yaml", &app_yaml("web", "web", &[]));
    repo.write("apps/web/base/kustomization.yaml", &kustomization_yaml(&["config.yaml"], &[]));
    repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("greeting", "hello ${cluster.name}")]));
    repo.write("apps/web/envs/stage/kustomization.yaml", &kustomization_yaml(&["../../base"], &["tier.yaml"]));
    repo.write("apps/web/envs/stage/tier.yaml", &configmap_yaml("web-config", &[("tier", "stage")]));
    repo.write("apps/web/clusters/prod-eu/kustomization.yaml", &kustomization_yaml(&["../../base"], &["region.yaml"]));
    repo.write("apps/web/clusters/prod-eu/region.yaml", &configmap_yaml("web-config", &[("region", "eu")]));
    repo.write("apps/api/app.yaml", &app_yaml("api", "api", &[("region", "eu")]));
    repo.write("apps/api/base/kustomization.yaml", &kustomization_yaml(&["config.yaml"], &[]));
    repo.write("apps/api/base/config.yaml", &configmap_yaml("api-config", &[("replicas", "2")]));
    repo.commit("fleet: environments, clusters, apps web and api");
    repo.checkout(stage);
    repo.checkout(dev);
    repo
}

/// Creates the namespaces the standard fleet's apps (web, and api for region eu) ship into but do
/// not create, as a cluster's platform team would have.
pub fn create_standard_namespaces(cluster: &kubesim::SimCluster) {
    for ns in ["web", "api"] {
        cluster.apply("test", &convoy_agent::testing::namespace(ns), true).expect("create namespace");
    }
}

/// A generated fleet for scale tests and benchmarks: environments dev, stage, prod (branches
/// dev, stage, main); `clusters` clusters `c-00000…` spread round-robin over the environments
/// with `region` eu/us; `apps` apps `app-N` (even ones on every cluster, odd ones on region eu),
/// each a base of a ConfigMap and a Deployment with one overlay per environment setting
/// `data.env` and the replica count. Returns the repo with all three branches at one commit,
/// `main` checked out.
pub fn generated_fleet(dir: &Path, clusters: usize, apps: usize) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    let envs = ["dev", "stage", "prod"];
    repo.write("convoy.yaml", &fleet_yaml(&[("dev", "dev"), ("stage", "stage"), ("prod", "main")]));
    for i in 0..clusters {
        let name = format!("c-{i:05}");
        let region = if i % 2 == 0 { "eu" } else { "us" };
        repo.write(&format!("clusters/{name}.yaml"), &cluster_yaml(&name, envs[i % 3], &[("region", region)]));
    }
    for a in 0..apps {
        let app = format!("app-{a}");
        let selector: &[(&str, &str)] = if a % 2 == 0 { &[] } else { &[("region", "eu")] };
        repo.write(&format!("apps/{app}/app.yaml"), &app_yaml(&app, &app, selector));
        repo.write(
            &format!("apps/{app}/base/kustomization.yaml"),
            &kustomization_yaml(&["config.yaml", "deployment.yaml"], &[]),
        );
        repo.write(
            &format!("apps/{app}/base/config.yaml"),
            &configmap_yaml(&format!("{app}-config"), &[("cluster", "${cluster.name}")]),
        );
        repo.write(&format!("apps/{app}/base/deployment.yaml"), &deployment_yaml(&app, 1));
        for env in envs {
            let dir = format!("apps/{app}/envs/{env}");
            repo.write(
                &format!("{dir}/kustomization.yaml"),
                &kustomization_yaml(&["../../base"], &["config.yaml", "replicas.yaml"]),
            );
            repo.write(&format!("{dir}/config.yaml"), &configmap_yaml(&format!("{app}-config"), &[("env", env)]));
            repo.write(&format!("{dir}/replicas.yaml"), &deployment_yaml(&app, 2));
        }
    }
    repo.commit("generated fleet");
    repo.checkout("dev");
    repo.checkout("stage");
    repo.checkout("main");
    repo
}

/// Changes the base ConfigMap of `app-{app}` of a [`generated_fleet`] on each of its branches
/// (dev, stage, main), so every cluster's assignment changes; returns the three commits. Leaves
/// `main` checked out.
pub fn change_generated_base(repo: &FleetRepo, app: usize, value: &str) -> Vec<String> {
    let name = format!("app-{app}");
    let config = configmap_yaml(&format!("{name}-config"), &[("cluster", "${cluster.name}"), ("change", value)]);
    ["dev", "stage", "main"]
        .into_iter()
        .map(|branch| {
            repo.checkout(branch);
            repo.write(&format!("apps/{name}/base/config.yaml"), &config);
            repo.commit(&format!("{name}: {value}"))
        })
        .collect()
}

/// A Deployment manifest running one container.
pub fn deployment_yaml(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: {name}\n        image: registry.example/{name}:1.0\n"
    )
}

/// The environment of the example fleet's cluster `name` (see [`example_fleet`]).
pub fn example_environment(name: &str) -> &'static str {
    match name {
        "dev-1" => "dev",
        "stage-1" => "stage",
        n if n.starts_with("prod-") => "prod",
        n => n
            .strip_prefix("extra-")
            .and_then(|i| i.parse::<usize>().ok())
            .map_or("dev", |i| ["dev", "stage", "prod"][i % 3]),
    }
}

/// The example fleet's environments, in promotion order.
pub const EXAMPLE_ENVIRONMENTS: [&str; 3] = ["dev", "stage", "prod"];

/// The sandbox's example fleet, written into `repo` and committed on `main`, with `stage` and
/// `dev` branched from it. Environments dev → stage → prod (branch main); clusters dev-1,
/// stage-1, prod-eu, prod-us and `extra` more (extra-N, round-robin over the environments).
/// Apps: `platform` (a CRD and a custom resource of it), `settings` (a configMapGenerator),
/// `web` (Deployment + Service + ConfigMap, depends on platform; a stage overlay with two
/// replicas and a prod-eu cluster overlay with three; self-heal off so drift stays visible)
/// and, when `secrets` holds SOPS-encrypted Secret documents by environment, `credentials`
/// (an overlay per environment with that environment's `db.enc.yaml`).
pub fn example_fleet(repo: &FleetRepo, extra: usize, secrets: &[(&str, String)]) {
    repo.write("convoy.yaml", &fleet_yaml(&[("dev", "dev"), ("stage", "stage"), ("prod", "main")]));
    repo.write("clusters/dev-1.yaml", &cluster_yaml("dev-1", "dev", &[("region", "eu")]));
    repo.write("clusters/stage-1.yaml", &cluster_yaml("stage-1", "stage", &[("region", "eu")]));
    repo.write("clusters/prod-eu.yaml", &cluster_yaml("prod-eu", "prod", &[("region", "eu")]));
    repo.write("clusters/prod-us.yaml", &cluster_yaml("prod-us", "prod", &[("region", "us")]));
    for i in 1..=extra {
        let name = format!("extra-{i}");
        repo.write(
            &format!("clusters/{name}.yaml"),
            &cluster_yaml(&name, example_environment(&name), &[("region", "eu")]),
        );
    }
    if !secrets.is_empty() {
        repo.write("apps/credentials/app.yaml", &app_yaml("credentials", "credentials", &[]));
        repo.write("apps/credentials/base/kustomization.yaml", &kustomization_yaml(&["namespace.yaml"], &[]));
        repo.write(
            "apps/credentials/base/namespace.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: credentials\n",
        );
    }
    for (env, document) in secrets {
        let overlay = format!("apps/credentials/envs/{env}");
        repo.write(&format!("{overlay}/kustomization.yaml"), &kustomization_yaml(&["../../base", "db.enc.yaml"], &[]));
        repo.write(&format!("{overlay}/db.enc.yaml"), document);
    }
    repo.write("apps/platform/app.yaml", &app_yaml("platform", "platform", &[]));
    repo.write("apps/platform/base/kustomization.yaml", &kustomization_yaml(&["crd.yaml", "widget.yaml"], &[]));
    repo.write(
        "apps/platform/base/crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.convoy.dev\nspec:\n  group: example.convoy.dev\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        x-kubernetes-preserve-unknown-fields: true\n",
    );
    repo.write(
        "apps/platform/base/widget.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: platform\n---\napiVersion: example.convoy.dev/v1\nkind: Widget\nmetadata:\n  name: fleet-widget\nspec:\n  owner: ${cluster.name}\n",
    );
    repo.write("apps/settings/app.yaml", &app_yaml("settings", "settings", &[]));
    repo.write(
        "apps/settings/base/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- namespace.yaml\nconfigMapGenerator:\n- name: settings\n  literals:\n  - environment=${cluster.environment}\n  - log-level=info\n",
    );
    repo.write("apps/settings/base/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: settings\n");
    repo.write(
        "apps/web/app.yaml",
        "apiVersion: convoy.dev/v1\nkind: App\nmetadata:\n  name: web\nspec:\n  namespace: web\n  dependsOn: [platform]\n  sync: {prune: true, selfHeal: false}\n",
    );
    repo.write(
        "apps/web/base/kustomization.yaml",
        &kustomization_yaml(&["namespace.yaml", "config.yaml", "deployment.yaml", "service.yaml"], &[]),
    );
    repo.write("apps/web/base/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n");
    repo.write(
        "apps/web/base/config.yaml",
        &configmap_yaml("web-config", &[("greeting", "hello from ${cluster.name}")]),
    );
    repo.write("apps/web/base/deployment.yaml", &deployment_yaml("web", 1));
    repo.write(
        "apps/web/base/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    );
    repo.write("apps/web/envs/stage/kustomization.yaml", &kustomization_yaml(&["../../base"], &["replicas.yaml"]));
    repo.write("apps/web/envs/stage/replicas.yaml", &deployment_yaml("web", 2));
    repo.write(
        "apps/web/clusters/prod-eu/kustomization.yaml",
        &kustomization_yaml(&["../../base"], &["replicas.yaml"]),
    );
    repo.write("apps/web/clusters/prod-eu/replicas.yaml", &deployment_yaml("web", 3));
    with_schemas(repo);
    repo.commit("example fleet: platform (CRD), settings (generator), web");
    repo.checkout("stage");
    repo.checkout("dev");
}

/// Where [`with_schemas`] puts the schemas in a repository.
pub const SCHEMA_DIR: &str = "schemas";

/// Writes `convoy schema`'s schemas into `repo`'s `schemas/` and starts every fleet file
/// (convoy.yaml, clusters/*.yaml, apps/*/app.yaml) with the `# yaml-language-server: $schema=`
/// line naming its schema, relative to the file, so editors with the YAML language server
/// complete and check them.
pub fn with_schemas(repo: &FleetRepo) {
    for schema in convoy_render::fleet::schemas() {
        let text = serde_json::to_string_pretty(&schema.schema).expect("a schema serializes") + "\n";
        repo.write(&format!("{SCHEMA_DIR}/{}.json", schema.name), &text);
    }
    let mut files = vec![("convoy.yaml".to_string(), "fleet")];
    let listed = |dir: &Path| std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path());
    for path in listed(&repo.dir.join("clusters")).filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        files.push((format!("clusters/{}", path.file_name().unwrap_or_default().to_string_lossy()), "cluster"));
    }
    for app in listed(&repo.dir.join("apps")).filter(|p| p.join("app.yaml").exists()) {
        files.push((format!("apps/{}/app.yaml", app.file_name().unwrap_or_default().to_string_lossy()), "app"));
    }
    for (file, schema) in files {
        let up = "../".repeat(file.matches('/').count());
        let text = std::fs::read_to_string(repo.dir.join(&file)).expect("read a fleet file");
        repo.write(&file, &format!("# yaml-language-server: $schema={up}{SCHEMA_DIR}/{schema}.json\n{text}"));
    }
}

/// A fleet of one cluster, `dev-1` (environment dev on branch main), running `apps` apps
/// `bulk-00…`, each `objects` ConfigMaps (`cm-NN-NNNNN`, namespace `bulk`) whose data holds
/// about `object_bytes` bytes: the size scenarios and benchmarks. Returns the repo on `main`.
pub fn bulk_fleet(dir: &Path, apps: usize, objects: usize, object_bytes: usize) -> FleetRepo {
    let repo = FleetRepo::init(dir);
    repo.write("convoy.yaml", &fleet_yaml(&[("dev", "main")]));
    repo.write("clusters/dev-1.yaml", &cluster_yaml("dev-1", "dev", &[("region", "eu")]));
    for app in 0..apps {
        write_bulk_app(&repo, app, objects, object_bytes, "v1");
    }
    repo.commit(&format!("{apps} apps of {objects} objects"));
    repo
}

/// Writes app `bulk-NN` of [`bulk_fleet`], its payloads marked with `version`, in files of 500
/// objects (the YAML reader refuses more than 1,024 documents in one file).
pub fn write_bulk_app(repo: &FleetRepo, app: usize, objects: usize, object_bytes: usize, version: &str) {
    const PER_FILE: usize = 500;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
    let name = format!("bulk-{app:02}");
    repo.write(&format!("apps/{name}/app.yaml"), &app_yaml(&name, "bulk", &[]));
    let files: Vec<String> = (0..objects.div_ceil(PER_FILE)).map(|f| format!("objects-{f:03}.yaml")).collect();
    let resources: Vec<&str> = files.iter().map(String::as_str).collect();
    repo.write(&format!("apps/{name}/base/kustomization.yaml"), &kustomization_yaml(&resources, &[]));
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ (app as u64) << 32 ^ version.bytes().map(u64::from).sum::<u64>();
    for (f, file) in files.iter().enumerate() {
        let range = f * PER_FILE..((f + 1) * PER_FILE).min(objects);
        let mut docs = String::with_capacity(range.len() * (object_bytes + 120));
        for i in range {
            // Pseudo-random payloads (xorshift): content that compresses no better than real
            // certificates or bundles would, so transfer figures are not flattered.
            let payload: String = (0..object_bytes)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ALPHABET[(state >> 58) as usize] as char
                })
                .collect();
            docs.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{app:02}-{i:05}\ndata:\n  payload: \"{payload}\"\n"
            ));
        }
        repo.write(&format!("apps/{name}/base/{file}"), &docs);
    }
}

/// Writes app `web`: a Namespace and a ConfigMap `web-config` that [`release_web`] versions.
pub fn web_config_app(repo: &FleetRepo) {
    repo.write("apps/web/app.yaml", &app_yaml("web", "web", &[]));
    repo.write("apps/web/base/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n");
    repo.write("apps/web/base/kustomization.yaml", &kustomization_yaml(&["namespace.yaml", "config.yaml"], &[]));
}

/// Sets `web-config`'s version to `version` and commits; the commit.
pub fn release_web(repo: &FleetRepo, version: &str) -> String {
    repo.write("apps/web/base/config.yaml", &configmap_yaml("web-config", &[("version", version)]));
    repo.commit(version)
}

/// convoy.yaml of one environment, prod on `main`, rolled out to the clusters labelled
/// `tier: canary` first, then the rest, each wave soaking `soak` behind a metric gate: the
/// Prometheus at `prometheus` (queried `from` agent or hub) every second, `max(test_error_ratio)`
/// under 0.01, `failure_limit` failures tolerated, a failure rolling back.
pub fn gated_fleet_yaml(prometheus: &str, from: &str, soak: &str, failure_limit: u32) -> String {
    format!(
        "apiVersion: convoy.dev/v1
kind: Fleet
spec:
  environments:
  - name: prod
    branch: main
    rollout:
      waves:
      - {{name: canary, clusterSelector: {{matchLabels: {{tier: canary}}}}}}
      - {{name: rest}}
      soak: {soak}
      analysis:
        prometheus: {{address: 'http://{prometheus}'}}
        from: {from}
        interval: 1s
        checks:
        - {{name: error-rate, query: max(test_error_ratio), successCondition: result < 0.01, failureLimit: {failure_limit}}}
      onFailure: rollback
"
    )
}

//! Apps that are Helm charts: the hub renders a repository chart per cluster with layered values
//! (chart → `spec.helm.values` → `apps/<app>/values.yaml` → `envs/<env>/values.yaml` →
//! `clusters/<name>/values.yaml`), `${cluster.*}` variables in values, CRDs and install hooks kept
//! in Helm's order, test hooks left out; a broken template keeps the last good objects.

use convoy_e2e::fleet_repo::{FleetRepo, create_standard_namespaces, standard_fleet};
use convoy_e2e::harness::{InProcessHub, TestCa, eventually, run_agents, workspace_binary};
use tokio_util::sync::CancellationToken;

const CHART_YAML: &str = "apiVersion: v2\nname: greeter\nversion: 1.2.3\nappVersion: \"4.5\"\n";
const CHART_VALUES: &str = "greeting: hello\nreplicas: 1\ntier: none\nregion: none\n";
const HELPERS: &str = r#"{{- define "greeter.fullname" -}}
{{ .Release.Name }}-{{ .Chart.Name }}
{{- end -}}
"#;
const CONFIGMAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "greeter.fullname" . }}
  labels:
    chart: {{ .Chart.Name }}-{{ .Chart.Version }}
data:
  greeting: {{ .Values.greeting | quote }}
  replicas: {{ .Values.replicas | quote }}
  tier: {{ .Values.tier | quote }}
  region: {{ .Values.region | quote }}
  namespace: {{ .Release.Namespace }}
"#;
const HOOK: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
    "helm.sh/hook-weight": "-5"
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: busybox}]
"#;
const TEST_HOOK: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations: {"helm.sh/hook": test}
spec:
  containers: [{name: t, image: busybox}]
"#;
const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: greetings.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Greeting, plural: greetings}\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n";

/// The standard fleet plus a repository chart `charts/greeter` and an app `greeter` using it,
/// with values at every layer; every branch at the same commit.
fn helm_fleet(dir: &std::path::Path) -> FleetRepo {
    let repo = standard_fleet(dir);
    repo.write("charts/greeter/Chart.yaml", CHART_YAML);
    repo.write("charts/greeter/values.yaml", CHART_VALUES);
    repo.write("charts/greeter/templates/_helpers.tpl", HELPERS);
    repo.write("charts/greeter/templates/configmap.yaml", CONFIGMAP);
    repo.write("charts/greeter/templates/migrate.yaml", HOOK);
    repo.write("charts/greeter/templates/tests/test.yaml", TEST_HOOK);
    repo.write("charts/greeter/templates/NOTES.txt", "Thanks for installing {{ .Release.Name }}\n");
    repo.write("charts/greeter/crds/greetings.yaml", CRD);
    repo.write(
        "apps/greeter/app.yaml",
        "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: greeter}\nspec:\n  namespace: greet\n  helm:\n    chart: charts/greeter\n    releaseName: hi\n    values: {replicas: 2}\n",
    );
    repo.write("apps/greeter/values.yaml", "greeting: hi ${cluster.name}\n");
    repo.write("apps/greeter/envs/prod/values.yaml", "tier: prod\n");
    repo.write("apps/greeter/clusters/prod-eu/values.yaml", "region: ${cluster.labels.region}\n");
    let head = repo.commit("greeter: a chart with values per environment and cluster");
    for branch in ["stage", "main"] {
        repo.git(&["branch", "-f", branch, &head]);
    }
    repo
}

fn configmap(hub: &InProcessHub, cluster: &str) -> serde_json::Value {
    hub.objects(cluster, "greeter").into_iter().find(|o| o["kind"] == "ConfigMap").unwrap_or_default()
}

#[tokio::test]
async fn a_chart_renders_per_cluster_with_layered_values_crds_and_install_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = helm_fleet(dir.path());
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let data = |cluster: &str| configmap(&hub, cluster)["data"].clone();
    assert_eq!(
        data("dev-1"),
        serde_json::json!({"greeting": "hi dev-1", "replicas": "2", "tier": "none", "region": "none", "namespace": "greet"}),
        "errors: {:?}",
        hub.hub.view().errors
    );
    assert_eq!(data("prod-us")["tier"], "prod");
    assert_eq!(data("prod-us")["region"], "none");
    assert_eq!(data("prod-eu")["region"], "eu");
    assert_eq!(data("prod-eu")["greeting"], "hi prod-eu");

    let objects = hub.objects("prod-eu", "greeter");
    let cm = configmap(&hub, "prod-eu");
    assert_eq!(cm["metadata"]["name"], "hi-greeter");
    assert_eq!(cm["metadata"]["namespace"], "greet");
    assert_eq!(cm["metadata"]["labels"]["chart"], "greeter-1.2.3");
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(kinds.contains(&"CustomResourceDefinition"), "{kinds:?}");
    let hook = objects.iter().find(|o| o["kind"] == "Job").expect("the pre-install hook is applied");
    assert_eq!(hook["metadata"]["annotations"]["helm.sh/hook-weight"], "-5");
    assert!(!kinds.contains(&"Pod"), "test hooks are left out: {kinds:?}");
    hub.stop().await;
}

#[tokio::test]
async fn a_values_change_for_one_cluster_moves_only_that_cluster_and_a_broken_template_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let repo = helm_fleet(dir.path());
    repo.checkout("main");
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let us_before = hub.digest("prod-us");
    let eu_before = configmap(&hub, "prod-eu");

    repo.write("apps/greeter/clusters/prod-eu/values.yaml", "region: ${cluster.labels.region}-west\n");
    let head = repo.commit("greeter: prod-eu region");
    hub.sync("main", &head).await;
    assert_eq!(configmap(&hub, "prod-eu")["data"]["region"], "eu-west");
    assert_eq!(hub.digest("prod-us"), us_before, "prod-us's values did not change");

    let good = hub.objects("prod-eu", "greeter");
    repo.write(
        "charts/greeter/templates/configmap.yaml",
        &CONFIGMAP.replace("{{ .Values.tier | quote }}", "{{ required \"set tier.name\" .Values.tier.name }}"),
    );
    let head = repo.commit("greeter: a template that fails");
    hub.sync("main", &head).await;
    assert_eq!(hub.objects("prod-eu", "greeter"), good, "the last good objects stay");
    let app = hub.hub.assignment("prod-eu").unwrap().apps.iter().find(|a| a.name == "greeter").cloned().unwrap();
    let error = app.render_error.clone().expect("the render error travels with the app");
    assert!(error.contains("charts/greeter") && error.contains("configmap.yaml"), "{error}");
    assert_ne!(eu_before, serde_json::Value::Null);

    repo.write("apps/greeter/clusters/prod-eu/values.yaml", "region: ${cluster.labels.zone}\n");
    repo.write("charts/greeter/templates/configmap.yaml", CONFIGMAP);
    let head = repo.commit("greeter: an undefined variable in values");
    hub.sync("main", &head).await;
    let app = hub.hub.assignment("prod-eu").unwrap().apps.iter().find(|a| a.name == "greeter").cloned().unwrap();
    let error = app.render_error.clone().expect("an undefined variable is an error");
    assert!(
        error.contains("apps/greeter/clusters/prod-eu/values.yaml") && error.contains("cluster.labels.zone"),
        "{error}"
    );
    assert_eq!(app.objects.to_vec(), good, "the last good objects stay");
    assert_eq!(configmap(&hub, "prod-us")["data"]["tier"], "prod", "prod-us renders on");
    hub.stop().await;
}

/// `convoy render --app --cluster` prints, from the work tree, what the hub assigns.
fn cli_render(root: &std::path::Path, app: &str, cluster: &str) -> Result<Vec<serde_json::Value>, String> {
    let out = std::process::Command::new(workspace_binary("convoy"))
        .args(["render", "--app", app, "--cluster", cluster, "--root"])
        .arg(root)
        .args(["-o", "json"])
        .output()
        .expect("run convoy");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut objects: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON objects");
    objects.sort_by_key(|o| convoy_shared::model::ObjectRef::of(o).to_string());
    Ok(objects)
}

#[tokio::test]
async fn convoy_render_app_prints_what_the_hub_assigns_for_charts_and_overlays() {
    let dir = tempfile::tempdir().unwrap();
    let repo = helm_fleet(dir.path());
    repo.checkout("main");
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    for (app, cluster) in [("greeter", "prod-eu"), ("greeter", "prod-us"), ("web", "prod-eu"), ("api", "prod-eu")] {
        let mut assigned = hub.objects(cluster, app);
        assigned.sort_by_key(|o| convoy_shared::model::ObjectRef::of(o).to_string());
        assert!(!assigned.is_empty());
        assert_eq!(cli_render(dir.path(), app, cluster).unwrap(), assigned, "{app} on {cluster}");
    }
    hub.stop().await;
    for (app, cluster, says) in [
        ("api", "prod-us", "does not go to cluster 'prod-us'"),
        ("nope", "prod-us", "apps: api, greeter, web"),
        ("web", "mars-1", "clusters: dev-1, prod-eu, prod-us, stage-1"),
    ] {
        let err = cli_render(dir.path(), app, cluster).unwrap_err();
        assert!(err.contains(says), "{app} on {cluster}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_see_the_capabilities_each_agent_reports_and_their_objects_reach_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let repo = helm_fleet(dir.path());
    repo.checkout("main");
    repo.write(
        "charts/greeter/templates/caps.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: caps}\ndata:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n  apps: {{ .Capabilities.APIVersions.Has \"apps/v1\" | quote }}\n  widgets: {{ .Capabilities.APIVersions.Has \"widgets.example.com/v9\" | quote }}\n",
    );
    // A chart that makes its own TLS, as Elastic's does: the agent makes the keys.
    repo.write(
        "charts/greeter/templates/tls.yaml",
        "{{- $ca := genCA \"greeter-ca\" 365 }}\n{{- $cert := genSignedCert \"greeter\" nil (list \"greeter.greet.svc\") 365 $ca }}\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: greeter-tls}\ndata:\n  tls.crt: {{ $cert.Cert | b64enc }}\n  \
         tls.key: {{ $cert.Key | b64enc }}\n  ca.crt: {{ $ca.Cert | b64enc }}\n",
    );
    let head = repo.commit("greeter: say what the cluster offers, serve TLS");
    for branch in ["dev", "stage"] {
        repo.git(&["branch", "-f", branch, &head]);
    }
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let caps = |cluster: &str| {
        hub.objects(cluster, "greeter").into_iter().find(|o| o["metadata"]["name"] == "caps").unwrap_or_default()
    };
    // Before any agent said anything: Helm's defaults.
    let default = convoy_render::helm::objects::DEFAULT_KUBE_VERSION;
    assert_eq!(caps("prod-eu")["data"]["kube"], default, "{:?}", hub.hub.view().errors);

    let names = ["prod-eu"];
    let kube = kubesim::SimFleet::start(&names).await.unwrap();
    let cluster = kube.cluster("prod-eu").unwrap();
    create_standard_namespaces(cluster);
    cluster.apply("test", &convoy_agent::testing::namespace("greet"), true).expect("create namespace");
    let shutdown = CancellationToken::new();
    let caches = tempfile::tempdir().unwrap();
    let agents = run_agents(&ca, &hub.address, &kube, &names, caches.path(), &shutdown).await;
    eventually("prod-eu's charts to see kubesim's version", || {
        let seen = caps("prod-eu")["data"]["kube"] == "v1.36.0-kubesim";
        async move { seen.then_some(()) }
    })
    .await;
    assert_eq!(caps("prod-eu")["data"]["apps"], "true");
    assert_eq!(caps("prod-eu")["data"]["widgets"], "false");
    assert_eq!(caps("prod-us")["data"]["kube"], default, "prod-us has no agent yet");
    eventually("the chart's objects on prod-eu", || {
        let applied = cluster.get("v1", "ConfigMap", Some("greet"), "caps").is_some()
            && cluster.get("v1", "ConfigMap", Some("greet"), "hi-greeter").is_some()
            && cluster.get("batch/v1", "Job", Some("greet"), "hi-migrate").is_some()
            && cluster.get("v1", "Secret", Some("greet"), "greeter-tls").is_some();
        async move { applied.then_some(()) }
    })
    .await;
    let tls = cluster.get("v1", "Secret", Some("greet"), "greeter-tls").unwrap();
    let pem = |key: &str| {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(tls["data"][key].as_str().unwrap()).unwrap();
        String::from_utf8(bytes).unwrap()
    };
    assert!(pem("tls.crt").starts_with("-----BEGIN CERTIFICATE-----") && pem("tls.key").contains("PRIVATE KEY"));
    let assigned = serde_json::to_string(&hub.objects("prod-eu", "greeter")).unwrap();
    assert!(!assigned.contains("BEGIN"), "the hub holds tokens, never a key or certificate");
    shutdown.cancel();
    for agent in agents {
        let _ = agent.await;
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_without_a_namespace_object_reach_a_fresh_cluster_and_only_namespaces_convoy_made_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = helm_fleet(dir.path());
    // Both apps leave with their namespace: greet (made by Convoy) and api (there before it).
    repo.checkout("main");
    for app in ["greeter", "api"] {
        let file = format!("apps/{app}/app.yaml");
        let text = std::fs::read_to_string(repo.dir.join(&file)).unwrap();
        repo.write(&file, &text.replace("spec:\n", "spec:\n  deleteNamespace: true\n"));
    }
    let head = repo.commit("greeter and api take their namespaces with them");
    let ca = TestCa::new();
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    hub.sync("main", &head).await;
    // No namespace made by hand, but api's, which a team had before Convoy.
    let names = ["prod-eu"];
    let kube = kubesim::SimFleet::start(&names).await.unwrap();
    let cluster = kube.cluster("prod-eu").unwrap();
    let mut team = convoy_agent::testing::namespace("api");
    team["metadata"]["labels"] = serde_json::json!({"team": "payments"});
    cluster.apply("kubectl", &team, true).expect("create api's namespace");
    let shutdown = CancellationToken::new();
    let caches = tempfile::tempdir().unwrap();
    let agents = run_agents(&ca, &hub.address, &kube, &names, caches.path(), &shutdown).await;
    eventually("the chart's and the kustomizations' objects on a fresh cluster", || {
        let applied = cluster.get("v1", "ConfigMap", Some("greet"), "hi-greeter").is_some()
            && cluster.get("v1", "ConfigMap", Some("web"), "web-config").is_some()
            && cluster.get("v1", "ConfigMap", Some("api"), "api-config").is_some();
        async move { applied.then_some(()) }
    })
    .await;
    let annotations = |ns: &str| cluster.get("v1", "Namespace", None, ns).unwrap()["metadata"]["annotations"].clone();
    assert_eq!(annotations("greet")["convoy.dev/namespace-created"], "true", "{}", annotations("greet"));
    assert_eq!(annotations("web")["convoy.dev/prune"], "disabled", "web keeps its namespace (the default)");
    assert_eq!(annotations("api")["convoy.dev/prune"], "disabled", "api's namespace was there before Convoy");
    assert!(annotations("api").get("convoy.dev/namespace-created").is_none());

    // Both apps leave Git: greet goes with its app, api's namespace (not Convoy's) stays.
    repo.remove("apps/greeter");
    repo.remove("apps/api");
    let gone = repo.commit("greeter and api retired");
    hub.sync("main", &gone).await;
    eventually("greet deleted with its app", || {
        let deleted = cluster.get("v1", "Namespace", None, "greet").is_none()
            && cluster.get("v1", "ConfigMap", Some("api"), "api-config").is_none();
        async move { deleted.then_some(()) }
    })
    .await;
    let api = cluster.get("v1", "Namespace", None, "api").expect("a namespace Convoy did not make is never deleted");
    assert_eq!(api["metadata"]["labels"]["team"], "payments");
    assert!(cluster.get("v1", "Namespace", None, "web").is_some());
    shutdown.cancel();
    for agent in agents {
        let _ = agent.await;
    }
    hub.stop().await;
}

//! Remote chart sources against real servers, with charts packaged, indexed and pushed by Helm's
//! own client (helm-python-sdk): a static HTTP chart repository (python's http.server), Debian's
//! docker-registry as an OCI registry, anonymous and with htpasswd basic auth, and a token-gated
//! registry for the Bearer flow. Versions resolve as Helm resolves them, digests are Helm's,
//! tampered bits are refused, misses name what is there, a fetched chart renders exactly as its
//! directory does, and the cache serves every chart fetched once after the repository is gone
//! and the fetcher restarted. The hub refuses a malformed credentials file before it starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_e2e::chart_sources::{OciRegistry, Packaged, StaticChartRepo, TokenGatedRegistry, helm_sdk_ok, package};
use convoy_e2e::harness::{TestCa, workspace_binary};
use convoy_render::FsSource;
use convoy_render::helm::fetch::{ChartFetcher, Credential, FetchConfig, FetchError, Fetched, Remote};
use convoy_render::helm::{Chart, ReleaseOptions, render};
use serde_json::json;

const VERSIONS: [&str; 5] = ["1.0.0", "1.1.0", "1.2.3", "1.3.0-rc.1", "2.0.0"];

/// Writes chart `demo` at `version` under `root/<version>/demo`: helpers, `.Files`, a vendored
/// subchart, values.
fn write_chart(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(version).join("demo");
    let files = [
        ("Chart.yaml", format!("apiVersion: v2\nname: demo\nversion: {version}\nappVersion: \"9.9\"\n")),
        ("values.yaml", "greeting: hello\nreplicas: 2\nsub:\n  color: blue\n".into()),
        (
            "templates/_helpers.tpl",
            "{{- define \"demo.fullname\" -}}\n{{ printf \"%s-%s\" .Release.Name .Chart.Name | trunc 63 | trimSuffix \
             \"-\" }}\n{{- end -}}\n"
                .into(),
        ),
        (
            "templates/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"demo.fullname\" . }}\n  labels:\n    \
             helm.sh/chart: {{ printf \"%s-%s\" .Chart.Name .Chart.Version | replace \"+\" \"_\" }}\ndata:\n  \
             greeting: {{ .Values.greeting | upper | quote }}\n  replicas: {{ .Values.replicas | quote }}\n  note: \
             {{ .Files.Get \"files/note.txt\" | trim | quote }}\n  checksum: {{ .Files.Get \"files/note.txt\" | \
             sha256sum }}\n"
                .into(),
        ),
        ("files/note.txt", "fetched from afar\n".into()),
        ("charts/sub/Chart.yaml", "apiVersion: v2\nname: sub\nversion: 0.1.0\n".into()),
        (
            "charts/sub/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-sub\ndata:\n  color: {{ \
             .Values.color | quote }}\n"
                .into(),
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Every version of `demo` written and packaged by Helm into `destination`.
fn package_all(root: &Path, destination: &Path) -> BTreeMap<&'static str, Packaged> {
    VERSIONS.iter().map(|v| (*v, package(&write_chart(root, v), destination))).collect()
}

fn fetcher(cache: &Path, credentials: Vec<Credential>) -> ChartFetcher {
    convoy_shared::install_crypto_provider();
    ChartFetcher::new(FetchConfig {
        cache_dir: cache.to_path_buf(),
        credentials,
        tls: None,
        plain_http_hosts: vec!["127.0.0.1".into()],
    })
    .expect("fetcher")
}

fn repo(url: &str, version: &str) -> Remote {
    Remote::Repo { url: url.into(), name: "demo".into(), version: version.into() }
}

fn oci(reference: String, version: &str) -> Remote {
    Remote::Oci { reference, version: version.into() }
}

fn credential(host: &str, user: &str, password: &str) -> Credential {
    Credential { host: host.into(), username: Some(user.into()), password: Some(password.into()) }
}

/// Our engine's output for the chart in `fetched`, and for the same chart loaded from `dir`,
/// must be the same, template by template.
fn assert_renders_as_its_directory(fetched: &Fetched, remote: &Remote, dir: &Path) {
    let from_archive = Chart::from_archive(&fetched.archive, remote.to_string()).expect("the fetched chart loads");
    let from_dir = Chart::load(&FsSource::new(dir.parent().unwrap()), Path::new("demo")).expect("the directory loads");
    let values = json!({"greeting": "hi", "sub": {"color": "red"}});
    let options = ReleaseOptions::new("web", "team");
    let a = render(&from_archive, &values, &options).expect("the fetched chart renders");
    let b = render(&from_dir, &values, &options).expect("the directory renders");
    assert_eq!(a.files, b.files);
    assert_eq!(a.manifest_text, b.manifest_text);
    assert!(
        a.manifest_text.contains("color: \"red\"") && a.manifest_text.contains("greeting: \"HI\""),
        "{}",
        a.manifest_text
    );
}

fn cached_archives(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tgz"))
        .collect();
    names.sort();
    names
}

#[test]
fn http_repository_charts_resolve_like_helm_and_outlive_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, served, cache) = (tmp.path().join("src"), tmp.path().join("repo"), tmp.path().join("charts"));
    std::fs::create_dir_all(&served).unwrap();
    let packaged = package_all(&src, &served);
    helm_sdk_ok("index", &served, json!({}));
    let server = StaticChartRepo::start(&served);
    let url = server.url.clone();
    let charts = fetcher(&cache, Vec::new());

    let exact = charts.fetch(&repo(&url, "1.1.0")).unwrap();
    assert_eq!((exact.version.as_str(), exact.digest.as_str()), ("1.1.0", packaged["1.1.0"].digest.as_str()));
    assert_eq!(&*exact.archive, &std::fs::read(&packaged["1.1.0"].archive).unwrap()[..]);
    for (constraint, resolved) in
        [("~1.2", "1.2.3"), ("^1", "1.2.3"), (">=1.0 <2", "1.2.3"), ("", "2.0.0"), ("1.3.0-rc.1", "1.3.0-rc.1")]
    {
        let fetched = charts.fetch(&repo(&url, constraint)).unwrap();
        assert_eq!(fetched.version, resolved, "{constraint}");
        assert_eq!(fetched.digest, packaged[resolved].digest, "{constraint}");
    }
    let remote = repo(&url, "~1.2");
    assert_renders_as_its_directory(&charts.fetch(&remote).unwrap(), &remote, &src.join("1.2.3/demo"));

    let missing = charts.fetch(&repo(&url, "3.1.0")).unwrap_err();
    assert!(matches!(missing, FetchError::VersionNotFound { .. }), "{missing:?}");
    let message = missing.to_string();
    for needle in [url.as_str(), "'demo'", "'3.1.0'", "2.0.0, 1.3.0-rc.1, 1.2.3", "spec.helm.version"] {
        assert!(message.contains(needle), "{needle} not in: {message}");
    }
    let misspelt = charts.fetch(&Remote::Repo { url: url.clone(), name: "dmeo".into(), version: "1.0.0".into() });
    let message = misspelt.unwrap_err().to_string();
    assert!(message.contains("no chart 'dmeo'") && message.contains("it has demo"), "{message}");

    // Cached by digest, one file per distinct tarball, plus the resolutions.
    let mut expected: Vec<String> = ["1.1.0", "1.2.3", "2.0.0", "1.3.0-rc.1"]
        .iter()
        .map(|v| format!("{}.tgz", packaged[v].digest.replace(':', "-")))
        .collect();
    expected.sort();
    assert_eq!(cached_archives(&cache), expected);
    assert!(cache.join("resolutions.json").exists());

    // The repository goes down and the hub restarts: what was fetched is still served, with the
    // version it resolved to then; what never was names the repository.
    server.stop();
    let restarted = fetcher(&cache, Vec::new());
    let again = restarted.fetch(&repo(&url, "~1.2")).unwrap();
    assert_eq!((again.version.as_str(), again.digest.as_str()), ("1.2.3", packaged["1.2.3"].digest.as_str()));
    let down = restarted.fetch(&repo(&url, "1.0.0")).unwrap_err();
    assert!(matches!(down, FetchError::Unreachable { .. }), "{down:?}");
    assert!(down.to_string().contains(&url) && down.to_string().contains("1.0.0"), "{down}");
}

/// An https:// repository whose certificate chains to a private CA: trusted with that CA (what
/// `--chart-ca` passes), refused with the system's roots, with a hint naming the flag.
#[test]
fn https_repositories_are_verified_against_the_chart_ca() {
    let (ca, tmp) = (TestCa::new(), tempfile::tempdir().unwrap());
    let served = tmp.path().join("repo");
    std::fs::create_dir_all(&served).unwrap();
    let packaged = package_all(&tmp.path().join("src"), &served);
    helm_sdk_ok("index", &served, json!({}));
    let server = StaticChartRepo::start_tls(&served, &ca.certs.hub_cert(), &ca.certs.hub_key());
    convoy_shared::install_crypto_provider();
    let config = |cache: &str, tls| FetchConfig {
        cache_dir: tmp.path().join(cache),
        credentials: Vec::new(),
        tls,
        plain_http_hosts: Vec::new(),
    };
    let trusted = convoy_shared::tls::client_config(ca.ca.cert_pem(), None).unwrap();
    let fetched = ChartFetcher::new(config("trusted", Some(trusted))).unwrap().fetch(&repo(&server.url, "^1")).unwrap();
    assert_eq!(fetched.digest, packaged["1.2.3"].digest);
    let untrusted = ChartFetcher::new(config("untrusted", None)).unwrap().fetch(&repo(&server.url, "^1")).unwrap_err();
    assert!(matches!(untrusted, FetchError::Unreachable { .. }), "{untrusted:?}");
    assert!(untrusted.to_string().contains("--chart-ca"), "{untrusted}");
}

#[test]
fn a_tarball_changed_after_indexing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (served, cache) = (tmp.path().join("repo"), tmp.path().join("charts"));
    std::fs::create_dir_all(&served).unwrap();
    let packaged = package_all(&tmp.path().join("src"), &served);
    helm_sdk_ok("index", &served, json!({}));
    // Someone replaces 1.0.0's tarball with other bits after the index was written.
    std::fs::copy(&packaged["1.1.0"].archive, &packaged["1.0.0"].archive).unwrap();
    let server = StaticChartRepo::start(&served);
    let charts = fetcher(&cache, Vec::new());

    let refused = charts.fetch(&repo(&server.url, "1.0.0")).unwrap_err();
    assert!(matches!(refused, FetchError::DigestMismatch { .. }), "{refused:?}");
    let message = refused.to_string();
    for needle in ["'demo'", "1.0.0", &packaged["1.0.0"].digest, &packaged["1.1.0"].digest] {
        assert!(message.contains(needle), "{needle} not in: {message}");
    }
    assert!(cached_archives(&cache).is_empty(), "refused bits are not cached");
    assert!(!cache.join("resolutions.json").exists(), "a refused fetch resolves nothing");
    assert_eq!(charts.fetch(&repo(&server.url, "1.1.0")).unwrap().digest, packaged["1.1.0"].digest);
}

#[test]
fn oci_charts_fetch_from_a_registry_anonymously_and_with_basic_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let packaged = package_all(&src, &tmp.path().join("dist"));
    let cache = tmp.path().join("charts");

    let open = OciRegistry::start(None);
    for version in ["1.0.0", "1.2.3", "2.0.0"] {
        open.push(&packaged[version].archive, None);
    }
    let charts = fetcher(&cache, Vec::new());
    let remote = oci(open.reference("demo"), "1.2.3");
    let exact = charts.fetch(&remote).unwrap();
    assert_eq!((exact.version.as_str(), exact.digest.as_str()), ("1.2.3", packaged["1.2.3"].digest.as_str()));
    assert_renders_as_its_directory(&exact, &remote, &src.join("1.2.3/demo"));
    assert_eq!(
        charts.fetch(&oci(open.reference("demo"), "~1.0")).unwrap().version,
        "1.0.0",
        "constraints resolve over the tags"
    );
    assert_eq!(charts.fetch(&oci(open.reference("demo"), "")).unwrap().version, "2.0.0");
    let missing = charts.fetch(&oci(open.reference("demo"), "1.9.0")).unwrap_err();
    let message = missing.to_string();
    assert!(matches!(missing, FetchError::VersionNotFound { .. }), "{missing:?}");
    assert!(message.contains(&open.reference("demo")) && message.contains("2.0.0, 1.2.3, 1.0.0"), "{message}");

    helm_sdk_ok("push-image", Path::new(&open.host), json!({"repository": "charts/image", "tag": "1.0.0"}));
    let image = charts.fetch(&oci(open.reference("image"), "1.0.0")).unwrap_err();
    assert!(matches!(image, FetchError::NotAChart { .. }), "{image:?}");
    assert!(image.to_string().contains("application/vnd.oci.image.layer.v1.tar+gzip"), "{image}");

    let locked = OciRegistry::start(Some(("robot", "s3cret")));
    locked.push(&packaged["1.2.3"].archive, Some(("robot", "s3cret")));
    let remote = oci(locked.reference("demo"), "1.2.3");
    let anonymous = charts.fetch(&remote).unwrap_err();
    assert!(matches!(anonymous, FetchError::Unauthorized { status: 401, .. }), "{anonymous:?}");
    let message = anonymous.to_string();
    assert!(message.contains("add credentials for 127.0.0.1") && message.contains("--chart-credentials"), "{message}");
    let wrong = fetcher(&tmp.path().join("wrong"), vec![credential(&locked.host, "robot", "guess")]);
    let message = wrong.fetch(&remote).unwrap_err().to_string();
    assert!(message.contains("were refused"), "{message}");
    let right = fetcher(&tmp.path().join("right"), vec![credential(&locked.host, "robot", "s3cret")]);
    assert_eq!(right.fetch(&remote).unwrap().digest, packaged["1.2.3"].digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_bearer_tokens_come_from_the_registrys_token_service() {
    let tmp = tempfile::tempdir().unwrap();
    let packaged = package_all(&tmp.path().join("src"), &tmp.path().join("dist"));
    let archive = std::fs::read(&packaged["1.2.3"].archive).unwrap();
    let gate = TokenGatedRegistry::start("demo", "1.2.3", &archive, &packaged["1.2.3"].digest, "robot", "s3cret").await;
    let reference = format!("oci://{}/charts/demo", gate.host);
    let (host, cache) = (gate.host.clone(), tmp.path().to_path_buf());
    let (fetched, anonymous) = tokio::task::spawn_blocking(move || {
        let with = fetcher(&cache.join("with"), vec![credential(&host, "robot", "s3cret")]);
        let without = fetcher(&cache.join("without"), Vec::new());
        (with.fetch(&oci(reference.clone(), "1.2.3")), without.fetch(&oci(reference, "1.2.3")))
    })
    .await
    .unwrap();
    assert_eq!(fetched.unwrap().digest, packaged["1.2.3"].digest);
    let log = gate.log.lock().unwrap().clone();
    assert_eq!(log.token_queries, vec!["service=convoy-gate&scope=repository:charts/demo:pull".to_string()]);
    assert_eq!(log.bearer_requests, 2, "manifest and blob both carry the token");
    let anonymous = anonymous.unwrap_err();
    assert!(matches!(anonymous, FetchError::Unauthorized { status: 401, .. }), "{anonymous:?}");
}

#[test]
fn the_hub_refuses_a_malformed_chart_credentials_file_before_starting() {
    let (ca, data) = (TestCa::new(), tempfile::tempdir().unwrap());
    let bad = data.path().join("chart-credentials.yaml");
    std::fs::write(&bad, "- {host: registry.example.com, username: robot}\n").unwrap();
    let out = Command::new(workspace_binary("convoy-hub"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--certs"])
        .arg(&ca.certs.0)
        .arg("--data")
        .arg(data.path())
        .arg("--chart-credentials")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("chart-credentials.yaml") && stderr.contains("password or a token"), "{stderr}");
}

/// An app naming a chart in a chart repository: the hub resolves the version range once, renders
/// the fetched chart for each cluster, records the exact version and digest in the cluster's
/// history, previews a promotion with the same fetcher, and keeps rendering from its cache after
/// the repository goes down; a version the repository lacks is that app's render error naming
/// what it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_renders_apps_from_a_chart_repository_and_keeps_them_when_it_goes_down() {
    use convoy_e2e::fleet_repo::standard_fleet;
    use convoy_e2e::harness::InProcessHub;
    let tmp = tempfile::tempdir().unwrap();
    let (src, served, cache) = (tmp.path().join("src"), tmp.path().join("repo"), tmp.path().join("charts"));
    std::fs::create_dir_all(&served).unwrap();
    let packaged = package_all(&src, &served);
    helm_sdk_ok("index", &served, json!({}));
    let server = StaticChartRepo::start(&served);
    let fleet = standard_fleet(&tmp.path().join("fleet"));
    fleet.checkout("main");
    let url = server.url.clone();
    let app = |version: &str| {
        format!(
            "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {{name: demo}}\nspec:\n  namespace: demo\n  helm:\n    repo: {url}\n    name: demo\n    version: \"{version}\"\n    releaseName: shop\n"
        )
    };
    fleet.write("apps/demo/app.yaml", &app("~1.2"));
    fleet.write("apps/demo/clusters/prod-eu/values.yaml", "greeting: hi ${cluster.name}\n");
    fleet.commit("demo: a chart from a chart repository");
    let ca = TestCa::new();
    // reqwest's blocking client runs its own runtime: built off the async one.
    let fetcher = tokio::task::spawn_blocking(move || fetcher(&cache, vec![])).await.unwrap();
    let hub = InProcessHub::start_with_charts(&ca, &fleet.url(), std::sync::Arc::new(fetcher)).await;
    let data = |cluster: &str| {
        hub.objects(cluster, "demo").into_iter().find(|o| o["metadata"]["name"] == "shop-demo").unwrap_or_default()
            ["data"]
            .clone()
    };
    assert_eq!(data("prod-eu")["greeting"], "HI PROD-EU", "{:?}", hub.hub.view().errors);
    assert_eq!(data("prod-us")["greeting"], "HELLO");
    assert_eq!(data("prod-us")["note"], "fetched from afar");
    let chart_label = hub.objects("prod-us", "demo")[0]["metadata"]["labels"]["helm.sh/chart"].clone();
    assert_eq!(chart_label, "demo-1.2.3", "~1.2 resolves to the highest 1.2.x");

    let mut viewer = ca.cli(&hub.address, convoy_shared::identity::Role::Viewer).await;
    let request = convoy_shared::proto::HistoryRequest { cluster: "prod-us".into(), limit: 10 };
    let history = viewer.history(request).await.unwrap().into_inner().entries;
    let assigned = history.iter().find(|e| e.event == "assigned").expect("an assignment in the history");
    let source = format!("demo: demo@1.2.3 from {url} {}", packaged["1.2.3"].digest);
    assert_eq!(assigned.detail, source, "the history names the exact chart version and its digest");

    // Promoting prod's commit onto stage renders the remote chart too (no fetch refusal).
    let request = convoy_shared::proto::DiffRequest { from_env: "prod".into(), to_env: "stage".into() };
    let diff = viewer.diff(request).await.unwrap().into_inner().clusters;
    let stage = diff.iter().find(|c| c.cluster == "stage-1").expect("stage-1 in the diff");
    assert!(stage.errors.is_empty(), "{:?}", stage.errors);
    assert!(stage.added.iter().any(|o| o.kind == "ConfigMap" && o.name == "shop-demo"), "{:?}", stage.added);

    server.stop();
    fleet.write("apps/demo/clusters/prod-us/values.yaml", "greeting: still here\n");
    let head = fleet.commit("demo: prod-us values, with the repository down");
    hub.sync("main", &head).await;
    assert_eq!(data("prod-us")["greeting"], "STILL HERE", "served from the hub's chart cache");

    let before = hub.objects("prod-eu", "demo");
    fleet.write("apps/demo/app.yaml", &app("9.9.9"));
    let head = fleet.commit("demo: a version nobody published");
    hub.sync("main", &head).await;
    assert_eq!(hub.objects("prod-eu", "demo"), before, "the last good objects stay");
    let error =
        hub.hub.assignment("prod-eu").unwrap().apps.iter().find(|a| a.name == "demo").unwrap().render_error.clone();
    let error = error.expect("the fetch error travels with the app");
    assert!(error.contains("demo") && error.contains("9.9.9"), "{error}");
    hub.stop().await;
}

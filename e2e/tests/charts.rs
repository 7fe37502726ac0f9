//! The Helm charts with Helm's own engine (PyPI helm-python-sdk, driven by e2e/helm_chart.py):
//! they lint and render, bad values fail at render time with a schema error, the agent chart's
//! env names only flags the agent reads, and the rendered agent chart applied with the real
//! kubectl to kubesim carries everything an agent needs: an agent started with exactly the
//! Deployment's env and mounted files registers with its token, reconciles its assignment, and
//! after a restart comes back from its credentials Secret alone. The hub chart's ssh credentials
//! reach gix through the GIT_SSH_COMMAND it sets.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use convoy_e2e::chart_sources::helm_sdk;
use convoy_e2e::fleet_repo::standard_fleet;
use convoy_e2e::harness::{HubProcess, InProcessHub, Process, TestCa, eventually, wait_connected, workspace_binary};
use convoy_render::helm::fetch::Credential;
use convoy_shared::identity::Role;
use convoy_shared::proto::CreateTokenRequest;
use kubesim::SimFleet;
use serde_json::{Value, json};

const NS: &str = "convoy-system";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs e2e/helm_chart.py `command` on `chart` with `values`.
fn helm(command: &str, chart: &str, values: Value) -> Value {
    helm_sdk(
        command,
        &workspace().join("charts").join(chart),
        json!({"values": values, "name": "convoy", "namespace": NS}),
    )
}

/// Rendered objects (NOTES.txt left out), parsed.
fn render(chart: &str, values: Value) -> Vec<Value> {
    let out = helm("render", chart, values);
    assert_eq!(out["ok"], true, "{out}");
    let mut objects = Vec::new();
    for (path, text) in out["manifests"].as_object().unwrap() {
        if path.ends_with("NOTES.txt") {
            continue;
        }
        for doc in text.as_str().unwrap().split("\n---") {
            let doc: Value = serde_saphyr::from_str(doc).unwrap_or(Value::Null);
            if doc.is_object() {
                objects.push(doc);
            }
        }
    }
    objects
}

fn agent_values(hub: &str, ca_pem: &str, token: &str) -> Value {
    json!({"hub": {"address": hub, "ca": ca_pem}, "bootstrap": {"token": token}})
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn both_charts_lint_clean_with_helm() {
    let ca = TestCa::new();
    let agent = helm("lint", "convoy-agent", agent_values("hub.example.com:7443", ca.ca.cert_pem(), "cvt_x"));
    let errors: Vec<_> = agent["lint"]["messages"].as_array().unwrap().iter().filter(|m| m["severity"] == 3).collect();
    assert!(errors.is_empty(), "{agent}");
    let hub = helm(
        "lint",
        "convoy-hub",
        json!({"repo": {"url": "ssh://git@example.com/fleet.git"}, "certs": {"existingSecret": "hub-certs"}}),
    );
    let errors: Vec<_> = hub["lint"]["messages"].as_array().unwrap().iter().filter(|m| m["severity"] == 3).collect();
    assert!(errors.is_empty(), "{hub}");
    let objects = render(
        "convoy-hub",
        json!({"repo": {"url": "ssh://x/y"}, "certs": {"existingSecret": "c"}, "webhook": {"secret": "s"},
               "otlpEndpoint": "https://otel:4317", "otlpCa": ca.ca.cert_pem()}),
    );
    let sts = find(&objects, "StatefulSet")[0];
    let help = Command::new(workspace_binary("convoy-hub")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    for name in env.iter().filter_map(|e| e["name"].as_str()).filter(|n| n.starts_with("CONVOY_")) {
        assert!(help.contains(&format!("[env: {name}")), "the chart sets {name}, which convoy-hub does not read");
    }
    assert!(env.contains(&json!({"name": "CONVOY_OTLP_ENDPOINT", "value": "https://otel:4317"})), "{env:?}");
    // CONVOY_OTLP_CA names a file the pod has: the ConfigMap with the CA, mounted there.
    assert!(env.contains(&json!({"name": "CONVOY_OTLP_CA", "value": "/etc/convoy/otlp/ca.crt"})), "{env:?}");
    let config_map = find(&objects, "ConfigMap").into_iter().find(|c| c["data"]["ca.crt"].is_string()).expect("CA");
    assert_eq!(config_map["data"]["ca.crt"].as_str().unwrap().trim(), ca.ca.cert_pem().trim());
    let pod = &sts["spec"]["template"]["spec"];
    let volume =
        pod["volumes"].as_array().unwrap().iter().find(|v| v["configMap"]["name"] == config_map["metadata"]["name"]);
    let mount =
        pod["containers"][0]["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == volume.unwrap()["name"]);
    assert_eq!(mount.expect("the CA is mounted")["mountPath"], "/etc/convoy/otlp");
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data");

    // https:// with a token from the chart's Secret and a private CA.
    let objects = render(
        "convoy-hub",
        json!({"repo": {"url": "https://git.example.com/fleet.git"}, "certs": {"existingSecret": "c"},
               "git": {"username": "convoy", "token": "glpat-x", "caCert": ca.ca.cert_pem()}}),
    );
    let sts = find(&objects, "StatefulSet")[0];
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    for name in env.iter().filter_map(|e| e["name"].as_str()).filter(|n| n.starts_with("CONVOY_")) {
        assert!(help.contains(&format!("[env: {name}")), "the chart sets {name}, which convoy-hub does not read");
    }
    assert!(env.contains(&json!({"name": "CONVOY_GIT_USERNAME", "value": "convoy"})), "{env:?}");
    assert!(env.contains(&json!({"name": "CONVOY_GIT_PASSWORD_FILE", "value": "/etc/convoy/git/token"})), "{env:?}");
    assert!(env.contains(&json!({"name": "CONVOY_GIT_CA", "value": "/etc/convoy/git-ca/ca.crt"})), "{env:?}");
    assert!(!env.iter().any(|e| e["name"] == "GIT_SSH_COMMAND"), "{env:?}");
    let secret = find(&objects, "Secret").into_iter().find(|s| s["data"]["token"].is_string()).expect("git Secret");
    assert!(secret["data"]["identity"].is_null(), "{secret}");
    let pod = &sts["spec"]["template"]["spec"];
    let git_volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "git").expect("git volume");
    assert_eq!(git_volume["secret"]["secretName"], secret["metadata"]["name"]);
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let mount_of = |name: &str| mounts.iter().find(|m| m["name"] == name).map(|m| m["mountPath"].clone());
    assert_eq!(mount_of("git"), Some(json!("/etc/convoy/git")));
    assert_eq!(mount_of("git-ca"), Some(json!("/etc/convoy/git-ca")));
    let ports: Vec<_> =
        find(&objects, "Service")[0]["spec"]["ports"].as_array().unwrap().iter().map(|p| p["port"].clone()).collect();
    assert_eq!(ports, [json!(7443), json!(8080)]);
}

#[test]
fn the_hub_chart_turns_on_single_sign_on_and_the_dashboard() {
    let objects = render(
        "convoy-hub",
        json!({"repo": {"url": "ssh://x/y"}, "certs": {"existingSecret": "c"},
               "oidc": {"issuer": "https://id.example.com", "clientId": "convoy"},
               "dashboard": {"enabled": true, "url": "https://convoy.example.com", "clientId": "convoy-web",
                             "existingSecret": "convoy-web-client", "tlsSecret": "convoy-web-tls"},
               "notifications": {"secretName": "convoy-notify"}}),
    );
    let sts = find(&objects, "StatefulSet")[0];
    let help = Command::new(workspace_binary("convoy-hub")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    for name in env.iter().filter_map(|e| e["name"].as_str()).filter(|n| n.starts_with("CONVOY_")) {
        assert!(help.contains(&format!("[env: {name}")), "the chart sets {name}, which convoy-hub does not read");
    }
    for (name, value) in [
        ("CONVOY_OIDC_ISSUER", "https://id.example.com"),
        ("CONVOY_OIDC_CLIENT_ID", "convoy"),
        ("CONVOY_UI_LISTEN", "0.0.0.0:8443"),
        ("CONVOY_UI_URL", "https://convoy.example.com"),
        ("CONVOY_UI_CLIENT_ID", "convoy-web"),
        ("CONVOY_UI_CLIENT_SECRET_FILE", "/etc/convoy/dashboard/client-secret"),
        ("CONVOY_UI_TLS_CERT", "/etc/convoy/dashboard-tls/tls.crt"),
        ("CONVOY_SECRETS_DIR", "/etc/convoy/secrets"),
    ] {
        assert!(env.contains(&json!({"name": name, "value": value})), "{name}: {env:?}");
    }
    let pod = &sts["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    for (volume, secret, path) in [
        ("dashboard", "convoy-web-client", "/etc/convoy/dashboard"),
        ("dashboard-tls", "convoy-web-tls", "/etc/convoy/dashboard-tls"),
        ("secrets", "convoy-notify", "/etc/convoy/secrets"),
    ] {
        assert!(volumes.iter().any(|v| v["name"] == volume && v["secret"]["secretName"] == secret), "{volumes:?}");
        assert!(mounts.iter().any(|m| m["name"] == volume && m["mountPath"] == path), "{mounts:?}");
    }
    let ports: Vec<_> =
        find(&objects, "Service")[0]["spec"]["ports"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(ports, [json!("grpc"), json!("http"), json!("https")]);

    // The dashboard without a provider, or without its URL, fails at render time and says why.
    for (values, says) in [
        (json!({"dashboard": {"enabled": true, "url": "https://c.example.com"}}), "needs oidc.issuer"),
        (
            json!({"oidc": {"issuer": "https://id.example.com", "clientId": "c"}, "dashboard": {"enabled": true}}),
            "dashboard.url",
        ),
    ] {
        let mut all = json!({"repo": {"url": "ssh://x/y"}, "certs": {"existingSecret": "c"}});
        all.as_object_mut().unwrap().extend(values.as_object().unwrap().clone());
        let refused = helm("render", "convoy-hub", all);
        assert!(refused["ok"] != true && refused["error"].as_str().unwrap_or_default().contains(says), "{refused}");
    }
}

/// The chart's `charts:` values become the files and flags the hub reads: a hub started with
/// exactly what the StatefulSet sets (the credentials Secret and the CA written out where the pod
/// mounts them) starts, and the credentials it would send are those in the values.
#[test]
fn the_hub_chart_hands_chart_credentials_to_the_hub() {
    let ca = TestCa::new();
    let credentials = json!([
        {"host": "registry.example.com", "username": "robot", "password": "s3cret"},
        {"host": "charts.example.com:8443", "token": "t0ken"},
    ]);
    let objects = render(
        "convoy-hub",
        json!({"repo": {"url": "ssh://x/y"}, "certs": {"existingSecret": "c"},
               "charts": {"credentials": credentials, "caCert": ca.ca.cert_pem(),
                          "plainHttp": ["registry.internal:5000", "10.0.0.1"]}}),
    );
    let sts = find(&objects, "StatefulSet")[0];
    let pod = &sts["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let value_of =
        |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].as_str().unwrap().to_string());
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let mount_of = |name: &str| mounts.iter().find(|m| m["name"] == name).map(|m| m["mountPath"].clone());
    assert_eq!(value_of("CONVOY_CHART_CREDENTIALS").as_deref(), Some("/etc/convoy/charts/credentials.yaml"));
    assert_eq!(value_of("CONVOY_CHART_CA").as_deref(), Some("/etc/convoy/charts-ca/ca.crt"));
    assert_eq!(value_of("CONVOY_CHART_PLAIN_HTTP").as_deref(), Some("registry.internal:5000,10.0.0.1"));
    assert_eq!(mount_of("charts"), Some(json!("/etc/convoy/charts")));
    assert_eq!(mount_of("charts-ca"), Some(json!("/etc/convoy/charts-ca")));
    let secret = find(&objects, "Secret")
        .into_iter()
        .find(|s| s["data"]["credentials.yaml"].is_string())
        .expect("charts Secret");
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "charts").expect("charts volume");
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
    let ca_map =
        find(&objects, "ConfigMap").into_iter().find(|c| c["metadata"]["name"] == "convoy-convoy-hub-charts-ca");
    assert_eq!(
        ca_map.expect("charts CA ConfigMap")["data"]["ca.crt"].as_str().unwrap().trim(),
        ca.ca.cert_pem().trim()
    );

    // What the pod would hold, where the flags point.
    let files = tempfile::tempdir().unwrap();
    let credentials_file = files.path().join("credentials.yaml");
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(secret["data"]["credentials.yaml"].as_str().unwrap());
    std::fs::write(&credentials_file, decoded.unwrap()).unwrap();
    std::fs::write(files.path().join("ca.crt"), ca.ca.cert_pem()).unwrap();
    let read = Credential::load_file(&credentials_file).expect("the hub reads the chart's credentials file");
    let read: Vec<_> = read.iter().map(|c| (c.host.as_str(), c.username.as_deref(), c.password.as_deref())).collect();
    assert_eq!(
        read,
        [("registry.example.com", Some("robot"), Some("s3cret")), ("charts.example.com:8443", None, Some("t0ken"))]
    );
    let hub = HubProcess::start_with(
        &ca.certs.0,
        "127.0.0.1:0",
        "info",
        &[
            "--chart-credentials",
            credentials_file.to_str().unwrap(),
            "--chart-ca",
            files.path().join("ca.crt").to_str().unwrap(),
            "--chart-plain-http",
            &value_of("CONVOY_CHART_PLAIN_HTTP").unwrap(),
        ],
    );
    assert!(hub.log_lines("ERROR").is_empty(), "{:?}", hub.process.log());

    let refused = helm(
        "render",
        "convoy-hub",
        json!({"repo": {"url": "ssh://x/y"}, "certs": {"existingSecret": "c"},
               "charts": {"credentials": [{"host": "registry.example.com", "username": "robot"}]}}),
    );
    assert_eq!(refused["kind"], "HelmValuesError", "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("/charts/credentials/0"), "{refused}");
}

#[test]
fn bad_values_fail_at_render_time_with_a_schema_error() {
    let ca = TestCa::new();
    let missing = helm("render", "convoy-agent", json!({"hub": {"ca": ca.ca.cert_pem()}, "bootstrap": {"token": "t"}}));
    assert_eq!(missing["kind"], "HelmValuesError", "{missing}");
    assert!(missing["error"].as_str().unwrap().contains("/hub/address"), "{missing}");
    let no_port = helm("render", "convoy-agent", agent_values("hub.example.com", ca.ca.cert_pem(), "t"));
    assert_eq!(no_port["kind"], "HelmValuesError", "{no_port}");
    let bad_ca = helm("render", "convoy-agent", agent_values("hub.example.com:7443", "not a certificate", "t"));
    assert_eq!(bad_ca["kind"], "HelmValuesError", "{bad_ca}");
    assert!(bad_ca["error"].as_str().unwrap().contains("/hub/ca"), "{bad_ca}");
    let no_repo = helm("render", "convoy-hub", json!({}));
    assert_eq!(no_repo["kind"], "HelmValuesError", "{no_repo}");
    // The binaries refuse a collector address without http:// or https://; so do the charts.
    let mut no_scheme = agent_values("hub.example.com:7443", ca.ca.cert_pem(), "t");
    no_scheme["otlpEndpoint"] = json!("otel:4317");
    let refused = helm("render", "convoy-agent", no_scheme);
    assert!(refused["error"].as_str().unwrap_or_default().contains("/otlpEndpoint"), "{refused}");
    let hub = json!({"repo": {"url": "ssh://x/y"}, "certs": {"existingSecret": "c"}, "otlpEndpoint": "otel:4317"});
    let refused = helm("render", "convoy-hub", hub);
    assert!(refused["error"].as_str().unwrap_or_default().contains("/otlpEndpoint"), "{refused}");
}

/// The value the rendered Deployment or StatefulSet gives env variable `name`, if any.
fn env_of(objects: &[Value], kind: &str, name: &str) -> Option<Value> {
    let env = find(objects, kind)[0]["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
    env.into_iter().find(|e| e["name"] == name)
}

#[test]
fn agents_take_several_hub_replicas_and_hub_replicas_require_postgres() {
    let ca = TestCa::new();
    let hubs = |address: &str, addresses: Value| json!({"hub": {"address": address, "addresses": addresses, "ca": ca.ca.cert_pem()}, "bootstrap": {"token": "t"}});
    let objects = render("convoy-agent", hubs("", json!(["hub-0.hub:7443", "hub-1.hub:7443"])));
    let hub = env_of(&objects, "Deployment", "CONVOY_HUB").unwrap();
    assert_eq!(hub["value"], "hub-0.hub:7443,hub-1.hub:7443");
    let objects = render("convoy-agent", hubs("hub:7443", json!(["other:7443"])));
    assert_eq!(env_of(&objects, "Deployment", "CONVOY_HUB").unwrap()["value"], "hub:7443,other:7443");
    let none = helm("render", "convoy-agent", hubs("", json!([])));
    assert_eq!(none["kind"], "HelmValuesError", "{none}");
    assert!(none["error"].as_str().unwrap().contains("/hub"), "{none}");
    let no_port = helm("render", "convoy-agent", hubs("", json!(["hub-0.hub"])));
    assert!(no_port["error"].as_str().unwrap_or_default().contains("/hub/addresses/0"), "{no_port}");

    let hub = |replicas: u32, postgres: Value| {
        json!({"repo": {"url": "ssh://x/y"}, "certs": {"existingSecret": "c"}, "replicas": replicas,
               "store": {"postgres": postgres}})
    };
    let refused = helm("render", "convoy-hub", hub(2, json!({})));
    assert_eq!(refused["kind"], "HelmValuesError", "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("/store/postgres"), "{refused}");
    let bad_url = helm("render", "convoy-hub", hub(1, json!({"url": "mysql://db/convoy"})));
    assert!(bad_url["error"].as_str().unwrap_or_default().contains("/store/postgres/url"), "{bad_url}");
    let single = render("convoy-hub", hub(1, json!({})));
    assert_eq!(find(&single, "StatefulSet")[0]["spec"]["replicas"], 1);
    assert!(env_of(&single, "StatefulSet", "CONVOY_STORE").is_none(), "redb stays the default");

    let url = "postgres://convoy:pw@db:5432/convoy";
    let replicated = render("convoy-hub", hub(3, json!({"url": url})));
    assert_eq!(find(&replicated, "StatefulSet")[0]["spec"]["replicas"], 3);
    let store = env_of(&replicated, "StatefulSet", "CONVOY_STORE").expect("CONVOY_STORE");
    let secret = store["valueFrom"]["secretKeyRef"]["name"].clone();
    let kept = find(&replicated, "Secret").into_iter().find(|s| s["metadata"]["name"] == secret).expect("the Secret");
    assert_eq!(kept["data"]["url"], base64::engine::general_purpose::STANDARD.encode(url));
    let existing = render("convoy-hub", hub(2, json!({"existingSecret": "pg"})));
    let store = env_of(&existing, "StatefulSet", "CONVOY_STORE").expect("CONVOY_STORE");
    assert_eq!(store["valueFrom"]["secretKeyRef"], json!({"name": "pg", "key": "url"}));
    let help = Command::new(workspace_binary("convoy-hub")).args(["serve", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("[env: CONVOY_STORE"), "convoy-hub reads CONVOY_STORE");
}

#[test]
fn the_agent_deployment_is_locked_down_and_sets_only_what_the_agent_reads() {
    let ca = TestCa::new();
    let help = Command::new(workspace_binary("convoy-agent")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut traced = agent_values("hub.example.com:7443", ca.ca.cert_pem(), "t");
    traced["otlpEndpoint"] = json!("https://otel-collector:4317");
    traced["otlpCa"] = json!(ca.ca.cert_pem());
    traced["sops"] = json!({"ageKeySecret": "convoy-agent-sops"});
    for (values_traced, values) in [
        (true, traced),
        (
            false,
            json!({"hub": {"address": "h:1", "ca": ca.ca.cert_pem(), "serverName": "hub"}, "cluster": "c",
               "certificate": {"cert": ca.ca.cert_pem(), "key": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"},
               "rbac": {"mode": "namespaced", "namespaces": ["a", "b"]}}),
        ),
    ] {
        let objects = render("convoy-agent", values);
        let deployment = find(&objects, "Deployment")[0];
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let container = &pod["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert!(container["resources"]["requests"]["memory"].is_string());
        for env in container["env"].as_array().unwrap() {
            let name = env["name"].as_str().unwrap();
            assert!(help.contains(&format!("[env: {name}")), "the chart sets {name}, which convoy-agent does not read");
        }
        let otlp = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "CONVOY_OTLP_ENDPOINT").cloned();
        assert_eq!(otlp.is_some(), values_traced, "{container}");
        if values_traced {
            // CONVOY_OTLP_CA names a key of the CA ConfigMap the pod mounts at /etc/convoy/ca.
            let env = container["env"].as_array().unwrap();
            assert!(env.contains(&json!({"name": "CONVOY_OTLP_CA", "value": "/etc/convoy/ca/otlp-ca.crt"})), "{env:?}");
            let ca_map = find(&objects, "ConfigMap")[0];
            assert_eq!(ca_map["data"]["otlp-ca.crt"].as_str().unwrap().trim(), ca.ca.cert_pem().trim());
            // The age key Secret is mounted read-only where CONVOY_SOPS_AGE_KEY_FILE points.
            let key_file = "/etc/convoy/sops/age.agekey";
            assert!(env.contains(&json!({"name": "CONVOY_SOPS_AGE_KEY_FILE", "value": key_file})), "{env:?}");
            let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "sops-age").unwrap();
            assert_eq!((&mount["mountPath"], &mount["readOnly"]), (&json!("/etc/convoy/sops"), &json!(true)));
            let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "sops-age").unwrap();
            assert_eq!(volume["secret"]["secretName"], "convoy-agent-sops");
        } else {
            assert!(!container.to_string().contains("SOPS"), "no sops.ageKeySecret, no key file: {container}");
        }
    }
    let namespaced = render(
        "convoy-agent",
        json!({"hub": {"address": "h:1", "ca": ca.ca.cert_pem()}, "bootstrap": {"token": "t"},
        "rbac": {"mode": "namespaced", "namespaces": ["a", "b"]}}),
    );
    assert!(find(&namespaced, "ClusterRole").is_empty());
    let roles: Vec<_> = find(&namespaced, "Role").iter().map(|r| r["metadata"]["namespace"].clone()).collect();
    assert_eq!(roles, [json!(NS), json!("a"), json!("b")]);
}

/// Starts convoy-agent with exactly the Deployment's env: values as given, the namespace from
/// the downward API, Secret keys from the cluster, and mounted ConfigMaps/Secrets written as
/// files under `root` (every absolute path in the env is taken relative to `root`).
fn start_agent_like_the_chart(objects: &[Value], cluster: &kubesim::SimCluster, root: &Path) -> Process {
    let deployment = find(objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for mount in container["volumeMounts"].as_array().unwrap() {
        let dir = root.join(mount["mountPath"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
        if let Some(name) = volume["configMap"]["name"].as_str() {
            let cm = cluster.get("v1", "ConfigMap", Some(NS), name).expect("the chart's ConfigMap was applied");
            for (key, value) in cm["data"].as_object().unwrap() {
                std::fs::write(dir.join(key), value.as_str().unwrap()).unwrap();
            }
        }
    }
    let mut command = Command::new(workspace_binary("convoy-agent"));
    command.env_clear().env("CONVOY_KUBECONFIG", cluster.kubeconfig_path()).env("RUST_LOG", "info");
    for env in container["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        let value = if let Some(v) = env["value"].as_str() {
            if v.starts_with('/') { root.join(v.trim_start_matches('/')).display().to_string() } else { v.to_string() }
        } else if env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace" {
            NS.to_string()
        } else if let Some(name) = env["valueFrom"]["secretKeyRef"]["name"].as_str() {
            let key = env["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
            let secret = cluster.get("v1", "Secret", Some(NS), name).expect("the chart's Secret was applied");
            let b64 = secret["data"][key].as_str().unwrap();
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
        } else {
            panic!("unhandled env {env}");
        };
        command.env(name, value);
    }
    Process::spawn(command)
}

#[tokio::test]
async fn the_rendered_agent_chart_applied_with_kubectl_registers_and_reconciles() {
    let ca = TestCa::new();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(repo_dir.path());
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let mut admin = ca.cli(&hub.address, Role::Admin).await;
    let token = admin
        .create_token(CreateTokenRequest { cluster: "dev-1".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .token;

    let fleet = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = fleet.cluster("dev-1").unwrap();
    let objects = render("convoy-agent", agent_values(&hub.address, ca.ca.cert_pem(), &token));
    // The agent's namespace, and the one the fleet's `web` app uses (the standard test fleet
    // does not ship its Namespace).
    let mut manifest = String::new();
    for ns in [NS, "web"] {
        manifest.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"));
    }
    for o in &objects {
        manifest.push_str("---\n");
        manifest.push_str(&serde_json::to_string(o).unwrap());
        manifest.push('\n');
    }
    let kubectl = std::env::var_os("CONVOY_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/kubectl"));
    // tokio's process: kubesim serves from this test's runtime, which must keep running.
    let mut apply = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["apply", "--server-side", "-f", "-"])
        .env("KUBECACHEDIR", cluster.kubeconfig_path().with_extension("cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs (run e2e/test.sh to install it)");
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = apply.stdin.take().unwrap();
        stdin.write_all(manifest.as_bytes()).await.unwrap();
    }
    let out = apply.wait_with_output().await.unwrap();
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    for (api, kind, ns, name) in [
        ("apps/v1", "Deployment", Some(NS), "convoy-convoy-agent"),
        ("v1", "ServiceAccount", Some(NS), "convoy-convoy-agent"),
        ("v1", "Secret", Some(NS), "convoy-convoy-agent-bootstrap"),
        ("v1", "ConfigMap", Some(NS), "convoy-convoy-agent-ca"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", None, "convoy-convoy-agent"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None, "convoy-convoy-agent"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", Some(NS), "convoy-convoy-agent-self"),
    ] {
        assert!(cluster.get(api, kind, ns, name).is_some(), "{kind} {name} missing after kubectl apply");
    }

    let root = tempfile::tempdir().unwrap();
    let connected = || wait_connected(&ca, &hub.address, "dev-1");
    let agent = start_agent_like_the_chart(&objects, cluster, root.path());
    connected().await;
    let secret = cluster.get("v1", "Secret", Some(NS), "convoy-convoy-agent-credentials").expect("credentials Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert!(secret["data"]["tls.key"].is_string() && secret["data"]["tls.crt"].is_string());
    eventually("web-config reconciled", || {
        let found = cluster.get("v1", "ConfigMap", Some("web"), "web-config").is_some();
        async move { found.then_some(()) }
    })
    .await;
    drop(agent);

    // Restarted, the agent comes back from the Secret: the token is spent and not needed.
    hub.hub.connections().disconnect("dev-1");
    let again = start_agent_like_the_chart(&objects, cluster, root.path());
    eventually("the restarted agent used its Secret", || {
        let seen = !again.log_lines("using the certificate from the credentials Secret").is_empty();
        async move { seen.then_some(()) }
    })
    .await;
    connected().await;
    drop(again);
    hub.stop().await;
}

/// Stands in for `ssh` (a Git server here has no sshd): records its arguments, answers the
/// `-G` probe gix makes, and runs the remote command (`git-upload-pack '/path'`) locally.
const FAKE_SSH: &str = r#"#!/bin/sh
echo "$*" >> "$0.log"
for a in "$@"; do [ "$a" = "-G" ] && exit 0; done
while [ $# -gt 0 ]; do
  case "$1" in
    -i|-o|-p|-l|-F) shift 2 ;;
    -*) shift ;;
    *) shift; break ;;
  esac
done
exec sh -c "$*"
"#;

#[test]
fn the_hub_chart_ssh_credentials_reach_gix() {
    let objects = render(
        "convoy-hub",
        json!({"repo": {"url": "ssh://git@git.example.com/fleet.git"}, "certs": {"existingSecret": "c"},
               "git": {"sshKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
                       "knownHosts": "git.example.com ssh-ed25519 AAAA"}}),
    );
    let sts = find(&objects, "StatefulSet")[0];
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    let ssh_command = env.iter().find(|e| e["name"] == "GIT_SSH_COMMAND").expect("GIT_SSH_COMMAND")["value"]
        .as_str()
        .unwrap()
        .to_string();

    // The chart's command, with our stand-in for the ssh binary, fetching a repository on disk.
    let dir = tempfile::tempdir().unwrap();
    let ssh = dir.path().join("ssh");
    std::fs::write(&ssh, FAKE_SSH).unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let repo = standard_fleet(&dir.path().join("fleet"));
    let url = format!("ssh://git@git.example.com{}", repo.dir.display());
    let ca = TestCa::new();
    let mut command = Command::new(workspace_binary("convoy-hub"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--repo", &url, "--certs"])
        .arg(&ca.certs.0)
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("GIT_SSH_COMMAND", ssh_command.replacen("ssh", ssh.to_str().unwrap(), 1))
        .env("RUST_LOG", "info");
    let hub = Process::spawn(command);
    let planned = hub.wait_for_line("planned");
    assert!(!planned.contains("published=0"), "the fleet was read over ssh: {planned}");
    let calls = std::fs::read_to_string(dir.path().join("ssh.log")).unwrap();
    let fetch = calls.lines().find(|l| l.contains("git-upload-pack")).expect("an upload-pack over ssh");
    for expected in [
        "-i /etc/convoy/git/identity",
        "-o UserKnownHostsFile=/etc/convoy/git/known_hosts",
        "-o StrictHostKeyChecking=yes",
        "git@git.example.com",
    ] {
        assert!(fetch.contains(expected), "ssh called without '{expected}': {fetch}");
    }
    let secret = find(&objects, "Secret").into_iter().find(|s| s["data"]["identity"].is_string()).expect("git Secret");
    let mounted = sts["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(mounted.contains(secret["metadata"]["name"].as_str().unwrap()), "the git Secret is mounted: {mounted}");
    let mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].to_string();
    assert!(mounts.contains("\"/etc/convoy/git\""), "where GIT_SSH_COMMAND looks: {mounts}");
}

#[test]
fn the_image_defaults_to_the_app_version_images_build_sh_tags_and_a_digest_pins_it() {
    let ca = TestCa::new();
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let hub_values = json!({"repo": {"url": "https://git.example.com/fleet.git"}, "certs": {"existingSecret": "c"}});
    for (chart, kind, values) in [
        ("convoy-agent", "Deployment", agent_values("hub.example.com:7443", ca.ca.cert_pem(), "t")),
        ("convoy-hub", "StatefulSet", hub_values),
    ] {
        let image = |image: Value| {
            let mut values = values.clone();
            values["image"] = image;
            let objects = render(chart, values);
            find(&objects, kind)[0]["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().to_string()
        };
        // images/build.sh tags each image with the crates' version: the chart's appVersion must be it.
        let chart_yaml = std::fs::read_to_string(workspace().join("charts").join(chart).join("Chart.yaml")).unwrap();
        let chart_yaml: Value = serde_saphyr::from_str(&chart_yaml).unwrap();
        assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"), "{chart}'s appVersion is not the image tag");
        assert_eq!(image(json!({})), format!("ghcr.io/convoy/{chart}:{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(image(json!({"tag": "0.2.0-rc.1"})), format!("ghcr.io/convoy/{chart}:0.2.0-rc.1"));
        let pinned = image(json!({"repository": "registry.example/convoy/x", "tag": "ignored", "digest": digest}));
        assert_eq!(pinned, format!("registry.example/convoy/x@{digest}"));
        for bad in [
            json!({"digest": "latest"}),
            json!({"digest": "sha256:abc"}),
            json!({"tag": "a b"}),
            json!({"digests": digest}),
        ] {
            let mut values = values.clone();
            values["image"] = bad.clone();
            let refused = helm("render", chart, values);
            assert_eq!(refused["kind"], "HelmValuesError", "{chart} took image {bad}: {refused}");
            assert!(refused["error"].as_str().unwrap().contains("/image"), "{refused}");
        }
    }
}

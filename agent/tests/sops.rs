//! SOPS on the agent, with fixtures encrypted by the real `sops` at test time: what sops writes
//! (YAML and JSON; encrypted_regex, unencrypted_regex, the suffix rule, --mac-only-encrypted;
//! int, bool and multi-line values) decrypts to what was encrypted, what we write
//! `sops --decrypt` reads, a changed file is refused; and on kubesim and a real kube-apiserver
//! an encrypted Secret applies
//! decrypted, its drift is reported without values, the cache and inventory hold no cleartext,
//! and an object that cannot be decrypted fails alone while nothing is pruned.

use std::path::Path;
use std::time::Duration;

use age::secrecy::ExposeSecret as _;
use convoy_agent::sops::{self, AgeKeys, EncryptRules, SopsError};
use convoy_agent::testing::{self as fx, InProcessAgent, NS, parse_manifest, settled, sops_decrypt, sops_encrypt};
use convoy_shared::model::report::Report;
use kubesim::scenario::{Backend, TestCluster};
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery-staple";
const CERT_LINE: &str = "MIIBszCCAVmgAwIBAgIUc0nv3r7";

struct Key {
    identity: age::x25519::Identity,
}

impl Key {
    fn new() -> Self {
        Key { identity: age::x25519::Identity::generate() }
    }
    fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }
    fn secret(&self) -> String {
        self.identity.to_string().expose_secret().to_string()
    }
    fn keys(&self) -> AgeKeys {
        AgeKeys::new(vec![self.secret().parse().unwrap()])
    }
}

/// A Secret manifest as a user writes it: a base64 `data` value and a multi-line `stringData` one.
fn secret_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NS}\ntype: Opaque\ndata:\n  \
         password: {}\nstringData:\n  tls.crt: |\n    -----BEGIN CERTIFICATE-----\n    {CERT_LINE}\n    \
         -----END CERTIFICATE-----\n",
        base64(PASSWORD)
    )
}

fn secret_cleartext(name: &str) -> Value {
    parse_manifest(&secret_yaml(name), "yaml")
}

/// A Widget whose spec holds an int, a bool, a float and a string.
fn widget_json(name: &str) -> String {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name, "namespace": NS},
        "spec": {"size": 3, "enabled": true, "ratio": 0.25, "owner": "team-a"}})
    .to_string()
}

const DATA_ONLY: &[&str] = &["--encrypted-regex", "^(data|stringData)$"];

#[test]
fn what_real_sops_writes_decrypts_to_what_was_encrypted() {
    let key = Key::new();
    let cases: [(String, &str, &[&str]); 6] = [
        (secret_yaml("a"), "yaml", DATA_ONLY),
        (secret_yaml("b"), "yaml", &["--unencrypted-suffix", "_unencrypted"]),
        (secret_yaml("r"), "yaml", &["--unencrypted-regex", "^(apiVersion|kind|metadata|type)$"]),
        (secret_yaml("m"), "yaml", &["--encrypted-regex", "^(data|stringData)$", "--mac-only-encrypted"]),
        (return_json(&secret_cleartext("c")), "json", &[]),
        (widget_json("w"), "json", &["--encrypted-regex", "^spec$"]),
    ];
    for (clear, format, flags) in cases {
        let encrypted = parse_manifest(&sops_encrypt(&clear, format, &key.recipient(), flags), format);
        assert!(sops::is_encrypted(&encrypted));
        let text = encrypted.to_string();
        assert!(!text.contains(&base64(PASSWORD)) && !text.contains(CERT_LINE) && !text.contains("team-a"));
        let opened = sops::decrypt(&encrypted, &key.keys()).unwrap_or_else(|e| panic!("{format} {flags:?}: {e}"));
        assert_eq!(opened, parse_manifest(&clear, format), "{format} {flags:?}");
    }
}

fn return_json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

#[test]
fn what_we_write_real_sops_decrypts() {
    let key = Key::new();
    let recipient: age::x25519::Recipient = key.recipient().parse().unwrap();
    for rules in [
        EncryptRules { encrypted_regex: Some("^(data|stringData)$".into()), ..Default::default() },
        EncryptRules::default(),
    ] {
        let ours = sops::encrypt(&secret_cleartext("s"), std::slice::from_ref(&recipient), &rules).unwrap();
        let text = sops_decrypt(&ours.to_string(), "json", &key.secret()).expect("sops --decrypt reads our file");
        assert_eq!(parse_manifest(&text, "json"), secret_cleartext("s"), "{rules:?}");
    }
    let widget = parse_manifest(&widget_json("w"), "json");
    let rules = EncryptRules { encrypted_regex: Some("^spec$".into()), ..Default::default() };
    let ours = sops::encrypt(&widget, &[recipient], &rules).unwrap();
    let text = sops_decrypt(&ours.to_string(), "json", &key.secret()).unwrap();
    assert_eq!(parse_manifest(&text, "json"), widget);
}

#[test]
fn a_changed_file_or_a_foreign_key_is_refused_and_the_error_says_why() {
    let key = Key::new();
    let encrypted = parse_manifest(&sops_encrypt(&secret_yaml("s"), "yaml", &key.recipient(), DATA_ONLY), "yaml");

    let mut renamed = encrypted.clone();
    renamed["metadata"]["name"] = json!("other");
    assert!(matches!(sops::decrypt(&renamed, &key.keys()), Err(SopsError::MacMismatch)));
    // Real sops agrees that the MAC no longer matches.
    let refused = sops_decrypt(&renamed.to_string(), "json", &key.secret()).unwrap_err();
    assert!(refused.contains("MAC mismatch"), "{refused}");

    let mut swapped = encrypted.clone();
    swapped["data"]["password"] = encrypted["stringData"]["tls.crt"].clone();
    let e = sops::decrypt(&swapped, &key.keys()).unwrap_err();
    assert!(matches!(e, SopsError::Tampered { ref path } if path == "data.password"), "{e}");

    let mut bad_mac = encrypted.clone();
    bad_mac["sops"]["lastmodified"] = json!("2020-01-01T00:00:00Z");
    assert!(matches!(sops::decrypt(&bad_mac, &key.keys()), Err(SopsError::MacUnreadable)));

    // Under --mac-only-encrypted the clear fields are outside the MAC: a namespace the render
    // adds is fine, an encrypted value swapped is not.
    let flags = ["--encrypted-regex", "^(data|stringData)$", "--mac-only-encrypted"];
    let mut lenient = parse_manifest(&sops_encrypt(&secret_yaml("s"), "yaml", &key.recipient(), &flags), "yaml");
    lenient["metadata"]["namespace"] = json!("elsewhere");
    assert_eq!(sops::decrypt(&lenient, &key.keys()).unwrap()["metadata"]["namespace"], "elsewhere");
    lenient["data"]["password"] = lenient["stringData"]["tls.crt"].clone();
    assert!(matches!(sops::decrypt(&lenient, &key.keys()), Err(SopsError::Tampered { .. })));

    let stranger = Key::new();
    let e = sops::decrypt(&encrypted, &stranger.keys()).unwrap_err().to_string();
    assert!(e.contains(&key.recipient()) && e.contains(&stranger.recipient()), "{e}");
    assert!(!e.contains(&base64(PASSWORD)));
}

fn widget_app(objects: Vec<Value>) -> convoy_shared::model::AppAssignment {
    let mut all = vec![fx::namespace(NS), fx::widget_crd()];
    all.extend(objects);
    fx::app("shop", &[], all)
}

fn files_under(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn report_until(agent: &InProcessAgent, what: &str, ok: impl Fn(&Report) -> bool) -> Report {
    for _ in 0..600 {
        if let Some(r) = agent.last_report().filter(|r| ok(r)) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:?}", agent.last_report());
}

kubesim::on_both_backends!(
    an_encrypted_secret_applies_decrypted_and_its_drift_is_reported_without_values,
    an_object_that_cannot_be_decrypted_fails_alone_and_nothing_is_pruned,
);

async fn an_encrypted_secret_applies_decrypted_and_its_drift_is_reported_without_values(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, "s1").await else { return };
    let cache = tempfile::tempdir().unwrap();
    let key = Key::new();
    let yaml = parse_manifest(&sops_encrypt(&secret_yaml("db"), "yaml", &key.recipient(), DATA_ONLY), "yaml");
    // The default rule: even kind and name are ciphertext until the agent decrypts.
    let whole =
        parse_manifest(&sops_encrypt(&return_json(&secret_cleartext("api")), "json", &key.recipient(), &[]), "json");
    let widget = parse_manifest(
        &sops_encrypt(&widget_json("w"), "json", &key.recipient(), &["--encrypted-regex", "^spec$"]),
        "json",
    );
    let a = fx::assignment("s1", "rev-1", vec![widget_app(vec![yaml, whole, widget])]);
    let mut config = fx::test_config("s1", cache.path());
    config.sops = key.keys();
    let agent = InProcessAgent::start(config, cluster.client().await, None);
    agent.assign(a.clone());
    settled(&agent, &a.digest).await;

    for name in ["db", "api"] {
        let live = cluster.get("v1", "Secret", Some(NS), name).await.expect("the Secret is applied");
        assert!(live.get("sops").is_none(), "the sops metadata is not applied");
        let text = live.to_string();
        assert!(!text.contains("ENC["), "{text}");
        assert_eq!(decode(live["data"]["password"].as_str().unwrap()), PASSWORD, "{live}");
        // stringData is write-only: the API server merges it into data.
        assert!(live.get("stringData").is_none(), "{live}");
        assert!(decode(live["data"]["tls.crt"].as_str().unwrap()).contains(CERT_LINE), "{live}");
    }
    let w = cluster.get("example.com/v1", "Widget", Some(NS), "w").await.unwrap();
    assert_eq!(w["spec"], json!({"size": 3, "enabled": true, "ratio": 0.25, "owner": "team-a"}));

    // Only ciphertext on disk and in the inventory.
    for bytes in files_under(cache.path()) {
        assert!(!contains(&bytes, &base64(PASSWORD)) && !contains(&bytes, CERT_LINE) && !contains(&bytes, "team-a"));
    }
    let inventory = serde_json::to_string(&cluster.list("v1", "ConfigMap", Some("convoy-system")).await).unwrap();
    assert!(!inventory.contains(&base64(PASSWORD)) && !inventory.contains(CERT_LINE));

    // Someone edits the Secret: the drift names the field and says so, without values.
    let edited = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": NS},
        "data": {"password": base64("intruder-value")}});
    cluster.apply("kubectl-edit", &edited, true).await;
    let report = report_until(&agent, "drift on db reported", |r| {
        r.drifts.iter().any(|d| d.object.name == "db" && !d.fields.is_empty())
    })
    .await;
    let drift = report.drifts.iter().find(|d| d.object.name == "db").unwrap();
    assert!(
        drift.fields.iter().any(|f| f.path == "data.password" && f.live == json!("secret value changed")),
        "{drift:?}"
    );
    let shown = format!("{report:?}");
    for plain in [PASSWORD, "intruder-value", &base64(PASSWORD), &base64("intruder-value")] {
        assert!(!shown.contains(plain), "the report carries a secret value: {shown}");
    }
    agent.stop().await;
}

async fn an_object_that_cannot_be_decrypted_fails_alone_and_nothing_is_pruned(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, "s2").await else { return };
    let cache = tempfile::tempdir().unwrap();
    let key = Key::new();
    let mut config = fx::test_config("s2", cache.path());
    config.sops = key.keys();
    let agent = InProcessAgent::start(config, cluster.client().await, None);
    let first = fx::assignment("s2", "rev-1", vec![widget_app(vec![fx::config_map("old", "v1")])]);
    agent.assign(first.clone());
    settled(&agent, &first.digest).await;

    // rev-2 drops "old" (prune would delete it), adds "new", and ships one Secret encrypted for
    // someone else and one whose value was swapped after sops wrote it.
    let stranger = Key::new();
    let foreign =
        parse_manifest(&sops_encrypt(&secret_yaml("foreign"), "yaml", &stranger.recipient(), DATA_ONLY), "yaml");
    let mut tampered =
        parse_manifest(&sops_encrypt(&secret_yaml("tampered"), "yaml", &key.recipient(), DATA_ONLY), "yaml");
    tampered["data"]["password"] = tampered["stringData"]["tls.crt"].clone();
    let second = fx::assignment("s2", "rev-2", vec![widget_app(vec![fx::config_map("new", "v1"), foreign, tampered])]);
    agent.assign(second.clone());
    let report = report_until(&agent, "both encrypted objects failed", |r| {
        r.digest == second.digest
            && r.apps.iter().flat_map(|a| &a.objects).filter(|o| o.apply_error.is_some()).count() == 2
    })
    .await;
    let errors: Vec<(String, String)> = report
        .apps
        .iter()
        .flat_map(|a| &a.objects)
        .filter_map(|o| o.apply_error.clone().map(|e| (o.object.name.clone(), e)))
        .collect();
    let foreign_error = &errors.iter().find(|(n, _)| n == "foreign").unwrap().1;
    assert!(
        foreign_error.contains(&stranger.recipient()) && foreign_error.contains(&key.recipient()),
        "{foreign_error}"
    );
    assert!(foreign_error.contains("Secret"), "the error names the object: {foreign_error}");
    let tampered_error = &errors.iter().find(|(n, _)| n == "tampered").unwrap().1;
    assert!(tampered_error.contains("data.password") && tampered_error.contains("changed"), "{tampered_error}");
    assert!(!report.applied);

    assert!(cluster.get("v1", "ConfigMap", Some(NS), "new").await.is_some(), "the rest of the app applies");
    assert!(cluster.get("v1", "ConfigMap", Some(NS), "old").await.is_some(), "nothing is pruned");
    for name in ["foreign", "tampered"] {
        assert!(cluster.get("v1", "Secret", Some(NS), name).await.is_none());
    }
    agent.stop().await;
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn decode(s: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

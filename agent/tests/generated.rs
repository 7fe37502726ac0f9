//! Keys and certificates a chart generates (`genCA`, `genSignedCert`, …), made by the agent, on
//! kubesim and on a real kube-apiserver: the tokens the hub rendered (as is and base64-encoded) become a CA and a certificate
//! it signed, kept in `convoy-system/convoy-generated`; no drift follows; a new agent (a restart
//! with an empty cache) applies the very same ones; another app gets its own.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use convoy_agent::testing::{self as fx, InProcessAgent, NS, settled};
use convoy_model::generated::{ANNOTATION, Kind, Part, Recipe};
use convoy_shared::model::AppAssignment;
use kubesim::scenario::{Backend, TestCluster};
use serde_json::{Value, json};

fn ca() -> Recipe {
    Recipe { days: 365, ..Recipe::new(Kind::Ca, 0, "shop-ca") }
}

fn signed() -> Recipe {
    Recipe {
        kind: Kind::Signed,
        call: 1,
        cn: "shop".into(),
        dns: vec!["shop.shop.svc".into()],
        signer: Some(Box::new(ca())),
        ..ca()
    }
}

/// What a chart like Elastic's renders at the hub: a TLS Secret and a ConfigMap with the CA.
fn app(name: &str) -> AppAssignment {
    let b64 = |recipe: Recipe, part| STANDARD.encode(recipe.token(part));
    let marked = json!({ANNOTATION: "true"});
    fx::app(
        name,
        &[],
        vec![
            fx::namespace(NS),
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": format!("{name}-tls"), "namespace": NS, "annotations": marked},
                "data": {"tls.crt": b64(signed(), Part::Cert), "tls.key": b64(signed(), Part::Key),
                         "ca.crt": b64(ca(), Part::Cert)}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("{name}-ca"), "namespace": NS, "annotations": marked},
                "data": {"ca.pem": ca().token(Part::Cert)}}),
        ],
    )
}

fn decoded(secret: &Value, key: &str) -> String {
    String::from_utf8(STANDARD.decode(secret["data"][key].as_str().expect("data")).expect("base64")).expect("utf-8")
}

async fn tls(cluster: &TestCluster, name: &str) -> Value {
    cluster.get("v1", "Secret", Some(NS), &format!("{name}-tls")).await.expect("the Secret is applied")
}

kubesim::on_both_backends!(generated_keys_are_made_in_the_cluster_once_kept_and_signed_by_their_ca);

async fn generated_keys_are_made_in_the_cluster_once_kept_and_signed_by_their_ca(backend: Backend) {
    let Some(cluster) = TestCluster::start(backend, "g1").await else { return };
    let cache = tempfile::tempdir().unwrap();
    let a = fx::assignment("g1", "rev-1", vec![app("web")]);
    let agent = InProcessAgent::start(fx::test_config("g1", cache.path()), cluster.client().await, None);
    agent.assign(a.clone());
    let report = settled(&agent, &a.digest).await;
    assert!(report.drifts.is_empty(), "{:?}", report.drifts);

    let secret = tls(&cluster, "web").await;
    let (cert, key, ca_pem) = (decoded(&secret, "tls.crt"), decoded(&secret, "tls.key"), decoded(&secret, "ca.crt"));
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----") && key.contains("PRIVATE KEY"), "{cert}\n{key}");
    let config = cluster.get("v1", "ConfigMap", Some(NS), "web-ca").await.expect("the ConfigMap is applied");
    assert_eq!(config["data"]["ca.pem"], ca_pem, "every token of one recipe is the same CA");
    let (_, ca_der) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).expect("CA PEM");
    let (_, leaf_der) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).expect("cert PEM");
    let (ca_cert, leaf) = (ca_der.parse_x509().expect("CA"), leaf_der.parse_x509().expect("cert"));
    assert!(ca_cert.is_ca());
    leaf.verify_signature(Some(ca_cert.public_key())).expect("the certificate is signed by the CA");
    assert!(!format!("{report:?}").contains("PRIVATE KEY"), "reports carry no key");

    let kept =
        cluster.get("v1", "Secret", Some("convoy-system"), "convoy-generated").await.expect("what was made is kept");
    assert_eq!(kept["data"].as_object().map(|d| d.len()), Some(2), "the CA and the certificate: {kept}");
    agent.stop().await;

    // A new agent with an empty cache (a reinstall) applies the very same CA and certificate.
    let fresh = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(fx::test_config("g1", fresh.path()), cluster.client().await, None);
    let b = fx::assignment("g1", "rev-2", vec![app("web"), app("api")]);
    agent.assign(b.clone());
    settled(&agent, &b.digest).await;
    assert_eq!(tls(&cluster, "web").await["data"], secret["data"], "the same material after a restart");
    // Another app's recipes are its own.
    assert_ne!(decoded(&tls(&cluster, "api").await, "ca.crt"), ca_pem);
    agent.stop().await;
}

//! Keys and certificates that charts generate (`genCA`, `genSignedCert`, …): the hub renders
//! tokens ([`convoy_model::generated`]) and this module makes what they stand for, here in the
//! cluster, and writes it in their place just before apply. So the hub never holds a private
//! key, and every render gives the same objects: no endless drift.
//!
//! Decisions:
//! - Made once per (app, recipe) and kept in the Secret `convoy-generated` in the agent's
//!   namespace (one key per recipe, JSON with `cert` and `key`), read once per agent run; a
//!   restarted or reinstalled agent finds them again.
//! - What is made is written to that Secret before it is used: when the write fails, the objects
//!   that need it are not applied this pass (retried), so a key is never applied and then lost.
//! - A signed certificate's CA is made (or found) first, under its own recipe, and signs it.
//! - Keys are ECDSA P-256 (Ed25519 when `genPrivateKey` asks); certificates carry serverAuth and
//!   clientAuth, as Sprig's do.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use tokio::sync::Mutex;

use convoy_model::generated::{self, Kind, Part, Recipe};

use crate::api_error::api_message;
use crate::fields::FIELD_MANAGER;
use crate::inventory::creating_namespace;

/// The Secret that keeps what was made.
pub const SECRET: &str = "convoy-generated";

/// A key and, for certificate recipes, its certificate, PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Material {
    #[serde(default)]
    cert: String,
    key: String,
}

/// Makes and keeps generated keys and certificates.
pub struct Generated {
    client: Client,
    namespace: String,
    /// What the Secret held when first read, plus what this run made (and wrote).
    held: Mutex<Option<BTreeMap<String, Material>>>,
}

impl Generated {
    /// Keeps its material in Secret [`SECRET`] in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Generated { client, namespace: namespace.to_string(), held: Mutex::new(None) }
    }

    /// `object` of `app` with every token filled with what it stands for (made now if it was
    /// never made). Objects the hub did not mark are returned as they are.
    pub async fn fill(&self, app: &str, object: &Value) -> Result<Option<Value>, String> {
        let marked = object.pointer(&format!("/metadata/annotations/{}", generated::ANNOTATION.replace('/', "~1")));
        if marked.is_none() {
            return Ok(None);
        }
        let wanted = generated::recipes(object);
        let mut held = self.held.lock().await;
        if held.is_none() {
            *held = Some(self.load().await?);
        }
        let material = held.as_mut().expect("loaded above");
        let mut made = BTreeMap::new();
        for recipe in &wanted {
            make(app, recipe, material, &mut made)?;
        }
        if !made.is_empty() {
            // The whole set: a server-side apply drops the entries this manager applied before
            // and leaves out now.
            let mut all = material.clone();
            all.extend(made);
            self.store(&all).await?;
            *material = all;
        }
        let mut filled = object.clone();
        generated::fill(&mut filled, &mut |recipe, part| {
            let m = material.get(&name(app, recipe)).ok_or_else(|| format!("nothing made for {:?}", recipe.kind))?;
            Ok::<_, String>(match part {
                Part::Cert => m.cert.clone(),
                Part::Key => m.key.clone(),
            })
        })?;
        Ok(Some(filled))
    }

    async fn load(&self) -> Result<BTreeMap<String, Material>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = api.get_opt(SECRET).await.map_err(|e| self.err(&api_message(&e)))?;
        let mut out = BTreeMap::new();
        for (key, bytes) in secret.and_then(|s| s.data).unwrap_or_default() {
            let material = serde_json::from_slice(&bytes.0)
                .map_err(|e| self.err(&format!("entry {key} is not what this agent wrote: {e}")))?;
            out.insert(key, material);
        }
        Ok(out)
    }

    /// Writes `all` to the Secret (server-side apply: the set this agent keeps, whole).
    async fn store(&self, all: &BTreeMap<String, Material>) -> Result<(), String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let data: serde_json::Map<String, Value> = all
            .iter()
            .map(|(k, m)| (k.clone(), Value::String(STANDARD.encode(serde_json::to_vec(m).unwrap_or_default()))))
            .collect();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "convoy-agent"}},
            "type": "Opaque",
            "data": data,
        });
        let params = PatchParams::apply(&format!("{FIELD_MANAGER}-generated")).force();
        let patch = Patch::Apply(&secret);
        creating_namespace(&self.client, &self.namespace, || async {
            api.patch(SECRET, &params, &patch).await.map(|_| ())
        })
        .await
        .map_err(|e| self.err(&api_message(&e)))
    }

    fn err(&self, message: &str) -> String {
        format!(
            "keeping generated keys in Secret {}/{SECRET}: {message}; the objects that need them are not applied until it works",
            self.namespace
        )
    }
}

/// Where `app`'s output of `recipe` is kept.
fn name(app: &str, recipe: &Recipe) -> String {
    format!("{app}.{}", recipe.id())
}

/// Makes what `recipe` stands for unless `held` or `made` has it, with its CA and key first.
fn make(
    app: &str,
    recipe: &Recipe,
    held: &BTreeMap<String, Material>,
    made: &mut BTreeMap<String, Material>,
) -> Result<(), String> {
    let key_name = name(app, recipe);
    if held.contains_key(&key_name) || made.contains_key(&key_name) {
        return Ok(());
    }
    for dependency in recipe.signer.iter().chain(&recipe.key) {
        make(app, dependency, held, made)?;
    }
    let find = |r: &Recipe| made.get(&name(app, r)).or_else(|| held.get(&name(app, r))).cloned();
    let fail = |e: rcgen::Error| format!("making a {:?} for {:?}: {e}", recipe.kind, recipe.cn);
    let key = match (&recipe.key, recipe.algorithm.as_str()) {
        (Some(key), _) => KeyPair::from_pem(&find(key).ok_or("the key was not made")?.key).map_err(fail)?,
        (None, "ed25519") => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(fail)?,
        (None, _) => KeyPair::generate().map_err(fail)?,
    };
    if recipe.kind == Kind::PrivateKey {
        made.insert(key_name, Material { cert: String::new(), key: key.serialize_pem() });
        return Ok(());
    }
    let params = params(recipe).map_err(fail)?;
    let cert = match &recipe.signer {
        Some(signer) => {
            let ca = find(signer).ok_or("the CA was not made")?;
            let ca_key = KeyPair::from_pem(&ca.key).map_err(fail)?;
            let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(fail)?;
            params.signed_by(&key, &issuer).map_err(fail)?
        }
        None => params.self_signed(&key).map_err(fail)?,
    };
    made.insert(key_name, Material { cert: cert.pem(), key: key.serialize_pem() });
    Ok(())
}

/// The certificate a recipe describes: its name, addresses, validity and uses.
fn params(recipe: &Recipe) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, recipe.cn.as_str());
    for dns in &recipe.dns {
        params.subject_alt_names.push(SanType::DnsName(dns.as_str().try_into()?));
    }
    for ip in &recipe.ips {
        if let Ok(ip) = ip.parse() {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + Duration::days(recipe.days.max(1));
    if recipe.kind == Kind::Ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    } else {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(kind: Kind, call: u32) -> Recipe {
        Recipe {
            ips: vec!["10.0.0.1".into()],
            dns: vec!["svc.ns.svc".into()],
            days: 30,
            ..Recipe::new(kind, call, "svc")
        }
    }

    #[test]
    fn a_signed_certificate_is_signed_by_its_ca_made_first() {
        let ca = Recipe { cn: "my-ca".into(), ips: vec![], dns: vec![], ..recipe(Kind::Ca, 0) };
        let signed = Recipe { signer: Some(Box::new(ca.clone())), ..recipe(Kind::Signed, 1) };
        let mut made = BTreeMap::new();
        make("web", &signed, &BTreeMap::new(), &mut made).expect("made");
        assert_eq!(made.len(), 2, "the CA and the certificate");
        let ca_pem = &made[&name("web", &ca)].cert;
        let leaf_pem = &made[&name("web", &signed)].cert;
        let (_, ca_der) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).expect("pem");
        let (_, leaf_der) = x509_parser::pem::parse_x509_pem(leaf_pem.as_bytes()).expect("pem");
        let ca_cert = ca_der.parse_x509().expect("ca");
        let leaf = leaf_der.parse_x509().expect("leaf");
        assert!(ca_cert.is_ca());
        assert_eq!(leaf.issuer(), ca_cert.subject());
        leaf.verify_signature(Some(ca_cert.public_key())).expect("signed by the CA");
        let sans = leaf.subject_alternative_name().expect("ext").expect("sans");
        assert_eq!(sans.value.general_names.len(), 2);

        // Made once: a second call with everything held makes nothing.
        let mut again = BTreeMap::new();
        make("web", &signed, &made, &mut again).expect("held");
        assert!(again.is_empty());
        // Another app gets its own.
        make("api", &signed, &made, &mut again).expect("made");
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn a_with_key_certificate_uses_the_generated_key() {
        let key = Recipe { algorithm: "ed25519".into(), ..recipe(Kind::PrivateKey, 0) };
        let cert = Recipe { key: Some(Box::new(key.clone())), ..recipe(Kind::SelfSigned, 1) };
        let mut made = BTreeMap::new();
        make("web", &cert, &BTreeMap::new(), &mut made).expect("made");
        assert_eq!(made[&name("web", &key)].key, made[&name("web", &cert)].key);
        assert!(made[&name("web", &key)].cert.is_empty());
    }
}

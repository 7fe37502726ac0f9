//! Sprig's key and certificate generators (`genCA`, `genSelfSignedCert`, `genSignedCert`,
//! `genPrivateKey` and the `…WithKey` forms) as Convoy runs them: the hub makes no key. Each call
//! returns what Helm's returns (a certificate with `.Cert` and `.Key`, or a PEM string) holding
//! tokens ([`convoy_model::generated`]) that the cluster's agent replaces with a key and
//! certificate it makes once and keeps, so the output is the same at every render and no private
//! key is at the hub.
//!
//! Decisions:
//! - Keys are ECDSA P-256 (Helm makes RSA 2048 for certificates): every TLS stack a chart
//!   configures takes them, and the agent makes them in microseconds. `genPrivateKey` takes
//!   `ecdsa` and `ed25519`; `rsa` and `dsa` are refused at render time, saying so.
//! - A `…WithKey` form takes the output of `genPrivateKey` only (a literal key would be a private
//!   key in Git).

use std::collections::BTreeMap;

use convoy_model::generated::{Kind, Part, Recipe};

use super::funcs::Generator;
use super::value::Value;

/// Runs generator `which` as the render's `call`-th generator call on `argv` (already checked
/// against its Go signature).
pub fn generate(which: Generator, call: u32, argv: &[Value]) -> Result<Value, String> {
    let text = |i: usize| argv.get(i).and_then(Value::as_str).unwrap_or("").to_string();
    let days = |i: usize| match argv.get(i) {
        Some(Value::Int(d) | Value::Int64(d)) => *d,
        _ => 0,
    };
    let base = |kind: Kind| Recipe::new(kind, call, &text(0));
    let with_names = |kind: Kind| -> Result<Recipe, String> {
        Ok(Recipe {
            ips: strings(argv.get(1), "IP addresses")?,
            dns: strings(argv.get(2), "DNS names")?,
            days: days(3),
            ..base(kind)
        })
    };
    let recipe = match which {
        Generator::PrivateKey => {
            let algorithm = text(0);
            if !matches!(algorithm.as_str(), "ecdsa" | "ed25519") {
                return Err(format!(
                    "Convoy's agents make ECDSA and Ed25519 keys, not {algorithm:?}: ask genPrivateKey for \"ecdsa\" or \"ed25519\""
                ));
            }
            let recipe = Recipe { cn: String::new(), algorithm, ..base(Kind::PrivateKey) };
            return Ok(Value::str(recipe.token(Part::Key)));
        }
        Generator::Ca => Recipe { days: days(1), ..base(Kind::Ca) },
        Generator::CaWithKey => Recipe { days: days(1), key: Some(Box::new(key_of(argv.get(2))?)), ..base(Kind::Ca) },
        Generator::SelfSigned => with_names(Kind::SelfSigned)?,
        Generator::SelfSignedWithKey => {
            Recipe { key: Some(Box::new(key_of(argv.get(4))?)), ..with_names(Kind::SelfSigned)? }
        }
        Generator::Signed => Recipe { signer: Some(Box::new(signer_of(argv.get(4))?)), ..with_names(Kind::Signed)? },
        Generator::SignedWithKey => Recipe {
            signer: Some(Box::new(signer_of(argv.get(4))?)),
            key: Some(Box::new(key_of(argv.get(5))?)),
            ..with_names(Kind::Signed)?
        },
    };
    Ok(certificate(&recipe))
}

/// Sprig's `certificate`: `.Cert` and `.Key`.
fn certificate(recipe: &Recipe) -> Value {
    Value::map(BTreeMap::from([
        ("Cert".to_string(), Value::str(recipe.token(Part::Cert))),
        ("Key".to_string(), Value::str(recipe.token(Part::Key))),
    ]))
}

/// A list of strings (IP addresses, DNS names); nil is none.
fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(Value::List(items)) => items
            .iter()
            .map(|item| item.as_str().map(String::from).ok_or_else(|| format!("{what} must be strings")))
            .collect(),
        Some(other) => Err(format!("{what} must be a list, not {}", other.type_name())),
    }
}

/// The CA a signed certificate names: a certificate `genCA` (or `genCAWithKey`) returned.
fn signer_of(v: Option<&Value>) -> Result<Recipe, String> {
    let cert = match v {
        Some(Value::Map(m)) => m.borrow().get("Cert").and_then(|c| c.as_str().map(String::from)),
        _ => None,
    };
    match cert.as_deref().and_then(Recipe::of_exact_token) {
        Some((recipe, Part::Cert)) if recipe.kind == Kind::Ca => Ok(recipe),
        _ => Err("the CA must be what genCA returned: Convoy signs with a CA its agent made, never with a key from values or Git".into()),
    }
}

/// The key a `…WithKey` form names: what `genPrivateKey` returned.
fn key_of(v: Option<&Value>) -> Result<Recipe, String> {
    match v.and_then(Value::as_str).and_then(Recipe::of_exact_token) {
        Some((recipe, Part::Key)) if recipe.kind == Kind::PrivateKey => Ok(recipe),
        _ => Err("the key must be what genPrivateKey returned: a private key from values or Git is what Convoy keeps out of renders".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(v: &Value, name: &str) -> String {
        match v {
            Value::Map(m) => m.borrow().get(name).and_then(|x| x.as_str().map(String::from)).unwrap_or_default(),
            _ => String::new(),
        }
    }

    #[test]
    fn a_signed_certificate_names_its_ca_and_calls_differ() {
        let ca = generate(Generator::Ca, 0, &[Value::str("my-ca"), Value::Int(365)]).expect("genCA");
        let names = Value::list(vec![Value::str("svc"), Value::str("svc.ns")]);
        let args = [Value::str("svc"), Value::Nil, names, Value::Int(30), ca.clone()];
        let signed = generate(Generator::Signed, 1, &args).expect("genSignedCert");
        let (recipe, part) = Recipe::of_exact_token(&field(&signed, "Key")).expect("a token");
        assert_eq!(part, Part::Key);
        assert_eq!((recipe.kind, recipe.dns.len(), recipe.days), (Kind::Signed, 2, 30));
        assert_eq!(recipe.signer.as_deref().map(|s| s.cn.as_str()), Some("my-ca"));
        // The same call again gives the same tokens (stable renders); another call another CA.
        assert_eq!(
            field(&ca, "Cert"),
            field(&generate(Generator::Ca, 0, &[Value::str("my-ca"), Value::Int(365)]).expect("genCA"), "Cert")
        );
        assert_ne!(
            field(&ca, "Cert"),
            field(&generate(Generator::Ca, 2, &[Value::str("my-ca"), Value::Int(365)]).expect("genCA"), "Cert")
        );
    }

    #[test]
    fn keys_from_values_and_rsa_are_refused_with_why() {
        let literal = [Value::str("cn"), Value::Int(1), Value::str("-----BEGIN PRIVATE KEY-----")];
        assert!(generate(Generator::CaWithKey, 0, &literal).expect_err("literal key").contains("genPrivateKey"));
        let not_a_ca = Value::map(BTreeMap::from([("Cert".to_string(), Value::str("PEM"))]));
        let args = [Value::str("svc"), Value::Nil, Value::Nil, Value::Int(30), not_a_ca];
        assert!(generate(Generator::Signed, 0, &args).expect_err("foreign CA").contains("genCA"));
        assert!(generate(Generator::PrivateKey, 0, &[Value::str("rsa")]).expect_err("rsa").contains("ecdsa"));
        let key = generate(Generator::PrivateKey, 0, &[Value::str("ecdsa")]).expect("ecdsa");
        let ca = generate(Generator::CaWithKey, 1, &[Value::str("cn"), Value::Int(1), key]).expect("with key");
        let (recipe, _) = Recipe::of_exact_token(&field(&ca, "Cert")).expect("token");
        assert_eq!(recipe.key.map(|k| k.algorithm), Some("ecdsa".to_string()));
    }
}

//! Keys and certificates a chart makes at render time (`genCA`, `genSelfSignedCert`,
//! `genSignedCert`, `genPrivateKey` and the `…WithKey` forms), made by each cluster's agent
//! instead of by the hub, so the hub never holds a private key and the output is the same at
//! every render.
//!
//! The hub's Helm engine prints a *token* where Helm prints PEM: `convoy-generated.v1.PART.RECIPE`,
//! with PART `cert` or `key` and RECIPE the base64url JSON of what to make ([`Recipe`]). A token
//! survives what templates do to PEM (`b64enc`, `quote`, `indent`, `trim`). Objects holding one,
//! as is or base64-encoded (a Secret's `data`, a webhook's `caBundle`), are marked with
//! [`ANNOTATION`]; the agent makes each recipe once per cluster and app, keeps what it made, and
//! writes it in place of the tokens just before applying.
//!
//! Decisions:
//! - Two calls with the same arguments make two keys, as in Helm: a recipe carries the render's
//!   call number.
//! - A signed certificate's recipe carries its signer's, so the agent makes (or finds) the CA
//!   first and signs with that very key.
//! - A `…WithKey` form takes a key from `genPrivateKey` only: a literal key from values would
//!   put a private key in Git and in every render, which this exists to avoid.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Marks an object holding a token: the agent looks for tokens in these objects only.
pub const ANNOTATION: &str = "convoy.dev/generated";

const PREFIX: &str = "convoy-generated.v1.";

/// What to make.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipe {
    pub kind: Kind,
    /// The render's generator call that asked (two identical calls make two keys).
    pub call: u32,
    /// Subject common name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cn: String,
    /// IP address SANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// DNS name SANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Days the certificate is valid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub days: i64,
    /// `genPrivateKey`'s algorithm.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm: String,
    /// The CA that signs a `Signed` certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Box<Recipe>>,
    /// The key a `…WithKey` certificate uses (a `PrivateKey` recipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Box<Recipe>>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The generator a recipe stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// `genCA`, `genCAWithKey`.
    Ca,
    /// `genSelfSignedCert`, `genSelfSignedCertWithKey`.
    SelfSigned,
    /// `genSignedCert`, `genSignedCertWithKey`.
    Signed,
    /// `genPrivateKey`.
    PrivateKey,
}

/// Which half of what a recipe makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The certificate, PEM.
    Cert,
    /// The private key, PEM.
    Key,
}

impl Part {
    fn word(self) -> &'static str {
        match self {
            Part::Cert => "cert",
            Part::Key => "key",
        }
    }
}

impl Recipe {
    /// A recipe for `kind` named `cn`, as the render's `call`-th generator call, with no
    /// addresses, validity, algorithm, signer or key yet.
    pub fn new(kind: Kind, call: u32, cn: &str) -> Recipe {
        Recipe {
            kind,
            call,
            cn: cn.to_string(),
            ips: Vec::new(),
            dns: Vec::new(),
            days: 0,
            algorithm: String::new(),
            signer: None,
            key: None,
        }
    }

    /// The token standing for `part` of what this recipe makes.
    pub fn token(&self, part: Part) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}.{}", part.word(), URL_SAFE_NO_PAD.encode(json))
    }

    /// A stable name for what this recipe makes (the agent keeps its output under it).
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(json).iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// The recipe a token names, with the part.
    fn of_token(token: &str) -> Option<(Recipe, Part)> {
        let rest = token.strip_prefix(PREFIX)?;
        let (part, recipe) = rest.split_once('.')?;
        let part = match part {
            "cert" => Part::Cert,
            "key" => Part::Key,
            _ => return None,
        };
        let json = URL_SAFE_NO_PAD.decode(recipe).ok()?;
        Some((serde_json::from_slice(&json).ok()?, part))
    }

    /// The recipe whose `part` a string holds, when it is exactly one token (a key passed on to
    /// a `…WithKey` generator).
    pub fn of_exact_token(text: &str) -> Option<(Recipe, Part)> {
        let (recipe, part) = Recipe::of_token(text)?;
        (recipe.token(part) == text).then_some((recipe, part))
    }
}

/// `text` with every token replaced by `fill(recipe, part)`; `None` when it holds none.
fn fill_text<E>(text: &str, fill: &mut dyn FnMut(&Recipe, Part) -> Result<String, E>) -> Option<Result<String, E>> {
    if !text.contains(PREFIX) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = PREFIX.len()
            + tail[PREFIX.len()..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
                .unwrap_or(tail.len() - PREFIX.len());
        match Recipe::of_token(&tail[..end]) {
            Some((recipe, part)) => match fill(&recipe, part) {
                Ok(pem) => out.push_str(&pem),
                Err(e) => return Some(Err(e)),
            },
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Some(Ok(out))
}

/// A string with its tokens filled, as is or inside standard base64; `None` when it holds none.
fn fill_string<E>(text: &str, fill: &mut dyn FnMut(&Recipe, Part) -> Result<String, E>) -> Option<Result<String, E>> {
    if let Some(done) = fill_text(text, fill) {
        return Some(done);
    }
    let decoded = String::from_utf8(STANDARD.decode(text.trim()).ok()?).ok()?;
    Some(fill_text(&decoded, fill)?.map(|filled| STANDARD.encode(filled)))
}

/// Fills every token in the strings of `object` (as is, or base64-encoded) with
/// `fill(recipe, part)`. Returns whether any was there.
pub fn fill<E>(object: &mut Value, fill: &mut dyn FnMut(&Recipe, Part) -> Result<String, E>) -> Result<bool, E> {
    match object {
        Value::String(s) => match fill_string(s, fill) {
            Some(filled) => {
                *s = filled?;
                Ok(true)
            }
            None => Ok(false),
        },
        Value::Array(items) => items.iter_mut().try_fold(false, |any, v| Ok(self::fill(v, fill)? || any)),
        Value::Object(map) => map.values_mut().try_fold(false, |any, v| Ok(self::fill(v, fill)? || any)),
        _ => Ok(false),
    }
}

/// The recipes of every token in the strings of `object` (as is, or base64-encoded), in order,
/// read without changing or copying the object.
pub fn recipes(object: &Value) -> Vec<Recipe> {
    fn walk(v: &Value, found: &mut Vec<Recipe>) {
        match v {
            Value::String(s) => {
                // Only what fill would replace is collected; the filled text is not kept.
                let _ = fill_string::<()>(s, &mut |recipe, _| {
                    found.push(recipe.clone());
                    Ok(String::new())
                });
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
            Value::Object(map) => map.values().for_each(|item| walk(item, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(object, &mut found);
    found
}

/// Whether `object` holds a token anywhere (as is, or base64-encoded).
pub fn holds_tokens(object: &Value) -> bool {
    !recipes(object).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> Recipe {
        Recipe { days: 365, ..Recipe::new(Kind::Ca, 0, "my-ca") }
    }

    #[test]
    fn tokens_round_trip_and_survive_base64_and_indentation() {
        let signed =
            Recipe { kind: Kind::Signed, call: 1, dns: vec!["svc".into()], signer: Some(Box::new(ca())), ..ca() };
        let cert = signed.token(Part::Cert);
        assert_eq!(Recipe::of_exact_token(&cert), Some((signed.clone(), Part::Cert)));
        assert_eq!(Recipe::of_exact_token(&format!("{cert}x")), None);
        let mut object = serde_json::json!({
            "data": {"tls.crt": STANDARD.encode(&cert), "ca.crt": STANDARD.encode(ca().token(Part::Cert))},
            "stringData": {"bundle": format!("  {}\n  {}\n", cert, signed.token(Part::Key))},
            "other": "plain", "n": 3,
        });
        assert!(holds_tokens(&object));
        let kinds: Vec<Kind> = recipes(&object).iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [Kind::Signed, Kind::Ca, Kind::Signed, Kind::Signed],
            "data's keys in order, then stringData's"
        );
        let mut seen = Vec::new();
        let any = fill::<()>(&mut object, &mut |r, p| {
            seen.push((r.kind, p));
            Ok(format!("<{:?} {:?}>", r.kind, p))
        });
        assert_eq!(any, Ok(true));
        assert_eq!(object["data"]["tls.crt"], STANDARD.encode("<Signed Cert>"));
        assert_eq!(object["data"]["ca.crt"], STANDARD.encode("<Ca Cert>"));
        assert_eq!(object["stringData"]["bundle"], "  <Signed Cert>\n  <Signed Key>\n");
        assert_eq!(object["other"], "plain");
        assert_eq!(seen.len(), 4);
        assert!(!holds_tokens(&object));
    }

    #[test]
    fn ids_differ_by_call_and_arguments() {
        let again = Recipe { call: 1, ..ca() };
        assert_ne!(ca().id(), again.id());
        assert_eq!(ca().id(), ca().id());
        assert_ne!(ca().id(), Recipe { days: 30, ..ca() }.id());
    }

    #[test]
    fn a_fill_error_stops_and_is_returned() {
        let mut object = serde_json::json!({"a": ca().token(Part::Key)});
        assert_eq!(fill(&mut object, &mut |_, _| Err("no")), Err("no"));
    }
}

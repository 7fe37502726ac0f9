//! SOPS: opens manifests that `sops` 3.x encrypted for age recipients, in the agent's memory,
//! just before apply. The hub and everything upstream of it only ever hold the ciphertext.
//!
//! The format, as sops writes it: a top-level `sops` key holds the metadata (`age[]` stanzas,
//! each an armored age file carrying the 32-byte data key; `lastmodified`; `mac`; the rules
//! deciding which keys were encrypted). Every encrypted leaf is
//! `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`: AES-256-GCM with a 32-byte nonce under the data
//! key, the leaf's path (map keys joined with `:`, plus a trailing `:`) as additional data. The
//! MAC is the upper-case hex SHA-512 of the cleartext leaves in document order (only the
//! encrypted ones under `mac_only_encrypted`), itself encrypted with `lastmodified` as
//! additional data.
//!
//! Nothing here logs or formats a cleartext value: errors name paths, recipients and files.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use regex::Regex;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha512};

/// The top-level key holding sops' metadata; it is never applied.
pub const METADATA_KEY: &str = "sops";

/// sops' default when a file names no rule: keys ending in it stay in clear.
const DEFAULT_UNENCRYPTED_SUFFIX: &str = "_unencrypted";

/// Seeds the MAC under `mac_only_encrypted`, so it never equals a MAC over every value
/// (sha256 of "sops", as sops defines it).
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b, 0x97, 0x5b,
    0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// AES-256-GCM with the 32-byte nonces sops uses.
type SopsGcm = AesGcm<Aes256, U32>;

/// Errors reading age keys or opening a sops document. None carries a cleartext value.
#[derive(Debug, thiserror::Error)]
pub enum SopsError {
    #[error("cannot read the age key file {path}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line} of the age key file {path} is not an age identity (AGE-SECRET-KEY-1…)")]
    BadIdentity { path: PathBuf, line: usize },
    #[error("the age key file {path} holds no age identity (AGE-SECRET-KEY-1… lines)")]
    NoIdentity { path: PathBuf },
    #[error(
        "encrypted with sops for {recipients}, but this agent has no age key; give it one with \
         --sops-age-key-file or the chart's sops.ageKeySecret"
    )]
    NoKey { recipients: String },
    #[error(
        "encrypted with sops for {recipients}, none of which is this agent's age identity \
         ({held}); add the agent's recipient to the file (sops updatekeys) or give the agent \
         the matching key"
    )]
    NotARecipient { recipients: String, held: String },
    #[error("the sops metadata is malformed: {0}")]
    Metadata(String),
    #[error("the value at {path} is not in sops' ENC[AES256_GCM,…] format: {reason}")]
    Format { path: String, reason: String },
    #[error(
        "the value at {path} does not decrypt: it was changed or moved after sops wrote it \
         (AES-GCM authentication failed)"
    )]
    Tampered { path: String },
    #[error("sops.mac does not decrypt: sops.mac or sops.lastmodified was changed after sops wrote the file")]
    MacUnreadable,
    #[error(
        "MAC mismatch: the file was changed after sops wrote it (a value added, removed, reordered \
         or edited; if the render changes clear fields such as the namespace or labels, put them \
         in the file before encrypting, or encrypt with --mac-only-encrypted)"
    )]
    MacMismatch,
}

/// Module result.
pub type Result<T, E = SopsError> = std::result::Result<T, E>;

/// The agent's age identities. Cheap to clone; `Debug` shows only the public recipients.
#[derive(Clone, Default)]
pub struct AgeKeys {
    identities: Arc<Vec<age::x25519::Identity>>,
}

impl fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeKeys").field("recipients", &self.recipients()).finish()
    }
}

impl AgeKeys {
    /// Keys from identities already at hand.
    pub fn new(identities: Vec<age::x25519::Identity>) -> Self {
        AgeKeys { identities: Arc::new(identities) }
    }

    /// Parses an age key file (as `age-keygen` writes it: `#` comments, one
    /// `AGE-SECRET-KEY-1…` per line); `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut identities = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The line itself is a secret: the error names only its number.
            let identity = age::x25519::Identity::from_str(line)
                .map_err(|_| SopsError::BadIdentity { path: path.to_path_buf(), line: i + 1 })?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err(SopsError::NoIdentity { path: path.to_path_buf() });
        }
        Ok(AgeKeys::new(identities))
    }

    /// Reads the age key file at `path` (at start-up, before the runtime serves anything).
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SopsError::KeyFile { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// The public recipients (`age1…`) of these identities.
    pub fn recipients(&self) -> Vec<String> {
        self.identities.iter().map(|i| i.to_public().to_string()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }
}

/// Does `object` carry sops metadata (a `sops` key with a `mac`)?
pub fn is_encrypted(object: &Value) -> bool {
    object.get(METADATA_KEY).and_then(|m| m.get("mac")).is_some_and(Value::is_string)
}

/// Which leaves sops encrypted, from the rules in the metadata.
#[derive(Debug, Default)]
struct Rules {
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<Regex>,
    encrypted_regex: Option<Regex>,
    mac_only_encrypted: bool,
}

impl Rules {
    fn of(meta: &Map<String, Value>) -> Result<Self> {
        let text = |k: &str| meta.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let regex = |k: &str| {
            text(k)
                .map(|r| Regex::new(&r).map_err(|e| SopsError::Metadata(format!("{k} is not a valid regex: {e}"))))
                .transpose()
        };
        for k in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if text(k).is_some() {
                return Err(SopsError::Metadata(format!(
                    "{k} is not supported: comments do not survive rendering, so the rule cannot be checked"
                )));
            }
        }
        let mut rules = Rules {
            unencrypted_suffix: text("unencrypted_suffix"),
            encrypted_suffix: text("encrypted_suffix"),
            unencrypted_regex: regex("unencrypted_regex")?,
            encrypted_regex: regex("encrypted_regex")?,
            mac_only_encrypted: meta.get("mac_only_encrypted").and_then(Value::as_bool).unwrap_or(false),
        };
        if rules.unencrypted_suffix.is_none()
            && rules.encrypted_suffix.is_none()
            && rules.unencrypted_regex.is_none()
            && rules.encrypted_regex.is_none()
        {
            rules.unencrypted_suffix = Some(DEFAULT_UNENCRYPTED_SUFFIX.into());
        }
        Ok(rules)
    }

    /// sops' `shouldBeEncrypted`: each rule looks at every key on the path, later rules win.
    fn encrypts(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(s) = &self.unencrypted_suffix
            && path.iter().any(|k| k.ends_with(s.as_str()))
        {
            encrypted = false;
        }
        if let Some(s) = &self.encrypted_suffix {
            encrypted = path.iter().any(|k| k.ends_with(s.as_str()));
        }
        if let Some(r) = &self.unencrypted_regex
            && path.iter().any(|k| r.is_match(k))
        {
            encrypted = false;
        }
        if let Some(r) = &self.encrypted_regex {
            encrypted = path.iter().any(|k| r.is_match(k));
        }
        encrypted
    }
}

/// The parts of one `ENC[AES256_GCM,…]` value.
struct Sealed {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: String,
}

fn enc_pattern() -> &'static Regex {
    static PATTERN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]").expect("the ENC pattern compiles")
    })
}

fn parse_sealed(text: &str, path: &str) -> Result<Sealed> {
    let format = |reason: &str| SopsError::Format { path: path.to_string(), reason: reason.to_string() };
    let caps =
        enc_pattern().captures(text).ok_or_else(|| format("expected ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]"))?;
    let b64 = |i: usize, what: &str| B64.decode(&caps[i]).map_err(|_| format(&format!("{what} is not base64")));
    Ok(Sealed { data: b64(1, "data")?, iv: b64(2, "iv")?, tag: b64(3, "tag")?, kind: caps[4].to_string() })
}

/// Decrypts one sealed value to its bytes, authenticated with `aad`.
fn open_bytes(sealed: &Sealed, key: &[u8; 32], aad: &str, path: &str) -> Result<Vec<u8>> {
    if sealed.iv.len() != 32 || sealed.tag.len() != 16 {
        return Err(SopsError::Format {
            path: path.to_string(),
            reason: "the iv must be 32 bytes and the tag 16".into(),
        });
    }
    let cipher = SopsGcm::new(GenericArray::from_slice(key));
    let mut msg = sealed.data.clone();
    msg.extend_from_slice(&sealed.tag);
    cipher
        .decrypt(Nonce::<U32>::from_slice(&sealed.iv), Payload { msg: &msg, aad: aad.as_bytes() })
        .map_err(|_| SopsError::Tampered { path: path.to_string() })
}

/// Decrypts one leaf and gives it the type sops recorded.
fn open_value(text: &str, key: &[u8; 32], path: &[String]) -> Result<Value> {
    let shown = path.join(".");
    if text.is_empty() {
        // sops leaves empty strings as they are.
        return Ok(Value::String(String::new()));
    }
    let sealed = parse_sealed(text, &shown)?;
    let aad = format!("{}:", path.join(":"));
    let bytes = open_bytes(&sealed, key, &aad, &shown)?;
    let format = |reason: String| SopsError::Format { path: shown.clone(), reason };
    let text = String::from_utf8(bytes).map_err(|_| format("the cleartext is not UTF-8".into()))?;
    Ok(match sealed.kind.as_str() {
        "str" | "bytes" => Value::String(text),
        "int" | "int64" => Value::from(text.parse::<i64>().map_err(|_| format(format!("not an {}", sealed.kind)))?),
        // sops' JSON store reads every number as a float and writes 3.0 as "3"; an integral
        // value stays an integer, as `sops --decrypt` prints it (Kubernetes refuses 3.0 for an
        // integer field).
        "float" if text.parse::<i64>().is_ok() => Value::from(text.parse::<i64>().unwrap_or_default()),
        "float" => {
            let f = text.parse::<f64>().map_err(|_| format("not a float".into()))?;
            serde_json::Number::from_f64(f).map(Value::Number).ok_or_else(|| format("not a finite float".into()))?
        }
        "bool" => Value::Bool(parse_go_bool(&text).ok_or_else(|| format("not a bool".into()))?),
        other => return Err(format(format!("unknown type {other}"))),
    })
}

/// Go's strconv.ParseBool, which sops uses.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The bytes sops hashes for a cleartext leaf (its `ToBytes`).
fn mac_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Bool(true) => b"True".to_vec(),
        Value::Bool(false) => b"False".to_vec(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string().into_bytes(),
            (_, Some(u), _) => u.to_string().into_bytes(),
            // Rust's shortest round-trip formatting without exponent, as Go's 'f', -1.
            (_, _, Some(f)) => format!("{f}").into_bytes(),
            _ => n.to_string().into_bytes(),
        },
        Value::Null | Value::Array(_) | Value::Object(_) => Vec::new(),
    }
}

/// Walks the document in order: decrypts the leaves the rules say were encrypted and feeds
/// the MAC.
struct Walk<'a> {
    rules: &'a Rules,
    key: &'a [u8; 32],
    mac: Sha512,
    path: Vec<String>,
}

impl Walk<'_> {
    fn value(&mut self, value: &mut Value) -> Result<()> {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.path.push(k.clone());
                    let r = self.value(v);
                    self.path.pop();
                    r?;
                }
            }
            // sops gives list items their list's path.
            Value::Array(items) => {
                for v in items {
                    self.value(v)?;
                }
            }
            // sops neither encrypts nor hashes nulls.
            Value::Null => {}
            leaf => {
                let encrypted = self.rules.encrypts(&self.path);
                if encrypted {
                    let Value::String(text) = leaf else {
                        return Err(SopsError::Format {
                            path: self.path.join("."),
                            reason: "sops encrypts this key, but the value is in clear".into(),
                        });
                    };
                    *leaf = open_value(text, self.key, &self.path)?;
                }
                if encrypted || !self.rules.mac_only_encrypted {
                    self.mac.update(mac_bytes(leaf));
                }
            }
        }
        Ok(())
    }
}

/// The age stanzas of the metadata: (recipient, armored age file).
fn age_stanzas(meta: &Map<String, Value>) -> Result<Vec<(String, String)>> {
    let Some(list) = meta.get("age").and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        let others: Vec<&str> = ["kms", "gcp_kms", "azure_kv", "hc_vault", "pgp"]
            .into_iter()
            .filter(|k| meta.get(*k).is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty())))
            .collect();
        return Err(SopsError::Metadata(if others.is_empty() {
            "no age recipients (sops.age is empty)".into()
        } else {
            format!("encrypted only for {} keys; the agent decrypts with age keys only", others.join(", "))
        }));
    };
    list.iter()
        .map(|s| {
            let field = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
            match (field("recipient"), field("enc")) {
                (Some(r), Some(e)) => Ok((r, e)),
                _ => Err(SopsError::Metadata("an age stanza lacks recipient or enc".into())),
            }
        })
        .collect()
}

/// The data key, from the first age stanza one of `keys` opens (stanzas for our own
/// recipients first).
fn data_key(stanzas: &[(String, String)], keys: &AgeKeys) -> Result<[u8; 32]> {
    let recipients = || stanzas.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ");
    if keys.is_empty() {
        return Err(SopsError::NoKey { recipients: recipients() });
    }
    let ours = keys.recipients();
    let mut order: Vec<&(String, String)> = stanzas.iter().filter(|(r, _)| ours.contains(r)).collect();
    order.extend(stanzas.iter().filter(|(r, _)| !ours.contains(r)));
    for (_, enc) in order {
        let Ok(decryptor) = age::Decryptor::new(age::armor::ArmoredReader::new(enc.as_bytes())) else {
            continue;
        };
        let Ok(mut reader) = decryptor.decrypt(keys.identities.iter().map(|i| i as &dyn age::Identity)) else {
            continue;
        };
        let mut key = Vec::new();
        if reader.read_to_end(&mut key).is_ok()
            && let Ok(key) = <[u8; 32]>::try_from(key.as_slice())
        {
            return Ok(key);
        }
    }
    Err(SopsError::NotARecipient { recipients: recipients(), held: ours.join(", ") })
}

/// Opens a sops-encrypted `object` with `keys`: the data key from its age stanzas, every
/// encrypted value, the MAC checked; the `sops` metadata key removed. The cleartext exists only
/// in the returned value.
pub fn decrypt(object: &Value, keys: &AgeKeys) -> Result<Value> {
    let Value::Object(doc) = object else {
        return Err(SopsError::Metadata("the document is not a map".into()));
    };
    let Some(Value::Object(meta)) = doc.get(METADATA_KEY) else {
        return Err(SopsError::Metadata("no sops key".into()));
    };
    let rules = Rules::of(meta)?;
    let key = data_key(&age_stanzas(meta)?, keys)?;
    let mut body: Map<String, Value> =
        doc.iter().filter(|(k, _)| k.as_str() != METADATA_KEY).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut walk = Walk { rules: &rules, key: &key, mac: Sha512::new(), path: Vec::new() };
    if rules.mac_only_encrypted {
        walk.mac.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    for (k, v) in body.iter_mut() {
        walk.path.push(k.clone());
        walk.value(v)?;
        walk.path.pop();
    }
    let computed = hex::encode_upper(walk.mac.finalize());
    let stored = meta.get("mac").and_then(Value::as_str).unwrap_or_default();
    let last_modified = meta
        .get("lastmodified")
        .and_then(Value::as_str)
        .ok_or_else(|| SopsError::Metadata("no lastmodified".into()))?;
    let sealed = parse_sealed(stored, "sops.mac")?;
    let mac = open_bytes(&sealed, &key, last_modified, "sops.mac").map_err(|_| SopsError::MacUnreadable)?;
    if mac != computed.as_bytes() {
        return Err(SopsError::MacMismatch);
    }
    Ok(Value::Object(body))
}

/// How [`encrypt`] chooses the values to encrypt (a subset of sops' creation rules).
#[derive(Debug, Clone, Default)]
pub struct EncryptRules {
    /// Only keys matching this are encrypted (sops `--encrypted-regex`).
    pub encrypted_regex: Option<String>,
    /// Keys ending in this stay in clear (sops `--unencrypted-suffix`); with no rule at all,
    /// sops' default `_unencrypted`.
    pub unencrypted_suffix: Option<String>,
}

/// Encrypts `object` for the age `recipients` in the format `sops` 3.x writes (checked in the
/// tests by the real `sops --decrypt`): used by the sandbox to write its example Secret when
/// no `sops` binary is at hand, and by tests.
pub fn encrypt(object: &Value, recipients: &[age::x25519::Recipient], rules: &EncryptRules) -> Result<Value> {
    use rand::RngCore as _;
    let Value::Object(doc) = object else {
        return Err(SopsError::Metadata("the document is not a map".into()));
    };
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let mut meta = Map::new();
    if let Some(r) = &rules.encrypted_regex {
        meta.insert("encrypted_regex".into(), Value::String(r.clone()));
    }
    if let Some(s) = &rules.unencrypted_suffix {
        meta.insert("unencrypted_suffix".into(), Value::String(s.clone()));
    }
    let parsed = Rules::of(&meta)?;
    let mut mac = Sha512::new();
    let mut body = doc.clone();
    body.shift_remove(METADATA_KEY);
    let mut path = Vec::new();
    for (k, v) in body.iter_mut() {
        path.push(k.clone());
        seal_value(v, &parsed, &key, &mut path, &mut mac)?;
        path.pop();
    }
    let last_modified = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .ok_or_else(|| SopsError::Metadata("cannot format the time".into()))?;
    let mac_text = hex::encode_upper(mac.finalize());
    let mut stanzas = Vec::new();
    for r in recipients {
        let encryptor = age::Encryptor::with_recipients(std::iter::once(r as &dyn age::Recipient))
            .map_err(|e| SopsError::Metadata(format!("age: {e}")))?;
        let mut armored = Vec::new();
        let io = |e: std::io::Error| SopsError::Metadata(format!("age: {e}"));
        let armor = age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor).map_err(io)?;
        let mut writer = encryptor.wrap_output(armor).map_err(io)?;
        writer.write_all(&key).map_err(io)?;
        writer.finish().and_then(|a| a.finish()).map_err(io)?;
        let enc = String::from_utf8(armored).map_err(|_| SopsError::Metadata("age armor is not UTF-8".into()))?;
        stanzas.push(serde_json::json!({"recipient": r.to_string(), "enc": enc}));
    }
    let mut sops = Map::new();
    sops.insert("age".into(), Value::Array(stanzas));
    sops.insert("lastmodified".into(), Value::String(last_modified.clone()));
    sops.insert("mac".into(), Value::String(seal_text(mac_text.as_bytes(), "str", &key, &last_modified)));
    sops.extend(meta);
    sops.insert("version".into(), Value::String("3.11.0".into()));
    body.insert(METADATA_KEY.into(), Value::Object(sops));
    Ok(Value::Object(body))
}

fn seal_text(plain: &[u8], kind: &str, key: &[u8; 32], aad: &str) -> String {
    use rand::RngCore as _;
    let mut iv = [0u8; 32];
    rand::rng().fill_bytes(&mut iv);
    let cipher = SopsGcm::new(GenericArray::from_slice(key));
    let out = cipher
        .encrypt(Nonce::<U32>::from_slice(&iv), Payload { msg: plain, aad: aad.as_bytes() })
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let (data, tag) = out.split_at(out.len() - 16);
    format!("ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]", B64.encode(data), B64.encode(iv), B64.encode(tag))
}

fn seal_value(
    value: &mut Value,
    rules: &Rules,
    key: &[u8; 32],
    path: &mut Vec<String>,
    mac: &mut Sha512,
) -> Result<()> {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                path.push(k.clone());
                let r = seal_value(v, rules, key, path, mac);
                path.pop();
                r?;
            }
        }
        Value::Array(items) => {
            for v in items {
                seal_value(v, rules, key, path, mac)?;
            }
        }
        Value::Null => {}
        leaf => {
            mac.update(mac_bytes(leaf));
            if rules.encrypts(path) {
                let kind = match leaf {
                    Value::String(_) => "str",
                    Value::Bool(_) => "bool",
                    Value::Number(n) if n.is_f64() => "float",
                    _ => "int",
                };
                let plain = mac_bytes(leaf);
                // sops leaves empty strings as they are.
                if !plain.is_empty() || kind != "str" {
                    *leaf = Value::String(seal_text(&plain, kind, key, &format!("{}:", path.join(":"))));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> (AgeKeys, age::x25519::Recipient) {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        (AgeKeys::new(vec![id]), r)
    }

    fn secret() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "web"},
            "type": "Opaque",
            "stringData": {"password": "hunter2", "port": 5432, "tls": true, "ratio": 0.5, "empty": "",
                           "multi": "line one\nline two\n"},
        })
    }

    #[test]
    fn round_trip_with_encrypted_regex() {
        let (keys, r) = keys();
        let rules = EncryptRules { encrypted_regex: Some("^(data|stringData)$".into()), ..Default::default() };
        let enc = encrypt(&secret(), &[r], &rules).unwrap();
        assert!(is_encrypted(&enc));
        assert_eq!(enc["metadata"]["name"], "db");
        assert!(enc["stringData"]["password"].as_str().unwrap().starts_with("ENC[AES256_GCM,"));
        assert!(!enc.to_string().contains("hunter2"));
        assert_eq!(decrypt(&enc, &keys).unwrap(), secret());
    }

    #[test]
    fn round_trip_with_the_default_suffix_encrypts_everything() {
        let (keys, r) = keys();
        let enc = encrypt(&secret(), &[r], &EncryptRules::default()).unwrap();
        assert!(enc["kind"].as_str().unwrap().starts_with("ENC["));
        assert_eq!(decrypt(&enc, &keys).unwrap(), secret());
    }

    #[test]
    fn a_foreign_key_names_the_recipients() {
        let (_, r) = keys();
        let (other, _) = keys();
        let enc = encrypt(&secret(), std::slice::from_ref(&r), &EncryptRules::default()).unwrap();
        let e = decrypt(&enc, &other).unwrap_err().to_string();
        assert!(e.contains(&r.to_string()) && e.contains(&other.recipients()[0]), "{e}");
        let e = decrypt(&enc, &AgeKeys::default()).unwrap_err();
        assert!(matches!(e, SopsError::NoKey { .. }), "{e}");
    }

    #[test]
    fn a_moved_value_or_an_edited_clear_value_is_refused() {
        let (keys, r) = keys();
        let rules = EncryptRules { encrypted_regex: Some("^stringData$".into()), ..Default::default() };
        let enc = encrypt(&secret(), &[r], &rules).unwrap();
        let mut moved = enc.clone();
        moved["stringData"]["port"] = enc["stringData"]["password"].clone();
        assert!(matches!(decrypt(&moved, &keys), Err(SopsError::Tampered { .. })));
        let mut edited = enc.clone();
        edited["metadata"]["name"] = json!("other");
        assert!(matches!(decrypt(&edited, &keys), Err(SopsError::MacMismatch)));
        let mut cleared = enc.clone();
        cleared["stringData"]["password"] = json!("plain");
        assert!(matches!(decrypt(&cleared, &keys), Err(SopsError::Format { .. })));
        let mut removed = enc;
        removed["stringData"].as_object_mut().unwrap().shift_remove("tls");
        assert!(matches!(decrypt(&removed, &keys), Err(SopsError::MacMismatch)));
    }

    #[test]
    fn key_files_parse_and_never_echo_a_bad_line() {
        let id = age::x25519::Identity::generate();
        let text = format!("# created: now\n# public key: {}\n{}\n", id.to_public(), {
            use age::secrecy::ExposeSecret as _;
            id.to_string().expose_secret().to_string()
        });
        let keys = AgeKeys::parse(&text, Path::new("keys.txt")).unwrap();
        assert_eq!(keys.recipients(), vec![id.to_public().to_string()]);
        let e = AgeKeys::parse("AGE-SECRET-KEY-1NOTAKEY\n", Path::new("keys.txt")).unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("NOTAKEY"), "{e}");
        assert!(matches!(AgeKeys::parse("# nothing\n", Path::new("k")), Err(SopsError::NoIdentity { .. })));
    }

    #[test]
    fn go_float_formatting_matches() {
        assert_eq!(mac_bytes(&json!(1.0)), b"1");
        assert_eq!(mac_bytes(&json!(0.5)), b"0.5");
        assert_eq!(mac_bytes(&json!(1e21)), b"1000000000000000000000");
    }
}

//! `configMapGenerator` and `secretGenerator`: building ConfigMaps and Secrets from
//! literals, files and env files, and the name hash suffix exactly as kustomize computes it.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::kustomization::{GeneratorOptions, GeneratorSpec, scalar_string};
use super::resource::{Behavior, Resource};
use super::source::{self, Source};
use super::{RenderError, Result};

/// Builds the object one generator entry describes.
pub(crate) fn generate(
    src: &dyn Source,
    dir: &Path,
    kfile: &Arc<std::path::PathBuf>,
    spec: &GeneratorSpec,
    secret: bool,
    global: Option<&GeneratorOptions>,
) -> Result<Resource> {
    let what = if secret { "secretGenerator" } else { "configMapGenerator" };
    let name = spec
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| RenderError::invalid(kfile, format!("{what} entry needs a name")))?;
    let entries = entries(src, dir, kfile, spec, what, &name)?;
    let mut opts = global.cloned().unwrap_or_default();
    if let Some(local) = &spec.options {
        merge_options(&mut opts, local);
    }

    let obj = object(spec, &opts, &name, entries, secret);
    let mut r = Resource::new(obj, kfile.clone());
    r.generator = Some(if secret { "SecretGenerator" } else { "ConfigMapGenerator" });
    r.needs_hash = opts.disable_name_suffix_hash != Some(true);
    // kustomize reads the value case-sensitively and takes anything else (`Merge`, a typo)
    // as "unspecified", which acts as create: an existing object of that name is then an
    // error, a new name is simply generated.
    r.behavior = match spec.behavior.as_deref() {
        Some("merge") => Behavior::Merge,
        Some("replace") => Behavior::Replace,
        _ => Behavior::Create,
    };
    Ok(r)
}

/// The keys and values of one generator entry: env files, then literals, then files.
fn entries(
    src: &dyn Source,
    dir: &Path,
    kfile: &Arc<std::path::PathBuf>,
    spec: &GeneratorSpec,
    what: &str,
    name: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |k: String, v: Vec<u8>| -> Result<()> {
        if entries.iter().any(|(e, _)| *e == k) {
            return Err(RenderError::invalid(
                kfile,
                format!("{what} '{name}': cannot add key '{k}', another key by that name already exists"),
            ));
        }
        entries.push((k, v));
        Ok(())
    };
    let mut envs: Vec<&String> = spec.envs.iter().flatten().collect();
    if let Some(e) = &spec.env {
        envs.push(e);
    }
    for env in envs {
        let path = resolve(src, dir, env, kfile)?;
        let text = read_text(src, &path, kfile)?;
        for (k, v) in parse_env(&path, &text)? {
            add(k, v.into_bytes())?;
        }
    }
    for lit in spec.literals.iter().flatten() {
        let (k, v) = lit.split_once('=').filter(|(k, _)| !k.is_empty()).ok_or_else(|| {
            RenderError::invalid(kfile, format!("{what} '{name}': literal '{lit}' must be KEY=VALUE"))
        })?;
        add(k.to_string(), remove_quotes(v).as_bytes().to_vec())?;
    }
    for f in spec.files.iter().flatten() {
        let (key, file) = match f.split_once('=') {
            Some((k, p)) if !k.is_empty() => (k.to_string(), p),
            Some(_) => {
                return Err(RenderError::invalid(
                    kfile,
                    format!("{what} '{name}': file source '{f}' has an empty key"),
                ));
            }
            None => {
                let base = f.rsplit('/').next().unwrap_or(f).to_string();
                (base, f.as_str())
            }
        };
        let path = resolve(src, dir, file, kfile)?;
        match src.kind(&path)? {
            Some(source::EntryKind::File) => {}
            Some(source::EntryKind::Dir) => {
                return Err(RenderError::Unsupported {
                    path: kfile.to_path_buf(),
                    feature: format!("{what} files entry naming a directory ('{file}')"),
                });
            }
            None => {
                return Err(RenderError::Missing { path: path.clone(), from: kfile.to_path_buf() });
            }
        }
        add(key, src.read(&path)?)?;
    }

    Ok(entries)
}

/// The ConfigMap or Secret holding `entries`, with the options' labels and annotations.
fn object(
    spec: &GeneratorSpec,
    opts: &GeneratorOptions,
    name: &str,
    entries: Vec<(String, Vec<u8>)>,
    secret: bool,
) -> Map<String, Value> {
    let mut md = Map::new();
    md.insert("name".into(), Value::String(name.to_string()));
    if let Some(ns) = spec.namespace.as_ref().filter(|n| !n.is_empty()) {
        md.insert("namespace".into(), Value::String(ns.clone()));
    }
    if let Some(l) = opts.labels.as_ref().filter(|l| !l.is_empty()) {
        md.insert("labels".into(), Value::Object(stringify(l)));
    }
    if let Some(a) = opts.annotations.as_ref().filter(|a| !a.is_empty()) {
        md.insert("annotations".into(), Value::Object(stringify(a)));
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String("v1".into()));
    obj.insert("kind".into(), Value::String(if secret { "Secret" } else { "ConfigMap" }.into()));
    obj.insert("metadata".into(), Value::Object(md));
    if secret {
        let data: Map<String, Value> =
            entries.into_iter().map(|(k, v)| (k, Value::String(wrapped_base64(&v)))).collect();
        if !data.is_empty() {
            obj.insert("data".into(), Value::Object(data));
        }
        let ty = spec.type_.clone().unwrap_or_else(|| "Opaque".into());
        obj.insert("type".into(), Value::String(ty));
    } else {
        let mut data = Map::new();
        let mut binary = Map::new();
        for (k, v) in entries {
            match String::from_utf8(v) {
                Ok(s) => {
                    data.insert(k, Value::String(s));
                }
                Err(e) => {
                    binary.insert(k, Value::String(wrapped_base64(&e.into_bytes())));
                }
            }
        }
        if !data.is_empty() {
            obj.insert("data".into(), Value::Object(data));
        }
        if !binary.is_empty() {
            obj.insert("binaryData".into(), Value::Object(binary));
        }
    }
    if opts.immutable == Some(true) {
        obj.insert("immutable".into(), Value::Bool(true));
    }
    obj
}

/// Base64 as kustomize writes generated data: lines of 70 characters, each ending in a
/// newline once there is more than one line.
fn wrapped_base64(bytes: &[u8]) -> String {
    const LINE: usize = 70;
    let enc = base64::engine::general_purpose::STANDARD.encode(bytes);
    if enc.len() / LINE == 0 {
        return enc;
    }
    let mut out = String::with_capacity(enc.len() + enc.len() / LINE + 1);
    for chunk in enc.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn merge_options(into: &mut GeneratorOptions, local: &GeneratorOptions) {
    if let Some(l) = &local.labels {
        let m = into.labels.get_or_insert_with(Map::new);
        for (k, v) in l {
            m.insert(k.clone(), v.clone());
        }
    }
    if let Some(a) = &local.annotations {
        let m = into.annotations.get_or_insert_with(Map::new);
        for (k, v) in a {
            m.insert(k.clone(), v.clone());
        }
    }
    // kustomize's options are plain bools: a global `true` cannot be turned off locally.
    if local.disable_name_suffix_hash == Some(true) {
        into.disable_name_suffix_hash = Some(true);
    }
    if local.immutable == Some(true) {
        into.immutable = Some(true);
    }
}

fn stringify(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter().map(|(k, v)| (k.clone(), Value::String(scalar_string(v)))).collect()
}

pub(crate) fn resolve(src: &dyn Source, dir: &Path, rel: &str, kfile: &Path) -> Result<std::path::PathBuf> {
    let path = source::normalize(dir, rel)
        .ok_or_else(|| RenderError::PathEscape { path: rel.to_string(), from: kfile.to_path_buf() })?;
    source::check_within(src, dir, &path, rel, kfile)?;
    Ok(path)
}

pub(crate) fn read_text(src: &dyn Source, path: &Path, kfile: &Path) -> Result<String> {
    if src.kind(path)?.is_none() {
        return Err(RenderError::Missing { path: path.to_path_buf(), from: kfile.to_path_buf() });
    }
    String::from_utf8(src.read(path)?).map_err(|_| RenderError::invalid(path, "env file is not valid UTF-8"))
}

/// `KEY=VALUE` lines; blank lines and `#` comments skipped.
fn parse_env(path: &Path, text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let mut line = raw.strip_suffix('\r').unwrap_or(raw);
        if i == 0 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if valid_env_name(k) => out.push((k.to_string(), v.to_string())),
            _ => {
                return Err(RenderError::invalid(
                    path,
                    format!(
                        "line {}: '{line}' is not KEY=VALUE with a valid variable name (values from the environment are not supported)",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn valid_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn remove_quotes(v: &str) -> &str {
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] { &v[1..v.len() - 1] } else { v }
}

/// The ten-character hash kustomize appends to generated names.
pub(crate) fn name_hash(obj: &Map<String, Value>) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    // kustomize 5 hashes with an empty name (verified against kubectl), so only the
    // content decides the suffix.
    let name = Value::String(String::new());
    let field = |k: &str| obj.get(k).cloned().unwrap_or(Value::String(String::new()));
    let mut m = Map::new();
    match kind {
        "ConfigMap" => {
            m.insert("kind".into(), Value::String("ConfigMap".into()));
            m.insert("name".into(), name);
            m.insert("data".into(), field("data"));
            if let Some(b @ Value::Object(_)) = obj.get("binaryData") {
                m.insert("binaryData".into(), b.clone());
            }
        }
        "Secret" => {
            m.insert("kind".into(), Value::String("Secret".into()));
            m.insert("type".into(), field("type"));
            m.insert("name".into(), name);
            m.insert("data".into(), field("data"));
            if let Some(s @ Value::Object(_)) = obj.get("stringData") {
                m.insert("stringData".into(), s.clone());
            }
        }
        _ => {
            m = obj.clone();
        }
    }
    let mut encoded = String::new();
    go_json(&Value::Object(m), &mut encoded);
    let hex: String = Sha256::digest(encoded.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    hex[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// JSON exactly as Go's `encoding/json` marshals a generic value: keys sorted, HTML
/// characters escaped.
fn go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => go_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(e, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_string(k, out);
                out.push(':');
                go_json(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configmap_hash_matches_kustomize() {
        // `kubectl kustomize` names this ConfigMap p-cfg-7gdc49gk6d; the name does not count.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "p-cfg"}, "data": {"b": "2", "a": "1"}});
        assert_eq!(name_hash(cm.as_object().expect("object")), "7gdc49gk6d");
    }

    #[test]
    fn go_json_escapes_like_go() {
        let mut s = String::new();
        go_json(&json!({"b": "<&>\n", "a": 1}), &mut s);
        assert_eq!(s, r#"{"a":1,"b":"\u003c\u0026\u003e\n"}"#);
    }

    #[test]
    fn env_lines_and_quotes() {
        let kv = parse_env(Path::new("e.env"), "\u{feff}A=1\n# c\n\n  B = x\nC=\"q\"\n")
            .expect_err("space before = is not a valid name");
        assert!(kv.to_string().contains("e.env"));
        let kv = parse_env(Path::new("e.env"), "A=1\n#c\nC=\"q\"\r\n").expect("parse");
        assert_eq!(kv, vec![("A".into(), "1".into()), ("C".into(), "\"q\"".into())]);
        assert_eq!(remove_quotes("'x'"), "x");
        assert_eq!(remove_quotes("\"x"), "\"x");
    }
}

//! YAML in and out: multi-document parsing into JSON values, and a printer that writes
//! documents the way `kubectl kustomize` does (keys sorted, block style, `---` between).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{RenderError, Result};

/// Parses every non-empty document of a YAML stream.
pub(crate) fn parse_docs(path: &Path, text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| RenderError::Yaml { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Parsed YAML streams keyed by their text, shared by all renders of one [`super::Renderer`]:
/// a fleet renders the same bases for many clusters, and parsing dominates render time.
/// Keyed by content, so a changed file is simply a different entry.
#[derive(Debug, Default)]
pub(crate) struct DocCache {
    map: Mutex<HashMap<String, Arc<Vec<Value>>>>,
}

/// Entries kept before the cache starts over (bounds memory for long-running hubs).
const CACHE_LIMIT: usize = 16_384;

impl DocCache {
    /// The documents of `text`, parsed once.
    pub fn parse(&self, path: &Path, text: &str) -> Result<Arc<Vec<Value>>> {
        if let Some(hit) = self.lock().get(text) {
            return Ok(hit.clone());
        }
        let docs = Arc::new(parse_docs(path, text)?);
        let mut map = self.lock();
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(text.to_string(), docs.clone());
        Ok(docs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<Value>>>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Parses a single YAML document (an empty document is `null`).
pub(crate) fn parse_one(path: &Path, text: &str, cache: &DocCache) -> Result<Value> {
    let docs = cache.parse(path, text)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs[0].clone()),
        _ => Err(RenderError::Yaml {
            path: path.to_path_buf(),
            message: "expected one YAML document, found several".into(),
        }),
    }
}

/// Prints objects as a multi-document YAML stream like `kubectl kustomize`: mapping keys
/// sorted, sequences not indented below their key, documents separated by `---`.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for (i, obj) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        write_root(&mut out, obj);
    }
    out
}

fn write_root(out: &mut String, v: &Value) {
    match v {
        Value::Object(m) if !m.is_empty() => write_map(out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(out, a, 0),
        other => {
            write_scalar(out, other, 0);
            out.push('\n');
        }
    }
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn sorted(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, ind: usize) {
    for (k, v) in sorted(m) {
        indent(out, ind);
        write_str(out, k, ind, true);
        out.push(':');
        write_value_after_key(out, v, ind);
    }
}

fn write_value_after_key(out: &mut String, v: &Value, ind: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, ind + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, ind);
        }
        other => {
            out.push(' ');
            write_scalar(out, other, ind + 2);
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, a: &[Value], ind: usize) {
    for v in a {
        indent(out, ind);
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                // First entry on the dash line, the rest aligned under it.
                let entries = sorted(m);
                for (i, (k, val)) in entries.into_iter().enumerate() {
                    if i == 0 {
                        out.push(' ');
                    } else {
                        indent(out, ind + 2);
                    }
                    write_str(out, k, ind + 2, true);
                    out.push(':');
                    write_value_after_key(out, val, ind + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, ind + 2);
            }
            other => {
                out.push(' ');
                write_scalar(out, other, ind + 2);
                out.push('\n');
            }
        }
    }
}

fn write_scalar(out: &mut String, v: &Value, ind: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s, ind, false),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

fn write_str(out: &mut String, s: &str, ind: usize, is_key: bool) {
    if !is_key && s.contains('\n') && block_ok(s) {
        let trailing = s.len() - s.trim_end_matches('\n').len();
        out.push('|');
        match trailing {
            0 => out.push('-'),
            1 => {}
            _ => out.push('+'),
        }
        let body = if trailing == 1 { &s[..s.len() - 1] } else { s };
        let body = if trailing > 1 { &body[..body.len() - 1] } else { body };
        for line in body.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                indent(out, ind);
                out.push_str(line);
            }
        }
        return;
    }
    if plain_ok(s) {
        write_folding(out, s, ind, !is_key, false);
    } else if !reads_as_other_type(s) && !s.chars().any(|c| c.is_control() || c == '\u{feff}') {
        out.push('\'');
        write_folding(out, &s.replace('\'', "''"), ind, !is_key, true);
        out.push('\'');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\"")));
    }
}

/// Column kubectl's YAML writer (go-yaml) breaks long scalars after.
const BEST_WIDTH: usize = 80;

/// Writes a plain or single-quoted scalar, breaking at a single space once the line is
/// past [`BEST_WIDTH`] like go-yaml, continuing on a line indented by `ind`.
fn write_folding(out: &mut String, s: &str, ind: usize, allow_breaks: bool, quoted: bool) {
    let line_start = out.rfind('\n').map_or(0, |i| i + 1);
    let mut col = out[line_start..].chars().count();
    let chars: Vec<char> = s.chars().collect();
    let mut spaces = false;
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let next_is_space = chars.get(i + 1).is_none_or(|n| *n == ' ');
            let edge_ok = !quoted || (i > 0 && i + 1 < chars.len());
            if allow_breaks && !spaces && col > BEST_WIDTH && edge_ok && !next_is_space {
                out.push('\n');
                indent(out, ind);
                col = ind;
            } else {
                out.push(' ');
                col += 1;
            }
            spaces = true;
        } else {
            out.push(c);
            col += 1;
            spaces = false;
        }
    }
}

/// Whether a multi-line string can be printed as a literal block without changing it.
fn block_ok(s: &str) -> bool {
    let first = s.split('\n').next().unwrap_or("");
    !first.starts_with(' ')
        && !first.starts_with('\t')
        && !s.starts_with('\n')
        && s.chars().all(|c| c == '\n' || !c.is_control())
        && s.split('\n').all(|l| !l.ends_with(' ') && !l.ends_with('\t'))
}

/// Whether a string can be written unquoted and still read back as the same string by
/// YAML 1.1 and 1.2 readers (go-yaml's rules, a little more cautious).
fn plain_ok(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return false;
    }
    // `<<` would read as a merge key.
    if is_reserved_word(s) || s == "<<" {
        return false;
    }
    let mut chars = s.chars();
    let first = chars.next().unwrap_or(' ');
    let second = chars.next();
    if "#,[]{}&*!|>'\"%@`".contains(first) {
        return false;
    }
    if "-?:".contains(first) && second.is_none_or(|c| c == ' ') {
        return false;
    }
    if looks_numeric(s) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    !s.chars().any(|c| c.is_control() || c == '\u{feff}')
}

/// Strings that unquoted would read as null, a bool or a number; go-yaml double-quotes
/// these and single-quotes the rest that cannot be plain.
fn reads_as_other_type(s: &str) -> bool {
    s.is_empty() || looks_numeric(s) || is_reserved_word(s)
}

/// Words that some YAML 1.1 or 1.2 reader takes for a null, a bool or a special float, whatever
/// their letter case.
fn is_reserved_word(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~" | ".inf" | "-.inf" | "+.inf" | ".nan"
    )
}

/// Strings a YAML reader might take for a number, date or time: they start like a
/// number and hold only number-ish characters.
fn looks_numeric(s: &str) -> bool {
    let starts = s.trim_start_matches(['-', '+']).starts_with(|c: char| c.is_ascii_digit() || c == '.');
    starts
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_hexdigit() || "xXoO_.:+-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_awkward_scalars() {
        let doc = json!({
            "b": ["yes", "1", "1.5", "", " x", "a: b", "-", "-x", "multi\nline\n", "no-newline\nend",
                  "two\n\n", "@at", "true", 1, 1.5, true, null, "~", "0x1f", "# c", "x #y"],
            "a": {"nested": [{"k": "v", "l": [1, 2]}, [3]], "empty": {}, "none": []},
        });
        let text = to_yaml(std::slice::from_ref(&doc));
        let back = parse_docs(Path::new("t"), &text).expect("parse");
        assert_eq!(back, vec![doc], "{text}");
        assert!(text.starts_with("a:\n"), "keys are sorted: {text}");
    }

    #[test]
    fn long_scalars_fold_and_round_trip() {
        let long = (0..40).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let doc = json!({"k": long, "q": format!("{long}: x")});
        let text = to_yaml(std::slice::from_ref(&doc));
        assert!(text.lines().all(|l| l.len() < 100), "{text}");
        assert!(text.lines().count() > 3, "{text}");
        assert_eq!(parse_docs(Path::new("t"), &text).expect("parse"), vec![doc]);
    }

    #[test]
    fn documents_are_separated() {
        let text = to_yaml(&[json!({"a": 1}), json!({"b": 2})]);
        assert_eq!(text, "a: 1\n---\nb: 2\n");
    }
}

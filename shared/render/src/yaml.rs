//! YAML in and out: multi-document parsing into JSON values, and a printer that writes
//! documents the way `kubectl kustomize` does (keys sorted, block style, `---` between).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{RenderError, Result};

/// How plain scalars are typed while reading, which differs between the two YAML libraries
/// kustomize uses: resources are read with go-yaml v3 (only `true`/`false` are booleans;
/// `0755` is octal), kustomization files with sigs.k8s.io/yaml's go-yaml v2 (YAML 1.1
/// booleans such as `yes`/`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Schema {
    /// Objects, patches and other documents kustomize reads as kyaml nodes.
    Resource,
    /// `kustomization.yaml` and plugin configs decoded into Go structs.
    Config,
}

/// Parses every non-empty document of a YAML stream.
#[cfg(test)]
pub(crate) fn parse_docs(path: &Path, text: &str) -> Result<Vec<Value>> {
    parse_docs_as(path, text, Schema::Resource)
}

/// Parses every non-empty document of a YAML stream with the given scalar typing.
pub(crate) fn parse_docs_as(path: &Path, text: &str, schema: Schema) -> Result<Vec<Value>> {
    let opts = match schema {
        Schema::Resource => serde_saphyr::options! { strict_booleans: true, legacy_octal_numbers: true },
        Schema::Config => serde_saphyr::options! { strict_booleans: false, legacy_octal_numbers: true },
    };
    let mut docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, opts)
        .map_err(|e| RenderError::Yaml { path: path.to_path_buf(), message: e.to_string() })?;
    docs.retain(|d| !d.is_null());
    if let Some(last) = docs.last_mut() {
        unbreak_final_block_scalar(last, text);
    }
    docs.iter_mut().for_each(integral_floats_to_ints);
    if schema == Schema::Resource {
        let plain = plain_timestamps(text);
        if !plain.is_empty() {
            docs.iter_mut().for_each(|d| timestamps_to_rfc3339(d, &plain));
        }
    }
    Ok(docs)
}

/// Unquoted scalars in `text` that go-yaml v3 reads as timestamps. kustomize turns those
/// into Go `time.Time` values, which come out as RFC 3339 strings.
fn plain_timestamps(text: &str) -> Vec<String> {
    static RE: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"(?m)(?:^|[:-])[ \t]+(\d{4}-\d{1,2}-\d{1,2}(?:(?:[Tt]| +)[0-9:.,]+(?:Z|[+-]\d\d:\d\d)?)?)[ \t]*(?:#.*)?\r?$")
            .ok()
    });
    let Some(re) = re else { return Vec::new() };
    // A string that also appears quoted is ambiguous without positions; it is left alone.
    re.captures_iter(text)
        .filter_map(|c| c.get(1))
        .map(|m| m.as_str().to_string())
        .filter(|s| is_timestamp(s) && !text.contains(&format!("'{s}'")) && !text.contains(&format!("\"{s}\"")))
        .collect()
}

fn timestamps_to_rfc3339(v: &mut Value, plain: &[String]) {
    match v {
        Value::String(s) if plain.iter().any(|p| p == s) => {
            if let Some(t) = rfc3339(s) {
                *s = t;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| timestamps_to_rfc3339(i, plain)),
        Value::Object(m) => m.values_mut().for_each(|i| timestamps_to_rfc3339(i, plain)),
        _ => {}
    }
}

/// A YAML timestamp as Go's `time.Time` marshals to JSON (RFC 3339, fraction without
/// trailing zeros, `Z` for UTC and zone-less times).
fn rfc3339(s: &str) -> Option<String> {
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches(['T', 't', ' '])),
        None => (s, ""),
    };
    let mut d = date.split('-').map(|p| p.parse::<u32>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    if rest.is_empty() {
        return Some(format!("{y:04}-{mo:02}-{da:02}T00:00:00Z"));
    }
    let zone_at = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, frac) = match clock.split_once(['.', ',']) {
        Some((a, b)) => (a, b.trim_end_matches('0')),
        None => (clock, ""),
    };
    let mut t = hms.split(':').map(|p| p.parse::<u32>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    let zone = match zone {
        "" | "Z" | "+00:00" | "-00:00" => "Z",
        z => z,
    };
    let frac = if frac.is_empty() { String::new() } else { format!(".{frac}") };
    Some(format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{se:02}{frac}{zone}"))
}

/// A block scalar (`|`, `>`) that ends the stream without a final line break has none in
/// go-yaml (clip and keep chomping keep the final break only when there is one); the YAML
/// library here adds it. The last value of the last document is that scalar when the text
/// does not end in a line break and the value ends with the text's last line plus a break.
fn unbreak_final_block_scalar(doc: &mut Value, text: &str) {
    if text.ends_with('\n') {
        return;
    }
    let Some(last_line) = text.rsplit('\n').next().map(str::trim_start).filter(|l| !l.is_empty()) else {
        return;
    };
    let mut v = doc;
    loop {
        v = match v {
            Value::Object(m) => match m.values_mut().next_back() {
                Some(x) => x,
                None => return,
            },
            Value::Array(a) => match a.last_mut() {
                Some(x) => x,
                None => return,
            },
            Value::String(s) => {
                if s.strip_suffix('\n')
                    .is_some_and(|body| body.trim_end_matches('\r').ends_with(last_line.trim_end_matches('\r')))
                {
                    s.pop();
                }
                return;
            }
            _ => return,
        };
    }
}

/// kustomize passes objects through JSON, after which an integral float such as `1500.0`
/// or `1e3` is the integer `1500`; doing the same here keeps values comparable.
fn integral_floats_to_ints(v: &mut Value) {
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() < 1.8e19 {
                let i = f as i128;
                if let Ok(x) = i64::try_from(i) {
                    *v = Value::from(x);
                } else if let Ok(x) = u64::try_from(i) {
                    *v = Value::from(x);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_ints),
        Value::Object(m) => m.values_mut().for_each(integral_floats_to_ints),
        _ => {}
    }
}

/// Parsed YAML streams keyed by their text, shared by all renders of one [`super::Renderer`]:
/// a fleet renders the same bases for many clusters, and parsing dominates render time.
/// Keyed by content, so a changed file is simply a different entry. Regular expressions
/// kustomizations write (`images:` names) are kept compiled the same way.
#[derive(Debug, Default)]
pub(crate) struct DocCache {
    resources: Mutex<HashMap<String, Arc<Vec<Value>>>>,
    configs: Mutex<HashMap<String, Arc<Vec<Value>>>>,
    patterns: Mutex<HashMap<String, regex::Regex>>,
}

/// Entries kept before the cache starts over (bounds memory for long-running hubs).
const CACHE_LIMIT: usize = 16_384;

impl DocCache {
    /// The documents of `text`, parsed once (as resources).
    pub fn parse(&self, path: &Path, text: &str) -> Result<Arc<Vec<Value>>> {
        self.parse_as(path, text, Schema::Resource)
    }

    /// The documents of `text` read with `schema`, parsed once.
    pub fn parse_as(&self, path: &Path, text: &str, schema: Schema) -> Result<Arc<Vec<Value>>> {
        let map = match schema {
            Schema::Resource => &self.resources,
            Schema::Config => &self.configs,
        };
        if let Some(hit) = lock(map).get(text) {
            return Ok(hit.clone());
        }
        let docs = Arc::new(parse_docs_as(path, text, schema)?);
        let mut map = lock(map);
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(text.to_string(), docs.clone());
        Ok(docs)
    }

    /// `pattern` compiled, once per renderer: every render of a fleet's clusters compiles the
    /// same `images:` entries, which took a tenth of a kustomize render.
    pub fn regex(&self, pattern: &str) -> std::result::Result<regex::Regex, regex::Error> {
        if let Some(hit) = lock(&self.patterns).get(pattern) {
            return Ok(hit.clone());
        }
        let compiled = regex::Regex::new(pattern)?;
        let mut map = lock(&self.patterns);
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(pattern.to_string(), compiled.clone());
        Ok(compiled)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the map inconsistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parses a single YAML document (an empty document is `null`) with `schema`.
pub(crate) fn parse_one(path: &Path, text: &str, cache: &DocCache, schema: Schema) -> Result<Value> {
    let docs = cache.parse_as(path, text, schema)?;
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
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s, ind, false),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

/// Writes a number the way kubectl's output path does: kustomize marshals to JSON (Go
/// `encoding/json`), and go-yaml v2 reads that back and prints it, so an integral float
/// that fits an int64/uint64 prints as an integer and other floats use Go's `%g`.
fn write_number(out: &mut String, n: &serde_json::Number) {
    if n.is_i64() || n.is_u64() {
        let _ = write!(out, "{n}");
        return;
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 && f.abs() < 1.8e19 {
        let i = f as i128;
        if i64::try_from(i).is_ok() || u64::try_from(i).is_ok() {
            let _ = write!(out, "{i}");
            return;
        }
    }
    out.push_str(&go_format_g(f));
}

/// A number as kubectl prints it.
pub(crate) fn number_text(n: &serde_json::Number) -> String {
    let mut s = String::new();
    write_number(&mut s, n);
    s
}

/// The value go-yaml v3 gives a plain (unquoted) scalar `text`.
pub(crate) fn parse_plain_scalar(text: &str) -> Value {
    match text {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        _ => {}
    }
    let first = text.chars().next().unwrap_or(' ');
    if !(first.is_ascii_digit() || first == '+' || first == '-' || first == '.') {
        return Value::String(text.to_string());
    }
    let plain = text.replace('_', "");
    let (neg, unsigned) = match plain.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, plain.strip_prefix('+').unwrap_or(&plain)),
    };
    let (digits, radix) = if let Some(r) = unsigned.strip_prefix("0x") {
        (r, 16)
    } else if let Some(r) = unsigned.strip_prefix("0o") {
        (r, 8)
    } else if let Some(r) = unsigned.strip_prefix("0b") {
        (r, 2)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (&unsigned[1..], 8)
    } else {
        (unsigned, 10)
    };
    if !digits.is_empty()
        && !digits.starts_with(['+', '-'])
        && let Ok(u) = u64::from_str_radix(digits, radix)
    {
        if neg {
            if let Ok(i) = i64::try_from(-(i128::from(u))) {
                return Value::from(i);
            }
        } else {
            return Value::from(u);
        }
    }
    if yaml_style_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`.
pub(crate) fn go_format_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

fn write_str(out: &mut String, s: &str, ind: usize, is_key: bool) {
    if !is_key && s.contains('\n') && block_ok(s) {
        let trailing = s.len() - s.trim_end_matches('\n').len();
        out.push('|');
        if s.starts_with([' ', '\n']) {
            // go-yaml's indentation indicator when the content starts with a space or break.
            out.push('2');
        }
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
    if s.contains('\n') || resolves_as_non_string(s) || s.chars().any(|c| !printable(c)) {
        write_double_quoted(out, s, ind, !is_key);
    } else if plain_ok(s) {
        write_folding(out, s, ind, !is_key, false);
    } else {
        out.push('\'');
        write_folding(out, &s.replace('\'', "''"), ind, !is_key, true);
        out.push('\'');
    }
}

/// go-yaml's `is_printable`: what its emitter may write without an escape.
fn printable(c: char) -> bool {
    c == '\n'
        || (' '..='~').contains(&c)
        || ('\u{a0}'..='\u{d7ff}').contains(&c)
        || (('\u{e000}'..='\u{fffd}').contains(&c) && c != '\u{feff}')
}

/// A double-quoted scalar with go-yaml's escapes, folded at spaces past the line width
/// like its emitter does (continuation lines indented by `ind`).
fn write_double_quoted(out: &mut String, s: &str, ind: usize, allow_breaks: bool) {
    let line_start = out.rfind('\n').map_or(0, |i| i + 1);
    let mut col = out[line_start..].chars().count();
    out.push('"');
    col += 1;
    let chars: Vec<char> = s.chars().collect();
    let mut spaces = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let escaped = !printable(c) || matches!(c, '\n' | '\u{2028}' | '\u{2029}' | '"' | '\\');
        if escaped {
            let before = out.len();
            match c {
                '\0' => out.push_str("\\0"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\u{b}' => out.push_str("\\v"),
                '\u{c}' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                '\u{1b}' => out.push_str("\\e"),
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{85}' => out.push_str("\\N"),
                '\u{a0}' => out.push_str("\\_"),
                '\u{2028}' => out.push_str("\\L"),
                '\u{2029}' => out.push_str("\\P"),
                c if (c as u32) <= 0xff => {
                    let _ = write!(out, "\\x{:02X}", c as u32);
                }
                c if (c as u32) <= 0xffff => {
                    let _ = write!(out, "\\u{:04X}", c as u32);
                }
                c => {
                    let _ = write!(out, "\\U{:08X}", c as u32);
                }
            }
            col += out.len() - before;
            spaces = false;
        } else if c == ' ' {
            if allow_breaks && !spaces && col > BEST_WIDTH && i > 0 && i + 1 < chars.len() {
                out.push('\n');
                indent(out, ind);
                col = ind;
                if chars[i + 1] == ' ' {
                    out.push('\\');
                    col += 1;
                }
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
        i += 1;
    }
    out.push('"');
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
    s.chars().all(printable) && !s.contains(" \n") && !s.ends_with(' ')
}

/// Whether go-yaml's emitter may write a string (that reads back as a string) unquoted.
fn plain_ok(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
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
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    s.chars().all(|c| printable(c) && c != '\n')
}

/// Whether go-yaml v2 (kubectl's printer) would read `s`, unquoted, as something other than a
/// string — a bool, null, number, timestamp or sexagesimal float — and so double-quotes it.
pub(crate) fn resolves_as_non_string(s: &str) -> bool {
    const WORDS: [&str; 39] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE",
        "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", ".nan", ".NaN", ".NAN", ".inf", ".Inf",
        ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", "",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    if first == '.' {
        return go_parse_float(s);
    }
    if !(first.is_ascii_digit() || first == '+' || first == '-') {
        return false;
    }
    if is_timestamp(s) || is_base60_float(s) {
        return true;
    }
    let plain = s.replace('_', "");
    go_parse_int(&plain) || (yaml_style_float(&plain) && go_parse_float(&plain))
}

/// Go's `strconv.ParseInt(s, 0, 64)` or `ParseUint` succeeding.
fn go_parse_int(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (digits, radix) = if let Some(r) = unsigned.strip_prefix("0x").or_else(|| unsigned.strip_prefix("0X")) {
        (r, 16)
    } else if let Some(r) = unsigned.strip_prefix("0o").or_else(|| unsigned.strip_prefix("0O")) {
        (r, 8)
    } else if let Some(r) = unsigned.strip_prefix("0b").or_else(|| unsigned.strip_prefix("0B")) {
        (r, 2)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (&unsigned[1..], 8)
    } else {
        (unsigned, 10)
    };
    !digits.is_empty() && u64::from_str_radix(digits, radix).is_ok()
}

/// go-yaml's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn yaml_style_float(s: &str) -> bool {
    let b = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.first() == Some(&b'.') {
        i = 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` succeeding, for the decimal forms that reach it.
fn go_parse_float(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let t = lower.trim_start_matches(['+', '-']);
    if t.starts_with("inf") || t.starts_with("nan") {
        return matches!(t, "inf" | "infinity" | "nan");
    }
    s.parse::<f64>().is_ok()
}

/// go-yaml's `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (main, frac) = match t.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (t, None),
    };
    if frac.is_some_and(|f| !f.chars().all(|c| c.is_ascii_digit() || c == '_')) {
        return false;
    }
    let mut parts = main.split(':');
    let head = parts.next().unwrap_or("");
    if !head.starts_with(|c: char| c.is_ascii_digit()) || !head.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return false;
    }
    let mut n = 0;
    for p in parts {
        n += 1;
        let ok = match p.as_bytes() {
            [d] => d.is_ascii_digit(),
            [a, b] => (b'0'..=b'5').contains(a) && b.is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    n > 0
}

/// Whether go-yaml v2 reads `s` as a timestamp: `YYYY-M-D`, optionally followed by
/// `T`/`t`/spaces and `h:m:s[.frac]` with an optional `Z` or `±hh:mm` zone (Go layouts
/// `2006-1-2T15:4:5.999999999Z07:00`, `2006-1-2 15:4:5.999999999`, `2006-1-2`).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let mut i = 5;
    let num = |i: &mut usize, max: usize| -> Option<u32> {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - start < max {
            *i += 1;
        }
        if *i == start { None } else { std::str::from_utf8(&b[start..*i]).ok()?.parse().ok() }
    };
    let year: u32 = s[..4].parse().unwrap_or(0);
    let Some(month) = num(&mut i, 2) else { return false };
    if b.get(i) != Some(&b'-') {
        return false;
    }
    i += 1;
    let Some(day) = num(&mut i, 2) else { return false };
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days {
        return false;
    }
    if i == b.len() {
        return true;
    }
    let zoned = match b[i] {
        b'T' | b't' => {
            i += 1;
            true
        }
        b' ' => {
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            false
        }
        _ => return false,
    };
    let Some(h) = num(&mut i, 2) else { return false };
    if b.get(i) != Some(&b':') {
        return false;
    }
    i += 1;
    let Some(m) = num(&mut i, 2) else { return false };
    if b.get(i) != Some(&b':') {
        return false;
    }
    i += 1;
    let Some(sec) = num(&mut i, 2) else { return false };
    if h > 23 || m > 59 || sec > 59 {
        return false;
    }
    if matches!(b.get(i), Some(b'.' | b',')) && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if i == b.len() {
        return true;
    }
    if !zoned {
        return false;
    }
    match b[i] {
        b'Z' => i + 1 == b.len(),
        b'+' | b'-' => {
            let rest = &s[i + 1..];
            let ok = |p: &str| p.len() == 2 && p.bytes().all(|c| c.is_ascii_digit());
            match rest.split_once(':') {
                Some((hh, mm)) => ok(hh) && ok(mm),
                None => false,
            }
        }
        _ => false,
    }
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
    fn kubectl_quoting_rules() {
        for s in ["yes", "Off", "~", "0755", "0x1F", "1_000", "1e3", ".5", "1:20", "2001-12-14", "1970-01-01T00:00:00Z"]
        {
            assert!(resolves_as_non_string(s), "{s} reads as a non-string");
        }
        for s in ["yES", "12e", "0x", "<<", "=", "2024-2-30", "1.2.3", "v1"] {
            assert!(!resolves_as_non_string(s), "{s} reads as a string");
        }
        assert_eq!(go_format_g(1234567.5), "1.2345675e+06");
        assert_eq!(go_format_g(0.00001), "1e-05");
        assert_eq!(go_format_g(123456.5), "123456.5");
    }

    #[test]
    fn plain_scalars_typed_like_go_yaml_v3() {
        assert_eq!(parse_plain_scalar("0755"), json!(493));
        assert_eq!(parse_plain_scalar("-0x10"), json!(-16));
        assert_eq!(parse_plain_scalar("1_000"), json!(1000));
        assert_eq!(parse_plain_scalar("1.5"), json!(1.5));
        assert_eq!(parse_plain_scalar("yes"), json!("yes"));
        assert_eq!(parse_plain_scalar("True"), json!(true));
        assert_eq!(parse_plain_scalar("~"), Value::Null);
        let docs = parse_docs(Path::new("t"), "a: 0755\nb: yes\nc: 1e3\nd: 1.0\n").expect("parse");
        assert_eq!(docs, vec![json!({"a": 493, "b": "yes", "c": 1000, "d": 1})]);
    }

    #[test]
    fn documents_are_separated() {
        let text = to_yaml(&[json!({"a": 1}), json!({"b": 2})]);
        assert_eq!(text, "a: 1\n---\nb: 2\n");
    }
}

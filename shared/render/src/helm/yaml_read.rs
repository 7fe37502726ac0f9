//! Reading YAML the way Helm does (go-yaml v2 under `sigs.k8s.io/yaml`): values files,
//! `Chart.yaml`, rendered manifests, `fromYaml`, repository indexes. The one YAML reader of the
//! Helm engine.
//!
//! Two paths, one result. The block-style YAML that templates emit and people write (indented
//! mappings and sequences, plain and simply quoted scalars, `|` blocks, `[]` and `{}`) is read
//! straight into JSON values without an event stream. Anything outside that subset (flow
//! collections, anchors, tags, multi-line plain or quoted scalars, duplicate keys, tabs) and
//! every plain scalar that might resolve to something other than a string or a decimal integer
//! gives way to the full parser, so the result is always what [`full_yaml`] would give.

use serde_json::{Map, Value as Json};

/// `text` as one YAML document, or `None` when it is not in the block subset.
/// `scalar` resolves a plain scalar the block reader cannot decide alone (the full parser on it).
fn block(text: &str, scalar: &dyn Fn(&str) -> Option<Json>) -> Option<Json> {
    if memchr::memchr2(b'\t', b'\r', text.as_bytes()).is_some() {
        return None;
    }
    let mut lines = Vec::new();
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', text.as_bytes()) {
        lines.push(Line::new(&text[start..newline]));
        start = newline + 1;
    }
    if start < text.len() {
        lines.push(Line::new(&text[start..]));
    }
    let mut parser = Parser { lines, at: 0, scalar };
    let Some(first) = parser.next_structural() else { return Some(Json::Null) };
    let value = parser.node(parser.lines[first].indent)?;
    parser.next_structural().is_none().then_some(value)
}

/// One line: its indentation and the rest, trailing spaces left out.
#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    text: &'a str,
    raw: &'a str,
}

impl<'a> Line<'a> {
    fn new(raw: &'a str) -> Self {
        let trimmed = raw.trim_start_matches(' ');
        Line { indent: raw.len() - trimmed.len(), text: trimmed.trim_end_matches(' '), raw }
    }

    /// Blank or only a comment.
    fn is_filler(&self) -> bool {
        self.text.is_empty() || self.text.starts_with('#')
    }
}

struct Parser<'a, 's> {
    lines: Vec<Line<'a>>,
    at: usize,
    scalar: &'s dyn Fn(&str) -> Option<Json>,
}

impl<'a> Parser<'a, '_> {
    /// The index of the next line that is not filler (the cursor moves to it).
    fn next_structural(&mut self) -> Option<usize> {
        while self.at < self.lines.len() && self.lines[self.at].is_filler() {
            self.at += 1;
        }
        (self.at < self.lines.len()).then_some(self.at)
    }

    /// The node whose first line is the current one, at `indent`.
    fn node(&mut self, indent: usize) -> Option<Json> {
        let line = self.lines[self.at];
        if line.indent == 0 && (line.text.starts_with("---") || line.text.starts_with("...")) {
            return None;
        }
        if is_entry(line.text) {
            self.sequence(indent)
        } else if split_key(line.text).is_some() && !line.text.starts_with(['[', '{']) {
            self.mapping(indent)
        } else {
            self.at += 1;
            self.value(line.text, indent, false)
        }
    }

    fn sequence(&mut self, indent: usize) -> Option<Json> {
        let mut items = Vec::new();
        while let Some(i) = self.next_structural() {
            let line = self.lines[i];
            if line.indent < indent || (line.indent == indent && !is_entry(line.text)) {
                break;
            }
            if line.indent > indent {
                return None;
            }
            let rest = line.text[1..].trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.at += 1;
                items.push(self.nested(indent, false)?);
            } else {
                // `- rest` reads as `rest` at the column it starts at.
                let column = indent + (line.text.len() - rest.len());
                self.lines[i] = Line { indent: column, text: rest, raw: line.raw };
                items.push(self.node(column)?);
            }
        }
        Some(Json::Array(items))
    }

    fn mapping(&mut self, indent: usize) -> Option<Json> {
        let mut map = Map::new();
        while let Some(i) = self.next_structural() {
            let line = self.lines[i];
            if line.indent < indent {
                break;
            }
            if line.indent > indent || is_entry(line.text) {
                // A sequence at the mapping's own indentation ends it only in the caller.
                if line.indent == indent {
                    break;
                }
                return None;
            }
            let (key, rest) = split_key(line.text)?;
            let key = self.key(key)?;
            if key == "<<" {
                return None;
            }
            self.at += 1;
            let value = self.value(rest, indent, true)?;
            if map.insert(key, value).is_some() {
                return None;
            }
        }
        Some(Json::Object(map))
    }

    /// The value after `key:` or `- ` (`rest`, the line already consumed) of a node at
    /// `indent`; `in_mapping` lets a sequence at the same indentation be the value.
    fn value(&mut self, rest: &str, indent: usize, in_mapping: bool) -> Option<Json> {
        let Some(first) = rest.chars().next().filter(|c| *c != '#') else {
            return self.nested(indent, in_mapping);
        };
        let value = match first {
            '"' | '\'' => {
                let (text, after) = quoted(rest)?;
                comment_only(after)?;
                Json::String(text)
            }
            '|' => return self.literal(rest, indent),
            '[' | '{' => {
                let (value, after) = self.flow(rest)?;
                comment_only(after)?;
                value
            }
            '&' | '*' | '!' | '>' | '%' | '@' | '`' | '?' | ',' | ']' | '}' => return None,
            _ => {
                let text = strip_comment(rest);
                if is_entry(text) || find_pair(text, b':', b' ').is_some() || text.ends_with(':') {
                    return None;
                }
                self.plain(text)?
            }
        };
        // A scalar's node ends on its line: a deeper line after it would continue it.
        match self.next_structural() {
            Some(i) if self.lines[i].indent > indent => None,
            _ => Some(value),
        }
    }

    /// The block under a `key:` or `-` with nothing after it: deeper lines, a sequence at the
    /// key's own indentation, or null.
    fn nested(&mut self, indent: usize, in_mapping: bool) -> Option<Json> {
        match self.next_structural() {
            Some(i) if self.lines[i].indent > indent => self.node(self.lines[i].indent),
            Some(i) if in_mapping && self.lines[i].indent == indent && is_entry(self.lines[i].text) => {
                self.sequence(indent)
            }
            _ => Some(Json::Null),
        }
    }

    /// A `|` or `|-` literal block scalar; other headers give way.
    fn literal(&mut self, header: &str, indent: usize) -> Option<Json> {
        let keep_last = match strip_comment(header) {
            "|" => true,
            "|-" => false,
            _ => return None,
        };
        let start = self.at;
        let mut end = start;
        let mut content_indent = None;
        while end < self.lines.len() {
            let line = self.lines[end];
            if line.text.is_empty() {
                // Blank lines holding spaces that may be content: left to the full parser.
                if line.raw.len() > content_indent.unwrap_or(0) {
                    return None;
                }
                end += 1;
                continue;
            }
            if line.indent <= indent {
                break;
            }
            let want = *content_indent.get_or_insert(line.indent);
            if line.indent < want {
                return None;
            }
            end += 1;
        }
        let Some(content_indent) = content_indent else {
            self.at = end;
            return Some(Json::String(String::new()));
        };
        // Trailing blank lines belong to the chomping, not the content.
        let mut last = end;
        while last > start && self.lines[last - 1].text.is_empty() {
            last -= 1;
        }
        let mut out = String::new();
        for line in &self.lines[start..last] {
            out.push_str(line.raw.get(content_indent..).unwrap_or_default());
            out.push('\n');
        }
        if !keep_last {
            out.pop();
        }
        self.at = end;
        Some(Json::String(out))
    }

    /// A plain scalar: a string when it cannot be anything else, a decimal integer, or what
    /// the full parser makes of it.
    fn plain(&self, text: &str) -> Option<Json> {
        if find_pair(text, b' ', b'#').is_some() {
            return None;
        }
        match text {
            "true" => return Some(Json::Bool(true)),
            "false" => return Some(Json::Bool(false)),
            "null" | "~" => return Some(Json::Null),
            _ => {}
        }
        let first = text.chars().next()?;
        if (first.is_ascii_alphabetic() || first == '/') && !is_special_word(text) {
            return Some(Json::String(text.to_string()));
        }
        let digits = text.strip_prefix('-').unwrap_or(text);
        if (digits == "0" || (digits.len() <= 18 && !digits.starts_with('0')))
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            return text.parse::<i64>().ok().map(Json::from);
        }
        if is_digits_text(text) {
            return Some(Json::String(text.to_string()));
        }
        (self.scalar)(text)
    }

    /// A one-line flow collection at the start of `text` (`[a, "b"]`, `{k: v, 'q': [1]}`,
    /// JSON on one line): its value and what follows it. A collection spread over lines, a
    /// trailing comma, a collection as a key or anything unusual gives way to the full parser.
    fn flow<'t>(&self, text: &'t str) -> Option<(Json, &'t str)> {
        let close = if text.starts_with('[') { ']' } else { '}' };
        let mut rest = text[1..].trim_start_matches(' ');
        let mut items = Vec::new();
        let mut map = Map::new();
        if let Some(after) = rest.strip_prefix(close) {
            rest = after;
        } else {
            loop {
                if close == ']' {
                    let (item, after) = self.flow_node(rest)?;
                    items.push(item);
                    rest = after;
                } else {
                    let quoted_key = rest.starts_with(['"', '\'']);
                    let (key, after) = self.flow_scalar(rest, true)?;
                    let key = key_string(key);
                    // After a quoted key the value may follow the colon at once, as in JSON.
                    let after = match after.strip_prefix(':') {
                        Some(value) if quoted_key || value.starts_with(' ') => value.trim_start_matches(' '),
                        _ => return None,
                    };
                    let (value, after) = self.flow_node(after)?;
                    if key == "<<" || map.insert(key, value).is_some() {
                        return None;
                    }
                    rest = after;
                }
                rest = rest.trim_start_matches(' ');
                if let Some(after) = rest.strip_prefix(close) {
                    rest = after;
                    break;
                }
                rest = rest.strip_prefix(',')?.trim_start_matches(' ');
                if rest.starts_with(close) {
                    return None;
                }
            }
        }
        let value = if close == ']' { Json::Array(items) } else { Json::Object(map) };
        Some((value, rest))
    }

    /// A collection or a scalar inside a flow collection.
    fn flow_node<'t>(&self, text: &'t str) -> Option<(Json, &'t str)> {
        if text.starts_with(['[', '{']) { self.flow(text) } else { self.flow_scalar(text, false) }
    }

    /// One scalar inside a flow collection (a key when `key`): quoted, or plain up to the next
    /// `,`, `]`, `}` (or `: ` for a key).
    fn flow_scalar<'t>(&self, text: &'t str, key: bool) -> Option<(Json, &'t str)> {
        if text.starts_with(['"', '\'']) {
            let (value, after) = quoted(text)?;
            return Some((Json::String(value), after));
        }
        let end = text.find([',', ']', '}', '[', '{', '#']).unwrap_or(text.len());
        let end = if key { find_pair(text, b':', b' ').filter(|at| *at < end)? } else { end };
        let plain = text[..end].trim_end_matches(' ');
        let first = plain.chars().next()?;
        if "&*!|>%@`?-:\"'".contains(first) && !(first == '-' && plain.len() > 1 && !plain.starts_with("- "))
            || find_pair(plain, b':', b' ').is_some()
            || text[end..].starts_with(['[', '{', '#'])
        {
            return None;
        }
        Some((self.plain(plain)?, &text[end..]))
    }

    /// A mapping key as a JSON object key (resolved like a value, then written as text, as
    /// go-yaml and `sigs.k8s.io/yaml` do).
    fn key(&self, key: &str) -> Option<String> {
        match key.chars().next()? {
            '"' | '\'' => {
                let (text, after) = quoted(key)?;
                after.is_empty().then_some(text)
            }
            '&' | '*' | '!' | '|' | '>' | '%' | '@' | '`' | '?' | '[' | '{' | '-' | ',' => None,
            _ => self.plain(key).map(key_string),
        }
    }
}

/// `- …` or a lone `-`: a sequence entry.
fn is_entry(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// A mapping entry's key and the rest after `:` (leading spaces removed).
fn split_key(text: &str) -> Option<(&str, &str)> {
    if text.starts_with(['"', '\'']) {
        let (_, after) = quoted(text)?;
        let key_len = text.len() - after.len();
        let rest = after.strip_prefix(':')?;
        return (rest.is_empty() || rest.starts_with(' ')).then(|| (&text[..key_len], rest.trim_start_matches(' ')));
    }
    if let Some(at) = find_pair(text, b':', b' ') {
        return Some((&text[..at], text[at + 2..].trim_start_matches(' ')));
    }
    text.strip_suffix(':').map(|key| (key, ""))
}

/// A single-line quoted scalar at the start of `text`: its value and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let quote = text.chars().next()?;
    let body = &text[1..];
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if quote == '\'' => {
                if body[i + 1..].starts_with('\'') {
                    out.push('\'');
                    chars.next();
                } else {
                    return Some((out, &body[i + 1..]));
                }
            }
            '"' if quote == '"' => return Some((out, &body[i + 1..])),
            '\\' if quote == '"' => out.push(match chars.next()?.1 {
                '\\' => '\\',
                '"' => '"',
                '/' => '/',
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                _ => return None,
            }),
            _ => out.push(c),
        }
    }
    None
}

/// Nothing but spaces and an optional comment (after at least one space).
fn comment_only(text: &str) -> Option<()> {
    let rest = text.trim_start_matches(' ');
    (rest.is_empty() || (rest.starts_with('#') && rest.len() < text.len())).then_some(())
}

/// `text` without a trailing ` # comment`.
fn strip_comment(text: &str) -> &str {
    find_pair(text, b' ', b'#').map_or(text, |at| text[..at].trim_end_matches(' '))
}

/// Where the two bytes `first` and `second` first stand side by side in `text` (lines are
/// short: a plain scan beats setting up a substring search).
fn find_pair(text: &str, first: u8, second: u8) -> Option<usize> {
    text.as_bytes().windows(2).position(|pair| pair[0] == first && pair[1] == second)
}

/// A plain scalar that starts with a digit yet is text to every resolver go-yaml applies (an
/// integer in any base, a float, a timestamp): a quantity with a unit (`250m`, `2Gi`) or a
/// dotted version or address (`0.1.0`, `10.0.0.0`). Digits, dots and ASCII letters only; a
/// letter that a number may hold (an exponent, a base prefix, a hex float's `p`) or one dot (a
/// float) leaves it to the full parser.
fn is_digits_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_digit) || !bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'.')
    {
        return false;
    }
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    let numeric_letter = bytes.iter().any(|b| b"eExXoObBpP".contains(b));
    let dots = bytes.iter().filter(|b| **b == b'.').count();
    (letters > 0 && !numeric_letter) || (letters == 0 && dots >= 2)
}

/// Words YAML 1.1 (or a lenient number parser) reads as null, booleans or special floats.
fn is_special_word(text: &str) -> bool {
    const WORDS: &[&str] = &["null", "true", "false", "yes", "no", "on", "off", "y", "n", "inf", "nan", "infinity"];
    text.len() <= 8 && WORDS.iter().any(|w| w.eq_ignore_ascii_case(text))
}

/// Parses YAML the way Helm reads values (YAML 1.1 booleans and octals, numbers as floats
/// later).
pub fn parse_yaml(text: &str) -> Result<Json, String> {
    match block(text, &|scalar| full_yaml(scalar).ok()) {
        Some(value) => Ok(value),
        None => full_yaml(text),
    }
}

/// [`parse_yaml`] by the full YAML parser.
pub fn full_yaml(text: &str) -> Result<Json, String> {
    let mut opts = serde_saphyr::Options::default();
    opts.legacy_octal_numbers = true;
    // go-yaml v2 under sigs.k8s.io/yaml keeps the last of duplicate mapping keys.
    opts.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::LastWins;
    let docs: Vec<GoYaml> = serde_saphyr::from_multiple_with_options(text, opts).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().next().map(|d| d.0).unwrap_or(Json::Null))
}

/// A YAML value as go-yaml v2 and `sigs.k8s.io/yaml` see it: mapping keys are resolved like
/// values (a plain `n:` is the boolean false) and then written as JSON object keys.
struct GoYaml(Json);

impl<'de> serde::Deserialize<'de> for GoYaml {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(GoYamlVisitor).map(GoYaml)
    }
}

struct GoYamlVisitor;

impl<'de> serde::de::Visitor<'de> for GoYamlVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map(Json::Number).unwrap_or(Json::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(GoYamlVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        while let Some(GoYaml(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Json::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((GoYaml(k), GoYaml(v))) = map.next_entry()? {
            out.insert(key_string(k), v);
        }
        Ok(Json::Object(out))
    }
}

/// A mapping key as go-yaml v2 and `sigs.k8s.io/yaml` write it into JSON.
fn key_string(key: Json) -> String {
    match key {
        Json::String(s) => s,
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => super::value::go_float(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(text: &str) -> Option<Json> {
        block(text, &|scalar| full_yaml(scalar).ok())
    }

    /// Where the subset reads a document, it reads it exactly as the full parser does.
    fn agrees(text: &str) -> bool {
        match fast(text) {
            Some(value) => {
                assert_eq!(Ok(value), full_yaml(text), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn what_templates_emit_reads_as_the_full_parser_reads_it() {
        let read = [
            "",
            "# only a comment\n",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web # trailing\n  labels:\n    app: web\nspec:\n  ports:\n    - port: 80\n      targetPort: http\n      protocol: TCP\n      name: http\n",
            "containers:\n- name: a\n  args:\n  - -x\n  - \"--y=1\"\n  - 'it''s'\n- name: b\n  env: []\n  resources: {}\n",
            "a:\n  b:\n  c: null\n  d: ~\n  e: yes\n  f: No\n  g: on\n  h: 0755\n  i: 1.5\n  j: -3\n  k: 0\n  l: 1e3\n  m: 12345678901234567890\n  o: true\n",
            "n: 1\nyes: 2\n80: http\n1.5: x\n\"quoted key\": v\n",
            "script: |\n  echo one\n\n  echo two\nstripped: |-\n  a\n    b\n\nafter: x\n",
            "- - a\n  - b\n-\n  c: d\n- \"s\\\"q\\n\"\n",
            "url: http://example.com:8080/x#frag\npath: /var/run\ntime: 2024-01-01\nver: v1.2.3\nneg: -1x\n",
            "a: [1, 2]\ncommand: ['wget']\nargs: ['web-c1:80', \"-c\", it''s, -x, 0755, yes, 1.5]  # c\n",
            "m: {a: 1, \"b\": x, 'c d': y, n: ~}\ne: {}\nf: [ ]\nl:\n- {name: a, value: b}\n",
            "- [a, b]\n- {k: v}\n",
            "{\"replicaCount\":3,\"nameOverride\":\"c1\",\"podLabels\":{\"cluster\":\"cluster-1\"},\"l\":[1,[2,{}]],\"e\":\"a\\\"b\"}\n",
            "a: {b: [1, {c: d}], \"e\": {}}\n",
        ];
        for text in read {
            assert!(agrees(text), "the subset should read: {text}");
        }
        let left = [
            "a: [1, [2]\n",
            "a: {b:1}\n",
            "a: {[1]: 2}\n",
            "a: [1,\n  2]\n",
            "a: [a, b,]\n",
            "a: [a: b]\n",
            "a: {a:b}\n",
            "a: [x#y]\n",
            "a: {k: 1, k: 2}\n",
            "a: &x 1\nb: *x\n",
            "a: b: c\n",
            "a: !!str 1\n",
            "a: >\n  folded\n",
            "a: multi\n  line\n",
            "a: 1\na: 2\n",
            "a:\n\tb: 1\n",
            "a: \"multi\n  line\"\n",
            "a: 1\n---\nb: 2\n",
            "? complex\n: key\n",
            "a: |2\n   x\n",
        ];
        for text in left {
            assert!(fast(text).is_none(), "should give way to the full parser: {text}");
        }
    }

    /// Quantities and dotted versions are read as text without the full parser, exactly as it
    /// reads them; anything a number parser might take is still left to it.
    #[test]
    fn digit_led_text_is_read_without_the_full_parser() {
        let alone = |text: &str| block(text, &|_| None);
        for scalar in ["250m", "2Gi", "128Mi", "1h", "3d", "0.1.0", "10.0.0.0", "1.2.3", "1..2", "4G.5", "1a2"] {
            let text = format!("v: {scalar}\n");
            assert_eq!(alone(&text), Some(serde_json::json!({"v": scalar})), "{scalar}");
            assert_eq!(full_yaml(&text), Ok(serde_json::json!({"v": scalar})), "{scalar}");
        }
        for scalar in [
            "1.5",
            "1e3",
            "1E3",
            "0x1F",
            "0o17",
            "0b101",
            "0755",
            "1_000",
            "1.",
            "2024-01-02",
            "1:20",
            "1p3",
            "12345678901234567890",
        ] {
            assert_eq!(alone(&format!("v: {scalar}\n")), None, "{scalar} is left to the full parser");
        }
    }

    /// Every YAML document of the test fixtures (kustomizations, charts' values and files):
    /// the subset agrees with the full parser wherever it reads one, and reads more than half.
    #[test]
    fn every_fixture_document_reads_as_the_full_parser_reads_it() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("fixture directory").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"), &mut files);
        let (mut read, mut total) = (0, 0);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("fixture");
            for doc in crate::helm::release::split_manifests(&text) {
                if full_yaml(doc).is_ok() {
                    total += 1;
                    read += usize::from(agrees(doc));
                }
            }
        }
        assert!(total > 500 && read * 2 > total, "the subset read {read} of {total} documents");
    }
}

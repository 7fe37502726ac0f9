//! YAML the way Helm's `toYaml`/`fromYaml` do it: `sigs.k8s.io/yaml`, i.e. a JSON round trip
//! then go-yaml v2's emitter (keys in its natural order, strings quoted only when they would
//! read back as something else, multi-line strings as `|` blocks, long lines folded at 80).

use std::cmp::Ordering;
use std::sync::OnceLock;

use super::value::{Value, go_float};

/// A node after the JSON round trip.
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn normalize(v: &Value) -> Node {
    match v {
        Value::Nil => Node::Null,
        Value::Bool(b) => Node::Bool(*b),
        Value::Int(i) | Value::Int64(i) => Node::Int(*i),
        Value::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 9.2e18 {
                Node::Int(*f as i64)
            } else if f.is_finite() {
                Node::Float(*f)
            } else {
                Node::Null
            }
        }
        Value::Str(s) => Node::Str(s.to_string()),
        Value::List(l) => Node::Seq(l.iter().map(normalize).collect()),
        Value::Map(m) => {
            let mut items: Vec<(String, Node)> = m.borrow().iter().map(|(k, v)| (k.clone(), normalize(v))).collect();
            items.sort_by(|a, b| key_order(&a.0, &b.0));
            Node::Map(items)
        }
        Value::Obj(o) => normalize(&Value::from_json(&o.to_json())),
    }
}

/// go-yaml v2's `keyList.Less` for string keys: digit runs compare as numbers, letters
/// before non-letters.
pub fn key_order(a: &str, b: &str) -> Ordering {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            i += 1;
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            return if bl { Ordering::Less } else { Ordering::Greater };
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an.wrapping_mul(10).wrapping_add(i64::from(ar[ai] as u8 - b'0'));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn.wrapping_mul(10).wrapping_add(i64::from(br[bi] as u8 - b'0'));
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

/// `toYaml`'s text (with the trailing newline go-yaml writes).
pub fn to_yaml(v: &Value) -> String {
    emit(v, false)
}

fn emit(v: &Value, indent_seq: bool) -> String {
    let node = normalize(v);
    let mut e = Emitter { out: String::new(), indent_seq };
    match &node {
        Node::Map(m) if !m.is_empty() => e.map(m, 0, false),
        Node::Seq(s) if !s.is_empty() => e.seq(s, 0, false),
        other => {
            e.scalar_inline(other, 2, false);
            e.out.push('\n');
        }
    }
    e.out
}

/// `toYamlPretty`: go-yaml v3 with two-space indentation, which indents sequences below
/// their key (other v3 differences are not reproduced).
pub fn to_yaml_pretty(v: &Value) -> String {
    emit(v, true)
}

struct Emitter {
    out: String,
    /// Sequences in mappings indented below their key (v3 with `SetIndent(2)`).
    indent_seq: bool,
}

const BEST_WIDTH: usize = 80;

impl Emitter {
    fn column(&self) -> usize {
        match self.out.rfind('\n') {
            Some(i) => self.out[i + 1..].chars().count(),
            None => self.out.chars().count(),
        }
    }

    fn pad(&mut self, n: usize) {
        for _ in 0..n {
            self.out.push(' ');
        }
    }

    /// A block mapping whose keys sit at column `ind`; `inline` when the first key follows
    /// a `- ` already written.
    fn map(&mut self, m: &[(String, Node)], ind: usize, inline: bool) {
        for (i, (k, v)) in m.iter().enumerate() {
            if i > 0 || !inline {
                self.pad(ind);
            }
            self.key(k);
            self.out.push(':');
            match v {
                Node::Map(mm) if !mm.is_empty() => {
                    self.out.push('\n');
                    self.map(mm, ind + 2, false);
                }
                Node::Seq(s) if !s.is_empty() => {
                    self.out.push('\n');
                    let seq_ind = if self.indent_seq { ind + 2 } else { ind };
                    self.seq(s, seq_ind, false);
                }
                other => {
                    self.out.push(' ');
                    self.scalar_inline(other, ind + 2, false);
                    self.out.push('\n');
                }
            }
        }
    }

    fn seq(&mut self, s: &[Node], ind: usize, inline: bool) {
        for (i, v) in s.iter().enumerate() {
            if i > 0 || !inline {
                self.pad(ind);
            }
            self.out.push_str("- ");
            match v {
                Node::Map(mm) if !mm.is_empty() => self.map(mm, ind + 2, true),
                Node::Seq(ss) if !ss.is_empty() => self.seq(ss, ind + 2, true),
                other => {
                    self.scalar_inline(other, ind + 2, false);
                    self.out.push('\n');
                }
            }
        }
    }

    fn key(&mut self, k: &str) {
        let style = choose_style(k, true);
        self.write_str(k, style, 0, false);
    }

    /// A scalar (or empty collection) after `key: ` or `- `, continuing at `ind`.
    fn scalar_inline(&mut self, v: &Node, ind: usize, _key: bool) {
        match v {
            Node::Null => self.out.push_str("null"),
            Node::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Node::Int(i) => self.out.push_str(&i.to_string()),
            Node::Float(f) => self.out.push_str(&go_float(*f)),
            Node::Map(_) => self.out.push_str("{}"),
            Node::Seq(_) => self.out.push_str("[]"),
            Node::Str(s) => {
                let style = choose_style(s, false);
                self.write_str(s, style, ind, true);
            }
        }
    }

    fn write_str(&mut self, s: &str, style: Style, ind: usize, allow_breaks: bool) {
        match style {
            Style::Plain => self.plain(s, ind, allow_breaks),
            Style::Single => self.single(s, ind, allow_breaks),
            Style::Double => self.double(s, ind, allow_breaks),
            Style::Literal => self.literal(s, ind),
        }
    }

    fn plain(&mut self, s: &str, ind: usize, allow_breaks: bool) {
        let chars: Vec<char> = s.chars().collect();
        let mut col = self.column();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if allow_breaks && !spaces && col > BEST_WIDTH && chars.get(i + 1) != Some(&' ') {
                    self.out.push('\n');
                    self.pad(ind);
                    col = ind;
                } else {
                    self.out.push(c);
                    col += 1;
                }
                spaces = true;
            } else {
                self.out.push(c);
                col += 1;
                spaces = false;
            }
        }
    }

    fn single(&mut self, s: &str, ind: usize, allow_breaks: bool) {
        self.out.push('\'');
        let chars: Vec<char> = s.chars().collect();
        let mut col = self.column();
        let mut spaces = false;
        let n = chars.len();
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if allow_breaks && !spaces && col > BEST_WIDTH && i > 0 && i + 1 < n && chars[i + 1] != ' ' {
                    self.out.push('\n');
                    self.pad(ind);
                    col = ind;
                } else {
                    self.out.push(c);
                    col += 1;
                }
                spaces = true;
            } else {
                if c == '\'' {
                    self.out.push('\'');
                    col += 1;
                }
                self.out.push(c);
                col += 1;
                spaces = false;
            }
        }
        self.out.push('\'');
    }

    fn double(&mut self, s: &str, ind: usize, allow_breaks: bool) {
        self.out.push('"');
        let chars: Vec<char> = s.chars().collect();
        let mut col = self.column();
        let mut spaces = false;
        let n = chars.len();
        for (i, &c) in chars.iter().enumerate() {
            if !is_printable(c) || c == '\u{feff}' || is_break(c) || c == '"' || c == '\\' {
                let esc = match c {
                    '\0' => "\\0".to_string(),
                    '\u{7}' => "\\a".into(),
                    '\u{8}' => "\\b".into(),
                    '\t' => "\\t".into(),
                    '\n' => "\\n".into(),
                    '\u{b}' => "\\v".into(),
                    '\u{c}' => "\\f".into(),
                    '\r' => "\\r".into(),
                    '\u{1b}' => "\\e".into(),
                    '"' => "\\\"".into(),
                    '\\' => "\\\\".into(),
                    '\u{85}' => "\\N".into(),
                    '\u{a0}' => "\\_".into(),
                    '\u{2028}' => "\\L".into(),
                    '\u{2029}' => "\\P".into(),
                    c if (c as u32) <= 0xff => format!("\\x{:02X}", c as u32),
                    c if (c as u32) <= 0xffff => format!("\\u{:04X}", c as u32),
                    c => format!("\\U{:08X}", c as u32),
                };
                col += esc.chars().count();
                self.out.push_str(&esc);
                spaces = false;
            } else if c == ' ' {
                if allow_breaks && !spaces && col > BEST_WIDTH && i != 0 && i != n - 1 {
                    self.out.push('\n');
                    self.pad(ind);
                    col = ind;
                    if chars.get(i + 1) == Some(&' ') {
                        self.out.push('\\');
                        col += 1;
                    }
                } else {
                    self.out.push(c);
                    col += 1;
                }
                spaces = true;
            } else {
                self.out.push(c);
                col += 1;
                spaces = false;
            }
        }
        self.out.push('"');
    }

    fn literal(&mut self, s: &str, ind: usize) {
        self.out.push('|');
        let first = s.chars().next();
        if first.is_some_and(|c| c == ' ' || is_break(c)) {
            self.out.push('2');
        }
        let chars: Vec<char> = s.chars().collect();
        let chomp = if chars.is_empty() || !is_break(chars[chars.len() - 1]) {
            "-"
        } else if chars.len() == 1 || is_break(chars[chars.len() - 2]) {
            "+"
        } else {
            ""
        };
        self.out.push_str(chomp);
        self.out.push('\n');
        let mut breaks = true;
        for &c in &chars {
            if is_break(c) {
                self.out.push('\n');
                breaks = true;
            } else {
                if breaks {
                    self.pad(ind);
                }
                self.out.push(c);
                breaks = false;
            }
        }
        // The caller adds the final newline; a value ending in a break already has it.
        if breaks && self.out.ends_with('\n') {
            self.out.pop();
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// go-yaml's `is_printable` (note: tab and characters outside the BMP are not).
fn is_printable(c: char) -> bool {
    let u = c as u32;
    u == 0x0a
        || (0x20..=0x7e).contains(&u)
        || (0xa0..=0xd7ff).contains(&u)
        || ((0xe000..=0xfffd).contains(&u) && u != 0xfeff)
}

struct Analysis {
    flow_plain: bool,
    block_plain: bool,
    single: bool,
    block: bool,
    multiline: bool,
}

fn analyze(s: &str) -> Analysis {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return Analysis { flow_plain: false, block_plain: true, single: true, block: false, multiline: false };
    }
    let (mut block_ind, mut flow_ind) = (false, false);
    if s.starts_with("---") || s.starts_with("...") {
        block_ind = true;
        flow_ind = true;
    }
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) = (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut prev_space, mut prev_break) = (false, false);
    let mut preceded_ws = true;
    let n = chars.len();
    for i in 0..n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let followed_ws = next.is_none_or(|x| x == ' ' || x == '\t' || is_break(x));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%' | '@' | '`' => {
                    flow_ind = true;
                    block_ind = true;
                }
                '?' | ':' => {
                    flow_ind = true;
                    if followed_ws {
                        block_ind = true;
                    }
                }
                '-' if followed_ws => {
                    flow_ind = true;
                    block_ind = true;
                }
                _ => {}
            }
        } else {
            match c {
                ',' | '?' | '[' | ']' | '{' | '}' => flow_ind = true,
                ':' => {
                    flow_ind = true;
                    if followed_ws {
                        block_ind = true;
                    }
                }
                '#' if preceded_ws => {
                    flow_ind = true;
                    block_ind = true;
                }
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        if is_break(c) {
            line_breaks = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i == n - 1 {
                trailing_space = true;
            }
            if prev_break {
                break_space = true;
            }
            prev_space = true;
            prev_break = false;
        } else if is_break(c) {
            if i == 0 {
                leading_break = true;
            }
            if i == n - 1 {
                trailing_break = true;
            }
            if prev_space {
                space_break = true;
            }
            prev_break = true;
            prev_space = false;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_ws = c == ' ' || c == '\t' || is_break(c);
    }
    let mut a = Analysis { flow_plain: true, block_plain: true, single: true, block: true, multiline: line_breaks };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.flow_plain = false;
        a.block_plain = false;
    }
    if trailing_space {
        a.block = false;
    }
    if break_space {
        a.flow_plain = false;
        a.block_plain = false;
        a.single = false;
    }
    if space_break || special {
        a.flow_plain = false;
        a.block_plain = false;
        a.single = false;
        a.block = false;
    }
    if line_breaks {
        a.flow_plain = false;
        a.block_plain = false;
    }
    if flow_ind {
        a.flow_plain = false;
    }
    if block_ind {
        a.block_plain = false;
    }
    a
}

fn choose_style(s: &str, key: bool) -> Style {
    let mut style = if s.contains('\n') {
        Style::Literal
    } else if resolves_as_string(s) && !is_base60(s) {
        Style::Plain
    } else {
        Style::Double
    };
    let a = analyze(s);
    let _ = a.multiline;
    if style == Style::Plain {
        if !a.block_plain {
            style = Style::Single;
        }
        if s.is_empty() && key {
            style = Style::Single;
        }
    }
    if style == Style::Single && !a.single {
        style = Style::Double;
    }
    if style == Style::Literal && (!a.block || key) {
        style = Style::Double;
    }
    style
}

fn re(pat: &str, cell: &'static OnceLock<regex::Regex>) -> &'static regex::Regex {
    cell.get_or_init(|| regex::Regex::new(pat).expect("valid regex"))
}

fn is_base60(s: &str) -> bool {
    static R: OnceLock<regex::Regex> = OnceLock::new();
    re(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$", &R).is_match(s)
}

/// Whether go-yaml v2 reads the plain scalar `s` back as a string.
pub fn resolves_as_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE", "n",
        "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE", ".nan", ".NaN", ".NAN", ".inf", ".Inf",
        ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", "<<",
    ];
    if SPECIAL.contains(&s) {
        return false;
    }
    let Some(first) = s.bytes().next() else { return false };
    match first {
        b'.' => go_parse_float(s).is_none(),
        b'+' | b'-' | b'0'..=b'9' => {
            static TS: OnceLock<regex::Regex> = OnceLock::new();
            static FL: OnceLock<regex::Regex> = OnceLock::new();
            if re(r"^\d{4}-\d{1,2}-\d{1,2}(?:(?:[Tt]|[ \t]+)\d{1,2}:\d{1,2}:\d{1,2}(?:\.\d*)?(?:[ \t]*(?:Z|[-+]\d{1,2}(?::?\d{2})?))?)?$", &TS).is_match(s) {
                return false;
            }
            let plain = s.replace('_', "");
            if go_parse_int(&plain) {
                return false;
            }
            if re(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$", &FL).is_match(&plain) {
                return false;
            }
            true
        }
        _ => true,
    }
}

fn go_parse_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = body.to_ascii_lowercase();
    if let Some(h) = lower.strip_prefix("0x") {
        return !h.is_empty() && u64::from_str_radix(h, 16).is_ok();
    }
    if let Some(b) = lower.strip_prefix("0b") {
        return !b.is_empty() && u64::from_str_radix(b, 2).is_ok();
    }
    if let Some(o) = lower.strip_prefix("0o") {
        return !o.is_empty() && u64::from_str_radix(o, 8).is_ok();
    }
    if lower.len() > 1 && lower.starts_with('0') {
        return u64::from_str_radix(&lower[1..], 8).is_ok();
    }
    !lower.is_empty() && lower.bytes().all(|c| c.is_ascii_digit()) && lower.parse::<u64>().is_ok()
}

fn go_parse_float(s: &str) -> Option<f64> {
    let l = s.to_ascii_lowercase();
    if l.trim_start_matches(['+', '-']).starts_with("inf") || l == "nan" {
        return Some(0.0);
    }
    if l.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-')) {
        return l.parse().ok();
    }
    None
}

/// `fromYaml`: parses one YAML document into values with every number a `float64` (the
/// JSON round trip of `sigs.k8s.io/yaml`). Errors carry go-yaml-like text.
pub fn from_yaml(text: &str) -> Result<Value, String> {
    let doc = super::yaml_read::parse_yaml(text).map_err(|e| format!("error converting YAML to JSON: yaml: {e}"))?;
    Ok(Value::from_json(&doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(json: &str) -> String {
        to_yaml(&Value::from_json(&serde_json::from_str(json).expect("json")))
    }

    #[test]
    fn prints_like_go_yaml_v2() {
        assert_eq!(
            y(r#"{"b":1,"a":[1,"x",{"c":null}],"e":{},"f":[]}"#),
            "a:\n- 1\n- x\n- c: null\nb: 1\ne: {}\nf: []\n"
        );
        assert_eq!(
            y(r#"{"s":"yes","t":"1.0","u":"","v":"a: b","w":"line1\nline2\n"}"#),
            "s: \"yes\"\nt: \"1.0\"\nu: \"\"\nv: 'a: b'\nw: |\n  line1\n  line2\n"
        );
        assert_eq!(y(r#"{"x":1.5,"y":12345678,"z":"2024-01-02"}"#), "x: 1.5\n\"y\": 12345678\nz: \"2024-01-02\"\n");
        assert_eq!(y(r#"[[1,2],{"a":1,"b":2}]"#), "- - 1\n  - 2\n- a: 1\n  b: 2\n");
    }

    #[test]
    fn natural_key_order() {
        let mut keys = vec!["a10", "a9", "b", "A", "_x", "a"];
        keys.sort_by(|a, b| key_order(a, b));
        assert_eq!(keys, vec!["_x", "A", "a", "a9", "a10", "b"]);
    }
}

//! Go `text/template` parsing: delimiters with whitespace trimming, comments, actions and
//! their pipelines, and the control structures (`if`/`else if`/`with`/`range`/`define`/
//! `block`/`template`/`break`/`continue`).

use std::collections::HashMap;
use std::sync::Arc;

/// One template file's text, kept for positions in error messages.
#[derive(Debug)]
pub struct SourceText {
    /// The template's name (`chart/templates/x.yaml`).
    pub name: String,
    /// Its text.
    pub text: String,
}

impl SourceText {
    /// Go's `line:col` of a byte offset (col counts bytes from 0 after the newline).
    pub fn line_col(&self, pos: usize) -> (usize, usize) {
        let pos = pos.min(self.text.len());
        let before = &self.text.as_bytes()[..pos];
        let line = 1 + before.iter().filter(|b| **b == b'\n').count();
        let col = match before.iter().rposition(|b| *b == b'\n') {
            Some(nl) => pos - (nl + 1),
            None => pos,
        };
        (line, col)
    }
}

/// A node of a parsed template.
#[derive(Debug)]
pub enum Node {
    /// Literal text.
    Text(String),
    /// `{{pipeline}}`: printed unless it declares variables.
    Action(Pipe),
    /// `{{if}}`.
    If(Branch),
    /// `{{with}}`.
    With(Branch),
    /// `{{range}}`.
    Range(Branch),
    /// `{{template "name" pipeline}}`.
    Template {
        /// Offset in the source.
        pos: usize,
        /// Template name.
        name: String,
        /// Its data.
        pipe: Option<Pipe>,
    },
    /// `{{break}}`.
    Break,
    /// `{{continue}}`.
    Continue,
}

/// A control structure's pipeline and branches.
#[derive(Debug)]
pub struct Branch {
    /// The condition or range pipeline.
    pub pipe: Pipe,
    /// Nodes run when it holds.
    pub list: Vec<Node>,
    /// `{{else}}` nodes.
    pub else_list: Option<Vec<Node>>,
}

/// A pipeline, with variables it declares or assigns.
#[derive(Debug)]
pub struct Pipe {
    /// Offset in the source.
    pub pos: usize,
    /// Variable names (`$x`), declared (`:=`) or assigned (`=`).
    pub decl: Vec<Arc<str>>,
    /// `=` rather than `:=`.
    pub assign: bool,
    /// The commands, each fed the previous one's result as its last argument.
    pub cmds: Vec<Cmd>,
}

/// One command of a pipeline.
#[derive(Debug)]
pub struct Cmd {
    /// Offset in the source.
    pub pos: usize,
    /// End offset in the source (for error context).
    pub end: usize,
    /// Operands; the first is the function or value.
    pub args: Vec<Arg>,
}

/// An operand.
#[derive(Debug)]
pub enum Arg {
    /// `.`
    Dot(usize),
    /// `nil`
    Nil(usize),
    /// `true`/`false`
    Bool(bool),
    /// A number literal.
    Num(Num),
    /// A string literal.
    Str(Arc<str>),
    /// `.A.B`
    Field(usize, Vec<String>),
    /// `$x.A.B`
    Var(usize, String, Vec<String>),
    /// A function name.
    Ident(usize, String),
    /// `(pipeline)` with optional fields after it.
    Pipe(usize, Box<Pipe>, Vec<String>),
}

/// A number literal: Go's untyped constant, an `int` unless written as a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Integer literal (or character constant).
    Int(i64),
    /// Float literal (contains `.`, `e` or `p`).
    Float(f64),
}

impl Arg {
    /// The source offset of the operand.
    pub fn pos(&self) -> usize {
        match self {
            Arg::Dot(p)
            | Arg::Nil(p)
            | Arg::Field(p, _)
            | Arg::Var(p, _, _)
            | Arg::Ident(p, _)
            | Arg::Pipe(p, _, _) => *p,
            _ => 0,
        }
    }
}

/// A parse failure: `template: NAME:LINE: message`.
#[derive(Debug, Clone)]
pub struct ParseError {
    /// Template name.
    pub name: String,
    /// Line (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "parse error at ({}:{}): {}", self.name, self.line, self.message)
    }
}

/// A parsed file: its main body and the templates it defines.
#[derive(Debug)]
pub struct Parsed {
    /// The file's own body.
    pub body: Vec<Node>,
    /// `define`d and `block` templates, in order.
    pub defines: Vec<(String, Vec<Node>)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Field(Vec<String>),
    Var(String),
    Str(String),
    Num(Num),
    Char(i64),
    Pipe,
    LParen,
    RParen,
    Comma,
    Declare,
    Assign,
    Dot,
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    pos: usize,
    end: usize,
    /// Whitespace precedes this token.
    space: bool,
}

enum Item {
    Text(String),
    Action { pos: usize, end: usize, toks: Vec<Token> },
}

/// Parses `src` (the template called `src.name`). `is_func` says whether a name is a known
/// function (an unknown one is a parse error, as in Go).
pub fn parse(src: &SourceText, is_func: &dyn Fn(&str) -> bool) -> Result<Parsed, ParseError> {
    let items = split(src)?;
    let mut p = Parser { src, items, i: 0, defines: Vec::new(), is_func };
    let (body, end) = p.list(true)?;
    if let Some((what, pos)) = end {
        return Err(p.err(pos, format!("unexpected {what}")));
    }
    Ok(Parsed { body, defines: p.defines })
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits the text into literal text and tokenized actions, applying `{{-`/`-}}` trimming
/// and dropping comments.
fn split(src: &SourceText) -> Result<Vec<Item>, ParseError> {
    let text = src.text.as_bytes();
    let mut items = Vec::new();
    let mut i = 0;
    let mut trim_next = false;
    let err = |pos: usize, msg: String| ParseError { name: src.name.clone(), line: src.line_col(pos).0, message: msg };
    loop {
        let start = i;
        let open = find(text, i, b"{{");
        let text_end = open.unwrap_or(text.len());
        let mut lit = &src.text[start..text_end];
        if trim_next {
            lit = lit.trim_start_matches([' ', '\t', '\r', '\n']);
            trim_next = false;
        }
        let Some(open) = open else {
            if !lit.is_empty() {
                items.push(Item::Text(lit.to_string()));
            }
            break;
        };
        let mut j = open + 2;
        if j + 1 < text.len() && text[j] == b'-' && is_space(text[j + 1]) {
            lit = lit.trim_end_matches([' ', '\t', '\r', '\n']);
            j += 1;
        }
        if !lit.is_empty() {
            items.push(Item::Text(lit.to_string()));
        }
        // A comment must follow the delimiter (and its trim marker) directly.
        let k = if j > open + 2 { j + 1 } else { j };
        if text[k.min(text.len())..].starts_with(b"/*") {
            let Some(close) = find(text, k + 2, b"*/") else {
                return Err(err(open, "unclosed comment".into()));
            };
            let after = close + 2;
            if text.get(after).is_some_and(|c| is_space(*c)) && text[after + 1..].starts_with(b"-}}") {
                trim_next = true;
                i = after + 4;
            } else if text[after..].starts_with(b"}}") {
                i = after + 2;
            } else {
                return Err(err(open, "comment ends before closing delimiter".into()));
            }
            continue;
        }
        let (toks, end, trim) = lex_action(src, j)?;
        items.push(Item::Action { pos: open, end, toks });
        trim_next = trim;
        i = end;
    }
    Ok(items)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// Lexes one action starting after `{{` (and its trim marker). Returns the tokens, the
/// offset after the closing delimiter, and whether it trims the following text.
fn lex_action(src: &SourceText, mut i: usize) -> Result<(Vec<Token>, usize, bool), ParseError> {
    let t = src.text.as_bytes();
    let err = |pos: usize, msg: String| ParseError { name: src.name.clone(), line: src.line_col(pos).0, message: msg };
    let mut toks: Vec<Token> = Vec::new();
    let mut space = true;
    let mut parens = 0i32;
    loop {
        if i >= t.len() {
            return Err(err(i, "unclosed action".into()));
        }
        let c = t[i];
        if is_space(c) {
            // ` -}}` closes with trimming.
            let mut k = i;
            while k < t.len() && is_space(t[k]) {
                k += 1;
            }
            if t[k..].starts_with(b"-}}") {
                if parens > 0 {
                    return Err(err(i, "unclosed left paren".into()));
                }
                return Ok((toks, k + 3, true));
            }
            if c == b'\n' && parens == 0 {
                // Newlines are allowed inside actions since Go 1.16; keep going.
            }
            i = k;
            space = true;
            continue;
        }
        if t[i..].starts_with(b"}}") {
            if parens > 0 {
                return Err(err(i, "unclosed left paren".into()));
            }
            return Ok((toks, i + 2, false));
        }
        let start = i;
        let tok = match c {
            b'|' => {
                i += 1;
                Tok::Pipe
            }
            b'(' => {
                i += 1;
                parens += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                parens -= 1;
                if parens < 0 {
                    return Err(err(start, "unexpected right paren".into()));
                }
                Tok::RParen
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b':' => {
                if t.get(i + 1) == Some(&b'=') {
                    i += 2;
                    Tok::Declare
                } else {
                    return Err(err(start, "expected :=".into()));
                }
            }
            b'=' => {
                i += 1;
                Tok::Assign
            }
            b'"' => {
                let (s, e) = lex_quoted(&src.text, i).ok_or_else(|| err(start, "unterminated quoted string".into()))?;
                i = e;
                Tok::Str(s)
            }
            b'`' => {
                let close = find(t, i + 1, b"`").ok_or_else(|| err(start, "unterminated raw quoted string".into()))?;
                let s = src.text[i + 1..close].replace('\r', "");
                i = close + 1;
                Tok::Str(s)
            }
            b'\'' => {
                let (s, e) =
                    lex_char(&src.text, i).ok_or_else(|| err(start, "unterminated character constant".into()))?;
                i = e;
                Tok::Char(s)
            }
            b'$' => {
                let mut e = i + 1;
                while e < t.len() && (t[e].is_ascii_alphanumeric() || t[e] == b'_' || t[e] >= 0x80) {
                    e += 1;
                }
                let name = src.text[i..e].to_string();
                i = e;
                Tok::Var(name)
            }
            b'.' if t.get(i + 1).is_none_or(|d| !d.is_ascii_digit()) => {
                // Field chain or dot.
                let mut fields = Vec::new();
                let mut e = i;
                while e < t.len() && t[e] == b'.' {
                    let s = e + 1;
                    let mut f = s;
                    while f < t.len() && (t[f].is_ascii_alphanumeric() || t[f] == b'_' || t[f] >= 0x80) {
                        f += 1;
                    }
                    if f == s {
                        break;
                    }
                    fields.push(src.text[s..f].to_string());
                    e = f;
                }
                if fields.is_empty() {
                    i += 1;
                    Tok::Dot
                } else {
                    i = e;
                    Tok::Field(fields)
                }
            }
            b'0'..=b'9' | b'-' | b'+' | b'.' => {
                let mut e = i + 1;
                while e < t.len()
                    && (t[e].is_ascii_alphanumeric()
                        || t[e] == b'.'
                        || t[e] == b'_'
                        || ((t[e] == b'+' || t[e] == b'-') && exponent_sign(&src.text[i..e])))
                {
                    e += 1;
                }
                let text = &src.text[i..e];
                let n = parse_number(text).ok_or_else(|| err(start, format!("bad number syntax: {text:?}")))?;
                i = e;
                Tok::Num(n)
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let mut e = i;
                while e < t.len() && (t[e].is_ascii_alphanumeric() || t[e] == b'_' || t[e] >= 0x80) {
                    e += 1;
                }
                let name = src.text[i..e].to_string();
                i = e;
                Tok::Ident(name)
            }
            _ => {
                let ch = src.text[i..].chars().next().unwrap_or(' ');
                return Err(err(start, format!("unexpected \"{ch}\" in command")));
            }
        };
        toks.push(Token { tok, pos: start, end: i, space });
        space = false;
    }
}

fn parse_number(text: &str) -> Option<Num> {
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let (neg, body) = match clean.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean).to_string()),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|c| c.is_ascii_digit()) {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else if lower.bytes().all(|c| c.is_ascii_digit()) {
        lower.parse().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Some(Num::Int(if neg { -i } else { i }));
    }
    let f: f64 = match lower.strip_prefix("0x") {
        Some(hex) => parse_hex_float(hex)?,
        None => lower.parse().ok()?,
    };
    Some(Num::Float(if neg { -f } else { f }))
}

/// Whether a sign may follow the number text `so_far`: right after the exponent letter, `e`
/// for a decimal literal, `p` for a hexadecimal one (where `e` is a digit).
fn exponent_sign(so_far: &str) -> bool {
    let body = so_far.trim_start_matches(['-', '+']);
    let hex = body.len() > 1 && body[..2].eq_ignore_ascii_case("0x");
    match so_far.as_bytes().last() {
        Some(b'p' | b'P') => hex,
        Some(b'e' | b'E') => !hex,
        _ => false,
    }
}

/// A Go hexadecimal floating-point literal after its `0x` (`1p60`, `1.8p-3`): hex digits with
/// an optional point, then a mandatory binary exponent.
fn parse_hex_float(hex: &str) -> Option<f64> {
    let (mantissa, exp) = hex.split_once('p')?;
    let exp: i32 = exp.parse().ok()?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut value = 0f64;
    for c in int.chars() {
        value = value * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        value += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    Some(value * 2f64.powi(exp))
}

/// Lexes a Go double-quoted string at `i`; returns its value and the end offset.
pub fn lex_quoted(s: &str, i: usize) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'"' => return Some((out, j + 1)),
            b'\n' => return None,
            b'\\' => {
                let (c, n) = unescape(s, j)?;
                out.push_str(&c);
                j = n;
            }
            _ => {
                let ch = s[j..].chars().next()?;
                out.push(ch);
                j += ch.len_utf8();
            }
        }
    }
    None
}

fn lex_char(s: &str, i: usize) -> Option<(i64, usize)> {
    let b = s.as_bytes();
    let j = i + 1;
    let (val, next) = if b.get(j) == Some(&b'\\') {
        let (c, n) = unescape(s, j)?;
        (c.chars().next()? as i64, n)
    } else {
        let ch = s[j..].chars().next()?;
        (ch as i64, j + ch.len_utf8())
    };
    if b.get(next) == Some(&b'\'') { Some((val, next + 1)) } else { None }
}

/// One backslash escape at `j` (pointing at the backslash).
fn unescape(s: &str, j: usize) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let c = *b.get(j + 1)?;
    let simple = |ch: char| Some((ch.to_string(), j + 2));
    match c {
        b'n' => simple('\n'),
        b't' => simple('\t'),
        b'r' => simple('\r'),
        b'\\' => simple('\\'),
        b'"' => simple('"'),
        b'\'' => simple('\''),
        b'a' => simple('\u{7}'),
        b'b' => simple('\u{8}'),
        b'f' => simple('\u{c}'),
        b'v' => simple('\u{b}'),
        b'x' => {
            let v = u8::from_str_radix(s.get(j + 2..j + 4)?, 16).ok()?;
            Some((String::from_utf8_lossy(&[v]).into_owned(), j + 4))
        }
        b'u' => {
            let v = u32::from_str_radix(s.get(j + 2..j + 6)?, 16).ok()?;
            Some((char::from_u32(v)?.to_string(), j + 6))
        }
        b'U' => {
            let v = u32::from_str_radix(s.get(j + 2..j + 10)?, 16).ok()?;
            Some((char::from_u32(v)?.to_string(), j + 10))
        }
        b'0'..=b'7' => {
            let v = u32::from_str_radix(s.get(j + 1..j + 4)?, 8).ok()?;
            Some((char::from_u32(v)?.to_string(), j + 4))
        }
        _ => None,
    }
}

struct Parser<'a> {
    src: &'a SourceText,
    items: Vec<Item>,
    i: usize,
    defines: Vec<(String, Vec<Node>)>,
    is_func: &'a dyn Fn(&str) -> bool,
}

/// What ended a list: `end`, `else` (with the tokens after `else`), or end of input.
type ListEnd = Option<(String, usize)>;

impl Parser<'_> {
    fn err(&self, pos: usize, message: String) -> ParseError {
        ParseError { name: self.src.name.clone(), line: self.src.line_col(pos).0, message }
    }

    /// Parses nodes until `{{end}}`/`{{else …}}` (returned as the end marker, with the
    /// `else` action's remaining tokens left in `self.pending_else`) or end of input.
    fn list(&mut self, top: bool) -> Result<(Vec<Node>, ListEnd), ParseError> {
        let mut nodes = Vec::new();
        while self.i < self.items.len() {
            let idx = self.i;
            self.i += 1;
            let item = std::mem::replace(&mut self.items[idx], Item::Text(String::new()));
            match item {
                Item::Text(t) => nodes.push(Node::Text(t)),
                Item::Action { pos, end, toks } => {
                    let kw = match toks.first() {
                        Some(Token { tok: Tok::Ident(k), .. }) => k.clone(),
                        None => return Err(self.err(pos, "missing value for command".into())),
                        _ => String::new(),
                    };
                    match kw.as_str() {
                        "end" => {
                            if toks.len() > 1 {
                                return Err(self.err(pos, "unexpected tokens after end".into()));
                            }
                            return Ok((nodes, Some(("{{end}}".into(), pos))));
                        }
                        "else" => {
                            // Put back the rest of the tokens for the caller (else if / else with).
                            let rest: Vec<Token> = toks.into_iter().skip(1).collect();
                            self.items[idx] = Item::Action { pos, end, toks: rest };
                            return Ok((nodes, Some(("{{else}}".into(), idx))));
                        }
                        "if" | "with" | "range" => {
                            let node = self.control(&kw, pos, toks)?;
                            nodes.push(node);
                        }
                        "define" | "block" => {
                            if !top && kw == "define" {
                                return Err(self.err(pos, "unexpected <define> in command".into()));
                            }
                            let mut ts = toks.into_iter().skip(1).collect::<Vec<_>>();
                            let name = match ts.first() {
                                Some(Token { tok: Tok::Str(s), .. }) => s.clone(),
                                _ => return Err(self.err(pos, format!("unexpected token in {kw} clause"))),
                            };
                            ts.remove(0);
                            let pipe = if kw == "block" {
                                if ts.is_empty() {
                                    return Err(self.err(pos, "missing pipeline in block clause".into()));
                                }
                                Some(self.pipeline(pos, ts, false)?)
                            } else {
                                if !ts.is_empty() {
                                    return Err(self.err(pos, "unexpected token in define clause".into()));
                                }
                                None
                            };
                            let (body, end) = self.list(false)?;
                            match end {
                                Some((w, _)) if w == "{{end}}" => {}
                                Some((_, p)) => return Err(self.err(self.item_pos(p), "unexpected {{else}}".into())),
                                None => return Err(self.err(self.src.text.len(), "unexpected EOF".into())),
                            }
                            self.defines.push((name.clone(), body));
                            if let Some(pipe) = pipe {
                                nodes.push(Node::Template { pos, name, pipe: Some(pipe) });
                            }
                        }
                        "template" => {
                            let mut ts = toks.into_iter().skip(1).collect::<Vec<_>>();
                            let name = match ts.first() {
                                Some(Token { tok: Tok::Str(s), .. }) => s.clone(),
                                _ => return Err(self.err(pos, "unexpected token in template clause".into())),
                            };
                            ts.remove(0);
                            let pipe = if ts.is_empty() { None } else { Some(self.pipeline(pos, ts, false)?) };
                            nodes.push(Node::Template { pos, name, pipe });
                        }
                        "break" | "continue" if toks.len() == 1 => {
                            nodes.push(if kw == "break" { Node::Break } else { Node::Continue });
                        }
                        _ => {
                            let pipe = self.pipeline(pos, toks, true)?;
                            nodes.push(Node::Action(pipe));
                        }
                    }
                }
            }
        }
        Ok((nodes, None))
    }

    fn item_pos(&self, idx: usize) -> usize {
        match &self.items[idx] {
            Item::Action { pos, .. } => *pos,
            Item::Text(_) => 0,
        }
    }

    fn control(&mut self, kw: &str, pos: usize, toks: Vec<Token>) -> Result<Node, ParseError> {
        let ts: Vec<Token> = toks.into_iter().skip(1).collect();
        if ts.is_empty() {
            return Err(self.err(pos, format!("missing value for {kw}")));
        }
        let pipe = self.pipeline(pos, ts, true)?;
        let (list, end) = self.list(false)?;
        let else_list = match end {
            None => return Err(self.err(self.src.text.len(), "unexpected EOF".into())),
            Some((w, _)) if w == "{{end}}" => None,
            Some((_, idx)) => {
                // `else` with the rest of its tokens at items[idx].
                let rest = match std::mem::replace(&mut self.items[idx], Item::Text(String::new())) {
                    Item::Action { toks, .. } => toks,
                    Item::Text(_) => Vec::new(),
                };
                if let Some(Token { tok: Tok::Ident(k), .. }) = rest.first() {
                    if (k == "if" || (k == "with" && kw == "with")) && rest.len() > 1 {
                        // `else if`/`else with`: a nested control sharing this `end`.
                        let k = k.clone();
                        let node = self.control(&k, pos, rest)?;
                        Some(vec![node])
                    } else {
                        return Err(self.err(pos, "unexpected tokens after else".into()));
                    }
                } else if !rest.is_empty() {
                    return Err(self.err(pos, "unexpected tokens after else".into()));
                } else {
                    let (el, end) = self.list(false)?;
                    match end {
                        Some((w, _)) if w == "{{end}}" => Some(el),
                        Some((_, p)) => return Err(self.err(self.item_pos(p), "expected end; found {{else}}".into())),
                        None => return Err(self.err(self.src.text.len(), "unexpected EOF".into())),
                    }
                }
            }
        };
        let branch = Branch { pipe, list, else_list };
        Ok(match kw {
            "if" => Node::If(branch),
            "with" => Node::With(branch),
            _ => Node::Range(branch),
        })
    }

    /// Parses a pipeline from `toks`, with an optional variable declaration.
    fn pipeline(&self, pos: usize, toks: Vec<Token>, allow_decl: bool) -> Result<Pipe, ParseError> {
        let mut decl = Vec::new();
        let mut assign = false;
        let mut start = 0;
        if allow_decl {
            // `$x :=`, `$x =`, `$i, $v :=`
            if let (Some(Token { tok: Tok::Var(v), .. }), Some(next)) = (toks.first(), toks.get(1)) {
                match next.tok {
                    Tok::Declare | Tok::Assign => {
                        decl.push(v.as_str().into());
                        assign = next.tok == Tok::Assign;
                        start = 2;
                    }
                    Tok::Comma => {
                        if let (Some(Token { tok: Tok::Var(v2), .. }), Some(op)) = (toks.get(2), toks.get(3))
                            && matches!(op.tok, Tok::Declare | Tok::Assign)
                        {
                            decl.push(v.as_str().into());
                            decl.push(v2.as_str().into());
                            assign = op.tok == Tok::Assign;
                            start = 4;
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut toks = toks;
        let rest: Vec<Token> = toks.drain(start..).collect();
        let mut it = rest.into_iter().peekable();
        let cmds = self.commands(pos, &mut it, false)?;
        if cmds.is_empty() {
            return Err(self.err(pos, "missing value for command".into()));
        }
        Ok(Pipe { pos, decl, assign, cmds })
    }

    fn commands(
        &self,
        pos: usize,
        it: &mut std::iter::Peekable<std::vec::IntoIter<Token>>,
        in_paren: bool,
    ) -> Result<Vec<Cmd>, ParseError> {
        let mut cmds = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        let mut cmd_pos = it.peek().map(|t| t.pos).unwrap_or(pos);
        let mut cmd_end = cmd_pos;
        loop {
            let Some(t) = it.next() else {
                if in_paren {
                    return Err(self.err(pos, "unclosed left paren".into()));
                }
                break;
            };
            match t.tok {
                Tok::RParen => {
                    if !in_paren {
                        return Err(self.err(t.pos, "unexpected right paren".into()));
                    }
                    break;
                }
                Tok::Pipe => {
                    if args.is_empty() {
                        return Err(self.err(t.pos, "missing command".into()));
                    }
                    cmds.push(Cmd { pos: cmd_pos, end: cmd_end, args: std::mem::take(&mut args) });
                    cmd_pos = it.peek().map(|t| t.pos).unwrap_or(t.end);
                    continue;
                }
                _ => {}
            }
            if !args.is_empty() && !t.space && !matches!(t.tok, Tok::Field(_)) && !matches!(t.tok, Tok::LParen) {
                // Go requires spaces between operands.
                return Err(self.err(t.pos, "missing space?".into()));
            }
            cmd_end = t.end;
            let arg = match t.tok {
                Tok::Dot => Arg::Dot(t.pos),
                Tok::Field(f) => {
                    if !t.space && !args.is_empty() {
                        // Field right after an operand: chain onto it.
                        let prev = args.pop().expect("operand");
                        match prev {
                            Arg::Var(p, n, mut fs) => Arg::Var(p, n, {
                                fs.extend(f);
                                fs
                            }),
                            Arg::Pipe(p, pipe, mut fs) => Arg::Pipe(p, pipe, {
                                fs.extend(f);
                                fs
                            }),
                            Arg::Field(p, mut fs) => Arg::Field(p, {
                                fs.extend(f);
                                fs
                            }),
                            Arg::Dot(p) => Arg::Field(p, f),
                            _ => return Err(self.err(t.pos, "unexpected . after term".into())),
                        }
                    } else {
                        Arg::Field(t.pos, f)
                    }
                }
                Tok::Var(v) => Arg::Var(t.pos, v, Vec::new()),
                Tok::Str(s) => Arg::Str(s.into()),
                Tok::Num(n) => Arg::Num(n),
                Tok::Char(c) => Arg::Num(Num::Int(c)),
                Tok::LParen => {
                    let inner = self.commands(t.pos, it, true)?;
                    if inner.is_empty() {
                        return Err(self.err(t.pos, "missing value for parenthesized pipeline".into()));
                    }
                    cmd_end = inner.last().map(|c| c.end + 1).unwrap_or(t.end);
                    Arg::Pipe(
                        t.pos,
                        Box::new(Pipe { pos: t.pos, decl: Vec::new(), assign: false, cmds: inner }),
                        Vec::new(),
                    )
                }
                Tok::Ident(name) => match name.as_str() {
                    "nil" => Arg::Nil(t.pos),
                    "true" => Arg::Bool(true),
                    "false" => Arg::Bool(false),
                    _ => {
                        if !(self.is_func)(&name) {
                            return Err(self.err(t.pos, format!("function {name:?} not defined")));
                        }
                        Arg::Ident(t.pos, name)
                    }
                },
                Tok::Comma | Tok::Declare | Tok::Assign => {
                    return Err(self.err(t.pos, "unexpected token in operand".into()));
                }
                Tok::Pipe | Tok::RParen => unreachable!("handled above"),
            };
            args.push(arg);
        }
        if !args.is_empty() {
            cmds.push(Cmd { pos: cmd_pos, end: cmd_end, args });
        } else if !cmds.is_empty() {
            return Err(self.err(pos, "missing command".into()));
        }
        for c in &cmds {
            if c.args.len() > 1 {
                match &c.args[0] {
                    Arg::Ident(..) | Arg::Field(..) | Arg::Var(..) | Arg::Pipe(..) => {}
                    _ => return Err(self.err(c.pos, "can't give argument to non-function".into())),
                }
            }
        }
        Ok(cmds)
    }
}

/// A named template: its name, body and the file it was written in.
#[derive(Debug, Clone)]
pub struct Named {
    /// The template's name (a file path or a `define` name).
    pub name: Arc<str>,
    /// Its body.
    pub body: Arc<Vec<Node>>,
    /// The file it was written in.
    pub file: Arc<SourceText>,
}

/// All templates known to an execution, by name, each with the file it came from.
#[derive(Debug, Default, Clone)]
pub struct TemplateSet {
    /// Name → template.
    pub map: rustc_hash::FxHashMap<String, Named>,
}

impl TemplateSet {
    fn insert(&mut self, name: &str, body: Arc<Vec<Node>>, file: Arc<SourceText>) {
        self.map.insert(name.to_string(), Named { name: name.into(), body, file });
    }
}

/// A parsed file as kept in the parse cache.
#[derive(Debug)]
struct CachedParse {
    /// The text it was parsed from (held, so that its address names it while cached).
    text: Arc<str>,
    src: Arc<SourceText>,
    body: Arc<Vec<Node>>,
    defines: Vec<(String, Arc<Vec<Node>>)>,
}

/// Parsed templates by (name, text): a fleet renders the same chart for many clusters, and
/// parsing is most of a render's cost. Keyed by the address of the loaded chart's text (a
/// chart keeps its templates as shared text, so every render of a loaded chart finds its
/// parses without reading the text again); entries are checked against the name too.
type ParseCache = std::sync::Mutex<HashMap<usize, Vec<Arc<CachedParse>>>>;

fn parse_cache() -> &'static ParseCache {
    static CACHE: std::sync::OnceLock<ParseCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Entries kept before the cache starts over (bounds memory for long-running hubs).
const PARSE_CACHE_LIMIT: usize = 8192;

impl TemplateSet {
    /// Like [`TemplateSet::add`], reusing an earlier parse of the same name and text.
    pub fn add_cached(
        &mut self,
        name: &str,
        text: &Arc<str>,
        is_func: &dyn Fn(&str) -> bool,
    ) -> Result<(), ParseError> {
        let key = Arc::as_ptr(text).cast::<u8>() as usize;
        let hit = parse_cache()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .and_then(|entries| entries.iter().find(|e| Arc::ptr_eq(&e.text, text) && e.src.name == name).cloned());
        let parsed = match hit {
            Some(p) => p,
            None => {
                let src = Arc::new(SourceText { name: name.to_string(), text: text.to_string() });
                let parsed = parse(&src, is_func)?;
                let entry = Arc::new(CachedParse {
                    text: text.clone(),
                    src,
                    body: Arc::new(parsed.body),
                    defines: parsed.defines.into_iter().map(|(n, b)| (n, Arc::new(b))).collect(),
                });
                let mut cache = parse_cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.len() >= PARSE_CACHE_LIMIT {
                    cache.clear();
                }
                cache.entry(key).or_default().push(entry.clone());
                entry
            }
        };
        for (n, body) in &parsed.defines {
            if is_empty_tree(body) && self.map.contains_key(n) {
                continue;
            }
            self.insert(n, body.clone(), parsed.src.clone());
        }
        self.insert(name, parsed.body.clone(), parsed.src.clone());
        Ok(())
    }

    /// Parses `src` and adds its body (under its name) and its defines (replacing earlier
    /// ones of the same name, like Go).
    pub fn add(&mut self, src: Arc<SourceText>, is_func: &dyn Fn(&str) -> bool) -> Result<(), ParseError> {
        let parsed = parse(&src, is_func)?;
        for (name, body) in parsed.defines {
            // Go keeps an existing template rather than replace it with an empty one.
            if is_empty_tree(&body) && self.map.contains_key(&name) {
                continue;
            }
            self.insert(&name, Arc::new(body), src.clone());
        }
        self.insert(&src.name.clone(), Arc::new(parsed.body), src);
        Ok(())
    }
}

/// Whether a tree holds nothing but whitespace text.
pub fn is_empty_tree(nodes: &[Node]) -> bool {
    nodes.iter().all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::funcs::is_func;

    fn parsed(text: &str) -> Result<Parsed, ParseError> {
        parse(&SourceText { name: "t".into(), text: text.into() }, &is_func)
    }

    fn error(text: &str) -> String {
        let e = parsed(text).expect_err(text);
        format!("template: {}:{}: {}", e.name, e.line, e.message)
    }

    #[test]
    fn errors_read_as_go_writes_them() {
        assert_eq!(error("{{ .a"), "template: t:1: unclosed action");
        assert_eq!(error("a\n{{ if .a }}x"), "template: t:2: unexpected EOF");
        assert_eq!(error("\n\n{{ end }}"), "template: t:3: unexpected {{end}}");
        assert_eq!(error("{{ nope 1 }}"), "template: t:1: function \"nope\" not defined");
    }

    #[test]
    fn defines_are_collected_apart_from_the_body() {
        let p =
            parsed("{{ define \"a\" }}A{{ end }}body{{/* a comment */}}{{ block \"b\" . }}B{{ end }}").expect("parses");
        let names: Vec<&str> = p.defines.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(p.body.iter().any(|n| matches!(n, Node::Text(t) if t == "body")), "{:?}", p.body);
    }

    #[test]
    fn go_number_literals_parse() {
        for literal in ["0x1p60", "1e3", "0o17", "0b101", "1_000", "'a'", "0x_1F", ".5"] {
            assert!(parsed(&format!("{{{{ {literal} }}}}")).is_ok(), "{literal}");
        }
    }

    #[test]
    fn positions_are_go_line_and_byte_column() {
        let src = SourceText { name: "t".into(), text: "ab\ncd{{ x }}".into() };
        assert_eq!(src.line_col(0), (1, 0));
        assert_eq!(src.line_col(5), (2, 2));
    }
}

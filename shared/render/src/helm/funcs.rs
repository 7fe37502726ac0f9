//! The template function library: text/template's builtins, Sprig (v3) and Helm's own
//! functions, each with Go's parameter types so argument errors match Go's.
//!
//! Nondeterministic functions (`uuidv4`, `rand*`, `now`, `shuffle`) work but give a
//! different result on every render, as in Helm; charts that use them make every render a
//! change. Key and certificate generators (`genCA`, `genPrivateKey`, …) give tokens the agent
//! fills with keys it makes ([`super::crypto`]); other cryptographic functions (`bcrypt`,
//! `encryptAES`, …) and DNS lookups are refused with an error naming the function. `env` and
//! `expandenv` are not defined at all, as in Helm.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::OnceLock;

use rustc_hash::FxHashMap;

use base64::Engine as _;
use sha2::Digest as _;

use super::time::{GoTime, format_time_value};
use super::value::{Value, format_float, go_float, write_go};

/// A parameter's Go type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P {
    /// `interface{}`
    Any,
    /// `string`
    Str,
    /// `int`
    Int,
    /// `int64`
    Int64,
    /// `float64`
    Float,
    /// `bool`
    Bool,
    /// `map[string]interface{}`
    Map,
    /// `[]interface{}`
    List,
}

impl P {
    /// Go's spelling.
    pub fn go_name(self) -> &'static str {
        match self {
            P::Any => "interface {}",
            P::Str => "string",
            P::Int => "int",
            P::Int64 => "int64",
            P::Float => "float64",
            P::Bool => "bool",
            P::Map => "map[string]interface {}",
            P::List => "[]interface {}",
        }
    }
}

/// A function's failure.
#[derive(Debug)]
pub enum FnError {
    /// Reported as `error calling NAME: message`.
    Msg(String),
    /// From `fail`/`required`: the user's own message.
    User(String),
}

type FResult = Result<Value, FnError>;

/// What runs a function.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// A function of its arguments alone.
    Pure(fn(Vec<Value>) -> FResult),
    /// A function that runs templates: the executor implements it.
    Executor(ExecFn),
}

/// The functions that need the render they run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFn {
    /// `include NAME DATA`: a named template's output.
    Include,
    /// `tpl TEXT DATA`: a string run as a template.
    Tpl,
    /// A key or certificate generator: numbered by the render's calls ([`super::crypto`]).
    Generate(Generator),
}

/// Sprig's key and certificate generators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    Ca,
    CaWithKey,
    SelfSigned,
    SelfSignedWithKey,
    Signed,
    SignedWithKey,
    PrivateKey,
}

/// A library function and its Go signature.
#[derive(Clone, Copy)]
pub struct Func {
    /// Fixed parameters.
    pub params: &'static [P],
    /// Type of the variadic tail, if any.
    pub variadic: Option<P>,
    /// The implementation.
    pub body: Body,
    /// Changes a map in place, or gives a different result at each call (the output of a
    /// named template that calls it is never reused).
    pub effect: bool,
}

fn err<T>(m: impl Into<String>) -> Result<T, FnError> {
    Err(FnError::Msg(m.into()))
}

/// Whether `name` is a function (parse-time check).
pub fn is_func(name: &str) -> bool {
    name == "and" || name == "or" || table().contains_key(name)
}

/// The function called `name`.
pub fn lookup(name: &str) -> Option<&'static Func> {
    table().get(name)
}

fn table() -> &'static FxHashMap<&'static str, Func> {
    static T: OnceLock<FxHashMap<&'static str, Func>> = OnceLock::new();
    T.get_or_init(build)
}

/// One entry of the function table: its name and the function.
type Row = (&'static str, Func);

/// A table row for a key or certificate generator: each call is another key, so never reused.
const fn generator(name: &'static str, params: &'static [P], which: Generator) -> Row {
    (name, Func { params, variadic: None, body: Body::Executor(ExecFn::Generate(which)), effect: true })
}

/// A table row for a function of its arguments alone: name, Go parameter types (and `va T`
/// for a variadic tail), body.
macro_rules! f {
    ($name:expr, [$($p:ident),*], $f:expr) => {
        ($name, Func { params: &[$(P::$p),*], variadic: None, body: Body::Pure($f), effect: false })
    };
    ($name:expr, [$($p:ident),*], va $v:ident, $f:expr) => {
        ($name, Func { params: &[$(P::$p),*], variadic: Some(P::$v), body: Body::Pure($f), effect: false })
    };
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn int_arg(v: &Value) -> i64 {
    match v {
        Value::Int(i) | Value::Int64(i) => *i,
        Value::Float(f) => *f as i64,
        _ => 0,
    }
}

fn str_v(x: impl Into<Rc<str>>) -> FResult {
    Ok(Value::Str(x.into()))
}

fn list_v(v: Vec<Value>) -> FResult {
    Ok(Value::list(v))
}

fn strs(v: Vec<String>) -> Value {
    Value::list(v.into_iter().map(Value::str).collect())
}

/// The function table: text/template builtins.
const TEXT_TEMPLATE: &[Row] = &[
    f!("not", [Any], |a| Ok(Value::Bool(!a[0].truthy()))),
    f!("len", [Any], |a| match &a[0] {
        Value::Str(s) => Ok(Value::Int(s.len() as i64)),
        Value::List(l) => Ok(Value::Int(l.len() as i64)),
        Value::Map(m) => Ok(Value::Int(m.borrow().len() as i64)),
        Value::Nil => err("len of nil pointer"),
        Value::Obj(o) => match o.range_items() {
            Some(i) => Ok(Value::Int(i.len() as i64)),
            None => err(format!("len of type {}", o.type_name())),
        },
        other => err(format!("len of type {}", other.type_name())),
    }),
    f!("index", [Any], va Any, |a| index(&a[0], &a[1..])),
    f!("slice", [Any], va Any, |a| slice(&a[0], &a[1..])),
    f!("print", [], va Any, |a| str_v(sprint(&a))),
    f!("println", [], va Any, |a| {
        let parts: Vec<String> = a.iter().map(Value::to_go_string).collect();
        str_v(parts.join(" ") + "\n")
    }),
    f!("printf", [Str], va Any, |a| str_v(sprintf(s(&a[0]), &a[1..]))),
    f!("eq", [Any], va Any, |a| {
        if a.len() < 2 {
            return err("missing argument for comparison");
        }
        for b in &a[1..] {
            if cmp_eq(&a[0], b)? {
                return Ok(Value::Bool(true));
            }
        }
        Ok(Value::Bool(false))
    }),
    f!("ne", [Any, Any], |a| Ok(Value::Bool(!cmp_eq(&a[0], &a[1])?))),
    f!("lt", [Any, Any], |a| Ok(Value::Bool(cmp_lt(&a[0], &a[1])?))),
    f!("le", [Any, Any], |a| Ok(Value::Bool(cmp_lt(&a[0], &a[1])? || cmp_eq(&a[0], &a[1])?))),
    f!("gt", [Any, Any], |a| Ok(Value::Bool(!(cmp_lt(&a[0], &a[1])? || cmp_eq(&a[0], &a[1])?)))),
    f!("ge", [Any, Any], |a| Ok(Value::Bool(!cmp_lt(&a[0], &a[1])?))),
    f!("html", [], va Any, |a| str_v(html_escape(&sprint(&a)))),
    f!("js", [], va Any, |a| str_v(js_escape(&sprint(&a)))),
    f!("urlquery", [], va Any, |a| str_v(query_escape(&sprint(&a)))),
    f!("call", [Any], va Any, |_| err("call of non-function")),
];

/// The function table: Helm.
const HELM: &[Row] = &[
    (
        "include",
        Func { params: &[P::Str, P::Any], variadic: None, body: Body::Executor(ExecFn::Include), effect: false },
    ),
    ("tpl", Func { params: &[P::Str, P::Any], variadic: None, body: Body::Executor(ExecFn::Tpl), effect: false }),
    generator("genCA", &[P::Str, P::Int], Generator::Ca),
    generator("genCAWithKey", &[P::Str, P::Int, P::Str], Generator::CaWithKey),
    generator("genSelfSignedCert", &[P::Str, P::List, P::List, P::Int], Generator::SelfSigned),
    generator("genSelfSignedCertWithKey", &[P::Str, P::List, P::List, P::Int, P::Str], Generator::SelfSignedWithKey),
    generator("genSignedCert", &[P::Str, P::List, P::List, P::Int, P::Any], Generator::Signed),
    generator("genSignedCertWithKey", &[P::Str, P::List, P::List, P::Int, P::Any, P::Str], Generator::SignedWithKey),
    generator("genPrivateKey", &[P::Str], Generator::PrivateKey),
    f!("required", [Str, Any], |a| match &a[1] {
        Value::Nil => Err(FnError::User(s(&a[0]).to_string())),
        Value::Str(v) if v.is_empty() => Err(FnError::User(s(&a[0]).to_string())),
        v => Ok(v.clone()),
    }),
    f!("fail", [Str], |a| Err(FnError::User(s(&a[0]).to_string()))),
    f!("lookup", [Str, Str, Str, Str], |_| Ok(Value::map(BTreeMap::new()))),
    f!("toYaml", [Any], |a| str_v(super::goyaml::to_yaml(&a[0]).trim_end_matches('\n').to_string())),
    f!("mustToYaml", [Any], |a| str_v(super::goyaml::to_yaml(&a[0]).trim_end_matches('\n').to_string())),
    f!("toYamlPretty", [Any], |a| str_v(super::goyaml::to_yaml_pretty(&a[0]).trim_end_matches('\n').to_string())),
    f!("fromYaml", [Str], |a| Ok(match super::goyaml::from_yaml(s(&a[0])) {
        Ok(Value::Map(mm)) => Value::Map(mm),
        Ok(Value::Nil) => Value::map(BTreeMap::new()),
        Ok(other) => error_map(&format!(
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(&other)
        )),
        Err(e) => error_map(&e),
    })),
    f!("fromYamlArray", [Str], |a| Ok(match super::goyaml::from_yaml(s(&a[0])) {
        Ok(Value::List(l)) => Value::List(l),
        Ok(Value::Nil) => Value::list(Vec::new()),
        Ok(other) => Value::list(vec![Value::str(format!(
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {} into Go value of type []interface {{}}",
            json_kind(&other)
        ))]),
        Err(e) => Value::list(vec![Value::str(e)]),
    })),
    f!("toJson", [Any], |a| str_v(to_json(&a[0], true))),
    f!("mustToJson", [Any], |a| str_v(to_json(&a[0], true))),
    f!("toRawJson", [Any], |a| str_v(to_json(&a[0], false))),
    f!("mustToRawJson", [Any], |a| str_v(to_json(&a[0], false))),
    f!("toPrettyJson", [Any], |a| str_v(to_pretty_json(&a[0]))),
    f!("mustToPrettyJson", [Any], |a| str_v(to_pretty_json(&a[0]))),
    f!("fromJson", [Str], |a| Ok(match serde_json::from_str::<serde_json::Value>(s(&a[0])) {
        Ok(serde_json::Value::Object(o)) => Value::from_json(&serde_json::Value::Object(o)),
        Ok(serde_json::Value::Null) => Value::map(BTreeMap::new()),
        Ok(other) => error_map(&format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(&Value::from_json(&other))
        )),
        Err(e) => error_map(&e.to_string()),
    })),
    f!("fromJsonArray", [Str], |a| Ok(match serde_json::from_str::<serde_json::Value>(s(&a[0])) {
        Ok(serde_json::Value::Array(o)) => Value::from_json(&serde_json::Value::Array(o)),
        Ok(serde_json::Value::Null) => Value::list(Vec::new()),
        Ok(other) => Value::list(vec![Value::str(format!(
            "json: cannot unmarshal {} into Go value of type []interface {{}}",
            json_kind(&Value::from_json(&other))
        ))]),
        Err(e) => Value::list(vec![Value::str(e.to_string())]),
    })),
    f!("mustFromJson", [Str], |a| match serde_json::from_str::<serde_json::Value>(s(&a[0])) {
        Ok(v) => Ok(Value::from_json(&v)),
        Err(e) => err(e.to_string()),
    }),
];

/// The function table: Sprig: defaults and flow.
const SPRIG_FLOW: &[Row] = &[
    f!("default", [Any], va Any, |a| {
        if a.len() < 2 || empty(&a[1]) { Ok(a[0].clone()) } else { Ok(a[1].clone()) }
    }),
    f!("empty", [Any], |a| Ok(Value::Bool(empty(&a[0])))),
    f!("coalesce", [], va Any, |a| Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Nil))),
    f!("all", [], va Any, |a| Ok(Value::Bool(a.iter().all(|v| !empty(v))))),
    f!("any", [], va Any, |a| Ok(Value::Bool(a.iter().any(|v| !empty(v))))),
    f!("ternary", [Any, Any, Bool], |a| Ok(if matches!(a[2], Value::Bool(true)) {
        a[0].clone()
    } else {
        a[1].clone()
    })),
    f!("deepCopy", [Any], |a| Ok(a[0].deep_copy())),
    f!("mustDeepCopy", [Any], |a| Ok(a[0].deep_copy())),
    f!("deepEqual", [Any, Any], |a| Ok(Value::Bool(deep_equal(&a[0], &a[1])))),
    f!("typeOf", [Any], |a| str_v(a[0].type_name())),
    f!("typeIs", [Str, Any], |a| Ok(Value::Bool(s(&a[0]) == a[1].type_name()))),
    f!("typeIsLike", [Str, Any], |a| {
        let t = a[1].type_name();
        Ok(Value::Bool(s(&a[0]) == t || s(&a[0]) == format!("*{t}")))
    }),
    f!("kindOf", [Any], |a| str_v(a[0].kind_name())),
    f!("kindIs", [Str, Any], |a| Ok(Value::Bool(s(&a[0]) == a[1].kind_name()))),
];

/// The function table: strings.
const STRINGS: &[Row] = &[
    f!("toString", [Any], |a| str_v(strval(&a[0]))),
    f!("toStrings", [Any], |a| Ok(strs(strslice(&a[0])))),
    f!("quote", [], va Any, |a| {
        let parts: Vec<String> = a.iter().filter(|v| !matches!(v, Value::Nil)).map(|v| go_quote(&strval(v))).collect();
        str_v(parts.join(" "))
    }),
    f!("squote", [], va Any, |a| {
        let parts: Vec<String> =
            a.iter().filter(|v| !matches!(v, Value::Nil)).map(|v| format!("'{}'", strval(v))).collect();
        str_v(parts.join(" "))
    }),
    f!("cat", [], va Any, |a| {
        let parts: Vec<String> = a.iter().filter(|v| !matches!(v, Value::Nil)).map(Value::to_go_string).collect();
        str_v(parts.join(" "))
    }),
    f!("upper", [Str], |a| str_v(s(&a[0]).chars().map(go_upper).collect::<String>())),
    f!("lower", [Str], |a| str_v(s(&a[0]).chars().map(go_lower).collect::<String>())),
    f!("title", [Str], |a| str_v(title(s(&a[0])))),
    f!("untitle", [Str], |a| str_v(untitle(s(&a[0])))),
    f!("trim", [Str], |a| str_v(s(&a[0]).trim_matches(is_go_space))),
    f!("trimAll", [Str, Str], |a| {
        let cut: Vec<char> = s(&a[0]).chars().collect();
        str_v(s(&a[1]).trim_matches(|c| cut.contains(&c)))
    }),
    f!("trimPrefix", [Str, Str], |a| str_v(s(&a[1]).strip_prefix(s(&a[0])).unwrap_or(s(&a[1])))),
    f!("trimSuffix", [Str, Str], |a| str_v(s(&a[1]).strip_suffix(s(&a[0])).unwrap_or(s(&a[1])))),
    f!("nospace", [Str], |a| str_v(s(&a[0]).chars().filter(|c| !c.is_whitespace()).collect::<String>())),
    f!("repeat", [Int, Str], |a| {
        let n = int_arg(&a[0]);
        if n < 0 {
            return err("strings: negative Repeat count");
        }
        str_v(s(&a[1]).repeat(n as usize))
    }),
    f!("substr", [Int, Int, Str], |a| str_v(substr(int_arg(&a[0]), int_arg(&a[1]), s(&a[2])))),
    f!("trunc", [Int, Str], |a| {
        let c = int_arg(&a[0]);
        let st = s(&a[1]);
        let n = st.len() as i64;
        str_v(if c < 0 && -c < n {
            byte_slice(st, (n + c) as usize, n as usize)
        } else if c >= 0 && n > c {
            byte_slice(st, 0, c as usize)
        } else {
            st.to_string()
        })
    }),
    f!("abbrev", [Int, Str], |a| {
        let w = int_arg(&a[0]);
        let st = s(&a[1]);
        if w < 4 || st.chars().count() as i64 <= w {
            return str_v(st);
        }
        let keep: String = st.chars().take((w - 3) as usize).collect();
        str_v(keep + "...")
    }),
    f!("abbrevboth", [Int, Int, Str], |a| {
        let (l, w, st) = (int_arg(&a[0]), int_arg(&a[1]), s(&a[2]));
        let chars: Vec<char> = st.chars().collect();
        if w < 4 || chars.len() as i64 <= w {
            return str_v(st);
        }
        let mut l = l.max(0) as usize;
        let n = chars.len();
        if l > n {
            l = n;
        }
        let w = w as usize;
        let mut out = String::new();
        if l > 0 {
            if n.saturating_sub(l) < w - 3 {
                l = n - (w - 3);
            }
            if w < 7 {
                return str_v(st);
            }
            out.push_str("...");
            let rest: String = chars[l..].iter().collect();
            let r: Vec<char> = rest.chars().collect();
            if r.len() as i64 <= (w - 3) as i64 {
                out.push_str(&rest);
            } else {
                out.extend(&r[..w - 6]);
                out.push_str("...");
            }
            return str_v(out);
        }
        out.extend(&chars[..w - 3]);
        out.push_str("...");
        str_v(out)
    }),
    f!("initials", [Str], |a| str_v(s(&a[0]).split_whitespace().filter_map(|w| w.chars().next()).collect::<String>())),
    f!("wrap", [Int, Str], |a| str_v(wrap(s(&a[1]), int_arg(&a[0]).max(1) as usize, "\n"))),
    f!("wrapWith", [Int, Str, Str], |a| str_v(wrap(s(&a[2]), int_arg(&a[0]).max(1) as usize, s(&a[1])))),
    f!("contains", [Str, Str], |a| Ok(Value::Bool(s(&a[1]).contains(s(&a[0]))))),
    f!("hasPrefix", [Str, Str], |a| Ok(Value::Bool(s(&a[1]).starts_with(s(&a[0]))))),
    f!("hasSuffix", [Str, Str], |a| Ok(Value::Bool(s(&a[1]).ends_with(s(&a[0]))))),
    f!("replace", [Str, Str, Str], |a| str_v(go_replace(s(&a[2]), s(&a[0]), s(&a[1])))),
    f!("plural", [Str, Str, Int], |a| str_v(if int_arg(&a[2]) == 1 { s(&a[0]) } else { s(&a[1]) })),
    f!("snakecase", [Str], |a| str_v(snake(s(&a[0]), '_'))),
    f!("kebabcase", [Str], |a| str_v(snake(s(&a[0]), '-'))),
    f!("camelcase", [Str], |a| str_v(camel(s(&a[0])))),
    f!("swapcase", [Str], |a| str_v(
        s(&a[0])
            .chars()
            .map(|c| if c.is_uppercase() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                c.to_uppercase().next().unwrap_or(c)
            })
            .collect::<String>()
    )),
    f!("indent", [Int, Str], |a| str_v(indent(int_arg(&a[0]), s(&a[1]), ""))),
    f!("nindent", [Int, Str], |a| str_v(indent(int_arg(&a[0]), s(&a[1]), "\n"))),
    f!("split", [Str, Str], |a| {
        let parts = go_split(s(&a[1]), s(&a[0]), -1);
        Ok(Value::map(parts.into_iter().enumerate().map(|(i, p)| (format!("_{i}"), Value::str(p))).collect()))
    }),
    f!("splitn", [Str, Int, Str], |a| {
        let parts = go_split(s(&a[2]), s(&a[0]), int_arg(&a[1]));
        Ok(Value::map(parts.into_iter().enumerate().map(|(i, p)| (format!("_{i}"), Value::str(p))).collect()))
    }),
    f!("splitList", [Str, Str], |a| Ok(strs(go_split(s(&a[1]), s(&a[0]), -1)))),
    f!("join", [Str, Any], |a| str_v(strslice(&a[1]).join(s(&a[0])))),
    f!("sortAlpha", [Any], |a| {
        let mut v = strslice(&a[0]);
        v.sort();
        Ok(strs(v))
    }),
    f!("shuffle", [Str], |a| {
        let mut c: Vec<char> = s(&a[0]).chars().collect();
        for i in (1..c.len()).rev() {
            let j = (rand_u64() % (i as u64 + 1)) as usize;
            c.swap(i, j);
        }
        str_v(c.into_iter().collect::<String>())
    }),
    f!("b64enc", [Str], |a| str_v(base64::engine::general_purpose::STANDARD.encode(s(&a[0])))),
    f!("b64dec", [Str], |a| str_v(match base64::engine::general_purpose::STANDARD.decode(s(&a[0])) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => e.to_string(),
    })),
    f!("b32enc", [Str], |a| str_v(base32_encode(s(&a[0]).as_bytes()))),
    f!("sha256sum", [Str], |a| str_v(hex(&sha2::Sha256::digest(s(&a[0]).as_bytes())))),
    f!("sha512sum", [Str], |a| str_v(hex(&sha2::Sha512::digest(s(&a[0]).as_bytes())))),
    f!("adler32sum", [Str], |a| str_v(adler32(s(&a[0]).as_bytes()).to_string())),
    f!("regexMatch", [Str, Str], |a| Ok(Value::Bool(
        regex::Regex::new(s(&a[0])).map(|r| r.is_match(s(&a[1]))).unwrap_or(false)
    ))),
    f!("mustRegexMatch", [Str, Str], |a| match regex::Regex::new(s(&a[0])) {
        Ok(r) => Ok(Value::Bool(r.is_match(s(&a[1])))),
        Err(e) => err(e.to_string()),
    }),
    f!("regexFind", [Str, Str], |a| str_v(
        regex::Regex::new(s(&a[0]))
            .ok()
            .and_then(|r| r.find(s(&a[1])).map(|x| x.as_str().to_string()))
            .unwrap_or_default()
    )),
    f!("regexFindAll", [Str, Str, Int], |a| {
        let Ok(r) = regex::Regex::new(s(&a[0])) else { return Ok(strs(Vec::new())) };
        let n = int_arg(&a[2]);
        let all: Vec<String> = r.find_iter(s(&a[1])).map(|x| x.as_str().to_string()).collect();
        Ok(strs(if n < 0 { all } else { all.into_iter().take(n as usize).collect() }))
    }),
    f!("regexReplaceAll", [Str, Str, Str], |a| str_v(match regex::Regex::new(s(&a[0])) {
        Ok(r) => r.replace_all(s(&a[1]), s(&a[2])).into_owned(),
        Err(_) => s(&a[1]).to_string(),
    })),
    f!("regexReplaceAllLiteral", [Str, Str, Str], |a| str_v(match regex::Regex::new(s(&a[0])) {
        Ok(r) => r.replace_all(s(&a[1]), regex::NoExpand(s(&a[2]))).into_owned(),
        Err(_) => s(&a[1]).to_string(),
    })),
    f!("regexSplit", [Str, Str, Int], |a| {
        let Ok(r) = regex::Regex::new(s(&a[0])) else { return Ok(strs(Vec::new())) };
        let n = int_arg(&a[2]);
        let v: Vec<String> = if n < 0 {
            r.split(s(&a[1])).map(String::from).collect()
        } else if n == 0 {
            Vec::new()
        } else {
            r.splitn(s(&a[1]), n as usize).map(String::from).collect()
        };
        Ok(strs(v))
    }),
    f!("regexQuoteMeta", [Str], |a| str_v(regex::escape(s(&a[0])))),
];

/// The function table: numbers.
const NUMBERS: &[Row] = &[
    f!("add1", [Any], |a| Ok(Value::Int64(to_i64(&a[0]) + 1))),
    f!("add", [], va Any, |a| Ok(Value::Int64(a.iter().map(to_i64).fold(0i64, i64::wrapping_add)))),
    f!("sub", [Any, Any], |a| Ok(Value::Int64(to_i64(&a[0]).wrapping_sub(to_i64(&a[1]))))),
    f!("mul", [Any], va Any, |a| Ok(Value::Int64(a.iter().map(to_i64).fold(1i64, i64::wrapping_mul)))),
    f!("div", [Any, Any], |a| {
        let d = to_i64(&a[1]);
        if d == 0 {
            return err("runtime error: integer divide by zero");
        }
        Ok(Value::Int64(to_i64(&a[0]).wrapping_div(d)))
    }),
    f!("mod", [Any, Any], |a| {
        let d = to_i64(&a[1]);
        if d == 0 {
            return err("runtime error: integer divide by zero");
        }
        Ok(Value::Int64(to_i64(&a[0]).wrapping_rem(d)))
    }),
    f!("max", [Any], va Any, |a| Ok(Value::Int64(a.iter().map(to_i64).max().unwrap_or(0)))),
    f!("biggest", [Any], va Any, |a| Ok(Value::Int64(a.iter().map(to_i64).max().unwrap_or(0)))),
    f!("min", [Any], va Any, |a| Ok(Value::Int64(a.iter().map(to_i64).min().unwrap_or(0)))),
    f!("add1f", [Any], |a| Ok(Value::Float(to_f64(&a[0]) + 1.0))),
    f!("addf", [], va Any, |a| Ok(Value::Float(a.iter().map(to_f64).sum()))),
    f!("subf", [Any], va Any, |a| Ok(Value::Float(a[1..].iter().map(to_f64).fold(to_f64(&a[0]), |x, y| x - y)))),
    f!("mulf", [Any], va Any, |a| Ok(Value::Float(a[1..].iter().map(to_f64).fold(to_f64(&a[0]), |x, y| x * y)))),
    f!("divf", [Any], va Any, |a| Ok(Value::Float(a[1..].iter().map(to_f64).fold(to_f64(&a[0]), |x, y| x / y)))),
    f!("maxf", [Any], va Any, |a| Ok(Value::Float(a.iter().map(to_f64).fold(f64::NEG_INFINITY, f64::max)))),
    f!("minf", [Any], va Any, |a| Ok(Value::Float(a.iter().map(to_f64).fold(f64::INFINITY, f64::min)))),
    f!("floor", [Any], |a| Ok(Value::Float(to_f64(&a[0]).floor()))),
    f!("ceil", [Any], |a| Ok(Value::Float(to_f64(&a[0]).ceil()))),
    f!("round", [Any, Int], va Float, |a| {
        let x = to_f64(&a[0]);
        let p = int_arg(&a[1]);
        let half = a.get(2).map(to_f64).unwrap_or(0.5);
        let pow = 10f64.powi(p as i32);
        let digit = pow * x;
        let (int, frac) = (digit.trunc(), digit.fract());
        let r = if frac >= half { int + 1.0 } else { int };
        Ok(Value::Float(r / pow))
    }),
    f!("int", [Any], |a| Ok(Value::Int(to_i64(&a[0])))),
    f!("int64", [Any], |a| Ok(Value::Int64(to_i64(&a[0])))),
    f!("float64", [Any], |a| Ok(Value::Float(to_f64(&a[0])))),
    f!("atoi", [Str], |a| Ok(Value::Int(s(&a[0]).parse::<i64>().unwrap_or(0)))),
    f!("toDecimal", [Any], |a| Ok(Value::Int64(i64::from_str_radix(&strval(&a[0]), 8).unwrap_or(0)))),
    f!("until", [Int], |a| {
        let n = int_arg(&a[0]);
        list_v(int_range(0, n, if n < 0 { -1 } else { 1 }))
    }),
    f!("untilStep", [Int, Int, Int], |a| list_v(int_range(int_arg(&a[0]), int_arg(&a[1]), int_arg(&a[2])))),
    f!("seq", [], va Int, |a| {
        let p: Vec<i64> = a.iter().map(int_arg).collect();
        let v: Vec<String> = match p.as_slice() {
            [] => Vec::new(),
            [end] => seq(1, 1, *end),
            [start, end] => seq(*start, if end >= start { 1 } else { -1 }, *end),
            [start, step, end, ..] => seq(*start, *step, *end),
        };
        str_v(v.join(" "))
    }),
    f!("randInt", [Int, Int], |a| {
        let (lo, hi) = (int_arg(&a[0]), int_arg(&a[1]));
        if hi <= lo {
            return err("invalid argument to Intn");
        }
        Ok(Value::Int(lo + (rand_u64() % (hi - lo) as u64) as i64))
    }),
];

/// The function table: lists.
const LISTS: &[Row] = &[
    f!("list", [], va Any, list_v),
    f!("tuple", [], va Any, list_v),
    f!("first", [Any], |a| Ok(as_list(&a[0], "first")?.first().cloned().unwrap_or(Value::Nil))),
    f!("mustFirst", [Any], |a| Ok(as_list(&a[0], "first")?.first().cloned().unwrap_or(Value::Nil))),
    f!("last", [Any], |a| Ok(as_list(&a[0], "last")?.last().cloned().unwrap_or(Value::Nil))),
    f!("mustLast", [Any], |a| Ok(as_list(&a[0], "last")?.last().cloned().unwrap_or(Value::Nil))),
    f!("rest", [Any], |a| {
        let l = as_list(&a[0], "rest")?;
        if l.is_empty() { Ok(Value::Nil) } else { list_v(l[1..].to_vec()) }
    }),
    f!("initial", [Any], |a| {
        let l = as_list(&a[0], "initial")?;
        if l.is_empty() { Ok(Value::Nil) } else { list_v(l[..l.len() - 1].to_vec()) }
    }),
    f!("append", [Any, Any], |a| {
        let mut l = as_list(&a[0], "append")?;
        l.push(a[1].clone());
        list_v(l)
    }),
    f!("push", [Any, Any], |a| {
        let mut l = as_list(&a[0], "push")?;
        l.push(a[1].clone());
        list_v(l)
    }),
    f!("mustAppend", [Any, Any], |a| {
        let mut l = as_list(&a[0], "append")?;
        l.push(a[1].clone());
        list_v(l)
    }),
    f!("prepend", [Any, Any], |a| {
        let mut l = as_list(&a[0], "prepend")?;
        l.insert(0, a[1].clone());
        list_v(l)
    }),
    f!("concat", [], va Any, |a| {
        let mut out = Vec::new();
        for l in &a {
            out.extend(as_list(l, "concat")?);
        }
        list_v(out)
    }),
    f!("reverse", [Any], |a| {
        let mut l = as_list(&a[0], "reverse")?;
        l.reverse();
        list_v(l)
    }),
    f!("uniq", [Any], |a| {
        let mut out: Vec<Value> = Vec::new();
        for v in as_list(&a[0], "uniq")? {
            if !out.iter().any(|o| deep_equal(o, &v)) {
                out.push(v);
            }
        }
        list_v(out)
    }),
    f!("compact", [Any], |a| list_v(as_list(&a[0], "compact")?.into_iter().filter(|v| !empty(v)).collect())),
    f!("without", [Any], va Any, |a| {
        let omit = &a[1..];
        list_v(as_list(&a[0], "without")?.into_iter().filter(|v| !omit.iter().any(|o| deep_equal(o, v))).collect())
    }),
    f!("has", [Any, Any], |a| {
        if matches!(a[1], Value::Nil) {
            return Ok(Value::Bool(false));
        }
        Ok(Value::Bool(as_list(&a[1], "has")?.iter().any(|v| deep_equal(v, &a[0]))))
    }),
    f!("chunk", [Int, Any], |a| {
        let size = int_arg(&a[0]).max(1) as usize;
        let l = as_list(&a[1], "chunk")?;
        list_v(l.chunks(size).map(|c| Value::list(c.to_vec())).collect())
    }),
    f!("sortAlpha", [Any], |a| {
        let mut v = strslice(&a[0]);
        v.sort();
        Ok(strs(v))
    }),
];

/// The function table: dicts.
const DICTS: &[Row] = &[
    f!("dict", [], va Any, |a| {
        let mut d = BTreeMap::new();
        let mut i = 0;
        while i < a.len() {
            let k = strval(&a[i]);
            let v = a.get(i + 1).cloned().unwrap_or_else(|| Value::str(""));
            d.insert(k, v);
            i += 2;
        }
        Ok(Value::map(d))
    }),
    f!("get", [Map, Str], |a| Ok(match &a[0] {
        Value::Map(d) => d.borrow().get(s(&a[1])).cloned().unwrap_or_else(|| Value::str("")),
        _ => Value::str(""),
    })),
    f!("set", [Map, Str, Any], |a| match &a[0] {
        Value::Map(d) => {
            d.borrow_mut().insert(s(&a[1]).to_string(), a[2].clone());
            Ok(a[0].clone())
        }
        _ => err("assignment to entry in nil map"),
    }),
    f!("unset", [Map, Str], |a| {
        if let Value::Map(d) = &a[0] {
            d.borrow_mut().remove(s(&a[1]));
        }
        Ok(a[0].clone())
    }),
    f!("hasKey", [Map, Str], |a| Ok(Value::Bool(match &a[0] {
        Value::Map(d) => d.borrow().contains_key(s(&a[1])),
        _ => false,
    }))),
    f!("pluck", [Str], va Map, |a| {
        let mut out = Vec::new();
        for d in &a[1..] {
            if let Value::Map(d) = d
                && let Some(v) = d.borrow().get(s(&a[0])) {
                    out.push(v.clone());
                }
        }
        list_v(out)
    }),
    f!("keys", [], va Map, |a| {
        let mut out = Vec::new();
        for d in &a {
            if let Value::Map(d) = d {
                out.extend(d.borrow().keys().cloned());
            }
        }
        Ok(strs(out))
    }),
    f!("values", [Map], |a| list_v(match &a[0] {
        Value::Map(d) => d.borrow().values().cloned().collect(),
        _ => Vec::new(),
    })),
    f!("pick", [Map], va Str, |a| {
        let mut out = BTreeMap::new();
        if let Value::Map(d) = &a[0] {
            for k in &a[1..] {
                if let Some(v) = d.borrow().get(s(k)) {
                    out.insert(s(k).to_string(), v.clone());
                }
            }
        }
        Ok(Value::map(out))
    }),
    f!("omit", [Map], va Str, |a| {
        let mut out = BTreeMap::new();
        if let Value::Map(d) = &a[0] {
            for (k, v) in d.borrow().iter() {
                if !a[1..].iter().any(|o| s(o) == k) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(Value::map(out))
    }),
    f!("merge", [Map], va Map, |a| merge_fn(a, false)),
    f!("mustMerge", [Map], va Map, |a| merge_fn(a, false)),
    f!("mergeOverwrite", [Map], va Map, |a| merge_fn(a, true)),
    f!("mustMergeOverwrite", [Map], va Map, |a| merge_fn(a, true)),
    f!("dig", [Any], va Any, |a| {
        // dig "k1" "k2" default dict
        if a.len() < 3 {
            return err("dig needs at least three arguments");
        }
        let n = a.len();
        let Value::Map(d) = &a[n - 1] else {
            return err(format!("interface conversion: interface {{}} is {}, not map[string]interface {{}}", a[n - 1].type_name()));
        };
        let keys = &a[..n - 2];
        let default = a[n - 2].clone();
        let mut cur = Value::Map(d.clone());
        for k in keys {
            let next = match &cur {
                Value::Map(m) => m.borrow().get(s(k)).cloned(),
                _ => None,
            };
            match next {
                Some(v) => cur = v,
                None => return Ok(default),
            }
        }
        Ok(cur)
    }),
];

/// The function table: semver, paths, urls, misc.
const MISC: &[Row] = &[
    f!("semverCompare", [Str, Str], |a| match super::semver::compare(s(&a[0]), s(&a[1])) {
        Ok(b) => Ok(Value::Bool(b)),
        Err(e) => err(e),
    }),
    f!("semver", [Str], |a| match super::semver::Version::parse(s(&a[0])) {
        Some(v) => Ok(v.to_value()),
        None => err("invalid semantic version"),
    }),
    f!("base", [Str], |a| str_v(path_base(s(&a[0])))),
    f!("dir", [Str], |a| str_v(path_dir(s(&a[0])))),
    f!("ext", [Str], |a| {
        let b = s(&a[0]);
        let slash = b.rfind('/').map(|i| i + 1).unwrap_or(0);
        str_v(b[slash..].rfind('.').map(|i| b[slash + i..].to_string()).unwrap_or_default())
    }),
    f!("clean", [Str], |a| str_v(path_clean(s(&a[0])))),
    f!("isAbs", [Str], |a| Ok(Value::Bool(s(&a[0]).starts_with('/')))),
    f!("uuidv4", [], |_| {
        let mut b: [u8; 16] = std::array::from_fn(|_| (rand_u64() & 0xff) as u8);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        str_v(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
    }),
    f!("randAlphaNum", [Int], |a| str_v(rand_from(
        int_arg(&a[0]),
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    ))),
    f!("randAlpha", [Int], |a| str_v(rand_from(
        int_arg(&a[0]),
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ))),
    f!("randNumeric", [Int], |a| str_v(rand_from(int_arg(&a[0]), "0123456789"))),
    f!("randAscii", [Int], |a| str_v(rand_from(
        int_arg(&a[0]),
        "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
    ))),
    f!("now", [], |_| { Ok(Value::Obj(Rc::new(GoTime::now()))) }),
    f!("date", [Str, Any], |a| str_v(format_time_value(&a[1], s(&a[0])))),
    f!("dateInZone", [Str, Any, Str], |a| str_v(format_time_value(&a[1], s(&a[0])))),
    f!("htmlDate", [Any], |a| str_v(format_time_value(&a[0], "2006-01-02"))),
    f!("unixEpoch", [Any], |a| str_v(GoTime::of(&a[0]).map(|t| t.secs.to_string()).unwrap_or_default())),
    f!("sha1sum", [Str], |a| str_v(hex(&sha1(s(&a[0]).as_bytes())))),
    f!("b32dec", [Str], |a| str_v(
        base32_decode(s(&a[0])).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_else(|e| e)
    )),
    f!("urlJoin", [Map], |a| {
        let get = |k: &str| match &a[0] {
            Value::Map(d) => d.borrow().get(k).map(strval).unwrap_or_default(),
            _ => String::new(),
        };
        let mut out = String::new();
        let scheme = get("scheme");
        if !scheme.is_empty() {
            out.push_str(&scheme);
            out.push(':');
        }
        let host = get("host");
        let userinfo = get("userinfo");
        if !host.is_empty() || !userinfo.is_empty() {
            out.push_str("//");
            if !userinfo.is_empty() {
                out.push_str(&userinfo);
                out.push('@');
            }
            out.push_str(&host);
        }
        out.push_str(&get("path"));
        let q = get("query");
        if !q.is_empty() {
            out.push('?');
            out.push_str(&q);
        }
        let f = get("fragment");
        if !f.is_empty() {
            out.push('#');
            out.push_str(&f);
        }
        str_v(out)
    }),
    f!("urlParse", [Str], |a| {
        let u = s(&a[0]);
        let (rest, fragment) = u.split_once('#').map(|(x, y)| (x, y.to_string())).unwrap_or((u, String::new()));
        let (rest, query) = rest.split_once('?').map(|(x, y)| (x, y.to_string())).unwrap_or((rest, String::new()));
        let (scheme, rest) = match rest.split_once("://") {
            Some((sc, r)) => (sc.to_string(), r),
            None => (String::new(), rest),
        };
        let (authority, path) = if scheme.is_empty() {
            ("", rest.to_string())
        } else {
            match rest.find('/') {
                Some(i) => (&rest[..i], rest[i..].to_string()),
                None => (rest, String::new()),
            }
        };
        let (userinfo, host) = authority
            .rsplit_once('@')
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .unwrap_or((String::new(), authority.to_string()));
        let mut d = BTreeMap::new();
        for (k, v) in [
            ("scheme", scheme),
            ("host", host),
            ("hostname", String::new()),
            ("path", path),
            ("query", query),
            ("opaque", String::new()),
            ("fragment", fragment),
            ("userinfo", userinfo),
        ] {
            d.insert(k.to_string(), Value::str(v));
        }
        let host = strval(&d["host"]);
        let hostname = host.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or(host);
        d.insert("hostname".into(), Value::str(hostname));
        Ok(Value::map(d))
    }),
];

fn build() -> FxHashMap<&'static str, Func> {
    let mut m: FxHashMap<&'static str, Func> = FxHashMap::default();
    for (name, func) in [TEXT_TEMPLATE, HELM, SPRIG_FLOW, STRINGS, NUMBERS, LISTS, DICTS, MISC].into_iter().flatten() {
        m.insert(name, *func);
    }
    // `must*` variants: the same functions, errors returned rather than swallowed.
    for (alias, of) in [
        ("mustRest", "rest"),
        ("mustInitial", "initial"),
        ("mustPush", "push"),
        ("mustPrepend", "prepend"),
        ("mustReverse", "reverse"),
        ("mustUniq", "uniq"),
        ("mustWithout", "without"),
        ("mustHas", "has"),
        ("mustCompact", "compact"),
        ("mustSlice", "slice"),
        ("mustChunk", "chunk"),
        ("mustRegexFind", "regexFind"),
        ("mustRegexFindAll", "regexFindAll"),
        ("mustRegexReplaceAll", "regexReplaceAll"),
        ("mustRegexReplaceAllLiteral", "regexReplaceAllLiteral"),
        ("mustRegexSplit", "regexSplit"),
        ("mustFromJsonArray", "fromJsonArray"),
    ] {
        if let Some(f) = m.get(of).copied() {
            m.insert(alias, f);
        }
    }
    for name in [
        "derivePassword",
        "encryptAES",
        "decryptAES",
        "bcrypt",
        "htpasswd",
        "getHostByName",
        "buildCustomCert",
        "toToml",
        "toDate",
        "mustToDate",
        "dateModify",
        "mustDateModify",
        "ago",
        "duration",
        "durationRound",
        "htmlDateInZone",
        "fromToml",
    ] {
        m.insert(
            name,
            Func {
                params: &[],
                variadic: Some(P::Any),
                body: Body::Pure(|_| err("this function is not supported by convoy's Helm engine")),
                effect: false,
            },
        );
    }
    for name in [
        "set",
        "unset",
        "merge",
        "mustMerge",
        "mergeOverwrite",
        "mustMergeOverwrite",
        "shuffle",
        "randInt",
        "uuidv4",
        "randAlphaNum",
        "randAlpha",
        "randNumeric",
        "randAscii",
        "now",
    ] {
        if let Some(f) = m.get_mut(name) {
            f.effect = true;
        }
    }
    m
}

fn error_map(e: &str) -> Value {
    let mut d = BTreeMap::new();
    d.insert("Error".to_string(), Value::str(e));
    Value::map(d)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Str(_) => "string",
        Value::List(_) => "array",
        Value::Map(_) => "object",
        Value::Bool(_) => "bool",
        _ => "number",
    }
}

fn as_list(v: &Value, f: &str) -> Result<Vec<Value>, FnError> {
    match v {
        Value::List(l) => Ok(l.as_ref().clone()),
        other => err(format!("Cannot find {f} on type {}", other.kind_name())),
    }
}

fn merge_fn(a: Vec<Value>, overwrite: bool) -> FResult {
    let Value::Map(dst) = &a[0] else {
        return Ok(Value::str(""));
    };
    for src in &a[1..] {
        if let Value::Map(src) = src {
            if Rc::ptr_eq(dst, src) {
                continue;
            }
            mergo(dst, src, overwrite);
        }
    }
    Ok(a[0].clone())
}

/// `mergo.Merge` (with `WithOverride` when `overwrite`) for `map[string]interface{}`:
/// fills keys missing or empty in `dst`, recursing into maps present in both.
pub fn mergo(dst: &super::value::Map, src: &super::value::Map, overwrite: bool) {
    let src_items: Vec<(String, Value)> = src.borrow().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, sv) in src_items {
        if matches!(sv, Value::Nil) {
            if overwrite {
                dst.borrow_mut().insert(k, Value::Nil);
            }
            continue;
        }
        let dv = dst.borrow().get(&k).cloned();
        if let (Value::Map(sm), Some(Value::Map(dm))) = (&sv, &dv)
            && !Rc::ptr_eq(sm, dm)
        {
            mergo(dm, sm, overwrite);
        }
        if let Some(d) = &dv
            && !empty(d)
        {
            if matches!(sv, Value::List(_)) && !overwrite {
                continue;
            }
            if matches!(sv, Value::Map(_)) && matches!(d, Value::Map(_)) {
                continue;
            }
        }
        if overwrite || dv.as_ref().is_none_or(empty) {
            dst.borrow_mut().insert(k, sv);
        }
    }
}

/// Sprig's `empty`.
pub fn empty(v: &Value) -> bool {
    match v {
        Value::Nil => true,
        Value::Obj(o) => match o.range_items() {
            Some(i) => i.is_empty(),
            None => false,
        },
        other => !other.truthy(),
    }
}

/// Sprig's `strval`: strings as they are, everything else `%v`.
pub fn strval(v: &Value) -> String {
    v.to_go_string()
}

/// Sprig's `strslice`.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::List(l) => l.iter().filter(|x| !matches!(x, Value::Nil)).map(strval).collect(),
        Value::Nil => Vec::new(),
        other => vec![strval(other)],
    }
}

fn deep_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Nil, Value::Nil) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) | (Value::Int64(x), Value::Int64(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| deep_equal(p, q)),
        (Value::Map(x), Value::Map(y)) => {
            let (x, y) = (x.borrow(), y.borrow());
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| deep_equal(v, w)))
        }
        _ => false,
    }
}

#[derive(PartialEq)]
enum Basic {
    Bool,
    Int,
    Float,
    Str,
    Other,
}

fn basic(v: &Value) -> Basic {
    match v {
        Value::Bool(_) => Basic::Bool,
        Value::Int(_) | Value::Int64(_) => Basic::Int,
        Value::Float(_) => Basic::Float,
        Value::Str(_) => Basic::Str,
        _ => Basic::Other,
    }
}

/// text/template's `eq` for one pair.
fn cmp_eq(a: &Value, b: &Value) -> Result<bool, FnError> {
    let (ka, kb) = (basic(a), basic(b));
    if ka != kb {
        if matches!(a, Value::Nil) || matches!(b, Value::Nil) {
            return Ok(false);
        }
        return err(format!("incompatible types for comparison: {} and {}", a.type_name(), b.type_name()));
    }
    Ok(match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x) | Value::Int64(x), Value::Int(y) | Value::Int64(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Nil, Value::Nil) => true,
        (Value::Map(_), _) | (_, Value::Map(_)) | (Value::List(_), _) | (_, Value::List(_)) => {
            return err(format!("non-comparable type {}: {}", a.to_go_string(), a.type_name()));
        }
        _ => false,
    })
}

fn cmp_lt(a: &Value, b: &Value) -> Result<bool, FnError> {
    let (ka, kb) = (basic(a), basic(b));
    if ka == Basic::Other || kb == Basic::Other || ka == Basic::Bool {
        return err("invalid type for comparison");
    }
    if ka != kb {
        return err(format!("incompatible types for comparison: {} and {}", a.type_name(), b.type_name()));
    }
    Ok(match (a, b) {
        (Value::Int(x) | Value::Int64(x), Value::Int(y) | Value::Int64(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::Str(x), Value::Str(y)) => x < y,
        _ => false,
    })
}

fn index(item: &Value, idx: &[Value]) -> FResult {
    let mut cur = item.clone();
    for i in idx {
        cur = match &cur {
            Value::Map(m) => match i {
                Value::Str(k) => m.borrow().get(k.as_ref()).cloned().unwrap_or(Value::Nil),
                Value::Nil => Value::Nil,
                other => return err(format!("value has type {}; should be string", other.type_name())),
            },
            Value::List(l) => {
                let n = match i {
                    Value::Int(n) | Value::Int64(n) => *n,
                    other => return err(format!("cannot index slice/array with type {}", other.type_name())),
                };
                if n < 0 || n as usize >= l.len() {
                    return err(format!("index out of range: {n}"));
                }
                l[n as usize].clone()
            }
            Value::Str(st) => {
                let n = match i {
                    Value::Int(n) | Value::Int64(n) => *n,
                    other => return err(format!("cannot index slice/array with type {}", other.type_name())),
                };
                if n < 0 || n as usize >= st.len() {
                    return err(format!("index out of range: {n}"));
                }
                Value::Int(i64::from(st.as_bytes()[n as usize]))
            }
            Value::Nil => return err("index of untyped nil"),
            other => return err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(cur)
}

fn slice(item: &Value, idx: &[Value]) -> FResult {
    let ints: Vec<i64> = idx.iter().map(int_arg).collect();
    match item {
        Value::List(l) => {
            let lo = *ints.first().unwrap_or(&0) as usize;
            let hi = ints.get(1).map(|h| *h as usize).unwrap_or(l.len());
            if lo > hi || hi > l.len() {
                return err("reflect.Value.Slice: slice index out of bounds");
            }
            list_v(l[lo..hi].to_vec())
        }
        Value::Nil => err("list should be type of slice or array but <nil>"),
        other => err(format!("list should be type of slice or array but {}", other.type_name())),
    }
}

fn byte_slice(s: &str, lo: usize, hi: usize) -> String {
    String::from_utf8_lossy(&s.as_bytes()[lo..hi]).into_owned()
}

/// `cast.ToInt64`.
pub fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Int(i) | Value::Int64(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::Str(st) => parse_go_int(st).unwrap_or(0),
        _ => 0,
    }
}

fn parse_go_int(st: &str) -> Option<i64> {
    // cast trims a ".0…" decimal tail, then parses with base prefix detection.
    let t = match st.find('.') {
        Some(i) if st[i + 1..].bytes().all(|b| b == b'0') => &st[..i],
        _ => st,
    };
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let body = body.replace('_', "");
    let lower = body.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8).ok()?
    } else {
        lower.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `cast.ToFloat64`.
pub fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) | Value::Int64(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Str(st) => st.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn int_range(start: i64, stop: i64, step: i64) -> Vec<Value> {
    let mut v = Vec::new();
    if step == 0 {
        return v;
    }
    let mut i = start;
    if step > 0 {
        while i < stop {
            v.push(Value::Int(i));
            i += step;
        }
    } else {
        while i > stop {
            v.push(Value::Int(i));
            i += step;
        }
    }
    v
}

fn seq(start: i64, step: i64, end: i64) -> Vec<String> {
    let mut v = Vec::new();
    if step == 0 {
        return v;
    }
    let mut i = start;
    if step > 0 {
        if start > end {
            return v;
        }
        while i <= end {
            v.push(i.to_string());
            i += step;
        }
    } else {
        if start < end {
            return v;
        }
        while i >= end {
            v.push(i.to_string());
            i += step;
        }
    }
    v
}

fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

/// `s` with every line indented by `n` spaces, after `before`.
fn indent(n: i64, s: &str, before: &str) -> String {
    let pad = n.max(0) as usize;
    let newlines = memchr::memchr_iter(b'\n', s.as_bytes()).count();
    let mut out = String::with_capacity(before.len() + s.len() + pad * (1 + newlines));
    out.push_str(before);
    out.extend(std::iter::repeat_n(' ', pad));
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', s.as_bytes()) {
        out.push_str(&s[start..=newline]);
        out.extend(std::iter::repeat_n(' ', pad));
        start = newline + 1;
    }
    out.push_str(&s[start..]);
    out
}

fn substr(start: i64, end: i64, s: &str) -> String {
    let n = s.len() as i64;
    if start < 0 {
        return byte_slice(s, 0, end.clamp(0, n) as usize);
    }
    if end < 0 || end > n {
        return byte_slice(s, start.min(n) as usize, n as usize);
    }
    if start > end {
        return String::new();
    }
    byte_slice(s, start as usize, end as usize)
}

/// Go's `strings.Replace(s, old, new, -1)` (an empty `old` inserts between runes).
fn go_replace(s: &str, old: &str, new: &str) -> String {
    if old.is_empty() {
        let mut out = String::from(new);
        for c in s.chars() {
            out.push(c);
            out.push_str(new);
        }
        return out;
    }
    s.replace(old, new)
}

/// Go's `strings.SplitN` (`n < 0`: all).
fn go_split(s: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    if sep.is_empty() {
        let chars: Vec<String> = s.chars().map(String::from).collect();
        if n > 0 && chars.len() as i64 > n {
            let mut v: Vec<String> = chars[..(n - 1) as usize].to_vec();
            v.push(chars[(n - 1) as usize..].concat());
            return v;
        }
        return chars;
    }
    if n < 0 { s.split(sep).map(String::from).collect() } else { s.splitn(n as usize, sep).map(String::from).collect() }
}

/// Go's deprecated `strings.Title`: upper-cases letters that start a word.
fn title(s: &str) -> String {
    let mut out = String::new();
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.push(go_title(c));
        } else {
            out.push(c);
        }
        prev_sep = is_separator(c);
    }
    out
}

fn is_separator(c: char) -> bool {
    if c.is_ascii() {
        return !(c.is_ascii_alphanumeric() || c == '_');
    }
    if c.is_alphanumeric() {
        return false;
    }
    c.is_whitespace()
}

/// Go's `unicode.ToTitle` (as `ToUpper` except for digraphs).
fn go_title(c: char) -> char {
    match c {
        'ǆ' | 'ǅ' | 'Ǆ' => 'ǅ',
        'ǉ' | 'ǈ' | 'Ǉ' => 'ǈ',
        'ǌ' | 'ǋ' | 'Ǌ' => 'ǋ',
        'ǳ' | 'ǲ' | 'Ǳ' => 'ǲ',
        c => go_upper(c),
    }
}

/// Go's `unicode.ToUpper`: one rune to one rune (`ß` stays).
fn go_upper(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// Go's `unicode.ToLower`.
fn go_lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

fn untitle(s: &str) -> String {
    let mut out = String::new();
    let mut prev_space = true;
    for c in s.chars() {
        if prev_space {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_space = c.is_whitespace();
    }
    out
}

fn snake(s: &str, sep: char) -> String {
    // xstrings.ToSnakeCase, simplified: words split at case changes and non-alphanumerics.
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = if i > 0 { chars.get(i - 1) } else { None };
            let next = chars.get(i + 1);
            if i > 0
                && !out.ends_with(sep)
                && (prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                    || (prev.is_some_and(|p| p.is_uppercase()) && next.is_some_and(|n| n.is_lowercase())))
            {
                out.push(sep);
            }
            out.extend(c.to_lowercase());
        } else if c.is_alphanumeric() {
            out.push(*c);
        } else if !out.is_empty() && !out.ends_with(sep) {
            out.push(sep);
        }
    }
    while out.ends_with(sep) {
        out.pop();
    }
    out
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = true;
    for c in s.chars() {
        if c == '_' || c == ' ' || c == '-' {
            up = true;
            continue;
        }
        if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn wrap(s: &str, width: usize, nl: &str) -> String {
    // goutils.WrapCustom with wrapLongWords=false.
    let mut out = String::new();
    for (li, line) in s.split('\n').enumerate() {
        if li > 0 {
            out.push_str(nl);
        }
        let mut cur = String::new();
        for word in line.split(' ').filter(|w| !w.is_empty()) {
            if !cur.is_empty() && cur.len() + 1 + word.len() > width {
                out.push_str(&cur);
                out.push_str(nl);
                cur.clear();
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        out.push_str(&cur);
    }
    out
}

fn path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

fn path_dir(p: &str) -> String {
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    path_clean(dir)
}

fn path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn adler32(b: &[u8]) -> u32 {
    let (mut a, mut c) = (1u32, 0u32);
    for x in b {
        a = (a + u32::from(*x)) % 65521;
        c = (c + a) % 65521;
    }
    (c << 16) | a
}

fn base32_decode(s: &str) -> Result<Vec<u8>, String> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = A.iter().position(|x| *x == c).ok_or_else(|| format!("illegal base32 data at input byte {c}"))?;
        bits = (bits << 5) | v as u64;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Ok(out)
}

/// SHA-1 (for `sha1sum`; not used for anything that needs collision resistance).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base32_encode(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for chunk in b.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = u64::from_be_bytes([0, 0, 0, buf[0], buf[1], buf[2], buf[3], buf[4]]);
        let chars = match chunk.len() {
            1 => 2,
            2 => 4,
            3 => 5,
            4 => 7,
            _ => 8,
        };
        for i in 0..8 {
            if i < chars {
                out.push(A[((n >> (35 - i * 5)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    thread_local!(static STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    STATE.with(|st| {
        let mut x = st.get();
        if x == 0 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1),
            );
            x = h.finish() | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        st.set(x);
        x
    })
}

fn rand_from(n: i64, alphabet: &str) -> String {
    let a: Vec<char> = alphabet.chars().collect();
    (0..n.max(0)).map(|_| a[(rand_u64() % a.len() as u64) as usize]).collect()
}

fn html_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '\'' => o.push_str("&#39;"),
            '"' => o.push_str("&#34;"),
            '\0' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

fn js_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\'' => o.push_str("\\'"),
            '"' => o.push_str("\\\""),
            '<' => o.push_str("\\u003C"),
            '>' => o.push_str("\\u003E"),
            '&' => o.push_str("\\u0026"),
            '=' => o.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

fn query_escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => o.push(b as char),
            b' ' => o.push('+'),
            b => {
                let _ = write!(o, "%{b:02X}");
            }
        }
    }
    o
}

/// `fmt.Sprint`: spaces between operands when neither side is a string.
fn sprint(a: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        if i > 0 && !matches!(v, Value::Str(_)) && !matches!(a[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        match v {
            Value::Nil => out.push_str("<nil>"),
            other => write_go(&mut out, other),
        }
    }
    out
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\u{7}' => o.push_str("\\a"),
            '\u{8}' => o.push_str("\\b"),
            '\u{c}' => o.push_str("\\f"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '\u{b}' => o.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            c if is_go_unprintable(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(o, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(o, "\\U{:08x}", c as u32);
                }
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn is_go_unprintable(c: char) -> bool {
    let u = c as u32;
    (0x80..0xa0).contains(&u)
        || u == 0xad
        || (0x200b..=0x200f).contains(&u)
        || (0x2028..=0x202e).contains(&u)
        || (0x2060..=0x206f).contains(&u)
        || u == 0xfeff
        || (0xfff9..=0xfffb).contains(&u)
        || (0xe000..=0xf8ff).contains(&u)
        || (0xd800..=0xdfff).contains(&u)
        || (u >= 0xf0000)
        || u == 0x85
        || (c.is_whitespace() && c != ' ' && u > 0x7f)
}

/// JSON as Go's `encoding/json` writes it: map keys sorted, `<>&` escaped when `html`.
pub fn to_json(v: &Value, html: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, v, html);
    out
}

fn write_json(out: &mut String, v: &Value, html: bool) {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) | Value::Int64(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&json_float(*f)),
        Value::Str(s) => json_str(out, s, html),
        Value::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, e, html);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, e)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, k, html);
                out.push(':');
                write_json(out, e, html);
            }
            out.push('}');
        }
        Value::Obj(o) => {
            let j = o.to_json();
            write_json(out, &Value::from_json(&j), html);
        }
    }
}

/// `encoding/json`'s float format: `'f'` unless the exponent is below -6 or from 21 up.
pub fn json_float(f: f64) -> String {
    if f.is_nan() || f.is_infinite() {
        return "null".into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format_float(f, 100, -100);
        // Go cleans e-07 → e-7.
        if let Some(i) = s.find("e-0") {
            return format!("{}e-{}", &s[..i], &s[i + 3..]);
        }
        return s;
    }
    format_float(f, -100, 100)
}

fn json_str(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if html => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn to_pretty_json(v: &Value) -> String {
    let compact = to_json(v, true);
    // Re-indent Go's MarshalIndent style (two spaces) from the compact form.
    match serde_json::from_str::<serde_json::Value>(&compact) {
        Ok(_) => pretty(v, 0),
        Err(_) => compact,
    }
}

fn pretty(v: &Value, ind: usize) -> String {
    let pad = "  ".repeat(ind + 1);
    let end = "  ".repeat(ind);
    match v {
        Value::List(l) if !l.is_empty() => {
            let items: Vec<String> = l.iter().map(|e| format!("{pad}{}", pretty(e, ind + 1))).collect();
            format!("[\n{}\n{end}]", items.join(",\n"))
        }
        Value::Map(m) if !m.borrow().is_empty() => {
            let items: Vec<String> = m
                .borrow()
                .iter()
                .map(|(k, e)| {
                    let mut ks = String::new();
                    json_str(&mut ks, k, true);
                    format!("{pad}{ks}: {}", pretty(e, ind + 1))
                })
                .collect();
            format!("{{\n{}\n{end}}}", items.join(",\n"))
        }
        other => to_json(other, true),
    }
}

/// Go's `fmt.Sprintf` for the verbs charts use.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let chars: Vec<char> = format.chars().collect();
    let mut i = 0;
    let mut argi = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '%' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        if i >= chars.len() {
            out.push_str("%!(NOVERB)");
            break;
        }
        let (mut minus, mut plus, mut sharp, mut zero, mut space) = (false, false, false, false, false);
        while i < chars.len() {
            match chars[i] {
                '-' => minus = true,
                '+' => plus = true,
                '#' => sharp = true,
                '0' => zero = true,
                ' ' => space = true,
                _ => break,
            }
            i += 1;
        }
        let mut width: Option<usize> = None;
        let mut prec: Option<usize> = None;
        let num = |i: &mut usize| -> Option<usize> {
            let st = *i;
            while *i < chars.len() && chars[*i].is_ascii_digit() {
                *i += 1;
            }
            if *i > st { chars[st..*i].iter().collect::<String>().parse().ok() } else { None }
        };
        if i < chars.len() && chars[i] == '*' {
            i += 1;
            width = args.get(argi).map(|v| int_arg(v).max(0) as usize);
            argi += 1;
        } else {
            width = num(&mut i).or(width);
        }
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            if i < chars.len() && chars[i] == '*' {
                i += 1;
                prec = args.get(argi).map(|v| int_arg(v).max(0) as usize);
                argi += 1;
            } else {
                prec = Some(num(&mut i).unwrap_or(0));
            }
        }
        if i >= chars.len() {
            out.push_str("%!(NOVERB)");
            break;
        }
        let verb = chars[i];
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        if matches!(args.get(argi), Some(Value::Nil)) && verb != 'v' {
            argi += 1;
            let _ = write!(out, "%!{verb}(<nil>)");
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        let body = fmt_verb(verb, arg, prec, plus, sharp, space);
        let body = match body {
            Some(b) => b,
            None => {
                let _ = write!(out, "%!{verb}({}={})", arg.type_name(), arg.to_go_string());
                continue;
            }
        };
        let len = body.chars().count();
        if let Some(w) = width.filter(|w| *w > len) {
            let pad = w - len;
            if minus {
                out.push_str(&body);
                out.push_str(&" ".repeat(pad));
            } else if zero && (!matches!(verb, 's' | 'q' | 'v') || arg.is_number()) {
                let (sign, digits) = match body.strip_prefix('-') {
                    Some(d) => ("-", d.to_string()),
                    None => ("", body.clone()),
                };
                out.push_str(sign);
                out.push_str(&"0".repeat(pad));
                out.push_str(&digits);
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(&body);
            }
        } else {
            out.push_str(&body);
        }
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> =
            args[argi..].iter().map(|a| format!("{}={}", a.type_name(), a.to_go_string())).collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

fn fmt_verb(verb: char, arg: &Value, prec: Option<usize>, plus: bool, sharp: bool, space: bool) -> Option<String> {
    let sign = |s: String, neg: bool| -> String {
        if neg {
            s
        } else if plus {
            format!("+{s}")
        } else if space {
            format!(" {s}")
        } else {
            s
        }
    };
    match (verb, arg) {
        ('v', Value::Nil) => Some("<nil>".into()),
        ('v', Value::Float(f)) => Some(sign(go_float(*f), *f < 0.0)),
        ('v', Value::Int(i) | Value::Int64(i)) => Some(sign(i.to_string(), *i < 0)),
        ('v', other) => Some(other.to_go_string()),
        ('s', Value::Str(s)) => Some(match prec {
            Some(p) => s.chars().take(p).collect(),
            None => s.to_string(),
        }),
        ('s', Value::List(_) | Value::Map(_) | Value::Obj(_)) => Some(arg.to_go_string()),
        ('s', Value::Nil) => Some("%!s(<nil>)".into()),
        ('s', _) => None,
        ('q', Value::Str(s)) => Some(if sharp && !s.contains('`') { format!("`{s}`") } else { go_quote(s) }),
        ('q', Value::Int(i) | Value::Int64(i)) => char::from_u32(*i as u32).map(|c| format!("'{c}'")),
        ('q', Value::List(l)) => Some(format!(
            "[{}]",
            l.iter()
                .map(|e| fmt_verb('q', e, prec, plus, sharp, space).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ")
        )),
        ('d', Value::Int(i) | Value::Int64(i)) => Some(sign(i.to_string(), *i < 0)),
        ('d', Value::List(l)) => Some(format!(
            "[{}]",
            l.iter()
                .map(|e| fmt_verb('d', e, prec, plus, sharp, space).unwrap_or_else(|| format!(
                    "%!d({}={})",
                    e.type_name(),
                    e.to_go_string()
                )))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        ('t', Value::Bool(b)) => Some(b.to_string()),
        ('f' | 'F', Value::Float(f)) => Some(sign(format!("{:.*}", prec.unwrap_or(6), f), *f < 0.0)),
        ('e', Value::Float(f)) => Some(sign(exp_fmt(*f, prec.unwrap_or(6)), *f < 0.0)),
        ('E', Value::Float(f)) => Some(sign(exp_fmt(*f, prec.unwrap_or(6)).to_uppercase(), *f < 0.0)),
        ('G', Value::Float(_)) => fmt_verb('g', arg, prec, plus, sharp, space).map(|s| s.to_uppercase()),
        ('g', Value::Float(f)) => Some(sign(
            match prec {
                None => go_float(*f),
                Some(p) => format_float_prec_g(*f, p.max(1)),
            },
            *f < 0.0,
        )),
        ('x', Value::Int(i) | Value::Int64(i)) => {
            Some(if *i < 0 { format!("-{:x}", -i) } else { format!("{}{i:x}", if sharp { "0x" } else { "" }) })
        }
        ('X', Value::Int(i) | Value::Int64(i)) => {
            Some(if *i < 0 { format!("-{:X}", -i) } else { format!("{}{i:X}", if sharp { "0X" } else { "" }) })
        }
        ('x', Value::Str(s)) => Some(hex(s.as_bytes())),
        ('X', Value::Str(s)) => Some(hex(s.as_bytes()).to_uppercase()),
        ('o', Value::Int(i) | Value::Int64(i)) => Some(format!("{}{i:o}", if sharp { "0" } else { "" })),
        ('b', Value::Int(i) | Value::Int64(i)) => Some(format!("{i:b}")),
        ('c', Value::Int(i) | Value::Int64(i)) => char::from_u32(*i as u32).map(String::from),
        ('T', v) => Some(v.type_name()),
        _ => None,
    }
}

fn exp_fmt(f: f64, prec: usize) -> String {
    let s = format!("{:.*e}", prec, f);
    match s.split_once('e') {
        Some((m, e)) => {
            let e: i32 = e.parse().unwrap_or(0);
            format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
        }
        None => s,
    }
}

fn format_float_prec_g(f: f64, p: usize) -> String {
    let s = format!("{:.*e}", p - 1, f);
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = e.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let dec = (p as i32 - 1 - exp).max(0) as usize;
        let s = format!("{:.*}", dec, f);
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_matches_go() {
        let v = |x: Value| x;
        assert_eq!(sprintf("%s-%d", &[Value::str("a"), v(Value::Int(3))]), "a-3");
        assert_eq!(sprintf("%05d|%-4s|%4s", &[Value::Int(42), Value::str("ab"), Value::str("ab")]), "00042|ab  |  ab");
        assert_eq!(sprintf("%.2f %v %v", &[Value::Float(1.23456), Value::Float(2.0), Value::Nil]), "1.23 2 <nil>");
        assert_eq!(sprintf("%d", &[Value::Float(2.0)]), "%!d(float64=2)");
        assert_eq!(sprintf("%s %s", &[Value::str("x")]), "x %!s(MISSING)");
        assert_eq!(sprintf("%q", &[Value::str("a\"b")]), "\"a\\\"b\"");
    }

    #[test]
    fn go_title_and_split() {
        assert_eq!(title("hello world-foo_bar"), "Hello World-Foo_bar");
        assert_eq!(go_split("a,b,,c", ",", -1), vec!["a", "b", "", "c"]);
        assert_eq!(parse_go_int("0x1f"), Some(31));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("3.0"), Some(3));
        assert_eq!(parse_go_int("3.5"), None);
    }

    #[test]
    fn json_floats() {
        assert_eq!(json_float(3.0), "3");
        assert_eq!(json_float(1.5), "1.5");
        assert_eq!(json_float(12345678.0), "12345678");
        assert_eq!(json_float(1e21), "1e+21");
        assert_eq!(json_float(1e-7), "1e-7");
    }
}

//! The values a template works with, shaped like the Go values Helm's engine sees
//! (`map[string]interface{}`, `[]interface{}`, `float64` for every number read from YAML or
//! JSON, `int` for template literals), and Go's `fmt` printing of them.

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

/// A Go map as templates see it: shared and mutable (`set`, `merge` and `unset` change it in
/// place, and every holder sees the change), keys sorted like Go prints them.
pub type Map = Rc<MapCell>;

/// The cell behind a [`Map`]. A watched one (the `.Template` of the template being rendered,
/// the only map that changes between a chart's templates) counts every look inside it, so
/// that what a named template printed without looking can serve the chart's other templates.
#[derive(Debug, Default)]
pub struct MapCell {
    entries: RefCell<BTreeMap<String, Value>>,
    watched: bool,
}

thread_local! {
    static WATCHED_READS: Cell<u64> = const { Cell::new(0) };
}

/// Looks inside watched maps so far, on this thread.
pub fn watched_reads() -> u64 {
    WATCHED_READS.with(Cell::get)
}

impl MapCell {
    fn count(&self) {
        if self.watched {
            WATCHED_READS.with(|reads| reads.set(reads.get() + 1));
        }
    }

    /// The entries, to read.
    pub fn borrow(&self) -> Ref<'_, BTreeMap<String, Value>> {
        self.count();
        self.entries.borrow()
    }

    /// The entries, to change.
    pub fn borrow_mut(&self) -> RefMut<'_, BTreeMap<String, Value>> {
        self.count();
        self.entries.borrow_mut()
    }
}

/// A Go value with methods or its own printed form, as the executor and the functions see it.
/// The types themselves live with what they model (`objects`, `time`).
pub trait GoObject: std::fmt::Debug + std::any::Any {
    /// Go's type name, as `typeOf` prints it.
    fn type_name(&self) -> &'static str;

    /// Go's `reflect.Kind` name, as `kindOf` prints it.
    fn kind_name(&self) -> &'static str {
        "struct"
    }

    /// Items when ranged over, if it can be.
    fn range_items(&self) -> Option<Vec<(Value, Value)>> {
        None
    }

    /// Writes Go's `%v`.
    fn write_go(&self, out: &mut String);

    /// JSON form (`toJson`, `toYaml`).
    fn to_json(&self) -> serde_json::Value;

    /// Field or method `name` with `args`.
    fn field(&self, name: &str, args: Vec<Value>, has_args: bool) -> Result<Value, String>;
}

/// A template value.
#[derive(Clone, Debug)]
pub enum Value {
    /// Go's untyped `nil` (a missing key, a `null` in YAML).
    Nil,
    /// `bool`.
    Bool(bool),
    /// `int` (template literals, `len`, `int`, `atoi`).
    Int(i64),
    /// `int64` (Sprig's arithmetic, `int64`).
    Int64(i64),
    /// `float64` (every number in values, `float64`).
    Float(f64),
    /// `string`.
    Str(Rc<str>),
    /// `[]interface{}`.
    List(Rc<Vec<Value>>),
    /// `map[string]interface{}`.
    Map(Map),
    /// A Go value with methods (`.Files`, `.Capabilities`, `time.Time`, …).
    Obj(Rc<dyn GoObject>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<Rc<str>>) -> Value {
        Value::Str(s.into())
    }

    /// A new map value.
    pub fn map(m: BTreeMap<String, Value>) -> Value {
        Value::Map(Rc::new(MapCell { entries: RefCell::new(m), watched: false }))
    }

    /// A new map whose reads are counted ([`watched_reads`]).
    pub fn watched_map(m: BTreeMap<String, Value>) -> Value {
        Value::Map(Rc::new(MapCell { entries: RefCell::new(m), watched: true }))
    }

    /// A new list value.
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(v))
    }

    /// Go's name of the value's type, as `typeOf` prints it.
    pub fn type_name(&self) -> String {
        match self {
            Value::Nil => "<nil>".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Int64(_) => "int64".into(),
            Value::Float(_) => "float64".into(),
            Value::Str(_) => "string".into(),
            Value::List(_) => "[]interface {}".into(),
            Value::Map(_) => "map[string]interface {}".into(),
            Value::Obj(o) => o.type_name().into(),
        }
    }

    /// Go's `reflect.Kind` name, as `kindOf` prints it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Nil => "invalid",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Int64(_) => "int64",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
            Value::Obj(o) => o.kind_name(),
        }
    }

    /// text/template's truth: false, 0, nil, and empty strings, lists and maps are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) | Value::Int64(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.borrow().is_empty(),
            Value::Obj(_) => true,
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Go's `fmt.Sprint` of the value (`%v`).
    pub fn to_go_string(&self) -> String {
        match self {
            Value::Str(s) => s.to_string(),
            _ => {
                let mut out = String::new();
                write_go(&mut out, self);
                out
            }
        }
    }

    /// Deep copy (maps are shared by reference otherwise).
    pub fn deep_copy(&self) -> Value {
        match self {
            Value::Map(m) => Value::map(m.borrow().iter().map(|(k, v)| (k.clone(), v.deep_copy())).collect()),
            Value::List(l) => Value::list(l.iter().map(Value::deep_copy).collect()),
            other => other.clone(),
        }
    }

    /// From JSON, the way Helm's values arrive: every number a `float64`.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::str(s.as_str()),
            serde_json::Value::Array(a) => Value::list(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(m) => {
                Value::map(m.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }

    /// To JSON (objects become their printed form).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) | Value::Int64(i) => serde_json::Value::from(*i),
            Value::Float(f) => float_json(*f),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                serde_json::Value::Object(m.borrow().iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Obj(o) => o.to_json(),
        }
    }

    /// Whether this is a number of any Go type.
    pub fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::Int64(_) | Value::Float(_))
    }
}

/// A float as JSON: integral values become JSON integers (as `encoding/json` prints them).
pub fn float_json(f: f64) -> serde_json::Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        serde_json::Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): shortest digits, in
/// exponent form from 1e+06 up and below 1e-04.
pub fn go_float(f: f64) -> String {
    format_float(f, -4, 6)
}

/// Shortest round-trip digits of `f`, in exponent form when the decimal exponent is below
/// `lo` or at least `hi` (Go's `'g'` is `(-4, 6)`; `encoding/json` is `(-6, 21)`).
pub fn format_float(f: f64, lo: i32, hi: i32) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let (neg, digits, exp) = shortest_digits(f);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if exp < lo || exp >= hi {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

/// The shortest round-trip decimal digits of `f` and its decimal exponent (`d.ddd × 10^exp`).
pub fn shortest_digits(f: f64) -> (bool, String, i32) {
    let s = format!("{:e}", f.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    (f < 0.0, digits.to_string(), exp.parse().unwrap_or(0))
}

/// Writes Go's `%v` of `v` (strings bare, `<nil>`, `[a b]`, `map[k:v]`).
pub fn write_go(out: &mut String, v: &Value) {
    match v {
        Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) | Value::Int64(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&go_float(*f)),
        Value::Str(s) => out.push_str(s),
        Value::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_go(out, e);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, e)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_go(out, e);
            }
            out.push(']');
        }
        Value::Obj(o) => o.write_go(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        let cases = [
            (1e6, "1e+06"),
            (100000.0, "100000"),
            (1e21, "1e+21"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (3.0, "3"),
            (-2.5e-7, "-2.5e-07"),
            (1.5, "1.5"),
            (12345678.0, "1.2345678e+07"),
            (123456.0, "123456"),
            (1234567.5, "1.2345675e+06"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float(f), want, "{f}");
        }
    }
}

//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`, what
//! kubectl's typed clients send for `kubectl create configmap` and the other generators) into the
//! JSON objects kubesim stores, following the Kubernetes JSON conventions.
//!
//! The schema of the built-in kinds is generated into `kube_proto.schema` by
//! `e2e/tools/gen_kube_proto_schema.py` (its header says how to regenerate it). Fields the schema
//! does not know (newer than it) are skipped, as protobuf decoders do.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The media type kubectl sends protobuf bodies with.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
const MAGIC: &[u8] = b"k8s\0";

const SCHEMA: &str = include_str!("kube_proto.schema");

/// Errors from decoding a protobuf body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The body is not a Kubernetes protobuf envelope at all.
    #[error("the protobuf body does not start with the Kubernetes magic bytes \"k8s\\x00\"")]
    NoMagic,
    /// The kind is not one whose schema kubesim carries.
    #[error("kubesim cannot decode protobuf bodies of {kind} ({api_version}); send it as JSON or YAML")]
    UnknownKind {
        /// apiVersion from the envelope.
        api_version: String,
        /// Kind from the envelope.
        kind: String,
    },
    /// The envelope names a content encoding (e.g. gzip) kubesim does not undo.
    #[error("the protobuf body of {kind} has contentEncoding {encoding:?}, which kubesim does not decode")]
    Encoding {
        /// Kind from the envelope.
        kind: String,
        /// The encoding named.
        encoding: String,
    },
    /// The bytes do not decode as the message the schema expects.
    #[error("malformed protobuf body of {kind}: {what} (in {message}, at byte {offset} of it)")]
    Malformed {
        /// Kind from the envelope (`runtime.Unknown` while reading the envelope itself).
        kind: String,
        /// The message being read.
        message: String,
        /// Offset within that message's bytes.
        offset: usize,
        /// What is wrong.
        what: String,
    },
}

impl Error {
    /// The HTTP status the API server answers with: 415 for what kubesim cannot decode, 400 for
    /// bytes that are wrong.
    pub fn http_code(&self) -> u16 {
        match self {
            Error::UnknownKind { .. } | Error::Encoding { .. } => 415,
            Error::NoMagic | Error::Malformed { .. } => 400,
        }
    }
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Decodes a protobuf request body (magic, `runtime.Unknown` envelope, object) into the JSON
/// object a JSON client would have sent, with `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value> {
    let envelope = body.strip_prefix(MAGIC).ok_or(Error::NoMagic)?;
    let unknown = Envelope::read(envelope)?;
    let schema = schema();
    let Some(message) = schema.kinds.get(&(unknown.api_version.clone(), unknown.kind.clone())) else {
        return Err(Error::UnknownKind { api_version: unknown.api_version, kind: unknown.kind });
    };
    if !unknown.content_encoding.is_empty() {
        return Err(Error::Encoding { kind: unknown.kind, encoding: unknown.content_encoding });
    }
    let decoder = Decoder { schema, kind: &unknown.kind };
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(unknown.api_version));
    obj.insert("kind".into(), json!(unknown.kind));
    obj.extend(decoder.object(message, unknown.raw)?);
    Ok(Value::Object(obj))
}

/// `runtime.Unknown`: 1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding, 4 contentType.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    fn read(bytes: &'a [u8]) -> Result<Envelope<'a>> {
        let mut out =
            Envelope { api_version: String::new(), kind: String::new(), raw: &[], content_encoding: String::new() };
        let mut r = Reader::new(bytes, "runtime.Unknown", "runtime.Unknown");
        while let Some((tag, v)) = r.field()? {
            match (tag, v) {
                (1, Wire::Bytes(type_meta)) => {
                    let mut t = Reader::new(type_meta, "runtime.Unknown", "runtime.TypeMeta");
                    while let Some((tag, v)) = t.field()? {
                        match (tag, v) {
                            (1, Wire::Bytes(b)) => out.api_version = t.text(b)?,
                            (2, Wire::Bytes(b)) => out.kind = t.text(b)?,
                            _ => {}
                        }
                    }
                }
                (2, Wire::Bytes(b)) => out.raw = b,
                (3, Wire::Bytes(b)) => out.content_encoding = r.text(b)?,
                _ => {}
            }
        }
        if out.kind.is_empty() {
            return Err(r.error("the envelope names no kind (typeMeta.kind is empty)"));
        }
        Ok(out)
    }
}

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    /// No field of the built-in kinds is 32-bit fixed; only skipped, so its value is not kept.
    Fixed32,
    Bytes(&'a [u8]),
}

/// Reads the fields of one message's bytes (`'a`) in order; `'n` is how long the names of the
/// kind and message it reports in errors live.
struct Reader<'a, 'n> {
    bytes: &'a [u8],
    pos: usize,
    kind: &'n str,
    message: &'n str,
}

impl<'a, 'n> Reader<'a, 'n> {
    fn new(bytes: &'a [u8], kind: &'n str, message: &'n str) -> Reader<'a, 'n> {
        Reader { bytes, pos: 0, kind, message }
    }

    fn error(&self, what: impl Into<String>) -> Error {
        Error::Malformed { kind: self.kind.into(), message: self.message.into(), offset: self.pos, what: what.into() }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.error("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            self.error(format!("{what} needs {n} bytes but {} are left", self.bytes.len() - self.pos))
        })?;
        let b = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    /// The next field's tag and value, or None at the end of the message.
    fn field(&mut self) -> Result<Option<(u32, Wire<'a>)>> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag =
            u32::try_from(key >> 3).ok().filter(|&t| t > 0).ok_or_else(|| self.error("field tag 0 or too large"))?;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8, "a fixed64")?.try_into().expect("8 bytes"))),
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| self.error("length too large"))?;
                Wire::Bytes(self.take(len, &format!("field {tag}"))?)
            }
            5 => {
                self.take(4, "a fixed32")?;
                Wire::Fixed32
            }
            w => return Err(self.error(format!("field {tag} has wire type {w}, which Kubernetes never uses"))),
        };
        Ok(Some((tag, value)))
    }

    fn text(&self, b: &[u8]) -> Result<String> {
        String::from_utf8(b.to_vec()).map_err(|_| self.error("a string field is not UTF-8"))
    }
}

/// The proto type of a field (or of a map's values).
#[derive(Debug, Clone, PartialEq)]
enum Type {
    String,
    Bool,
    Int32,
    Int64,
    Double,
    Bytes,
    Message(String),
}

/// One field of a message in the schema.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    /// JSON name; `-` for a Go struct embedded inline (its fields go into the parent).
    json: String,
    ty: Type,
    repeated: bool,
    map: bool,
    /// Optional in the Kubernetes API: a zero value on the wire is Go's unset value.
    omit_zero: bool,
}

/// The built-in kinds and their messages, read from `kube_proto.schema`.
#[derive(Debug, Default)]
struct Schema {
    kinds: HashMap<(String, String), String>,
    messages: HashMap<String, HashMap<u32, Field>>,
}

fn schema() -> &'static Schema {
    static SCHEMA_CELL: OnceLock<Schema> = OnceLock::new();
    SCHEMA_CELL.get_or_init(|| parse_schema(SCHEMA).expect("kube_proto.schema is generated well-formed"))
}

fn parse_schema(text: &str) -> std::result::Result<Schema, String> {
    let mut out = Schema::default();
    let mut messages: Vec<(String, HashMap<u32, Field>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("kube_proto.schema line {}: {line:?}", n + 1);
        match words.as_slice() {
            [] => {}
            [w, ..] if w.starts_with('#') => {}
            ["kind", api_version, kind, message] => {
                out.kinds.insert((api_version.to_string(), kind.to_string()), message.to_string());
            }
            ["message", name] => messages.push((name.to_string(), HashMap::new())),
            [tag, json, ty] => {
                let fields = &mut messages.last_mut().ok_or_else(bad)?.1;
                let tag: u32 = tag.parse().map_err(|_| bad())?;
                let (map, ty) = ty.strip_prefix("map:").map_or((false, *ty), |t| (true, t));
                let (repeated, ty) = ty.strip_prefix("[]").map_or((false, ty), |t| (true, t));
                let (omit_zero, ty) = ty.strip_suffix('?').map_or((false, ty), |t| (true, t));
                let ty = match ty {
                    "string" => Type::String,
                    "bool" => Type::Bool,
                    "int32" => Type::Int32,
                    "int64" => Type::Int64,
                    "double" => Type::Double,
                    "bytes" => Type::Bytes,
                    m => Type::Message(m.to_string()),
                };
                fields.insert(tag, Field { json: json.to_string(), ty, repeated, map, omit_zero });
            }
            _ => return Err(bad()),
        }
    }
    out.messages = messages.into_iter().collect();
    for (name, fields) in &out.messages {
        for f in fields.values() {
            if let Type::Message(m) = &f.ty
                && !out.messages.contains_key(m)
            {
                return Err(format!("kube_proto.schema: {name}.{} refers to unknown message {m}", f.json));
            }
        }
    }
    Ok(out)
}

/// Decodes messages of one request body.
struct Decoder<'a> {
    schema: &'a Schema,
    kind: &'a str,
}

impl Decoder<'_> {
    fn reader<'b, 'n>(&'n self, bytes: &'b [u8], message: &'n str) -> Reader<'b, 'n> {
        Reader::new(bytes, self.kind, message)
    }

    /// A message as a JSON value: an object, or the special form of the well-known types.
    fn message(&self, name: &str, bytes: &[u8]) -> Result<Option<Value>> {
        let r = self.reader(bytes, name);
        let fields = || self.tagged(name, bytes);
        let raw_json = |b: Option<&[u8]>| -> Result<Option<Value>> {
            match b {
                None | Some([]) => Ok(None),
                Some(b) => {
                    serde_json::from_slice(b).map(Some).map_err(|e| r.error(format!("raw does not hold JSON: {e}")))
                }
            }
        };
        Ok(match name {
            "meta.v1.Time" | "meta.v1.MicroTime" => {
                let f = fields()?;
                let seconds = f.varint(1).map_or(0, |v| v as i64);
                let nanos = f.varint(2).map_or(0, |v| v as i32);
                // Go writes a zero time as an empty message, which it reads back as JSON null.
                if f.is_empty() || (seconds == GO_ZERO_TIME && nanos == 0) {
                    return Ok(None);
                }
                Some(json!(timestamp(seconds, nanos, name == "meta.v1.MicroTime").map_err(|e| r.error(e))?))
            }
            "meta.v1.Duration" => Some(json!(go_duration(fields()?.varint(1).map_or(0, |v| v as i64)))),
            "meta.v1.FieldsV1" | "runtime.RawExtension" | "apiextensions.v1.JSON" => raw_json(fields()?.bytes(1))?,
            "intstr.IntOrString" => {
                let f = fields()?;
                match f.varint(1).unwrap_or(0) {
                    0 => Some(json!(f.varint(2).map_or(0, |v| v as i32))),
                    1 => Some(json!(f.bytes(3).map(|b| r.text(b)).transpose()?.unwrap_or_default())),
                    t => return Err(r.error(format!("IntOrString type {t} is neither 0 (int) nor 1 (string)"))),
                }
            }
            "resource.Quantity" => Some(json!(fields()?.bytes(1).map(|b| r.text(b)).transpose()?.unwrap_or_default())),
            "apiextensions.v1.JSONSchemaPropsOrArray" | "apiextensions.v1.JSONSchemaPropsOrStringArray" => {
                let f = fields()?;
                match f.bytes(1) {
                    Some(schema) => self.message("apiextensions.v1.JSONSchemaProps", schema)?,
                    None => {
                        let items: Result<Vec<Value>> = f
                            .all(2)
                            .map(|b| match name {
                                "apiextensions.v1.JSONSchemaPropsOrArray" => {
                                    Ok(Value::Object(self.object("apiextensions.v1.JSONSchemaProps", b)?))
                                }
                                _ => r.text(b).map(Value::String),
                            })
                            .collect();
                        Some(Value::Array(items?))
                    }
                }
            }
            "apiextensions.v1.JSONSchemaPropsOrBool" => {
                let f = fields()?;
                match f.bytes(2) {
                    Some(schema) => self.message("apiextensions.v1.JSONSchemaProps", schema)?,
                    None => Some(json!(f.varint(1).unwrap_or(0) != 0)),
                }
            }
            _ => Some(Value::Object(self.object(name, bytes)?)),
        })
    }

    /// The raw fields of a well-known message, by tag.
    fn tagged<'b>(&self, name: &str, bytes: &'b [u8]) -> Result<Tagged<'b>> {
        let mut r = Reader::new(bytes, self.kind, name);
        let mut out = Vec::new();
        while let Some(f) = r.field()? {
            out.push(f);
        }
        Ok(Tagged(out))
    }

    /// A message of the schema as a JSON object.
    fn object(&self, name: &str, bytes: &[u8]) -> Result<Map<String, Value>> {
        let mut r = self.reader(bytes, name);
        let fields = self.schema.messages.get(name).ok_or_else(|| r.error("the schema has no such message"))?;
        let mut out = Map::new();
        while let Some((tag, wire)) = r.field()? {
            let Some(field) = fields.get(&tag) else { continue };
            if field.map {
                let Wire::Bytes(entry) = wire else {
                    return Err(r.error(format!("{} is a map but field {tag} is not length-delimited", field.json)));
                };
                let (key, value) = self.map_entry(name, field, entry)?;
                let slot = out.entry(field.json.clone()).or_insert_with(|| json!({}));
                if let (Some(m), Some(v)) = (slot.as_object_mut(), value) {
                    m.insert(key, v);
                }
            } else if field.repeated {
                let mut values = Vec::new();
                self.repeated(&r, field, wire, &mut values)?;
                let slot = out.entry(field.json.clone()).or_insert_with(|| json!([]));
                if let Some(a) = slot.as_array_mut() {
                    a.extend(values);
                }
            } else if field.json == "-" {
                let Type::Message(m) = &field.ty else {
                    return Err(r.error("an inline field must be a message"));
                };
                let Wire::Bytes(b) = wire else {
                    return Err(r.error(format!("inline {m} (field {tag}) is not length-delimited")));
                };
                out.extend(self.object(m, b)?);
            } else {
                match self.value(&r, field, wire)? {
                    Some(v) if !(field.omit_zero && is_zero(&v)) => {
                        out.insert(field.json.clone(), v);
                    }
                    _ => {
                        out.remove(&field.json);
                    }
                }
            }
        }
        Ok(out)
    }

    fn map_entry(&self, name: &str, field: &Field, entry: &[u8]) -> Result<(String, Option<Value>)> {
        let entry_name = format!("{name}.{} entry", field.json);
        let mut r = Reader::new(entry, self.kind, &entry_name);
        let (mut key, mut value) = (String::new(), None);
        let value_field = Field { repeated: false, map: false, omit_zero: false, ..field.clone() };
        while let Some((tag, wire)) = r.field()? {
            match (tag, wire) {
                (1, Wire::Bytes(b)) => key = r.text(b)?,
                (2, w) => value = self.value(&r, &value_field, w)?,
                _ => {}
            }
        }
        // A missing value is the type's zero value, as protobuf maps have it.
        let value = match (value, &field.ty) {
            (Some(v), _) => Some(v),
            (None, Type::String | Type::Bytes) => Some(json!("")),
            (None, Type::Message(m)) => self.message(m, &[])?,
            (None, _) => None,
        };
        Ok((key, value))
    }

    fn repeated(&self, r: &Reader<'_, '_>, field: &Field, wire: Wire, out: &mut Vec<Value>) -> Result<()> {
        let packable = matches!(field.ty, Type::Bool | Type::Int32 | Type::Int64 | Type::Double);
        match wire {
            Wire::Bytes(b) if packable => {
                let mut p = self.reader(b, r.message);
                let one = Field { repeated: false, ..field.clone() };
                while p.pos < b.len() {
                    let w = match field.ty {
                        Type::Double => Wire::Fixed64(u64::from_le_bytes(
                            p.take(8, "a packed double")?.try_into().expect("8 bytes"),
                        )),
                        _ => Wire::Varint(p.varint()?),
                    };
                    out.extend(self.value(&p, &one, w)?);
                }
            }
            w => out.extend(self.value(r, field, w)?),
        }
        Ok(())
    }

    /// One value of a field; None for a message whose JSON form is null (a zero Time).
    fn value(&self, r: &Reader<'_, '_>, field: &Field, wire: Wire) -> Result<Option<Value>> {
        let mismatch = || r.error(format!("{} is {:?} but came as {wire:?}", field.json, field.ty));
        Ok(Some(match (&field.ty, wire) {
            (Type::String, Wire::Bytes(b)) => json!(r.text(b)?),
            (Type::Bytes, Wire::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
            (Type::Bool, Wire::Varint(v)) => json!(v != 0),
            (Type::Int32, Wire::Varint(v)) => json!(v as i32),
            (Type::Int64, Wire::Varint(v)) => json!(v as i64),
            (Type::Double, Wire::Fixed64(v)) => {
                let d = f64::from_bits(v);
                serde_json::Number::from_f64(d)
                    .map(Value::Number)
                    .ok_or_else(|| r.error(format!("{} is {d}, which JSON cannot hold", field.json)))?
            }
            (Type::Message(m), Wire::Bytes(b)) => return self.message(m, b),
            _ => return Err(mismatch()),
        }))
    }
}

/// The fields of a well-known message, by tag (the last occurrence wins, as in protobuf).
struct Tagged<'a>(Vec<(u32, Wire<'a>)>);

impl<'a> Tagged<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn varint(&self, tag: u32) -> Option<u64> {
        self.0.iter().rev().find_map(|&(t, w)| match w {
            Wire::Varint(v) if t == tag => Some(v),
            _ => None,
        })
    }

    fn bytes(&self, tag: u32) -> Option<&'a [u8]> {
        self.0.iter().rev().find_map(|&(t, w)| match w {
            Wire::Bytes(b) if t == tag => Some(b),
            _ => None,
        })
    }

    fn all(&self, tag: u32) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.0.iter().filter_map(move |&(t, w)| match w {
            Wire::Bytes(b) if t == tag => Some(b),
            _ => None,
        })
    }
}

/// Go's `time.Time{}` in Unix seconds (January 1, year 1, UTC).
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// RFC 3339 in UTC as Kubernetes writes it: whole seconds for `Time`, microseconds for `MicroTime`.
fn timestamp(seconds: i64, nanos: i32, micro: bool) -> std::result::Result<String, String> {
    let t = time::OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|e| format!("time {seconds}s is out of range: {e}"))?;
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Ok(if micro { format!("{base}.{:06}Z", nanos.clamp(0, 999_999_999) / 1000) } else { format!("{base}Z") })
}

/// A duration as Go's `time.Duration.String` writes it (`1h0m0s`, `1.5s`, `300ms`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |v: u64, unit: u64, digits: usize| -> String {
        let f = format!("{:0digits$}", v % unit);
        let f = f.trim_end_matches('0');
        if f.is_empty() { format!("{}", v / unit) } else { format!("{}.{f}", v / unit) }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000, 6));
    }
    let secs = n / 1_000_000_000;
    let s = frac(n % 60_000_000_000, 1_000_000_000, 9);
    match (secs / 3600, (secs / 60) % 60) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// Go's zero value of a scalar, which `omitempty` leaves out of JSON.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf encoding for hand-built test messages.
    #[derive(Default)]
    struct Msg(Vec<u8>);

    impl Msg {
        fn key(mut self, tag: u32, wire: u8) -> Msg {
            self.0.extend(varint(u64::from(tag) << 3 | u64::from(wire)));
            self
        }
        fn varint(self, tag: u32, v: u64) -> Msg {
            let mut m = self.key(tag, 0);
            m.0.extend(varint(v));
            m
        }
        fn bytes(self, tag: u32, b: &[u8]) -> Msg {
            let mut m = self.key(tag, 2);
            m.0.extend(varint(b.len() as u64));
            m.0.extend(b);
            m
        }
        fn str(self, tag: u32, s: &str) -> Msg {
            self.bytes(tag, s.as_bytes())
        }
        fn msg(self, tag: u32, m: Msg) -> Msg {
            self.bytes(tag, &m.0)
        }
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn envelope(api_version: &str, kind: &str, raw: Msg) -> Vec<u8> {
        let unknown =
            Msg::default().msg(1, Msg::default().str(1, api_version).str(2, kind)).msg(2, raw).str(3, "").str(4, "");
        [MAGIC, &unknown.0].concat()
    }

    fn entry(k: &str, v: &[u8]) -> Msg {
        Msg::default().str(1, k).bytes(2, v)
    }

    #[test]
    fn schema_parses_and_names_every_served_kind() {
        let s = schema();
        for kind in super::super::resources::builtins() {
            assert!(s.kinds.contains_key(&(kind.api_version(), kind.kind.clone())), "{}", kind.kind);
        }
        let pod = &s.messages["core.v1.PodStatus"];
        assert!(pod.values().any(|f| f.json == "podIPs"), "acronyms come from k8s-openapi");
        assert!(s.messages["rbac.v1.PolicyRule"].values().any(|f| f.json == "nonResourceURLs"));
    }

    #[test]
    fn config_map_with_data_binary_data_and_metadata() {
        // ObjectMeta as Go writes it: unset strings present but empty, creationTimestamp an
        // empty Time (zero), generation 0.
        let meta = Msg::default()
            .str(1, "x")
            .str(2, "")
            .str(3, "")
            .varint(7, 0)
            .msg(8, Msg::default())
            .msg(11, entry("app", b"web"));
        let cm = Msg::default()
            .msg(1, meta)
            .msg(2, entry("a", b"b"))
            .msg(2, entry("empty", b""))
            .msg(3, entry("bin", &[0xff, 0x00, 0x01]));
        let got = decode(&envelope("v1", "ConfigMap", cm)).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "x", "labels": {"app": "web"}},
                "data": {"a": "b", "empty": ""},
                "binaryData": {"bin": "/wAB"},
            })
        );
    }

    #[test]
    fn int_or_string_time_quantity_and_explicit_zeros() {
        let port = |p: Msg| Msg::default().str(1, "http").str(2, "TCP").varint(3, 80).msg(4, p).varint(5, 0);
        let spec = Msg::default()
            .msg(1, port(Msg::default().varint(1, 0).varint(2, 8080).str(3, "")))
            .msg(1, port(Msg::default().varint(1, 1).varint(2, 0).str(3, "web")))
            .str(3, "")
            .str(4, "ClusterIP");
        let meta = Msg::default().str(1, "svc").msg(8, Msg::default().varint(1, 1_795_323_600).varint(2, 0));
        let got = decode(&envelope("v1", "Service", Msg::default().msg(1, meta).msg(2, spec))).unwrap();
        assert_eq!(got["metadata"]["creationTimestamp"], "2026-11-22T05:00:00Z");
        assert_eq!(
            got["spec"],
            json!({
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"},
                ],
                "type": "ClusterIP",
            }),
            "port is required so kept; nodePort 0 and clusterIP \"\" are Go's unset values"
        );
        let quota = Msg::default()
            .msg(1, Msg::default().str(1, "q"))
            .msg(2, Msg::default().msg(1, Msg::default().str(1, "pods").msg(2, Msg::default().str(1, "10"))));
        let got = decode(&envelope("v1", "ResourceQuota", quota)).unwrap();
        assert_eq!(got["spec"], json!({"hard": {"pods": "10"}}));
    }

    #[test]
    fn times_and_durations_in_kubernetes_form() {
        assert_eq!(timestamp(1_795_323_600, 0, false).unwrap(), "2026-11-22T05:00:00Z");
        assert_eq!(timestamp(1_795_323_600, 123_456_789, true).unwrap(), "2026-11-22T05:00:00.123456Z");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(0), "0s");
    }

    #[test]
    fn truncated_and_unknown_bodies_say_what_is_wrong() {
        let cm = Msg::default().msg(1, Msg::default().str(1, "x")).msg(2, entry("a", b"b"));
        let body = envelope("v1", "ConfigMap", cm);
        for cut in [body.len() - 1, body.len() - 5, 10] {
            let e = decode(&body[..cut]).unwrap_err();
            assert_eq!(e.http_code(), 400, "{e}");
            let text = e.to_string();
            assert!(text.starts_with("malformed protobuf body of "), "{text}");
            assert!(text.contains("bytes but") || text.contains("truncated"), "{text}");
        }
        let e = decode(&body[..body.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("runtime.Unknown"), "the envelope is cut short: {e}");

        // A nested message whose own field overruns it: the error names the kind and the type.
        let mut meta = Msg::default().key(1, 2);
        meta.0.extend([5, b'x']);
        let e = decode(&envelope("v1", "ConfigMap", Msg::default().msg(1, meta))).unwrap_err().to_string();
        assert!(e.contains("of ConfigMap") && e.contains("meta.v1.ObjectMeta"), "{e}");

        let e = decode(&envelope("example.com/v1", "Widget", Msg::default())).unwrap_err();
        assert_eq!(e.http_code(), 415);
        assert!(e.to_string().contains("Widget (example.com/v1)"), "{e}");
        assert_eq!(decode(b"{\"kind\":\"ConfigMap\"}").unwrap_err(), Error::NoMagic);
        let wrong = Msg::default().msg(1, Msg::default().varint(1, 5));
        let e = decode(&envelope("v1", "ConfigMap", wrong)).unwrap_err().to_string();
        assert!(e.contains("name is String but came as Varint"), "{e}");
    }
}

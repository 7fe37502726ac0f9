//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and field selectors on
//! `metadata.name` / `metadata.namespace`, parsed from list and watch query parameters.

use serde_json::Value;

/// Errors from parsing a selector string.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The selector cannot be parsed.
    #[error("unable to parse requirement: {0}")]
    Parse(String),
    /// A field selector on a field this server does not index.
    #[error("{0:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"")]
    UnsupportedField(String),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector; every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<(String, Op)>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(s: &str) -> Result<Vec<String>> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| Error::Parse(format!("expected (values) in {s:?}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

impl LabelSelector {
    /// Parses `app=web,tier in (a,b),!legacy`.
    pub fn parse(s: &str) -> Result<LabelSelector> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some(k) = part.strip_prefix('!') {
                (k.trim().to_string(), Op::DoesNotExist)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), Op::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                (k.trim().to_string(), Op::NotIn(parse_set(rest)?))
            } else if let Some((k, rest)) = part.split_once(" in ") {
                (k.trim().to_string(), Op::In(parse_set(rest)?))
            } else if part.contains(' ') || part.contains('(') {
                return Err(Error::Parse(part.to_string()));
            } else {
                (part.to_string(), Op::Exists)
            };
            if req.0.is_empty() {
                return Err(Error::Parse(part.to_string()));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(k, op)| match op {
            Op::Eq(v) => get(k) == Some(v.as_str()),
            Op::NotEq(v) => get(k) != Some(v.as_str()),
            Op::In(vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::NotIn(vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Op::Exists => get(k).is_some(),
            Op::DoesNotExist => get(k).is_none(),
        })
    }
}

/// A parsed field selector over `metadata.name` and `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `metadata.name=web,metadata.namespace!=kube-system`.
    pub fn parse(s: &str) -> Result<FieldSelector> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(Error::Parse(part.to_string()));
            };
            let k = k.trim();
            if !matches!(k, "metadata.name" | "metadata.namespace") {
                return Err(Error::UnsupportedField(k.to_string()));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let ptr = if k == "metadata.name" { "/metadata/name" } else { "/metadata/namespace" };
            let actual = obj.pointer(ptr).and_then(Value::as_str).unwrap_or("");
            (actual == v) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn equality_and_inequality() {
        let s = LabelSelector::parse("app=web,tier!=db").unwrap();
        assert!(s.matches(&obj(json!({"app": "web"}))));
        assert!(!s.matches(&obj(json!({"app": "web", "tier": "db"}))));
        assert!(!s.matches(&obj(json!({"app": "api"}))));
        assert!(LabelSelector::parse("app==web").unwrap().matches(&obj(json!({"app": "web"}))));
    }

    #[test]
    fn set_based_and_existence() {
        let s = LabelSelector::parse("env in (prod, stage),region notin (us),team,!legacy").unwrap();
        assert!(s.matches(&obj(json!({"env": "prod", "team": "a"}))));
        assert!(!s.matches(&obj(json!({"env": "dev", "team": "a"}))));
        assert!(!s.matches(&obj(json!({"env": "prod", "team": "a", "region": "us"}))));
        assert!(!s.matches(&obj(json!({"env": "prod"}))));
        assert!(!s.matches(&obj(json!({"env": "prod", "team": "a", "legacy": "y"}))));
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::parse("").unwrap().matches(&obj(json!(null))));
    }

    #[test]
    fn bad_selectors_are_rejected() {
        assert!(LabelSelector::parse("env in prod").is_err());
        assert!(FieldSelector::parse("spec.nodeName=x").is_err());
    }

    #[test]
    fn field_selectors() {
        let s = FieldSelector::parse("metadata.name=x,metadata.namespace!=other").unwrap();
        assert!(s.matches(&obj(json!({}))));
        assert!(!FieldSelector::parse("metadata.name=y").unwrap().matches(&obj(json!({}))));
    }
}

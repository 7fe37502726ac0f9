//! Non-apply PATCH flavours: JSON merge patch, JSON patch and strategic merge patch (keyed
//! lists of the built-in types merged by their patch merge keys, `$patch` directives).

use super::fields::{self, Path, PathElement};
use serde_json::{Map, Value};

/// Errors from applying a patch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The patch body is not valid JSON of the expected shape.
    #[error("the patch is not valid: {0}")]
    Malformed(String),
    /// A JSON patch operation failed (missing path, failed test…).
    #[error("the server rejected our request due to an error in our request: {0}")]
    JsonPatch(#[source] json_patch::PatchError),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// RFC 7386 JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<()> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| Error::Malformed(e.to_string()))?;
    json_patch::patch(doc, &p).map_err(Error::JsonPatch)
}

/// Strategic merge patch for built-in kinds.
pub fn strategic_merge_patch(doc: &mut Value, patch: &Value) -> Result<()> {
    if !patch.is_object() {
        return Err(Error::Malformed("a strategic merge patch must be an object".into()));
    }
    *doc = smp(doc, patch, &Path::default());
    Ok(())
}

fn child_path(at: &Path, k: &str) -> Path {
    let mut v = at.0.clone();
    v.push(PathElement::Field(k.to_string()));
    Path(v)
}

fn smp(doc: &Value, patch: &Value, at: &Path) -> Value {
    let (Value::Object(d), Value::Object(p)) = (doc, patch) else {
        return strip_directives(patch);
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut out = p.clone();
        out.shift_remove("$patch");
        return strip_directives(&Value::Object(out));
    }
    let mut out: Map<String, Value> = d.clone();
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Value::Array(del)) = (out.get_mut(list), pv) {
                cur.retain(|v| !del.contains(v));
            }
            continue;
        }
        let cp = child_path(at, k);
        if pv.is_null() {
            out.shift_remove(k);
            continue;
        }
        let merged = match (out.get(k), pv) {
            (Some(dv @ Value::Object(_)), Value::Object(_)) => smp(dv, pv, &cp),
            (Some(Value::Array(dl)), Value::Array(pl)) => match fields::strategic_key(&cp) {
                Some(key) => merge_keyed(dl, pl, key, &cp),
                None => strip_directives(pv),
            },
            _ => strip_directives(pv),
        };
        out.insert(k.clone(), merged);
    }
    // `$deleteFromPrimitiveList/x` may precede or follow x; apply deletions last too.
    for (k, pv) in p {
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(cur)), Value::Array(del)) = (out.get_mut(list), pv)
        {
            cur.retain(|v| !del.contains(v));
        }
    }
    Value::Object(out)
}

fn merge_keyed(doc: &[Value], patch: &[Value], key: &str, at: &Path) -> Value {
    // The item itself is the list-item path; nested lists inside it resolve from there.
    let item_path = |item: &Value| {
        let mut v = at.0.clone();
        v.push(PathElement::Key(vec![(key.to_string(), item.get(key).cloned().unwrap_or(Value::Null))]));
        Path(v)
    };
    if patch.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Value::Array(patch.iter().filter(|i| i.get("$patch").is_none()).map(strip_directives).collect());
    }
    let mut out: Vec<Value> = doc.to_vec();
    for pi in patch {
        let k = pi.get(key);
        let pos = out.iter().position(|d| d.get(key) == k && k.is_some());
        let delete = pi.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = smp(&out[i], pi, &item_path(pi)),
            (None, false) => out.push(strip_directives(pi)),
        }
    }
    Value::Array(out)
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_keeps_other_containers_and_env() {
        let mut doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x2", "env": [{"name": "B", "value": "2"}]}]}}}});
        strategic_merge_patch(&mut doc, &patch).unwrap();
        let cs = &doc["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "x2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["name"], "b");
    }

    #[test]
    fn strategic_delete_directive() {
        let mut doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        strategic_merge_patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let mut doc = json!({"a": [1, 2], "b": {"c": 1, "d": 2}});
        merge_patch(&mut doc, &json!({"a": [3], "b": {"c": null}}));
        assert_eq!(doc, json!({"a": [3], "b": {"d": 2}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"spec": {"replicas": 1}});
        json_patch(&mut doc, &json!([{"op": "replace", "path": "/spec/replicas", "value": 4}])).unwrap();
        assert_eq!(doc["spec"]["replicas"], 4);
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}

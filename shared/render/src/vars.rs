//! `vars:` (deprecated in kustomize, still common): each var names a field of one object;
//! after the whole build, `$(VAR)` in the `varReference` fields of every object is replaced
//! by that field's value. Unknown `$(X)` stay as written and `$$` escapes a `$`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::config::{FieldSpec, apply_field_specs};
use super::kustomization::VarSpec;
use super::resource::{Gvk, Resource, effective_ns, is_cluster_scoped};
use super::{RenderError, Result};

/// The group/version/kind a var's `objref` names.
fn objref_gvk(v: &VarSpec) -> Gvk {
    let o = &v.objref;
    let kind = o.kind.clone().unwrap_or_default();
    match o.api_version.as_deref().filter(|a| !a.is_empty()) {
        Some(api) => Gvk::from_api_version(api, &kind),
        None => {
            Gvk { group: o.group.clone().unwrap_or_default(), version: o.version.clone().unwrap_or_default(), kind }
        }
    }
}

/// Records the vars a kustomization declares on the objects they read (matched by current
/// or previous id, as kustomize's `MergeVars`), and adds them to the vars in scope.
pub(crate) fn declare(kfile: &Path, rs: &mut [Resource], incoming: &[VarSpec], scope: &mut Vec<VarSpec>) -> Result<()> {
    for v in incoming {
        let gvk = objref_gvk(v);
        let name = v.objref.name.clone().unwrap_or_default();
        let ns = v.objref.namespace.clone().unwrap_or_default();
        let ns_matters = !ns.is_empty() || is_cluster_scoped(&gvk.kind);
        let hits: Vec<usize> = rs
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                let mine = r.gvk();
                if mine.group != gvk.group || mine.version != gvk.version {
                    return false;
                }
                let cur = (r.kind(), r.name(), r.namespace());
                let prev = r.prev.iter().map(|p| (p.kind.as_str(), p.name.as_str(), p.namespace.as_str()));
                std::iter::once(cur).chain(prev).any(|(k, n, s)| {
                    k == gvk.kind && n == name && (!ns_matters || effective_ns(k, s) == effective_ns(&gvk.kind, &ns))
                })
            })
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [] => {}
            [i] => rs[*i].ref_vars.push(v.name.clone()),
            many => {
                return Err(RenderError::invalid(
                    kfile,
                    format!("found {} resId matches for var '{}' (unable to disambiguate)", many.len(), v.name),
                ));
            }
        }
        add(kfile, scope, v)?;
    }
    Ok(())
}

/// Adds a var to a scope; a second var of the same name is an error, as in kustomize.
pub(crate) fn add(kfile: &Path, scope: &mut Vec<VarSpec>, v: &VarSpec) -> Result<()> {
    if scope.iter().any(|x| x.name == v.name) {
        return Err(RenderError::invalid(
            kfile,
            format!("var '{}' already encountered; var names must be unique", v.name),
        ));
    }
    scope.push(v.clone());
    Ok(())
}

/// Replaces `$(VAR)` in the var-reference fields of every object.
pub(crate) fn resolve(kfile: &Path, rs: &mut [Resource], vars: &[VarSpec], specs: &[FieldSpec]) -> Result<()> {
    if vars.is_empty() {
        return Ok(());
    }
    let mut values: HashMap<String, Value> = HashMap::new();
    for v in vars {
        let path = v.fieldref.as_ref().and_then(|f| f.fieldpath.as_deref()).filter(|p| !p.is_empty());
        let path = path.unwrap_or("metadata.name");
        let Some(r) = rs.iter().find(|r| r.ref_vars.contains(&v.name)) else {
            return Err(RenderError::invalid(
                kfile,
                format!("var '{}' cannot be mapped to a field in the set of known resources", v.name),
            ));
        };
        let root = Value::Object(r.obj.clone());
        let value = super::replace::lookup(&root, path).cloned().ok_or_else(|| {
            RenderError::invalid(kfile, format!("var '{}': field '{path}' not found in {}", v.name, r.id_string()))
        })?;
        values.insert(v.name.clone(), value);
    }
    for r in rs.iter_mut() {
        apply_field_specs(r, specs, &mut |node| substitute(node, &values));
    }
    Ok(())
}

fn substitute(node: &mut Value, values: &HashMap<String, Value>) {
    match node {
        Value::String(s) => {
            if let Some(v) = expand(s, values) {
                *node = v;
            }
        }
        Value::Array(items) => {
            for i in items.iter_mut() {
                if let Value::String(s) = i
                    && let Some(v) = expand(s, values)
                {
                    *i = v;
                }
            }
        }
        Value::Object(m) => {
            for i in m.values_mut() {
                if let Value::String(s) = i
                    && let Some(v) = expand(s, values)
                {
                    *i = v;
                }
            }
        }
        _ => {}
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => super::yaml::number_text(n),
        other => other.to_string(),
    }
}

/// Kubernetes' `$(VAR)` expansion; `None` when nothing changed. A string that is exactly
/// one known reference takes the value itself (numbers stay numbers).
fn expand(s: &str, values: &HashMap<String, Value>) -> Option<Value> {
    if !s.contains('$') {
        return None;
    }
    if let Some(name) = s.strip_prefix("$(").and_then(|r| r.strip_suffix(')'))
        && !name.contains(')')
        && let Some(v) = values.get(name)
    {
        return Some(v.clone());
    }
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut start = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push_str(&s[start..i]);
                    out.push('$');
                    i += 2;
                    start = i;
                    continue;
                }
                b'(' => {
                    if let Some(close) = s[i + 2..].find(')') {
                        let name = &s[i + 2..i + 2 + close];
                        out.push_str(&s[start..i]);
                        match values.get(name) {
                            Some(v) => out.push_str(&text(v)),
                            None => out.push_str(&s[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        start = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&s[start..]);
    (out != s).then_some(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_like_kubernetes() {
        let vals: HashMap<String, Value> = [("A".to_string(), json!("x")), ("P".to_string(), json!(80))].into();
        assert_eq!(expand("$(A)", &vals), Some(json!("x")));
        assert_eq!(expand("$(P)", &vals), Some(json!(80)));
        assert_eq!(expand("a$(P)b", &vals), Some(json!("a80b")));
        assert_eq!(expand("$(B)", &vals), None);
        assert_eq!(expand("$$(A)", &vals), Some(json!("$(A)")));
        assert_eq!(expand("$(A", &vals), None);
    }
}

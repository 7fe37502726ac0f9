//! `replacements:` (and the ReplacementTransformer plugin): copy a field of one object into
//! fields of others, with kustomize's field-path syntax (`a.b.[name=x].c`, `*`, list
//! indexes), delimiter/index options and `create`.

use std::path::Path;

use serde_json::{Map, Value};

use super::kustomization::{FieldOptions, ReplacementEntry, ReplacementSource, Selector};
use super::patch::LabelSelector;
use super::resource::{Gvk, Resource, effective_ns};
use super::{RenderError, Result};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// A map key (or, on a list, an index when numeric).
    Key(String),
    /// `[k=v]`: the list elements whose `k` is `v`.
    Match(String, String),
    /// `*`: every element or value.
    Any,
}

/// Splits a dotted field path, keeping `[...]` (which may hold dots) together.
fn parse_path(path: &str) -> Vec<Seg> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            '.' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut segs = Vec::new();
    for p in parts.into_iter().filter(|p| !p.is_empty()) {
        let (head, bracket) = match p.find('[') {
            Some(0) => (String::new(), Some(p.clone())),
            Some(i) => (p[..i].to_string(), Some(p[i..].to_string())),
            None => (p.clone(), None),
        };
        if !head.is_empty() {
            segs.push(if head == "*" { Seg::Any } else { Seg::Key(head) });
        }
        if let Some(b) = bracket {
            let inner = b.trim_start_matches('[').trim_end_matches(']');
            match inner.split_once('=') {
                Some((k, v)) => segs.push(Seg::Match(k.to_string(), v.to_string())),
                None => segs.push(Seg::Key(inner.to_string())),
            }
        }
    }
    segs
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => super::yaml::number_text(n),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// The value at `path` below `v`, when there is exactly one (wildcards take the first).
pub(crate) fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let segs = parse_path(path);
    let mut found = Vec::new();
    collect(v, &segs, &mut found);
    found.into_iter().next()
}

fn collect<'a>(v: &'a Value, segs: &[Seg], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = segs.split_first() else {
        out.push(v);
        return;
    };
    match (first, v) {
        (Seg::Key(k), Value::Object(m)) => {
            if let Some(c) = m.get(k) {
                collect(c, rest, out);
            }
        }
        (Seg::Key(k), Value::Array(items)) => {
            if let Some(c) = k.parse::<usize>().ok().and_then(|i| items.get(i)) {
                collect(c, rest, out);
            }
        }
        (Seg::Match(k, val), Value::Array(items)) => {
            for item in items {
                if item.get(k).is_some_and(|x| scalar_text(x) == *val) {
                    collect(item, rest, out);
                }
            }
        }
        (Seg::Any, Value::Array(items)) => items.iter().for_each(|i| collect(i, rest, out)),
        (Seg::Any, Value::Object(m)) => m.values().for_each(|i| collect(i, rest, out)),
        _ => {}
    }
}

/// Calls `f` on every node at `segs`, creating missing map fields (and `[k=v]` elements)
/// when `create`; returns how many nodes were visited.
fn visit_mut(v: &mut Value, segs: &[Seg], create: bool, f: &mut dyn FnMut(&mut Value, bool)) -> usize {
    let Some((first, rest)) = segs.split_first() else {
        f(v, false);
        return 1;
    };
    match first {
        Seg::Key(k) => {
            if v.is_null() && create {
                *v = if k.parse::<usize>().is_ok() { Value::Array(Vec::new()) } else { Value::Object(Map::new()) };
            }
            if let Value::Array(items) = v {
                let Ok(i) = k.parse::<usize>() else { return 0 };
                if i == items.len() && create {
                    items.push(Value::Null);
                    if rest.is_empty() {
                        if let Some(c) = items.last_mut() {
                            f(c, true);
                        }
                        return 1;
                    }
                }
                return match items.get_mut(i) {
                    Some(c) => visit_mut(c, rest, create, f),
                    None => 0,
                };
            }
            let Value::Object(m) = v else { return 0 };
            if !m.contains_key(k) {
                if !create {
                    return 0;
                }
                m.insert(k.clone(), Value::Null);
                if rest.is_empty() {
                    if let Some(c) = m.get_mut(k) {
                        f(c, true);
                    }
                    return 1;
                }
            }
            m.get_mut(k).map_or(0, |c| visit_mut(c, rest, create, f))
        }
        Seg::Match(k, val) => {
            if v.is_null() && create {
                *v = Value::Array(Vec::new());
            }
            let Value::Array(items) = v else { return 0 };
            let mut n = 0;
            for item in items.iter_mut() {
                if item.get(k).is_some_and(|x| scalar_text(x) == *val) {
                    n += visit_mut(item, rest, create, f);
                }
            }
            if n == 0 && create {
                let mut m = Map::new();
                m.insert(k.clone(), Value::String(val.clone()));
                items.push(Value::Object(m));
                if let Some(last) = items.last_mut() {
                    n += visit_mut(last, rest, create, f);
                }
            }
            n
        }
        Seg::Any => match v {
            Value::Array(items) => items.iter_mut().map(|i| visit_mut(i, rest, create, f)).sum(),
            Value::Object(m) => m.values_mut().map(|i| visit_mut(i, rest, create, f)).sum(),
            _ => 0,
        },
    }
}

/// A compiled replacement.
pub(crate) struct Replacement {
    source: ReplacementSource,
    targets: Vec<CompiledTarget>,
}

struct CompiledTarget {
    select: Matcher,
    reject: Vec<Matcher>,
    paths: Vec<String>,
    options: FieldOptions,
}

/// Selects objects by group/version/kind, name and namespace (regexes), labels and annotations.
struct Matcher {
    group: Option<String>,
    version: Option<String>,
    kind: Option<String>,
    name: Option<regex::Regex>,
    namespace: Option<regex::Regex>,
    labels: Option<LabelSelector>,
    annotations: Option<LabelSelector>,
}

fn anchored(file: &Path, p: &Option<String>) -> Result<Option<regex::Regex>> {
    match p.as_deref().filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) => regex::Regex::new(&format!("^(?:{p})$"))
            .map(Some)
            .map_err(|e| RenderError::invalid(file, format!("invalid regex '{p}': {e}"))),
    }
}

impl Matcher {
    fn new(file: &Path, s: &Selector) -> Result<Matcher> {
        let nz = |o: &Option<String>| o.clone().filter(|v| !v.is_empty());
        let sel = |o: &Option<String>| -> Result<Option<LabelSelector>> {
            o.as_deref().filter(|l| !l.is_empty()).map(|l| LabelSelector::parse(file, l)).transpose()
        };
        Ok(Matcher {
            group: nz(&s.group),
            version: nz(&s.version),
            kind: nz(&s.kind),
            name: anchored(file, &s.name)?,
            namespace: anchored(file, &s.namespace)?,
            labels: sel(&s.label_selector)?,
            annotations: sel(&s.annotation_selector)?,
        })
    }

    fn gvk_ok(&self, gvk: &Gvk, kind: &str) -> bool {
        self.group.as_deref().is_none_or(|g| g == gvk.group)
            && self.version.as_deref().is_none_or(|v| v == gvk.version)
            && self.kind.as_deref().is_none_or(|k| k == kind)
    }

    fn ids_ok(&self, r: &Resource) -> bool {
        let gvk = r.gvk();
        let cur = (r.kind().to_string(), r.name().to_string(), r.namespace().to_string());
        let prev = r.prev.iter().map(|p| (p.kind.clone(), p.name.clone(), p.namespace.clone()));
        std::iter::once(cur).chain(prev).any(|(kind, name, ns)| {
            self.gvk_ok(&gvk, &kind)
                && self.name.as_ref().is_none_or(|re| re.is_match(&name))
                && self
                    .namespace
                    .as_ref()
                    .is_none_or(|re| re.is_match(&ns) || (ns.is_empty() && re.is_match(effective_ns(&kind, &ns))))
        })
    }

    fn meta_ok(&self, r: &Resource) -> bool {
        self.labels.as_ref().is_none_or(|s| s.matches(r.meta_map("labels")))
            && self.annotations.as_ref().is_none_or(|s| s.matches(r.meta_map("annotations")))
    }

    fn matches(&self, r: &Resource) -> bool {
        self.meta_ok(r) && self.ids_ok(r)
    }
}

/// Loads the replacements of a kustomization: inline entries and `path:` files (a file
/// holds one replacement or a list of them).
pub(crate) fn compile(
    kfile: &Path,
    entries: &[ReplacementEntry],
    mut read_file: impl FnMut(&str) -> Result<(std::path::PathBuf, Vec<Value>)>,
) -> Result<Vec<Replacement>> {
    let mut out = Vec::new();
    for e in entries {
        match (&e.path, &e.source) {
            (Some(p), None) if e.targets.is_none() => {
                let (file, docs) = read_file(p)?;
                for doc in docs {
                    let items = match doc {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    for item in items {
                        let entry: ReplacementEntry = super::gojson::from_value(item)
                            .map_err(|e| RenderError::invalid(&file, format!("invalid replacement: {e}")))?;
                        out.push(compile_one(&file, &entry)?);
                    }
                }
            }
            (None, _) => out.push(compile_one(kfile, e)?),
            _ => {
                return Err(RenderError::invalid(kfile, "a replacement sets 'path' together with source/targets"));
            }
        }
    }
    Ok(out)
}

/// Compiles one inline replacement.
pub(crate) fn compile_one(file: &Path, e: &ReplacementEntry) -> Result<Replacement> {
    let source = e.source.clone().ok_or_else(|| RenderError::invalid(file, "a replacement needs a 'source'"))?;
    let mut targets = Vec::new();
    for t in e.targets.iter().flatten() {
        let select = t
            .select
            .as_ref()
            .ok_or_else(|| RenderError::invalid(file, "a replacement target must specify resources to select"))?;
        let paths = match &t.field_paths {
            Some(p) if !p.is_empty() => p.clone(),
            _ => vec!["metadata.name".to_string()],
        };
        targets.push(CompiledTarget {
            select: Matcher::new(file, select)?,
            reject: t.reject.iter().flatten().map(|r| Matcher::new(file, r)).collect::<Result<_>>()?,
            paths,
            options: t.options.clone().unwrap_or_default(),
        });
    }
    Ok(Replacement { source, targets })
}

fn source_value(file: &Path, rs: &[Resource], s: &ReplacementSource) -> Result<Value> {
    let sel = Selector {
        group: s.group.clone(),
        version: s.version.clone(),
        kind: s.kind.clone(),
        name: None,
        namespace: None,
        label_selector: None,
        annotation_selector: None,
    };
    let m = Matcher::new(file, &sel)?;
    let name = s.name.as_deref().filter(|n| !n.is_empty());
    let ns = s.namespace.as_deref().filter(|n| !n.is_empty());
    let hits: Vec<&Resource> = rs
        .iter()
        .filter(|r| {
            let gvk = r.gvk();
            let cur = (r.kind(), r.name(), r.namespace());
            std::iter::once(cur)
                .chain(r.prev.iter().map(|p| (p.kind.as_str(), p.name.as_str(), p.namespace.as_str())))
                .any(|(kind, n, nsp)| {
                    m.gvk_ok(&gvk, kind)
                        && name.is_none_or(|x| x == n)
                        && ns.is_none_or(|x| effective_ns(kind, x) == effective_ns(kind, nsp))
                })
        })
        .collect();
    let what = format!(
        "{}{}{}",
        s.kind.as_deref().unwrap_or(""),
        name.map(|n| format!(" {n}")).unwrap_or_default(),
        ns.map(|n| format!(" (namespace {n})")).unwrap_or_default()
    );
    let r = match hits.as_slice() {
        [one] => *one,
        [] => return Err(RenderError::invalid(file, format!("replacement source {what}: nothing selected"))),
        _ => return Err(RenderError::invalid(file, format!("replacement source {what}: multiple matches"))),
    };
    let path = s.field_path.as_deref().filter(|p| !p.is_empty()).unwrap_or("metadata.name");
    let root = Value::Object(r.obj.clone());
    let v = lookup(&root, path).cloned().ok_or_else(|| {
        RenderError::invalid(file, format!("fieldPath '{path}' is missing for replacement source {what}"))
    })?;
    match s.options.as_ref().and_then(|o| o.delimiter.as_deref()).filter(|d| !d.is_empty()) {
        Some(d) => {
            let text = scalar_text(&v);
            let parts: Vec<&str> = text.split(d).collect();
            let idx = s.options.as_ref().map_or(0, |o| o.index);
            let part = usize::try_from(idx).ok().and_then(|i| parts.get(i)).ok_or_else(|| {
                RenderError::invalid(file, format!("options.index {idx} is out of bounds for value '{text}'"))
            })?;
            Ok(Value::String((*part).to_string()))
        }
        None => Ok(v),
    }
}

/// Reads `text` the way a plain YAML scalar would be typed.
fn plain_scalar(text: &str) -> Value {
    super::yaml::parse_plain_scalar(text)
}

/// Writes `value` into an existing or created target node as kustomize does: a scalar
/// target keeps its type and takes the source's text; other targets take the source node.
fn set_target(
    node: &mut Value,
    value: &Value,
    created: bool,
    options: &FieldOptions,
) -> std::result::Result<(), String> {
    if let Some(d) = options.delimiter.as_deref().filter(|d| !d.is_empty()) {
        let current = scalar_text(node);
        let mut parts: Vec<String> = current.split(d).map(str::to_string).collect();
        let text = scalar_text(value);
        let idx = options.index;
        if idx < 0 {
            parts.insert(0, text);
        } else if let Some(p) = usize::try_from(idx).ok().and_then(|i| parts.get_mut(i)) {
            *p = text;
        } else {
            parts.push(text);
        }
        *node = Value::String(parts.join(d));
        return Ok(());
    }
    let scalar_source = !(value.is_object() || value.is_array());
    match node {
        _ if created => {
            *node = if scalar_source { plain_scalar(&scalar_text(value)) } else { value.clone() };
        }
        Value::String(_) => *node = Value::String(scalar_text(value)),
        Value::Number(_) | Value::Bool(_) | Value::Null => {
            let text = scalar_text(value);
            let typed = plain_scalar(&text);
            *node = match (&*node, &typed) {
                (Value::Number(_), Value::Number(_)) | (Value::Bool(_), Value::Bool(_)) => typed,
                (Value::Null, _) => {
                    if scalar_source {
                        typed
                    } else {
                        value.clone()
                    }
                }
                _ => Value::String(text),
            };
        }
        _ => *node = value.clone(),
    }
    Ok(())
}

/// Applies replacements in order to the resources.
pub(crate) fn apply(file: &Path, rs: &mut [Resource], reps: &[Replacement]) -> Result<()> {
    for rep in reps {
        let value = source_value(file, rs, &rep.source)?;
        for t in &rep.targets {
            for r in rs.iter_mut() {
                if !t.select.matches(r) || t.reject.iter().any(|x| x.matches(r)) {
                    continue;
                }
                let mut root = Value::Object(std::mem::take(&mut r.obj));
                let mut outcome = Ok(());
                for p in &t.paths {
                    let segs = parse_path(p);
                    let mut err = Ok(());
                    let n = visit_mut(&mut root, &segs, t.options.create, &mut |node, created| {
                        if err.is_ok() {
                            err = set_target(node, &value, created, &t.options);
                        }
                    });
                    if n == 0 {
                        outcome = Err(format!("unable to find field \"{p}\" in replacement target"));
                        break;
                    }
                    if let Err(e) = err {
                        outcome = Err(e);
                        break;
                    }
                }
                if let Value::Object(m) = root {
                    r.obj = m;
                }
                outcome.map_err(|e| RenderError::invalid(file, format!("{e} {}", r.id_string())))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_with_filters_indexes_and_wildcards() {
        let v = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        assert_eq!(lookup(&v, "spec.containers.[name=b].image"), Some(&json!("y")));
        assert_eq!(lookup(&v, "spec.containers[name=b].image"), Some(&json!("y")));
        assert_eq!(lookup(&v, "spec.containers.0.image"), Some(&json!("x")));
        assert_eq!(
            parse_path("metadata.annotations.[a.b/c]"),
            vec![Seg::Key("metadata".into()), Seg::Key("annotations".into()), Seg::Key("a.b/c".into())]
        );
    }
}

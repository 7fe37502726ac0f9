//! Patches: `patches` (strategic merge or JSON 6902, inline or file, with targets),
//! `patchesStrategicMerge` and `patchesJson6902`, and kustomize's target selection
//! (group/version/kind, name and namespace regexes, label and annotation selectors).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::kustomization::{PatchOptions, Selector};
use super::merge::{OpenApi, apply_strategic_merge_with};
use super::resource::{Gvk, Resource, effective_ns};
use super::source::{self, Source};
use super::{RenderError, Result};

/// A loaded patch body.
pub(crate) enum PatchBody {
    /// Strategic merge patch documents.
    Strategic(Vec<Map<String, Value>>),
    /// An RFC 6902 operation list, each operation as written (see [`json6902_op`]).
    Json(Vec<Value>),
}

/// A patch ready to apply, with the file that holds it (for messages).
pub(crate) struct LoadedPatch {
    pub body: PatchBody,
    pub origin: Arc<PathBuf>,
}

/// Loads the body of a patch given inline (`patch`) or by file (`path`).
pub(crate) fn load(
    src: &dyn Source,
    cache: &super::yaml::DocCache,
    dir: &Path,
    kfile: &Arc<PathBuf>,
    path: Option<&str>,
    inline: Option<&str>,
    as_resource: bool,
) -> Result<LoadedPatch> {
    let (text, origin) = match (path, inline) {
        (Some(_), Some(_)) => {
            return Err(RenderError::invalid(kfile, "a patch sets both 'path' and 'patch'; keep one"));
        }
        (None, None) => {
            return Err(RenderError::invalid(kfile, "a patch needs either 'path' or 'patch'"));
        }
        (None, Some(text)) => (text.to_string(), kfile.clone()),
        (Some(p), None) => {
            let file = source::normalize(dir, p)
                .ok_or_else(|| RenderError::PathEscape { path: p.to_string(), from: kfile.to_path_buf() })?;
            source::check_within(src, dir, &file, p, kfile)?;
            if src.kind(&file)? != Some(source::EntryKind::File) {
                return Err(RenderError::Missing { path: file, from: kfile.to_path_buf() });
            }
            let bytes = src.read(&file)?;
            let text =
                String::from_utf8(bytes).map_err(|_| RenderError::invalid(&file, "patch file is not valid UTF-8"))?;
            (text, Arc::new(file))
        }
    };
    let docs = cache.parse(&origin, &text)?;
    let body = if docs.len() == 1 && docs[0].is_array() {
        let ops = docs[0].as_array().cloned().unwrap_or_default();
        // Checked whole here, so a malformed operation is an error even where no resource
        // is selected; indices are resolved against each document when applied.
        for op in &ops {
            json6902_op(&Value::Null, op)
                .map_err(|e| RenderError::invalid(&origin, format!("invalid JSON 6902 patch: {e}")))?;
        }
        PatchBody::Json(ops)
    } else {
        let mut maps = Vec::with_capacity(docs.len());
        for d in docs.iter() {
            match d {
                Value::Object(m) => {
                    let mut m = m.clone();
                    if as_resource && let Some(Value::Object(md)) = m.get_mut("metadata") {
                        as_resource_metadata(md);
                    }
                    maps.push(m)
                }
                _ => {
                    return Err(RenderError::invalid(&origin, "a strategic merge patch must be a YAML mapping"));
                }
            }
        }
        PatchBody::Strategic(maps)
    };
    Ok(LoadedPatch { body, origin })
}

/// Creates the missing parents of an `add` target, as kustomize's JSON patch library does
/// (`EnsurePathExistsOnAdd`): a missing parent becomes a list when the next step is an
/// index or `-`, else a map.
fn ensure_parents(doc: &mut Value, pointer: &str) {
    let parts: Vec<String> = pointer.split('/').skip(1).map(|p| p.replace("~1", "/").replace("~0", "~")).collect();
    let Some((_, parents)) = parts.split_last() else { return };
    let mut cur = doc;
    for (i, part) in parents.iter().enumerate() {
        let next_is_index = parts[i + 1] == "-" || parts[i + 1].parse::<usize>().is_ok();
        cur = match cur {
            Value::Object(m) => m
                .entry(part.clone())
                .or_insert_with(|| if next_is_index { Value::Array(Vec::new()) } else { Value::Object(Map::new()) }),
            Value::Array(items) => match part.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
}

/// kustomize loads a `patchesStrategicMerge` entry as a resource, which reads its labels
/// and annotations as string maps: a null map is dropped (it leaves the target's alone)
/// and values become strings (`null` becomes `"null"`).
fn as_resource_metadata(md: &mut Map<String, Value>) {
    for key in ["labels", "annotations"] {
        match md.get_mut(key) {
            Some(Value::Null) => {
                md.remove(key);
            }
            Some(Value::Object(m)) => {
                for v in m.values_mut() {
                    if !v.is_string() {
                        *v = Value::String(if v.is_null() { "null".into() } else { v.to_string() });
                    }
                }
            }
            _ => {}
        }
    }
}

/// A compiled patch target.
pub(crate) struct Target {
    gvk: (Option<String>, Option<String>, Option<String>),
    name: Option<regex::Regex>,
    namespace: Option<regex::Regex>,
    labels: Option<LabelSelector>,
    annotations: Option<LabelSelector>,
}

fn anchored(kfile: &Path, what: &str, pattern: &Option<String>) -> Result<Option<regex::Regex>> {
    match pattern.as_deref().filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) => regex::Regex::new(&format!("^(?:{p})$"))
            .map(Some)
            .map_err(|e| RenderError::invalid(kfile, format!("invalid {what} regex '{p}': {e}"))),
    }
}

impl Target {
    pub fn compile(kfile: &Path, s: &Selector) -> Result<Target> {
        let nz = |o: &Option<String>| o.clone().filter(|v| !v.is_empty());
        Ok(Target {
            gvk: (nz(&s.group), nz(&s.version), nz(&s.kind)),
            name: anchored(kfile, "name", &s.name)?,
            namespace: anchored(kfile, "namespace", &s.namespace)?,
            labels: s
                .label_selector
                .as_deref()
                .filter(|l| !l.is_empty())
                .map(|l| LabelSelector::parse(kfile, l))
                .transpose()?,
            annotations: s
                .annotation_selector
                .as_deref()
                .filter(|l| !l.is_empty())
                .map(|l| LabelSelector::parse(kfile, l))
                .transpose()?,
        })
    }

    pub fn selects(&self, r: &Resource) -> bool {
        let (org_name, org_ns) = r.org_name_ns();
        if let Some(re) = &self.namespace {
            let kind = r.kind();
            if !re.is_match(effective_ns(kind, org_ns)) && !re.is_match(effective_ns(kind, r.namespace())) {
                return false;
            }
        }
        if let Some(re) = &self.name
            && !re.is_match(org_name)
            && !re.is_match(r.name())
        {
            return false;
        }
        let gvk = r.gvk();
        let (g, v, k) = &self.gvk;
        if g.as_ref().is_some_and(|g| *g != gvk.group)
            || v.as_ref().is_some_and(|v| *v != gvk.version)
            || k.as_ref().is_some_and(|k| *k != gvk.kind)
        {
            return false;
        }
        if let Some(sel) = &self.labels
            && !sel.matches(r.meta_map("labels"))
        {
            return false;
        }
        if let Some(sel) = &self.annotations
            && !sel.matches(r.meta_map("annotations"))
        {
            return false;
        }
        true
    }
}

/// One JSON 6902 operation as kustomize's library (evanphx/json-patch) reads it against
/// `doc`: a missing `value` is `null`; an array index is read like Go's `strconv.Atoi`
/// (`01`, `+1`) and may be negative, counting from the end (for `add`, from one past it, so
/// `-1` appends).
fn json6902_op(doc: &Value, op: &Value) -> std::result::Result<json_patch::PatchOperation, String> {
    let Value::Object(m) = op else { return Err("an operation must be a mapping".into()) };
    let mut m = m.clone();
    let kind = m.get("op").and_then(Value::as_str).unwrap_or("").to_string();
    if matches!(kind.as_str(), "add" | "replace" | "test") && !m.contains_key("value") {
        m.insert("value".into(), Value::Null);
    }
    for (field, last_is_add) in [("path", kind == "add"), ("from", false)] {
        if let Some(Value::String(p)) = m.get(field) {
            let resolved = resolve_indices(doc, p, last_is_add);
            m.insert(field.into(), Value::String(resolved));
        }
    }
    serde_json::from_value(Value::Object(m)).map_err(|e| e.to_string())
}

/// `pointer` with its array indices made canonical for `doc` (see [`json6902_op`]); parts
/// that do not resolve are left as written, for the patch to report.
fn resolve_indices(doc: &Value, pointer: &str, last_is_add: bool) -> String {
    let Some(rest) = pointer.strip_prefix('/') else { return pointer.to_string() };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut out = String::new();
    let mut cur = Some(doc);
    for (i, seg) in segments.iter().enumerate() {
        let mut text = (*seg).to_string();
        let next = match cur {
            Some(Value::Array(items)) => {
                let len = items.len() as i64;
                let add = last_is_add && i + 1 == segments.len();
                match go_atoi(seg) {
                    Some(idx) => {
                        let size = if add { len + 1 } else { len };
                        let idx = if idx < 0 && idx >= -size { idx + size } else { idx };
                        text = idx.to_string();
                        usize::try_from(idx).ok().and_then(|i| items.get(i))
                    }
                    None => None,
                }
            }
            Some(Value::Object(map)) => map.get(&seg.replace("~1", "/").replace("~0", "~")),
            _ => None,
        };
        out.push('/');
        out.push_str(&text);
        cur = next;
    }
    out
}

/// Go's `strconv.Atoi`: an optional sign, then decimal digits (leading zeros allowed).
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Applies one loaded patch. With a target it applies to every selected resource (none is
/// fine); without one each strategic merge document must match exactly one resource.
pub(crate) fn apply(
    rs: &mut Vec<Resource>,
    patch: &LoadedPatch,
    target: Option<&Target>,
    options: Option<&PatchOptions>,
    schema: Option<&OpenApi>,
) -> Result<()> {
    let allow_name = options.is_some_and(|o| o.allow_name_change);
    let allow_kind = options.is_some_and(|o| o.allow_kind_change);
    match (&patch.body, target) {
        (PatchBody::Json(_), None) => Err(RenderError::PatchTarget {
            path: patch.origin.to_path_buf(),
            message: "a JSON 6902 patch needs a target; add 'target:' to the patch entry".into(),
        }),
        (PatchBody::Json(ops), Some(t)) => {
            for r in rs.iter_mut().filter(|r| t.selects(r)) {
                r.store_prev();
                let mut doc = Value::Object(std::mem::take(&mut r.obj));
                // Operations apply one by one, each resolved against the document as the ones
                // before it left it (a negative index counts from the end at that moment).
                let mut res = Ok(());
                for (i, op) in ops.iter().enumerate() {
                    let applied = json6902_op(&doc, op).and_then(|op| {
                        if let json_patch::PatchOperation::Add(add) = &op {
                            ensure_parents(&mut doc, add.path.as_str());
                        }
                        json_patch::patch(&mut doc, std::slice::from_ref(&op)).map_err(|e| e.to_string())
                    });
                    if let Err(e) = applied {
                        res = Err(if ops.len() > 1 { format!("operation {i}: {e}") } else { e });
                        break;
                    }
                }
                if let Value::Object(m) = doc {
                    r.obj = m;
                }
                res.map_err(|e| {
                    RenderError::invalid(&patch.origin, format!("JSON 6902 patch failed on {}: {e}", r.id_string()))
                })?;
            }
            Ok(())
        }
        (PatchBody::Strategic(docs), Some(t)) => {
            for doc in docs {
                let mut kept = Vec::with_capacity(rs.len());
                for mut r in rs.drain(..) {
                    if t.selects(&r) && !smp_one(&mut r, doc, allow_name, allow_kind, schema) {
                        continue;
                    }
                    kept.push(r);
                }
                *rs = kept;
            }
            Ok(())
        }
        (PatchBody::Strategic(docs), None) => {
            for doc in docs {
                let idx = find_by_id(rs, doc, &patch.origin)?;
                if !smp_one(&mut rs[idx], doc, allow_name, allow_kind, schema) {
                    rs.remove(idx);
                }
            }
            Ok(())
        }
    }
}

/// The single resource a target-less strategic merge patch applies to.
fn find_by_id(rs: &[Resource], doc: &Map<String, Value>, origin: &Path) -> Result<usize> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let md = doc.get("metadata").and_then(Value::as_object);
    let name = s(md.and_then(|m| m.get("name")));
    let ns = s(md.and_then(|m| m.get("namespace")));
    let gvk = Gvk::from_api_version(&s(doc.get("apiVersion")), &s(doc.get("kind")));
    let described = format!(
        "{} {} {}{}",
        s(doc.get("apiVersion")),
        gvk.kind,
        name,
        if ns.is_empty() { String::new() } else { format!(" (namespace {ns})") }
    );
    let hits: Vec<usize> =
        rs.iter().enumerate().filter(|(_, r)| r.any_id_equals(&gvk, &name, &ns)).map(|(i, _)| i).collect();
    match hits.as_slice() {
        [i] => Ok(*i),
        [] => Err(RenderError::PatchTarget {
            path: origin.to_path_buf(),
            message: format!(
                "no resource matches strategic merge patch {described}; check its apiVersion, kind, name and namespace"
            ),
        }),
        _ => Err(RenderError::PatchTarget {
            path: origin.to_path_buf(),
            message: format!(
                "strategic merge patch {described} matches {} resources; give it a namespace or use a target",
                hits.len()
            ),
        }),
    }
}

/// Applies one strategic merge document to one resource; `false` when it deleted it.
fn smp_one(
    r: &mut Resource,
    doc: &Map<String, Value>,
    allow_name: bool,
    allow_kind: bool,
    schema: Option<&OpenApi>,
) -> bool {
    let api = r.api_version().to_string();
    let kind = r.kind().to_string();
    let name = r.name().to_string();
    let ns = r.namespace().to_string();
    if allow_name || allow_kind {
        r.store_prev();
    }
    if !apply_strategic_merge_with(&mut r.obj, doc, schema) {
        return false;
    }
    r.obj.insert("apiVersion".into(), Value::String(api));
    if !allow_kind {
        r.obj.insert("kind".into(), Value::String(kind));
    }
    if !allow_name {
        r.set_name(&name);
    }
    r.set_namespace(&ns);
    true
}

/// A Kubernetes label selector in its string form (`a=b,c!=d,e in (x,y),!f,g`).
pub(crate) struct LabelSelector {
    reqs: Vec<Requirement>,
}

enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    pub fn parse(kfile: &Path, text: &str) -> Result<LabelSelector> {
        let bad = || RenderError::invalid(kfile, format!("invalid label selector '{text}'"));
        let mut terms = Vec::new();
        let mut depth = 0usize;
        let mut cur = String::new();
        for c in text.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.checked_sub(1).ok_or_else(bad)?,
                ',' if depth == 0 => {
                    terms.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        terms.push(cur);
        let mut reqs = Vec::new();
        for t in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>> {
                let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let req = if let Some(k) = t.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once("!=") {
                Requirement::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Requirement::In(k.trim().into(), set(rest)?)
            } else if t.contains(' ') || t.contains('(') {
                return Err(bad());
            } else {
                Requirement::Exists(t.to_string())
            };
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|m| m.get(k)).map(super::kustomization::scalar_string);
        self.reqs.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k).as_deref() == Some(v),
            Requirement::NotEq(k, v) => get(k).as_deref() != Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        let m = labels.as_object();
        let p = |s: &str| LabelSelector::parse(Path::new("k"), s).expect("parse");
        assert!(p("app=web").matches(m));
        assert!(p("app==web,tier in (front, back)").matches(m));
        assert!(!p("app!=web").matches(m));
        assert!(p("!missing,app").matches(m));
        assert!(!p("tier notin (front)").matches(m));
        assert!(LabelSelector::parse(Path::new("k"), "a in b").is_err());
    }
}

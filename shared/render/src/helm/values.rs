//! Helm's values: coalescing (chart defaults ← user values, `null` deletes, subchart
//! scoping, `global`), dependency processing (`alias`, `condition`, `tags`) and
//! `import-values`, following `pkg/chart/common/util` step by step.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::HelmError;
use super::chart::{Chart, Dependency};
use super::value::Value as TValue;

fn is_table(v: &Json) -> bool {
    v.is_object()
}

/// `CoalesceValues` (`merge` false) or `MergeValues` (`merge` true) of `vals` onto `chart`.
pub fn coalesce_values(chart: &Chart, vals: &Map<String, Json>, merge: bool) -> Map<String, Json> {
    let mut dest = vals.clone();
    coalesce(chart, &mut dest, merge);
    dest
}

fn coalesce(chart: &Chart, dest: &mut Map<String, Json>, merge: bool) {
    coalesce_chart_values(chart, dest, merge);
    coalesce_deps(chart, dest, merge);
}

fn coalesce_deps(chart: &Chart, dest: &mut Map<String, Json>, merge: bool) {
    for sub in &chart.subcharts {
        let name = sub.name().to_string();
        match dest.get(&name) {
            None => {
                dest.insert(name.clone(), Json::Object(Map::new()));
            }
            Some(v) if !is_table(v) => continue,
            _ => {}
        }
        let parent_globals = dest.get("global").cloned();
        if let Some(Json::Object(dv)) = dest.get_mut(&name) {
            coalesce_globals(dv, parent_globals.as_ref());
            let mut owned = std::mem::take(dv);
            coalesce(sub, &mut owned, merge);
            *dv = owned;
        }
    }
}

fn coalesce_globals(dest: &mut Map<String, Json>, src_global: Option<&Json>) {
    let mut dg = match dest.get("global") {
        None => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(_) => return,
    };
    let sg = match src_global {
        None => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(_) => return,
    };
    for (key, val) in sg {
        if let Json::Object(vv) = &val {
            let mut vv = vv.clone();
            match dg.get(&key) {
                None => {
                    dg.insert(key, Json::Object(vv));
                }
                Some(Json::Object(destv)) => {
                    let destv = destv.clone();
                    coalesce_tables(&mut vv, &destv, true);
                    dg.insert(key, Json::Object(vv));
                }
                Some(_) => {}
            }
        } else if dg.get(&key).is_some_and(is_table) {
            // A table in the child wins over a scalar from the parent.
        } else {
            dg.insert(key, val);
        }
    }
    dest.insert("global".into(), Json::Object(dg));
}

fn coalesce_chart_values(chart: &Chart, v: &mut Map<String, Json>, merge: bool) {
    let Json::Object(vc) = &*chart.values else { return };
    for (key, val) in vc {
        match v.get_mut(key) {
            Some(value) => {
                if value.is_null() && !merge {
                    v.remove(key);
                } else if let Json::Object(dest) = value
                    && let Json::Object(src) = val
                {
                    let merge = merge || chart.subcharts.iter().any(|s| s.name() == key);
                    coalesce_tables(dest, src, merge);
                }
            }
            None => {
                // Helm drops the nulls of chart defaults (they only ever delete).
                if !merge {
                    if !val.is_null() {
                        v.insert(key.clone(), strip_nulls(val));
                    }
                } else {
                    v.insert(key.clone(), val.clone());
                }
            }
        }
    }
}

/// A copy of `v` without null map entries (lists keep theirs).
fn strip_nulls(v: &Json) -> Json {
    match v {
        Json::Object(m) => {
            Json::Object(m.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k.clone(), strip_nulls(x))).collect())
        }
        other => other.clone(),
    }
}

/// `coalesceTablesFullKey`: `dst` wins; `src` fills in; nulls in `dst` delete unless `merge`.
pub fn coalesce_tables(dst: &mut Map<String, Json>, src: &Map<String, Json>, merge: bool) {
    let mut src = src.clone();
    for (key, val) in dst.iter() {
        if val.is_null() {
            src.insert(key.clone(), Json::Null);
        }
    }
    for (key, val) in src {
        match dst.get_mut(&key) {
            Some(dv) if !merge && dv.is_null() => {
                dst.remove(&key);
            }
            None => {
                if !merge {
                    if !val.is_null() {
                        dst.insert(key, strip_nulls(&val));
                    }
                } else {
                    dst.insert(key, val);
                }
            }
            Some(dv) => {
                if let Json::Object(sv) = &val
                    && let Json::Object(dvm) = dv
                {
                    coalesce_tables(dvm, sv, merge);
                }
            }
        }
    }
}

/// `Values.PathValue`: the value at a dotted path (its last element must exist).
fn path_value<'a>(vals: &'a Map<String, Json>, path: &str) -> Option<&'a Json> {
    let parts: Vec<&str> = path.split('.').collect();
    let (last, head) = parts.split_last()?;
    let mut cur = vals;
    for p in head {
        match cur.get(*p) {
            Some(Json::Object(m)) => cur = m,
            _ => return None,
        }
    }
    cur.get(*last)
}

/// `Values.Table`: the table at a dotted path.
fn table<'a>(vals: &'a Map<String, Json>, path: &str) -> Option<&'a Map<String, Json>> {
    let mut cur = vals;
    for p in path.split('.') {
        match cur.get(p) {
            Some(Json::Object(m)) => cur = m,
            _ => return None,
        }
    }
    Some(cur)
}

fn is_compatible(constraint: &str, version: &str) -> bool {
    let Some(v) = super::semver::Version::parse(version) else { return false };
    if constraint.trim().is_empty() {
        return false;
    }
    super::semver::check_str(constraint, &v).unwrap_or(false)
}

/// `ProcessDependenciesWithMerge`: applies aliases, drops disabled dependencies, then
/// imports values from children.
pub fn process_dependencies(chart: &mut Chart, vals: &Map<String, Json>) {
    process_enabled(chart, vals, "");
    process_imports(chart);
}

fn process_enabled(c: &mut Chart, v: &Map<String, Json>, path: &str) {
    if c.dependencies.is_empty() && !c.metadata.get("dependencies").is_some_and(Json::is_array) {
        return;
    }
    let mut charts: Vec<Chart> = Vec::new();
    for existing in &c.subcharts {
        let declared =
            c.dependencies.iter().any(|r| existing.name() == r.name && is_compatible(&r.version, existing.version()));
        if !declared {
            charts.push(existing.clone());
        }
    }
    for req in c.dependencies.iter_mut() {
        if let Some(found) =
            c.subcharts.iter().find(|s| s.name() == req.name && is_compatible(&req.version, s.version()))
        {
            let mut copy = found.clone();
            if !req.alias.is_empty()
                && let Json::Object(m) = Arc::make_mut(&mut copy.metadata)
            {
                m.insert("name".into(), Json::String(req.alias.clone()));
            }
            charts.push(copy);
        }
        if !req.alias.is_empty() {
            req.name = req.alias.clone();
        }
    }
    c.subcharts = charts;
    for r in c.dependencies.iter_mut() {
        r.enabled = true;
    }
    let cvals = coalesce_values(c, v, false);
    process_tags(&mut c.dependencies, &cvals);
    process_conditions(&mut c.dependencies, &cvals, path);
    let removed: Vec<String> = c.dependencies.iter().filter(|r| !r.enabled).map(|r| r.name.clone()).collect();
    c.subcharts.retain(|s| !removed.iter().any(|n| n == s.name()));
    c.dependencies.retain(|r| !removed.contains(&r.name));
    for sub in c.subcharts.iter_mut() {
        let sub_path = format!("{path}{}.", sub.name());
        process_enabled(sub, &cvals, &sub_path);
    }
}

fn process_tags(reqs: &mut [Dependency], cvals: &Map<String, Json>) {
    let Some(tags) = table(cvals, "tags") else { return };
    for r in reqs.iter_mut() {
        let (mut has_true, mut has_false) = (false, false);
        for k in &r.tags {
            if let Some(Json::Bool(b)) = tags.get(k) {
                if *b {
                    has_true = true;
                } else {
                    has_false = true;
                }
            }
        }
        if !has_true && has_false {
            r.enabled = false;
        } else if has_true || !has_false {
            r.enabled = true;
        }
    }
}

fn process_conditions(reqs: &mut [Dependency], cvals: &Map<String, Json>, path: &str) {
    for r in reqs.iter_mut() {
        for c in r.condition.trim().split(',') {
            let c = c.trim();
            if c.is_empty() {
                continue;
            }
            if let Some(Json::Bool(b)) = path_value(cvals, &format!("{path}{c}")) {
                r.enabled = *b;
                break;
            }
        }
    }
}

fn path_to_map(path: &str, data: Map<String, Json>) -> Map<String, Json> {
    if path == "." {
        return data;
    }
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let mut cur = data;
    for p in parts.iter().rev() {
        let mut m = Map::new();
        m.insert((*p).to_string(), Json::Object(cur));
        cur = m;
    }
    cur
}

fn process_imports(c: &mut Chart) {
    for sub in c.subcharts.iter_mut() {
        process_imports(sub);
    }
    if c.dependencies.is_empty() {
        return;
    }
    let cvals = coalesce_values(c, &Map::new(), true);
    let mut b = Map::new();
    for r in c.dependencies.iter_mut() {
        let mut out = Vec::new();
        for riv in &r.import_values {
            match riv {
                Json::Object(iv) => {
                    let child = iv.get("child").and_then(Json::as_str).unwrap_or("").to_string();
                    let parent = iv.get("parent").and_then(Json::as_str).unwrap_or("").to_string();
                    out.push(serde_json::json!({"child": child, "parent": parent}));
                    if let Some(vv) = table(&cvals, &format!("{}.{child}", r.name)) {
                        let src = path_to_map(&parent, vv.clone());
                        coalesce_tables(&mut b, &src, true);
                    }
                }
                Json::String(iv) => {
                    let child = format!("exports.{iv}");
                    out.push(serde_json::json!({"child": child, "parent": "."}));
                    if let Some(vm) = table(&cvals, &format!("{}.{child}", r.name)) {
                        coalesce_tables(&mut b, vm, true);
                    }
                }
                _ => {}
            }
        }
        r.import_values = out;
    }
    let mut merged = cvals;
    coalesce_tables(&mut merged, &b, true);
    c.values = Arc::new(Json::Object(merged));
}

/// The values a chart without subcharts, dependencies or schema renders with, straight as
/// template values: `user` coalesced over the chart's defaults as [`coalesce_values`] does,
/// with the defaults converted once per thread and chart rather than copied as JSON and
/// converted at every render. `None` for the other charts (their values go through
/// [`super::release::final_values`]).
pub fn template_values(chart: &Chart, user: &Json) -> Option<Result<TValue, HelmError>> {
    let plain = chart.subcharts.is_empty()
        && chart.dependencies.is_empty()
        && chart.schema.is_none()
        && !chart.metadata.get("dependencies").is_some_and(Json::is_array);
    if !plain {
        return None;
    }
    let user = match user {
        Json::Object(m) => m,
        Json::Null => &Map::new(),
        _ => return Some(Err(HelmError::Values { message: "values must be a mapping".into() })),
    };
    let mut out: BTreeMap<String, TValue> = user.iter().map(|(k, v)| (k.clone(), TValue::from_json(v))).collect();
    let TValue::Map(defaults) = converted_defaults(&chart.values) else { return Some(Ok(TValue::map(out))) };
    for (key, default) in defaults.borrow().iter() {
        match out.get(key) {
            Some(TValue::Nil) => {
                out.remove(key);
            }
            Some(TValue::Map(dest)) => {
                if let TValue::Map(src) = default {
                    coalesce_template_tables(&mut dest.borrow_mut(), &src.borrow());
                }
            }
            Some(_) => {}
            None => {
                if !matches!(default, TValue::Nil) {
                    out.insert(key.clone(), without_nulls(default));
                }
            }
        }
    }
    Some(Ok(TValue::map(out)))
}

/// [`coalesce_tables`] (not merging) over template values.
fn coalesce_template_tables(dst: &mut BTreeMap<String, TValue>, src: &BTreeMap<String, TValue>) {
    let nulls: Vec<String> = dst.iter().filter(|(_, v)| matches!(v, TValue::Nil)).map(|(k, _)| k.clone()).collect();
    for key in &nulls {
        dst.remove(key);
    }
    for (key, value) in src {
        if nulls.contains(key) {
            continue;
        }
        match dst.get(key) {
            None => {
                if !matches!(value, TValue::Nil) {
                    dst.insert(key.clone(), without_nulls(value));
                }
            }
            Some(TValue::Map(dest)) => {
                if let TValue::Map(src) = value {
                    coalesce_template_tables(&mut dest.borrow_mut(), &src.borrow());
                }
            }
            Some(_) => {}
        }
    }
}

/// A copy of `v` without null map entries (lists keep theirs), as [`strip_nulls`].
fn without_nulls(v: &TValue) -> TValue {
    match v {
        TValue::Map(m) => TValue::map(
            m.borrow()
                .iter()
                .filter(|(_, x)| !matches!(x, TValue::Nil))
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        other => other.deep_copy(),
    }
}

/// A chart's defaults as template values, converted once per thread (template values are not
/// shared across threads) and chart, and only ever copied from.
fn converted_defaults(values: &Arc<Json>) -> TValue {
    /// Charts kept before the cache starts over.
    const LIMIT: usize = 64;
    thread_local! {
        static CONVERTED: std::cell::RefCell<Vec<(Arc<Json>, TValue)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    CONVERTED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((_, converted)) = cache.iter().find(|(v, _)| Arc::ptr_eq(v, values)) {
            return converted.clone();
        }
        if cache.len() >= LIMIT {
            cache.clear();
        }
        let converted = TValue::from_json(values);
        cache.push((values.clone(), converted.clone()));
        converted
    })
}

/// Helm's `mergeMaps`: maps merge key by key, anything else is replaced.
pub fn merge_maps(base: &mut Map<String, Json>, over: Map<String, Json>) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Json::Object(b)), Json::Object(o)) => merge_maps(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

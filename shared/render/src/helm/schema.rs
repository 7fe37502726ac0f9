//! `values.schema.json` validation: the JSON Schema (draft-07) keywords charts use — type,
//! required, enum, const, properties, patternProperties, additionalProperties, items,
//! min/max (exclusive too), lengths, pattern, item counts, uniqueItems, allOf/anyOf/oneOf/
//! not, if/then/else and local `$ref`s.

use serde_json::Value as Json;

use super::chart::Chart;

/// Validates `values` against the schemas of `chart` and its subcharts (each against its
/// own section), appending Helm-style error text to `errors`.
pub fn validate_chart(chart: &Chart, values: &Json, errors: &mut String) {
    if let Some(schema) = &chart.schema {
        let mut errs = Vec::new();
        validate(schema, schema, values, "", &mut errs);
        if !errs.is_empty() {
            errors.push_str(&format!("{}:\n", chart.name()));
            for e in errs {
                errors.push_str(&format!("- {e}\n"));
            }
        }
    }
    for sub in &chart.subcharts {
        let empty = Json::Object(Default::default());
        let sv = values.get(sub.name()).unwrap_or(&empty);
        validate_chart(sub, sv, errors);
    }
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                "integer"
            } else {
                "number"
            }
        }
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn type_matches(t: &str, v: &Json) -> bool {
    let actual = type_name(v);
    t == actual || (t == "number" && actual == "integer")
}

fn resolve<'a>(root: &'a Json, r: &str) -> Option<&'a Json> {
    let ptr = r.strip_prefix('#')?;
    if ptr.is_empty() {
        return Some(root);
    }
    root.pointer(ptr)
}

fn show(v: &Json) -> String {
    match v {
        Json::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

/// Validates `v` at JSON pointer `at` against `schema`.
fn validate(root: &Json, schema: &Json, v: &Json, at: &str, errs: &mut Vec<String>) {
    let Json::Object(s) = schema else {
        if schema == &Json::Bool(false) {
            errs.push(format!("at '{}': false schema", if at.is_empty() { "" } else { at }));
        }
        return;
    };
    let loc = if at.is_empty() { String::new() } else { at.to_string() };
    let mut fail = |m: String| errs.push(format!("at '{loc}': {m}"));
    if let Some(r) = s.get("$ref").and_then(Json::as_str) {
        if let Some(target) = resolve(root, r) {
            validate(root, target, v, at, errs);
        }
        return;
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Json::String(t) => type_matches(t, v),
            Json::Array(ts) => ts.iter().filter_map(Json::as_str).any(|t| type_matches(t, v)),
            _ => true,
        };
        if !ok {
            let want = match t {
                Json::String(t) => t.clone(),
                Json::Array(ts) => ts.iter().filter_map(Json::as_str).collect::<Vec<_>>().join(" or "),
                _ => String::new(),
            };
            fail(format!("got {}, want {want}", type_name(v)));
            return;
        }
    }
    if let Some(Json::Array(options)) = s.get("enum")
        && !options.iter().any(|o| json_eq(o, v))
    {
        let list: Vec<String> = options.iter().map(show).collect();
        fail(format!("value must be one of {}", list.join(", ")));
    }
    if let Some(c) = s.get("const")
        && !json_eq(c, v)
    {
        fail(format!("value must be {}", show(c)));
    }
    if let Json::Number(n) = v {
        let x = n.as_f64().unwrap_or(0.0);
        let num = |k: &str| s.get(k).and_then(Json::as_f64);
        if let Some(m) = num("minimum")
            && x < m
        {
            fail(format!("minimum: got {}, want {}", n, s["minimum"]));
        }
        if let Some(m) = num("maximum")
            && x > m
        {
            fail(format!("maximum: got {}, want {}", n, s["maximum"]));
        }
        if let Some(m) = num("exclusiveMinimum")
            && x <= m
        {
            fail(format!("exclusiveMinimum: got {}, want {}", n, s["exclusiveMinimum"]));
        }
        if let Some(m) = num("exclusiveMaximum")
            && x >= m
        {
            fail(format!("exclusiveMaximum: got {}, want {}", n, s["exclusiveMaximum"]));
        }
        if let Some(m) = num("multipleOf")
            && m != 0.0
            && (x / m).fract() != 0.0
        {
            fail(format!("{n} not multipleOf {m}"));
        }
    }
    if let Json::String(st) = v {
        let len = st.chars().count() as u64;
        if let Some(m) = s.get("minLength").and_then(Json::as_u64)
            && len < m
        {
            fail(format!("minLength: got {len}, want {m}"));
        }
        if let Some(m) = s.get("maxLength").and_then(Json::as_u64)
            && len > m
        {
            fail(format!("maxLength: got {len}, want {m}"));
        }
        if let Some(p) = s.get("pattern").and_then(Json::as_str)
            && let Ok(re) = regex::Regex::new(p)
            && !re.is_match(st)
        {
            fail(format!("'{st}' does not match pattern '{p}'"));
        }
    }
    if let Json::Array(items) = v {
        let n = items.len() as u64;
        if let Some(m) = s.get("minItems").and_then(Json::as_u64)
            && n < m
        {
            fail(format!("minItems: got {n}, want {m}"));
        }
        if let Some(m) = s.get("maxItems").and_then(Json::as_u64)
            && n > m
        {
            fail(format!("maxItems: got {n}, want {m}"));
        }
        if s.get("uniqueItems") == Some(&Json::Bool(true)) {
            for i in 0..items.len() {
                for j in i + 1..items.len() {
                    if json_eq(&items[i], &items[j]) {
                        fail(format!("items at {i} and {j} are equal"));
                    }
                }
            }
        }
        match s.get("items") {
            Some(Json::Array(tuple)) => {
                for (i, (item, sch)) in items.iter().zip(tuple.iter()).enumerate() {
                    validate(root, sch, item, &format!("{at}/{i}"), errs);
                }
            }
            Some(sch) => {
                for (i, item) in items.iter().enumerate() {
                    validate(root, sch, item, &format!("{at}/{i}"), errs);
                }
            }
            None => {}
        }
    }
    if let Json::Object(obj) = v {
        if let Some(Json::Array(req)) = s.get("required") {
            let missing: Vec<String> = req
                .iter()
                .filter_map(Json::as_str)
                .filter(|k| !obj.contains_key(*k))
                .map(|k| format!("'{k}'"))
                .collect();
            if !missing.is_empty() {
                errs.push(format!("at '{loc}': missing property {}", missing.join(", ")));
            }
        }
        let props = s.get("properties").and_then(Json::as_object);
        let pattern_props = s.get("patternProperties").and_then(Json::as_object);
        for (k, val) in obj {
            let child = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            let mut matched = false;
            if let Some(sch) = props.and_then(|p| p.get(k)) {
                matched = true;
                validate(root, sch, val, &child, errs);
            }
            if let Some(pp) = pattern_props {
                for (pat, sch) in pp {
                    if regex::Regex::new(pat).is_ok_and(|r| r.is_match(k)) {
                        matched = true;
                        validate(root, sch, val, &child, errs);
                    }
                }
            }
            if !matched {
                match s.get("additionalProperties") {
                    Some(Json::Bool(false)) => {
                        errs.push(format!("at '{loc}': additional properties '{k}' not allowed"))
                    }
                    Some(sch @ Json::Object(_)) => validate(root, sch, val, &child, errs),
                    _ => {}
                }
            }
        }
    }
    if let Some(Json::Array(all)) = s.get("allOf") {
        for sch in all {
            validate(root, sch, v, at, errs);
        }
    }
    if let Some(Json::Array(any)) = s.get("anyOf") {
        let ok = any.iter().any(|sch| {
            let mut e = Vec::new();
            validate(root, sch, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errs.push(format!("at '{loc}': anyOf failed"));
        }
    }
    if let Some(Json::Array(one)) = s.get("oneOf") {
        let n = one
            .iter()
            .filter(|sch| {
                let mut e = Vec::new();
                validate(root, sch, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if n != 1 {
            errs.push(format!("at '{loc}': oneOf failed, {n} subschemas matched"));
        }
    }
    if let Some(not) = s.get("not") {
        let mut e = Vec::new();
        validate(root, not, v, at, &mut e);
        if e.is_empty() {
            errs.push(format!("at '{loc}': not failed"));
        }
    }
    if let Some(cond) = s.get("if") {
        let mut e = Vec::new();
        validate(root, cond, v, at, &mut e);
        let branch = if e.is_empty() { s.get("then") } else { s.get("else") };
        if let Some(b) = branch {
            validate(root, b, v, at, errs);
        }
    }
}

fn json_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

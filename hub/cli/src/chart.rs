//! `convoy render CHART_DIR`: a Helm chart rendered locally with Convoy's engine, printed as
//! `helm template --skip-tests` prints it. Values merge like Helm's: each `-f` file over the
//! last (maps deep-merged), then each `--set`.

use std::path::{Path, PathBuf};

use convoy_render::FsSource;
use convoy_render::helm::{Chart, ReleaseOptions, Rendered, render};
use serde_json::{Map, Value};

use crate::CliError;

/// What to render.
#[derive(Debug, Clone)]
pub struct ChartRequest {
    /// The chart directory (holding `Chart.yaml`).
    pub dir: PathBuf,
    /// `.Release.Name`.
    pub release_name: String,
    /// `.Release.Namespace`.
    pub namespace: String,
    /// Values files, later ones winning.
    pub values_files: Vec<PathBuf>,
    /// `--set KEY=VALUE` expressions, applied after the files.
    pub sets: Vec<String>,
}

/// Whether `dir` is a Helm chart rather than a kustomization.
pub fn is_chart(dir: &Path) -> bool {
    dir.join("Chart.yaml").is_file()
}

/// Renders the chart of `req`.
pub fn render_chart(req: &ChartRequest) -> Result<Rendered, CliError> {
    let values = user_values(&req.values_files, &req.sets)?;
    let dir = std::fs::canonicalize(&req.dir)
        .map_err(|e| CliError::Render(format!("{}: cannot read the chart: {e}", req.dir.display())))?;
    let (parent, name) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), PathBuf::from(n)),
        _ => return Err(CliError::Render(format!("{}: not a chart directory", dir.display()))),
    };
    let source = FsSource::new(&parent);
    let chart = Chart::load(&source, &name).map_err(|e| CliError::Render(e.to_string()))?;
    let opts = ReleaseOptions::new(&req.release_name, &req.namespace);
    render(&chart, &values, &opts).map_err(|e| CliError::Render(e.to_string()))
}

/// The user values: `-f` files merged in order, then `--set` expressions.
pub fn user_values(files: &[PathBuf], sets: &[String]) -> Result<Value, CliError> {
    let mut base = Map::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| CliError::Render(format!("{}: cannot read values file: {e}", f.display())))?;
        let v = convoy_render::helm::yaml_read::parse_yaml(&text)
            .map_err(|e| CliError::Render(format!("{}: invalid YAML: {e}", f.display())))?;
        match v {
            Value::Object(m) => convoy_render::helm::values::merge_maps(&mut base, m),
            Value::Null => {}
            _ => return Err(CliError::Render(format!("{}: values must be a mapping", f.display()))),
        }
    }
    for s in sets {
        parse_set(&mut base, s).map_err(|e| CliError::Render(format!("--set {s}: {e}")))?;
    }
    Ok(Value::Object(base))
}

/// Splits on `sep` where it is not escaped with a backslash (and not inside `{…}`).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if n != sep {
                        cur.push('\\');
                    }
                    cur.push(n);
                }
            }
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            c if c == sep && depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Helm's typing of a `--set` value: booleans, `null`, integers (not with a leading zero),
/// `{a,b}` lists, otherwise a string.
fn typed(v: &str) -> Value {
    if let Some(inner) = v.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        return Value::Array(if inner.is_empty() {
            Vec::new()
        } else {
            split_unescaped(inner, ',').iter().map(|x| typed(x)).collect()
        });
    }
    if v.eq_ignore_ascii_case("true") {
        return Value::Bool(true);
    }
    if v.eq_ignore_ascii_case("false") {
        return Value::Bool(false);
    }
    if v.eq_ignore_ascii_case("null") {
        return Value::Null;
    }
    if v == "0" {
        return Value::from(0);
    }
    if !v.is_empty()
        && !v.starts_with('0')
        && let Ok(i) = v.parse::<i64>()
    {
        return Value::from(i);
    }
    Value::String(v.to_string())
}

/// Applies one `--set a.b[0].c=v,x=y` expression to `base`.
pub fn parse_set(base: &mut Map<String, Value>, expr: &str) -> Result<(), String> {
    for assignment in split_unescaped(expr, ',') {
        if assignment.is_empty() {
            continue;
        }
        let Some((key, val)) = assignment.split_once('=') else {
            return Err(format!("key {assignment:?} has no value"));
        };
        let path = split_unescaped(key, '.');
        set_path(base, &path, typed(val))?;
    }
    Ok(())
}

fn set_path(map: &mut Map<String, Value>, path: &[String], val: Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else { return Ok(()) };
    // `name[0][1]` indexes into lists.
    let (name, indexes) = match first.find('[') {
        Some(i) => {
            let idx: Result<Vec<usize>, String> = first[i..]
                .split(']')
                .filter(|p| !p.is_empty())
                .map(|p| p.trim_start_matches('[').parse::<usize>().map_err(|e| format!("bad index in {first}: {e}")))
                .collect();
            (&first[..i], idx?)
        }
        None => (first.as_str(), Vec::new()),
    };
    if indexes.is_empty() {
        if rest.is_empty() {
            map.insert(name.to_string(), val);
            return Ok(());
        }
        let slot = map.entry(name.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        if let Value::Object(m) = slot {
            return set_path(m, rest, val);
        }
        return Ok(());
    }
    let mut slot = map.entry(name.to_string()).or_insert_with(|| Value::Array(Vec::new()));
    for (n, idx) in indexes.iter().enumerate() {
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        let Value::Array(list) = slot else { unreachable!("made an array") };
        while list.len() <= *idx {
            list.push(Value::Null);
        }
        slot = &mut list[*idx];
        if n + 1 == indexes.len() {
            if rest.is_empty() {
                *slot = val;
                return Ok(());
            }
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(m) = slot {
                return set_path(m, rest, val);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(exprs: &[&str]) -> Value {
        let mut m = Map::new();
        for e in exprs {
            parse_set(&mut m, e).expect("set");
        }
        Value::Object(m)
    }

    #[test]
    fn set_expressions_type_and_nest_like_helm() {
        assert_eq!(
            set(&["image.tag=1.2.3,replicas=3,debug=true,name=null", "list={a,b}", "zero=0", "octal=0755"]),
            json!({"image": {"tag": "1.2.3"}, "replicas": 3, "debug": true, "name": null, "list": ["a", "b"], "zero": 0, "octal": "0755"})
        );
        assert_eq!(
            set(&["a[1].b=x", r"dotted\.key=v", r"comma=a\,b"]),
            json!({"a": [null, {"b": "x"}], "dotted.key": "v", "comma": "a,b"})
        );
    }

    #[test]
    fn values_files_merge_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), "x: {a: 1, b: 2}\nl: [1]\n").expect("write");
        std::fs::write(dir.path().join("b.yaml"), "x: {b: 3}\nl: [2]\n").expect("write");
        let v =
            user_values(&[dir.path().join("a.yaml"), dir.path().join("b.yaml")], &["x.c=4".into()]).expect("values");
        assert_eq!(v, json!({"x": {"a": 1, "b": 3, "c": 4}, "l": [2]}));
    }
}

//! Loading a chart from a [`Source`]: `Chart.yaml`, `values.yaml`, `values.schema.json`,
//! `templates/`, `crds/`, other files (for `.Files`, minus `.helmignore` matches), and
//! subcharts vendored under `charts/` as directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use super::HelmError;
use super::yaml_read::parse_yaml;
use crate::Source;

/// A dependency declared in `Chart.yaml`.
#[derive(Debug, Clone, Default)]
pub struct Dependency {
    /// Chart name.
    pub name: String,
    /// Version range.
    pub version: String,
    /// Repository URL.
    pub repository: String,
    /// Comma-separated value paths enabling it.
    pub condition: String,
    /// Tags enabling it.
    pub tags: Vec<String>,
    /// Name it is installed under.
    pub alias: String,
    /// `import-values` entries (strings or `{child, parent}` maps).
    pub import_values: Vec<Json>,
    /// Enabled after conditions and tags.
    pub enabled: bool,
}

/// A loaded chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// `Chart.yaml` as parsed (shared: a chart is copied for every release it renders).
    pub metadata: Arc<Json>,
    /// Declared dependencies.
    pub dependencies: Vec<Dependency>,
    /// `values.yaml` (an object).
    pub values: Arc<Json>,
    /// `values.schema.json`, when present.
    pub schema: Option<Arc<Json>>,
    /// Templates: (`templates/…` path, text), sorted by path.
    pub templates: Vec<(String, Arc<str>)>,
    /// Every other file, by chart-relative path (what `.Files` sees).
    pub files: Arc<BTreeMap<String, Arc<[u8]>>>,
    /// Loaded subcharts (from `charts/`).
    pub subcharts: Vec<Chart>,
    /// Where the chart was read from (for messages).
    pub path: PathBuf,
}

impl Chart {
    /// The chart's name (after aliasing).
    pub fn name(&self) -> &str {
        self.metadata.get("name").and_then(Json::as_str).unwrap_or("")
    }

    /// The chart's version.
    pub fn version(&self) -> &str {
        self.metadata.get("version").and_then(Json::as_str).unwrap_or("")
    }

    /// Whether this is a library chart (only its partials are used).
    pub fn is_library(&self) -> bool {
        self.metadata.get("type").and_then(Json::as_str) == Some("library")
    }

    /// `crds/` files: (path, text).
    pub fn crds(&self) -> Vec<(String, String)> {
        self.files
            .iter()
            .filter(|(k, _)| {
                k.starts_with("crds/") && (k.ends_with(".yaml") || k.ends_with(".yml") || k.ends_with(".json"))
            })
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// Loads the chart in directory `dir` of `source`.
    pub fn load(source: &dyn Source, dir: &Path) -> Result<Chart, HelmError> {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        walk(source, dir, "", &mut files)?;
        let ignore = files.get(".helmignore").map(|b| String::from_utf8_lossy(b).into_owned());
        let rules = ignore.as_deref().map(IgnoreRules::parse).unwrap_or_default();
        files.retain(|k, _| !(rules.ignored(k) || (k.starts_with("templates/") && base(k).starts_with('.'))));
        from_files(files, dir)
    }

    /// Loads a packaged chart (`.tgz`, as `helm package` writes it and chart repositories and
    /// OCI registries serve it): the chart is the archive's top directory. `origin` names
    /// where it came from in messages (a vendored path, or a remote chart reference).
    pub fn from_archive(data: &[u8], origin: impl AsRef<Path>) -> Result<Chart, HelmError> {
        let origin = origin.as_ref();
        let files =
            super::archive::untar(data).map_err(|message| HelmError::Load { chart: origin.to_path_buf(), message })?;
        from_files(files, origin)
    }
}

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn walk(source: &dyn Source, dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) -> Result<(), HelmError> {
    let full = if rel.is_empty() { dir.to_path_buf() } else { dir.join(rel) };
    let entries =
        source.list_dir(&full).map_err(|e| HelmError::Load { chart: dir.to_path_buf(), message: e.to_string() })?;
    for name in entries {
        let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let child = dir.join(&child_rel);
        match source.kind(&child).map_err(|e| HelmError::Load { chart: dir.to_path_buf(), message: e.to_string() })? {
            Some(crate::EntryKind::Dir) => walk(source, dir, &child_rel, out)?,
            Some(crate::EntryKind::File) => {
                let data = source
                    .read(&child)
                    .map_err(|e| HelmError::Load { chart: dir.to_path_buf(), message: e.to_string() })?;
                out.insert(child_rel, data);
            }
            None => {}
        }
    }
    Ok(())
}

fn from_files(mut files: BTreeMap<String, Vec<u8>>, dir: &Path) -> Result<Chart, HelmError> {
    let load_err = |m: String| HelmError::Load { chart: dir.to_path_buf(), message: m };
    let chart_yaml = files.remove("Chart.yaml").ok_or_else(|| load_err("Chart.yaml file is missing".into()))?;
    let metadata =
        parse_yaml(&String::from_utf8_lossy(&chart_yaml)).map_err(|e| load_err(format!("Chart.yaml: {e}")))?;
    if !metadata.is_object() {
        return Err(load_err("Chart.yaml is not a mapping".into()));
    }
    // Helm's `Metadata.Validate`.
    if metadata.get("apiVersion").and_then(Json::as_str).unwrap_or("").is_empty() {
        return Err(load_err("validation: chart.metadata.apiVersion is required".into()));
    }
    let name = metadata.get("name").and_then(Json::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(load_err("validation: chart.metadata.name is required".into()));
    }
    if name.contains('/') || name.contains('\\') || name == "." || name == ".." {
        return Err(load_err(format!("validation: chart.metadata.name {name:?} is invalid")));
    }
    let version = match metadata.get("version") {
        Some(Json::String(v)) => v.clone(),
        Some(Json::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if version.is_empty() {
        return Err(load_err("validation: chart.metadata.version is required".into()));
    }
    if super::semver::Version::parse(&version).is_none() {
        return Err(load_err(format!("validation: chart.metadata.version {version:?} is invalid")));
    }
    match metadata.get("type").and_then(Json::as_str).unwrap_or("") {
        "" | "application" | "library" => {}
        other => {
            return Err(load_err(format!(
                "validation: chart.metadata.type must be application or library, not {other:?}"
            )));
        }
    }
    let values = match files.remove("values.yaml") {
        Some(b) => {
            let v = parse_yaml(&String::from_utf8_lossy(&b)).map_err(|e| load_err(format!("values.yaml: {e}")))?;
            if v.is_null() { Json::Object(Default::default()) } else { v }
        }
        None => Json::Object(Default::default()),
    };
    if !values.is_object() {
        return Err(load_err("values.yaml must be a mapping".into()));
    }
    let schema = match files.remove("values.schema.json") {
        Some(b) => Some(serde_json::from_slice(&b).map_err(|e| load_err(format!("values.schema.json: {e}")))?),
        None => None,
    };
    let mut dep_json = metadata.get("dependencies").cloned();
    if let Some(req) = files.remove("requirements.yaml")
        && metadata.get("apiVersion").and_then(Json::as_str) == Some("v1")
    {
        let r = parse_yaml(&String::from_utf8_lossy(&req)).map_err(|e| load_err(format!("requirements.yaml: {e}")))?;
        dep_json = r.get("dependencies").cloned();
    }
    files.remove("Chart.lock");
    files.remove("requirements.lock");
    let dependencies = dep_json
        .and_then(|d| d.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|d| Dependency {
            name: str_field(d, "name"),
            version: str_field(d, "version"),
            repository: str_field(d, "repository"),
            condition: str_field(d, "condition"),
            tags: d
                .get("tags")
                .and_then(Json::as_array)
                .map(|t| t.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            alias: str_field(d, "alias"),
            import_values: d.get("import-values").and_then(Json::as_array).cloned().unwrap_or_default(),
            enabled: true,
        })
        .collect();
    let mut templates = Vec::new();
    let mut sub_files: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut archives: Vec<(String, Vec<u8>)> = Vec::new();
    let mut other = BTreeMap::new();
    for (k, v) in files {
        if k.starts_with("templates/") {
            templates.push((k, Arc::from(String::from_utf8_lossy(&v).as_ref())));
        } else if let Some(rest) = k.strip_prefix("charts/") {
            if k.ends_with(".prov") {
                other.insert(k, Arc::from(v));
                continue;
            }
            match rest.split_once('/') {
                Some((name, inner)) => {
                    sub_files.entry(name.to_string()).or_default().insert(inner.to_string(), v);
                }
                None if rest.ends_with(".tgz") || rest.ends_with(".tar.gz") => archives.push((rest.to_string(), v)),
                None => {}
            }
        } else {
            other.insert(k, Arc::from(v));
        }
    }
    let mut subcharts = Vec::new();
    for (name, mut sf) in sub_files {
        let sub_dir = dir.join("charts").join(&name);
        if let Some(ig) = sf.get(".helmignore").map(|b| String::from_utf8_lossy(b).into_owned()) {
            let rules = IgnoreRules::parse(&ig);
            sf.retain(|k, _| !rules.ignored(k));
        }
        sf.retain(|k, _| !(k.starts_with("templates/") && base(k).starts_with('.')));
        subcharts.push(from_files(sf, &sub_dir)?);
    }
    for (name, data) in archives {
        subcharts.push(Chart::from_archive(&data, dir.join("charts").join(&name))?);
    }
    Ok(Chart {
        metadata: Arc::new(metadata),
        dependencies,
        values: Arc::new(values),
        schema: schema.map(Arc::new),
        templates,
        files: Arc::new(other),
        subcharts,
        path: dir.to_path_buf(),
    })
}

fn str_field(v: &Json, k: &str) -> String {
    match v.get(k) {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// `.helmignore` rules (a subset of Helm's: globs per path or base name, `dir/` patterns,
/// `!` negation).
#[derive(Debug, Default)]
struct IgnoreRules {
    rules: Vec<(bool, bool, regex::Regex, bool)>,
}

impl IgnoreRules {
    fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (neg, line) = match line.strip_prefix('!') {
                Some(r) => (true, r),
                None => (false, line),
            };
            let (dir_only, line) = match line.strip_suffix('/') {
                Some(r) => (true, r),
                None => (false, line),
            };
            let has_slash = line.contains('/');
            let pat = line.trim_start_matches('/');
            if let Some(re) = super::glob::glob_regex(&pat.replace("**", "*")) {
                rules.push((neg, dir_only, re, has_slash));
            }
        }
        IgnoreRules { rules }
    }

    fn ignored(&self, path: &str) -> bool {
        let mut ignored = false;
        for (neg, dir_only, re, has_slash) in &self.rules {
            // A file is ignored when it or one of its parent directories matches.
            let parts: Vec<&str> = path.split('/').collect();
            let mut hit = false;
            for i in 0..parts.len() {
                let is_dir = i + 1 < parts.len();
                if *dir_only && !is_dir {
                    continue;
                }
                let candidate = if *has_slash { parts[..=i].join("/") } else { parts[i].to_string() };
                if re.is_match(&candidate) {
                    hit = true;
                    break;
                }
            }
            if hit {
                ignored = !neg;
            }
        }
        ignored
    }
}

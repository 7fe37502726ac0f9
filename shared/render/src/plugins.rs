//! Builtin plugin configurations listed under `transformers:` and `generators:`
//! (`apiVersion: builtin`, kinds such as PrefixSuffixTransformer or ConfigMapGenerator),
//! run with the same code as the kustomization fields they mirror. Exec and container
//! KRM functions and other external plugins are refused: the hub never runs code from Git.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::accumulate::append_replace_or_merge;
use super::config::FieldSpec;
use super::kustomization::{GeneratorSpec, ImageSpec, PatchOptions, ReplacementEntry, ReplicaSpec, Selector};
use super::merge::OpenApi;
use super::patch::{self, Target};
use super::resource::Resource;
use super::source::Source;
use super::transform::{self, ImageRule};
use super::yaml::{DocCache, Schema};
use super::{RenderError, Result, generate, replace};

/// What a plugin reads through the build that runs it (the engine provides it), so plugins
/// need nothing of the engine itself.
pub(crate) trait BuildInputs {
    /// The repository's file tree.
    fn source(&self) -> &dyn Source;
    /// Parsed documents, shared across the build.
    fn cache(&self) -> &DocCache;
    /// The schema of the last `openapi:` seen, for strategic merges.
    fn openapi(&self) -> Option<&OpenApi>;
    /// A file a kustomization names (in or below its directory), as YAML documents.
    fn read_docs(&self, dir: &Path, kfile: &Path, entry: &str, schema: Schema) -> Result<(PathBuf, Arc<Vec<Value>>)>;
}

fn kind_of(cfg: &Value) -> &str {
    cfg.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn field<T: serde::de::DeserializeOwned>(file: &Path, cfg: &Value, key: &str) -> Result<Option<T>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => super::gojson::from_value(v.clone())
            .map(Some)
            .map_err(|e| RenderError::invalid(file, format!("{}: invalid '{key}': {e}", kind_of(cfg)))),
    }
}

/// Refuses what is not a builtin plugin config, naming why.
fn check_builtin(file: &Path, cfg: &Value) -> Result<()> {
    let annotations = cfg.pointer("/metadata/annotations").and_then(Value::as_object);
    let is_function = annotations
        .is_some_and(|a| a.contains_key("config.kubernetes.io/function") || a.contains_key("config.k8s.io/function"));
    let kind = kind_of(cfg);
    if is_function {
        return Err(RenderError::Unsupported {
            path: file.to_path_buf(),
            feature: format!("KRM function '{kind}' (exec and container functions run code)"),
        });
    }
    let api = cfg.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api != "builtin" {
        return Err(RenderError::Unsupported {
            path: file.to_path_buf(),
            feature: format!("external plugin '{api}/{kind}' (only apiVersion: builtin plugins can run)"),
        });
    }
    if kind == "HelmChartInflationGenerator" {
        return Err(RenderError::Unsupported {
            path: file.to_path_buf(),
            feature: "HelmChartInflationGenerator".into(),
        });
    }
    Ok(())
}

/// Runs one generator config.
pub(crate) fn generate(
    eng: &dyn BuildInputs,
    dir: &Path,
    file: &Path,
    cfg: &Value,
    acc: &mut Vec<Resource>,
) -> Result<()> {
    check_builtin(file, cfg)?;
    let kind = kind_of(cfg);
    let secret = match kind {
        "ConfigMapGenerator" => false,
        "SecretGenerator" => true,
        _ => {
            return Err(RenderError::Unsupported {
                path: file.to_path_buf(),
                feature: format!("generator plugin '{kind}'"),
            });
        }
    };
    let mut spec = cfg.as_object().cloned().unwrap_or_default();
    spec.remove("apiVersion");
    spec.remove("kind");
    if let Some(Value::Object(md)) = spec.remove("metadata") {
        for k in ["name", "namespace"] {
            if let Some(v) = md.get(k) {
                spec.insert(k.into(), v.clone());
            }
        }
    }
    let spec: GeneratorSpec = super::gojson::from_value(Value::Object(spec))
        .map_err(|e| RenderError::invalid(file, format!("{kind}: {e}")))?;
    let kfile = Arc::new(file.to_path_buf());
    let mut r = generate::generate(eng.source(), dir, &kfile, &spec, secret, None)?;
    r.generator_name = cfg.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string);
    append_replace_or_merge(acc, r, file)
}

/// ValueAddTransformer: writes `value` at each target's `fieldPath` (creating it), or
/// inserts it as a path segment at `filePathPosition` of the current value.
fn value_add(file: &Path, cfg: &Value, acc: &mut [Resource]) -> Result<()> {
    let value = cfg.get("value").and_then(Value::as_str).unwrap_or("").to_string();
    for t in cfg.get("targets").and_then(Value::as_array).into_iter().flatten() {
        let selector: Option<Selector> = field(file, t, "selector")?;
        let target = selector.as_ref().map(|s| Target::compile(file, s)).transpose()?;
        let path = t.get("fieldPath").and_then(Value::as_str).unwrap_or("").to_string();
        let position = t.get("filePathPosition").and_then(Value::as_i64).unwrap_or(0);
        let segs = super::config::split_path(&path);
        for r in acc.iter_mut().filter(|r| target.as_ref().is_none_or(|t| t.selects(r))) {
            let mut root = Value::Object(std::mem::take(&mut r.obj));
            super::config::walk_segs(&mut root, &segs, true, &mut |v| {
                let current = v.as_str().unwrap_or("").to_string();
                *v = Value::String(if position == 0 {
                    value.clone()
                } else {
                    insert_path_part(&current, position - 1, &value)
                });
            });
            if let Value::Object(m) = root {
                r.obj = m;
            }
        }
    }
    Ok(())
}

/// kustomize's `filesys.InsertPathPart`: `part` inserted as the `pos`-th segment of a
/// `/`-separated path (an absolute path's leading `/` is not a position).
fn insert_path_part(path: &str, pos: i64, part: &str) -> String {
    let mut parts: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').collect() };
    let mut pos = usize::try_from(pos.max(0)).unwrap_or(0).min(parts.len());
    if parts.first() == Some(&"") && pos < 1 {
        pos = 1;
    }
    parts.insert(pos, part);
    parts.join("/")
}

/// Runs one transformer config.
pub(crate) fn transform(
    eng: &dyn BuildInputs,
    dir: &Path,
    file: &Path,
    cfg: &Value,
    acc: &mut Vec<Resource>,
) -> Result<()> {
    check_builtin(file, cfg)?;
    let kind = kind_of(cfg);
    let specs = FieldSpec::parse_list(file, cfg.get("fieldSpecs"))?;
    let kfile = Arc::new(file.to_path_buf());
    let string = |key: &str| cfg.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    match kind {
        "PrefixSuffixTransformer" | "PrefixTransformer" | "SuffixTransformer" => {
            let (prefix, suffix) = (string("prefix"), string("suffix"));
            for spec in specs.iter().filter(|s| s.path == "metadata/name") {
                let pick = |r: &Resource| spec.selects(&r.gvk());
                if !prefix.is_empty() {
                    transform::add_prefix_where(acc, &prefix, &pick);
                }
                if !suffix.is_empty() {
                    transform::add_suffix_where(acc, &suffix, &pick);
                }
            }
            transform::affix_at(acc, &specs, &prefix, &suffix);
        }
        "LabelTransformer" | "AnnotationsTransformer" => {
            let key = if kind == "LabelTransformer" { "labels" } else { "annotations" };
            let pairs: Map<String, Value> = field(file, cfg, key)?.unwrap_or_default();
            transform::add_pairs_at(acc, &specs, &pairs);
        }
        "NamespaceTransformer" => {
            let ns = cfg.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
            if ns.is_empty() {
                return Ok(());
            }
            if specs.iter().any(|s| s.path == "metadata/namespace") {
                transform::set_namespace(acc, &ns, file)?;
            }
            let rest: Vec<FieldSpec> = specs.into_iter().filter(|s| s.path != "metadata/namespace").collect();
            transform::set_string_at(acc, &rest, &ns);
        }
        "ImageTagTransformer" => {
            let spec: ImageSpec = field(file, cfg, "imageTag")?
                .ok_or_else(|| RenderError::invalid(file, "ImageTagTransformer needs 'imageTag'"))?;
            let rules = [ImageRule::new(&spec, file, eng.cache())?];
            transform::transform_images(acc, &rules, &specs, false);
        }
        "ReplicaCountTransformer" => {
            let spec: ReplicaSpec = field(file, cfg, "replica")?
                .ok_or_else(|| RenderError::invalid(file, "ReplicaCountTransformer needs 'replica'"))?;
            transform::replicas_at(acc, &specs, std::slice::from_ref(&spec));
        }
        "PatchTransformer" => {
            let path: Option<String> = field(file, cfg, "path")?;
            let body: Option<String> = field(file, cfg, "patch")?;
            let target: Option<Selector> = field(file, cfg, "target")?;
            let options: Option<PatchOptions> = field(file, cfg, "options")?;
            let loaded = patch::load(eng.source(), eng.cache(), dir, &kfile, path.as_deref(), body.as_deref(), false)?;
            let target = target.as_ref().map(|t| Target::compile(file, t)).transpose()?;
            patch::apply(acc, &loaded, target.as_ref(), options.as_ref(), eng.openapi())?;
        }
        "PatchJson6902Transformer" => {
            let path: Option<String> = field(file, cfg, "path")?;
            let body: Option<String> = field(file, cfg, "jsonOp")?;
            let target: Selector = field(file, cfg, "target")?
                .ok_or_else(|| RenderError::invalid(file, "PatchJson6902Transformer needs a target"))?;
            let loaded = patch::load(eng.source(), eng.cache(), dir, &kfile, path.as_deref(), body.as_deref(), false)?;
            patch::apply(acc, &loaded, Some(&Target::compile(file, &target)?), None, eng.openapi())?;
        }
        "PatchStrategicMergeTransformer" => {
            let paths: Vec<String> = field(file, cfg, "paths")?.unwrap_or_default();
            for p in &paths {
                let loaded = patch::load(eng.source(), eng.cache(), dir, &kfile, Some(p), None, true)?;
                patch::apply(acc, &loaded, None, None, eng.openapi())?;
            }
            if let Some(body) = field::<String>(file, cfg, "patches")? {
                let loaded = patch::load(eng.source(), eng.cache(), dir, &kfile, None, Some(&body), true)?;
                patch::apply(acc, &loaded, None, None, eng.openapi())?;
            }
        }
        "ValueAddTransformer" => value_add(file, cfg, acc)?,
        "ReplacementTransformer" => {
            let entries: Vec<ReplacementEntry> = field(file, cfg, "replacements")?.unwrap_or_default();
            let reps = replace::compile(file, &entries, |p| {
                let (f, docs) = eng.read_docs(dir, file, p, Schema::Resource)?;
                Ok((f, docs.to_vec()))
            })?;
            replace::apply(file, acc, &reps)?;
        }
        _ => {
            return Err(RenderError::Unsupported {
                path: file.to_path_buf(),
                feature: format!("transformer plugin '{kind}'"),
            });
        }
    }
    Ok(())
}

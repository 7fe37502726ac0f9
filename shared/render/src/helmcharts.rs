//! kustomize's `helmCharts:` field (the HelmChartInflationGenerator), rendered with Convoy's
//! Helm engine instead of a `helm` subprocess: what `helm template` prints for the chart becomes
//! resources of the kustomization, so overlays patch a chart like any base.
//!
//! The chart is read from the repository: `<chartHome>/<name>-<version>/<name>` when a version is
//! given and that directory exists (where kustomize pulls to), else `<chartHome>/<name>`;
//! `chartHome` (`helmGlobals.chartHome`) defaults to `charts` next to the kustomization.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::generate::{read_text, resolve};
use crate::helm::{self, Capabilities, Chart, ReleaseOptions};
use crate::resource::Resource;
use crate::source::normalize;
use crate::{RenderError, Result, Source};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HelmChart {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    repo: Option<String>,
    #[serde(default)]
    release_name: Option<String>,
    #[serde(default)]
    name_template: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    values_file: Option<String>,
    #[serde(default)]
    additional_values_files: Vec<String>,
    #[serde(default)]
    values_inline: Option<Map<String, Value>>,
    #[serde(default)]
    values_merge: Option<String>,
    #[serde(default, rename = "includeCRDs")]
    include_crds: bool,
    #[serde(default)]
    skip_hooks: bool,
    /// Test hooks are always left out, as with `skipTests: true`.
    #[serde(default, rename = "skipTests")]
    _skip_tests: bool,
    #[serde(default)]
    api_versions: Vec<String>,
    #[serde(default)]
    kube_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HelmGlobals {
    #[serde(default)]
    chart_home: Option<String>,
    /// Helm's config home: nothing to configure for an in-process engine.
    #[serde(default, rename = "configHome")]
    _config_home: Option<String>,
}

/// The resources of every `helmCharts:` entry of the kustomization `kfile` in `dir`.
pub(crate) fn inflate(
    src: &dyn Source,
    dir: &Path,
    kfile: &Arc<PathBuf>,
    charts: &Value,
    globals: Option<&Value>,
) -> Result<Vec<Resource>> {
    let invalid = |message: String| RenderError::InvalidKustomization { path: kfile.to_path_buf(), message };
    let charts: Vec<HelmChart> =
        serde_json::from_value(charts.clone()).map_err(|e| invalid(format!("helmCharts: {e}")))?;
    let globals: HelmGlobals = globals
        .map(|g| serde_json::from_value(g.clone()).map_err(|e| invalid(format!("helmGlobals: {e}"))))
        .transpose()?
        .unwrap_or_default();
    let home_written = globals.chart_home.as_deref().unwrap_or("charts");
    let home = normalize(dir, home_written)
        .ok_or_else(|| RenderError::PathEscape { path: home_written.to_string(), from: kfile.to_path_buf() })?;
    let mut out = Vec::new();
    for chart in &charts {
        out.extend(inflate_one(src, dir, kfile, &home, chart)?);
    }
    Ok(out)
}

fn inflate_one(
    src: &dyn Source,
    dir: &Path,
    kfile: &Arc<PathBuf>,
    home: &Path,
    spec: &HelmChart,
) -> Result<Vec<Resource>> {
    let invalid = |message: String| RenderError::InvalidKustomization { path: kfile.to_path_buf(), message };
    if spec.name.is_empty() || spec.name.contains('/') {
        return Err(invalid(format!("helmCharts: '{}' is not a chart name", spec.name)));
    }
    let versioned = spec.version.as_ref().map(|v| home.join(format!("{}-{v}", spec.name)).join(&spec.name));
    let plain = home.join(&spec.name);
    let chart_dir = match versioned {
        Some(v) if src.is_dir(&v)? => v,
        _ if src.is_dir(&plain)? => plain,
        _ => {
            let pull = match &spec.repo {
                Some(repo) => format!(
                    "vendor it: helm pull --untar --untardir {} --repo {repo} {}{}",
                    home.display(),
                    spec.name,
                    spec.version.as_ref().map(|v| format!(" --version {v}")).unwrap_or_default()
                ),
                None => "add the chart there, or set helmGlobals.chartHome".to_string(),
            };
            return Err(invalid(format!(
                "helmCharts: chart '{}' is not in {} (Convoy reads charts from the repository only); {pull}",
                spec.name,
                home.display()
            )));
        }
    };
    let helm_error = |error| RenderError::Helm { chart: chart_dir.clone(), error: Box::new(error) };
    let chart = Chart::load(src, &chart_dir).map_err(helm_error)?;
    let values = values(src, dir, kfile, &chart_dir, spec)?;
    let release = spec.release_name.as_deref().or(spec.name_template.as_deref()).unwrap_or("release-name");
    let mut opts = ReleaseOptions::new(release, spec.namespace.as_deref().unwrap_or("default"));
    opts.capabilities = Arc::new(capabilities(spec));
    let rendered = helm::render(&chart, &Value::Object(values), &opts).map_err(helm_error)?;
    // What `helm template` prints, in its order: CRDs (--include-crds), the manifests, then the
    // hooks unless --no-hooks.
    let crds = rendered.crds.iter().filter(|_| spec.include_crds).map(|m| m.object.clone());
    let printed = if spec.skip_hooks { rendered.manifest_text.clone() } else { rendered.to_helm_template() };
    let mut documents = Vec::new();
    for doc in helm::release::split_manifests(&printed) {
        let object = helm::yaml_read::parse_yaml(doc)
            .map_err(|message| RenderError::Yaml { path: chart_dir.clone(), message })?;
        documents.push(object);
    }
    let mut out = Vec::new();
    for object in crds.chain(documents) {
        match object {
            Value::Object(map) => out.push(Resource::new(map, kfile.clone())),
            Value::Null => {}
            other => return Err(invalid(format!("helmCharts: chart '{}' rendered a non-object: {other}", spec.name))),
        }
    }
    Ok(out)
}

/// The chart's user values as kustomize hands them to `helm template`: `valuesFile` (default:
/// the chart's own values.yaml) combined with `valuesInline` per `valuesMerge` (`override`:
/// inline wins, the default; `merge`: the file wins; `replace`: inline only), then each of
/// `additionalValuesFiles`.
fn values(
    src: &dyn Source,
    dir: &Path,
    kfile: &Arc<PathBuf>,
    chart: &Path,
    spec: &HelmChart,
) -> Result<Map<String, Value>> {
    let load = |path: &Path| -> Result<Map<String, Value>> {
        let text = read_text(src, path, kfile)?;
        crate::app::parse_values(&path.to_string_lossy(), text.as_bytes())
    };
    let file = match &spec.values_file {
        Some(written) => load(&resolve(src, dir, written, kfile)?)?,
        None if src.kind(&chart.join("values.yaml"))?.is_some() => load(&chart.join("values.yaml"))?,
        None => Map::new(),
    };
    let mode = spec.values_merge.as_deref().unwrap_or("override");
    let mut values = match (&spec.values_inline, mode) {
        (None, "override" | "merge" | "replace") => file,
        (Some(inline), "override") => {
            let mut merged = file;
            helm::values::merge_maps(&mut merged, inline.clone());
            merged
        }
        (Some(inline), "merge") => {
            let mut merged = inline.clone();
            helm::values::merge_maps(&mut merged, file);
            merged
        }
        (Some(inline), "replace") => inline.clone(),
        (_, other) => {
            return Err(RenderError::InvalidKustomization {
                path: kfile.to_path_buf(),
                message: format!("helmCharts: valuesMerge '{other}' must be one of merge, override, replace"),
            });
        }
    };
    for written in &spec.additional_values_files {
        helm::values::merge_maps(&mut values, load(&resolve(src, dir, written, kfile)?)?);
    }
    Ok(values)
}

/// `.Capabilities` as `helm template --kube-version --api-versions` sets them.
fn capabilities(spec: &HelmChart) -> Capabilities {
    let mut caps = Capabilities::default();
    if let Some(version) = &spec.kube_version {
        caps.kube_version = if version.starts_with('v') { version.clone() } else { format!("v{version}") };
    }
    caps.api_versions.extend(spec.api_versions.iter().cloned());
    caps
}

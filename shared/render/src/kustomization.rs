//! The `kustomization.yaml` schema (Kustomization v1beta1 and Component v1alpha1), read
//! like kustomize's decoder: YAML 1.1 scalars, field names in any letter case, unknown
//! fields and an empty kustomization are errors.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{RenderError, Result};

/// File names kustomize accepts for a kustomization, in its lookup order.
pub(crate) const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// A parsed kustomization or component.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Kustomization {
    #[allow(dead_code)] // accepted so strict parsing does not reject it
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[allow(dead_code)] // accepted so strict parsing does not reject it
    pub metadata: Option<Value>,
    pub resources: Option<Vec<String>>,
    pub bases: Option<Vec<String>>,
    pub components: Option<Vec<String>>,
    pub namespace: Option<String>,
    pub name_prefix: Option<String>,
    pub name_suffix: Option<String>,
    pub common_labels: Option<Map<String, Value>>,
    pub labels: Option<Vec<LabelSpec>>,
    pub common_annotations: Option<Map<String, Value>>,
    pub images: Option<Vec<ImageSpec>>,
    pub replicas: Option<Vec<ReplicaSpec>>,
    pub patches: Option<Vec<PatchSpec>>,
    pub patches_strategic_merge: Option<Vec<String>>,
    pub patches_json6902: Option<Vec<PatchSpec>>,
    pub config_map_generator: Option<Vec<GeneratorSpec>>,
    pub secret_generator: Option<Vec<GeneratorSpec>>,
    pub generator_options: Option<GeneratorOptions>,
    pub sort_options: Option<SortOptions>,
    pub build_metadata: Option<Vec<String>>,
    pub vars: Option<Vec<VarSpec>>,
    pub replacements: Option<Vec<ReplacementEntry>>,
    pub generators: Option<Vec<String>>,
    pub transformers: Option<Vec<String>>,
    pub configurations: Option<Vec<String>>,
    pub openapi: Option<Value>,
    pub crds: Option<Vec<String>>,
    // Recognised kustomize fields Convoy does not implement: present means an error.
    pub validators: Option<Value>,
    pub helm_charts: Option<Value>,
    pub helm_globals: Option<Value>,
    pub helm_chart_inflation_generator: Option<Value>,
    pub images_from: Option<Value>,
}

/// One entry of `vars:` (deprecated in kustomize, still common).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct VarSpec {
    pub name: String,
    pub objref: VarObjRef,
    pub fieldref: Option<VarFieldRef>,
}

/// The object a var reads.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct VarObjRef {
    pub api_version: Option<String>,
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// The field a var reads (default `metadata.name`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct VarFieldRef {
    pub fieldpath: Option<String>,
}

/// One entry of `replacements:`: inline, or a file holding replacements.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementEntry {
    pub path: Option<String>,
    pub source: Option<ReplacementSource>,
    pub targets: Option<Vec<ReplacementTarget>>,
}

/// Where a replacement reads its value.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementSource {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub field_path: Option<String>,
    pub options: Option<FieldOptions>,
}

/// Where a replacement writes.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplacementTarget {
    pub select: Option<Selector>,
    pub reject: Option<Vec<Selector>>,
    pub field_paths: Option<Vec<String>>,
    pub options: Option<FieldOptions>,
}

/// `options:` of a replacement source or target.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FieldOptions {
    pub delimiter: Option<String>,
    #[serde(default)]
    pub index: i64,
    #[serde(default)]
    pub create: bool,
}

/// One entry of `labels:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LabelSpec {
    pub pairs: Option<Map<String, Value>>,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
    pub fields: Option<Value>,
}

/// One entry of `images:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ImageSpec {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
    pub tag_suffix: Option<String>,
}

/// One entry of `replicas:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ReplicaSpec {
    pub name: String,
    pub count: i64,
}

/// One entry of `patches:` or `patchesJson6902:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PatchSpec {
    pub path: Option<String>,
    pub patch: Option<String>,
    pub target: Option<Selector>,
    pub options: Option<PatchOptions>,
}

/// `options:` of a patch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PatchOptions {
    #[serde(default)]
    pub allow_name_change: bool,
    #[serde(default)]
    pub allow_kind_change: bool,
}

/// A patch target.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Selector {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub annotation_selector: Option<String>,
}

/// One entry of `configMapGenerator:` or `secretGenerator:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct GeneratorSpec {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub behavior: Option<String>,
    pub literals: Option<Vec<String>>,
    pub files: Option<Vec<String>>,
    pub envs: Option<Vec<String>>,
    pub env: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub options: Option<GeneratorOptions>,
}

/// `generatorOptions:` or a generator's `options:`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct GeneratorOptions {
    pub labels: Option<Map<String, Value>>,
    pub annotations: Option<Map<String, Value>>,
    pub disable_name_suffix_hash: Option<bool>,
    pub immutable: Option<bool>,
}

/// `sortOptions:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SortOptions {
    pub order: Option<String>,
    pub legacy_sort_options: Option<LegacySortOptions>,
}

/// `sortOptions.legacySortOptions`: kinds to put first and last.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LegacySortOptions {
    #[serde(default)]
    pub order_first: Vec<String>,
    #[serde(default)]
    pub order_last: Vec<String>,
}

impl Kustomization {
    /// Parses a kustomization file; `component` says whether a Component is expected.
    pub fn parse(path: &Path, text: &str, cache: &super::yaml::DocCache) -> Result<Kustomization> {
        let value = super::yaml::parse_one(path, text, cache, super::yaml::Schema::Config)?;
        let empty = match &value {
            Value::Null => true,
            Value::Object(m) => m.keys().all(|k| k == "apiVersion" || k == "kind"),
            _ => false,
        };
        if empty {
            return Err(RenderError::InvalidKustomization {
                path: path.to_path_buf(),
                message: "kustomization.yaml is empty; list resources or remove the directory".into(),
            });
        }
        let k: Kustomization = super::gojson::from_value(value)
            .map_err(|e| RenderError::InvalidKustomization { path: path.to_path_buf(), message: e.to_string() })?;
        let unsupported = [
            ("validators", k.validators.is_some()),
            ("helmChartInflationGenerator", k.helm_chart_inflation_generator.is_some()),
            ("imagesFrom", k.images_from.is_some()),
        ];
        if let Some((feature, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(RenderError::Unsupported { path: path.to_path_buf(), feature: (*feature).to_string() });
        }
        // kustomize reads these as string maps: `version: 2` is an error, not "2".
        let mut maps: Vec<(&str, &Map<String, Value>)> = Vec::new();
        maps.extend(k.common_labels.iter().map(|m| ("commonLabels", m)));
        maps.extend(k.common_annotations.iter().map(|m| ("commonAnnotations", m)));
        for l in k.labels.iter().flatten() {
            maps.extend(l.pairs.iter().map(|m| ("labels.pairs", m)));
        }
        let gens = k.config_map_generator.iter().flatten();
        let gens = gens.chain(k.secret_generator.iter().flatten());
        let opts = gens.filter_map(|g| g.options.as_ref()).chain(k.generator_options.as_ref());
        for o in opts {
            maps.extend(o.labels.iter().map(|m| ("options.labels", m)));
            maps.extend(o.annotations.iter().map(|m| ("options.annotations", m)));
        }
        for (field, m) in maps {
            if let Some((key, _)) = m.iter().find(|(_, v)| !v.is_string()) {
                return Err(RenderError::InvalidKustomization {
                    path: path.to_path_buf(),
                    message: format!("{field}: the value of '{key}' must be a string; quote it"),
                });
            }
        }
        Ok(k)
    }

    /// Whether this is a `kind: Component`.
    pub fn is_component(&self) -> bool {
        self.kind.as_deref() == Some("Component")
    }
}

/// A scalar from YAML as the string kustomize would see.
pub(crate) fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

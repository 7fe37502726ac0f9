//! The kustomize build pipeline: accumulate resources (files, nested kustomizations,
//! components), merge `configurations:`/`crds:` field specs, run generators (builtin and
//! `generators:` plugin configs), then transformers in kustomize's order (patches,
//! namespace, prefix/suffix, labels, annotations, JSON patches, replicas, images,
//! `replacements:`, `transformers:` plugin configs) and declare `vars:`. At the top: hash
//! suffixes, name references, var substitution, build metadata, and the output order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::accumulate::{append, append_replace_or_merge};
use super::config::TransformerConfig;
use super::kustomization::{FILE_NAMES, Kustomization, VarSpec};
use super::merge::OpenApi;
use super::patch::{self, Target};
use super::plugins::BuildInputs as _;
use super::resource::{self, Resource, Transformation};
use super::source::{self, EntryKind, Source};
use super::transform::{self, ImageRule, LabelScope};
use super::yaml::DocCache;
use super::{RenderError, Result, config, generate, nameref, plugins, replace, vars};

pub(crate) struct Engine<'a> {
    pub src: &'a dyn Source,
    pub cache: &'a DocCache,
    stack: Vec<PathBuf>,
    /// The custom schema of the last `openapi:` seen; like kustomize's global schema it
    /// applies to every later strategic merge of the build.
    pub openapi: Option<Arc<OpenApi>>,
    /// Whether to record the transformers that run over each object (the top kustomization
    /// asks for `buildMetadata: [transformerAnnotations]`).
    record_transformations: bool,
}

impl Engine<'_> {
    /// Notes that the builtin transformer `kind`, configured in `kfile`, ran over `acc`.
    fn ran(&self, acc: &mut [Resource], kfile: &Arc<PathBuf>, kind: &str) {
        self.ran_named(acc, kfile, kind, None);
    }

    fn ran_named(&self, acc: &mut [Resource], file: &Arc<PathBuf>, kind: &str, name: Option<&str>) {
        if self.record_transformations {
            let t = Transformation { file: file.clone(), kind: kind.to_string(), name: name.map(str::to_string) };
            for r in acc.iter_mut() {
                r.transformations.push(t.clone());
            }
        }
    }
}

/// What flows up from a kustomization besides its objects: transformer configurations
/// and vars (kustomize's accumulator).
#[derive(Default)]
pub(crate) struct Scope {
    pub config: TransformerConfig,
    pub vars: Vec<VarSpec>,
}

/// Renders the kustomization in the repository-relative directory `dir`.
/// The one OpenAPI schema version kustomize has built in (`openapi: {version: …}`).
const BUILTIN_OPENAPI_VERSION: &str = "v1.21.2";

/// The annotation kustomize reads as "used in the build, left out of its output".
const LOCAL_CONFIG: &str = "config.kubernetes.io/local-config";

pub(crate) fn render(src: &dyn Source, cache: &DocCache, dir: &Path) -> Result<Vec<Value>> {
    let mut eng = Engine { src, cache, stack: Vec::new(), openapi: None, record_transformations: false };
    match src.kind(dir)? {
        Some(EntryKind::Dir) => {}
        _ => {
            return Err(RenderError::Missing { path: dir.to_path_buf(), from: PathBuf::from(".") });
        }
    }
    let real = src.real_path(dir)?;
    let dir = real.as_path();
    let (kfile, k) = eng.load_kustomization(dir)?;
    eng.record_transformations = k.build_metadata.iter().flatten().any(|o| o == "transformerAnnotations");
    let mut acc = Vec::new();
    let mut scope = Scope::default();
    eng.accumulate(dir, &kfile, &k, &mut acc, &mut scope)?;
    for r in acc.iter_mut().filter(|r| r.needs_hash) {
        r.store_prev();
        let hash = generate::name_hash(&r.obj);
        let name = format!("{}-{hash}", r.name());
        r.set_name(&name);
    }
    nameref::fix_references(&mut acc, &scope.config.name_reference)?;
    if !scope.vars.is_empty() {
        let mut specs = config::default_var_reference();
        specs.extend(scope.config.var_reference.iter().cloned());
        vars::resolve(&kfile, &mut acc, &scope.vars, &specs)?;
    }
    apply_build_metadata(&k, dir, &kfile, &mut acc)?;
    // Objects marked local config take part in the build (name references, vars) but are
    // not part of its output.
    acc.retain(|r| {
        r.obj.get("metadata").and_then(|m| m.get("annotations")).and_then(|a| a.get(LOCAL_CONFIG))
            != Some(&Value::String("true".into()))
    });
    for r in acc.iter_mut() {
        stringify_annotations(r);
    }
    let fifo = k.sort_options.as_ref().and_then(|s| s.order.as_deref()).is_some_and(|o| o == "fifo");
    if !fifo {
        let custom = k.sort_options.as_ref().and_then(|s| s.legacy_sort_options.as_ref());
        match custom {
            Some(l) => resource::legacy_sort_with(&mut acc, Some((&l.order_first, &l.order_last))),
            None => resource::legacy_sort(&mut acc),
        }
    }
    Ok(acc.into_iter().map(|r| Value::Object(r.obj)).collect())
}

/// `buildMetadata:` of the top kustomization (kustomize ignores it in bases):
/// `managedByLabel`, `originAnnotations` and `transformerAnnotations` (every builtin
/// transformer that ran over an object, whether or not it changed it, in the order run).
fn apply_build_metadata(k: &Kustomization, dir: &Path, kfile: &Path, acc: &mut [Resource]) -> Result<()> {
    for opt in k.build_metadata.iter().flatten() {
        match opt.as_str() {
            "managedByLabel" => {
                for r in acc.iter_mut() {
                    let labels = r.metadata_mut().entry("labels").or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(l) = labels {
                        l.insert("app.kubernetes.io/managed-by".into(), Value::String(MANAGED_BY.into()));
                    }
                }
            }
            "originAnnotations" => {
                for r in acc.iter_mut() {
                    let origin = match r.generator {
                        Some(kind) => format!(
                            "configuredIn: {}\nconfiguredBy:\n  apiVersion: builtin\n  kind: {kind}\n{}",
                            relative_to(dir, &r.file),
                            r.generator_name.as_ref().map(|n| format!("  name: {n}\n")).unwrap_or_default()
                        ),
                        None => format!("path: {}\n", relative_to(dir, &r.file)),
                    };
                    let annotations =
                        r.metadata_mut().entry("annotations").or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(a) = annotations {
                        a.insert("config.kubernetes.io/origin".into(), Value::String(origin));
                    }
                }
            }
            "transformerAnnotations" => {
                for r in acc.iter_mut().filter(|r| !r.transformations.is_empty()) {
                    let text: String = r
                        .transformations
                        .iter()
                        .map(|t| {
                            format!(
                                "- configuredIn: {}\n  configuredBy:\n    apiVersion: builtin\n    kind: {}\n{}",
                                relative_to(dir, &t.file),
                                t.kind,
                                t.name.as_ref().map(|n| format!("    name: {n}\n")).unwrap_or_default()
                            )
                        })
                        .collect();
                    let annotations =
                        r.metadata_mut().entry("annotations").or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(a) = annotations {
                        a.insert("alpha.config.kubernetes.io/transformations".into(), Value::String(text));
                    }
                }
            }
            other => {
                return Err(RenderError::Unsupported {
                    path: kfile.to_path_buf(),
                    feature: format!("buildMetadata: {other}"),
                });
            }
        }
    }
    Ok(())
}

/// The `app.kubernetes.io/managed-by` value `buildMetadata: [managedByLabel]` sets: the
/// kustomize release whose output Convoy reproduces.
const MANAGED_BY: &str = "kustomize-v5.8.1";

/// `file` relative to the directory `dir` (both repository-relative), with `..` steps.
fn relative_to(dir: &Path, file: &Path) -> String {
    let d: Vec<_> = dir.components().collect();
    let f: Vec<_> = file.components().collect();
    let common = d.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); d.len() - common];
    parts.extend(f[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    parts.join("/")
}

/// Annotations as kustomize prints them: kustomize writes them back as a string map at the
/// end of a build, so every value comes out a string (`null` as `"null"`); an empty or null
/// `metadata.annotations` left out (kustomize clears its internal annotations at the end of
/// a build and drops the map when nothing is left; `labels: null` it keeps).
fn stringify_annotations(r: &mut Resource) {
    let Some(Value::Object(md)) = r.obj.get_mut("metadata") else { return };
    if md.get("annotations").is_some_and(|a| a.is_null() || a.as_object().is_some_and(|m| m.is_empty())) {
        md.remove("annotations");
        return;
    }
    let Some(Value::Object(a)) = md.get_mut("annotations") else { return };
    for v in a.values_mut() {
        let text = match &*v {
            Value::String(_) => continue,
            Value::Null => "null".to_string(),
            Value::Number(n) => super::yaml::number_text(n),
            other => other.to_string(),
        };
        *v = Value::String(text);
    }
}

fn looks_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.starts_with("github.com/")
        || entry.starts_with("gitlab.com/")
        || entry.starts_with("bitbucket.org/")
        || entry.contains("?ref=")
        || entry.contains(".git//")
}

impl plugins::BuildInputs for Engine<'_> {
    fn source(&self) -> &dyn Source {
        self.src
    }

    fn cache(&self) -> &DocCache {
        self.cache
    }

    fn openapi(&self) -> Option<&OpenApi> {
        self.openapi.as_deref()
    }

    fn read_docs(
        &self,
        dir: &Path,
        kfile: &Path,
        entry: &str,
        schema: super::yaml::Schema,
    ) -> Result<(PathBuf, Arc<Vec<Value>>)> {
        let file = source::normalize(dir, entry)
            .ok_or_else(|| RenderError::PathEscape { path: entry.to_string(), from: kfile.to_path_buf() })?;
        source::check_within(self.src, dir, &file, entry, kfile)?;
        if self.src.kind(&file)? != Some(EntryKind::File) {
            return Err(RenderError::Missing { path: file, from: kfile.to_path_buf() });
        }
        let text = String::from_utf8(self.src.read(&file)?)
            .map_err(|_| RenderError::invalid(&file, "file is not valid UTF-8"))?;
        let docs = self.cache.parse_as(&file, &text, schema)?;
        Ok((file, docs))
    }
}

impl Engine<'_> {
    fn load_kustomization(&self, dir: &Path) -> Result<(Arc<PathBuf>, Kustomization)> {
        let mut found = Vec::new();
        for name in FILE_NAMES {
            let p = dir.join(name);
            if self.src.kind(&p)? == Some(EntryKind::File) {
                found.push(p);
            }
        }
        let file = match found.len() {
            0 => {
                return Err(RenderError::NoKustomization { dir: dir.to_path_buf() });
            }
            1 => found.remove(0),
            _ => {
                return Err(RenderError::MultipleKustomizations { dir: dir.to_path_buf() });
            }
        };
        let bytes = self.src.read(&file)?;
        let text =
            String::from_utf8(bytes).map_err(|_| RenderError::invalid(&file, "kustomization is not valid UTF-8"))?;
        let k = Kustomization::parse(&file, &text, self.cache)?;
        Ok((Arc::new(file), k))
    }

    fn resolve(&self, dir: &Path, entry: &str, kfile: &Path) -> Result<(PathBuf, EntryKind)> {
        let local = source::normalize(dir, entry);
        let kind = match &local {
            Some(p) => self.src.kind(p)?,
            None => None,
        };
        match (local, kind) {
            (Some(p), Some(k)) => {
                if k == EntryKind::File {
                    source::check_within(self.src, dir, &p, entry, kfile)?;
                }
                Ok((p, k))
            }
            _ if looks_remote(entry) => Err(RenderError::Remote { path: kfile.to_path_buf(), url: entry.to_string() }),
            (None, _) => Err(RenderError::PathEscape { path: entry.to_string(), from: kfile.to_path_buf() }),
            (Some(p), None) => Err(RenderError::Missing { path: p, from: kfile.to_path_buf() }),
        }
    }

    pub fn accumulate(
        &mut self,
        dir: &Path,
        kfile: &Arc<PathBuf>,
        k: &Kustomization,
        acc: &mut Vec<Resource>,
        scope: &mut Scope,
    ) -> Result<()> {
        if self.stack.iter().any(|d| d == dir) {
            let chain: Vec<String> =
                self.stack.iter().chain(std::iter::once(&dir.to_path_buf())).map(|d| d.display().to_string()).collect();
            return Err(RenderError::Cycle { path: kfile.to_path_buf(), chain: chain.join(" -> ") });
        }
        self.stack.push(dir.to_path_buf());
        let out = self.accumulate_inner(dir, kfile, k, acc, scope);
        self.stack.pop();
        out
    }

    fn accumulate_inner(
        &mut self,
        dir: &Path,
        kfile: &Arc<PathBuf>,
        k: &Kustomization,
        acc: &mut Vec<Resource>,
        scope: &mut Scope,
    ) -> Result<()> {
        if let Some(api) = &k.openapi {
            self.openapi = self.load_openapi(dir, kfile, api)?.map(Arc::new);
        }
        let entries = k.bases.iter().flatten().chain(k.resources.iter().flatten());
        for entry in entries {
            let (path, kind) = self.resolve(dir, entry, kfile)?;
            match kind {
                EntryKind::File => self.load_file(&path, acc)?,
                EntryKind::Dir => {
                    let path = self.src.real_path(&path)?;
                    let (sub_file, sub) = self.load_kustomization(&path)?;
                    if sub.is_component() {
                        return Err(RenderError::invalid(
                            kfile,
                            format!("'{entry}' is a Component; list it under 'components:', not 'resources:'"),
                        ));
                    }
                    let mut sub_acc = Vec::new();
                    let mut sub_scope = Scope::default();
                    self.accumulate(&path, &sub_file, &sub, &mut sub_acc, &mut sub_scope)?;
                    for r in sub_acc {
                        append(acc, r, kfile)?;
                    }
                    scope.config.merge(&sub_scope.config);
                    for v in &sub_scope.vars {
                        vars::add(kfile, &mut scope.vars, v)?;
                    }
                }
            }
        }
        for entry in k.configurations.iter().flatten() {
            let (file, docs) = self.read_docs(dir, kfile, entry, super::yaml::Schema::Config)?;
            for doc in docs.iter() {
                scope.config.merge(&TransformerConfig::parse(&file, doc)?);
            }
        }
        for entry in k.crds.iter().flatten() {
            let (_, docs) = self.read_docs(dir, kfile, entry, super::yaml::Schema::Config)?;
            for doc in docs.iter() {
                scope.config.merge(&config::config_from_crds(doc));
            }
        }
        self.run_generators(dir, kfile, k, acc)?;
        for entry in k.generators.iter().flatten() {
            for (file, cfg) in self.plugin_configs(dir, kfile, entry)? {
                plugins::generate(self, dir, &file, &cfg, acc)?;
            }
        }
        // Components run after this kustomization's generators, before its transformers.
        for entry in k.components.iter().flatten() {
            let (path, kind) = self.resolve(dir, entry, kfile)?;
            if kind != EntryKind::Dir {
                return Err(RenderError::invalid(
                    kfile,
                    format!("component '{entry}' must be a directory with a kustomization.yaml"),
                ));
            }
            let path = self.src.real_path(&path)?;
            let (comp_file, comp) = self.load_kustomization(&path)?;
            if !comp.is_component() {
                return Err(RenderError::invalid(
                    &comp_file,
                    "listed under 'components:' but is not 'kind: Component'; set kind: Component and apiVersion: kustomize.config.k8s.io/v1alpha1",
                ));
            }
            self.accumulate(&path, &comp_file, &comp, acc, scope)?;
        }
        self.run_transformers(dir, kfile, k, acc, scope)?;
        if let Some(vs) = &k.vars {
            vars::declare(kfile, acc, vs, &mut scope.vars)?;
        }
        Ok(())
    }

    /// The custom schema `openapi:` names, or `None` for kustomize's builtin one: no `path`
    /// and no `version`, or the one version kustomize has built in (Kubernetes 1.21.2's),
    /// which is the schema Convoy's merge follows already.
    fn load_openapi(&self, dir: &Path, kfile: &Path, api: &Value) -> Result<Option<OpenApi>> {
        let path = api.get("path").and_then(Value::as_str).filter(|p| !p.is_empty());
        let Some(path) = path else {
            return match api.get("version").and_then(Value::as_str).filter(|v| !v.is_empty()) {
                None | Some(BUILTIN_OPENAPI_VERSION) => Ok(None),
                Some(other) => Err(RenderError::invalid(
                    kfile,
                    format!(
                        "openapi: version '{other}' is not built in (kustomize has {BUILTIN_OPENAPI_VERSION} only); remove it or give a schema file with 'path'"
                    ),
                )),
            };
        };
        let (file, docs) = self.read_docs(dir, kfile, path, super::yaml::Schema::Resource)?;
        match docs.first() {
            Some(doc) => Ok(Some(OpenApi::new(doc))),
            None => Err(RenderError::invalid(&file, "openapi schema file is empty")),
        }
    }

    /// The plugin configuration objects a `transformers:` or `generators:` entry gives:
    /// inline YAML, a file, or a kustomization directory whose output are the configs.
    fn plugin_configs(&mut self, dir: &Path, kfile: &Arc<PathBuf>, entry: &str) -> Result<Vec<(PathBuf, Value)>> {
        if entry.contains('\n') || entry.trim_start().starts_with('{') {
            let docs = self.cache.parse(kfile, entry)?;
            return Ok(docs.iter().map(|d| (kfile.to_path_buf(), d.clone())).collect());
        }
        let (path, kind) = self.resolve(dir, entry, kfile)?;
        match kind {
            EntryKind::File => {
                let (file, docs) = self.read_docs(dir, kfile, entry, super::yaml::Schema::Resource)?;
                Ok(docs.iter().map(|d| (file.clone(), d.clone())).collect())
            }
            EntryKind::Dir => {
                let path = self.src.real_path(&path)?;
                let (sub_file, sub) = self.load_kustomization(&path)?;
                let mut sub_acc = Vec::new();
                let mut sub_scope = Scope::default();
                self.accumulate(&path, &sub_file, &sub, &mut sub_acc, &mut sub_scope)?;
                Ok(sub_acc.into_iter().map(|r| (r.file.to_path_buf(), Value::Object(r.obj))).collect())
            }
        }
    }

    fn load_file(&self, path: &Path, acc: &mut Vec<Resource>) -> Result<()> {
        let bytes = self.src.read(path)?;
        let text =
            String::from_utf8(bytes).map_err(|_| RenderError::invalid(path, "resource file is not valid UTF-8"))?;
        let file = Arc::new(path.to_path_buf());
        let docs = self.cache.parse(path, &text)?;
        for doc in docs.iter() {
            let Value::Object(obj) = doc.clone() else {
                return Err(RenderError::invalid(path, "a resource document must be a YAML mapping"));
            };
            let is_list = obj.get("kind").and_then(Value::as_str) == Some("List")
                || (obj.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
                    && obj.get("items").is_some_and(Value::is_array));
            if is_list {
                let items = obj.get("items").and_then(Value::as_array).cloned();
                for item in items.into_iter().flatten() {
                    let Value::Object(o) = item else {
                        return Err(RenderError::invalid(path, "List items must be mappings"));
                    };
                    self.add_object(o, &file, acc)?;
                }
            } else {
                self.add_object(obj, &file, acc)?;
            }
        }
        Ok(())
    }

    fn add_object(
        &self,
        obj: serde_json::Map<String, Value>,
        file: &Arc<PathBuf>,
        acc: &mut Vec<Resource>,
    ) -> Result<()> {
        let r = Resource::new(obj, file.clone());
        if r.kind().is_empty() {
            return Err(RenderError::invalid(
                file,
                "a resource is missing 'kind'; every document needs apiVersion, kind and metadata.name",
            ));
        }
        if r.name().is_empty() {
            return Err(RenderError::invalid(
                file,
                format!(
                    "a {} is missing 'metadata.name'; every document needs apiVersion, kind and metadata.name",
                    r.kind()
                ),
            ));
        }
        append(acc, r, file)
    }

    fn run_generators(
        &self,
        dir: &Path,
        kfile: &Arc<PathBuf>,
        k: &Kustomization,
        acc: &mut Vec<Resource>,
    ) -> Result<()> {
        let gens = k
            .config_map_generator
            .iter()
            .flatten()
            .map(|g| (g, false))
            .chain(k.secret_generator.iter().flatten().map(|g| (g, true)));
        for (spec, secret) in gens {
            let r = generate::generate(self.src, dir, kfile, spec, secret, k.generator_options.as_ref())?;
            append_replace_or_merge(acc, r, kfile)?;
        }
        if let Some(charts) = &k.helm_charts {
            for r in crate::helmcharts::inflate(self.src, dir, kfile, charts, k.helm_globals.as_ref())? {
                append(acc, r, kfile)?;
            }
        }
        Ok(())
    }

    fn run_transformers(
        &mut self,
        dir: &Path,
        kfile: &Arc<PathBuf>,
        k: &Kustomization,
        acc: &mut Vec<Resource>,
        scope: &Scope,
    ) -> Result<()> {
        let cfg = &scope.config;
        for entry in k.patches_strategic_merge.iter().flatten() {
            let inline = entry.contains('\n') || entry.trim_start().starts_with('{');
            let loaded = if inline {
                patch::load(self.src, self.cache, dir, kfile, None, Some(entry), true)?
            } else {
                patch::load(self.src, self.cache, dir, kfile, Some(entry), None, true)?
            };
            patch::apply(acc, &loaded, None, None, self.openapi.as_deref())?;
            self.ran(acc, kfile, "PatchStrategicMergeTransformer");
        }
        for p in k.patches.iter().flatten() {
            let loaded = patch::load(self.src, self.cache, dir, kfile, p.path.as_deref(), p.patch.as_deref(), false)?;
            let target = p.target.as_ref().map(|t| Target::compile(kfile, t)).transpose()?;
            patch::apply(acc, &loaded, target.as_ref(), p.options.as_ref(), self.openapi.as_deref())?;
            self.ran(acc, kfile, "PatchTransformer");
        }
        if let Some(ns) = k.namespace.as_deref().filter(|n| !n.is_empty()) {
            transform::set_namespace(acc, ns, kfile)?;
            transform::set_string_at(acc, &cfg.namespace, ns);
            self.ran(acc, kfile, "NamespaceTransformer");
        }
        if let Some(prefix) = k.name_prefix.as_deref().filter(|p| !p.is_empty()) {
            transform::add_prefix(acc, prefix);
            transform::affix_at(acc, &cfg.name_prefix, prefix, "");
            self.ran(acc, kfile, "PrefixTransformer");
        }
        if let Some(suffix) = k.name_suffix.as_deref().filter(|p| !p.is_empty()) {
            transform::add_suffix(acc, suffix);
            transform::affix_at(acc, &cfg.name_suffix, "", suffix);
            self.ran(acc, kfile, "SuffixTransformer");
        }
        for l in k.labels.iter().flatten() {
            if let Some(pairs) = &l.pairs {
                let scope = LabelScope { selectors: l.include_selectors, templates: l.include_templates };
                transform::add_labels(acc, pairs, &scope);
                if l.include_selectors {
                    transform::add_pairs_at(acc, &cfg.common_labels, pairs);
                } else if l.include_templates {
                    transform::add_pairs_at(acc, &cfg.template_labels, pairs);
                }
                let fields = config::FieldSpec::parse_list(kfile, l.fields.as_ref())?;
                transform::add_pairs_at(acc, &fields, pairs);
                self.ran(acc, kfile, "LabelTransformer");
            }
        }
        if let Some(pairs) = &k.common_labels {
            let scope = LabelScope { selectors: true, templates: true };
            transform::add_labels(acc, pairs, &scope);
            transform::add_pairs_at(acc, &cfg.common_labels, pairs);
            self.ran(acc, kfile, "LabelTransformer");
        }
        if let Some(pairs) = &k.common_annotations {
            transform::add_annotations(acc, pairs);
            transform::add_pairs_at(acc, &cfg.common_annotations, pairs);
            self.ran(acc, kfile, "AnnotationsTransformer");
        }
        for p in k.patches_json6902.iter().flatten() {
            let Some(t) = &p.target else {
                return Err(RenderError::invalid(kfile, "a patchesJson6902 entry needs a target"));
            };
            let loaded = patch::load(self.src, self.cache, dir, kfile, p.path.as_deref(), p.patch.as_deref(), false)?;
            let target = Target::compile(kfile, t)?;
            patch::apply(acc, &loaded, Some(&target), p.options.as_ref(), self.openapi.as_deref())?;
            self.ran(acc, kfile, "PatchJson6902Transformer");
        }
        if let Some(replicas) = k.replicas.as_ref().filter(|r| !r.is_empty()) {
            transform::set_replicas(acc, replicas, &cfg.replicas, kfile)?;
            for _ in replicas {
                self.ran(acc, kfile, "ReplicaCountTransformer");
            }
        }
        if let Some(images) = k.images.as_ref().filter(|i| !i.is_empty()) {
            let rules: Vec<ImageRule> =
                images.iter().map(|i| ImageRule::new(i, kfile, self.cache)).collect::<Result<_>>()?;
            let mut specs = transform::default_image_specs();
            specs.extend(cfg.images.iter().cloned());
            transform::transform_images(acc, &rules, &specs, true);
            for _ in &rules {
                self.ran(acc, kfile, "ImageTagTransformer");
            }
        }
        if let Some(entries) = k.replacements.as_ref().filter(|r| !r.is_empty()) {
            let reps = replace::compile(kfile, entries, |p| {
                let (file, docs) = self.read_docs(dir, kfile, p, super::yaml::Schema::Resource)?;
                Ok((file, docs.to_vec()))
            })?;
            replace::apply(kfile, acc, &reps)?;
            self.ran(acc, kfile, "ReplacementTransformer");
        }
        for entry in k.transformers.iter().flatten() {
            for (file, cfg) in self.plugin_configs(dir, kfile, entry)? {
                plugins::transform(self, dir, &file, &cfg, acc)?;
                let kind = cfg.get("kind").and_then(Value::as_str).unwrap_or("");
                let name = cfg.pointer("/metadata/name").and_then(Value::as_str);
                self.ran_named(acc, &Arc::new(file.clone()), kind, name);
            }
        }
        Ok(())
    }
}

//! Rendering a release: values (dependencies, coalescing, schema), the template set of the
//! chart and its subcharts, each template executed like Helm's engine, then the output split
//! into documents, hooks separated from manifests, and manifests put in Helm's install order.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use convoy_model::generated;

use super::HelmError;
use super::chart::Chart;
use super::objects::{Capabilities, Object};
use super::template::exec::Exec;
use super::template::parse::TemplateSet;
use super::value::Value;

/// What the release is called and where it goes, and what the target cluster offers.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// `.Release.Name`.
    pub name: String,
    /// `.Release.Namespace`.
    pub namespace: String,
    /// `.Release.Revision` (1 for an install).
    pub revision: i64,
    /// `.Release.IsInstall` (`.Release.IsUpgrade` is its opposite).
    pub is_install: bool,
    /// `.Capabilities`.
    pub capabilities: Arc<Capabilities>,
}

impl ReleaseOptions {
    /// An install of `name` into `namespace` with Helm's default capabilities.
    pub fn new(name: &str, namespace: &str) -> Self {
        ReleaseOptions {
            name: name.into(),
            namespace: namespace.into(),
            revision: 1,
            is_install: true,
            capabilities: Capabilities::shared_default(),
        }
    }
}

/// One rendered object and the template it came from.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Template path (`chart/templates/deployment.yaml`).
    pub source: String,
    /// The object.
    pub object: Json,
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPhase {
    /// `pre-install`
    PreInstall,
    /// `post-install`
    PostInstall,
    /// `pre-upgrade`
    PreUpgrade,
    /// `post-upgrade`
    PostUpgrade,
    /// `pre-delete`
    PreDelete,
    /// `post-delete`
    PostDelete,
    /// `pre-rollback`
    PreRollback,
    /// `post-rollback`
    PostRollback,
}

impl HookPhase {
    fn parse(s: &str) -> Option<HookPhase> {
        Some(match s {
            "pre-install" => HookPhase::PreInstall,
            "post-install" => HookPhase::PostInstall,
            "pre-upgrade" => HookPhase::PreUpgrade,
            "post-upgrade" => HookPhase::PostUpgrade,
            "pre-delete" => HookPhase::PreDelete,
            "post-delete" => HookPhase::PostDelete,
            "pre-rollback" => HookPhase::PreRollback,
            "post-rollback" => HookPhase::PostRollback,
            _ => return None,
        })
    }
}

/// A hook object.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Template path.
    pub source: String,
    /// `helm.sh/hook-weight` (0 when absent or not a number).
    pub weight: i64,
    /// Phases it runs in.
    pub phases: Vec<HookPhase>,
    /// `helm.sh/hook-delete-policy` entries.
    pub delete_policies: Vec<String>,
    /// The object.
    pub object: Json,
}

/// A rendered release.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// `crds/` objects of the chart and its enabled subcharts (apply first).
    pub crds: Vec<Manifest>,
    /// Hooks (test hooks left out), in Helm's execution order: weight, then name.
    pub hooks: Vec<Hook>,
    /// Everything else, in Helm's install order.
    pub manifests: Vec<Manifest>,
    /// The chart's `NOTES.txt`, rendered.
    pub notes: Option<String>,
    /// Each template's raw output, as Helm's engine returns it (partials left out).
    pub files: BTreeMap<String, String>,
    /// The release manifest as Helm records it: each manifest document after a `# Source:`
    /// line, in install order (hooks and CRDs not included).
    pub manifest_text: String,
    /// The hooks as `helm template` prints them after the manifests, in Helm's kind order.
    hooks_text: String,
}

impl Rendered {
    /// Hooks of one phase, in execution order.
    pub fn hooks_for(&self, phase: HookPhase) -> Vec<&Hook> {
        self.hooks.iter().filter(|h| h.phases.contains(&phase)).collect()
    }

    /// What `helm template --skip-tests` prints: each manifest document as rendered, in
    /// install order, then the hooks, each after a `# Source:` line.
    pub fn to_helm_template(&self) -> String {
        format!("{}\n{}", self.manifest_text.trim(), self.hooks_text)
    }
}

/// Renders `chart` with user `values` (`-f`/`--set` already merged, later wins).
pub fn render(chart: &Chart, values: &Json, opts: &ReleaseOptions) -> Result<Rendered, HelmError> {
    // Helm refuses to install a chart whose kubeVersion the cluster does not satisfy.
    if let Some(want) = chart.metadata.get("kubeVersion").and_then(Json::as_str).filter(|k| !k.is_empty()) {
        let have = &opts.capabilities.kube_version;
        if !super::semver::compare(want, have).unwrap_or(false) {
            return Err(HelmError::Load {
                chart: chart.path.clone(),
                message: format!("chart requires kubeVersion: {want} which is incompatible with Kubernetes {have}"),
            });
        }
    }
    // Helm's install checks every declared dependency is vendored before conditions and tags
    // disable any: a disabled but missing dependency is an error too.
    check_dependencies_present(chart)?;
    let RenderedFiles { files, chart, generated } = render_files_inner(chart, values, opts)?;
    let mut rendered = Rendered::default();
    let notes_name = format!("{}/templates/NOTES.txt", chart.name());
    let mut sorted: Vec<(&String, &String)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    // (kind order, kind, source, text, parsed) for what Helm prints and applies.
    let mut generic: Vec<(usize, String, Manifest, &str)> = Vec::new();
    let mut hooks: Vec<(usize, String, Hook, &str)> = Vec::new();
    for (path, content) in sorted {
        if path.ends_with("NOTES.txt") {
            if *path == notes_name {
                rendered.notes = Some(content.clone());
            }
            continue;
        }
        if content.trim().is_empty() {
            continue;
        }
        for doc in split_manifests(content) {
            let mut object = super::yaml_read::parse_yaml(doc).map_err(|e| HelmError::Manifest {
                template: path.clone(),
                message: format!("YAML parse error on {path}: {e}"),
            })?;
            if generated && generated::holds_tokens(&object) {
                mark_generated(&mut object);
            }
            let kind = object.get("kind").and_then(Json::as_str).unwrap_or("").to_string();
            let annotations = object.get("metadata").and_then(|m| m.get("annotations"));
            let hook = annotations.and_then(|a| a.get("helm.sh/hook")).and_then(Json::as_str);
            let order = kind_order(&kind);
            match hook {
                None => {
                    generic.push((order, kind, Manifest { source: path.clone(), object }, doc));
                }
                Some(h) => {
                    let events: Vec<&str> = h.split(',').map(str::trim).collect();
                    if events.iter().any(|e| *e == "test" || *e == "test-success") {
                        continue;
                    }
                    let phases: Vec<HookPhase> = events.iter().filter_map(|e| HookPhase::parse(e)).collect();
                    if phases.is_empty() {
                        continue;
                    }
                    let weight = annotations
                        .and_then(|a| a.get("helm.sh/hook-weight"))
                        .and_then(Json::as_str)
                        .and_then(|w| w.trim().parse::<i64>().ok())
                        .unwrap_or(0);
                    let delete_policies = annotations
                        .and_then(|a| a.get("helm.sh/hook-delete-policy"))
                        .and_then(Json::as_str)
                        .map(|p| p.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                        .unwrap_or_default();
                    hooks.push((
                        order,
                        kind,
                        Hook { source: path.clone(), weight, phases, delete_policies, object },
                        doc,
                    ));
                }
            }
        }
    }
    // Helm's stable sort by kind; kinds it does not know go last, alphabetically.
    let by_kind = |a: (usize, &str), b: (usize, &str)| {
        a.0.cmp(&b.0).then_with(|| if a.0 == INSTALL_ORDER.len() { a.1.cmp(b.1) } else { std::cmp::Ordering::Equal })
    };
    generic.sort_by(|a, b| by_kind((a.0, &a.1), (b.0, &b.1)));
    hooks.sort_by(|a, b| by_kind((a.0, &a.1), (b.0, &b.1)));
    let print = |out: &mut String, source: &str, text: &str| {
        for part in ["---\n# Source: ", source, "\n", text, "\n"] {
            out.push_str(part);
        }
    };
    for (_, _, m, text) in &generic {
        print(&mut rendered.manifest_text, &m.source, text);
    }
    for (_, _, h, text) in &hooks {
        print(&mut rendered.hooks_text, &h.source, text);
    }
    rendered.manifests = generic.into_iter().map(|(_, _, m, _)| m).filter(|m| !m.object.is_null()).collect();
    let mut hooks: Vec<Hook> = hooks.into_iter().map(|(_, _, h, _)| h).collect();
    hooks.sort_by(|a, b| a.weight.cmp(&b.weight).then_with(|| name_of(&a.object).cmp(name_of(&b.object))));
    rendered.hooks = hooks;
    rendered.crds = collect_crds(&chart)?;
    rendered.files = files;
    Ok(rendered)
}

fn name_of(o: &Json) -> &str {
    o.get("metadata").and_then(|m| m.get("name")).and_then(Json::as_str).unwrap_or("")
}

/// Helm's `InstallOrder`; kinds not listed go last, alphabetically.
pub const INSTALL_ORDER: &[&str] = &[
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn kind_order(kind: &str) -> usize {
    INSTALL_ORDER.iter().position(|k| *k == kind).unwrap_or(INSTALL_ORDER.len())
}

/// `releaseutil.SplitManifests`: documents separated by `---` lines, empty ones dropped.
/// Helm splits on the pattern `(?:^|\s*\n)---\s*`: a `---` at the start or after a newline,
/// with the whitespace before and after it. Helm v4 keeps each document's text as it is,
/// trailing newlines included; only the whitespace before the first document goes.
pub fn split_manifests(content: &str) -> Vec<&str> {
    let text = content.trim_start();
    let after_separator = |at: usize| at + 3 + (text[at + 3..].len() - text[at + 3..].trim_start().len());
    let mut docs = Vec::new();
    let mut start = if text.starts_with("---") { after_separator(0) } else { 0 };
    loop {
        let Some(newline) = memchr::memmem::find(&text.as_bytes()[start..], b"\n---").map(|at| start + at) else {
            docs.push(&text[start..]);
            break;
        };
        docs.push(text[start..newline].trim_end());
        start = after_separator(newline + 1);
    }
    docs.retain(|d| !d.trim().is_empty());
    docs
}

fn collect_crds(chart: &Chart) -> Result<Vec<Manifest>, HelmError> {
    let mut out = Vec::new();
    collect_crds_into(chart, chart.name(), &mut out)?;
    Ok(out)
}

fn collect_crds_into(chart: &Chart, prefix: &str, out: &mut Vec<Manifest>) -> Result<(), HelmError> {
    for (path, text) in chart.crds() {
        let source = format!("{prefix}/{path}");
        for doc in split_manifests(&text) {
            let object = super::yaml_read::parse_yaml(doc)
                .map_err(|e| HelmError::Manifest { template: source.clone(), message: e })?;
            if !object.is_null() {
                out.push(Manifest { source: source.clone(), object });
            }
        }
    }
    for sub in &chart.subcharts {
        collect_crds_into(sub, &format!("{prefix}/charts/{}", sub.name()), out)?;
    }
    Ok(())
}

/// Marks an object holding tokens for keys or certificates the agent makes
/// ([`convoy_model::generated`]).
fn mark_generated(object: &mut Json) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Json::as_object_mut) {
        let annotations = metadata.entry("annotations").or_insert_with(|| Json::Object(Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(generated::ANNOTATION.into(), Json::String("true".into()));
        }
    }
}

/// Renders every template like Helm's engine (`engine.Render`): template path → output,
/// partials left out, NOTES.txt and test hooks included.
pub fn render_files(
    chart: &Chart,
    values: &Json,
    opts: &ReleaseOptions,
) -> Result<BTreeMap<String, String>, HelmError> {
    render_files_inner(chart, values, opts).map(|rendered| rendered.files)
}

/// The values a release renders with: dependencies processed, coalesced, schema-checked.
pub fn final_values(chart: &Chart, values: &Json) -> Result<(Chart, Map<String, Json>), HelmError> {
    let user = match values {
        Json::Object(m) => m.clone(),
        Json::Null => Map::new(),
        _ => return Err(HelmError::Values { message: "values must be a mapping".into() }),
    };
    let mut chart = chart.clone();
    super::values::process_dependencies(&mut chart, &user);
    check_dependencies_present(&chart)?;
    let vals = Json::Object(super::values::coalesce_values(&chart, &user, false));
    let mut errors = String::new();
    super::schema::validate_chart(&chart, &vals, &mut errors);
    let Json::Object(vals) = vals else { unreachable!("coalesced values are a mapping") };
    if !errors.is_empty() {
        return Err(HelmError::Schema {
            message: format!(
                "values don't meet the specifications of the schema(s) in the following chart(s):\n{errors}"
            ),
        });
    }
    Ok((chart, vals))
}

fn check_dependencies_present(chart: &Chart) -> Result<(), HelmError> {
    let missing: Vec<String> = chart
        .dependencies
        .iter()
        .filter(|d| !chart.subcharts.iter().any(|s| s.name() == d.name))
        .map(|d| d.name.clone())
        .collect();
    if !missing.is_empty() {
        return Err(HelmError::Load {
            chart: chart.path.clone(),
            message: format!(
                "found in Chart.yaml, but missing in charts/ directory: {}; vendor the dependency (helm dependency build) into charts/",
                missing.join(", ")
            ),
        });
    }
    Ok(())
}

struct Renderable {
    text: Arc<str>,
    vals: Value,
    /// `.Template.BasePath`, one string for the chart's templates.
    base_path: Value,
    library: bool,
}

/// Every template's output, with what produced them.
struct RenderedFiles<'c> {
    /// Template path → output.
    files: BTreeMap<String, String>,
    /// The chart as rendered: a copy only when its dependencies were processed.
    chart: Cow<'c, Chart>,
    /// Whether any output holds tokens the agent generates.
    generated: bool,
}

fn render_files_inner<'c>(
    chart: &'c Chart,
    values: &Json,
    opts: &ReleaseOptions,
) -> Result<RenderedFiles<'c>, HelmError> {
    let (chart, root_values) = match super::values::template_values(chart, values) {
        Some(root_values) => (Cow::Borrowed(chart), root_values?),
        None => {
            let (chart, vals) = final_values(chart, values)?;
            (Cow::Owned(chart), Value::from_json(&Json::Object(vals)))
        }
    };
    let caps = Arc::clone(&opts.capabilities);
    let release = super::template::exec::map_of(vec![
        ("Name", Value::str(opts.name.as_str())),
        ("Namespace", Value::str(opts.namespace.as_str())),
        ("Revision", Value::Int(opts.revision)),
        ("IsInstall", Value::Bool(opts.is_install)),
        ("IsUpgrade", Value::Bool(!opts.is_install)),
        ("Service", Value::str("Helm")),
    ]);
    let top = Top { release, caps: Value::Obj(std::rc::Rc::new(Object::Capabilities(caps))) };
    let mut tpls: BTreeMap<String, Renderable> = BTreeMap::new();
    all_templates(&chart, &mut tpls, &top, Some(root_values), None, chart.name());
    // Parse in Helm's order: deeper paths first, then reverse lexical, so that the
    // definitions of higher-level charts win.
    // `tpls` iterates in lexical order: reversed, then a stable sort by depth.
    let mut keys: Vec<&String> = tpls.keys().rev().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.bytes().filter(|b| *b == b'/').count()));
    let mut set = TemplateSet::default();
    for k in &keys {
        let r = &tpls[*k];
        set.add_cached(k, &r.text, &super::funcs::is_func).map_err(|e| HelmError::Parse {
            template: e.name.clone(),
            line: e.line,
            message: e.message.clone(),
        })?;
    }
    let mut out = BTreeMap::new();
    let mut exec = Exec::new(&set);
    for k in keys {
        let r = &tpls[k];
        let base = k.rsplit('/').next().unwrap_or(k);
        if base.starts_with('_') || r.library {
            continue;
        }
        if let Value::Map(m) = &r.vals {
            let template = BTreeMap::from([
                ("BasePath".to_string(), r.base_path.clone()),
                ("Name".to_string(), Value::str(k.as_str())),
            ]);
            m.borrow_mut().insert("Template".into(), Value::watched_map(template));
        }
        exec.next_template();
        let text = exec.execute(k, r.vals.clone()).map_err(|e| HelmError::Render { error: Box::new(e) })?;
        let printed_nil = memchr::memmem::find(text.as_bytes(), b"<no value>").is_some();
        out.insert(k.clone(), if printed_nil { text.replace("<no value>", "") } else { text });
    }
    Ok(RenderedFiles { files: out, chart, generated: exec.generated() })
}

struct Top {
    release: Value,
    caps: Value,
}

/// Helm's `recAllTpls`: each chart's templates with its own top-level object.
fn all_templates(
    c: &Chart,
    tpls: &mut BTreeMap<String, Renderable>,
    top: &Top,
    root_values: Option<Value>,
    parent_values: Option<&Value>,
    full_path: &str,
) -> Value {
    let values = match root_values {
        Some(v) => v,
        None => match parent_values {
            Some(Value::Map(pm)) => match pm.borrow().get(c.name()) {
                Some(v @ Value::Map(_)) => v.clone(),
                _ => Value::map(BTreeMap::new()),
            },
            _ => Value::map(BTreeMap::new()),
        },
    };
    let subcharts = Value::map(BTreeMap::new());
    let next = super::template::exec::map_of(vec![
        ("Chart", chart_value(c, full_path == c.name())),
        ("Files", Value::Obj(std::rc::Rc::new(Object::Files(c.files.clone())))),
        ("Release", top.release.clone()),
        ("Capabilities", top.caps.clone()),
        ("Values", values.clone()),
        ("Subcharts", subcharts.clone()),
    ]);
    for sub in &c.subcharts {
        let child_path = format!("{full_path}/charts/{}", sub.name());
        let child = all_templates(sub, tpls, top, None, Some(&values), &child_path);
        if let Value::Map(m) = &subcharts {
            m.borrow_mut().insert(sub.name().to_string(), child);
        }
    }
    let library = c.is_library();
    let base_path = Value::str([full_path, "/templates"].concat());
    for (name, text) in &c.templates {
        let base = name.rsplit('/').next().unwrap_or(name);
        if library && !base.starts_with('_') {
            continue;
        }
        tpls.insert(
            [full_path, "/", name].concat(),
            Renderable { text: text.clone(), vals: next.clone(), base_path: base_path.clone(), library },
        );
    }
    next
}

fn s(v: Option<&Json>) -> Value {
    match v {
        Some(Json::String(x)) => Value::str(x.as_str()),
        Some(Json::Number(n)) => Value::str(n.to_string()),
        Some(Json::Bool(b)) => Value::str(b.to_string()),
        _ => Value::str(""),
    }
}

fn strings(v: Option<&Json>) -> Value {
    Value::list(v.and_then(Json::as_array).map(|a| a.iter().map(|x| s(Some(x))).collect()).unwrap_or_default())
}

/// `.Chart`: Helm v4 exposes the metadata as a map with Go field names.
fn chart_value(c: &Chart, is_root: bool) -> Value {
    let m = &c.metadata;
    let annotations: BTreeMap<String, Value> = m
        .get("annotations")
        .and_then(Json::as_object)
        .map(|a| a.iter().map(|(k, v)| (k.clone(), s(Some(v)))).collect())
        .unwrap_or_default();
    let maintainers: Vec<Value> = m
        .get("maintainers")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    super::template::exec::map_of(vec![
                        ("Name", s(x.get("name"))),
                        ("Email", s(x.get("email"))),
                        ("URL", s(x.get("url"))),
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    let deps: Vec<Value> = c
        .dependencies
        .iter()
        .map(|d| {
            super::template::exec::map_of(vec![
                ("Name", Value::str(d.name.as_str())),
                ("Version", Value::str(d.version.as_str())),
                ("Repository", Value::str(d.repository.as_str())),
                ("Condition", Value::str(d.condition.as_str())),
                ("Tags", Value::list(d.tags.iter().map(|t| Value::str(t.as_str())).collect())),
                ("Enabled", Value::Bool(d.enabled)),
                ("ImportValues", Value::list(d.import_values.iter().map(Value::from_json).collect())),
                ("Alias", Value::str(d.alias.as_str())),
            ])
        })
        .collect();
    super::template::exec::map_of(vec![
        ("APIVersion", s(m.get("apiVersion"))),
        ("Annotations", Value::map(annotations)),
        ("AppVersion", s(m.get("appVersion"))),
        ("Condition", s(m.get("condition"))),
        ("Dependencies", Value::list(deps)),
        ("Deprecated", Value::Bool(m.get("deprecated").and_then(Json::as_bool).unwrap_or(false))),
        ("Description", s(m.get("description"))),
        ("Home", s(m.get("home"))),
        ("Icon", s(m.get("icon"))),
        ("IsRoot", Value::Bool(is_root)),
        ("Keywords", strings(m.get("keywords"))),
        ("KubeVersion", s(m.get("kubeVersion"))),
        ("Maintainers", Value::list(maintainers)),
        ("Name", s(m.get("name"))),
        ("Sources", strings(m.get("sources"))),
        ("Tags", s(m.get("tags"))),
        ("Type", s(m.get("type"))),
        ("Version", s(m.get("version"))),
    ])
}

//! The fleet model users write (schema v1): `convoy.yaml` (environments in promotion order, each
//! a branch), `clusters/<name>.yaml` and `apps/<app>/app.yaml`. Parsing is strict: unknown fields
//! and bad values are errors that name the file (and the line, where YAML tells it).

use std::collections::BTreeMap;

use crate::access::{AccessSpec, Policy};
use crate::notifications::{self, CommitStatusSpec, NotificationsSpec};
use crate::windows::{WindowSpec, Windows};
use convoy_model::analysis::{AnalysisSpec, OnFailure};
use convoy_model::valid_name;
use convoy_model::{HealthRule, IgnoreRule, SyncPolicy};
use serde::Deserialize;

use std::path::Path;

use crate::helm::remote::Remote;
use crate::{EntryKind, Source};

const API_VERSION: &str = "convoy.dev/v1";

/// An error in one file of the fleet repository.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{file}: {message}")]
pub struct FleetError {
    pub file: String,
    pub message: String,
}

/// The bytes of the file at `path`, when it is a file.
pub fn file(src: &dyn Source, path: &str) -> Option<Vec<u8>> {
    let path = Path::new(path);
    match src.kind(path) {
        Ok(Some(EntryKind::File)) => src.read(path).ok(),
        _ => None,
    }
}

/// The entries of the directory at `path`, when it is a directory.
pub fn dir(src: &dyn Source, path: &str) -> Option<Vec<String>> {
    let path = Path::new(path);
    match src.kind(path) {
        Ok(Some(EntryKind::Dir)) => src.list_dir(path).ok(),
        _ => None,
    }
}

fn error(file: &str, message: impl Into<String>) -> FleetError {
    FleetError { file: file.to_string(), message: message.into() }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document<S> {
    /// Always `convoy.dev/v1`.
    api_version: String,
    /// `Fleet` (convoy.yaml), `Cluster` (clusters/NAME.yaml) or `App` (apps/NAME/app.yaml).
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    spec: S,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct Metadata {
    /// The cluster's or app's name: the file's (clusters/NAME.yaml) or directory's (apps/NAME).
    #[serde(default)]
    name: String,
    /// A cluster's labels, which apps and rollout waves select clusters by.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FleetSpec {
    /// The branch convoy.yaml and clusters/ are read from.
    #[serde(default = "default_fleet_branch")]
    fleet_branch: String,
    /// The environments in promotion order, each read from its branch.
    environments: Vec<Environment>,
    /// Fields every app of every environment leaves to other managers (before each
    /// environment's and each app's own rules).
    #[serde(default)]
    ignore_differences: Vec<IgnoreRule>,
    /// Who may do what: roles (verbs on environments and apps) and who holds them. A policy
    /// that does not load is refused whole (the hub keeps the last good one); the rest of the
    /// fleet loads.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::access::AccessSpec>"))]
    access: Option<serde_json::Value>,
    /// Change windows: when new revisions may (allow) or may not (deny) reach an environment's
    /// clusters. Windows that do not load are refused whole (the hub keeps the last good
    /// ones); the rest of the fleet loads.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<Vec<crate::windows::WindowSpec>>"))]
    windows: Option<serde_json::Value>,
    /// How to judge the health of kinds Convoy does not know (CEL over the live object,
    /// `self`), for every app; an app's own rules come first.
    #[serde(default)]
    health: Vec<HealthRule>,
    /// Who is told what: receivers (webhook, Slack, Teams) and the routes to them. Settings
    /// that do not load are refused whole (the hub keeps the last good ones).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::notifications::NotificationsSpec>"))]
    notifications: Option<serde_json::Value>,
    /// The forge that gets a commit status per environment (context `convoy/<env>`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<crate::notifications::CommitStatusSpec>"))]
    commit_status: Option<serde_json::Value>,
}

fn default_fleet_branch() -> String {
    "main".into()
}

/// One environment: a name and the branch its apps are read from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environment {
    pub name: String,
    pub branch: String,
    /// How a new revision reaches the environment's clusters; none: all at once.
    #[serde(default)]
    pub rollout: Option<RolloutSpec>,
    /// Fields every app of the environment leaves to other managers. Once loaded, the fleet's
    /// own rules (`spec.ignoreDifferences` of convoy.yaml) come first.
    #[serde(default)]
    pub ignore_differences: Vec<IgnoreRule>,
    /// The fleet's health rules (`spec.health` of convoy.yaml) that compiled, once loaded.
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub health: Vec<HealthRule>,
}

/// `environments[].rollout` (schema v2): waves of clusters that take a new revision in order.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutSpec {
    /// In order; a cluster belongs to the first wave whose selector matches it, a wave without a
    /// selector takes every cluster not yet in a wave, and clusters no wave takes form a last
    /// wave of their own.
    #[serde(default)]
    pub waves: Vec<WaveSpec>,
    /// How long a wave stays applied and Healthy before the next opens, e.g. `10m`, `30s`.
    #[serde(default)]
    pub soak: Option<String>,
    /// Failed or degraded clusters that pause the rollout.
    #[serde(default = "one")]
    pub failure_threshold: u32,
    /// A person runs `convoy rollout approve ENV` between waves.
    #[serde(default)]
    pub approval: bool,
    /// Metric gates: Prometheus queries judged while each wave soaks.
    #[serde(default)]
    pub analysis: Option<AnalysisSpec>,
    /// What a failing gate does: `pause` (default) or `rollback`.
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn one() -> u32 {
    1
}

/// One wave of a rollout.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaveSpec {
    pub name: String,
    #[serde(default)]
    pub cluster_selector: Option<LabelSelector>,
    /// Clusters of the wave taking the new revision at once: a count or a percentage (`25%`,
    /// rounded down, at least one). Default: the whole wave.
    #[serde(default)]
    pub max_unavailable: Option<Quantity>,
}

/// A count or a percentage, as Kubernetes' `maxUnavailable`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Quantity {
    Count(u32),
    Percent(String),
}

impl Quantity {
    /// How many of `total` this allows (at least one).
    pub fn of(&self, total: usize) -> usize {
        let n = match self {
            Quantity::Count(n) => *n as usize,
            Quantity::Percent(p) => p.trim_end_matches('%').trim().parse::<usize>().map_or(total, |p| total * p / 100),
        };
        n.max(1)
    }

    fn validate(&self, file: &str, wave: &str) -> Result<(), FleetError> {
        match self {
            Quantity::Percent(p) if !p.ends_with('%') || p.trim_end_matches('%').trim().parse::<u32>().is_err() => {
                Err(error(
                    file,
                    format!("wave '{wave}': maxUnavailable '{p}' is neither a number nor a percentage like 25%"),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl RolloutSpec {
    /// The soak time (validated when the fleet loads).
    pub fn soak(&self) -> std::time::Duration {
        self.soak.as_deref().and_then(|s| parse_duration(s).ok()).unwrap_or_default()
    }

    /// Checks the spec; `owner` names whose it is in messages (`environment 'prod'`, `app 'web'`).
    fn validate(&self, file: &str, owner: &str) -> Result<(), FleetError> {
        if let Some(soak) = &self.soak {
            parse_duration(soak).map_err(|why| error(file, format!("{owner}: rollout.soak {why}")))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for wave in &self.waves {
            if !names.insert(&wave.name) {
                return Err(error(file, format!("{owner}: wave '{}' is listed twice", wave.name)));
            }
            if let Some(s) = &wave.cluster_selector {
                s.validate(file)?;
            }
            if let Some(q) = &wave.max_unavailable {
                q.validate(file, &wave.name)?;
            }
        }
        if self.failure_threshold == 0 {
            return Err(error(file, format!("{owner}: rollout.failureThreshold must be at least 1")));
        }
        if let Some(analysis) = &self.analysis {
            let at = |what: String| error(file, format!("{owner}: rollout.analysis{what}"));
            let address = &analysis.prometheus.address;
            if !(address.starts_with("http://") || address.starts_with("https://")) {
                return Err(at(format!(".prometheus.address '{address}' is not an http:// or https:// address")));
            }
            if let Some(interval) = &analysis.interval {
                parse_duration(interval).map_err(|why| at(format!(".interval {why}")))?;
            }
            if analysis.checks.is_empty() {
                return Err(at(".checks is empty: list at least one {name, query, successCondition}".into()));
            }
            let mut names = std::collections::BTreeSet::new();
            for check in &analysis.checks {
                if check.name.is_empty() || !names.insert(&check.name) {
                    return Err(at(format!(".checks: every check needs a name of its own ('{}')", check.name)));
                }
                convoy_model::analysis::compiles(&check.success_condition)
                    .map_err(|why| at(format!(".checks '{}': successCondition does not compile: {why}", check.name)))?;
            }
        }
        Ok(())
    }

    /// How often the gate's queries run (default 30 s).
    pub fn analysis_interval(&self) -> std::time::Duration {
        let interval = self.analysis.as_ref().and_then(|a| a.interval.as_deref());
        interval.and_then(|i| parse_duration(i).ok()).unwrap_or(std::time::Duration::from_secs(30))
    }
}

/// Parses `90s`, `10m`, `1h30m`, `0` into a duration.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("'{text}': '{c}' is not a unit (use s, m, h or d, e.g. 10m)")),
        };
        let n: u64 = number.parse().map_err(|_| format!("'{text}': a unit needs a number before it"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("'{text}': '{number}' has no unit (use s, m, h or d, e.g. 10m)"));
    }
    Ok(std::time::Duration::from_secs(total))
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct ClusterSpec {
    /// The environment (of convoy.yaml) whose branch the cluster's apps come from.
    environment: String,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AppSpec {
    /// The clusters the app goes to (a label selector and/or names); absent: every cluster.
    #[serde(default)]
    targets: Option<Targets>,
    /// The namespace of its namespaced objects that name none (and a chart's release namespace).
    #[serde(default)]
    namespace: Option<String>,
    /// Create `namespace` on each cluster when the app's sources hold no such Namespace
    /// (default true).
    #[serde(default)]
    create_namespace: Option<bool>,
    /// Delete that Namespace, with everything in it, when the app leaves a cluster — only one
    /// the agent created (default false: it stays).
    #[serde(default)]
    delete_namespace: Option<bool>,
    /// Apps that must be Healthy on a cluster before this one is applied there.
    #[serde(default)]
    depends_on: Vec<String>,
    /// Prune and self-heal (both on by default).
    #[serde(default)]
    sync: SyncSpec,
    /// The app is a Helm chart: from this repository (`chart`), a chart repository (`repo`,
    /// `name`, `version`) or an OCI registry (`oci`, `version`).
    #[serde(default)]
    helm: Option<HelmSpec>,
    /// The app's own waves, in place of its environment's rollout.
    #[serde(default)]
    rollout: Option<RolloutSpec>,
    /// Fields of the app's objects that other managers own: not drift, not healed, not sent.
    #[serde(default)]
    ignore_differences: Vec<IgnoreRule>,
    /// How to judge the health of its objects' kinds (CEL over the live object, `self`),
    /// before the fleet's rules and the built-in ones.
    #[serde(default)]
    health: Vec<HealthRule>,
}

/// `spec.helm` as written (schema v2): one of `chart`, `repo` + `name`, or `oci`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HelmSpec {
    chart: Option<String>,
    repo: Option<String>,
    name: Option<String>,
    oci: Option<String>,
    version: Option<String>,
    release_name: Option<String>,
    #[serde(default)]
    values: Option<serde_json::Value>,
}

/// Where an app's Helm chart comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChartLocation {
    /// A chart directory in the repository (repository-relative, normalized).
    Path(String),
    /// A chart in an HTTP(S) chart repository or an OCI registry.
    Remote(Remote),
}

impl std::fmt::Display for ChartLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChartLocation::Path(path) => f.write_str(path),
            ChartLocation::Remote(remote) => remote.fmt(f),
        }
    }
}

/// An app whose objects come from a Helm chart.
#[derive(Debug, Clone, PartialEq)]
pub struct HelmSource {
    pub chart: ChartLocation,
    /// `.Release.Name`: `spec.helm.releaseName`, or the app's name.
    pub release_name: String,
    /// `spec.helm.values` (a mapping; empty when absent).
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl HelmSpec {
    fn resolve(self, file: &str, app: &str) -> Result<HelmSource, FleetError> {
        let chart = match (self.chart, self.repo, self.oci) {
            (Some(path), None, None) => {
                if self.name.is_some() || self.version.is_some() {
                    return Err(error(
                        file,
                        "spec.helm: name and version go with repo or oci, not with chart (a path)",
                    ));
                }
                ChartLocation::Path(chart_path(file, &path)?)
            }
            (None, Some(url), None) => {
                let name = self
                    .name
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| error(file, "spec.helm.repo needs the chart's name (spec.helm.name) and version"))?;
                let version = self.version.filter(|v| !v.is_empty()).ok_or_else(|| {
                    error(
                        file,
                        format!("spec.helm: chart '{name}' from {url} needs a version (exact, or a range like ~1.2)"),
                    )
                })?;
                ChartLocation::Remote(Remote::Repo { url: url.trim_end_matches('/').to_string(), name, version })
            }
            (None, None, Some(reference)) => {
                if !reference.starts_with("oci://") {
                    return Err(error(file, format!("spec.helm.oci '{reference}' must start with oci://")));
                }
                if self.name.is_some() {
                    return Err(error(
                        file,
                        "spec.helm.oci names the chart itself (oci://host/path/NAME); remove spec.helm.name",
                    ));
                }
                let version = self
                    .version
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| error(file, format!("spec.helm: chart {reference} needs a version")))?;
                ChartLocation::Remote(Remote::Oci { reference: reference.trim_end_matches('/').to_string(), version })
            }
            _ => {
                return Err(error(
                    file,
                    "spec.helm needs exactly one of chart (a path in this repository), repo (with name and version) or oci (with version)",
                ));
            }
        };
        let release_name = self.release_name.unwrap_or_else(|| app.to_string());
        if release_name.is_empty() || release_name.len() > 53 || !valid_name(&release_name) {
            return Err(error(
                file,
                format!(
                    "spec.helm.releaseName '{release_name}' must be 1 to 53 lowercase letters, digits and '-' (Helm's rule)"
                ),
            ));
        }
        let values = match self.values {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(map)) => map,
            Some(_) => return Err(error(file, "spec.helm.values must be a mapping")),
        };
        Ok(HelmSource { chart, release_name, values })
    }
}

/// A chart path, repository-relative, with `.` and `..` resolved; it may not leave the repository.
fn chart_path(file: &str, path: &str) -> Result<String, FleetError> {
    let mut parts: Vec<&str> = Vec::new();
    if path.starts_with('/') {
        return Err(error(file, format!("spec.helm.chart '{path}' must be a path relative to the repository root")));
    }
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(error(file, format!("spec.helm.chart '{path}' leaves the repository")));
                }
            }
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(error(file, "spec.helm.chart is empty: name the chart's directory"));
    }
    Ok(parts.join("/"))
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SyncSpec {
    /// Delete objects that left Git (default true).
    prune: Option<bool>,
    /// Undo drift by applying again (default true).
    self_heal: Option<bool>,
}

/// Which clusters an app goes to: a label selector and/or names, OR-ed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Targets {
    #[serde(default)]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(default)]
    pub clusters: Vec<String>,
}

/// A Kubernetes-style label selector.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }

    fn validate(&self, file: &str) -> Result<(), FleetError> {
        for r in &self.match_expressions {
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => {
                    return Err(error(file, format!("matchExpressions for '{}': {} needs values", r.key, r.operator)));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(error(
                        file,
                        format!("matchExpressions operator '{other}' is not one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A cluster as declared in `clusters/<name>.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub environment: String,
    pub labels: BTreeMap<String, String>,
}

/// An app as declared in `apps/<name>/app.yaml` of one environment's branch.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub name: String,
    pub targets: Option<Targets>,
    pub namespace: Option<String>,
    pub depends_on: Vec<String>,
    pub policy: SyncPolicy,
    /// `spec.helm`: the app is a Helm chart rather than kustomize overlays.
    pub helm: Option<HelmSource>,
    /// `spec.rollout` (schema v2): this app reaches the clusters of each environment in these
    /// waves instead of the environment's own.
    pub rollout: Option<RolloutSpec>,
    /// `ignoreDifferences`: the fleet's, the environment's, then the app's own.
    pub ignore_differences: Vec<IgnoreRule>,
    /// `spec.health` rules that compiled: the app's own, then the fleet's.
    pub health: Vec<HealthRule>,
    /// Its rules that do not compile, each refused with where and why (the app still syncs).
    pub health_errors: Vec<FleetError>,
    /// `spec.createNamespace` (default true).
    pub create_namespace: bool,
    /// `spec.deleteNamespace` (default false).
    pub delete_namespace: bool,
}

impl App {
    /// Whether this app goes to `cluster`. No targets: every cluster.
    pub fn targets(&self, cluster: &Cluster) -> bool {
        match &self.targets {
            None => true,
            Some(t) if t.cluster_selector.is_none() && t.clusters.is_empty() => true,
            Some(t) => {
                t.clusters.contains(&cluster.name)
                    || t.cluster_selector.as_ref().is_some_and(|s| s.matches(&cluster.labels))
            }
        }
    }
}

/// `convoy.yaml` and the clusters, from the fleet branch. A broken cluster file is kept as an
/// error for that file; the rest of the fleet still loads.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub fleet_branch: String,
    pub environments: Vec<Environment>,
    pub clusters: BTreeMap<String, Cluster>,
    pub cluster_errors: Vec<FleetError>,
    /// `spec.access`: built-in roles only when absent; an error when it does not load.
    pub access: Result<Policy, FleetError>,
    /// `spec.windows`: none when absent; an error when they do not load.
    pub windows: Result<Windows, FleetError>,
    /// `spec.health` rules that do not compile, each refused (the others hold).
    pub health_errors: Vec<FleetError>,
    /// `spec.notifications`: none when absent; an error when they do not load.
    pub notifications: Result<NotificationsSpec, FleetError>,
    /// `spec.commitStatus`: none when absent; an error when it does not load.
    pub commit_status: Result<Option<CommitStatusSpec>, FleetError>,
}

fn parse<S: for<'de> Deserialize<'de>>(file: &str, bytes: &[u8], kind: &str) -> Result<Document<S>, FleetError> {
    let text = std::str::from_utf8(bytes).map_err(|_| error(file, "not UTF-8 text"))?;
    let doc: Document<S> = serde_saphyr::from_str(text).map_err(|e| error(file, e.to_string()))?;
    if doc.api_version != API_VERSION {
        return Err(error(file, format!("apiVersion is '{}', want '{API_VERSION}'", doc.api_version)));
    }
    if doc.kind != kind {
        return Err(error(file, format!("kind is '{}', want '{kind}'", doc.kind)));
    }
    Ok(doc)
}

/// Reads just the fleet branch name from `convoy.yaml` (to know where to read the rest).
pub fn fleet_branch_of(snapshot: &dyn Source) -> Result<String, FleetError> {
    let bytes = file(snapshot, "convoy.yaml")
        .ok_or_else(|| error("convoy.yaml", "missing: the fleet repository needs a convoy.yaml at its root"))?;
    Ok(parse::<FleetSpec>("convoy.yaml", &bytes, "Fleet")?.spec.fleet_branch)
}

/// `clusters/*.yaml` files an earlier [`Fleet::load_reusing`] parsed, by path with their
/// contents: a commit to a fleet of 10,000 clusters parses again only the files it changed
/// (parsing all of them took 170 ms of each of the hub's syncs). Holds the files of the last
/// load only.
#[derive(Debug, Default)]
pub struct ClusterFiles {
    parsed: std::collections::HashMap<String, (Vec<u8>, Result<Cluster, FleetError>)>,
}

impl ClusterFiles {
    /// The declaration in `file` (as parsed, not yet checked against the fleet), parsed again
    /// only when its contents changed; `fresh` takes what this load read.
    fn parse(&mut self, fresh: &mut ClusterFiles, file: String, bytes: Vec<u8>) -> Result<Cluster, FleetError> {
        let parsed = match self.parsed.remove(&file) {
            Some((before, parsed)) if before == bytes => parsed,
            _ => parse::<ClusterSpec>(&file, &bytes, "Cluster").map(|doc| Cluster {
                name: doc.metadata.name,
                environment: doc.spec.environment,
                labels: doc.metadata.labels,
            }),
        };
        fresh.parsed.insert(file, (bytes, parsed.clone()));
        parsed
    }
}

impl Fleet {
    /// Loads `convoy.yaml` and `clusters/*.yaml` from the fleet branch's snapshot.
    pub fn load(snapshot: &dyn Source) -> Result<Fleet, FleetError> {
        Fleet::load_reusing(snapshot, &mut ClusterFiles::default())
    }

    /// [`Fleet::load`], parsing only the cluster files that differ from those `files` holds;
    /// `files` then holds this load's.
    pub fn load_reusing(snapshot: &dyn Source, files: &mut ClusterFiles) -> Result<Fleet, FleetError> {
        let file = "convoy.yaml";
        let bytes = self::file(snapshot, file)
            .ok_or_else(|| error(file, "missing: the fleet repository needs a convoy.yaml at its root"))?;
        let spec = parse::<FleetSpec>(file, &bytes, "Fleet")?.spec;
        if spec.environments.is_empty() {
            return Err(error(file, "spec.environments is empty: list at least one {name, branch}"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for env in &spec.environments {
            if !valid_name(&env.name) {
                return Err(error(
                    file,
                    format!("environment name '{}' must be lowercase letters, digits and '-'", env.name),
                ));
            }
            if env.branch.is_empty() {
                return Err(error(file, format!("environment '{}' names no branch", env.name)));
            }
            if !seen.insert(env.name.clone()) {
                return Err(error(file, format!("environment '{}' is listed twice", env.name)));
            }
            if let Some(rollout) = &env.rollout {
                rollout.validate(file, &format!("environment '{}'", env.name))?;
            }
            validate_ignores(file, &env.ignore_differences, &format!("environment '{}': ", env.name))?;
        }
        validate_ignores(file, &spec.ignore_differences, "")?;
        let mut environments = spec.environments;
        for env in &mut environments {
            env.ignore_differences.splice(0..0, spec.ignore_differences.iter().cloned());
        }
        let access = match spec.access {
            None => Ok(Policy::default()),
            Some(value) => serde_json::from_value::<AccessSpec>(value)
                .map_err(|e| error(file, format!("spec.access: {e}")))
                .and_then(|spec| Policy::new(spec).map_err(|e| error(file, e.to_string()))),
        };
        let (health, health_errors) = compiled_rules(file, spec.health);
        for env in &mut environments {
            env.health = health.clone();
        }
        let names: Vec<&str> = environments.iter().map(|e| e.name.as_str()).collect();
        let windows = match spec.windows {
            None => Ok(Windows::default()),
            Some(value) => serde_json::from_value::<Vec<WindowSpec>>(value)
                .map_err(|e| error(file, format!("spec.windows: {e}")))
                .and_then(|specs| Windows::new(specs, &names).map_err(|e| error(file, e))),
        };
        let notifications = match spec.notifications {
            None => Ok(NotificationsSpec::default()),
            Some(value) => serde_json::from_value::<NotificationsSpec>(value)
                .map_err(|e| e.to_string())
                .and_then(|n| notifications::validate(&n, &names).map(|()| n))
                .map_err(|e| error(file, format!("spec.notifications: {e}"))),
        };
        let commit_status = match spec.commit_status {
            None => Ok(None),
            Some(value) => serde_json::from_value::<CommitStatusSpec>(value)
                .map_err(|e| e.to_string())
                .and_then(|c| notifications::validate_commit_status(&c).map(|()| Some(c)))
                .map_err(|e| error(file, format!("spec.commitStatus: {e}"))),
        };
        let mut fleet = Fleet {
            fleet_branch: spec.fleet_branch,
            environments,
            clusters: BTreeMap::new(),
            cluster_errors: Vec::new(),
            access,
            windows,
            health_errors,
            notifications,
            commit_status,
        };
        let mut fresh = ClusterFiles::default();
        for name in dir(snapshot, "clusters").unwrap_or_default() {
            let Some(stem) = name.strip_suffix(".yaml").or_else(|| name.strip_suffix(".yml")) else { continue };
            let file = format!("clusters/{name}");
            let bytes = self::file(snapshot, &file).unwrap_or_default();
            match files
                .parse(&mut fresh, file.clone(), bytes)
                .and_then(|cluster| fleet.check_cluster(&file, stem, cluster))
            {
                Ok(cluster) => {
                    fleet.clusters.insert(cluster.name.clone(), cluster);
                }
                Err(e) => fleet.cluster_errors.push(e),
            }
        }
        *files = fresh;
        Ok(fleet)
    }

    /// `cluster` as declared in `file`, when its name matches the file's `stem` and its
    /// environment is the fleet's.
    fn check_cluster(&self, file: &str, stem: &str, cluster: Cluster) -> Result<Cluster, FleetError> {
        let name = &cluster.name;
        if *name != stem {
            return Err(error(
                file,
                format!("metadata.name '{name}' differs from the file name; name the file {name}.yaml"),
            ));
        }
        if !valid_name(name) {
            return Err(error(file, format!("cluster name '{name}' must be lowercase letters, digits and '-'")));
        }
        if self.environment(&cluster.environment).is_none() {
            return Err(error(
                file,
                format!(
                    "spec.environment '{}' is not in convoy.yaml (environments: {})",
                    cluster.environment,
                    self.environments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(cluster)
    }

    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The environment a user means by `wanted`: its name, or else its branch.
    pub fn resolve_environment(&self, wanted: &str) -> Result<&Environment, UnknownEnvironment> {
        resolve_environment(&self.environments, wanted, |e| (e.name.as_str(), e.branch.as_str())).map(|(_, env)| env)
    }
}

/// A name that is no environment of the fleet: the one error every command that takes an
/// environment gives (the hub's and the CLI's alike).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown environment '{name}': the fleet's environments are {} (convoy.yaml)", .known.join(", "))]
pub struct UnknownEnvironment {
    pub name: String,
    /// The environments there are, in promotion order.
    pub known: Vec<String>,
}

/// Finds what `wanted` names among `environments` (in promotion order): an environment by its
/// name, or else by its branch (`convoy diff stage main`). Returns its position too. `fields`
/// gives an item's (name, branch), so the fleet model and the CLI's answers share one rule.
pub fn resolve_environment<'a, T>(
    environments: &'a [T],
    wanted: &str,
    fields: impl Fn(&T) -> (&str, &str),
) -> Result<(usize, &'a T), UnknownEnvironment> {
    let position = |by: &dyn Fn(&T) -> bool| environments.iter().position(by);
    position(&|e| fields(e).0 == wanted)
        .or_else(|| position(&|e| fields(e).1 == wanted))
        .map(|at| (at, &environments[at]))
        .ok_or_else(|| UnknownEnvironment {
            name: wanted.to_string(),
            known: environments.iter().map(|e| fields(e).0.to_string()).collect(),
        })
}

/// The `spec.health` rules of `file` that compile, and an error for each that does not,
/// naming it, the expression and the position.
fn compiled_rules(file: &str, rules: Vec<HealthRule>) -> (Vec<HealthRule>, Vec<FleetError>) {
    let mut good = Vec::new();
    let mut errors = Vec::new();
    for (i, rule) in rules.into_iter().enumerate() {
        match rule.compile() {
            Ok(_) => good.push(rule),
            Err(why) => errors.push(error(
                file,
                format!(
                    "spec.health[{i}] ({}) is refused and its kind judged by the built-in rules: {why}",
                    rule.target()
                ),
            )),
        }
    }
    (good, errors)
}

/// Checks `ignoreDifferences` rules; `owner` prefixes messages (`environment 'prod': `).
fn validate_ignores(file: &str, rules: &[IgnoreRule], owner: &str) -> Result<(), FleetError> {
    for rule in rules {
        rule.validate().map_err(|why| error(file, format!("{owner}ignoreDifferences: {why}")))?;
    }
    Ok(())
}

/// The apps of `env`'s branch. Each app loads or fails on its own; each carries the
/// environment's `ignoreDifferences` before its own.
pub fn load_apps(snapshot: &dyn Source, env: &Environment) -> BTreeMap<String, Result<App, FleetError>> {
    let mut apps = BTreeMap::new();
    for name in dir(snapshot, "apps").unwrap_or_default() {
        if dir(snapshot, &format!("apps/{name}")).is_none() {
            continue;
        }
        let file = format!("apps/{name}/app.yaml");
        let app = match self::file(snapshot, &file) {
            None => Err(error(&file, "missing: every directory under apps/ needs an app.yaml")),
            Some(bytes) => load_app(&file, &name, &bytes).map(|mut app| {
                app.ignore_differences.splice(0..0, env.ignore_differences.iter().cloned());
                app.health.extend(env.health.iter().cloned());
                app
            }),
        };
        apps.insert(name.clone(), app);
    }
    apps
}

fn load_app(file: &str, dir_name: &str, bytes: &[u8]) -> Result<App, FleetError> {
    let doc = parse::<AppSpec>(file, bytes, "App")?;
    let name = doc.metadata.name;
    if name != dir_name {
        return Err(error(file, format!("metadata.name '{name}' differs from its directory apps/{dir_name}")));
    }
    if let Some(selector) = doc.spec.targets.as_ref().and_then(|t| t.cluster_selector.as_ref()) {
        selector.validate(file)?;
    }
    if doc.spec.depends_on.contains(&name) {
        return Err(error(file, "an app cannot depend on itself"));
    }
    let defaults = SyncPolicy::default();
    let helm = doc.spec.helm.map(|h| h.resolve(file, &name)).transpose()?;
    if let Some(rollout) = &doc.spec.rollout {
        rollout.validate(file, &format!("app '{name}'"))?;
        if rollout.analysis.is_some() {
            // Its clusters' agents are given the environment's gate queries only: an app's own
            // gate would wait for measurements that never come.
            return Err(error(
                file,
                format!(
                    "app '{name}': rollout.analysis is per environment: put the gate in its environment's rollout in convoy.yaml"
                ),
            ));
        }
    }
    validate_ignores(file, &doc.spec.ignore_differences, "")?;
    let (health, health_errors) = compiled_rules(file, doc.spec.health);
    Ok(App {
        ignore_differences: doc.spec.ignore_differences,
        health,
        health_errors,
        create_namespace: doc.spec.create_namespace.unwrap_or(true),
        delete_namespace: doc.spec.delete_namespace.unwrap_or(false),
        helm,
        rollout: doc.spec.rollout,
        name,
        targets: doc.spec.targets,
        namespace: doc.spec.namespace,
        depends_on: doc.spec.depends_on,
        policy: SyncPolicy {
            prune: doc.spec.sync.prune.unwrap_or(defaults.prune),
            self_heal: doc.spec.sync.self_heal.unwrap_or(defaults.self_heal),
        },
    })
}

/// The JSON Schema (draft 2020-12) of one kind of file users write.
#[cfg(feature = "schema")]
#[derive(Debug, Clone)]
pub struct FileSchema {
    /// `fleet`, `cluster` or `app`.
    pub name: &'static str,
    /// Which files it describes.
    pub files: &'static str,
    pub schema: serde_json::Value,
}

/// The schemas of `convoy.yaml`, `clusters/NAME.yaml` and `apps/NAME/app.yaml`, derived from
/// the very types the hub parses them into (unknown keys are refused by both).
#[cfg(feature = "schema")]
pub fn schemas() -> Vec<FileSchema> {
    fn document<S: schemars::JsonSchema>(kind: &str, title: &str, named: bool) -> serde_json::Value {
        let mut schema = serde_json::to_value(schemars::schema_for!(Document<S>)).unwrap_or_default();
        schema["title"] = title.into();
        schema["properties"]["apiVersion"] = serde_json::json!({"const": API_VERSION});
        schema["properties"]["kind"] = serde_json::json!({"const": kind});
        if named {
            schema["required"] = serde_json::json!(["apiVersion", "kind", "metadata", "spec"]);
            schema["$defs"]["Metadata"]["required"] = serde_json::json!(["name"]);
        }
        schema
    }
    vec![
        FileSchema {
            name: "fleet",
            files: "convoy.yaml",
            schema: document::<FleetSpec>("Fleet", "Convoy fleet (convoy.yaml)", false),
        },
        FileSchema {
            name: "cluster",
            files: "clusters/*.yaml",
            schema: document::<ClusterSpec>("Cluster", "Convoy cluster (clusters/NAME.yaml)", true),
        },
        FileSchema {
            name: "app",
            files: "apps/*/app.yaml",
            schema: document::<AppSpec>("App", "Convoy app (apps/NAME/app.yaml)", true),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn mk_cluster(name: &str, pairs: &[(&str, &str)]) -> Cluster {
        Cluster { name: name.into(), environment: "prod".into(), labels: labels(pairs) }
    }

    #[test]
    fn an_environment_is_found_by_name_then_by_branch_and_an_unknown_one_lists_them_all() {
        let env = |name: &str, branch: &str| Environment {
            ignore_differences: Vec::new(),
            health: Vec::new(),
            name: name.into(),
            branch: branch.into(),
            rollout: None,
        };
        // An environment named like another's branch wins by name.
        let envs = [env("dev", "develop"), env("main", "stage"), env("prod", "main")];
        let find =
            |wanted: &str| resolve_environment(&envs, wanted, |e: &Environment| (e.name.as_str(), e.branch.as_str()));
        assert_eq!(find("develop").unwrap().0, 0);
        assert_eq!(find("main").unwrap().1.name, "main");
        assert_eq!(find("prod").unwrap().0, 2);
        let unknown = find("qa").unwrap_err();
        assert_eq!(unknown.known, ["dev", "main", "prod"]);
        assert_eq!(
            unknown.to_string(),
            "unknown environment 'qa': the fleet's environments are dev, main, prod (convoy.yaml)"
        );
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let sel = LabelSelector {
            match_labels: labels(&[("region", "eu")]),
            match_expressions: vec![
                Requirement { key: "tier".into(), operator: "NotIn".into(), values: vec!["edge".into()] },
                Requirement { key: "gpu".into(), operator: "DoesNotExist".into(), values: vec![] },
            ],
        };
        assert!(sel.matches(&labels(&[("region", "eu")])));
        assert!(sel.matches(&labels(&[("region", "eu"), ("tier", "core")])));
        assert!(!sel.matches(&labels(&[("region", "eu"), ("tier", "edge")])));
        assert!(!sel.matches(&labels(&[("region", "eu"), ("gpu", "a100")])));
        assert!(!sel.matches(&labels(&[("region", "us")])));
    }

    #[test]
    fn targets_or_names_with_the_selector_and_default_to_everyone() {
        let eu = mk_cluster("eu-1", &[("region", "eu")]);
        let us = mk_cluster("us-1", &[("region", "us")]);
        let mut app = App {
            ignore_differences: Vec::new(),
            health: Vec::new(),
            health_errors: Vec::new(),
            create_namespace: false,
            delete_namespace: false,
            name: "web".into(),
            targets: None,
            namespace: None,
            depends_on: vec![],
            policy: SyncPolicy::default(),
            helm: None,
            rollout: None,
        };
        assert!(app.targets(&eu) && app.targets(&us));
        app.targets = Some(Targets {
            cluster_selector: Some(LabelSelector { match_labels: labels(&[("region", "eu")]), ..Default::default() }),
            clusters: vec!["us-1".into()],
        });
        assert!(app.targets(&eu) && app.targets(&us));
        app.targets.as_mut().unwrap().clusters.clear();
        assert!(app.targets(&eu) && !app.targets(&us));
    }

    /// Writes `text` to `path` below `dir`, making its directories.
    fn write_file(dir: &Path, path: &str, text: &str) {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    #[test]
    fn a_load_reusing_parsed_cluster_files_reads_what_a_fresh_load_reads() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| write_file(dir.path(), path, text);
        let envs = |names: &[&str]| {
            let list: String = names.iter().map(|n| format!("  - {{name: {n}, branch: {n}}}\n")).collect();
            format!("apiVersion: convoy.dev/v1\nkind: Fleet\nspec:\n  environments:\n{list}")
        };
        let cluster = |name: &str, env: &str, region: &str| {
            format!(
                "apiVersion: convoy.dev/v1\nkind: Cluster\nmetadata: {{name: {name}, labels: {{region: {region}}}}}\nspec: {{environment: {env}}}\n"
            )
        };
        let src = crate::FsSource::new(dir.path());
        let mut files = ClusterFiles::default();
        let mut same_as_fresh = || {
            let reusing = Fleet::load_reusing(&src, &mut files).unwrap();
            let fresh = Fleet::load(&src).unwrap();
            assert_eq!((&reusing.clusters, &reusing.cluster_errors), (&fresh.clusters, &fresh.cluster_errors));
            reusing
        };
        write("convoy.yaml", &envs(&["dev", "prod"]));
        write("clusters/eu-1.yaml", &cluster("eu-1", "prod", "eu"));
        write("clusters/us-1.yaml", &cluster("us-1", "dev", "us"));
        write("clusters/bad.yaml", "apiVersion: convoy.dev/v1\nkind: Cluster\nmetadata: [\n");
        let first = same_as_fresh();
        assert_eq!(first.clusters.len(), 2);
        assert_eq!(first.cluster_errors[0].file, "clusters/bad.yaml");
        // A changed file is read anew; a removed one is gone.
        write("clusters/eu-1.yaml", &cluster("eu-1", "prod", "west"));
        std::fs::remove_file(dir.path().join("clusters/bad.yaml")).unwrap();
        let changed = same_as_fresh();
        assert_eq!(changed.clusters["eu-1"].labels["region"], "west");
        assert!(changed.cluster_errors.is_empty());
        // An unchanged file is checked against the fleet as it is now: its environment is gone.
        write("convoy.yaml", &envs(&["prod"]));
        let fewer = same_as_fresh();
        assert!(!fewer.clusters.contains_key("us-1"));
        assert!(fewer.cluster_errors[0].message.contains("spec.environment 'dev' is not in convoy.yaml"));
    }

    #[test]
    fn app_files_are_strict_and_errors_name_the_file() {
        let ok = "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: web}\nspec:\n  namespace: web\n  sync: {prune: false}\n";
        let app = load_app("apps/web/app.yaml", "web", ok.as_bytes()).unwrap();
        assert_eq!(app.policy, SyncPolicy { prune: false, self_heal: true });
        let unknown = "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: web}\nspec:\n  namespcae: web\n";
        let err = load_app("apps/web/app.yaml", "web", unknown.as_bytes()).unwrap_err();
        assert_eq!(err.file, "apps/web/app.yaml");
        assert!(err.message.contains("namespcae"), "{err}");
        let bad_op = "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: web}\nspec:\n  targets:\n    clusterSelector:\n      matchExpressions: [{key: a, operator: Maybe}]\n";
        assert!(load_app("f", "web", bad_op.as_bytes()).unwrap_err().message.contains("Maybe"));
        let wrong_name = "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: api}\nspec: {}\n";
        assert!(load_app("f", "web", wrong_name.as_bytes()).unwrap_err().message.contains("apps/web"));
    }

    #[test]
    fn ignore_differences_layer_fleet_then_environment_then_app_and_bad_rules_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| write_file(dir.path(), path, text);
        write(
            "convoy.yaml",
            "apiVersion: convoy.dev/v1\nkind: Fleet\nspec:\n  ignoreDifferences:\n  - {kind: Deployment, managedFieldsManagers: [vpa-recommender]}\n  environments:\n  - name: prod\n    branch: main\n    ignoreDifferences:\n    - {group: apps, kind: Deployment, jsonPointers: [/spec/replicas]}\n",
        );
        write(
            "apps/web/app.yaml",
            "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: web}\nspec:\n  ignoreDifferences:\n  - {kind: ConfigMap, name: web, jsonPointers: [/data/generated]}\n",
        );
        let src = crate::FsSource::new(dir.path());
        let fleet = Fleet::load(&src).unwrap();
        let apps = load_apps(&src, fleet.environment("prod").unwrap());
        let rules = &apps["web"].as_ref().unwrap().ignore_differences;
        let kinds: Vec<(&str, Option<&str>)> = rules.iter().map(|r| (r.kind.as_str(), r.group.as_deref())).collect();
        assert_eq!(kinds, [("Deployment", None), ("Deployment", Some("apps")), ("ConfigMap", None)]);

        let bad = "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: web}\nspec:\n  ignoreDifferences:\n  - {kind: Deployment, jsonPointers: [spec.replicas]}\n";
        let err = load_app("apps/web/app.yaml", "web", bad.as_bytes()).unwrap_err();
        assert!(err.file == "apps/web/app.yaml" && err.message.contains("/spec/replicas"), "{err}");
        let jq = "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: web}\nspec:\n  ignoreDifferences:\n  - {kind: Deployment, jqPathExpressions: [.spec]}\n";
        assert!(load_app("apps/web/app.yaml", "web", jq.as_bytes()).unwrap_err().message.contains("jqPathExpressions"));
    }

    #[test]
    fn health_rules_come_app_first_then_fleet_and_one_that_does_not_compile_is_refused_alone() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| write_file(dir.path(), path, text);
        let fleet_rules = "  health:\n  - {group: cert-manager.io, kind: Certificate, healthy: \"self.status.ready\"}\n  - {group: keda.sh, kind: ScaledObject, healthy: \"self.status.(\"}\n";
        write(
            "convoy.yaml",
            &format!(
                "apiVersion: convoy.dev/v1\nkind: Fleet\nspec:\n  environments:\n  - {{name: prod, branch: main}}\n{fleet_rules}"
            ),
        );
        write(
            "apps/web/app.yaml",
            "apiVersion: convoy.dev/v1\nkind: App\nmetadata: {name: web}\nspec:\n  health:\n  - {group: cert-manager.io, kind: Certificate, healthy: \"true\", degraded: \"self.status.conditions.exists(c,\"}\n  - {group: example.com, kind: Widget, healthy: \"has(self.status)\"}\n",
        );
        let src = crate::FsSource::new(dir.path());
        let fleet = Fleet::load(&src).unwrap();
        let [refused] = fleet.health_errors.as_slice() else { panic!("{:?}", fleet.health_errors) };
        assert_eq!(refused.file, "convoy.yaml");
        assert!(
            refused.message.starts_with("spec.health[1] (keda.sh/ScaledObject) is refused and its kind judged by the built-in rules: healthy: ERROR: <input>:1:"),
            "{}",
            refused.message
        );
        let apps = load_apps(&src, fleet.environment("prod").unwrap());
        let web = apps["web"].as_ref().expect("the app loads: a bad rule does not stop it");
        let kinds: Vec<&str> = web.health.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["Widget", "Certificate"], "the app's good rule, then the fleet's");
        assert_eq!(web.health[1].healthy, "self.status.ready", "the fleet's Certificate rule");
        let [own] = web.health_errors.as_slice() else { panic!("{:?}", web.health_errors) };
        assert_eq!(own.file, "apps/web/app.yaml");
        assert!(
            own.message.contains("spec.health[0] (cert-manager.io/Certificate)")
                && own.message.contains("degraded: ERROR"),
            "{}",
            own.message
        );
    }

    #[test]
    fn an_app_may_bring_its_own_rollout_checked_like_an_environments() {
        let app = |rollout: &str| {
            let text =
                format!("apiVersion: convoy.dev/v1\nkind: App\nmetadata: {{name: mon}}\nspec:\n  rollout: {rollout}\n");
            load_app("apps/mon/app.yaml", "mon", text.as_bytes())
        };
        let spec =
            app("{waves: [{name: canary, clusterSelector: {matchLabels: {tier: canary}}}, {name: rest}], soak: 5m}")
                .unwrap()
                .rollout
                .unwrap();
        assert_eq!(spec.waves.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["canary", "rest"]);
        assert_eq!(spec.soak(), std::time::Duration::from_secs(300));
        assert_eq!(spec.failure_threshold, 1);
        for (bad, says) in [
            ("{soak: soon}", "app 'mon': rollout.soak"),
            ("{waves: [{name: a}, {name: a}]}", "app 'mon': wave 'a' is listed twice"),
            ("{failureThreshold: 0}", "app 'mon': rollout.failureThreshold"),
            ("{wavs: []}", "wavs"),
            (
                "{analysis: {prometheus: {address: 'http://p:9090'}, checks: [{name: e, query: up, successCondition: result > 0}]}}",
                "app 'mon': rollout.analysis is per environment",
            ),
        ] {
            let err = app(bad).unwrap_err();
            assert_eq!(err.file, "apps/mon/app.yaml");
            assert!(err.message.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn helm_apps_name_one_chart_source_and_a_valid_release() {
        let app = |helm: &str| {
            let text =
                format!("apiVersion: convoy.dev/v1\nkind: App\nmetadata: {{name: mon}}\nspec:\n  helm: {helm}\n");
            load_app("apps/mon/app.yaml", "mon", text.as_bytes())
        };
        let path = app("{chart: ./charts/../charts/node-exporter, values: {replicas: 2}}").unwrap().helm.unwrap();
        assert_eq!(path.chart, ChartLocation::Path("charts/node-exporter".into()));
        assert_eq!(path.release_name, "mon");
        assert_eq!(path.values["replicas"], 2);
        let repo = app("{repo: 'https://charts.example.com/', name: ne, version: 4.37.0, releaseName: ne}").unwrap();
        assert_eq!(
            repo.helm.unwrap().chart,
            ChartLocation::Remote(Remote::Repo {
                url: "https://charts.example.com".into(),
                name: "ne".into(),
                version: "4.37.0".into()
            })
        );
        let oci = app("{oci: oci://r.example.com/charts/ne, version: 1.0.0}").unwrap().helm.unwrap();
        assert_eq!(
            oci.chart,
            ChartLocation::Remote(Remote::Oci {
                reference: "oci://r.example.com/charts/ne".into(),
                version: "1.0.0".into()
            })
        );
        for (bad, says) in [
            ("{chart: a, repo: b}", "exactly one"),
            ("{}", "exactly one"),
            ("{repo: 'https://x', name: ne}", "needs a version"),
            ("{repo: 'https://x', version: 1.0.0}", "name"),
            ("{oci: 'https://x/ne', version: 1.0.0}", "oci://"),
            ("{chart: ../outside}", "leaves the repository"),
            ("{chart: /abs}", "relative"),
            ("{chart: c, releaseName: Bad_Name}", "releaseName"),
            ("{chart: c, values: [1]}", "mapping"),
            ("{chart: c, valuse: {}}", "valuse"),
        ] {
            let err = app(bad).unwrap_err();
            assert_eq!(err.file, "apps/mon/app.yaml");
            assert!(err.message.contains(says), "{bad}: {err}");
        }
    }
}

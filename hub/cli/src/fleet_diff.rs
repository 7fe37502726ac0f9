//! `convoy diff --base REF --head REF`: the fleet diff of a pull request. Both commits are read
//! from the local repository ([`crate::commit_tree`]) and the whole fleet is rendered at each with
//! the hub's engine ([`crate::app::render_for`]), no hub involved; then, per environment and
//! cluster, the objects added, changed (a unified YAML diff) and removed, with Secret values and
//! SOPS ciphertext redacted, clusters whose diffs are identical grouped, printed as text, as a
//! Markdown pull-request comment or as JSON.
//!
//! Decisions: which environments a change targets ([`select_environments`]: those whose branch
//! is the base's; `--all-envs` every one), where the fleet model is read ([`FleetModel`]: from
//! base and head when the base is the fleet branch, else from the fleet branch for both), where
//! apps are read (from base and head, for every environment rendered — with `--all-envs` too,
//! so each environment shows the change under its own overlays and clusters), what differs
//! between two rendered fleets ([`diff`]: an app that does not render on a side is an error,
//! never its objects removed), what a reviewer sees of a Secret or SOPS value ([`redact`]),
//! which clusters read as one ([`group`]), what fits a comment ([`FleetDiff::markdown`]) and the
//! exit status ([`FleetDiff::exit_code`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use convoy_render::Source;
use convoy_render::fleet::{self, ChartLocation, Cluster, Fleet, FleetError};
use convoy_shared::model::ObjectRef;
use serde::Serialize;
use serde_json::Value;

use crate::app::{RemoteCharts, render_for};
use crate::commit_tree::{Blobs, GitError, Repository, Resolved, branch_of};
use crate::short;

/// What a Markdown answer holds at most: GitHub refuses comments over 65,536 characters.
pub const COMMENT_CAP: usize = 60_000;

/// A Secret's value, or SOPS ciphertext, as the diff shows it.
pub const REDACTED: &str = "<redacted>";
/// The same, on the head side, when the value differs from the base's.
pub const REDACTED_CHANGED: &str = "<redacted: changed>";

/// What `convoy diff --base --head` was asked.
#[derive(Debug, Clone)]
pub struct Request {
    /// The repository (default: the checkout the current directory is in).
    pub repo: Option<PathBuf>,
    pub base: String,
    pub head: String,
    pub all_envs: bool,
}

/// Why the fleet diff could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{side} '{written}' ({commit}): {source}; fix it there and run the diff again")]
    Fleet {
        side: &'static str,
        written: String,
        commit: String,
        #[source]
        source: FleetError,
    },
    #[error(
        "the fleet branch '{branch}' (convoy.yaml's fleetBranch, where convoy.yaml and clusters/ are read) is neither a branch of {dir} nor origin/{branch}: fetch it (`git fetch origin {branch}`)"
    )]
    NoFleetBranch { branch: String, dir: PathBuf },
    #[error(
        "base '{base}' is branch '{branch}', which no environment reads (convoy.yaml: {}): diff against an environment's branch, or pass --all-envs to render every environment",
        environments.iter().map(|(name, branch)| format!("{name} from {branch}")).collect::<Vec<_>>().join(", ")
    )]
    NoEnvironment { base: String, branch: String, environments: Vec<(String, String)> },
}

impl DiffError {
    /// A short word for the kind of failure, for `-o json` answers.
    pub fn kind(&self) -> &'static str {
        match self {
            DiffError::Git(GitError::UnknownRef { .. }) | DiffError::NoFleetBranch { .. } => "not-found",
            DiffError::Git(_) => "git",
            DiffError::Fleet { .. } => "render",
            DiffError::NoEnvironment { .. } => "usage",
        }
    }
}

/// A commit the diff is between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// The ref as given.
    #[serde(rename = "ref")]
    pub reference: String,
    pub commit: String,
    /// The branch it names (the base's picks the environments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// Where `convoy.yaml` and `clusters/` were read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetModel {
    /// The fleet branch (convoy.yaml's `fleetBranch`).
    pub branch: String,
    /// `None` when the base is the fleet branch: the model is read from base and head each, so
    /// a change adding a cluster or editing convoy.yaml shows. Otherwise the fleet branch's
    /// commit (local branch, else `origin/<branch>`), read once for both sides: the change
    /// cannot move clusters between environments until it reaches the fleet branch.
    pub commit: Option<String>,
}

/// An environment the diff renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub branch: String,
}

/// The environments to render: those whose branch is `branch` (the base's), in base or head's
/// fleet model, or all with `all_envs`; in head's promotion order, then any only the base has.
pub fn select_environments(base: &Fleet, head: &Fleet, branch: &str, all_envs: bool) -> Vec<Target> {
    let mut seen = BTreeSet::new();
    let both = head.environments.iter().chain(&base.environments);
    let reads_branch = |name: &str| both.clone().any(|e| e.name == name && e.branch == branch);
    both.clone()
        .filter(|e| seen.insert(e.name.clone()))
        .filter(|e| all_envs || reads_branch(&e.name))
        .map(|e| Target { name: e.name.clone(), branch: e.branch.clone() })
        .collect()
}

/// Why an app (or a cluster file) did not load or render on one side.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Failure {
    /// The file, or the overlay directory or chart rendered.
    pub file: String,
    pub message: String,
}

impl From<&FleetError> for Failure {
    fn from(e: &FleetError) -> Self {
        Failure { file: e.file.clone(), message: e.message.clone() }
    }
}

/// One cluster's apps on one side: app → its objects, or why it did not render.
pub type Apps = BTreeMap<String, Result<Vec<Value>, Failure>>;

/// What one side renders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderedFleet {
    /// Environment → cluster → apps.
    pub environments: BTreeMap<String, BTreeMap<String, Apps>>,
    /// Cluster files that do not load, by the cluster name their file gives.
    pub broken_clusters: BTreeMap<String, Failure>,
}

/// Which side a render error is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    Base,
    Head,
    /// The same error at base and head: the change did not cause it.
    Both,
}

/// A render error of one app (or cluster file) of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The app; `None` for a cluster file that does not load.
    pub app: Option<String>,
    pub side: Side,
    pub file: String,
    pub message: String,
}

/// One object that differs, with its unified YAML diff (values redacted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    pub app: String,
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    /// `--- base` / `+++ head` hunks; `/dev/null` for the side an object is not on.
    pub diff: String,
}

impl ObjectDiff {
    fn order(&self) -> (&str, &str, &str, &str, &str) {
        (&self.app, &self.kind, &self.namespace, &self.name, &self.api_version)
    }
}

/// What changes on one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub added: Vec<ObjectDiff>,
    pub changed: Vec<ObjectDiff>,
    pub removed: Vec<ObjectDiff>,
    pub errors: Vec<Problem>,
}

impl Changes {
    /// Nothing to say about the cluster.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty() && self.errors.is_empty()
    }

    /// The change does something to the cluster (errors both sides share do not count).
    pub fn is_change(&self) -> bool {
        !(self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty())
            || self.errors.iter().any(|e| e.side != Side::Both)
    }

    /// Every object entry, as a patch reads: by app, then object.
    fn objects(&self) -> Vec<&ObjectDiff> {
        let mut all: Vec<&ObjectDiff> = self.added.iter().chain(&self.changed).chain(&self.removed).collect();
        all.sort_by(|a, b| a.order().cmp(&b.order()));
        all
    }

    /// "1 added, 2 changed, 1 render error".
    fn counts(&self) -> String {
        let parts = [
            (self.added.len(), "added"),
            (self.changed.len(), "changed"),
            (self.removed.len(), "removed"),
            (self.errors.len(), if self.errors.len() == 1 { "render error" } else { "render errors" }),
        ];
        let said: Vec<String> = parts.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
        said.join(", ")
    }
}

/// Clusters of one environment whose changes are the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterGroup {
    /// Sorted.
    pub clusters: Vec<String>,
    #[serde(flatten)]
    pub changes: Changes,
}

impl ClusterGroup {
    /// "prod-eu-1, prod-eu-2, … (12 clusters)", or every name when there are few.
    pub fn title(&self) -> String {
        match self.clusters.as_slice() {
            [one] => one.clone(),
            names if names.len() <= 3 => format!("{} ({} clusters)", names.join(", "), names.len()),
            names => format!("{}, {}, … ({} clusters)", names[0], names[1], names.len()),
        }
    }
}

/// One environment's diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvDiff {
    /// The environment and its branch, as convoy.yaml names them (the diff reads its apps from
    /// base and head, not from that branch).
    pub name: String,
    pub branch: String,
    /// Its clusters (at base or at head) with something to say, grouped (ordered by their
    /// first cluster), and those with nothing to say.
    pub groups: Vec<ClusterGroup>,
    pub unchanged: Vec<String>,
}

impl EnvDiff {
    /// How many clusters the environment has, at base or at head.
    pub fn cluster_count(&self) -> usize {
        self.groups.iter().map(|g| g.clusters.len()).sum::<usize>() + self.unchanged.len()
    }
}

/// Totals over every cluster (an object changed on 12 clusters counts 12).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Environments rendered, their clusters (at base or at head), and the clusters the change
    /// does something to.
    pub environments: usize,
    pub clusters: usize,
    pub clusters_changed: usize,
    #[serde(flatten)]
    pub objects: Tally,
}

/// Objects added, changed and removed, and render errors at head (new or not), over every
/// cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub errors: usize,
}

/// The answer of `convoy diff --base --head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetDiff {
    /// The totals; per environment, in promotion order; then the cluster files that do not
    /// load where no cluster's diff tells it.
    pub summary: Summary,
    pub environments: Vec<EnvDiff>,
    pub errors: Vec<Problem>,
    #[serde(flatten)]
    pub compared: Compared,
}

/// What a diff compared, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Compared {
    pub base: Revision,
    pub head: Revision,
    pub fleet_model: FleetModel,
    pub all_envs: bool,
}

/// Renders both sides and diffs them.
pub fn run(request: &Request) -> Result<FleetDiff, DiffError> {
    let repo = Repository::open(request.repo.as_deref())?;
    let base = repo.resolve(&request.base)?;
    let head = repo.resolve(&request.head)?;
    let remotes = repo.remotes()?;
    let branch = branch_of(&base, &remotes);
    let mut blobs = Blobs::new();
    let base_tree: Arc<dyn Source> = Arc::new(repo.tree(&base.commit, &mut blobs)?);
    let same = base.commit == head.commit;
    let head_tree: Arc<dyn Source> =
        if same { base_tree.clone() } else { Arc::new(repo.tree(&head.commit, &mut blobs)?) };
    let load = |side: &'static str, at: &Resolved, src: &dyn Source| {
        Fleet::load(src).map_err(|source| DiffError::Fleet {
            side,
            written: at.written.clone(),
            commit: short(&at.commit).to_string(),
            source,
        })
    };
    let fleet_branch = fleet::fleet_branch_of(base_tree.as_ref()).unwrap_or_else(|_| "main".into());
    let (base_fleet, head_fleet, model) = if branch == fleet_branch {
        let model = FleetModel { branch: fleet_branch, commit: None };
        (load("base", &base, base_tree.as_ref())?, load("head", &head, head_tree.as_ref())?, model)
    } else {
        let at = repo
            .branch(&fleet_branch)?
            .ok_or_else(|| DiffError::NoFleetBranch { branch: fleet_branch.clone(), dir: repo.dir().into() })?;
        let fleet = load("fleet branch", &at, &repo.tree(&at.commit, &mut blobs)?)?;
        (fleet.clone(), fleet, FleetModel { branch: fleet_branch, commit: Some(at.commit) })
    };
    drop(blobs);
    let targets = select_environments(&base_fleet, &head_fleet, &branch, request.all_envs);
    if targets.is_empty() {
        return Err(DiffError::NoEnvironment {
            base: base.written,
            branch,
            environments: base_fleet.environments.iter().map(|e| (e.name.clone(), e.branch.clone())).collect(),
        });
    }
    let charts = RemoteCharts::default();
    let base_rendered = render_side(&base_tree, &base_fleet, &targets, &charts);
    let head_rendered =
        if same { base_rendered.clone() } else { render_side(&head_tree, &head_fleet, &targets, &charts) };
    let revision = |at: Resolved, branch: Option<String>| Revision { reference: at.written, commit: at.commit, branch };
    // A commit id or an expression names no branch.
    let base_branch = (base.full_name.is_some() || branch != base.written).then_some(branch);
    let compared = Compared {
        base: revision(base, base_branch),
        head: revision(head, None),
        fleet_model: model,
        all_envs: request.all_envs,
    };
    Ok(FleetDiff::new(compared, &targets, &base_rendered, &head_rendered))
}

/// Every cluster of `targets` in `fleet` with every app its environment's apps send it,
/// rendered from `src` (clusters in parallel).
fn render_side(src: &Arc<dyn Source>, fleet: &Fleet, targets: &[Target], charts: &RemoteCharts) -> RenderedFleet {
    let specs: BTreeMap<&str, _> = targets
        .iter()
        .filter_map(|t| fleet.environment(&t.name))
        .map(|env| (env.name.as_str(), fleet::load_apps(src.as_ref(), env)))
        .collect();
    let jobs: Vec<(&Cluster, _)> =
        fleet.clusters.values().filter_map(|c| specs.get(c.environment.as_str()).map(|apps| (c, apps))).collect();
    let rendered = parallel(&jobs, |(cluster, apps)| {
        let mut out = Apps::new();
        for (name, spec) in apps.iter() {
            let result = match spec {
                Err(e) => Err(Failure::from(e)),
                Ok(spec) if !spec.targets(cluster) => continue,
                Ok(spec) => render_for(src, spec, cluster, charts).map_err(|e| {
                    let file = match spec.helm.as_ref().map(|h| &h.chart) {
                        Some(ChartLocation::Path(path)) => path.clone(),
                        Some(ChartLocation::Remote(remote)) => remote.to_string(),
                        None => convoy_render::app::overlay_dir(&**src, name, &cluster.name, &cluster.environment),
                    };
                    Failure { file, message: e.to_string() }
                }),
            };
            out.insert(name.clone(), result);
        }
        out
    });
    let mut side = RenderedFleet::default();
    for ((cluster, _), apps) in jobs.iter().zip(rendered) {
        side.environments.entry(cluster.environment.clone()).or_default().insert(cluster.name.clone(), apps);
    }
    for e in &fleet.cluster_errors {
        let name = e.file.rsplit('/').next().unwrap_or(&e.file);
        let name = name.strip_suffix(".yaml").or_else(|| name.strip_suffix(".yml")).unwrap_or(name);
        side.broken_clusters.insert(name.to_string(), Failure::from(e));
    }
    side
}

/// `work` over `items` on every core, results in the items' order.
fn parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len()).max(1);
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(at) else { return mine };
                        mine.push((at, work(item)));
                    }
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

impl FleetDiff {
    /// The diff of the two rendered sides of `targets`.
    pub fn new(compared: Compared, targets: &[Target], base: &RenderedFleet, head: &RenderedFleet) -> FleetDiff {
        let (environments, errors) = diff(base, head, targets);
        let summary = tally(&environments, &errors);
        FleetDiff { summary, environments, errors, compared }
    }

    /// For CI: 2 when the head renders with an error the base did not have (the change breaks
    /// something), else 1 when anything changes, else 0.
    pub fn exit_code(&self) -> u8 {
        let mut problems =
            self.environments.iter().flat_map(|e| &e.groups).flat_map(|g| &g.changes.errors).chain(&self.errors);
        if problems.any(|p| p.side == Side::Head) {
            2
        } else if self.summary.clusters_changed > 0 || self.errors.iter().any(|p| p.side != Side::Both) {
            1
        } else {
            0
        }
    }

    /// The command that prints all of it.
    fn command(&self) -> String {
        let all = if self.compared.all_envs { " --all-envs" } else { "" };
        format!(
            "convoy diff --base {} --head {}{all}",
            shell_word(&self.compared.base.reference),
            shell_word(&self.compared.head.reference)
        )
    }

    fn sides(&self, code: fn(&str) -> String) -> String {
        let branch = self.compared.base.branch.as_deref().filter(|b| *b != self.compared.base.reference);
        let base = match branch {
            Some(branch) => format!(
                "{} (branch {branch} at {})",
                code(&self.compared.base.reference),
                short(&self.compared.base.commit)
            ),
            None => format!("{} at {}", code(&self.compared.base.reference), short(&self.compared.base.commit)),
        };
        format!("base {base} → head {} at {}", code(&self.compared.head.reference), short(&self.compared.head.commit))
    }

    fn model_line(&self) -> String {
        match &self.compared.fleet_model.commit {
            None => format!(
                "convoy.yaml and clusters/ from base and head (the base is the fleet branch {})",
                self.compared.fleet_model.branch
            ),
            Some(commit) => format!(
                "convoy.yaml and clusters/ from the fleet branch {} at {}, for both sides",
                self.compared.fleet_model.branch,
                short(commit)
            ),
        }
    }

    fn summary_line(&self) -> String {
        let (s, objects) = (&self.summary, &self.summary.objects);
        let names: Vec<&str> = self.environments.iter().map(|e| e.name.as_str()).collect();
        let envs = format!("{} ({})", plural(s.environments, "environment"), names.join(", "));
        let errors = if objects.errors > 0 {
            format!(", {} at head", plural(objects.errors, "render error"))
        } else {
            String::new()
        };
        if s.clusters_changed == 0 && objects.added + objects.changed + objects.removed == 0 {
            return format!("no change to the {} of {envs}{errors}", plural(s.clusters, "cluster"));
        }
        format!(
            "{envs}: {} of {} changed; objects: {} added, {} changed, {} removed{errors}",
            s.clusters_changed,
            plural(s.clusters, "cluster"),
            objects.added,
            objects.changed,
            objects.removed
        )
    }

    /// Plain text for a terminal or a CI log.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n{}\n{}\n", self.sides(|r| r.to_string()), self.model_line(), self.summary_line());
        for env in &self.environments {
            let counted = tally(std::slice::from_ref(env), &[]);
            out += &format!(
                "\n{} (branch {}): {} of {} changed\n",
                env.name,
                env.branch,
                counted.clusters_changed,
                plural(env.cluster_count(), "cluster")
            );
            for group in &env.groups {
                out += &format!("* {}: {}\n", group.title(), group.changes.counts());
                if group.clusters.len() > 3 {
                    out += &format!("  clusters: {}\n", group.clusters.join(", "));
                }
                for problem in &group.changes.errors {
                    out += &format!("  {}\n", problem_line(problem, |s| s.to_string()));
                }
                for object in group.changes.objects() {
                    out += &object.diff;
                }
            }
            if !env.unchanged.is_empty() {
                out += &format!("unchanged: {}\n", env.unchanged.join(", "));
            }
        }
        if !self.errors.is_empty() {
            out += "\ncluster files that do not load:\n";
            for problem in &self.errors {
                out += &format!("  {}\n", problem_line(problem, |s| s.to_string()));
            }
        }
        out
    }

    /// Markdown for a pull-request comment, at most `cap` bytes: a summary table, then per
    /// environment a fold per cluster group with its diff. Groups that do not fit are listed
    /// without their diff (or not at all), and a note at the end names them and the command
    /// that prints everything.
    pub fn markdown(&self, cap: usize) -> String {
        let mut top = format!(
            "### Convoy fleet diff\n\n{}  \n{}\n\n**{}**\n",
            self.sides(code),
            self.model_line(),
            self.summary_line()
        );
        if !self.environments.is_empty() {
            top += "\n| Environment | Clusters changed | Added | Changed | Removed | Render errors at head |\n";
            top += "|:--|--:|--:|--:|--:|--:|\n";
            for env in &self.environments {
                let t = tally(std::slice::from_ref(env), &[]);
                let objects = &t.objects;
                top += &format!(
                    "| {} ({}) | {} of {} | {} | {} | {} | {} |\n",
                    env.name,
                    code(&env.branch),
                    t.clusters_changed,
                    t.clusters,
                    objects.added,
                    objects.changed,
                    objects.removed,
                    objects.errors
                );
            }
        }
        // Room kept for the note on what was cut.
        const NOTE_ROOM: usize = 1_500;
        let mut body = String::new();
        let mut cut: Vec<String> = Vec::new();
        let fits = |body: &str, more: &str| top.len() + body.len() + more.len() + NOTE_ROOM <= cap;
        for env in &self.environments {
            let heading = format!("\n#### {} (branch {})\n\n", env.name, code(&env.branch));
            if !fits(&body, &heading) {
                cut.extend(env.groups.iter().map(|g| format!("{}: {}", env.name, g.title())));
                continue;
            }
            body += &heading;
            for group in &env.groups {
                let fold = fold(group);
                if fits(&body, &fold) {
                    body += &fold;
                    continue;
                }
                cut.push(format!("{}: {}", env.name, group.title()));
                let line = format!("- **{}**: {} (diff cut)\n", group.title(), group.changes.counts());
                if fits(&body, &line) {
                    body += &line;
                }
            }
            if !env.unchanged.is_empty() {
                let line = format!("\nUnchanged: {}\n", listed(&env.unchanged, 20));
                if fits(&body, &line) {
                    body += &line;
                }
            }
        }
        if !self.errors.is_empty() {
            let mut section = String::from("\n#### Cluster files that do not load\n\n");
            for problem in &self.errors {
                section += &format!("- {}\n", problem_line(problem, code));
            }
            if fits(&body, &section) {
                body += &section;
            } else {
                cut.push("the cluster files that do not load".into());
            }
        }
        let mut out = top + &body;
        if !cut.is_empty() {
            let mut named = Vec::new();
            for (i, what) in cut.iter().enumerate() {
                if named.iter().map(String::len).sum::<usize>() + what.len() > NOTE_ROOM / 2 {
                    named.push(format!("and {} more", cut.len() - i));
                    break;
                }
                named.push(what.clone());
            }
            out += &format!(
                "\n> **Cut to fit a comment** ({cap} characters at most): the diffs of {}. All of it: `{} -o text`\n",
                named.join("; "),
                self.command()
            );
        }
        out
    }
}

/// One cluster group as a Markdown fold: its errors, then its objects' diffs.
fn fold(group: &ClusterGroup) -> String {
    let mut inner = String::new();
    if group.clusters.len() > 3 {
        inner += &format!("Clusters: {}\n\n", group.clusters.join(", "));
    }
    if !group.changes.errors.is_empty() {
        let lines: String = group.changes.errors.iter().map(|p| problem_line(p, |s| s.to_string()) + "\n").collect();
        let fence = fence(&lines);
        inner += &format!("{fence}text\n{lines}{fence}\n\n");
    }
    let diffs: String = group.changes.objects().iter().map(|o| o.diff.as_str()).collect();
    if !diffs.is_empty() {
        let fence = fence(&diffs);
        inner += &format!("{fence}diff\n{diffs}{fence}\n\n");
    }
    format!("<details><summary><b>{}</b>: {}</summary>\n\n{inner}</details>\n\n", group.title(), group.changes.counts())
}

/// A Markdown code fence longer than any run of backticks in `text`.
fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// `text` as inline Markdown code.
fn code(text: &str) -> String {
    if text.contains('`') { format!("`` {text} ``") } else { format!("`{text}`") }
}

/// `text` as one word for a POSIX shell.
fn shell_word(text: &str) -> String {
    let plain = text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-~^@:".contains(c));
    if plain && !text.is_empty() { text.to_string() } else { format!("'{}'", text.replace('\'', r"'\''")) }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// At most `most` of `names`, then how many more.
fn listed(names: &[String], most: usize) -> String {
    if names.len() <= most {
        return names.join(", ");
    }
    format!("{}, and {} more", names[..most].join(", "), names.len() - most)
}

fn problem_line(p: &Problem, code: fn(&str) -> String) -> String {
    let side = match p.side {
        Side::Base => "at base",
        Side::Head => "at head",
        Side::Both => "at base and head",
    };
    match &p.app {
        Some(app) => format!("render error {side}, app {} ({}): {}", code(app), code(&p.file), p.message),
        None => format!("cluster file error {side} ({}): {}", code(&p.file), p.message),
    }
}

/// Totals of `environments` and fleet-level `errors`.
fn tally(environments: &[EnvDiff], errors: &[Problem]) -> Summary {
    let at_head = |problems: &[Problem]| problems.iter().filter(|p| p.side != Side::Base).count();
    let mut sum = Summary { environments: environments.len(), ..Summary::default() };
    sum.objects.errors = at_head(errors);
    for env in environments {
        sum.clusters += env.cluster_count();
        for group in &env.groups {
            let n = group.clusters.len();
            if group.changes.is_change() {
                sum.clusters_changed += n;
            }
            sum.objects.added += n * group.changes.added.len();
            sum.objects.changed += n * group.changes.changed.len();
            sum.objects.removed += n * group.changes.removed.len();
            sum.objects.errors += n * at_head(&group.changes.errors);
        }
    }
    sum
}

/// What differs between two rendered sides, per environment of `targets` (clusters grouped),
/// and the cluster files that do not load where no cluster's diff says so.
pub fn diff(base: &RenderedFleet, head: &RenderedFleet, targets: &[Target]) -> (Vec<EnvDiff>, Vec<Problem>) {
    let none = BTreeMap::new();
    let mut told = BTreeSet::new();
    let mut environments = Vec::new();
    for target in targets {
        let at_base = base.environments.get(&target.name).unwrap_or(&none);
        let at_head = head.environments.get(&target.name).unwrap_or(&none);
        let names: BTreeSet<&String> = at_base.keys().chain(at_head.keys()).collect();
        let mut clusters = Vec::new();
        for name in &names {
            let base_broken = broken_file(base, at_base.get(*name), name);
            let head_broken = broken_file(head, at_head.get(*name), name);
            let changes = if base_broken.is_some() || head_broken.is_some() {
                told.insert(name.to_string());
                Changes { errors: problems(None, base_broken, head_broken), ..Changes::default() }
            } else {
                diff_cluster(at_base.get(*name), at_head.get(*name))
            };
            clusters.push((name.to_string(), changes));
        }
        let (groups, unchanged) = group(clusters);
        environments.push(EnvDiff { name: target.name.clone(), branch: target.branch.clone(), groups, unchanged });
    }
    let broken: BTreeSet<&String> = base.broken_clusters.keys().chain(head.broken_clusters.keys()).collect();
    let errors = broken
        .into_iter()
        .filter(|name| !told.contains(*name))
        .flat_map(|name| {
            problems(None, base.broken_clusters.get(name.as_str()), head.broken_clusters.get(name.as_str()))
        })
        .collect();
    (environments, errors)
}

/// Why `cluster` is missing on `side` (no `apps`) when its file does not load there: that
/// error is its diff, never its objects added or removed.
fn broken_file<'a>(side: &'a RenderedFleet, apps: Option<&Apps>, cluster: &str) -> Option<&'a Failure> {
    if apps.is_none() { side.broken_clusters.get(cluster) } else { None }
}

/// The problems of a pair of failures: one for both sides when they are the same.
fn problems(app: Option<&str>, base: Option<&Failure>, head: Option<&Failure>) -> Vec<Problem> {
    let problem = |side, f: &Failure| Problem {
        app: app.map(str::to_string),
        side,
        file: f.file.clone(),
        message: f.message.clone(),
    };
    match (base, head) {
        (Some(b), Some(h)) if b == h => vec![problem(Side::Both, b)],
        _ => base.map(|b| problem(Side::Base, b)).into_iter().chain(head.map(|h| problem(Side::Head, h))).collect(),
    }
}

/// What changes on one cluster between its apps at base and at head (`None`: the cluster is
/// not on that side). An app that does not render on a side is that side's error, and its
/// objects are not compared.
fn diff_cluster(base: Option<&Apps>, head: Option<&Apps>) -> Changes {
    let none = Apps::new();
    let (base, head) = (base.unwrap_or(&none), head.unwrap_or(&none));
    let mut changes = Changes::default();
    for app in base.keys().chain(head.keys()).collect::<BTreeSet<_>>() {
        let (at_base, at_head) = (base.get(app).map(Result::as_ref), head.get(app).map(Result::as_ref));
        let (base_failed, head_failed) = (at_base.and_then(Result::err), at_head.and_then(Result::err));
        if base_failed.is_some() || head_failed.is_some() {
            changes.errors.extend(problems(Some(app), base_failed, head_failed));
            continue;
        }
        let (base_objects, head_objects) = (at_base.and_then(Result::ok), at_head.and_then(Result::ok));
        diff_objects(
            app,
            base_objects.map_or(&[], Vec::as_slice),
            head_objects.map_or(&[], Vec::as_slice),
            &mut changes,
        );
    }
    changes
}

/// Adds what differs between one app's objects at base and at head to `into`.
fn diff_objects(app: &str, base: &[Value], head: &[Value], into: &mut Changes) {
    let (base, head) = (by_ref(base), by_ref(head));
    for key in base.keys().chain(head.keys()).collect::<BTreeSet<_>>() {
        let (at_base, at_head) = (base.get(key).copied(), head.get(key).copied());
        if at_base == at_head {
            continue;
        }
        let yaml = |object: Option<Value>| object.map(|o| convoy_render::to_yaml(&[o])).unwrap_or_default();
        let (old, new) = (yaml(at_base.map(|b| redact(b, None))), yaml(at_head.map(|h| redact(h, at_base))));
        if old == new {
            continue; // equal as YAML (1 and 1.0): nothing a reviewer could see
        }
        let label = format!("{app}: {key}");
        let from = if at_base.is_some() { label.as_str() } else { "/dev/null" };
        let to = if at_head.is_some() { label.as_str() } else { "/dev/null" };
        let diff =
            similar::TextDiff::from_lines(&old, &new).unified_diff().context_radius(3).header(from, to).to_string();
        let entry = ObjectDiff {
            app: app.to_string(),
            api_version: key.api_version(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            diff,
        };
        match (at_base, at_head) {
            (None, _) => into.added.push(entry),
            (_, None) => into.removed.push(entry),
            _ => into.changed.push(entry),
        }
    }
}

fn by_ref(objects: &[Value]) -> BTreeMap<ObjectRef, &Value> {
    objects.iter().map(|o| (ObjectRef::of(o), o)).collect()
}

/// `object` as a reviewer may see it: a Secret's `data` and `stringData` values, every SOPS
/// ciphertext (`ENC[…]`, anywhere) and a `sops` metadata block replaced by [`REDACTED`], or by
/// [`REDACTED_CHANGED`] where `base` (the same object at base, for the head side) holds another
/// value at that place — so a reviewer sees that a key changed, never a value. A key `base` lacks
/// reads [`REDACTED`]: the diff shows it added.
pub fn redact(object: &Value, base: Option<&Value>) -> Value {
    let marker = |now: &Value, then: Option<&Value>| {
        Value::String(if then.is_some_and(|then| then != now) { REDACTED_CHANGED } else { REDACTED }.into())
    };
    let mut out = object.clone();
    redact_ciphertext(&mut out, base, &marker);
    if object["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            let Some(Value::Object(values)) = out.get_mut(field) else { continue };
            for (key, value) in values.iter_mut() {
                *value = marker(&object[field][key], base.and_then(|b| b.get(field)).and_then(|m| m.get(key)));
            }
        }
    }
    if let Some(sops) = object.get("sops") {
        out["sops"] = marker(sops, base.and_then(|b| b.get("sops")));
    }
    out
}

fn redact_ciphertext(value: &mut Value, base: Option<&Value>, marker: &dyn Fn(&Value, Option<&Value>) -> Value) {
    match value {
        Value::String(text) if text.starts_with("ENC[") => {
            let now = Value::String(std::mem::take(text));
            *value = marker(&now, base);
        }
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                redact_ciphertext(v, base.and_then(|b| b.get(key.as_str())), marker);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                redact_ciphertext(v, base.and_then(|b| b.get(i)), marker);
            }
        }
        _ => {}
    }
}

/// Clusters with the same changes as one group, in the order of their names (a group where its
/// first cluster is); clusters with nothing to say apart.
pub fn group(mut clusters: Vec<(String, Changes)>) -> (Vec<ClusterGroup>, Vec<String>) {
    clusters.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups: Vec<ClusterGroup> = Vec::new();
    let mut at: HashMap<Changes, usize> = HashMap::new();
    let mut unchanged = Vec::new();
    for (name, changes) in clusters {
        if changes.is_empty() {
            unchanged.push(name);
        } else if let Some(&i) = at.get(&changes) {
            groups[i].clusters.push(name);
        } else {
            at.insert(changes.clone(), groups.len());
            groups.push(ClusterGroup { clusters: vec![name], changes });
        }
    }
    (groups, unchanged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_config(name: &str, value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "web"}, "data": {"v": value}})
    }

    fn mk_secret(data: Value, string_data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "web"}, "data": data, "stringData": string_data})
    }

    /// One side: environment `prod` with `clusters` (name, app `web`'s objects or failure).
    fn mk_side(clusters: &[(&str, Result<Vec<Value>, Failure>)]) -> RenderedFleet {
        let mut side = RenderedFleet::default();
        let env = side.environments.entry("prod".into()).or_default();
        for (name, web) in clusters {
            env.insert(name.to_string(), Apps::from([("web".to_string(), web.clone())]));
        }
        side
    }

    fn prod() -> Vec<Target> {
        vec![Target { name: "prod".into(), branch: "main".into() }]
    }

    fn mk_diff(base: &RenderedFleet, head: &RenderedFleet) -> FleetDiff {
        let revision = |r: &str, c: &str| Revision { reference: r.into(), commit: c.repeat(40), branch: None };
        let compared = Compared {
            base: revision("origin/main", "a"),
            head: revision("HEAD", "b"),
            fleet_model: FleetModel { branch: "main".into(), commit: None },
            all_envs: false,
        };
        FleetDiff::new(compared, &prod(), base, head)
    }

    #[test]
    fn clusters_with_identical_diffs_are_one_group() {
        let old = || Ok(vec![mk_config("web", "1")]);
        let base = mk_side(&[("eu-1", old()), ("eu-2", old()), ("eu-3", old()), ("us-1", old()), ("us-2", old())]);
        let new = || Ok(vec![mk_config("web", "2")]);
        let head = mk_side(&[("eu-1", new()), ("eu-2", new()), ("eu-3", new()), ("us-1", old()), ("us-2", Ok(vec![]))]);
        let diff = mk_diff(&base, &head);
        let env = &diff.environments[0];
        assert_eq!(env.groups.len(), 2, "{env:#?}");
        assert_eq!(env.groups[0].clusters, ["eu-1", "eu-2", "eu-3"]);
        assert_eq!(env.groups[0].title(), "eu-1, eu-2, eu-3 (3 clusters)");
        assert_eq!(env.groups[1].clusters, ["us-2"]);
        assert_eq!(env.unchanged, ["us-1"]);
        assert_eq!((diff.summary.clusters, diff.summary.clusters_changed, diff.summary.objects.changed), (5, 4, 3));
        let many =
            ClusterGroup { clusters: (1..=12).map(|i| format!("prod-eu-{i}")).collect(), changes: Changes::default() };
        assert_eq!(many.title(), "prod-eu-1, prod-eu-2, … (12 clusters)");
        assert_eq!(diff.exit_code(), 1);
        assert_eq!(mk_diff(&base, &base).exit_code(), 0, "base == head: no change");
    }

    #[test]
    fn objects_added_changed_and_removed_and_a_render_error_is_no_removal() {
        let base = mk_side(&[
            ("a", Ok(vec![mk_config("kept", "1"), mk_config("edited", "1"), mk_config("gone", "1")])),
            ("b", Ok(vec![mk_config("kept", "1")])),
        ]);
        let broken = Failure { file: "apps/web/envs/prod".into(), message: "kustomization.yaml: bad".into() };
        let head = mk_side(&[
            ("a", Ok(vec![mk_config("kept", "1"), mk_config("edited", "2"), mk_config("new", "1")])),
            ("b", Err(broken.clone())),
        ]);
        let diff = mk_diff(&base, &head);
        let groups = &diff.environments[0].groups;
        let names = |objects: &[ObjectDiff]| objects.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
        let a = &groups[0].changes;
        assert_eq!(
            (names(&a.added), names(&a.changed), names(&a.removed)),
            (vec!["new".into()], vec!["edited".into()], vec!["gone".into()])
        );
        assert!(a.changed[0].diff.contains("-  v: \"1\"\n+  v: \"2\"\n"), "{}", a.changed[0].diff);
        assert!(a.added[0].diff.starts_with("--- /dev/null\n+++ web: ConfigMap web/new\n"), "{}", a.added[0].diff);
        assert!(a.removed[0].diff.contains("+++ /dev/null"), "{}", a.removed[0].diff);
        let b = &groups[1].changes;
        assert!(b.removed.is_empty(), "an app that does not render at head is not its objects removed");
        assert_eq!(
            b.errors,
            [Problem {
                app: Some("web".into()),
                side: Side::Head,
                file: broken.file.clone(),
                message: broken.message.clone()
            }]
        );
        assert_eq!(diff.exit_code(), 2, "the head brings a render error");
        let both = mk_diff(&mk_side(&[("b", Err(broken.clone()))]), &mk_side(&[("b", Err(broken))]));
        assert_eq!(both.environments[0].groups[0].changes.errors[0].side, Side::Both);
        assert_eq!(both.exit_code(), 0, "an error the base has too is shown, not the change's");
        let text = diff.text();
        assert!(text.contains("render error at head, app web (apps/web/envs/prod): kustomization.yaml: bad"), "{text}");
    }

    #[test]
    fn secret_values_are_redacted_saying_which_changed() {
        let base = mk_secret(json!({"password": "aHVudGVyMg==", "user": "YWRtaW4="}), json!({"token": "s3cret-token"}));
        let head = mk_secret(
            json!({"password": "c3dvcmRmaXNo", "user": "YWRtaW4=", "extra": "bmV3"}),
            json!({"token": "s3cret-token"}),
        );
        let redacted = redact(&head, Some(&base));
        assert_eq!(redacted["data"], json!({"password": REDACTED_CHANGED, "user": REDACTED, "extra": REDACTED}));
        assert_eq!(redacted["stringData"], json!({"token": REDACTED}));
        let diff = mk_diff(&mk_side(&[("a", Ok(vec![base]))]), &mk_side(&[("a", Ok(vec![head]))]));
        let shown = serde_json::to_string(&diff).unwrap() + &diff.text() + &diff.markdown(COMMENT_CAP);
        for value in ["aHVudGVyMg", "c3dvcmRmaXNo", "YWRtaW4", "bmV3", "s3cret-token"] {
            assert!(!shown.contains(value), "{value} shown:\n{shown}");
        }
        let changed = &diff.environments[0].groups[0].changes.changed[0].diff;
        assert!(
            changed.contains("-  password: <redacted>\n+  extra: <redacted>\n+  password: '<redacted: changed>'\n"),
            "{changed}"
        );
    }

    #[test]
    fn sops_ciphertext_and_metadata_are_redacted() {
        let sops = |password: &str, mac: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"},
                "data": {"password": password, "host": "db.local", "list": ["ENC[AES256_GCM,data:aa,type:str]"]},
                "sops": {"mac": mac, "age": [{"recipient": "age1xyz", "enc": "-----BEGIN AGE-----"}]}})
        };
        let base = sops("ENC[AES256_GCM,data:Zm9v,iv:1,tag:2,type:str]", "ENC[AES256_GCM,data:bWFj,type:str]");
        let head = sops("ENC[AES256_GCM,data:YmFy,iv:3,tag:4,type:str]", "ENC[AES256_GCM,data:bmV3,type:str]");
        let redacted = redact(&head, Some(&base));
        assert_eq!(redacted["data"], json!({"password": REDACTED_CHANGED, "host": "db.local", "list": [REDACTED]}));
        assert_eq!(redacted["sops"], json!(REDACTED_CHANGED));
        assert_eq!(redact(&base, None)["sops"], json!(REDACTED));
        let diff = mk_diff(&mk_side(&[("a", Ok(vec![base]))]), &mk_side(&[("a", Ok(vec![head]))]));
        let shown = diff.text() + &diff.markdown(COMMENT_CAP);
        assert!(!shown.contains("ENC[") && !shown.contains("age1xyz") && !shown.contains("BEGIN AGE"), "{shown}");
        assert!(shown.contains("db.local"), "clear values stay: {shown}");
    }

    #[test]
    fn markdown_fits_the_cap_and_names_what_it_cut() {
        let big = |v: &str| Ok((0..40).map(|i| mk_config(&format!("cm-{i:02}"), &v.repeat(30))).collect::<Vec<_>>());
        let clusters: Vec<String> = (0..30).map(|i| format!("c-{i:02}")).collect();
        // Every cluster its own group: each renders its own value.
        let side =
            |v: &str| mk_side(&clusters.iter().map(|c| (c.as_str(), big(&format!("{v}{c}")))).collect::<Vec<_>>());
        let diff = mk_diff(&side("old"), &side("new"));
        let full = diff.markdown(usize::MAX);
        assert!(full.len() > 100_000 && !full.contains("Cut to fit"), "{} bytes", full.len());
        let capped = diff.markdown(COMMENT_CAP);
        assert!(capped.len() <= COMMENT_CAP, "{} bytes", capped.len());
        assert!(capped.contains("<details><summary><b>c-00</b>"), "the first groups are shown whole");
        assert!(capped.contains("- **c-29**: 40 changed (diff cut)"), "cut groups are still listed");
        let note = capped.rsplit("> **Cut to fit a comment**").next().unwrap();
        assert!(
            note.contains("prod: c-29") && note.contains("`convoy diff --base origin/main --head HEAD -o text`"),
            "{note}"
        );
        assert_eq!(capped.matches("```diff").count(), capped.matches("</details>").count());
        let small = diff.markdown(4_000);
        assert!(small.len() <= 4_000 && small.contains("Cut to fit"), "{small}");
    }

    #[test]
    fn environments_are_those_reading_the_bases_branch() {
        let fleet = |envs: &[(&str, &str)]| {
            let mut yaml = String::from("apiVersion: convoy.dev/v1\nkind: Fleet\nspec:\n  environments:\n");
            for (name, branch) in envs {
                yaml += &format!("  - {{name: {name}, branch: {branch}}}\n");
            }
            Fleet::load(&crate::commit_tree::CommitTree::of(&[("convoy.yaml", &yaml)], &[])).unwrap()
        };
        let base = fleet(&[("dev", "dev"), ("stage", "stage"), ("prod", "main")]);
        let head = fleet(&[("dev", "dev"), ("stage", "stage"), ("canary", "main"), ("prod", "main")]);
        let names = |targets: Vec<Target>| targets.into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(names(select_environments(&base, &base, "stage", false)), ["stage"]);
        assert_eq!(names(select_environments(&base, &head, "main", false)), ["canary", "prod"]);
        assert_eq!(names(select_environments(&base, &base, "feature/x", false)), Vec::<String>::new());
        assert_eq!(names(select_environments(&base, &head, "feature/x", true)), ["dev", "stage", "canary", "prod"]);
    }

    #[test]
    fn a_cluster_file_broken_at_head_is_its_error_not_its_objects_removed() {
        let base = mk_side(&[("a", Ok(vec![mk_config("web", "1")]))]);
        let mut head = RenderedFleet::default();
        let failure = Failure { file: "clusters/a.yaml".into(), message: "unknown field `lables`".into() };
        head.broken_clusters.insert("a".into(), failure);
        let diff = mk_diff(&base, &head);
        let changes = &diff.environments[0].groups[0].changes;
        assert!(changes.removed.is_empty() && changes.errors[0].side == Side::Head && changes.errors[0].app.is_none());
        assert!(diff.errors.is_empty(), "told once, in the cluster's diff");
        assert_eq!(diff.exit_code(), 2);
    }

    #[test]
    fn refs_in_the_rerun_command_are_quoted_for_a_shell() {
        assert_eq!(shell_word("origin/main"), "origin/main");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(fence("a ``` b"), "````");
    }
}

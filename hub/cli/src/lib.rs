//! The `convoy` CLI's library half: the config file with contexts, dialing the hub with a CLI
//! certificate, and printing answers as tables or JSON.
#![forbid(unsafe_code)]

pub mod app;
pub mod chart;
pub mod commit_tree;
pub mod fleet_diff;
pub mod login;
pub mod notifications;
pub mod promote;
pub mod schema;
pub mod ui;
pub mod users;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_shared::model::ObjectRef;
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use convoy_shared::proto::{
    AuditRecord, ClusterInfo, DiffResponse, DriftResponse, EnvsResponse, FleetEvent, Health, HistoryResponse,
    ObjectHealth, RolloutInfo, StatusResponse, WhoAmIResponse,
};
use convoy_shared::tls::{self, HubAddress};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

/// Errors the CLI shows its user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("could not read the config file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    ParseConfig { path: PathBuf, message: String },
    #[error("context '{name}' is not in {path}; it has: {known}")]
    UnknownContext { name: String, path: PathBuf, known: String },
    #[error(
        "no hub to talk to: pass --hub, --ca, --cert and --key, or a config file with --config / CONVOY_CONFIG (missing: {missing})"
    )]
    Incomplete { missing: String },
    #[error(transparent)]
    Pki(#[from] convoy_shared::pki::PkiError),
    #[error("{0}")]
    Tls(#[from] convoy_shared::tls::TlsError),
    #[error("{}", convoy_shared::link_error::explain(.0))]
    Call(#[from] tonic::Status),
    #[error("{0}")]
    Render(String),
    #[error(transparent)]
    Refused(#[from] promote::Refusal),
    #[error(transparent)]
    Promote(#[from] promote::PromoteError),
    #[error(transparent)]
    Ui(#[from] ui::UiError),
    #[error("sign-in failed: {0}")]
    SignIn(String),
    #[error("unknown schema '{0}': the schemas are fleet, cluster and app")]
    UnknownSchema(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    FleetDiff(#[from] fleet_diff::DiffError),
}

/// Exit status for a name that is not there (an environment, a cluster, an app, a context) or
/// a command line that is not complete, as clap exits for a bad flag.
pub const EXIT_USAGE: u8 = 2;

impl CliError {
    /// The process's exit status: [`EXIT_USAGE`] when the user named something that does not
    /// exist or left out what is needed, 1 for every other failure (a refused gate, an
    /// unreachable hub, a failed push).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::UnknownContext { .. } | CliError::Incomplete { .. } | CliError::UnknownSchema(_) => EXIT_USAGE,
            CliError::Refused(promote::Refusal::Unknown(_)) => EXIT_USAGE,
            CliError::Call(status) if status.code() == tonic::Code::NotFound => EXIT_USAGE,
            // `diff --base --head` says "changes" with 1 (for CI): each of its failures is 2.
            CliError::FleetDiff(_) => EXIT_USAGE,
            _ => 1,
        }
    }

    /// A short word for the kind of failure, for `-o json` answers.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::ReadConfig { .. } | CliError::ParseConfig { .. } => "config",
            CliError::UnknownContext { .. } | CliError::Incomplete { .. } => "usage",
            CliError::UnknownSchema(_) => "not-found",
            CliError::Write { .. } => "io",
            CliError::Pki(_) | CliError::Tls(_) => "tls",
            CliError::Call(status) if status.code() == tonic::Code::NotFound => "not-found",
            CliError::Call(status) if status.code() == tonic::Code::PermissionDenied => "denied",
            CliError::Call(_) => "hub",
            CliError::Render(_) => "render",
            CliError::Refused(promote::Refusal::Unknown(_)) => "not-found",
            CliError::Refused(promote::Refusal::NotReady { .. }) => "not-ready",
            CliError::Refused(_) => "refused",
            CliError::Promote(_) => "git",
            CliError::Ui(_) => "ui",
            CliError::SignIn(_) => "sign-in",
            CliError::FleetDiff(e) => e.kind(),
        }
    }
}

/// A failure as `-o json` and `-o yaml` print it on stdout: `{"error": {"kind", "message"}}`,
/// the one shape of every command's failure (the message goes to stderr too).
pub fn error_answer(output: Output, error: &CliError) -> Option<String> {
    #[derive(Serialize)]
    struct Answer<'a> {
        error: Failure<'a>,
    }
    #[derive(Serialize)]
    struct Failure<'a> {
        kind: &'a str,
        message: String,
    }
    structured(output, &Answer { error: Failure { kind: error.kind(), message: error.to_string() } })
}

/// The Git work tree `dir` is in (the nearest ancestor with `.git`), else `dir` itself.
pub fn repository_root(dir: &Path) -> PathBuf {
    checkout_root(dir).unwrap_or_else(|| std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// The Git work tree `dir` is in (the nearest ancestor with `.git`), if any.
pub fn checkout_root(dir: &Path) -> Option<PathBuf> {
    let start = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    start.ancestors().find(|a| a.join(".git").exists()).map(Path::to_path_buf)
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// The CLI config file: named contexts, each a hub and the certificate to reach it with.
/// Relative paths are relative to the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    #[serde(default)]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// How to reach one hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Context {
    pub name: String,
    pub hub: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl ConfigFile {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| CliError::ReadConfig { path: path.into(), source })?;
        let mut file: ConfigFile = serde_saphyr::from_str(&text)
            .map_err(|e| CliError::ParseConfig { path: path.into(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for ctx in &mut file.contexts {
            for p in [&mut ctx.ca, &mut ctx.cert, &mut ctx.key].into_iter().flatten() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(file)
    }

    /// The named context, else the current one, else the only one.
    pub fn context(&self, name: Option<&str>, path: &Path) -> Result<Context> {
        let wanted = name.map(str::to_string).or_else(|| self.current_context.clone());
        match wanted {
            Some(name) => {
                self.contexts.iter().find(|c| c.name == name).cloned().ok_or_else(|| CliError::UnknownContext {
                    name,
                    path: path.into(),
                    known: self.contexts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
            None => Ok(self.contexts.first().cloned().unwrap_or_default()),
        }
    }
}

impl Context {
    /// Fills what this context lacks from `other` (flags override the file).
    pub fn overridden_by(self, other: Context) -> Context {
        Context {
            name: self.name,
            hub: other.hub.or(self.hub),
            ca: other.ca.or(self.ca),
            cert: other.cert.or(self.cert),
            key: other.key.or(self.key),
            server_name: other.server_name.or(self.server_name),
        }
    }

    /// Dials the hub with this context's certificate.
    pub async fn connect(&self) -> Result<FleetServiceClient<Channel>> {
        Ok(FleetServiceClient::new(self.channel().await?))
    }

    /// Dials the hub presenting this context's certificate.
    pub async fn channel(&self) -> Result<Channel> {
        let missing: Vec<&str> = [
            ("hub", self.hub.is_none()),
            ("ca", self.ca.is_none()),
            ("cert", self.cert.is_none()),
            ("key", self.key.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        let (Some(hub), Some(ca), Some(cert), Some(key)) = (&self.hub, &self.ca, &self.cert, &self.key) else {
            return Err(CliError::Incomplete { missing: missing.join(", ") });
        };
        let material = tls::TlsMaterial::from_files(ca, cert, key)?;
        let config = tls::client_config(&material.ca_pem, Some((&material.cert_pem, &material.key_pem)))?;
        let address = HubAddress::parse(hub, self.server_name.as_deref())?;
        Ok(tls::connect(&address, config, Duration::from_secs(5)).await?)
    }

    /// Dials the hub presenting no certificate (signing in), trusting this context's CA.
    pub async fn connect_anonymous(&self) -> Result<Channel> {
        let (Some(hub), Some(ca)) = (&self.hub, &self.ca) else {
            let missing: Vec<&str> = [("hub", self.hub.is_none()), ("ca", self.ca.is_none())]
                .into_iter()
                .filter_map(|(name, absent)| absent.then_some(name))
                .collect();
            return Err(CliError::Incomplete { missing: missing.join(", ") });
        };
        let ca_pem = std::fs::read_to_string(ca).map_err(|source| CliError::ReadConfig { path: ca.clone(), source })?;
        let config = tls::client_config(&ca_pem, None)?;
        let address = HubAddress::parse(hub, self.server_name.as_deref())?;
        Ok(tls::connect(&address, config, Duration::from_secs(5)).await?)
    }
}

/// Output formats every command supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables and plain text for people (also `-o text`).
    #[value(alias = "text")]
    Table,
    Json,
    Yaml,
    /// A pull-request comment (`diff --base --head`); other commands print their table.
    Markdown,
}

/// Prints `value` as JSON or YAML; `None` for table output (the caller prints its table).
pub fn structured<T: Serialize>(output: Output, value: &T) -> Option<String> {
    match output {
        Output::Table | Output::Markdown => None,
        Output::Json => Some(serde_json::to_string_pretty(value).expect("proto types serialize") + "\n"),
        Output::Yaml => Some(serde_saphyr::to_string(value).expect("proto types serialize")),
    }
}

/// When tables and status lines are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Only when stdout is a terminal and NO_COLOR is unset.
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
            ColorChoice::Always => true,
            ColorChoice::Never => false,
        }
    }
}

/// `text` coloured for a terminal when `color`, else as it is.
pub fn styled(color: bool, text: String) -> String {
    if color { paint(&text) } else { text }
}

/// What a command prints: `value` as JSON or YAML, else the human `text()` (coloured when
/// `color`).
pub fn answer<T: Serialize>(output: Output, color: bool, value: &T, text: impl FnOnce() -> String) -> String {
    structured(output, value).unwrap_or_else(|| styled(color, text()))
}

/// Colours a table or status text for a terminal: headers bold, states by what they mean (green
/// good, yellow on its way, red needs a look, dim nothing to say). Only whole words change, so
/// the columns stay aligned.
pub fn paint(text: &str) -> String {
    const BOLD: &str = "\x1b[1m";
    const RESET: &str = "\x1b[0m";
    let style = |word: &str| match word {
        "Healthy" | "in-sync" | "connected" | "yes" | "ready" => Some("\x1b[32m"),
        "Progressing" | "pending" => Some("\x1b[33m"),
        "Degraded" | "Missing" | "disconnected" | "failed" | "error" | "errors" | "no" | "orphaned" => Some("\x1b[31m"),
        "Unknown" | "unassigned" | "never" | "-" => Some("\x1b[2m"),
        _ => None,
    };
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.split_inclusive('\n') {
        let (body, newline) = line.split_at(line.trim_end_matches('\n').len());
        if body.chars().any(|c| c.is_ascii_uppercase()) && !body.chars().any(|c| c.is_lowercase()) {
            out.push_str(&format!("{BOLD}{body}{RESET}{newline}"));
            continue;
        }
        let mut rest = line;
        while !rest.is_empty() {
            let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (word, tail) = rest.split_at(word_end);
            let bare = word.trim_end_matches([',', ':', ';', ')']).trim_start_matches('(');
            match style(bare).filter(|_| !bare.is_empty()) {
                Some(colour) => {
                    let start = word.len() - word.trim_start_matches('(').len();
                    let end = start + bare.len();
                    out.push_str(&format!("{}{colour}{bare}{RESET}{}", &word[..start], &word[end..]));
                }
                None => out.push_str(word),
            }
            let space_end = tail.find(|c: char| !c.is_whitespace()).unwrap_or(tail.len());
            out.push_str(&tail[..space_end]);
            rest = &tail[space_end..];
        }
    }
    out
}

pub use convoy_shared::short;

/// Prints rows as an aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// How long ago `ms` (Unix milliseconds) was, in words a table can hold.
pub fn ago(ms: i64, now_ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let secs = (now_ms - ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// `convoy clusters` as a table.
pub fn clusters_table(clusters: &[ClusterInfo], now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                or_dash(&c.environment),
                if c.connected { "connected".into() } else { "disconnected".into() },
                sync_state(c).into(),
                convoy_shared::health_label(c.health).into(),
                short(&c.applied_revision).into(),
                ago(c.last_seen_unix_ms, now_ms),
                or_dash(&c.agent_version),
            ]
        })
        .collect();
    print_table(&["CLUSTER", "ENV", "LINK", "SYNC", "HEALTH", "APPLIED", "LAST SEEN", "AGENT"], &rows)
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_string() }
}

/// Whether a cluster runs what it is assigned.
pub fn sync_state(c: &ClusterInfo) -> &'static str {
    if c.orphaned {
        return "orphaned";
    }
    match (c.assigned_digest.is_empty(), c.in_sync) {
        (true, _) => "unassigned",
        (false, true) => "in-sync",
        (false, false) => "pending",
    }
}

/// `convoy status` as text: one block per cluster.
pub fn status_text(status: &StatusResponse) -> String {
    let mut out = String::new();
    for c in &status.clusters {
        let Some(info) = &c.cluster else { continue };
        out.push_str(&format!(
            "{} ({}): {}, {}, assigned {} applied {}\n",
            info.name,
            or_dash(&info.environment),
            sync_state(info),
            convoy_shared::health_label(info.health),
            short(&info.assigned_revision),
            short(&info.applied_revision),
        ));
        let rows: Vec<Vec<String>> = c
            .apps
            .iter()
            .map(|a| {
                // A render error can span lines (a YAML snippet); the whole of it is under errors.
                let note = if a.render_error.is_empty() {
                    a.message.clone()
                } else {
                    format!("render error: {}", a.render_error.lines().next().unwrap_or_default())
                };
                vec![format!("  {}", a.name), convoy_shared::health_label(a.health).into(), note]
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&print_table(&["  APP", "HEALTH", "MESSAGE"], &rows));
        }
        // One cluster asked for: the objects that are not Healthy or that the fleet's own health
        // rules judged, each with the rule (`-o json` has every object's).
        let noteworthy = |o: &&ObjectHealth| o.health != Health::Healthy as i32 || o.rule.starts_with("spec.health");
        let objects: Vec<Vec<String>> = c
            .apps
            .iter()
            .flat_map(|a| a.objects.iter().filter(noteworthy).map(move |o| (a, o)))
            .map(|(a, o)| {
                let r = o.r#ref.clone().unwrap_or_default();
                let name = if r.namespace.is_empty() { r.name } else { format!("{}/{}", r.namespace, r.name) };
                vec![
                    format!("  {}", a.name),
                    format!("{}/{name}", r.kind),
                    convoy_shared::health_label(o.health).into(),
                    or_dash(&o.rule).to_string(),
                    o.message.clone(),
                ]
            })
            .collect();
        if !objects.is_empty() {
            out.push_str(&print_table(&["  APP", "OBJECT", "HEALTH", "RULE", "MESSAGE"], &objects));
        }
        for e in &c.errors {
            out.push_str(&error_line(e));
        }
    }
    out
}

/// An error under a cluster's block, its continuation lines (a YAML snippet) indented.
fn error_line(error: &str) -> String {
    format!("  error: {}\n", error.replace('\n', "\n    "))
}

/// `convoy drift` as a table.
pub fn drift_table(drift: &DriftResponse) -> String {
    let mut rows = Vec::new();
    for c in &drift.clusters {
        for d in &c.drifts {
            let object = d.r#ref.as_ref().map(|r| ObjectRef::from(r).to_string()).unwrap_or_default();
            let healed = if d.healed { "yes" } else { "no" };
            if d.missing {
                let row = [&c.cluster, &object, "(object deleted)", "-", "-", "-", healed];
                rows.push(row.iter().map(|s| s.to_string()).collect());
            }
            for f in &d.fields {
                let row = [&c.cluster, &object, &f.path, &or_dash(&f.manager), &f.desired_json, &f.live_json, healed];
                rows.push(row.iter().map(|s| s.to_string()).collect());
            }
        }
    }
    if rows.is_empty() {
        return "no drift\n".into();
    }
    print_table(&["CLUSTER", "OBJECT", "FIELD", "CHANGED BY", "DESIRED", "LIVE", "HEALED"], &rows)
}

/// `convoy envs` as a table.
/// Rollouts as `convoy rollout status` prints them: a heading per environment, a line per wave.
pub fn rollouts_text(rollouts: &[RolloutInfo]) -> String {
    let mut out = String::new();
    for r in rollouts {
        let from = if r.from_revisions.is_empty() { "-".to_string() } else { r.from_revisions.join(",") };
        let track = if r.app.is_empty() { r.environment.clone() } else { format!("{}/{} (app)", r.environment, r.app) };
        out += &format!("{track}: {} {} → {}", r.phase, from, short(&r.revision));
        if r.soak_left_ms > 0 {
            out += &format!(" (soak {}s left)", (r.soak_left_ms + 999) / 1000);
        }
        if !r.reason.is_empty() {
            out += &format!(" — {}", r.reason);
        }
        if !r.held_by_window.is_empty() {
            out += &format!(" — {}", held_by_window(&r.held_by_window, r.held_until_unix_ms));
        }
        out.push('\n');
        let rows: Vec<Vec<String>> = r
            .waves
            .iter()
            .map(|w| {
                vec![
                    format!("  {}", w.name),
                    if w.open { "open" } else { "waiting" }.to_string(),
                    w.clusters.to_string(),
                    w.released.to_string(),
                    w.done.to_string(),
                    w.failed.to_string(),
                    w.max_unavailable.to_string(),
                ]
            })
            .collect();
        out += &print_table(&["  WAVE", "STATE", "CLUSTERS", "RELEASED", "DONE", "FAILED", "MAX-UNAVAILABLE"], &rows);
    }
    if rollouts.is_empty() {
        out += "no rollouts: give an environment `rollout:` in convoy.yaml, or an app `rollout:` in its app.yaml\n";
    }
    out
}

pub fn envs_table(envs: &EnvsResponse) -> String {
    let rows: Vec<Vec<String>> = envs
        .environments
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.branch.clone(),
                short(&e.commit).into(),
                e.clusters.to_string(),
                e.applied.to_string(),
                e.healthy.to_string(),
                or_dash(short(&e.verified_commit)).to_string(),
                e.behind.to_string(),
                e.env_only.len().to_string(),
                match (e.pinned.is_empty(), e.held_by_window.is_empty()) {
                    (false, _) => format!("PINNED {}", short(&e.pinned)),
                    (true, false) => format!("HELD BY WINDOW {}", e.held_by_window),
                    (true, true) => "-".to_string(),
                },
            ]
        })
        .collect();
    let header = ["ENV", "BRANCH", "COMMIT", "CLUSTERS", "APPLIED", "HEALTHY", "VERIFIED", "BEHIND", "ENV-ONLY", "PIN"];
    let mut out = print_table(&header, &rows);
    for error in &envs.errors {
        out.push_str(&format!("error: {error}\n"));
    }
    for e in envs.environments.iter().filter(|e| !e.env_only.is_empty()) {
        out += &format!("{} has {} commit(s) the environment before it lacks:\n", e.name, e.env_only.len());
        for c in &e.env_only {
            out += &format!("  {} {}\n", short(&c.id), c.subject);
        }
    }
    for e in envs.environments.iter().filter(|e| !e.pinned.is_empty()) {
        out += &format!(
            "{} is PINNED at {}: new commits wait for `convoy rollback {} --release`\n",
            e.name,
            short(&e.pinned),
            e.name
        );
    }
    for e in envs.environments.iter().filter(|e| e.pinned.is_empty() && !e.held_by_window.is_empty()) {
        out += &format!(
            "{}: {}: clusters keep what they run; `convoy rollout override {} --reason TEXT` lets it through once\n",
            e.name,
            held_by_window(&e.held_by_window, e.held_until_unix_ms),
            e.name
        );
    }
    out
}

/// `HELD BY WINDOW <name> until <time>`, as `convoy envs` and `convoy rollout status` say it.
pub fn held_by_window(window: &str, until_unix_ms: i64) -> String {
    format!("HELD BY WINDOW {window} until {}", convoy_shared::clock::rfc3339(until_unix_ms))
}

/// `convoy diff` as text.
pub fn diff_text(diff: &DiffResponse) -> String {
    let mut out = String::new();
    if !diff.from_env.is_empty() {
        out += &format!(
            "{} (branch {} at {}) rendered for {}'s clusters (branch {} at {}):\n",
            diff.from_env,
            diff.from_branch,
            short(&diff.from_commit),
            diff.to_env,
            diff.to_branch,
            short(&diff.to_commit)
        );
    }
    for c in &diff.clusters {
        let changes = c.added.len() + c.changed.len() + c.removed.len();
        let summary = if changes == 0 { "no change".to_string() } else { format!("{changes} objects") };
        out.push_str(&format!("{}: {summary}\n", c.cluster));
        for (sign, refs) in [("+", &c.added), ("~", &c.changed), ("-", &c.removed)] {
            for r in refs {
                out.push_str(&format!("  {sign} {}\n", ObjectRef::from(r)));
            }
        }
        for e in &c.errors {
            out.push_str(&error_line(e));
        }
    }
    out
}

/// `convoy history` as a table.
pub fn history_table(history: &HistoryResponse) -> String {
    let rows: Vec<Vec<String>> = history
        .entries
        .iter()
        .map(|h| {
            vec![
                format_time(h.at_unix_ms),
                h.event.clone(),
                short(&h.revision).into(),
                short(&h.digest).into(),
                h.detail.clone(),
            ]
        })
        .collect();
    print_table(&["TIME", "EVENT", "REVISION", "DIGEST", "DETAIL"], &rows)
}

/// One line of `convoy watch`.
pub fn event_line(event: &FleetEvent) -> String {
    // Commits and digests read as their first 8 characters, as in every other table.
    let detail: Vec<&str> = event
        .detail
        .split(' ')
        .map(|word| if word.len() >= 40 && word.chars().all(|c| c.is_ascii_hexdigit()) { short(word) } else { word })
        .collect();
    format!(
        "{}  {:<12} {:<12} {}",
        format_time(event.at_unix_ms),
        or_dash(&event.cluster),
        event.kind,
        detail.join(" ")
    )
}

fn format_time(ms: i64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `convoy whoami` as text.
pub fn whoami_text(me: &WhoAmIResponse) -> String {
    let or_none = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let mut out = format!("user         {}\ngroups       {}\n", me.user, or_none(&me.groups));
    out += &format!("roles        {} (certificate: {})\n", or_none(&me.roles), me.certificate_role);
    if me.certificate_not_after_unix > 0 {
        out += &format!("certificate  expires {}\n", format_time(me.certificate_not_after_unix * 1000));
    }
    let policy = if me.policy_commit.is_empty() {
        "built-in roles only".to_string()
    } else {
        format!("convoy.yaml at {}", short(&me.policy_commit))
    };
    out += &format!("policy       {policy}\n");
    if !me.policy_error.is_empty() {
        out += &format!("             a newer policy was refused: {}\n", me.policy_error);
    }
    out += "may\n";
    if me.may.is_empty() {
        out += "  nothing: no role of the access policy is bound to this user or their groups\n";
    }
    for line in &me.may {
        out += &format!("  {line}\n");
    }
    out
}

/// Audit records as a table.
pub fn audit_table(records: &[AuditRecord]) -> String {
    let rows: Vec<Vec<String>> = records.iter().map(audit_row).collect();
    print_table(&["TIME", "USER", "VERB", "ACTION", "TARGET", "RESULT", "SOURCE", "REQUEST"], &rows)
}

/// One audit record as a table row (`convoy audit --follow` prints them as they come).
pub fn audit_row(r: &AuditRecord) -> Vec<String> {
    vec![
        format_time(r.at_unix_ms),
        r.user.clone(),
        r.verb.clone(),
        or_dash(&r.action),
        or_dash(&r.target),
        r.result.replace('\n', " "),
        or_dash(&r.source),
        or_dash(&r.request_id),
    ]
}

/// Parses a `KEY=VALUE` label flag.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("'{text}' is not a label: use KEY=VALUE")),
    }
}

/// Parses a duration such as `90s`, `30m`, `1h` or `2d` (a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("'{text}' is not a duration: use a number with s, m, h or d (e.g. 1h)");
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |i| text.split_at(i));
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(std::time::Duration::from_secs(number.checked_mul(scale).ok_or_else(bad)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_shared::proto::Health;

    #[test]
    fn config_contexts_resolve_relative_paths_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("convoy.yaml");
        std::fs::write(
            &path,
            "current-context: local\ncontexts:\n- name: local\n  hub: 127.0.0.1:7443\n  ca: certs/ca.crt\n  cert: /abs/admin.crt\n  key: certs/admin.key\n",
        )
        .unwrap();
        let file = ConfigFile::load(&path).unwrap();
        let ctx = file.context(None, &path).unwrap();
        assert_eq!(ctx.ca.as_deref(), Some(dir.path().join("certs/ca.crt").as_path()));
        assert_eq!(ctx.cert.as_deref(), Some(Path::new("/abs/admin.crt")));
        let ctx = ctx.overridden_by(Context { hub: Some("hub:1".into()), ..Default::default() });
        assert_eq!(ctx.hub.as_deref(), Some("hub:1"));
        assert!(matches!(file.context(Some("prod"), &path), Err(CliError::UnknownContext { .. })));
    }

    #[test]
    fn token_flags_parse() {
        assert_eq!(parse_ttl("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_ttl("2d").unwrap().as_secs(), 172_800);
        assert_eq!(parse_ttl("15").unwrap().as_secs(), 15);
        assert!(parse_ttl("1w").is_err() && parse_ttl("h").is_err());
        assert_eq!(parse_label("region=eu").unwrap(), ("region".into(), "eu".into()));
        assert!(parse_label("=eu").is_err() && parse_label("region").is_err());
    }

    #[test]
    fn unknown_config_fields_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("convoy.yaml");
        std::fs::write(&path, "contexts:\n- name: a\n  hubb: x\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("hubb"), "{err}");
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(1_795_313_761_388), "2026-11-22 02:16:01Z");
    }

    fn member(name: &str, env: &str, in_sync: bool, health: Health) -> ClusterInfo {
        ClusterInfo {
            name: name.into(),
            environment: env.into(),
            assigned_digest: "d".into(),
            in_sync,
            health: health as i32,
            ..Default::default()
        }
    }

    #[test]
    fn tables_align_columns() {
        let out = print_table(&["A", "B"], &[vec!["long-value".into(), "x".into()]]);
        assert_eq!(out, "A            B\nlong-value   x\n");
    }

    #[test]
    fn a_multi_line_render_error_is_one_table_line_and_shown_whole_once() {
        use convoy_shared::proto::{AppHealth, ClusterStatus};
        let error = "apps/web/base/config.yaml: invalid YAML: line 5\n --> <input>:5:2\n5 |  data: [oops";
        let status = StatusResponse {
            clusters: vec![ClusterStatus {
                cluster: Some(member("dev-1", "dev", true, Health::Degraded)),
                apps: vec![AppHealth {
                    name: "web".into(),
                    health: Health::Degraded as i32,
                    render_error: error.into(),
                    ..Default::default()
                }],
                errors: vec![error.into()],
            }],
        };
        let text = status_text(&status);
        assert_eq!(text.matches("data: [oops").count(), 1, "{text}");
        assert!(
            text.contains("  web   Degraded   render error: apps/web/base/config.yaml: invalid YAML: line 5\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "  error: apps/web/base/config.yaml: invalid YAML: line 5\n     --> <input>:5:2\n    5 |  data: [oops\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn events_show_commits_and_digests_short() {
        let event = FleetEvent {
            at_unix_ms: 0,
            cluster: "dev-1".into(),
            kind: "assigned".into(),
            detail: format!("revision {} digest {}", "a".repeat(40), "b".repeat(64)),
        };
        assert_eq!(
            event_line(&event),
            "1970-01-01 00:00:00Z  dev-1        assigned     revision aaaaaaaa digest bbbbbbbb"
        );
    }

    #[test]
    fn paint_colours_whole_state_words_and_keeps_the_columns() {
        let clusters =
            [member("prod-eu", "prod", true, Health::Healthy), member("dev-1", "dev", false, Health::Degraded)];
        let plain = clusters_table(&clusters, 0);
        let painted = paint(&plain);
        let stripped = regex::Regex::new("\x1b\\[[0-9]+m").unwrap().replace_all(&painted, "").into_owned();
        assert_eq!(stripped, plain, "only escape codes are added");
        let lines: Vec<&str> = painted.lines().collect();
        assert!(lines[0].starts_with("\x1b[1mCLUSTER"), "{painted:?}");
        assert!(
            lines[1].contains("\x1b[32mHealthy\x1b[0m") && lines[1].contains("\x1b[32min-sync\x1b[0m"),
            "{painted:?}"
        );
        assert!(
            lines[2].contains("\x1b[31mDegraded\x1b[0m") && lines[2].contains("\x1b[33mpending\x1b[0m"),
            "{painted:?}"
        );
        assert!(!painted.contains("dis\x1b"), "a state inside a longer word is left alone: {painted:?}");
        assert_eq!(
            paint("dev-1 (dev): connected, in-sync\n"),
            "dev-1 (dev): \x1b[32mconnected\x1b[0m, \x1b[32min-sync\x1b[0m\n"
        );
    }
}

//! Feedback where people work (`spec.notifications` and `spec.commitStatus` of convoy.yaml):
//! receivers (a signed generic webhook, Slack, Microsoft Teams), the routes that pick which
//! events reach each, and the forge that gets a commit status per environment.
//!
//! Decisions:
//! - Secrets are never in Git: a receiver names a file of the hub's secrets directory
//!   (`secretRef`, `urlRef`, `tokenRef`), read when it is used.
//! - A route filters by event type, environment and app, each defaulting to all; an event
//!   reaches a receiver once however many of its routes match.
//! - Everything is checked at load: receiver names unique and valid as file names, routes
//!   naming known receivers and event types, environments in convoy.yaml, one kind per receiver.

use serde::{Deserialize, Serialize};

/// Every event type a route may name.
pub const EVENT_TYPES: &[&str] = &[
    "rollout.started",
    "rollout.paused",
    "rollout.aborted",
    "rollout.completed",
    "rollback",
    "sync.failed",
    "cluster.degraded",
    "cluster.recovered",
    "cluster.disconnected",
    "drift.detected",
    "promotion.ready",
    "window.held",
];

/// `spec.notifications`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationsSpec {
    #[serde(default)]
    pub receivers: Vec<Receiver>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// Where notifications go: exactly one of `webhook`, `slack`, `msteams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Receiver {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<Incoming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msteams: Option<Incoming>,
}

/// A generic webhook: the event as JSON, signed with HMAC-SHA256 when `secretRef` names a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Webhook {
    /// Where the event is POSTed (`urlRef` instead keeps it out of Git).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file of the secrets directory holding the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_ref: Option<String>,
    /// A file of the secrets directory holding the HMAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

/// A chat's incoming webhook, whose URL is its credential: always from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Incoming {
    /// A file of the secrets directory holding the webhook URL.
    pub url_ref: String,
}

/// Which events reach a receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Route {
    pub receiver: String,
    /// Event types; empty: every one.
    #[serde(default)]
    pub events: Vec<String>,
    /// Environments; empty: every one.
    #[serde(default)]
    pub environments: Vec<String>,
    /// Apps; empty: every one (events about no app in particular always pass).
    #[serde(default)]
    pub apps: Vec<String>,
}

impl Route {
    /// Whether an event of `kind` about `environment` (and `app`, if any) passes this route.
    pub fn matches(&self, kind: &str, environment: &str, app: Option<&str>) -> bool {
        let any = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        any(&self.events, kind) && any(&self.environments, environment) && app.is_none_or(|app| any(&self.apps, app))
    }
}

/// The forge a commit status goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
    /// Gitea and Forgejo (the same API).
    Gitea,
}

/// `spec.commitStatus`: one status per environment and commit, context `convoy/<env>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommitStatusSpec {
    pub provider: Provider,
    /// `owner/name` (GitLab: the project's path, `group/subgroup/name`).
    pub repository: String,
    /// A file of the secrets directory holding the API token.
    pub token_ref: String,
    /// The API's base URL for a self-hosted forge (e.g. `https://git.example.com/api/v1` for
    /// Gitea); default: github.com's or gitlab.com's. Gitea has none and needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "apiURL", alias = "apiUrl")]
    pub api_url: Option<String>,
}

impl CommitStatusSpec {
    /// The API base URL, without a trailing `/`.
    pub fn api_base(&self) -> &str {
        let default = match self.provider {
            Provider::Github => "https://api.github.com",
            Provider::Gitlab => "https://gitlab.com/api/v4",
            Provider::Gitea => "",
        };
        self.api_url.as_deref().unwrap_or(default).trim_end_matches('/')
    }
}

/// What a receiver is, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverKind {
    Webhook,
    Slack,
    Msteams,
}

impl Receiver {
    /// Its kind (load made sure there is exactly one).
    pub fn kind(&self) -> ReceiverKind {
        match (&self.webhook, &self.slack) {
            (Some(_), _) => ReceiverKind::Webhook,
            (None, Some(_)) => ReceiverKind::Slack,
            (None, None) => ReceiverKind::Msteams,
        }
    }

    /// Where its URL comes from: the URL itself, or the secrets file holding it.
    pub fn url(&self) -> Result<&str, &str> {
        match (&self.webhook, &self.slack, &self.msteams) {
            (Some(Webhook { url: Some(url), .. }), _, _) => Ok(url),
            (Some(Webhook { url_ref: Some(file), .. }), _, _) => Err(file),
            (_, Some(incoming), _) | (_, _, Some(incoming)) => Err(&incoming.url_ref),
            _ => Err(""),
        }
    }
}

/// Checks `spec` against the fleet's `environments`; the error says which entry is wrong.
pub fn validate(spec: &NotificationsSpec, environments: &[&str]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for r in &spec.receivers {
        if !secret_name(&r.name) {
            return Err(format!("receiver name '{}' must be letters, digits, '-', '_' or '.'", r.name));
        }
        if !names.insert(r.name.as_str()) {
            return Err(format!("receiver '{}' is listed twice", r.name));
        }
        let kinds = [r.webhook.is_some(), r.slack.is_some(), r.msteams.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(format!("receiver '{}' must have exactly one of webhook, slack, msteams", r.name));
        }
        if let Some(w) = &r.webhook {
            match (&w.url, &w.url_ref) {
                (Some(url), None) if url.starts_with("https://") || url.starts_with("http://") => {}
                (Some(url), None) => return Err(format!("receiver '{}': webhook url '{url}' is not http(s)", r.name)),
                (None, Some(_)) => {}
                _ => return Err(format!("receiver '{}': webhook needs exactly one of url, urlRef", r.name)),
            }
        }
        let refs = [
            r.webhook.as_ref().and_then(|w| w.url_ref.as_deref()),
            r.webhook.as_ref().and_then(|w| w.secret_ref.as_deref()),
            r.slack.as_ref().map(|s| s.url_ref.as_str()),
            r.msteams.as_ref().map(|s| s.url_ref.as_str()),
        ];
        if let Some(bad) = refs.into_iter().flatten().find(|f| !secret_name(f)) {
            return Err(format!(
                "receiver '{}': '{bad}' is not a file name of the hub's secrets directory (letters, digits, '-', '_', '.')",
                r.name
            ));
        }
    }
    for (i, route) in spec.routes.iter().enumerate() {
        if !names.contains(route.receiver.as_str()) {
            return Err(format!(
                "routes[{i}] names receiver '{}', which is not among the receivers ({})",
                route.receiver,
                names.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(bad) = route.events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err(format!("routes[{i}]: unknown event '{bad}' (events: {})", EVENT_TYPES.join(", ")));
        }
        if let Some(bad) = route.environments.iter().find(|e| !environments.contains(&e.as_str())) {
            return Err(format!("routes[{i}]: environment '{bad}' is not in spec.environments"));
        }
    }
    Ok(())
}

/// Checks a commit status spec.
pub fn validate_commit_status(spec: &CommitStatusSpec) -> Result<(), String> {
    let parts: Vec<&str> = spec.repository.split('/').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("commitStatus.repository '{}' must be OWNER/NAME", spec.repository));
    }
    if spec.provider != Provider::Gitlab && parts.len() != 2 {
        return Err(format!("commitStatus.repository '{}' must be OWNER/NAME", spec.repository));
    }
    if !secret_name(&spec.token_ref) {
        return Err(format!("commitStatus.tokenRef '{}' is not a file name of the secrets directory", spec.token_ref));
    }
    if spec.api_base().is_empty() {
        return Err(
            "commitStatus: provider gitea has no default API: set apiURL (e.g. https://git.example.com/api/v1)".into(),
        );
    }
    if let Some(url) = &spec.api_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(format!("commitStatus.apiURL '{url}' is not http(s)"));
    }
    Ok(())
}

/// A plain file name: no path, nothing hidden.
fn secret_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> NotificationsSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn the_issues_example_loads_and_routes_filter_by_event_environment_and_app() {
        let s = spec(
            "receivers:
- {name: ops, webhook: {url: 'https://hooks.example/convoy', secretRef: ops-hmac}}
- {name: chat, slack: {urlRef: slack-url}}
- {name: teams, msteams: {urlRef: teams-url}}
routes:
- receiver: ops
  events: [rollout.paused, window.held]
  environments: [prod]
- {receiver: chat, apps: [web]}",
        );
        assert_eq!(validate(&s, &["dev", "prod"]), Ok(()));
        assert_eq!(s.receivers[1].kind(), ReceiverKind::Slack);
        assert_eq!(s.receivers[0].url(), Ok("https://hooks.example/convoy"));
        assert_eq!(s.receivers[2].url(), Err("teams-url"));
        let (ops, chat) = (&s.routes[0], &s.routes[1]);
        assert!(ops.matches("rollout.paused", "prod", None));
        assert!(!ops.matches("rollout.paused", "dev", None));
        assert!(!ops.matches("drift.detected", "prod", None));
        assert!(chat.matches("drift.detected", "dev", Some("web")));
        assert!(!chat.matches("drift.detected", "dev", Some("api")));
        assert!(chat.matches("rollout.started", "dev", None), "an event about no app passes an app filter");
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |yaml: &str| validate(&spec(yaml), &["prod"]).unwrap_err();
        assert!(bad("receivers: [{name: a}]").contains("exactly one of webhook"));
        assert!(bad("receivers: [{name: a, slack: {urlRef: '../etc/passwd'}}]").contains("not a file name"));
        assert!(bad("receivers: [{name: a, slack: {urlRef: u}}, {name: a, slack: {urlRef: u}}]").contains("twice"));
        assert!(bad("routes: [{receiver: nope}]").contains("names receiver 'nope'"));
        assert!(
            bad("receivers: [{name: a, slack: {urlRef: u}}]\nroutes: [{receiver: a, events: [rollout.explode]}]")
                .contains("unknown event 'rollout.explode'")
        );
        assert!(
            bad("receivers: [{name: a, slack: {urlRef: u}}]\nroutes: [{receiver: a, environments: [qa]}]")
                .contains("environment 'qa'")
        );
        assert!(bad("receivers: [{name: a, webhook: {}}]").contains("exactly one of url, urlRef"));
        assert!(serde_saphyr::from_str::<NotificationsSpec>("receivers: [{name: a, pager: {}}]").is_err());
    }

    #[test]
    fn commit_status_defaults_and_checks() {
        let cs = |yaml: &str| serde_saphyr::from_str::<CommitStatusSpec>(yaml).unwrap();
        let github = cs("{provider: github, repository: org/fleet, tokenRef: forge-token}");
        assert_eq!(github.api_base(), "https://api.github.com");
        assert_eq!(validate_commit_status(&github), Ok(()));
        let gitlab =
            cs("{provider: gitlab, repository: group/sub/fleet, tokenRef: t, apiURL: 'https://gl.example/api/v4/'}");
        assert_eq!(gitlab.api_base(), "https://gl.example/api/v4");
        assert_eq!(validate_commit_status(&gitlab), Ok(()));
        let gitea = cs("{provider: gitea, repository: org/fleet, tokenRef: t}");
        assert!(validate_commit_status(&gitea).unwrap_err().contains("apiURL"));
        let nested = cs("{provider: github, repository: a/b/c, tokenRef: t}");
        assert!(validate_commit_status(&nested).is_err());
    }
}

//! Who may do what to the fleet: `spec.access` of convoy.yaml on the fleet branch (issue 31),
//! reviewed like everything else in Git. Roles hold rules (verbs on environments and apps);
//! bindings give roles to users and groups.
//!
//! ```yaml
//! spec:
//!   access:
//!     roles:
//!     - name: web-deployer
//!       rules:
//!       - {environments: [dev, stage], apps: [web], verbs: [view, refresh, rollout, rollback]}
//!     bindings:
//!     - {role: web-deployer, groups: [web-team]}
//!     - {role: viewer, users: [auditor@example.com]}
//! ```
//!
//! Decisions:
//! - Built-in roles: `admin` (every verb, everywhere) and `viewer` (`view`, everywhere). They
//!   cannot be redefined. A certificate issued with a built-in role keeps it whatever the
//!   policy says, so `admin` can never be locked out and older certificates keep working.
//! - A user holds the roles bound to their name or to any of their groups, plus their
//!   certificate's built-in role.
//! - A rule allows a verb on a target when it lists the verb (or `admin`), its environments are
//!   absent or include the target's, and its apps are absent or include the target's. A target
//!   that names no app (an environment's own rollout or pin, which moves every app) needs a
//!   rule for every app; one that names no environment (tokens, users, audit) needs a rule for
//!   every environment. `refresh` (fetch Git now) is allowed by any rule that lists it.
//! - `view` is the exception: a user may see an environment when any rule lets them view any
//!   app in it, and every answer is then filtered to the apps they may view.
//! - A policy naming an unknown role, verb or a built-in role's name is refused whole; the hub
//!   keeps the last good one.
//! - A denial names the user, their groups, the verb and target, and the roles that would
//!   allow it and to whom they are bound (or that none does).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Status, drift, history, diff, envs, watch, render answers.
    View,
    /// Make the hub fetch Git now.
    Refresh,
    /// Pause, resume, approve, abort a rollout.
    Rollout,
    /// Pin an environment at an earlier revision, or release the pin.
    Rollback,
    /// Cluster bootstrap tokens, revoking and retiring agents.
    Tokens,
    /// Issuing and revoking user certificates.
    Users,
    /// Reading the audit log.
    Audit,
    /// Everything.
    Admin,
}

impl Verb {
    /// Every verb, in the order `convoy whoami` lists them.
    pub const ALL: [Verb; 8] =
        [Verb::View, Verb::Refresh, Verb::Rollout, Verb::Rollback, Verb::Tokens, Verb::Users, Verb::Audit, Verb::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::View => "view",
            Verb::Refresh => "refresh",
            Verb::Rollout => "rollout",
            Verb::Rollback => "rollback",
            Verb::Tokens => "tokens",
            Verb::Users => "users",
            Verb::Audit => "audit",
            Verb::Admin => "admin",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of a role: verbs on environments and apps (absent: all).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Environments the rule covers; absent or empty: every environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    /// Apps the rule covers; absent or empty: every app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    pub verbs: Vec<Verb>,
}

/// A named set of rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Role {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// A role given to users and groups.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Binding {
    /// A role of `roles`, or `admin` or `viewer`.
    pub role: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// `spec.access` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessSpec {
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.access: {0}")]
pub struct PolicyError(pub String);

/// The built-in roles' names.
pub const ADMIN: &str = "admin";
pub const VIEWER: &str = "viewer";

/// What a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target<'a> {
    /// `None`: the fleet as a whole.
    pub environment: Option<&'a str>,
    /// `None`: every app (of the environment).
    pub app: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The fleet as a whole.
    pub const FLEET: Target<'static> = Target { environment: None, app: None };

    /// One environment, every app of it.
    pub fn environment(environment: &'a str) -> Target<'a> {
        Target { environment: Some(environment), app: None }
    }

    /// One app in one environment.
    pub fn app(environment: &'a str, app: &'a str) -> Target<'a> {
        Target { environment: Some(environment), app: Some(app) }
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.environment, self.app) {
            (None, _) => f.write_str("the whole fleet"),
            (Some(env), None) => write!(f, "environment '{env}' (every app)"),
            (Some(env), Some(app)) => write!(f, "app '{app}' in environment '{env}'"),
        }
    }
}

/// Who is asking: from their certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
    /// The certificate's built-in role, if it has one (`admin` or `viewer`).
    pub builtin: Option<&'static str>,
}

/// A refused request, saying why and what would allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    pub message: String,
}

/// A loaded, checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Every role by name, the built-in ones too.
    roles: BTreeMap<String, Vec<Rule>>,
    bindings: Vec<Binding>,
}

impl Default for Policy {
    /// The built-in roles only.
    fn default() -> Policy {
        let roles = [ADMIN, VIEWER].map(|name| (name.to_string(), builtin_rules(name).unwrap_or_default())).into();
        Policy { roles, bindings: Vec::new() }
    }
}

fn builtin_rules(name: &str) -> Option<Vec<Rule>> {
    let all = |verbs: Vec<Verb>| vec![Rule { environments: Vec::new(), apps: Vec::new(), verbs }];
    match name {
        ADMIN => Some(all(vec![Verb::Admin])),
        VIEWER => Some(all(vec![Verb::View])),
        _ => None,
    }
}

impl Rule {
    fn has_verb(&self, verb: Verb) -> bool {
        self.verbs.iter().any(|v| *v == verb || *v == Verb::Admin)
    }

    /// Whether the rule covers `target` for `verb` (see the module's decisions); `strict`
    /// takes a target without an app as every app, for `view` too.
    fn covers(&self, verb: Verb, target: Target, strict: bool) -> bool {
        let env_ok = match target.environment {
            // Fetching Git now touches no environment in particular.
            None => self.environments.is_empty() || verb == Verb::Refresh,
            Some(env) => self.environments.is_empty() || self.environments.iter().any(|e| e == env),
        };
        let app_ok = match target.app {
            None => (verb == Verb::View && !strict) || verb == Verb::Refresh || self.apps.is_empty(),
            Some(app) => self.apps.is_empty() || self.apps.iter().any(|a| a == app),
        };
        self.has_verb(verb) && env_ok && app_ok
    }
}

impl Policy {
    /// Checks `spec` and builds the policy.
    pub fn new(spec: AccessSpec) -> Result<Policy, PolicyError> {
        let mut roles = Policy::default().roles;
        for role in spec.roles {
            if builtin_rules(&role.name).is_some() {
                return Err(PolicyError(format!("role '{}' is built in and cannot be redefined", role.name)));
            }
            if role.name.is_empty() {
                return Err(PolicyError("a role has no name".into()));
            }
            if let Some(rule) = role.rules.iter().find(|r| r.verbs.is_empty()) {
                let _ = rule;
                return Err(PolicyError(format!("role '{}' has a rule with no verbs", role.name)));
            }
            if roles.insert(role.name.clone(), role.rules).is_some() {
                return Err(PolicyError(format!("role '{}' is defined twice", role.name)));
            }
        }
        for binding in &spec.bindings {
            if !roles.contains_key(&binding.role) {
                let known: Vec<&str> = roles.keys().map(String::as_str).collect();
                return Err(PolicyError(format!(
                    "a binding names role '{}', which is not defined (roles: {})",
                    binding.role,
                    known.join(", ")
                )));
            }
            if binding.users.is_empty() && binding.groups.is_empty() {
                return Err(PolicyError(format!(
                    "the binding of role '{}' names no users and no groups",
                    binding.role
                )));
            }
        }
        Ok(Policy { roles, bindings: spec.bindings })
    }

    /// The policy as written, to keep and load again ([`Policy::new`] of it gives it back).
    pub fn spec(&self) -> AccessSpec {
        let roles = self
            .roles
            .iter()
            .filter(|(name, _)| builtin_rules(name).is_none())
            .map(|(name, rules)| Role { name: name.clone(), rules: rules.clone() })
            .collect();
        AccessSpec { roles, bindings: self.bindings.clone() }
    }

    fn rules_of(&self, role: &str) -> &[Rule] {
        self.roles.get(role).map_or(&[], Vec::as_slice)
    }

    /// The roles `caller` holds, by name.
    pub fn roles_of(&self, caller: &Caller) -> BTreeSet<String> {
        let mut roles: BTreeSet<String> = caller.builtin.iter().map(|r| r.to_string()).collect();
        for b in &self.bindings {
            if b.users.contains(&caller.user) || b.groups.iter().any(|g| caller.groups.contains(g)) {
                roles.insert(b.role.clone());
            }
        }
        roles
    }

    /// Whether `caller` may `verb` on `target`; a [`Denial`] says what would allow it.
    pub fn check(&self, caller: &Caller, verb: Verb, target: Target) -> Result<(), Denial> {
        self.check_with(caller, verb, target, false)
    }

    /// Whether `caller` may `verb` every app of `environment` (a promotion diff shows them all).
    pub fn check_all_apps(&self, caller: &Caller, verb: Verb, environment: &str) -> Result<(), Denial> {
        self.check_with(caller, verb, Target::environment(environment), true)
    }

    fn check_with(&self, caller: &Caller, verb: Verb, target: Target, strict: bool) -> Result<(), Denial> {
        let held = self.roles_of(caller);
        if held.iter().any(|r| self.rules_of(r).iter().any(|rule| rule.covers(verb, target, strict))) {
            return Ok(());
        }
        let groups = if caller.groups.is_empty() { "no groups".into() } else { caller.groups.join(", ") };
        let mut would: Vec<String> = Vec::new();
        for (name, rules) in self.roles.iter().filter(|(name, _)| builtin_rules(name).is_none()) {
            if rules.iter().any(|rule| rule.covers(verb, target, strict)) {
                let holders: Vec<String> = self
                    .bindings
                    .iter()
                    .filter(|b| &b.role == name)
                    .flat_map(|b| {
                        b.groups.iter().map(|g| format!("group {g}")).chain(b.users.iter().map(|u| format!("user {u}")))
                    })
                    .collect();
                let to = if holders.is_empty() {
                    "bound to no one".into()
                } else {
                    format!("bound to {}", holders.join(", "))
                };
                would.push(format!("role '{name}' ({to})"));
            }
        }
        would.push("role 'admin'".into());
        Err(Denial {
            message: format!(
                "user '{}' ({groups}) may not {verb} {target}: {} would allow it (spec.access in convoy.yaml on the fleet branch)",
                caller.user,
                would.join(", ")
            ),
        })
    }

    /// Whether `caller` may view `app` in `environment` (`None`: anything in it).
    pub fn may_view(&self, caller: &Caller, environment: &str, app: Option<&str>) -> bool {
        self.grants(caller).may_view(environment, app)
    }

    /// The rules `caller` holds, found once, for answers filtered item by item.
    pub fn grants(&self, caller: &Caller) -> Grants<'_> {
        Grants { rules: self.roles_of(caller).iter().flat_map(|r| self.rules_of(r)).collect() }
    }

    /// For `convoy whoami`: per verb, what the caller may do it on, as lines like
    /// `rollout: apps web in environments dev, stage`.
    pub fn summary(&self, caller: &Caller) -> Vec<String> {
        let held = self.roles_of(caller);
        let rules: Vec<&Rule> = held.iter().flat_map(|r| self.rules_of(r)).collect();
        let mut lines = Vec::new();
        for verb in Verb::ALL {
            let scopes: BTreeSet<String> = rules
                .iter()
                .filter(|r| r.has_verb(verb))
                .map(|r| {
                    let envs = if r.environments.is_empty() {
                        "every environment".into()
                    } else {
                        format!("environments {}", r.environments.join(", "))
                    };
                    let apps =
                        if r.apps.is_empty() { "every app".into() } else { format!("apps {}", r.apps.join(", ")) };
                    format!("{apps} in {envs}")
                })
                .collect();
            if !scopes.is_empty() {
                lines.push(format!("{verb}: {}", scopes.into_iter().collect::<Vec<_>>().join("; ")));
            }
        }
        lines
    }
}

/// The rules one caller holds ([`Policy::grants`]).
#[derive(Debug, Clone)]
pub struct Grants<'a> {
    rules: Vec<&'a Rule>,
}

impl Grants<'_> {
    /// Whether they may `verb` on `target` (as [`Policy::check`], without saying why not).
    pub fn allows(&self, verb: Verb, target: Target) -> bool {
        self.rules.iter().any(|rule| rule.covers(verb, target, false))
    }

    /// Whether they may view `app` in `environment` (`None`: anything in it).
    pub fn may_view(&self, environment: &str, app: Option<&str>) -> bool {
        self.allows(Verb::View, Target { environment: Some(environment), app })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let spec: AccessSpec = serde_json::from_value(serde_json::json!({
            "roles": [
                {"name": "web-deployer", "rules": [
                    {"environments": ["dev", "stage"], "apps": ["web"], "verbs": ["view", "refresh", "rollout", "rollback"]}]},
                {"name": "platform", "rules": [{"verbs": ["admin"]}]},
                {"name": "env-operator", "rules": [{"environments": ["dev"], "verbs": ["rollout", "rollback", "view"]}]}
            ],
            "bindings": [
                {"role": "web-deployer", "groups": ["web-team"]},
                {"role": "viewer", "users": ["auditor@example.com"]},
                {"role": "platform", "groups": ["platform-team"]}
            ]
        }))
        .unwrap();
        Policy::new(spec).unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> Caller {
        Caller { user: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), builtin: None }
    }

    #[test]
    fn a_scoped_team_acts_on_its_app_in_its_environments_only() {
        let p = policy();
        let web = user("wendy", &["web-team"]);
        assert!(p.check(&web, Verb::Rollout, Target::app("dev", "web")).is_ok());
        assert!(p.check(&web, Verb::Rollback, Target::app("stage", "web")).is_ok());
        assert!(p.check(&web, Verb::Rollout, Target::app("prod", "web")).is_err(), "not prod");
        assert!(p.check(&web, Verb::Rollout, Target::app("dev", "api")).is_err(), "not another team's app");
        assert!(
            p.check(&web, Verb::Rollback, Target::environment("dev")).is_err(),
            "an environment's pin moves every app"
        );
        assert!(p.check(&web, Verb::Tokens, Target::FLEET).is_err());
        assert!(p.check(&web, Verb::Refresh, Target::FLEET).is_ok(), "any rule with refresh may fetch Git");
        // View: the environment is visible (answers are filtered to web), prod is not.
        assert!(p.may_view(&web, "dev", None));
        assert!(p.may_view(&web, "dev", Some("web")));
        assert!(!p.may_view(&web, "dev", Some("api")));
        assert!(!p.may_view(&web, "prod", None));
        assert!(p.check_all_apps(&web, Verb::View, "dev").is_err(), "a diff shows every app");
    }

    #[test]
    fn built_in_roles_hold_whatever_the_policy_says() {
        let p = Policy::default();
        let admin = Caller { builtin: Some(ADMIN), ..user("root", &[]) };
        for verb in Verb::ALL {
            assert!(p.check(&admin, verb, Target::FLEET).is_ok(), "{verb}");
        }
        let viewer = Caller { builtin: Some(VIEWER), ..user("v", &[]) };
        assert!(p.may_view(&viewer, "prod", Some("web")));
        assert!(p.check(&viewer, Verb::Refresh, Target::FLEET).is_err());
        let auditor = user("auditor@example.com", &[]);
        assert!(policy().may_view(&auditor, "prod", Some("db")));
        assert!(policy().check(&auditor, Verb::Rollout, Target::app("dev", "web")).is_err());
        let nobody = user("eve", &["strangers"]);
        assert!(!policy().may_view(&nobody, "dev", None));
    }

    #[test]
    fn an_environment_wide_rule_covers_every_app_and_the_environment_itself() {
        let spec: AccessSpec = serde_json::from_value(serde_json::json!({
            "roles": [{"name": "env-operator", "rules": [{"environments": ["dev"], "verbs": ["rollout", "rollback"]}]}],
            "bindings": [{"role": "env-operator", "users": ["otto"]}]
        }))
        .unwrap();
        let p = Policy::new(spec).unwrap();
        let otto = user("otto", &[]);
        assert!(p.check(&otto, Verb::Rollback, Target::environment("dev")).is_ok());
        assert!(p.check(&otto, Verb::Rollout, Target::app("dev", "anything")).is_ok());
        assert!(p.check(&otto, Verb::Rollout, Target::environment("stage")).is_err());
        assert!(p.check(&otto, Verb::Tokens, Target::FLEET).is_err(), "a fleet-wide verb needs every environment");
    }

    #[test]
    fn a_denial_says_who_what_and_which_role_would_allow_it() {
        let p = policy();
        let web = user("wendy", &["web-team"]);
        let denial = p.check(&web, Verb::Rollback, Target::app("prod", "web")).unwrap_err();
        assert_eq!(
            denial.message,
            "user 'wendy' (web-team) may not rollback app 'web' in environment 'prod': role 'platform' (bound to group platform-team), role 'admin' would allow it (spec.access in convoy.yaml on the fleet branch)"
        );
        let denial = p.check(&web, Verb::Rollout, Target::app("dev", "api")).unwrap_err();
        assert!(denial.message.contains("role 'env-operator' (bound to no one)"), "{}", denial.message);
    }

    #[test]
    fn broken_policies_are_refused_whole() {
        let bad = |json: serde_json::Value| {
            serde_json::from_value::<AccessSpec>(json)
                .map_err(|e| e.to_string())
                .and_then(|s| Policy::new(s).map_err(|e| e.to_string()))
        };
        assert!(
            bad(serde_json::json!({"bindings": [{"role": "ghost", "users": ["a"]}]})).unwrap_err().contains("'ghost'")
        );
        assert!(bad(serde_json::json!({"roles": [{"name": "admin", "rules": []}]})).unwrap_err().contains("built in"));
        assert!(
            bad(serde_json::json!({"roles": [{"name": "x", "rules": [{"verbs": ["deploy"]}]}]}))
                .unwrap_err()
                .contains("deploy")
        );
        assert!(
            bad(serde_json::json!({"roles": [{"name": "x", "rules": [{"verbs": []}]}]}))
                .unwrap_err()
                .contains("no verbs")
        );
        assert!(
            bad(serde_json::json!({"roles": [{"name": "x", "rules": []}, {"name": "x", "rules": []}]}))
                .unwrap_err()
                .contains("twice")
        );
        assert!(bad(serde_json::json!({"bindings": [{"role": "viewer"}]})).unwrap_err().contains("no users"));
    }

    #[test]
    fn a_policy_survives_being_kept_as_its_spec() {
        assert_eq!(Policy::new(policy().spec()).unwrap(), policy());
        assert_eq!(Policy::new(Policy::default().spec()).unwrap(), Policy::default());
    }

    #[test]
    fn whoami_lists_each_verb_with_its_scope() {
        let web = user("wendy", &["web-team"]);
        let lines = policy().summary(&web);
        assert_eq!(lines[0], "view: apps web in environments dev, stage");
        assert!(lines.iter().all(|l| !l.starts_with("tokens")));
        let admin = Caller { builtin: Some(ADMIN), ..user("root", &[]) };
        assert_eq!(policy().summary(&admin).len(), Verb::ALL.len());
    }
}

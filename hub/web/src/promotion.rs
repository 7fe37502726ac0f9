//! The promotion gate `convoy promote-check`, `convoy promote` and the dashboard's Promotion
//! page share, on the hub's answer (the hub alone decides which commit of an environment is
//! verified).
//!
//! Decisions: which environments FROM and TO are (by name, else by branch) and whether FROM's
//! verified commit may go to TO now ([`gate`]).

use convoy_render::fleet::{UnknownEnvironment, resolve_environment};
use convoy_shared::proto::{CommitInfo, EnvironmentInfo, EnvsResponse};
use convoy_shared::short;
use serde::Serialize;

/// Why the gate refuses a promotion.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Unknown(#[from] UnknownEnvironment),
    #[error("'{from}' does not come before '{to}' in the promotion order of convoy.yaml ({order})")]
    Order { from: String, to: String, order: String },
    /// FROM has no verified commit yet: waiting may help. The hub's reason names every
    /// cluster that holds FROM back, one per line.
    #[error("not ready to promote '{from}' to '{to}':\n  {}", .reason.replace('\n', "\n  "))]
    NotReady { from: String, to: String, reason: String },
    #[error("{0}")]
    Divergent(String),
}

/// What the gate allows: FROM's verified commit may go to TO's branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    pub from: String,
    pub from_branch: String,
    pub to: String,
    pub to_branch: String,
    /// FROM's verified commit.
    pub commit: String,
    pub message: String,
}

/// The gate `convoy promote-check` and `convoy promote` share, on the hub's answer: FROM comes
/// before TO, FROM has a verified commit (the hub's: every cluster applied and Healthy, past
/// its rollout's soak, not pinned), and TO has no commits of its own that FROM lacks (unless
/// `allow_divergent`). Environments are named by name or by branch.
pub fn gate(envs: &EnvsResponse, from: &str, to: &str, allow_divergent: bool) -> Result<Promotion, Refusal> {
    fn fields(e: &EnvironmentInfo) -> (&str, &str) {
        (e.name.as_str(), e.branch.as_str())
    }
    let (from_at, from_env) = resolve_environment(&envs.environments, from, fields)?;
    let (to_at, to_env) = resolve_environment(&envs.environments, to, fields)?;
    let (from, to) = (from_env.name.clone(), to_env.name.clone());
    if from_at >= to_at {
        let order: Vec<&str> = envs.environments.iter().map(|e| e.name.as_str()).collect();
        return Err(Refusal::Order { from, to, order: order.join(" → ") });
    }
    if from_env.verified_commit.is_empty() {
        return Err(Refusal::NotReady { from, to, reason: from_env.unverified_reason.clone() });
    }
    if to_at == from_at + 1 && !to_env.env_only.is_empty() && !allow_divergent {
        return Err(Refusal::Divergent(divergence(&to, &from, &to_env.env_only)));
    }
    let commit = from_env.verified_commit.clone();
    let message = format!(
        "ok: all {} clusters of '{from}' run {} applied and healthy; '{to}' (branch {}) may take it",
        from_env.clusters,
        short(&commit),
        to_env.branch
    );
    Ok(Promotion { from, from_branch: from_env.branch.clone(), to, to_branch: to_env.branch.clone(), commit, message })
}

/// Why a promotion is refused when `to` has commits of its own.
pub fn divergence(to: &str, from: &str, commits: &[CommitInfo]) -> String {
    let list: Vec<String> = commits.iter().map(|c| format!("{} {}", short(&c.id), c.subject)).collect();
    format!(
        "'{to}' has {} commit(s) '{from}' lacks; promoting would drop them. Bring them into '{from}' first, or pass \
         --allow-divergent:\n  {}",
        commits.len(),
        list.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, branch: &str, verified: &str) -> EnvironmentInfo {
        EnvironmentInfo {
            name: name.into(),
            branch: branch.into(),
            verified_commit: verified.into(),
            clusters: 1,
            ..Default::default()
        }
    }

    #[test]
    fn the_gate_names_branches_takes_the_hubs_verified_commit_and_refuses_in_one_voice() {
        let mut envs = EnvsResponse {
            environments: vec![
                env("dev", "develop", "d0d0d0d0"),
                env("stage", "staging", "c0ffee00"),
                env("prod", "main", ""),
            ],
            errors: vec![],
        };
        let ok = gate(&envs, "stage", "prod", false).unwrap();
        assert_eq!(
            (ok.commit.as_str(), ok.from_branch.as_str(), ok.to_branch.as_str()),
            ("c0ffee00", "staging", "main")
        );
        assert_eq!(gate(&envs, "staging", "main", false).unwrap(), ok, "an environment's branch names it too");
        let order = gate(&envs, "prod", "stage", false).unwrap_err().to_string();
        assert!(order.contains("does not come before") && order.contains("dev → stage → prod"), "{order}");
        for (from, to) in [("qa", "prod"), ("dev", "qa")] {
            let unknown = gate(&envs, from, to, false).unwrap_err();
            assert!(matches!(unknown, Refusal::Unknown(_)), "{unknown}");
            assert_eq!(
                unknown.to_string(),
                "unknown environment 'qa': the fleet's environments are dev, stage, prod (convoy.yaml)"
            );
        }
        // prod has a hotfix stage lacks: refused unless the user allows it.
        envs.environments[2].env_only = vec![CommitInfo { id: "beefbeef99".into(), subject: "hotfix".into() }];
        let err = gate(&envs, "stage", "prod", false).unwrap_err().to_string();
        assert!(err.contains("beefbeef hotfix") && err.contains("--allow-divergent"), "{err}");
        assert!(gate(&envs, "stage", "prod", true).is_ok());
        // The hub's reason (every cluster that holds it back, a soak…) is the refusal's.
        envs.environments[1].verified_commit.clear();
        envs.environments[1].unverified_reason = "stage-1: has not applied c0ffee00 yet".into();
        let not_ready = gate(&envs, "stage", "prod", true).unwrap_err();
        assert!(matches!(&not_ready, Refusal::NotReady { reason, .. } if reason.contains("stage-1")), "{not_ready}");
    }
}

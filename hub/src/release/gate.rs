//! The verified-commit gate: the commit of an environment that every one of its clusters runs
//! applied and Healthy, past its rollouts' soak — the commit `convoy promote` may take to the
//! next environment. A pure function of what the hub observes and the time, so the fleet
//! service asks it and tests drive it with any clock.
//!
//! Decisions:
//! - A pinned environment has no verified commit: a rollback says its head is not to be trusted.
//! - Applied is judged by digest, not revision: a cluster whose objects a commit does not change
//!   keeps its assignment (and the revision it was built at), and still counts as running it.
//! - Every cluster that holds the environment back is named, one per line, and so is every
//!   rollout that has not finished or soaked: the operator sees all that stands in the way.

use convoy_shared::proto::{ClusterInfo, Health};

use crate::release::rollout::{self, Rollout};

/// What the gate looks at for one environment.
#[derive(Debug, Clone, Copy)]
pub struct Environment<'a> {
    /// The commit a rollback pinned it at, if any.
    pub pin: Option<&'a str>,
    /// Its branch's head, once the source has read it.
    pub head: Option<&'a str>,
    /// Its clusters, with what they were assigned, applied and reported.
    pub clusters: &'a [&'a ClusterInfo],
    /// Its rollouts: the environment's and each app's own.
    pub rollouts: &'a [&'a Rollout],
}

/// The environment's verified commit (its head), or every reason it has none, one per line.
pub fn verified(env: &Environment, now_ms: i64) -> Result<String, Vec<String>> {
    if let Some(pinned) = env.pin {
        return Err(vec![format!("pinned at {} by a rollback", rollout::short(pinned))]);
    }
    let head = env.head.ok_or_else(|| vec!["its branch is not read yet".to_string()])?;
    if env.clusters.is_empty() {
        return Err(vec!["no clusters: nothing proves a commit works".into()]);
    }
    let short = rollout::short(head);
    let mut reasons = Vec::new();
    for c in env.clusters {
        if c.assigned_digest.is_empty() || !c.in_sync {
            reasons.push(format!("{}: has not applied {short} yet", c.name));
        } else if c.health != Health::Healthy as i32 {
            reasons.push(format!("{}: {}", c.name, convoy_shared::health_label(c.health)));
        }
    }
    for rollout in env.rollouts {
        let what = match &rollout.app {
            Some(app) => format!("app {app}'s rollout"),
            None => "the rollout".to_string(),
        };
        if rollout.revision != head {
            reasons.push(format!("{what} of {short} has not begun"));
            continue;
        }
        let Some(since) = rollout.completed_ms else {
            reasons.push(format!("{what} of {short} is {}", rollout.phase.as_str()));
            continue;
        };
        let left = since + rollout.soak_ms as i64 - now_ms;
        if left > 0 {
            reasons.push(format!("{short} soaks for {} s more", (left + 999) / 1000));
        }
    }
    if reasons.is_empty() { Ok(head.to_string()) } else { Err(reasons) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_render::fleet::{Cluster, RolloutSpec};

    const HEAD: &str = "1234abcd5678ef90";

    /// A cluster that applied `HEAD`'s assignment and reported `health`.
    fn mk_cluster(name: &str, health: Health) -> ClusterInfo {
        ClusterInfo {
            name: name.into(),
            environment: "dev".into(),
            assigned_revision: HEAD.into(),
            assigned_digest: "d1".into(),
            applied_digest: "d1".into(),
            in_sync: true,
            health: health as i32,
            ..Default::default()
        }
    }

    /// `dev`'s rollout of `revision`, finished at `completed_ms` (`None`: still going) with a
    /// soak of `soak_ms`.
    fn mk_rollout(revision: &str, completed_ms: Option<i64>, soak_ms: u64) -> Rollout {
        let spec: RolloutSpec = serde_json::from_value(serde_json::json!({"waves": []})).unwrap();
        let clusters: Vec<&Cluster> = Vec::new();
        let mut rollout = Rollout::settled("dev", &spec, revision, &clusters, 0);
        rollout.completed_ms = completed_ms;
        rollout.soak_ms = soak_ms;
        if completed_ms.is_none() {
            rollout.phase = rollout::Phase::Progressing;
        }
        rollout
    }

    fn env<'a>(clusters: &'a [&'a ClusterInfo], rollouts: &'a [&'a Rollout]) -> Environment<'a> {
        Environment { pin: None, head: Some(HEAD), clusters, rollouts }
    }

    #[test]
    fn every_cluster_applied_and_healthy_verifies_the_head() {
        let (a, b) = (mk_cluster("dev-1", Health::Healthy), mk_cluster("dev-2", Health::Healthy));
        let done = mk_rollout(HEAD, Some(1_000), 0);
        assert_eq!(verified(&env(&[&a, &b], &[&done]), 5_000), Ok(HEAD.to_string()));
    }

    #[test]
    fn a_pinned_environment_has_no_verified_commit() {
        let a = mk_cluster("dev-1", Health::Healthy);
        let clusters = [&a];
        let pinned = Environment { pin: Some("0badc0ffee"), ..env(&clusters, &[]) };
        assert_eq!(verified(&pinned, 0), Err(vec!["pinned at 0badc0ff by a rollback".to_string()]));
    }

    #[test]
    fn no_head_or_no_clusters_is_no_verified_commit() {
        let unread = Environment { head: None, ..env(&[], &[]) };
        assert_eq!(verified(&unread, 0), Err(vec!["its branch is not read yet".to_string()]));
        assert_eq!(verified(&env(&[], &[]), 0), Err(vec!["no clusters: nothing proves a commit works".to_string()]));
    }

    #[test]
    fn every_cluster_not_applied_or_not_healthy_is_named() {
        let mut behind = mk_cluster("dev-1", Health::Healthy);
        behind.in_sync = false;
        let mut unassigned = mk_cluster("dev-3", Health::Unknown);
        unassigned.assigned_digest.clear();
        let (degraded, fine) = (mk_cluster("dev-2", Health::Degraded), mk_cluster("dev-4", Health::Healthy));
        let got = verified(&env(&[&behind, &degraded, &unassigned, &fine], &[]), 0);
        assert_eq!(
            got,
            Err(vec![
                "dev-1: has not applied 1234abcd yet".to_string(),
                "dev-2: Degraded".to_string(),
                "dev-3: has not applied 1234abcd yet".to_string(),
            ])
        );
    }

    #[test]
    fn a_rollout_not_begun_or_still_going_holds_the_head_back() {
        let a = mk_cluster("dev-1", Health::Healthy);
        let older = mk_rollout("0ldc0mmit", Some(0), 0);
        let mut app = mk_rollout(HEAD, None, 0).of_app(Some("web"));
        app.phase = rollout::Phase::Paused;
        assert_eq!(
            verified(&env(&[&a], &[&older, &app]), 0),
            Err(vec![
                "the rollout of 1234abcd has not begun".to_string(),
                "app web's rollout of 1234abcd is paused".to_string()
            ])
        );
    }

    #[test]
    fn a_soak_ends_at_the_time_given() {
        let a = mk_cluster("dev-1", Health::Healthy);
        let soaking = mk_rollout(HEAD, Some(10_000), 30_000);
        let (clusters, rollouts) = ([&a], [&soaking]);
        let gate = env(&clusters, &rollouts);
        assert_eq!(verified(&gate, 10_000), Err(vec!["1234abcd soaks for 30 s more".to_string()]));
        assert_eq!(verified(&gate, 39_001), Err(vec!["1234abcd soaks for 1 s more".to_string()]));
        assert_eq!(verified(&gate, 40_000), Ok(HEAD.to_string()));
    }
}

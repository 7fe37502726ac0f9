//! The access policy in force and the audit log (issue 31).
//!
//! Decisions:
//! - The policy comes from `spec.access` of convoy.yaml on the fleet branch. One that does not
//!   load leaves the last good one in force; its error is shown (`convoy envs`, `convoy whoami`,
//!   the hub's log) until a good one comes. A change of policy is an audit record naming its
//!   commit. The policy in force is kept in the store: a restarted hub starts from it, and
//!   replicas that follow (they read no Git) put in force what the leader keeps.
//! - Every mutating call, denial, certificate issued, token created and revocation is an audit
//!   record in the store, written before the call acts: when it cannot be written the call is
//!   refused, so nothing happens unaudited. Allowed reads are not recorded.
//! - `--follow` readers get each record as it is written, by this replica or (relayed through
//!   the store's announcements) by another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use convoy_render::access::{AccessSpec, Policy};
use convoy_render::fleet::FleetError;
use convoy_shared::clock::unix_ms;
use convoy_shared::proto::AuditRecord;
use tokio::sync::broadcast;

use crate::store::{Store, StoreError};

/// Records a `--follow` reader may fall behind by before it is told it missed some.
const FOLLOW_BACKLOG: usize = 1024;

/// The policy in force, where it came from, and why a newer one was refused.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    pub policy: Policy,
    /// The fleet branch's commit the policy was read from (empty: built-in roles only, before
    /// the first sync).
    pub commit: String,
    /// Why the policy of a later commit was refused (it kept this one).
    pub error: Option<String>,
}

/// A change of the policy in force ([`AccessControl::update`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyChange {
    /// The audit record of the change (or of the refusal).
    pub record: AuditRecord,
    /// The new policy's spec (JSON), to keep in the store; `None` when one was refused.
    pub keep: Option<String>,
}

/// The policy and the audit log of one hub.
pub struct AccessControl {
    state: RwLock<Arc<PolicyState>>,
    store: Arc<dyn Store>,
    follow: broadcast::Sender<AuditRecord>,
    /// Users revoked on this hub: their open streams end.
    revoked: broadcast::Sender<String>,
    /// Open streams (watches, audit follows) per user.
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream of a user; counted until dropped.
#[derive(Debug)]
pub struct OpenStream {
    user: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open streams lock");
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl").field("policy", &self.policy().commit).finish()
    }
}

impl AccessControl {
    pub fn new(store: Arc<dyn Store>) -> AccessControl {
        AccessControl {
            state: RwLock::default(),
            store,
            follow: broadcast::channel(FOLLOW_BACKLOG).0,
            revoked: broadcast::channel(64).0,
            open: Arc::default(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<PolicyState> {
        self.state.read().expect("policy lock").clone()
    }

    /// Puts in force a policy kept in the store (at start, or what the leading replica put in
    /// force), without an audit record: it was recorded when it first came.
    pub fn restore(&self, commit: &str, spec: &str) {
        let policy = serde_json::from_str::<AccessSpec>(spec)
            .map_err(|e| e.to_string())
            .and_then(|spec| Policy::new(spec).map_err(|e| e.to_string()));
        match policy {
            Ok(policy) => {
                tracing::info!(commit, "access policy restored from the store");
                *self.state.write().expect("policy lock") =
                    Arc::new(PolicyState { policy, commit: commit.to_string(), error: None });
            }
            Err(e) => {
                tracing::error!(commit, error = %e, "the access policy in the store does not load; keeping the one in force")
            }
        }
    }

    /// Takes the policy the fleet branch's `commit` declares (or why it does not load).
    /// Returns what changed: the audit record to write and, when a new policy is in force, its
    /// spec (JSON) to keep in the store.
    pub fn update(&self, loaded: &Result<Policy, FleetError>, commit: &str) -> Option<PolicyChange> {
        let current = self.policy();
        let (next, change) = match loaded {
            Ok(policy) if *policy == current.policy && current.error.is_none() => {
                if current.commit == commit {
                    return None;
                }
                (PolicyState { policy: policy.clone(), commit: commit.to_string(), error: None }, None)
            }
            Ok(policy) => {
                tracing::info!(commit, "access policy in force");
                let next = PolicyState { policy: policy.clone(), commit: commit.to_string(), error: None };
                (next, Some(("done".to_string(), "the access policy of this commit is in force".to_string())))
            }
            Err(e) if current.error.as_deref() == Some(e.to_string().as_str()) => return None,
            Err(e) => {
                tracing::error!(commit, error = %e, kept = %current.commit, "access policy refused; the last good one stays in force");
                let next = PolicyState { error: Some(e.to_string()), ..(*current).clone() };
                (next, Some((format!("failed: {e}"), format!("kept the policy of {}", short(&current.commit)))))
            }
        };
        let keep = next.error.is_none().then(|| serde_json::to_string(&next.policy.spec()).expect("a spec serializes"));
        *self.state.write().expect("policy lock") = Arc::new(next);
        change.map(|(result, action)| PolicyChange {
            record: AuditRecord {
                at_unix_ms: unix_ms(),
                user: "convoy-hub".into(),
                verb: "policy".into(),
                target: format!("convoy.yaml at {commit}"),
                result,
                action,
                ..Default::default()
            },
            keep,
        })
    }

    /// Writes `record` durably, then tells `--follow` readers.
    pub async fn record(&self, record: AuditRecord) -> Result<(), StoreError> {
        let store = self.store.clone();
        let stored = record.clone();
        tokio::task::spawn_blocking(move || store.append_audit(&stored))
            .await
            .map_err(|e| StoreError::Db(e.to_string().into()))??;
        let _ = self.follow.send(record);
        Ok(())
    }

    /// Tells `--follow` readers of a record another replica wrote.
    pub fn relay(&self, record: AuditRecord) {
        let _ = self.follow.send(record);
    }

    /// Records written from now on (by this replica, or relayed from another).
    pub fn follow(&self) -> broadcast::Receiver<AuditRecord> {
        self.follow.subscribe()
    }

    /// Records in the store at or after `since_ms`, of `user` unless empty, oldest first.
    pub async fn read(&self, since_ms: i64, user: String, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.audit(since_ms, &user, limit))
            .await
            .map_err(|e| StoreError::Db(e.to_string().into()))?
    }

    /// Tells the open streams of `user` to end; returns how many there were.
    pub fn user_revoked(&self, user: &str) -> usize {
        let open = self.open.lock().expect("open streams lock").get(user).copied().unwrap_or(0);
        let _ = self.revoked.send(user.to_string());
        open
    }

    /// Resolves when `user` is revoked on this hub; counts as one of their open streams while
    /// it waits.
    pub fn until_revoked(&self, user: String) -> impl std::future::Future<Output = ()> + Send + 'static {
        *self.open.lock().expect("open streams lock").entry(user.clone()).or_default() += 1;
        let guard = OpenStream { user: user.clone(), open: self.open.clone() };
        let mut revocations = self.revoked.subscribe();
        async move {
            let _counted = guard;
            loop {
                match revocations.recv().await {
                    Ok(name) if name == user => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    _ => {}
                }
            }
        }
    }
}

fn short(commit: &str) -> &str {
    if commit.is_empty() { "before the first sync (built-in roles only)" } else { &commit[..commit.len().min(8)] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use convoy_render::access::AccessSpec;

    fn policy(role: &str) -> Policy {
        let spec: AccessSpec = serde_json::from_value(serde_json::json!({
            "bindings": [{"role": role, "users": ["ana"]}]
        }))
        .unwrap();
        Policy::new(spec).unwrap()
    }

    #[tokio::test]
    async fn a_broken_policy_keeps_the_last_good_one_and_each_change_is_recorded_once() {
        let access = AccessControl::new(Arc::new(MemoryStore::default()));
        let first = access.update(&Ok(policy("viewer")), "c1").expect("a new policy is a change");
        assert_eq!((first.record.verb.as_str(), first.record.result.as_str()), ("policy", "done"));
        let kept = first.keep.expect("a policy in force is kept");
        let restarted = AccessControl::new(Arc::new(MemoryStore::default()));
        restarted.restore("c1", &kept);
        assert_eq!(restarted.policy().policy, policy("viewer"), "a restarted hub starts from the kept policy");
        assert!(access.update(&Ok(policy("viewer")), "c2").is_none(), "the same policy at a later commit");
        assert_eq!(access.policy().commit, "c2");

        let broken = FleetError { file: "convoy.yaml".into(), message: "spec.access: role 'ghost'".into() };
        let refused = access.update(&Err(broken.clone()), "c3").expect("a refusal is recorded");
        assert!(refused.record.result.starts_with("failed") && refused.record.action.contains("c2"), "{refused:?}");
        assert!(refused.keep.is_none(), "a refused policy is not kept");
        let state = access.policy();
        assert_eq!((state.policy.clone(), state.commit.as_str()), (policy("viewer"), "c2"), "the last good one stays");
        assert!(state.error.as_deref().unwrap().contains("ghost"));
        assert!(access.update(&Err(broken), "c4").is_none(), "the same refusal is not recorded again");

        assert!(access.update(&Ok(policy("admin")), "c5").is_some());
        assert!(access.policy().error.is_none());
    }

    #[tokio::test]
    async fn records_are_stored_and_followed() {
        let access = AccessControl::new(Arc::new(MemoryStore::default()));
        let mut follow = access.follow();
        let record = AuditRecord { at_unix_ms: 5, user: "ana".into(), verb: "rollout".into(), ..Default::default() };
        access.record(record.clone()).await.unwrap();
        assert_eq!(follow.recv().await.unwrap(), record);
        assert_eq!(access.read(0, "ana".into(), 10).await.unwrap(), [record]);
    }
}

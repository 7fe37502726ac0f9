//! What the hub keeps that is not in Git: each cluster's last report and its history (assigned,
//! applied), registrations, revocations, rollouts and pins. Behind the [`Store`] trait:
//! [`redb::RedbStore`] (embedded, the default, so `convoy-hub` needs no database),
//! [`postgres::PgStore`] (PostgreSQL, shared by hub replicas) and [`memory::MemoryStore`]
//! (tests, the sandbox without a data directory).
//! Writes are batched by one writer task ([`writer`]); nothing blocks the runtime. Registration
//! state (bootstrap token hashes, registrations, revocations) is written synchronously instead:
//! a token must be spent exactly once, and a revocation must outlive a crash right after it.
//! Hub replicas share one PostgreSQL store ([`postgres`]); the one that leads holds a lock in it
//! ([`leadership`]), and the store refuses leader-only writes from a replica that lost it.
//!
//! Decisions: what survives a restart; which writes are batched and which are synchronous;
//! which replica leads, and whose leader-only writes the fence refuses.

pub mod leadership;
pub mod memory;
pub mod postgres;
pub mod redb;
pub mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;

use convoy_shared::proto::{AuditRecord, HistoryEntry, Report};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} cannot be opened: {message}; check the --data directory is writable and not used by another hub"
    )]
    Open { path: PathBuf, message: String },
    #[error(
        "the store at {path} is corrupted or not a Convoy store ({message}); the hub will not start on it. Move it aside and restore a backup (the hub never replaces it: starting empty would forget registrations, revocations and history)"
    )]
    Corrupted { path: PathBuf, message: String },
    #[error(
        "cannot write the store at {path}: {message}; these reports and history entries are not persisted (the hub keeps serving): free space in, or fix, the --data directory"
    )]
    Write { path: PathBuf, message: String },
    #[error(
        "PostgreSQL at {target} cannot be used: {message}; check --store (postgres://USER@HOST:PORT/DATABASE) and that the database is up"
    )]
    Database { target: String, message: String },
    #[error(
        "the PostgreSQL schema is at version {found}, newer than the {known} this hub knows; run a hub at least as new as the one that migrated it"
    )]
    Schema { found: i32, known: i32 },
    #[error(
        "refused: this replica's leadership (epoch {epoch}) ended, another replica leads at epoch {current}; it publishes nothing more"
    )]
    Fenced { epoch: i64, current: i64 },
    #[error("the store failed: {0}")]
    Db(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A bootstrap token as the store keeps it (the token itself is never stored, only its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    pub cluster: String,
    pub labels: BTreeMap<String, String>,
    pub created_unix_ms: i64,
    pub expires_unix: i64,
    /// Set when an agent registered with it; a used token is refused.
    pub used_unix: Option<i64>,
}

/// What spending a token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// The token was valid and is now used.
    Spent(TokenRecord),
    Unknown,
    AlreadyUsed(TokenRecord),
    Expired(TokenRecord),
}

/// Spends `record` at `now` if it can be spent; returns the outcome and the record to write back.
pub(crate) fn redeem(record: Option<TokenRecord>, now: i64) -> (Redeemed, Option<TokenRecord>) {
    match record {
        None => (Redeemed::Unknown, None),
        Some(r) if r.used_unix.is_some() => (Redeemed::AlreadyUsed(r), None),
        Some(r) if r.expires_unix <= now => (Redeemed::Expired(r), None),
        Some(mut r) => {
            r.used_unix = Some(now);
            (Redeemed::Spent(r.clone()), Some(r))
        }
    }
}

/// A cluster's latest registration through a bootstrap token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    pub cluster: String,
    /// Labels given at token creation; informational (Git's `clusters/<name>.yaml` targets apps).
    pub labels: BTreeMap<String, String>,
    pub registered_unix: i64,
    pub peer: String,
}

/// Where an outbox entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Not delivered yet: it goes (again) at `next_ms`.
    Pending,
    Delivered,
    /// Given up on after a day of failures (a dead letter).
    Dead,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Delivered => "delivered",
            Delivery::Dead => "dead",
        }
    }
}

/// One message for one receiver (or the forge's commit status), kept until it is delivered or
/// given up on, so a restart or a failover loses none.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// Its place in the outbox, given by the store when it is pushed: entries for one receiver
    /// go in this order.
    pub seq: i64,
    /// The receiver's name, or [`COMMIT_STATUS`].
    pub receiver: String,
    /// What to send (a notice or a commit status, as JSON).
    pub payload: String,
    pub created_ms: i64,
    pub attempts: u32,
    /// When to try next (pending entries).
    pub next_ms: i64,
    pub state: Delivery,
    /// Why the last attempt failed.
    pub last_error: String,
}

/// The outbox "receiver" of commit statuses.
pub const COMMIT_STATUS: &str = "commit-status";

/// Delivered entries older than this are dropped when new ones are pushed.
pub(crate) const OUTBOX_KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// One change to persist.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    Report {
        cluster: String,
        report: Report,
    },
    History {
        cluster: String,
        entry: HistoryEntry,
    },
    /// An environment's rollout, as JSON ([`crate::release::rollout::Rollout`]); replaces the previous.
    Rollout {
        environment: String,
        state: String,
    },
    /// An environment pinned at a commit by a rollback; `None` releases it.
    Pin {
        environment: String,
        commit: Option<String>,
    },
    /// The access policy in force (`spec.access` as JSON) and the fleet branch's commit it came
    /// from; replaces the previous. Followers and a restarted hub start from it.
    Access {
        commit: String,
        spec: String,
    },
}

/// Durable hub state. Implementations are blocking; call them from `spawn_blocking` or the
/// writer task.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies a batch of events atomically.
    fn write(&self, events: &[StoreEvent]) -> Result<()>;
    /// Every cluster's last report.
    fn last_reports(&self) -> Result<Vec<(String, Report)>>;
    /// The newest `limit` history entries of `cluster`, newest first.
    fn history(&self, cluster: &str, limit: usize) -> Result<Vec<HistoryEntry>>;
    /// Stores a new bootstrap token under the SHA-256 of its text.
    fn put_token(&self, hash: &str, token: &TokenRecord) -> Result<()>;
    /// Spends the token with hash `hash` at `now` in one transaction: at most one caller ever
    /// gets [`Redeemed::Spent`] for a token.
    fn redeem_token(&self, hash: &str, now: i64) -> Result<Redeemed>;
    /// Records a registration (replacing the cluster's previous one).
    fn put_registration(&self, registration: &Registration) -> Result<()>;
    /// Every cluster's latest registration.
    fn registrations(&self) -> Result<Vec<Registration>>;
    /// Records that `cluster` was revoked at `at` (Unix milliseconds).
    fn put_revocation(&self, cluster: &str, at: i64) -> Result<()>;
    /// Every revocation: cluster and when.
    fn revocations(&self) -> Result<Vec<(String, i64)>>;
    /// Every environment's latest rollout (JSON).
    fn rollouts(&self) -> Result<Vec<(String, String)>>;
    /// Every pinned environment and its commit.
    fn pins(&self) -> Result<Vec<(String, String)>>;
    /// The access policy last put in force (commit, `spec.access` as JSON), if any.
    fn access_policy(&self) -> Result<Option<(String, String)>>;
    /// Appends one audit record, durably: an error means it is not recorded, and the call it
    /// audits must not go ahead.
    fn append_audit(&self, record: &AuditRecord) -> Result<()>;
    /// Audit records written at or after `since_ms`, of `user` unless empty, oldest first, at
    /// most `limit`.
    fn audit(&self, since_ms: i64, user: &str, limit: usize) -> Result<Vec<AuditRecord>>;
    /// Appends `entries` to the outbox in order, each given the next sequence number; drops
    /// delivered entries older than a week.
    fn outbox_push(&self, entries: &[OutboxEntry]) -> Result<()>;
    /// Pending entries of `receiver` (`None`: of every receiver), oldest first, at most `limit`:
    /// one receiver's backlog never hides another's entries.
    fn outbox_pending(&self, receiver: Option<&str>, limit: usize) -> Result<Vec<OutboxEntry>>;
    /// Writes back `entry`'s delivery state (by its `seq`).
    fn outbox_settle(&self, entry: &OutboxEntry) -> Result<()>;
    /// The newest `limit` entries of any state, newest first.
    fn outbox_recent(&self, limit: usize) -> Result<Vec<OutboxEntry>>;
}

/// The contract every [`Store`] keeps; each store's tests run it.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(event: &str, revision: &str) -> HistoryEntry {
        HistoryEntry {
            at_unix_ms: 1,
            revision: revision.into(),
            digest: "d".into(),
            event: event.into(),
            detail: String::new(),
        }
    }

    pub(crate) fn exercise(store: &dyn Store) {
        store
            .write(&[
                StoreEvent::History { cluster: "eu-1".into(), entry: entry("assigned", "r1") },
                StoreEvent::History { cluster: "eu-2".into(), entry: entry("assigned", "x") },
                StoreEvent::History { cluster: "eu-1".into(), entry: entry("applied", "r1") },
                StoreEvent::Report {
                    cluster: "eu-1".into(),
                    report: Report { revision: "r1".into(), applied: true, ..Default::default() },
                },
                StoreEvent::Rollout { environment: "prod".into(), state: "{\"a\":1}".into() },
                StoreEvent::Rollout { environment: "prod".into(), state: "{\"a\":2}".into() },
                StoreEvent::Pin { environment: "prod".into(), commit: Some("c1".into()) },
                StoreEvent::Pin { environment: "stage".into(), commit: Some("c2".into()) },
                StoreEvent::Pin { environment: "stage".into(), commit: None },
                StoreEvent::Access { commit: "a1".into(), spec: "{}".into() },
                StoreEvent::Access { commit: "a2".into(), spec: "{\"roles\":[]}".into() },
            ])
            .unwrap();
        assert_eq!(
            store.access_policy().unwrap(),
            Some(("a2".to_string(), "{\"roles\":[]}".to_string())),
            "the latest policy"
        );
        assert_eq!(store.rollouts().unwrap(), [("prod".to_string(), "{\"a\":2}".to_string())], "the latest rollout");
        assert_eq!(store.pins().unwrap(), [("prod".to_string(), "c1".to_string())], "a released pin is gone");
        let history = store.history("eu-1", 10).unwrap();
        assert_eq!(history.iter().map(|h| h.event.as_str()).collect::<Vec<_>>(), ["applied", "assigned"]);
        assert_eq!(store.history("eu-1", 1).unwrap().len(), 1);
        assert_eq!(store.last_reports().unwrap()[0].1.revision, "r1");
        exercise_audit(store);
        exercise_outbox(store);
    }

    fn exercise_outbox(store: &dyn Store) {
        let entry = |receiver: &str, payload: &str| OutboxEntry {
            seq: 0,
            receiver: receiver.into(),
            payload: payload.into(),
            created_ms: 1,
            attempts: 0,
            next_ms: 1,
            state: Delivery::Pending,
            last_error: String::new(),
        };
        store.outbox_push(&[entry("ops", "a"), entry("chat", "b")]).unwrap();
        store.outbox_push(&[entry("ops", "c")]).unwrap();
        let pending = store.outbox_pending(None, 10).unwrap();
        assert_eq!(pending.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), ["a", "b", "c"], "in order");
        let ops = store.outbox_pending(Some("ops"), 10).unwrap();
        assert_eq!(ops.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), ["a", "c"], "one receiver's");
        let chat = store.outbox_pending(Some("chat"), 1).unwrap();
        assert_eq!(chat.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), ["b"], "behind ops's, not hidden");
        assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq), "sequence numbers grow: {pending:?}");
        let mut first = pending[0].clone();
        first.state = Delivery::Delivered;
        first.attempts = 2;
        store.outbox_settle(&first).unwrap();
        let mut second = pending[1].clone();
        (second.attempts, second.next_ms, second.last_error) = (1, 99, "HTTP 500".into());
        store.outbox_settle(&second).unwrap();
        let pending = store.outbox_pending(None, 10).unwrap();
        assert_eq!(pending.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!((pending[0].attempts, pending[0].next_ms, pending[0].last_error.as_str()), (1, 99, "HTTP 500"));
        assert_eq!(store.outbox_pending(None, 1).unwrap().len(), 1);
        let recent = store.outbox_recent(10).unwrap();
        assert_eq!(recent.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>(), ["c", "b", "a"], "newest first");
        assert_eq!(recent[2].state, Delivery::Delivered);
    }

    fn exercise_audit(store: &dyn Store) {
        let record = |at: i64, user: &str, verb: &str| AuditRecord {
            at_unix_ms: at,
            user: user.into(),
            verb: verb.into(),
            result: "allowed".into(),
            ..Default::default()
        };
        for r in [
            record(10, "ana", "rollout"),
            record(20, "bob", "view"),
            record(20, "ana", "rollback"),
            record(30, "bob", "tokens"),
        ] {
            store.append_audit(&r).unwrap();
        }
        let verbs = |rs: Vec<AuditRecord>| rs.into_iter().map(|r| r.verb).collect::<Vec<_>>();
        assert_eq!(verbs(store.audit(0, "", 100).unwrap()), ["rollout", "view", "rollback", "tokens"], "oldest first");
        assert_eq!(verbs(store.audit(20, "", 100).unwrap()), ["view", "rollback", "tokens"]);
        assert_eq!(verbs(store.audit(0, "ana", 100).unwrap()), ["rollout", "rollback"]);
        assert_eq!(verbs(store.audit(0, "", 2).unwrap()).len(), 2);
    }

    fn token(expires_unix: i64) -> TokenRecord {
        TokenRecord {
            cluster: "eu-1".into(),
            labels: BTreeMap::from([("region".into(), "eu".into())]),
            created_unix_ms: 100,
            expires_unix,
            used_unix: None,
        }
    }

    pub(crate) fn exercise_registration(store: &dyn Store) {
        store.put_token("live", &token(200)).unwrap();
        store.put_token("old", &token(150)).unwrap();
        assert_eq!(store.redeem_token("nope", 160).unwrap(), Redeemed::Unknown);
        assert!(matches!(store.redeem_token("old", 160).unwrap(), Redeemed::Expired(_)));
        let Redeemed::Spent(spent) = store.redeem_token("live", 160).unwrap() else { panic!("live token not spent") };
        assert_eq!(spent.used_unix, Some(160));
        assert!(matches!(store.redeem_token("live", 161).unwrap(), Redeemed::AlreadyUsed(_)));
        store.put_revocation("eu-1", 170).unwrap();
        assert_eq!(store.revocations().unwrap(), [("eu-1".to_string(), 170)]);
        let registration =
            Registration { cluster: "eu-1".into(), labels: spent.labels, registered_unix: 160, peer: "p".into() };
        store.put_registration(&registration).unwrap();
        assert_eq!(store.registrations().unwrap(), [registration]);
    }
}

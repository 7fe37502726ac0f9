//! What the hub keeps that is not in Git: each cluster's last report and its history (assigned,
//! applied). Behind the [`Store`] trait: [`RedbStore`] (embedded, the default, so `convoy-hub`
//! needs no database), [`crate::store::postgres::PgStore`] (PostgreSQL, shared by hub replicas) and
//! [`MemoryStore`] (tests, the sandbox without a data directory).
//! Writes are batched by one writer task; nothing blocks the runtime. Registration state
//! (bootstrap token hashes, registrations, revocations) is written synchronously instead: a
//! token must be spent exactly once, and a revocation must outlive a crash right after it.
//! Hub replicas share one PostgreSQL store ([`postgres`]); the one that leads holds a lock in it
//! ([`leadership`]), and the store refuses leader-only writes from a replica that lost it.
//!
//! Decisions: what survives a restart; which writes are batched and which are synchronous;
//! which replica leads, and whose leader-only writes the fence refuses.

pub mod leadership;
pub mod postgres;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convoy_shared::proto::{HistoryEntry, Report};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

const REPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("reports");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
/// SHA-256 (hex) of a bootstrap token → [`TokenRecord`] (JSON).
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("bootstrap_tokens");
/// Cluster → [`Registration`] (JSON) of its latest registration.
const REGISTRATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("registrations");
/// Cluster → when it was revoked (Unix milliseconds).
const REVOCATIONS: TableDefinition<&str, i64> = TableDefinition::new("revocations");
/// Environment → its latest rollout (JSON).
const ROLLOUTS: TableDefinition<&str, &str> = TableDefinition::new("rollouts");
/// Environment → the commit a rollback pinned it at.
const PINS: TableDefinition<&str, &str> = TableDefinition::new("pins");
/// History entries kept per cluster in memory.
const MEMORY_HISTORY: usize = 1000;
/// redb's page cache (its default is 1 GiB, which the ever-growing history table would fill,
/// one commit at a time, as hub memory).
const REDB_CACHE_BYTES: usize = 4 * 1024 * 1024;

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

fn db<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> StoreError {
    StoreError::Db(e.into())
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
    /// Labels given at token creation; informational (Git's clusters/<name>.yaml targets apps).
    pub labels: BTreeMap<String, String>,
    pub registered_unix: i64,
    pub peer: String,
}

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
}

/// The embedded store (redb), one file in the data directory.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    next_seq: Mutex<u64>,
}

impl RedbStore {
    /// Opens or creates `DIR/convoy.redb`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("convoy.redb");
        let open_err = |message: String| StoreError::Open { path: path.clone(), message };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let database = Database::builder().set_cache_size(REDB_CACHE_BYTES).create(&path).map_err(|e| {
            let corrupted = match &e {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => true,
                redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
                    io.kind() == std::io::ErrorKind::InvalidData
                }
                _ => false,
            };
            if corrupted {
                StoreError::Corrupted { path: path.clone(), message: e.to_string() }
            } else {
                open_err(e.to_string())
            }
        })?;
        let txn = database.begin_write().map_err(db)?;
        txn.open_table(REPORTS).map_err(db)?;
        txn.open_table(TOKENS).map_err(db)?;
        txn.open_table(REGISTRATIONS).map_err(db)?;
        txn.open_table(REVOCATIONS).map_err(db)?;
        txn.open_table(ROLLOUTS).map_err(db)?;
        txn.open_table(PINS).map_err(db)?;
        let last = {
            let history = txn.open_table(HISTORY).map_err(db)?;
            let mut last = 0;
            for row in history.iter().map_err(db)? {
                let (key, _) = row.map_err(db)?;
                last = last.max(key.value().1);
            }
            last
        };
        txn.commit().map_err(db)?;
        Ok(RedbStore { db: database, path, next_seq: Mutex::new(last + 1) })
    }

    fn write_events(&self, events: &[StoreEvent]) -> Result<()> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut reports = txn.open_table(REPORTS).map_err(db)?;
            let mut history = txn.open_table(HISTORY).map_err(db)?;
            let mut rollouts = txn.open_table(ROLLOUTS).map_err(db)?;
            let mut pins = txn.open_table(PINS).map_err(db)?;
            let mut seq = self.next_seq.lock().expect("seq lock");
            for event in events {
                match event {
                    StoreEvent::Report { cluster, report } => {
                        reports.insert(cluster.as_str(), report.encode_to_vec().as_slice()).map_err(db)?;
                    }
                    StoreEvent::History { cluster, entry } => {
                        history.insert((cluster.as_str(), *seq), entry.encode_to_vec().as_slice()).map_err(db)?;
                        *seq += 1;
                    }
                    StoreEvent::Rollout { environment, state } => {
                        rollouts.insert(environment.as_str(), state.as_str()).map_err(db)?;
                    }
                    StoreEvent::Pin { environment, commit: Some(commit) } => {
                        pins.insert(environment.as_str(), commit.as_str()).map_err(db)?;
                    }
                    StoreEvent::Pin { environment, commit: None } => {
                        pins.remove(environment.as_str()).map_err(db)?;
                    }
                }
            }
        }
        txn.commit().map_err(db)
    }
}

impl Store for RedbStore {
    fn write(&self, events: &[StoreEvent]) -> Result<()> {
        self.write_events(events).map_err(|e| StoreError::Write { path: self.path.clone(), message: e.to_string() })
    }

    fn last_reports(&self) -> Result<Vec<(String, Report)>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(REPORTS).map_err(db)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db)? {
            let (key, value) = row.map_err(db)?;
            out.push((key.value().to_string(), Report::decode(value.value()).map_err(db)?));
        }
        Ok(out)
    }

    fn history(&self, cluster: &str, limit: usize) -> Result<Vec<HistoryEntry>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(HISTORY).map_err(db)?;
        let mut out = Vec::new();
        for row in table.range((cluster, 0)..=(cluster, u64::MAX)).map_err(db)?.rev().take(limit) {
            let (_, value) = row.map_err(db)?;
            out.push(HistoryEntry::decode(value.value()).map_err(db)?);
        }
        Ok(out)
    }

    fn put_token(&self, hash: &str, token: &TokenRecord) -> Result<()> {
        let json = serde_json::to_vec(token).map_err(db)?;
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(TOKENS).map_err(db)?.insert(hash, json.as_slice()).map_err(db)?;
        txn.commit().map_err(db)
    }

    fn redeem_token(&self, hash: &str, now: i64) -> Result<Redeemed> {
        // redb serializes write transactions, so read-check-write here is atomic.
        let txn = self.db.begin_write().map_err(db)?;
        let outcome = {
            let mut table = txn.open_table(TOKENS).map_err(db)?;
            let record = match table.get(hash).map_err(db)? {
                Some(value) => Some(serde_json::from_slice::<TokenRecord>(value.value()).map_err(db)?),
                None => None,
            };
            let (outcome, write) = redeem(record, now);
            if let Some(record) = write {
                table.insert(hash, serde_json::to_vec(&record).map_err(db)?.as_slice()).map_err(db)?;
            }
            outcome
        };
        txn.commit().map_err(db)?;
        Ok(outcome)
    }

    fn put_registration(&self, registration: &Registration) -> Result<()> {
        let json = serde_json::to_vec(registration).map_err(db)?;
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(REGISTRATIONS)
            .map_err(db)?
            .insert(registration.cluster.as_str(), json.as_slice())
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    fn registrations(&self) -> Result<Vec<Registration>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(REGISTRATIONS).map_err(db)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db)? {
            let (_, value) = row.map_err(db)?;
            out.push(serde_json::from_slice(value.value()).map_err(db)?);
        }
        Ok(out)
    }

    fn put_revocation(&self, cluster: &str, at: i64) -> Result<()> {
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(REVOCATIONS).map_err(db)?.insert(cluster, at).map_err(db)?;
        txn.commit().map_err(db)
    }

    fn revocations(&self) -> Result<Vec<(String, i64)>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(REVOCATIONS).map_err(db)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db)? {
            let (key, value) = row.map_err(db)?;
            out.push((key.value().to_string(), value.value()));
        }
        Ok(out)
    }

    fn rollouts(&self) -> Result<Vec<(String, String)>> {
        self.strings(ROLLOUTS)
    }

    fn pins(&self) -> Result<Vec<(String, String)>> {
        self.strings(PINS)
    }
}

impl RedbStore {
    /// Every row of a string → string table.
    fn strings(&self, table: TableDefinition<&str, &str>) -> Result<Vec<(String, String)>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(table).map_err(db)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db)? {
            let (key, value) = row.map_err(db)?;
            out.push((key.value().to_string(), value.value().to_string()));
        }
        Ok(out)
    }
}

/// A store in memory: lost on restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    reports: Mutex<BTreeMap<String, Report>>,
    history: Mutex<BTreeMap<String, VecDeque<HistoryEntry>>>,
    tokens: Mutex<BTreeMap<String, TokenRecord>>,
    registrations: Mutex<BTreeMap<String, Registration>>,
    revocations: Mutex<BTreeMap<String, i64>>,
    rollouts: Mutex<BTreeMap<String, String>>,
    pins: Mutex<BTreeMap<String, String>>,
}

impl Store for MemoryStore {
    fn write(&self, events: &[StoreEvent]) -> Result<()> {
        for event in events {
            match event {
                StoreEvent::Report { cluster, report } => {
                    self.reports.lock().expect("reports lock").insert(cluster.clone(), report.clone());
                }
                StoreEvent::Rollout { environment, state } => {
                    self.rollouts.lock().expect("rollouts lock").insert(environment.clone(), state.clone());
                }
                StoreEvent::Pin { environment, commit } => {
                    let mut pins = self.pins.lock().expect("pins lock");
                    match commit {
                        Some(commit) => pins.insert(environment.clone(), commit.clone()),
                        None => pins.remove(environment),
                    };
                }
                StoreEvent::History { cluster, entry } => {
                    let mut history = self.history.lock().expect("history lock");
                    let entries = history.entry(cluster.clone()).or_default();
                    entries.push_back(entry.clone());
                    if entries.len() > MEMORY_HISTORY {
                        entries.pop_front();
                    }
                }
            }
        }
        Ok(())
    }

    fn last_reports(&self) -> Result<Vec<(String, Report)>> {
        Ok(self.reports.lock().expect("reports lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn history(&self, cluster: &str, limit: usize) -> Result<Vec<HistoryEntry>> {
        let history = self.history.lock().expect("history lock");
        Ok(history.get(cluster).map(|h| h.iter().rev().take(limit).cloned().collect()).unwrap_or_default())
    }

    fn put_token(&self, hash: &str, token: &TokenRecord) -> Result<()> {
        self.tokens.lock().expect("tokens lock").insert(hash.to_string(), token.clone());
        Ok(())
    }

    fn redeem_token(&self, hash: &str, now: i64) -> Result<Redeemed> {
        let mut tokens = self.tokens.lock().expect("tokens lock");
        let (outcome, write) = redeem(tokens.get(hash).cloned(), now);
        if let Some(record) = write {
            tokens.insert(hash.to_string(), record);
        }
        Ok(outcome)
    }

    fn put_registration(&self, registration: &Registration) -> Result<()> {
        self.registrations
            .lock()
            .expect("registrations lock")
            .insert(registration.cluster.clone(), registration.clone());
        Ok(())
    }

    fn registrations(&self) -> Result<Vec<Registration>> {
        Ok(self.registrations.lock().expect("registrations lock").values().cloned().collect())
    }

    fn put_revocation(&self, cluster: &str, at: i64) -> Result<()> {
        self.revocations.lock().expect("revocations lock").insert(cluster.to_string(), at);
        Ok(())
    }

    fn revocations(&self) -> Result<Vec<(String, i64)>> {
        Ok(self.revocations.lock().expect("revocations lock").iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    fn rollouts(&self) -> Result<Vec<(String, String)>> {
        Ok(self.rollouts.lock().expect("rollouts lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn pins(&self) -> Result<Vec<(String, String)>> {
        Ok(self.pins.lock().expect("pins lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// Events waiting for the writer before new ones are refused (and logged).
const QUEUE: usize = 16_384;
/// Events written per transaction at most.
const BATCH: usize = 1024;

/// The sending half of the writer task.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Queued>,
}

/// What the writer task takes: events to write, and flush requests answered once everything
/// queued before them is written.
enum Queued {
    Event(StoreEvent),
    Flush(oneshot::Sender<()>),
}

impl StoreWriter {
    /// Starts the writer task for `store`. It ends when every `StoreWriter` clone is dropped,
    /// after writing what was queued.
    pub fn spawn(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut flushed = Vec::new();
                let events: Vec<StoreEvent> = batch
                    .drain(..)
                    .filter_map(|queued| match queued {
                        Queued::Event(event) => Some(event),
                        Queued::Flush(done) => {
                            flushed.push(done);
                            None
                        }
                    })
                    .collect();
                if !events.is_empty() {
                    let store = store.clone();
                    match tokio::task::spawn_blocking(move || store.write(&events)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "store write failed"),
                        Err(e) => tracing::error!(error = %e, "store writer panicked"),
                    }
                }
                // The receiver may have stopped waiting; there is no one to tell then.
                for done in flushed {
                    let _ = done.send(());
                }
                // A short pause lets a burst (a commit reaching 10,000 clusters) share transactions.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        (StoreWriter { tx }, task)
    }

    /// Events queued and not yet written.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues an event; a full queue drops it with a warning rather than stall the caller.
    pub fn record(&self, event: StoreEvent) {
        if let Err(e) = self.tx.try_send(Queued::Event(event)) {
            tracing::warn!(error = %e, "store queue full; an audit event was not persisted");
        }
    }

    /// Waits until every event queued before this call is written (or failed, loudly).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Queued::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
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
            ])
            .unwrap();
        assert_eq!(store.rollouts().unwrap(), [("prod".to_string(), "{\"a\":2}".to_string())], "the latest rollout");
        assert_eq!(store.pins().unwrap(), [("prod".to_string(), "c1".to_string())], "a released pin is gone");
        let history = store.history("eu-1", 10).unwrap();
        assert_eq!(history.iter().map(|h| h.event.as_str()).collect::<Vec<_>>(), ["applied", "assigned"]);
        assert_eq!(store.history("eu-1", 1).unwrap().len(), 1);
        assert_eq!(store.last_reports().unwrap()[0].1.revision, "r1");
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

    #[test]
    fn tokens_are_spent_once_in_both_stores_and_survive_a_reopen() {
        exercise_registration(&MemoryStore::default());
        let dir = tempfile::tempdir().unwrap();
        exercise_registration(&RedbStore::open(dir.path()).unwrap());
        let reopened = RedbStore::open(dir.path()).unwrap();
        assert!(matches!(reopened.redeem_token("live", 162).unwrap(), Redeemed::AlreadyUsed(_)));
        assert_eq!(reopened.revocations().unwrap().len(), 1);
    }

    #[test]
    fn memory_store_keeps_history_newest_first() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn redb_store_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&RedbStore::open(dir.path()).unwrap());
        let reopened = RedbStore::open(dir.path()).unwrap();
        assert_eq!(reopened.history("eu-1", 10).unwrap().len(), 2);
        reopened.write(&[StoreEvent::History { cluster: "eu-1".into(), entry: entry("assigned", "r2") }]).unwrap();
        assert_eq!(reopened.history("eu-1", 1).unwrap()[0].revision, "r2");
        assert_eq!(reopened.last_reports().unwrap().len(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_writer_counts_what_waits_and_drains_it() {
        let store = Arc::new(MemoryStore::default());
        let (writer, task) = StoreWriter::spawn(store.clone());
        // On a current-thread runtime the writer task runs only when this test yields.
        for revision in ["r1", "r2", "r3"] {
            writer.record(StoreEvent::History { cluster: "eu-1".into(), entry: entry("assigned", revision) });
        }
        assert_eq!(writer.queued(), 3);
        drop(writer);
        task.await.unwrap();
        assert_eq!(store.history("eu-1", 10).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn flush_returns_once_what_was_queued_before_it_is_written() {
        let store = Arc::new(MemoryStore::default());
        let (writer, _task) = StoreWriter::spawn(store.clone());
        for revision in ["r1", "r2"] {
            writer.record(StoreEvent::History { cluster: "eu-1".into(), entry: entry("assigned", revision) });
        }
        assert!(store.history("eu-1", 10).unwrap().is_empty(), "nothing is written before the writer runs");
        writer.flush().await;
        assert_eq!(store.history("eu-1", 10).unwrap().len(), 2);
        assert_eq!(writer.queued(), 0);
    }
}

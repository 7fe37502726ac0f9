//! The embedded store: what the hub keeps, in one redb file in the data directory (the default,
//! so `convoy-hub` needs no database).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use convoy_shared::proto::{AuditRecord, HistoryEntry, Report};
use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::store::{
    Delivery, OUTBOX_KEEP_MS, OutboxEntry, Redeemed, Registration, Result, Store, StoreError, StoreEvent, TokenRecord,
    redeem,
};

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
/// `commit` and `spec` of the access policy in force.
const ACCESS: TableDefinition<&str, &str> = TableDefinition::new("access_policy");
/// (Unix milliseconds, sequence) → [`AuditRecord`] (protobuf), oldest first.
const AUDIT: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("audit");
/// Sequence → [`OutboxEntry`] (JSON).
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Sequences of the pending outbox entries (so finding them never reads the delivered ones).
const OUTBOX_PENDING: TableDefinition<u64, ()> = TableDefinition::new("outbox_pending");
/// redb's page cache (its default is 1 GiB, which the ever-growing history table would fill,
/// one commit at a time, as hub memory).
const REDB_CACHE_BYTES: usize = 4 * 1024 * 1024;

fn db<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> StoreError {
    StoreError::Db(e.into())
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
        txn.open_table(ACCESS).map_err(db)?;
        txn.open_table(AUDIT).map_err(db)?;
        txn.open_table(OUTBOX).map_err(db)?;
        txn.open_table(OUTBOX_PENDING).map_err(db)?;
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
            let mut access = txn.open_table(ACCESS).map_err(db)?;
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
                    StoreEvent::Access { commit, spec } => {
                        access.insert("commit", commit.as_str()).map_err(db)?;
                        access.insert("spec", spec.as_str()).map_err(db)?;
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

    fn access_policy(&self) -> Result<Option<(String, String)>> {
        let stored: BTreeMap<String, String> = self.strings(ACCESS)?.into_iter().collect();
        Ok(stored.get("commit").cloned().zip(stored.get("spec").cloned()))
    }

    fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut table = txn.open_table(AUDIT).map_err(db)?;
            // Unique within a millisecond: the table's size, in a transaction redb serializes.
            let seq = table.len().map_err(db)?;
            table.insert((record.at_unix_ms, seq), record.encode_to_vec().as_slice()).map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    fn audit(&self, since_ms: i64, user: &str, limit: usize) -> Result<Vec<AuditRecord>> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(AUDIT).map_err(db)?;
        let mut out = Vec::new();
        for row in table.range((since_ms, 0)..).map_err(db)? {
            let (_, value) = row.map_err(db)?;
            let record = AuditRecord::decode(value.value()).map_err(db)?;
            if user.is_empty() || record.user == user {
                out.push(record);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn outbox_push(&self, entries: &[OutboxEntry]) -> Result<()> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut outbox = txn.open_table(OUTBOX).map_err(db)?;
            let mut pending = txn.open_table(OUTBOX_PENDING).map_err(db)?;
            // Delivered entries are dropped oldest first, up to the first one still wanted.
            let newest = entries.iter().map(|e| e.created_ms).max().unwrap_or(0);
            let mut old = Vec::new();
            for row in outbox.iter().map_err(db)? {
                let (key, value) = row.map_err(db)?;
                let entry: OutboxEntry = serde_json::from_slice(value.value()).map_err(db)?;
                if entry.created_ms >= newest - OUTBOX_KEEP_MS {
                    break;
                }
                if entry.state != Delivery::Pending {
                    old.push(key.value());
                }
            }
            for key in old {
                outbox.remove(key).map_err(db)?;
            }
            let mut seq = outbox.last().map_err(db)?.map_or(0, |(key, _)| key.value());
            for entry in entries {
                seq += 1;
                let entry = OutboxEntry { seq: seq as i64, ..entry.clone() };
                outbox.insert(seq, serde_json::to_vec(&entry).map_err(db)?.as_slice()).map_err(db)?;
                pending.insert(seq, ()).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    fn outbox_pending(&self, receiver: Option<&str>, limit: usize) -> Result<Vec<OutboxEntry>> {
        let txn = self.db.begin_read().map_err(db)?;
        let (outbox, pending) = (txn.open_table(OUTBOX).map_err(db)?, txn.open_table(OUTBOX_PENDING).map_err(db)?);
        let mut out = Vec::new();
        for row in pending.iter().map_err(db)? {
            let (key, _) = row.map_err(db)?;
            if let Some(value) = outbox.get(key.value()).map_err(db)? {
                let entry: OutboxEntry = serde_json::from_slice(value.value()).map_err(db)?;
                if receiver.is_none_or(|r| entry.receiver == r) {
                    out.push(entry);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn outbox_settle(&self, entry: &OutboxEntry) -> Result<()> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let seq = entry.seq as u64;
            txn.open_table(OUTBOX)
                .map_err(db)?
                .insert(seq, serde_json::to_vec(entry).map_err(db)?.as_slice())
                .map_err(db)?;
            let mut pending = txn.open_table(OUTBOX_PENDING).map_err(db)?;
            if entry.state == Delivery::Pending {
                pending.insert(seq, ()).map_err(db)?;
            } else {
                pending.remove(seq).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    fn outbox_recent(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let txn = self.db.begin_read().map_err(db)?;
        let outbox = txn.open_table(OUTBOX).map_err(db)?;
        let mut out = Vec::new();
        for row in outbox.iter().map_err(db)?.rev().take(limit) {
            let (_, value) = row.map_err(db)?;
            out.push(serde_json::from_slice(value.value()).map_err(db)?);
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::tests::{entry, exercise, exercise_registration};

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
    fn redb_store_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        exercise(&RedbStore::open(dir.path()).unwrap());
        let reopened = RedbStore::open(dir.path()).unwrap();
        assert_eq!(reopened.history("eu-1", 10).unwrap().len(), 2);
        reopened.write(&[StoreEvent::History { cluster: "eu-1".into(), entry: entry("assigned", "r2") }]).unwrap();
        assert_eq!(reopened.history("eu-1", 1).unwrap()[0].revision, "r2");
        assert_eq!(reopened.last_reports().unwrap().len(), 1);
    }
}

//! The store in memory: lost on restart (tests, the sandbox without a data directory).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use convoy_shared::proto::{AuditRecord, HistoryEntry, Report};

use crate::store::{
    Delivery, OUTBOX_KEEP_MS, OutboxEntry, Redeemed, Registration, Result, Store, StoreEvent, TokenRecord, redeem,
};

/// History entries kept per cluster in memory.
const MEMORY_HISTORY: usize = 1000;

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
    audit: Mutex<Vec<AuditRecord>>,
    access: Mutex<Option<(String, String)>>,
    outbox: Mutex<BTreeMap<i64, OutboxEntry>>,
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
                StoreEvent::Access { commit, spec } => {
                    *self.access.lock().expect("access lock") = Some((commit.clone(), spec.clone()));
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

    fn access_policy(&self) -> Result<Option<(String, String)>> {
        Ok(self.access.lock().expect("access lock").clone())
    }

    fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        self.audit.lock().expect("audit lock").push(record.clone());
        Ok(())
    }

    fn audit(&self, since_ms: i64, user: &str, limit: usize) -> Result<Vec<AuditRecord>> {
        let audit = self.audit.lock().expect("audit lock");
        let mut out: Vec<AuditRecord> =
            audit.iter().filter(|r| r.at_unix_ms >= since_ms && (user.is_empty() || r.user == user)).cloned().collect();
        out.sort_by_key(|r| r.at_unix_ms);
        out.truncate(limit);
        Ok(out)
    }

    fn outbox_push(&self, entries: &[OutboxEntry]) -> Result<()> {
        let mut outbox = self.outbox.lock().expect("outbox lock");
        let newest = entries.iter().map(|e| e.created_ms).max().unwrap_or(0);
        outbox.retain(|_, e| e.state != Delivery::Delivered || e.created_ms >= newest - OUTBOX_KEEP_MS);
        let mut seq = outbox.keys().next_back().copied().unwrap_or(0);
        for entry in entries {
            seq += 1;
            outbox.insert(seq, OutboxEntry { seq, ..entry.clone() });
        }
        Ok(())
    }

    fn outbox_pending(&self, receiver: Option<&str>, limit: usize) -> Result<Vec<OutboxEntry>> {
        let outbox = self.outbox.lock().expect("outbox lock");
        let wanted = |e: &&OutboxEntry| e.state == Delivery::Pending && receiver.is_none_or(|r| e.receiver == r);
        Ok(outbox.values().filter(wanted).take(limit).cloned().collect())
    }

    fn outbox_settle(&self, entry: &OutboxEntry) -> Result<()> {
        self.outbox.lock().expect("outbox lock").insert(entry.seq, entry.clone());
        Ok(())
    }

    fn outbox_recent(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        Ok(self.outbox.lock().expect("outbox lock").values().rev().take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::exercise;

    #[test]
    fn memory_store_keeps_history_newest_first() {
        exercise(&MemoryStore::default());
    }
}

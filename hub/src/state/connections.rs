//! The live connection table: which clusters have an agent stream open, since when, when we last
//! heard from them, and what they last reported.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use convoy_shared::clock::unix_ms;
use convoy_shared::proto::{ClusterInfo, Health, Hello, Report};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

/// One cluster's agent link as the hub sees it.
#[derive(Debug, Clone)]
struct ClusterLink {
    /// Identifies the stream currently registered, so a late close of a replaced stream is ignored.
    session: u64,
    connected: bool,
    since_ms: i64,
    last_seen_ms: i64,
    peer: String,
    /// When the certificate of the current (or last) stream expires; 0: unknown.
    cert_not_after_ms: i64,
    agent_version: String,
    applied_digest: String,
    applied_revision: String,
    last_report: Option<Reported>,
    /// What the agent last said it could not take from the hub (empty: nothing).
    problem: String,
    /// Cancelled when this session is replaced by a newer stream from the same cluster; the
    /// session task owns the clone it waits on and drops it when the stream ends.
    cancel: CancellationToken,
}

/// A cluster's last report as the table keeps it: encoded (a few hundred bytes, where the
/// decoded message holds a string per field of every object: several KiB for each of
/// thousands of clusters), with what the listing shows of it.
#[derive(Debug, Clone)]
struct Reported {
    encoded: Box<[u8]>,
    /// The worst app health.
    health: i32,
    drift_count: u32,
    /// Tells one set of drifts from another (which objects, fields, healed or not).
    drifts_hash: u64,
}

/// What a report changed of what the fleet shows, for watchers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReportChange {
    /// It applied a digest it had not applied before (worth a history entry).
    pub newly_applied: bool,
    /// The worst app health before and after, when it changed.
    pub health: Option<(i32, i32)>,
    /// How many drifts there are now, when the drifts changed.
    pub drifts: Option<u32>,
}

impl Reported {
    fn of(report: &Report) -> Reported {
        Reported {
            encoded: prost::Message::encode_to_vec(report).into_boxed_slice(),
            health: report.apps.iter().map(|a| a.health).max().unwrap_or(Health::Healthy as i32),
            drift_count: report.drifts.len() as u32,
            drifts_hash: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for d in &report.drifts {
                    prost::Message::encode_to_vec(d).hash(&mut h);
                }
                h.finish()
            },
        }
    }

    fn report(&self) -> Report {
        prost::Message::decode(&*self.encoded).expect("the table decodes what it encoded")
    }
}

/// Every cluster that has connected since the hub started, connected or not.
#[derive(Debug, Default)]
pub struct ConnectionTable {
    links: DashMap<String, ClusterLink>,
    next_session: AtomicU64,
}

impl ConnectionTable {
    /// Registers a new stream for `cluster` from `peer`, whose certificate expires at
    /// `cert_not_after_ms` (0: unknown); an older stream of the same cluster is told to close.
    /// Returns the session id and the token the session must stop on.
    pub fn open(&self, cluster: &str, peer: SocketAddr, cert_not_after_ms: i64) -> (u64, CancellationToken) {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let cancel = CancellationToken::new();
        let now = unix_ms();
        let mut link = ClusterLink {
            session,
            connected: true,
            since_ms: now,
            last_seen_ms: now,
            peer: peer.to_string(),
            cert_not_after_ms,
            agent_version: String::new(),
            applied_digest: String::new(),
            applied_revision: String::new(),
            last_report: None,
            problem: String::new(),
            cancel: cancel.clone(),
        };
        match self.links.entry(cluster.to_string()) {
            dashmap::Entry::Occupied(mut entry) => {
                let old = entry.get_mut();
                if old.connected {
                    tracing::warn!(cluster, old_peer = %old.peer, new_peer = %peer, "cluster connected again; closing its older stream");
                    old.cancel.cancel();
                }
                // Keep what the previous stream reported until the new one reports.
                link.last_report = old.last_report.take();
                link.applied_digest = std::mem::take(&mut old.applied_digest);
                link.applied_revision = std::mem::take(&mut old.applied_revision);
                *old = link;
            }
            dashmap::Entry::Vacant(entry) => {
                entry.insert(link);
            }
        }
        (session, cancel)
    }

    fn with_session(&self, cluster: &str, session: u64, f: impl FnOnce(&mut ClusterLink)) {
        if let Some(mut link) = self.links.get_mut(cluster)
            && link.session == session
        {
            f(&mut link);
        }
    }

    /// Records the agent's Hello.
    pub fn hello(&self, cluster: &str, session: u64, hello: &Hello) {
        self.with_session(cluster, session, |link| {
            link.last_seen_ms = unix_ms();
            link.agent_version = hello.agent_version.clone();
        });
    }

    /// Records what the agent could not take from the hub (empty clears it).
    pub fn problem(&self, cluster: &str, session: u64, message: String) {
        self.with_session(cluster, session, |link| {
            link.last_seen_ms = unix_ms();
            link.problem = message;
        });
    }

    /// What `cluster`'s agent last said it could not take from the hub, if anything.
    pub fn problem_of(&self, cluster: &str) -> Option<String> {
        self.links.get(cluster).map(|l| l.problem.clone()).filter(|p| !p.is_empty())
    }

    /// Notes that the agent is alive.
    pub fn touch(&self, cluster: &str, session: u64) {
        self.with_session(cluster, session, |link| link.last_seen_ms = unix_ms());
    }

    /// Stores the agent's latest report; says what it changed.
    pub fn report(&self, cluster: &str, session: u64, report: &Report) -> ReportChange {
        let mut change = ReportChange::default();
        self.with_session(cluster, session, |link| {
            link.last_seen_ms = unix_ms();
            change = apply_report(link, report);
        });
        change
    }

    /// Restores a report kept by the store after a hub restart (the cluster shows as
    /// disconnected until its agent comes back).
    pub fn restore(&self, cluster: &str, report: Report) {
        self.links.entry(cluster.to_string()).or_insert_with(|| dormant(report));
    }

    /// Takes a report another hub replica received (the agent streams there): kept unless this
    /// replica holds the cluster's live stream, whose own reports come first.
    pub fn relayed(&self, cluster: &str, report: Report) {
        match self.links.entry(cluster.to_string()) {
            dashmap::Entry::Occupied(mut entry) if !entry.get().connected => {
                let link = entry.get_mut();
                link.last_seen_ms = link.last_seen_ms.max(report.at_unix_ms);
                apply_report(link, &report);
            }
            dashmap::Entry::Occupied(_) => {}
            dashmap::Entry::Vacant(entry) => {
                entry.insert(dormant(report));
            }
        }
    }

    /// Closes `cluster`'s live stream at once (revocation); true when one was open.
    pub fn disconnect(&self, cluster: &str) -> bool {
        match self.links.get_mut(cluster) {
            Some(mut link) if link.connected => {
                link.cancel.cancel();
                link.connected = false;
                true
            }
            _ => false,
        }
    }

    /// Forgets everything about `cluster`'s link and reports (a retired cluster), closing its
    /// stream first; true when one was open.
    pub fn forget(&self, cluster: &str) -> bool {
        let closed = self.disconnect(cluster);
        self.links.remove(cluster);
        closed
    }

    /// Marks the stream closed (only if it is still the registered one).
    pub fn close(&self, cluster: &str, session: u64) {
        self.with_session(cluster, session, |link| link.connected = false);
    }

    /// The latest report of `cluster`, if any.
    pub fn last_report(&self, cluster: &str) -> Option<Report> {
        self.links.get(cluster).and_then(|l| l.last_report.as_ref().map(Reported::report))
    }

    /// One [`ClusterInfo`] per known cluster, sorted by name.
    pub fn list(&self) -> Vec<ClusterInfo> {
        let mut out: Vec<ClusterInfo> = self.links.iter().map(|e| info(e.key(), e.value())).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The [`ClusterInfo`] of one cluster.
    pub fn get(&self, cluster: &str) -> Option<ClusterInfo> {
        self.links.get(cluster).map(|e| info(e.key(), e.value()))
    }
}

/// A link with no stream here, as `report` left it.
fn dormant(report: Report) -> ClusterLink {
    let mut link = ClusterLink {
        session: 0,
        connected: false,
        since_ms: 0,
        last_seen_ms: report.at_unix_ms,
        peer: String::new(),
        cert_not_after_ms: 0,
        agent_version: String::new(),
        applied_digest: String::new(),
        applied_revision: String::new(),
        last_report: None,
        problem: String::new(),
        cancel: CancellationToken::new(),
    };
    apply_report(&mut link, &report);
    link
}

fn apply_report(link: &mut ClusterLink, report: &Report) -> ReportChange {
    let newly_applied = report.applied && link.applied_digest != report.digest;
    if report.applied {
        link.applied_revision = report.revision.clone();
        link.applied_digest = report.digest.clone();
    }
    let now = Reported::of(report);
    let (health, drifts) = match &link.last_report {
        Some(before) => (
            (before.health != now.health).then_some((before.health, now.health)),
            (before.drifts_hash != now.drifts_hash).then_some(now.drift_count),
        ),
        None => (Some((Health::Unknown as i32, now.health)), (now.drift_count > 0).then_some(now.drift_count)),
    };
    link.last_report = Some(now);
    ReportChange { newly_applied, health, drifts }
}

fn info(name: &str, link: &ClusterLink) -> ClusterInfo {
    let health = link.last_report.as_ref().map_or(Health::Unknown as i32, |r| r.health);
    ClusterInfo {
        name: name.to_string(),
        connected: link.connected,
        last_seen_unix_ms: link.last_seen_ms,
        connected_since_unix_ms: link.since_ms,
        agent_version: link.agent_version.clone(),
        peer_address: link.peer.clone(),
        cert_not_after_unix_ms: link.cert_not_after_ms,
        applied_digest: link.applied_digest.clone(),
        applied_revision: link.applied_revision.clone(),
        health,
        drift_count: link.last_report.as_ref().map(|r| r.drift_count).unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn a_second_stream_replaces_the_first_and_the_late_close_is_ignored() {
        let table = ConnectionTable::default();
        let (first, first_cancel) = table.open("eu-1", addr(), 0);
        let (second, _) = table.open("eu-1", addr(), 0);
        assert!(first_cancel.is_cancelled());
        table.close("eu-1", first);
        assert!(table.get("eu-1").unwrap().connected);
        table.close("eu-1", second);
        assert!(!table.get("eu-1").unwrap().connected);
    }

    #[test]
    fn a_relayed_report_counts_unless_this_replica_holds_the_live_stream() {
        let table = ConnectionTable::default();
        let applied =
            |digest: &str| Report { applied: true, digest: digest.into(), at_unix_ms: 5, ..Default::default() };
        table.relayed("eu-1", applied("d1"));
        let seen = table.get("eu-1").unwrap();
        assert_eq!((seen.connected, seen.applied_digest.as_str(), seen.last_seen_unix_ms), (false, "d1", 5));
        table.relayed("eu-1", applied("d2"));
        assert_eq!(table.get("eu-1").unwrap().applied_digest, "d2");

        let (session, _) = table.open("eu-1", addr(), 0);
        table.report("eu-1", session, &applied("d3"));
        table.relayed("eu-1", applied("stale"));
        assert_eq!(table.get("eu-1").unwrap().applied_digest, "d3", "the live stream's reports come first");
    }

    #[test]
    fn listing_is_sorted_and_carries_the_hello() {
        let table = ConnectionTable::default();
        let (s, _) = table.open("b", addr(), 0);
        table.open("a", addr(), 0);
        table.hello("b", s, &Hello { agent_version: "9.9".into(), ..Default::default() });
        let names: Vec<_> = table.list().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(table.get("b").unwrap().agent_version, "9.9");
    }

    #[test]
    fn the_last_report_reads_back_whole_and_the_listing_shows_its_worst_health_and_drifts() {
        use convoy_shared::proto::{AppStatus, Drift};
        let table = ConnectionTable::default();
        let (session, _) = table.open("eu-1", addr(), 0);
        assert_eq!(table.get("eu-1").unwrap().health, Health::Unknown as i32);
        let app =
            |name: &str, health: Health| AppStatus { name: name.into(), health: health as i32, ..Default::default() };
        let report = Report {
            digest: "d1".into(),
            applied: true,
            apps: vec![app("web", Health::Healthy), app("api", Health::Degraded)],
            drifts: vec![Drift::default(), Drift::default()],
            ..Default::default()
        };
        table.report("eu-1", session, &report);
        assert_eq!(table.last_report("eu-1"), Some(report));
        let info = table.get("eu-1").unwrap();
        assert_eq!((info.health, info.drift_count), (Health::Degraded as i32, 2));
    }
}

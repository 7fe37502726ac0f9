//! The Fleet page's table: which clusters match the filters, how many are in each state, and
//! the one page of them the browser shows. The page never holds more than a page of rows, so
//! it stays usable at 10,000 clusters.
//!
//! Decisions:
//! - A cluster's state is one word: `orphaned`, `unassigned`, `disconnected` (an agent that was
//!   never or is no longer connected), `degraded` (health DEGRADED or MISSING), `pending`
//!   (assigned, not applied yet) or `in-sync`, checked in that order.
//! - Filters combine: environment, a `key=value` label, the state, and a name substring.
//!   The counts per state are over the clusters every other filter keeps, so the chips say
//!   what choosing a state would show.
//! - Rows come in promotion order of their environment (clusters of no environment last), then
//!   by name; a page is at most [`MAX_LIMIT`] rows.

use std::collections::BTreeMap;

use convoy_shared::proto::{ClusterInfo, Health};
use serde::{Deserialize, Serialize};

/// The most rows one page holds.
pub const MAX_LIMIT: usize = 500;
/// Rows per page when the request names none.
pub const DEFAULT_LIMIT: usize = 100;

/// Every state, in the order the page shows them.
pub const STATES: [&str; 6] = ["in-sync", "pending", "degraded", "disconnected", "orphaned", "unassigned"];

/// A cluster's state on the page.
pub fn state(c: &ClusterInfo) -> &'static str {
    let degraded = c.health == Health::Degraded as i32 || c.health == Health::Missing as i32;
    if c.orphaned {
        "orphaned"
    } else if c.assigned_digest.is_empty() {
        "unassigned"
    } else if !c.connected {
        "disconnected"
    } else if degraded {
        "degraded"
    } else if !c.in_sync {
        "pending"
    } else {
        "in-sync"
    }
}

/// The query string of `GET /api/clusters`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Query {
    #[serde(default)]
    pub env: String,
    /// `key=value`.
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub state: String,
    /// A substring of the name.
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub offset: usize,
    pub limit: Option<usize>,
}

/// One row: the cluster as the hub reports it, with its state.
#[derive(Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub cluster: ClusterInfo,
    pub state: &'static str,
}

/// The answer of `GET /api/clusters`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// Every cluster the hub knows.
    pub total: usize,
    /// Those matching every filter.
    pub matched: usize,
    pub offset: usize,
    pub limit: usize,
    pub counts: BTreeMap<&'static str, usize>,
    pub clusters: Vec<Row>,
}

impl Query {
    fn keeps_apart_from_state(&self, c: &ClusterInfo) -> bool {
        let env_ok = self.env.is_empty() || c.environment == self.env;
        let label_ok = match self.label.split_once('=') {
            Some((k, v)) => c.labels.get(k.trim()).is_some_and(|l| l == v.trim()),
            None => self.label.trim().is_empty() || c.labels.contains_key(self.label.trim()),
        };
        let name_ok = self.q.is_empty() || c.name.contains(self.q.trim());
        env_ok && label_ok && name_ok
    }

    /// Filters, counts, orders and pages `clusters`; `environments` in promotion order.
    pub fn page(&self, clusters: Vec<ClusterInfo>, environments: &[String]) -> Page {
        let total = clusters.len();
        let mut counts: BTreeMap<&'static str, usize> = STATES.iter().map(|s| (*s, 0)).collect();
        let mut rows: Vec<Row> = Vec::new();
        for cluster in clusters {
            if !self.keeps_apart_from_state(&cluster) {
                continue;
            }
            let state = state(&cluster);
            *counts.entry(state).or_default() += 1;
            if self.state.is_empty() || self.state == state {
                rows.push(Row { cluster, state });
            }
        }
        let rank = |env: &str| environments.iter().position(|e| e == env).unwrap_or(environments.len());
        rows.sort_by(|a, b| {
            (rank(&a.cluster.environment), &a.cluster.name).cmp(&(rank(&b.cluster.environment), &b.cluster.name))
        });
        let matched = rows.len();
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let clusters: Vec<Row> = rows.into_iter().skip(self.offset).take(limit).collect();
        Page { total, matched, offset: self.offset, limit, counts, clusters }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, env: &str, connected: bool, in_sync: bool, health: Health) -> ClusterInfo {
        ClusterInfo {
            name: name.into(),
            environment: env.into(),
            connected,
            in_sync,
            health: health as i32,
            assigned_digest: "d".into(),
            labels: [("region".to_string(), if name.ends_with('1') { "eu" } else { "us" }.to_string())].into(),
            ..Default::default()
        }
    }

    fn fleet() -> Vec<ClusterInfo> {
        vec![
            cluster("prod-1", "prod", true, true, Health::Healthy),
            cluster("dev-2", "dev", true, false, Health::Progressing),
            cluster("dev-1", "dev", true, true, Health::Healthy),
            cluster("stage-1", "stage", false, true, Health::Healthy),
            cluster("prod-2", "prod", true, true, Health::Degraded),
            ClusterInfo { orphaned: true, ..cluster("old-1", "", false, false, Health::Unknown) },
            ClusterInfo { assigned_digest: String::new(), ..cluster("new-2", "dev", true, false, Health::Unknown) },
        ]
    }

    fn envs() -> Vec<String> {
        ["dev", "stage", "prod"].map(String::from).to_vec()
    }

    fn names(p: &Page) -> Vec<&str> {
        p.clusters.iter().map(|r| r.cluster.name.as_str()).collect()
    }

    #[test]
    fn states_are_judged_in_order() {
        let by_name: BTreeMap<String, &str> = fleet().iter().map(|c| (c.name.clone(), state(c))).collect();
        assert_eq!(by_name["prod-1"], "in-sync");
        assert_eq!(by_name["dev-2"], "pending");
        assert_eq!(by_name["stage-1"], "disconnected", "a disconnected cluster is that, whatever it last said");
        assert_eq!(by_name["prod-2"], "degraded");
        assert_eq!(by_name["old-1"], "orphaned");
        assert_eq!(by_name["new-2"], "unassigned");
    }

    #[test]
    fn rows_come_in_promotion_order_then_by_name_and_count_every_state() {
        let p = Query::default().page(fleet(), &envs());
        assert_eq!(names(&p), ["dev-1", "dev-2", "new-2", "stage-1", "prod-1", "prod-2", "old-1"]);
        assert_eq!((p.total, p.matched), (7, 7));
        assert_eq!(p.counts["in-sync"], 2);
        assert_eq!(p.counts["degraded"], 1);
    }

    #[test]
    fn filters_combine_and_counts_ignore_only_the_state_filter() {
        let q = Query { env: "prod".into(), state: "degraded".into(), ..Default::default() };
        let p = q.page(fleet(), &envs());
        assert_eq!(names(&p), ["prod-2"]);
        assert_eq!((p.counts["in-sync"], p.counts["degraded"], p.counts["pending"]), (1, 1, 0));
        let q = Query { label: "region=eu".into(), q: "1".into(), ..Default::default() };
        assert_eq!(names(&q.page(fleet(), &envs())), ["dev-1", "stage-1", "prod-1", "old-1"]);
        let q = Query { label: "region".into(), q: "dev".into(), ..Default::default() };
        assert_eq!(names(&q.page(fleet(), &envs())), ["dev-1", "dev-2"]);
        let q = Query { label: "team=web".into(), ..Default::default() };
        assert_eq!(q.page(fleet(), &envs()).matched, 0);
    }

    #[test]
    fn pages_are_bounded() {
        let many: Vec<ClusterInfo> =
            (0..10_000).map(|i| cluster(&format!("c-{i:05}"), "dev", true, true, Health::Healthy)).collect();
        let p = Query { offset: 9_950, limit: Some(100), ..Default::default() }.page(many.clone(), &envs());
        assert_eq!((p.matched, p.clusters.len(), p.clusters[0].cluster.name.as_str()), (10_000, 50, "c-09950"));
        let p = Query { limit: Some(1_000_000), ..Default::default() }.page(many, &envs());
        assert_eq!(p.clusters.len(), MAX_LIMIT);
    }
}

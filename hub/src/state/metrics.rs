//! The hub's Prometheus metrics, served at `/metrics` on the HTTP listener: connected agents,
//! how long a commit takes to become published assignments, git fetches, reports, drift and the
//! store's write queue.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the hub exports.
#[derive(Debug)]
pub struct HubMetrics {
    registry: Registry,
    pub agents_connected: Gauge,
    pub clusters_known: Gauge,
    pub clusters_orphaned: Gauge,
    pub drifts: Gauge,
    pub assignments_published: Counter,
    pub sync_duration: Histogram,
    pub git_fetch_duration: Histogram,
    pub git_fetch_failures: Counter,
    pub reports_received: Counter,
    pub store_queue_depth: Gauge,
    pub rollouts_active: Gauge,
    pub rollout_clusters_held: Gauge,
}

impl Default for HubMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("convoy_hub");
        let metrics = HubMetrics {
            agents_connected: Gauge::default(),
            clusters_known: Gauge::default(),
            clusters_orphaned: Gauge::default(),
            drifts: Gauge::default(),
            assignments_published: Counter::default(),
            // 1 ms … ~65 s.
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            git_fetch_duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            git_fetch_failures: Counter::default(),
            reports_received: Counter::default(),
            store_queue_depth: Gauge::default(),
            rollouts_active: Gauge::default(),
            rollout_clusters_held: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("agents_connected", "Agent streams open now", metrics.agents_connected.clone());
        registry.register("clusters", "Clusters the hub knows (Git or agent streams)", metrics.clusters_known.clone());
        registry.register(
            "clusters_orphaned",
            "Clusters Git no longer declares that keep their last assignment (convoy clusters retire forgets them)",
            metrics.clusters_orphaned.clone(),
        );
        registry.register("drifts", "Drifted objects in the agents' latest reports", metrics.drifts.clone());
        registry.register(
            "assignments_published",
            "Assignments whose content changed and were published",
            metrics.assignments_published.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "From the start of a fetch to every changed assignment published",
            metrics.sync_duration.clone(),
        );
        registry.register("git_fetch_duration_seconds", "Duration of git fetches", metrics.git_fetch_duration.clone());
        registry.register("git_fetch_failures", "Failed git fetches", metrics.git_fetch_failures.clone());
        registry.register("reports_received", "Reports received from agents", metrics.reports_received.clone());
        registry.register(
            "store_queue_depth",
            "Status and history events waiting to be written to the store",
            metrics.store_queue_depth.clone(),
        );
        registry.register(
            "rollouts_active",
            "Environments with a rollout in progress",
            metrics.rollouts_active.clone(),
        );
        registry.register(
            "rollout_clusters_held",
            "Clusters a rollout keeps on an earlier revision",
            metrics.rollout_clusters_held.clone(),
        );
        HubMetrics { registry, ..metrics }
    }
}

impl HubMetrics {
    /// Records a duration into a histogram, in seconds.
    pub fn observe(histogram: &Histogram, elapsed: Duration) {
        histogram.observe(elapsed.as_secs_f64());
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_their_prefix_and_values() {
        let metrics = HubMetrics::default();
        metrics.assignments_published.inc_by(3);
        metrics.agents_connected.set(2);
        HubMetrics::observe(&metrics.sync_duration, Duration::from_millis(5));
        let text = metrics.encode();
        assert!(text.contains("convoy_hub_assignments_published_total 3"), "{text}");
        assert!(text.contains("convoy_hub_agents_connected 2"), "{text}");
        assert!(text.contains("convoy_hub_sync_duration_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

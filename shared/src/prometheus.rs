//! One run of a metric-gate query against a Prometheus-compatible HTTP API, for the agents
//! (their cluster's Prometheus) and the hub (`from: hub`, a central one).

use convoy_model::analysis::{Measurement, prometheus_result};

use crate::clock::unix_ms;

/// Runs `query` against the Prometheus at `address`.
pub async fn measure(http: &reqwest::Client, address: &str, check: &str, query: &str) -> Measurement {
    let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
    let answer = async {
        let response = http.get(&url).query(&[("query", query)]).send().await.map_err(|e| format!("{url}: {e}"))?;
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| format!("{url} answered something that is not JSON"))?;
        prometheus_result(&json)
    };
    let (value, error) = match answer.await {
        Ok(value) => (Some(value), String::new()),
        Err(why) => (None, why),
    };
    Measurement { check: check.to_string(), at_unix_ms: unix_ms(), value, error }
}

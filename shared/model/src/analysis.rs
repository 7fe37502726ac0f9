//! Metric gates (`environments[].rollout.analysis`): Prometheus queries run while a wave soaks,
//! each judged by a CEL condition over its `result`. The agents run the queries inside their
//! clusters (or the hub, against a central endpoint, with `from: hub`) and report each
//! measurement; the hub judges them.
//!
//! Decisions:
//! - A query's result is its first sample (a vector's first element, or a scalar); no sample, an
//!   unreachable Prometheus, a query error or a condition that fails to evaluate is
//!   *inconclusive*: never success.

use serde::{Deserialize, Serialize};

/// Where the queries run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum QueryFrom {
    /// Each cluster's agent queries the Prometheus of its own cluster.
    #[default]
    Agent,
    /// The hub queries one central Prometheus-compatible endpoint.
    Hub,
}

/// The Prometheus the queries go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
}

/// One check of a metric gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckSpec {
    pub name: String,
    /// A PromQL query; its first sample is `result`.
    pub query: String,
    /// CEL over `result` (a number), e.g. `result < 0.01`.
    pub success_condition: String,
    /// Failed measurements tolerated during a soak; one more fails the check.
    #[serde(default)]
    pub failure_limit: u32,
}

/// `rollout.analysis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalysisSpec {
    pub prometheus: PrometheusSpec,
    #[serde(default)]
    pub from: QueryFrom,
    /// How often each query runs, e.g. `30s` (default 30s).
    #[serde(default)]
    pub interval: Option<String>,
    pub checks: Vec<CheckSpec>,
}

/// What a failing gate does (`rollout.onFailure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The rollout pauses (as for degraded clusters).
    #[default]
    Pause,
    /// The rollout aborts, every cluster it reached returns to the previous revision, and the
    /// environment is pinned there.
    Rollback,
}

/// One run of one check's query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub check: String,
    pub at_unix_ms: i64,
    /// The result; `None` when inconclusive.
    pub value: Option<f64>,
    /// Why there is no value (no data, unreachable, query error).
    pub error: String,
}

/// The first sample of a Prometheus `/api/v1/query` answer.
pub fn prometheus_result(answer: &serde_json::Value) -> Result<f64, String> {
    if answer["status"] != "success" {
        let error = answer["error"].as_str().unwrap_or("an answer that is not a query result");
        return Err(format!("the query failed: {error}"));
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => data["result"].get(0).map(|s| &s["value"][1]),
        Some("scalar") => Some(&data["result"][1]),
        other => {
            return Err(format!(
                "a {} result, not a number (use a query that gives one sample)",
                other.unwrap_or("missing")
            ));
        }
    };
    let Some(sample) = sample else { return Err("no data".into()) };
    sample
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("no number: {sample}"))
}

/// Judges `result` by `condition` (CEL over `result`): true, false, or why it could not.
#[cfg(feature = "cel")]
pub fn holds(condition: &str, result: f64) -> Result<bool, String> {
    let program = cel::Program::compile(condition).map_err(|e| e.to_string().replace('\n', " "))?;
    let mut context = cel::Context::default();
    context.add_variable_from_value("result", result);
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("the condition gave {other:?}, not a bool")),
        Err(e) => Err(format!("the condition failed: {e}")),
    }
}

/// Checks that `condition` compiles.
#[cfg(feature = "cel")]
pub fn compiles(condition: &str) -> Result<(), String> {
    cel::Program::compile(condition).map(|_| ()).map_err(|e| e.to_string().replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_sample_is_the_result_and_anything_else_says_why_not() {
        let vector = json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1700000000.1, "0.042"]}]}});
        assert_eq!(prometheus_result(&vector), Ok(0.042));
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1700000000.1, "3"]}});
        assert_eq!(prometheus_result(&scalar), Ok(3.0));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(prometheus_result(&empty), Err("no data".into()));
        let nan = json!({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]}});
        assert!(prometheus_result(&nan).is_err(), "0/0 is no data");
        let bad = json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"});
        assert_eq!(prometheus_result(&bad), Err("the query failed: parse error at char 5".into()));
    }

    #[cfg(feature = "cel")]
    #[test]
    fn a_condition_over_the_result_holds_or_not_or_cannot_say() {
        assert_eq!(holds("result < 0.01", 0.005), Ok(true));
        assert_eq!(holds("result < 0.01", 0.5), Ok(false));
        assert!(holds("result", 0.5).unwrap_err().contains("not a bool"));
        assert!(compiles("result <").is_err());
    }
}

//! What an agent reports: per-object and per-app health, apply results and drift, and the
//! proto conversions of those types.

use serde_json::Value;

use super::assignment::ObjectRef;
use crate::proto;

/// How healthy an object or app is, after the kstatus rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Health {
    /// Not observed yet.
    #[default]
    Unknown,
    /// Exists and reached its desired state.
    Healthy,
    /// Still converging (rollout, job running, claim pending…).
    Progressing,
    /// Failed or stuck (job failed, rollout deadline exceeded, apply error…).
    Degraded,
    /// Should exist but does not.
    Missing,
}

impl Health {
    /// Badness order used by [`Health::worst`]: healthy < unknown < progressing < missing < degraded.
    fn rank(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Unknown => 1,
            Health::Progressing => 2,
            Health::Missing => 3,
            Health::Degraded => 4,
        }
    }

    /// The worse of two healths ("worst wins" when rolling objects up into an app).
    pub fn worst(self, other: Health) -> Health {
        if other.rank() > self.rank() { other } else { self }
    }

    /// Lower-case name, for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Progressing => "progressing",
            Health::Degraded => "degraded",
            Health::Missing => "missing",
        }
    }
}

impl From<Health> for proto::Health {
    fn from(h: Health) -> Self {
        match h {
            Health::Unknown => proto::Health::Unknown,
            Health::Healthy => proto::Health::Healthy,
            Health::Progressing => proto::Health::Progressing,
            Health::Degraded => proto::Health::Degraded,
            Health::Missing => proto::Health::Missing,
        }
    }
}

impl From<proto::Health> for Health {
    fn from(h: proto::Health) -> Self {
        match h {
            proto::Health::Unknown => Health::Unknown,
            proto::Health::Healthy => Health::Healthy,
            proto::Health::Progressing => Health::Progressing,
            proto::Health::Degraded => Health::Degraded,
            proto::Health::Missing => Health::Missing,
        }
    }
}

fn health_of(wire: i32) -> Health {
    proto::Health::try_from(wire).map(Health::from).unwrap_or_default()
}

/// One managed object's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStatus {
    pub object: ObjectRef,
    pub health: Health,
    /// Why the health is what it is (e.g. "1 of 3 replicas updated").
    pub message: String,
    /// Set when the last apply of this object failed.
    pub apply_error: Option<String>,
    /// The rule that decided its health (`app web: cert-manager.io/Certificate`,
    /// `built-in: apps/Deployment`); empty before it was judged.
    pub rule: String,
}

/// One app's state: the worst of its objects, plus what holds it back.
#[derive(Debug, Clone, PartialEq)]
pub struct AppStatus {
    pub name: String,
    pub health: Health,
    pub message: String,
    pub objects: Vec<ObjectStatus>,
}

/// One field that differs from what the agent applied.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDrift {
    /// Dotted path, e.g. `spec.template.spec.containers[name=web].image`.
    pub path: String,
    /// What the agent applied (`Value::Null` when absent).
    pub desired: Value,
    /// What the cluster holds now (`Value::Null` when absent).
    pub live: Value,
    /// The field manager that now owns the field (who changed it), or "unknown".
    pub manager: String,
}

/// A managed object that no longer matches what the agent applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub object: ObjectRef,
    pub app: String,
    /// The object is gone from the cluster.
    pub missing: bool,
    pub fields: Vec<FieldDrift>,
    /// The agent re-applied the desired state (self-heal).
    pub healed: bool,
    pub detected_unix_ms: i64,
}

/// A snapshot of everything the agent knows about its cluster, sent to the hub.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub revision: String,
    pub digest: String,
    pub at_unix_ms: i64,
    pub apps: Vec<AppStatus>,
    pub drifts: Vec<Drift>,
    /// How many older reports the offline queue folded into this one.
    pub summarized_reports: u32,
    /// Every object of `digest` was applied cleanly.
    pub applied: bool,
    /// The latest run of each metric-gate query.
    pub measurements: Vec<convoy_model::analysis::Measurement>,
}

impl Report {
    /// The worst app health (healthy when there are no apps).
    pub fn health(&self) -> Health {
        self.apps.iter().fold(Health::Healthy, |h, a| h.worst(a.health))
    }

    /// Says everything the hub acts on that `older` said: the same revision, digest, applied
    /// flag, app healths and gate measurements. Only object detail and drifts may differ (the
    /// offline queue carries drifts over when it folds `older` into this one).
    pub fn supersedes(&self, older: &Report) -> bool {
        self.revision == older.revision
            && self.digest == older.digest
            && self.applied == older.applied
            && self.measurements == older.measurements
            && self.apps.len() == older.apps.len()
            && self.apps.iter().zip(&older.apps).all(|(a, b)| a.name == b.name && a.health == b.health)
    }

    /// Equal apart from the timestamp and summarization count: nothing new to say.
    pub fn same_state(&self, other: &Report) -> bool {
        self.supersedes(other) && self.apps == other.apps && self.drifts == other.drifts
    }
}

/// A wire measurement in the model.
pub fn measurement(m: &proto::Measurement) -> convoy_model::analysis::Measurement {
    convoy_model::analysis::Measurement {
        check: m.check.clone(),
        at_unix_ms: m.at_unix_ms,
        value: m.value,
        error: m.error.clone(),
    }
}

fn json_text(v: &Value) -> String {
    if v.is_null() { String::new() } else { v.to_string() }
}

fn json_value(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    }
}

impl From<&Drift> for proto::Drift {
    fn from(d: &Drift) -> Self {
        proto::Drift {
            r#ref: Some((&d.object).into()),
            app: d.app.clone(),
            missing: d.missing,
            fields: d
                .fields
                .iter()
                .map(|f| proto::FieldDrift {
                    path: f.path.clone(),
                    desired_json: json_text(&f.desired),
                    live_json: json_text(&f.live),
                    manager: f.manager.clone(),
                })
                .collect(),
            healed: d.healed,
            detected_unix_ms: d.detected_unix_ms,
        }
    }
}

impl From<&proto::Drift> for Drift {
    fn from(d: &proto::Drift) -> Self {
        Drift {
            object: d.r#ref.as_ref().map(ObjectRef::from).unwrap_or_default(),
            app: d.app.clone(),
            missing: d.missing,
            fields: d
                .fields
                .iter()
                .map(|f| FieldDrift {
                    path: f.path.clone(),
                    desired: json_value(&f.desired_json),
                    live: json_value(&f.live_json),
                    manager: f.manager.clone(),
                })
                .collect(),
            healed: d.healed,
            detected_unix_ms: d.detected_unix_ms,
        }
    }
}

impl From<&Report> for proto::Report {
    fn from(r: &Report) -> Self {
        proto::Report {
            revision: r.revision.clone(),
            digest: r.digest.clone(),
            at_unix_ms: r.at_unix_ms,
            apps: r
                .apps
                .iter()
                .map(|a| proto::AppStatus {
                    name: a.name.clone(),
                    health: proto::Health::from(a.health) as i32,
                    message: a.message.clone(),
                    objects: a
                        .objects
                        .iter()
                        .map(|o| proto::ObjectStatus {
                            r#ref: Some((&o.object).into()),
                            health: proto::Health::from(o.health) as i32,
                            message: o.message.clone(),
                            apply_error: o.apply_error.clone().unwrap_or_default(),
                            rule: o.rule.clone(),
                        })
                        .collect(),
                })
                .collect(),
            drifts: r.drifts.iter().map(proto::Drift::from).collect(),
            summarized_reports: r.summarized_reports,
            applied: r.applied,
            measurements: r
                .measurements
                .iter()
                .map(|m| proto::Measurement {
                    check: m.check.clone(),
                    at_unix_ms: m.at_unix_ms,
                    value: m.value,
                    error: m.error.clone(),
                })
                .collect(),
        }
    }
}

impl From<&proto::Report> for Report {
    fn from(r: &proto::Report) -> Self {
        Report {
            revision: r.revision.clone(),
            digest: r.digest.clone(),
            at_unix_ms: r.at_unix_ms,
            apps: r
                .apps
                .iter()
                .map(|a| AppStatus {
                    name: a.name.clone(),
                    health: health_of(a.health),
                    message: a.message.clone(),
                    objects: a
                        .objects
                        .iter()
                        .map(|o| ObjectStatus {
                            object: o.r#ref.as_ref().map(ObjectRef::from).unwrap_or_default(),
                            health: health_of(o.health),
                            message: o.message.clone(),
                            apply_error: (!o.apply_error.is_empty()).then(|| o.apply_error.clone()),
                            rule: o.rule.clone(),
                        })
                        .collect(),
                })
                .collect(),
            drifts: r.drifts.iter().map(Drift::from).collect(),
            summarized_reports: r.summarized_reports,
            applied: r.applied,
            measurements: r.measurements.iter().map(measurement).collect(),
        }
    }
}

/// One failed object as a line: `web: Deployment.apps web/web: reason`.
pub fn failure_line(app: &str, failure: &proto::ObjectFailure) -> String {
    let object = failure.r#ref.as_ref().map(|r| ObjectRef::from(r).to_string()).unwrap_or_default();
    format!("{app}: {object}: {}", failure.reason)
}

/// The failure lines of every app of `report`, as [`failure_line`] writes them.
pub fn failure_lines(report: &proto::Report) -> Vec<String> {
    report.apps.iter().flat_map(|app| failures(app).0.into_iter().map(|f| failure_line(&app.name, &f))).collect()
}

/// How many failed objects of one app a status answer names (the rest are counted).
pub const MAX_FAILED_SHOWN: usize = 20;
/// How much of one failure's reason a status answer keeps.
const MAX_REASON_CHARS: usize = 600;

/// The objects of `app` whose last apply failed, each once (same object and reason), with its
/// reason cut to a bounded length, at most [`MAX_FAILED_SHOWN`] of them; and how many there are.
pub fn failures(app: &proto::AppStatus) -> (Vec<proto::ObjectFailure>, u32) {
    let mut seen = std::collections::BTreeSet::new();
    let mut shown = Vec::new();
    let mut total = 0u32;
    for object in app.objects.iter().filter(|o| !o.apply_error.is_empty()) {
        let key = object.r#ref.as_ref().map(|r| (r.group.clone(), r.kind.clone(), r.namespace.clone(), r.name.clone()));
        if !seen.insert((key, object.apply_error.clone())) {
            continue;
        }
        total += 1;
        if shown.len() < MAX_FAILED_SHOWN {
            let mut reason = object.apply_error.clone();
            if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
                reason.truncate(cut);
                reason.push('…');
            }
            shown.push(proto::ObjectFailure { r#ref: object.r#ref.clone(), reason });
        }
    }
    (shown, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn worst_health_wins() {
        assert_eq!(Health::Healthy.worst(Health::Progressing), Health::Progressing);
        assert_eq!(Health::Degraded.worst(Health::Missing), Health::Degraded);
        assert_eq!(Health::Unknown.worst(Health::Healthy), Health::Unknown);
    }

    #[test]
    fn proto_round_trip_keeps_everything() {
        let object = ObjectRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: "web".into(),
            name: "web".into(),
        };
        let report = Report {
            revision: "abc".into(),
            digest: "d1".into(),
            at_unix_ms: 42,
            apps: vec![AppStatus {
                name: "web".into(),
                health: Health::Progressing,
                message: "1 of 2".into(),
                objects: vec![ObjectStatus {
                    object: object.clone(),
                    health: Health::Progressing,
                    message: "rolling out".into(),
                    apply_error: Some("conflict".into()),
                    rule: "built-in: apps/Deployment".into(),
                }],
            }],
            drifts: vec![Drift {
                object,
                app: "web".into(),
                missing: false,
                fields: vec![FieldDrift {
                    path: "spec.template.spec.containers[name=web].image".into(),
                    desired: json!("nginx:1"),
                    live: json!("nginx:2"),
                    manager: "kubectl-edit".into(),
                }],
                healed: true,
                detected_unix_ms: 7,
            }],
            summarized_reports: 3,
            applied: true,
            measurements: vec![convoy_model::analysis::Measurement {
                check: "error-rate".into(),
                at_unix_ms: 7,
                value: Some(0.5),
                error: String::new(),
            }],
        };
        let wire = proto::Report::from(&report);
        assert_eq!(Report::from(&wire), report);
    }
}

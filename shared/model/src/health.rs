//! Health rules users write for their own kinds (`spec.health` of convoy.yaml and app.yaml):
//! CEL expressions over the live object (`self`) that the agent evaluates. The hub checks that
//! they compile; the agent compiles and runs them (feature `cel`).
//!
//! Decisions:
//! - `healthy` true: Healthy; else `degraded` true: Degraded; else Progressing.
//! - An expression that fails (a missing field, a wrong type) or does not give a bool makes the
//!   object Unknown with what failed; a failing `message` only loses the message.

use serde::{Deserialize, Serialize};

/// One `spec.health` entry: how to judge objects of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthRule {
    /// The API group (`cert-manager.io`); empty or absent: the core group.
    #[serde(default)]
    pub group: String,
    pub kind: String,
    /// True when the object is Healthy, e.g.
    /// `self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')`.
    pub healthy: String,
    /// True when it is Degraded (checked after `healthy`); absent: never. Otherwise Progressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// A string saying why, shown with the health; absent or failing: no message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl HealthRule {
    /// Whether it judges objects of `group` and `kind`.
    pub fn matches(&self, group: &str, kind: &str) -> bool {
        self.group == group && self.kind == kind
    }

    /// Its expressions, named: `healthy`, then `degraded` and `message` when present.
    pub fn expressions(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("healthy", Some(self.healthy.as_str())),
            ("degraded", self.degraded.as_deref()),
            ("message", self.message.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, e)| e.map(|e| (name, e)))
    }

    /// `group/kind`, or `kind` for the core group.
    pub fn target(&self) -> String {
        match self.group.as_str() {
            "" => self.kind.clone(),
            group => format!("{group}/{}", self.kind),
        }
    }
}

/// What a rule says of an object.
#[cfg(feature = "cel")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Progressing,
    Degraded,
    /// An expression failed; the message says which and why.
    Unknown,
}

/// A rule whose expressions compiled.
#[cfg(feature = "cel")]
#[derive(Debug)]
pub struct CompiledRule {
    pub rule: HealthRule,
    healthy: cel::Program,
    degraded: Option<cel::Program>,
    message: Option<cel::Program>,
}

#[cfg(feature = "cel")]
impl HealthRule {
    /// Compiles its expressions; the error names the expression and where it fails
    /// (`degraded: ERROR: <input>:1:12: Syntax error …`).
    pub fn compile(&self) -> Result<CompiledRule, String> {
        let compile = |name: &str, source: &str| {
            cel::Program::compile(source).map_err(|e| format!("{name}: {}", e.to_string().replace('\n', " ")))
        };
        if self.kind.is_empty() {
            return Err("kind: a rule names the kind it judges".into());
        }
        Ok(CompiledRule {
            healthy: compile("healthy", &self.healthy)?,
            degraded: self.degraded.as_deref().map(|e| compile("degraded", e)).transpose()?,
            message: self.message.as_deref().map(|e| compile("message", e)).transpose()?,
            rule: self.clone(),
        })
    }
}

#[cfg(feature = "cel")]
impl CompiledRule {
    /// Judges `object`: the verdict and a message.
    pub fn judge(&self, object: &serde_json::Value) -> (Verdict, String) {
        let value = match cel::to_value(object) {
            Ok(value) => value,
            Err(e) => return (Verdict::Unknown, format!("the object cannot be read by CEL: {e}")),
        };
        let mut context = cel::Context::default();
        context.add_variable_from_value("self", value);
        let test = |name: &str, program: &cel::Program| match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("{name} gave {other:?}, not a bool")),
            Err(e) => Err(format!("{name} failed: {e}")),
        };
        let verdict = match test("healthy", &self.healthy) {
            Ok(true) => Ok(Verdict::Healthy),
            Ok(false) => match &self.degraded {
                Some(degraded) => {
                    test("degraded", degraded).map(|d| if d { Verdict::Degraded } else { Verdict::Progressing })
                }
                None => Ok(Verdict::Progressing),
            },
            Err(e) => Err(e),
        };
        match verdict {
            Err(e) => (Verdict::Unknown, format!("health rule for {}: {e}", self.rule.target())),
            Ok(verdict) => {
                let message = self.message.as_ref().and_then(|m| match m.execute(&context) {
                    Ok(cel::Value::String(s)) => Some(s.to_string()),
                    _ => None,
                });
                (verdict, message.unwrap_or_default())
            }
        }
    }
}

#[cfg(all(test, feature = "cel"))]
mod tests {
    use super::*;
    use serde_json::json;

    fn certificate_rule() -> HealthRule {
        HealthRule {
            group: "cert-manager.io".into(),
            kind: "Certificate".into(),
            healthy: "self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')".into(),
            degraded: Some("self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'False')".into()),
            message: Some("self.status.conditions.filter(c, c.type == 'Ready')[0].message".into()),
        }
    }

    fn certificate(ready: &str) -> serde_json::Value {
        json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "web"},
            "status": {"conditions": [{"type": "Ready", "status": ready, "message": format!("ready is {ready}")}]}})
    }

    #[test]
    fn a_certificate_rule_judges_ready_not_ready_and_pending() {
        let rule = certificate_rule().compile().unwrap();
        assert!(rule.rule.matches("cert-manager.io", "Certificate") && !rule.rule.matches("", "Certificate"));
        assert_eq!(rule.judge(&certificate("True")), (Verdict::Healthy, "ready is True".into()));
        assert_eq!(rule.judge(&certificate("False")), (Verdict::Degraded, "ready is False".into()));
        assert_eq!(rule.judge(&certificate("Unknown")).0, Verdict::Progressing);
    }

    #[test]
    fn a_failing_expression_makes_the_object_unknown_and_says_why() {
        let rule = certificate_rule().compile().unwrap();
        let fresh = json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "web"}});
        let (verdict, message) = rule.judge(&fresh);
        assert_eq!(verdict, Verdict::Unknown);
        assert!(message.starts_with("health rule for cert-manager.io/Certificate: healthy failed"), "{message}");
        let number = HealthRule { healthy: "1 + 1".into(), degraded: None, message: None, ..certificate_rule() };
        let (verdict, message) = number.compile().unwrap().judge(&certificate("True"));
        assert_eq!(verdict, Verdict::Unknown);
        assert!(message.contains("not a bool"), "{message}");
    }

    #[test]
    fn a_rule_that_does_not_compile_names_the_expression_and_the_position() {
        let broken =
            HealthRule { degraded: Some("self.status.conditions.exists(c, c.type ==".into()), ..certificate_rule() };
        let error = broken.compile().unwrap_err();
        assert!(error.starts_with("degraded: ERROR: <input>:1:"), "{error}");
    }
}

//! API errors as Kubernetes returns them: `Status` objects with reason, code and details.

use super::resources::ResourceType;
use serde_json::{Value, json};

/// A failed API request, rendered as a `kind: Status` body with the matching HTTP code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`…).
    pub reason: String,
    /// Human-readable message, worded like the real API server's.
    pub message: String,
    /// `details` (name, group, kind, causes…), if any.
    pub details: Option<Box<Value>>,
    /// Seconds for a `Retry-After` header (429 responses).
    pub retry_after: Option<u64>,
}

/// One field's validation failure, as kube-apiserver's `field.Error` words it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field's path, e.g. `spec.selector`.
    pub field: String,
    /// `FieldValueRequired`, `FieldValueInvalid` or `FieldValueTooLong`.
    pub reason: &'static str,
    /// `Required value`, or `Invalid value: VALUE: why`.
    pub message: String,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: &str) -> FieldError {
        FieldError { field: field.into(), reason: "FieldValueRequired", message: "Required value".into() }
    }

    /// A field holds more than `max` bytes.
    pub fn too_long(field: &str, max: usize) -> FieldError {
        FieldError {
            field: field.into(),
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }

    /// A field has a bad value; `value` is printed as JSON, as kube-apiserver prints it.
    pub fn invalid(field: &str, value: &Value, why: &str) -> FieldError {
        FieldError {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value}: {why}"),
        }
    }
}

/// Result with [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// A bare error with code, reason and message.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason: reason.into(), message: message.into(), details: None, retry_after: None }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> ApiError {
        let mut d = json!({"name": name, "kind": rt.plural});
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        self.details = Some(Box::new(d));
        self
    }

    /// `deployments.apps "web" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", rt.qualified())).with_details(rt, name)
    }

    /// `namespaces "x" not found` when creating into a missing namespace.
    pub fn namespace_not_found(ns: &str) -> ApiError {
        let mut e = ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        e.details = Some(Box::new(json!({"name": ns, "kind": "namespaces"})));
        e
    }

    /// `deployments.apps "web" already exists`.
    pub fn already_exists(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", rt.qualified()))
            .with_details(rt, name)
    }

    /// The optimistic-concurrency conflict of a stale resourceVersion.
    pub fn stale(rt: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                rt.qualified()
            ),
        )
        .with_details(rt, name)
    }

    /// 422 Invalid: `Deployment.apps "web" is invalid: <what>`.
    pub fn invalid(rt: &ResourceType, name: &str, what: &str) -> ApiError {
        let kind = if rt.group.is_empty() { rt.kind.clone() } else { format!("{}.{}", rt.kind, rt.group) };
        let mut e = ApiError::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {what}"));
        let mut details = json!({"name": name, "kind": rt.kind});
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        e.details = Some(Box::new(details));
        e
    }

    /// 422 Invalid naming each failed field, as kube-apiserver's validation reports them: one
    /// field in the message as is, several as `[a, b]`, and each as a cause.
    pub fn invalid_fields(rt: &ResourceType, name: &str, errors: &[FieldError]) -> ApiError {
        let each: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        let what = if each.len() == 1 { each[0].clone() } else { format!("[{}]", each.join(", ")) };
        let mut e = ApiError::invalid(rt, name, &what);
        let causes: Vec<Value> =
            errors.iter().map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field})).collect();
        if let Some(details) = e.details.as_deref_mut() {
            details["causes"] = json!(causes);
        }
        e
    }

    /// 504 for a list from a resourceVersion the server has not reached, as kube-apiserver
    /// answers once it has waited for it in vain.
    pub fn resource_version_too_large(asked: u64, current: u64) -> ApiError {
        let mut e =
            ApiError::new(504, "Timeout", format!("Timeout: Too large resource version: {asked}, current: {current}"));
        e.details = Some(Box::new(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        })));
        e.retry_after = Some(1);
        e
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// 410 Gone for a watch or list from a compacted resourceVersion.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 404 for paths that serve nothing.
    pub fn path_not_found() -> ApiError {
        let mut e = ApiError::new(404, "NotFound", "the server could not find the requested resource");
        e.details = Some(Box::new(json!({})));
        e
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason});
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s["code"] = json!(self.code);
        s
    }
}

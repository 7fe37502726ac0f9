//! What a failed call to the cluster's API server says, in words: the server's own message and
//! code, and what to do about it, never kube's debug structures.
//!
//! Decisions: which advice goes with which refusal.

/// The API server's own message for a failed call.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => match advice(s.code, &s.message) {
            Some(advice) => format!("{} ({}); {advice}", s.message, s.code),
            None => format!("{} ({})", s.message, s.code),
        },
        kube::Error::Api(s) => format!("the API server answered {} {}", s.code, s.reason),
        other => other.to_string(),
    }
}

/// What to do about an API server's refusal, by its code (and message).
fn advice(code: u16, message: &str) -> Option<&'static str> {
    match code {
        404 if message.starts_with("namespaces ") => {
            Some("give the app spec.namespace (the hub then creates it), or add the Namespace to its sources")
        }
        400 | 422 => Some("fix the object in Git; the rest of the app is applied"),
        401 | 403 => Some("give the agent's ServiceAccount the RBAC for it (charts/convoy-agent values: rbac)"),
        409 => Some("another field manager holds these fields; see `kubectl get -o yaml --show-managed-fields`"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16, message: &str) -> kube::Error {
        let mut status = kube::core::Status::failure(message, "Reason");
        status.code = code;
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_refusal_reads_as_the_servers_message_and_code_with_what_to_do() {
        let missing = api_message(&refused(404, "namespaces \"nowhere\" not found"));
        assert_eq!(
            missing,
            "namespaces \"nowhere\" not found (404); give the app spec.namespace (the hub then creates it), or add the Namespace to its sources"
        );
        assert!(
            api_message(&refused(422, "spec.replicas: Invalid value"))
                .ends_with("fix the object in Git; the rest of the app is applied")
        );
        assert!(api_message(&refused(403, "forbidden")).contains("RBAC"));
        assert_eq!(
            api_message(&refused(404, "widgets.example.com \"w\" not found")),
            "widgets.example.com \"w\" not found (404)"
        );
        assert!(!api_message(&refused(500, "")).contains("Status {"));
    }
}

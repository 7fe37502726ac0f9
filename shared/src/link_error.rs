//! Turning a failed call to the hub into a sentence that says what happened and what to do.
//! TLS refusals arrive deep inside transport errors (in TLS 1.3 a rejected client certificate is
//! only seen as an alert on the first read), so the whole source chain is searched.

use std::error::Error;

use rustls::{AlertDescription, CertificateError};

/// Explains an error from dialing or calling the hub: the cause in words and a remedy.
pub fn explain(err: &(dyn Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut hint = None;
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        // A Status prints its code as prose; its message is what the hub said.
        let text = match e.downcast_ref::<tonic::Status>() {
            Some(status) => status.message().to_string(),
            None => e.to_string(),
        };
        if !text.is_empty() && !chain.iter().any(|c: &String| c.contains(&text)) {
            chain.push(text);
        }
        if hint.is_none() {
            hint = hint_for(e);
        }
        // io::Error hides the error it wraps from `source()`: look inside it too.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if hint.is_none() {
                hint = hint_for(inner);
            }
            let text = inner.to_string();
            if !chain.iter().any(|c| c.contains(&text)) {
                chain.push(text);
            }
        }
        cur = e.source();
    }
    if hint.is_none() {
        hint = chain
            .iter()
            .find_map(|text| alert_in_text(text))
            .and_then(|alert| hint_for(&rustls::Error::AlertReceived(alert)));
    }
    let detail = chain.join(": ");
    match hint {
        Some(hint) if hint.contains(&detail) => hint,
        Some(hint) => format!("{hint} ({detail})"),
        None => detail,
    }
}

/// h2 keeps only the text of an I/O error, so a TLS alert that arrives mid-stream (how TLS 1.3
/// reports a rejected client certificate) survives only as "received fatal alert: Name".
fn alert_in_text(text: &str) -> Option<AlertDescription> {
    let name = text.split("received fatal alert: ").nth(1)?;
    let name = name.split(|c: char| !c.is_ascii_alphanumeric()).next()?;
    [
        AlertDescription::CertificateExpired,
        AlertDescription::UnknownCA,
        AlertDescription::DecryptError,
        AlertDescription::CertificateRequired,
        AlertDescription::BadCertificate,
        AlertDescription::CertificateUnknown,
        AlertDescription::AccessDenied,
    ]
    .into_iter()
    .find(|alert| format!("{alert:?}") == name)
}

fn hint_for(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        return match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                Some(format!("the hub refused this certificate: {}", status.message()))
            }
            _ => None,
        };
    }
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(match tls {
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired) => {
                "the hub rejected our client certificate because it has expired; issue a new one (`convoy-hub certs issue`) or let the agent renew before expiry".into()
            }
            // DecryptError: the hub found a CA of the same name whose signature does not match.
            rustls::Error::AlertReceived(AlertDescription::UnknownCA | AlertDescription::DecryptError) => {
                "the hub does not trust our client certificate: it was issued by another CA; use a certificate issued by this hub's CA".into()
            }
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                "the hub requires a client certificate; pass --cert and --key".into()
            }
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate | AlertDescription::CertificateUnknown | AlertDescription::AccessDenied,
            ) => "the hub rejected our client certificate; check it was issued by this hub's CA for this name".into(),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                "the hub's certificate is not signed by the CA we trust; check --ca points at this hub's CA".into()
            }
            rustls::Error::InvalidCertificate(CertificateError::Expired) => {
                "the hub's certificate has expired; renew it with `convoy-hub certs issue` on the hub".into()
            }
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => {
                "the hub's certificate does not name the address we dialed; use a name from its SANs or pass --server-name".into()
            }
            other => format!("the TLS handshake with the hub failed: {other}"),
        });
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                Some("the hub refused the connection: is convoy-hub running and listening on that address?".into())
            }
            std::io::ErrorKind::TimedOut => {
                Some("the hub did not answer in time: check the address and the network".into())
            }
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_alerts_wrapped_in_io_errors_are_explained() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
        );
        let text = explain(&io);
        assert!(text.contains("expired"), "{text}");
        assert!(text.contains("convoy-hub certs issue"), "{text}");
    }

    #[test]
    fn alerts_that_survive_only_as_text_are_explained() {
        let err = std::io::Error::other("connection error: received fatal alert: UnknownCA");
        let text = explain(&err);
        assert!(text.contains("another CA"), "{text}");
    }

    #[test]
    fn refused_connections_name_the_remedy() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(explain(&io).contains("is convoy-hub running"));
    }
}

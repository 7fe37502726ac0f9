//! What an agent needs to enrol without ever receiving a private key: a locally generated key
//! with its certificate signing request, and reading a certificate's validity period (to know
//! when to renew it).

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::IssuedCert;

/// Enrolment errors.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("could not generate a key and certificate signing request: {0}")]
    Csr(#[source] rcgen::Error),
    #[error("{what} holds no readable certificate: {reason}")]
    Certificate { what: String, reason: String },
}

pub type Result<T, E = EnrollmentError> = std::result::Result<T, E>;

/// A fresh key pair and a PKCS#10 request for its public key. The hub ignores the subject
/// (`requested_name` is a hint for humans reading the CSR): the token or the current
/// certificate decides the cluster. `cert_pem` of the result is the CSR until the hub answers.
pub fn generate_csr(requested_name: &str) -> Result<IssuedCert> {
    let key = KeyPair::generate().map_err(EnrollmentError::Csr)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, requested_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).and_then(|r| r.pem()).map_err(EnrollmentError::Csr)?;
    Ok(IssuedCert { cert_pem: csr, key_pem: key.serialize_pem() })
}

/// A certificate's validity period, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// When to renew: two thirds of the way from `from` (when the certificate was received or
    /// loaded) to its expiry, so a renewal failure leaves a third of the lifetime to retry in.
    pub fn renew_at(&self, from: i64) -> i64 {
        let start = from.max(self.not_before);
        start + (self.not_after - start).max(0) * 2 / 3
    }
}

/// The validity of the first certificate in `cert_pem`; `what` names it in errors.
pub fn validity(cert_pem: &str, what: &str) -> Result<Validity> {
    let invalid = |reason: String| EnrollmentError::Certificate { what: what.to_string(), reason };
    let der = crate::tls::parse_certs(cert_pem, what).map_err(|e| invalid(e.to_string()))?.remove(0);
    validity_der(&der).map_err(invalid)
}

/// The validity of a DER certificate.
pub fn validity_der(der: &[u8]) -> Result<Validity, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    Ok(Validity {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::pki::{CertificateAuthority, LeafRequest};

    #[test]
    fn a_generated_csr_is_signed_for_the_requested_identity_with_its_own_key() {
        let (ca, _) = CertificateAuthority::generate("test-ca", 1).unwrap();
        let csr = generate_csr("someone-else").unwrap();
        let request = LeafRequest::new(Identity::Cluster("eu-1".into()), 2);
        let cert = ca.sign_csr(&csr.cert_pem, &request).unwrap();
        let der = crate::tls::parse_certs(&cert, "test").unwrap().remove(0);
        assert_eq!(Identity::from_certificate_der(&der).unwrap(), Identity::Cluster("eu-1".into()));
        // The key we kept matches the certificate: rustls accepts the pair.
        crate::tls::client_config(ca.cert_pem(), Some((&cert, &csr.key_pem))).unwrap();
        let validity = validity(&cert, "test").unwrap();
        assert_eq!(validity.not_after, request.not_after.unix_timestamp());
        assert_eq!(validity.not_before, request.not_before.unix_timestamp());
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_remaining_lifetime() {
        let v = Validity { not_before: 0, not_after: 300 };
        assert_eq!(v.renew_at(0), 200);
        assert_eq!(v.renew_at(150), 250);
        assert_eq!(v.renew_at(400), 400);
    }
}

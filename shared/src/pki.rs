//! Convoy's certificate authority: creating it, issuing hub, agent and CLI certificates (rcgen
//! with ring), signing agent CSRs, and the on-disk layout of a certificate directory.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::identity::Identity;

/// How long certificates live unless told otherwise.
pub const DEFAULT_CA_DAYS: i64 = 3650;
/// How far back certificates start (their not-before): a peer whose clock runs this much behind
/// the issuer's still accepts a certificate made just now.
pub const CLOCK_SKEW: Duration = Duration::minutes(15);
/// Default lifetime of hub, agent and CLI certificates.
pub const DEFAULT_LEAF_DAYS: i64 = 365;

/// Errors from the certificate authority and certificate files.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("could not read {path}: {source}; run `convoy-hub ca init --dir DIR` to create a CA")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite a CA (remove the directory to start over)")]
    Exists { path: PathBuf },
    #[error("{what} is not a valid certificate or key: {source}")]
    Invalid {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("could not sign the certificate for {identity}: {source}")]
    Sign {
        identity: String,
        #[source]
        source: rcgen::Error,
    },
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    // Key material never reaches a log line, whatever gets debug-printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub identity: Identity,
    /// DNS names and IP addresses (server certificates only).
    pub hosts: Vec<String>,
    /// A user's groups (`spiffe://convoy/group/NAME` URI SANs), which the access policy binds
    /// roles to.
    pub groups: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafRequest {
    /// A certificate for `identity` valid from [`CLOCK_SKEW`] ago for `days` days.
    pub fn new(identity: Identity, days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafRequest {
            identity,
            hosts: Vec::new(),
            groups: Vec::new(),
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::days(days),
        }
    }

    /// Adds server names (DNS names or IP addresses) to the certificate.
    pub fn with_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.hosts.extend(hosts);
        self
    }

    fn params(&self) -> Result<CertificateParams> {
        let mut params = CertificateParams::default();
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        let mut dn = DistinguishedName::new();
        let cn = match &self.identity {
            Identity::Cluster(name) => name.clone(),
            Identity::User { name, .. } => name.clone(),
            Identity::Hub => "convoy-hub".to_string(),
        };
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, "convoy");
        params.distinguished_name = dn;
        let uri = self.identity.spiffe_uri();
        let invalid = |source| PkiError::Invalid { what: uri.clone(), source };
        params.subject_alt_names.push(SanType::URI(uri.clone().try_into().map_err(invalid)?));
        for group in &self.groups {
            let uri = crate::identity::group_uri(group);
            params.subject_alt_names.push(SanType::URI(uri.clone().try_into().map_err(invalid)?));
        }
        for host in &self.hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.clone().try_into().map_err(invalid)?),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match self.identity {
            Identity::Hub => vec![ExtendedKeyUsagePurpose::ServerAuth],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

/// A Convoy certificate authority that can sign certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Creates a new self-signed CA named `common_name`.
    pub fn generate(common_name: &str, days: i64) -> Result<(Self, IssuedCert)> {
        let key = KeyPair::generate().map_err(|source| PkiError::Sign { identity: common_name.to_string(), source })?;
        let mut params = CertificateParams::default();
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + Duration::days(days);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "convoy");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert =
            params.self_signed(&key).map_err(|source| PkiError::Sign { identity: common_name.to_string(), source })?;
        let issued = IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        let ca = CertificateAuthority { cert_pem: issued.cert_pem.clone(), issuer: Issuer::new(params, key) };
        Ok((ca, issued))
    }

    /// Loads a CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key =
            KeyPair::from_pem(key_pem).map_err(|source| PkiError::Invalid { what: "the CA key".into(), source })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|source| PkiError::Invalid { what: "the CA certificate".into(), source })?;
        Ok(CertificateAuthority { cert_pem: cert_pem.to_string(), issuer })
    }

    /// Loads the CA of a certificate directory.
    pub fn load(dir: &CertDir) -> Result<Self> {
        Self::from_pem(&read(&dir.ca_cert())?, &read(&dir.ca_key())?)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf certificate with a freshly generated key.
    pub fn issue(&self, request: &LeafRequest) -> Result<IssuedCert> {
        let sign_err = |source| PkiError::Sign { identity: request.identity.to_string(), source };
        let key = KeyPair::generate().map_err(sign_err)?;
        let cert = request.params()?.signed_by(&key, &self.issuer).map_err(sign_err)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a CSR's public key for `request.identity`; whatever subject the CSR asks for is
    /// ignored, so a CSR cannot claim another cluster's name.
    pub fn sign_csr(&self, csr_pem: &str, request: &LeafRequest) -> Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|source| PkiError::Invalid { what: "the certificate signing request".into(), source })?;
        let cert = request
            .params()?
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| PkiError::Sign { identity: request.identity.to_string(), source })?;
        Ok(cert.pem())
    }
}

/// The layout of a certificate directory made by `convoy-hub ca init --dir DIR`:
/// `ca.crt ca.key hub.crt hub.key users/<name>.{crt,key} clusters/<name>.{crt,key}`.
#[derive(Debug, Clone)]
pub struct CertDir(pub PathBuf);

impl CertDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CertDir(dir.into())
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    pub fn hub_cert(&self) -> PathBuf {
        self.0.join("hub.crt")
    }
    pub fn hub_key(&self) -> PathBuf {
        self.0.join("hub.key")
    }
    /// Certificate and key paths for an identity's leaf certificate.
    pub fn leaf_paths(&self, identity: &Identity) -> (PathBuf, PathBuf) {
        let (sub, name) = match identity {
            Identity::Cluster(name) => ("clusters", name.as_str()),
            Identity::User { name, .. } => ("users", name.as_str()),
            Identity::Hub => return (self.hub_cert(), self.hub_key()),
        };
        let dir = self.0.join(sub);
        (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")))
    }

    /// Writes a leaf certificate where [`CertDir::leaf_paths`] says; the key is made 0600.
    pub fn write_leaf(&self, identity: &Identity, issued: &IssuedCert) -> Result<(PathBuf, PathBuf)> {
        let (cert, key) = self.leaf_paths(identity);
        write_cert_and_key(&cert, &key, issued)?;
        Ok((cert, key))
    }
}

/// Writes a certificate (0644) and its key (0600, never readable by others), creating parents.
pub fn write_cert_and_key(cert_path: &Path, key_path: &Path, issued: &IssuedCert) -> Result<()> {
    write_file(cert_path, issued.cert_pem.as_bytes(), 0o644)?;
    write_file(key_path, issued.key_pem.as_bytes(), 0o600)
}

/// Creates a CA, a hub server certificate for `hub_hosts` and an admin CLI certificate in `dir`.
/// Refuses to overwrite an existing CA.
pub fn init_ca(dir: &CertDir, hub_hosts: &[String], days: i64) -> Result<CertificateAuthority> {
    if dir.ca_key().exists() {
        return Err(PkiError::Exists { path: dir.ca_key() });
    }
    // A distinct name per CA, so a certificate from another Convoy CA is "unknown issuer"
    // rather than a signature mismatch against a namesake.
    let name = format!("convoy-ca-{:08x}", rand::random::<u32>());
    let (ca, ca_issued) = CertificateAuthority::generate(&name, DEFAULT_CA_DAYS)?;
    write_cert_and_key(&dir.ca_cert(), &dir.ca_key(), &ca_issued)?;
    let hub = ca.issue(&LeafRequest::new(Identity::Hub, days).with_hosts(hub_hosts.iter().cloned()))?;
    write_cert_and_key(&dir.hub_cert(), &dir.hub_key(), &hub)?;
    let admin = Identity::User { name: "admin".into(), role: crate::identity::Role::Admin };
    let issued = ca.issue(&LeafRequest::new(admin.clone(), days))?;
    dir.write_leaf(&admin, &issued)?;
    Ok(ca)
}

/// Reads a text file, naming it in the error.
pub fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Read { path: path.to_path_buf(), source })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    // Remove first so an existing file's looser mode is not kept.
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(err)?;
    file.write_all(contents).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    #[test]
    fn issued_certificates_carry_their_identity() {
        let (ca, _) = CertificateAuthority::generate("test-ca", 1).unwrap();
        for id in
            [Identity::Cluster("eu-1".into()), Identity::User { name: "ana".into(), role: Role::Viewer }, Identity::Hub]
        {
            let issued = ca.issue(&LeafRequest::new(id.clone(), 1).with_hosts(["localhost".into()])).unwrap();
            let der = crate::tls::parse_certs(&issued.cert_pem, "test").unwrap().remove(0);
            assert_eq!(Identity::from_certificate_der(&der).unwrap(), id);
        }
    }

    #[test]
    fn a_csr_cannot_choose_its_cluster_name() {
        let (ca, _) = CertificateAuthority::generate("test-ca", 1).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(Identity::Cluster("victim".into()).spiffe_uri().try_into().unwrap()));
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = ca.sign_csr(&csr, &LeafRequest::new(Identity::Cluster("mine".into()), 1)).unwrap();
        let der = crate::tls::parse_certs(&cert, "test").unwrap().remove(0);
        assert_eq!(Identity::from_certificate_der(&der).unwrap(), Identity::Cluster("mine".into()));
    }

    #[test]
    fn init_writes_private_keys_0600_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path());
        init_ca(&dir, &["localhost".into()], 30).unwrap();
        let admin = Identity::User { name: "admin".into(), role: Role::Admin };
        for key in [dir.ca_key(), dir.hub_key(), dir.leaf_paths(&admin).1] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        assert!(matches!(init_ca(&dir, &[], 30), Err(PkiError::Exists { .. })));
        let reloaded = CertificateAuthority::load(&dir).unwrap();
        assert_eq!(reloaded.cert_pem(), fs::read_to_string(dir.ca_cert()).unwrap());
    }
}

//! The certificates a real control plane needs: one CA, kube-apiserver's serving certificate for
//! 127.0.0.1, an admin client certificate in `system:masters`, and the service-account key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// PEM texts written to the control plane's directory.
pub struct ControlPlanePki {
    /// The CA both sides trust.
    pub ca_cert: String,
    /// The CA's key (controller-manager's cluster signer).
    pub ca_key: String,
    /// kube-apiserver's serving certificate (127.0.0.1, localhost, kubernetes.default.svc).
    pub serving_cert: String,
    /// Its key.
    pub serving_key: String,
    /// The admin client certificate: CN `convoy-admin`, O `system:masters`.
    pub admin_cert: String,
    /// Its key.
    pub admin_key: String,
    /// The service-account signing key (PKCS#8).
    pub sa_key: String,
    /// Its public half.
    pub sa_public: String,
}

/// Makes a fresh CA and everything signed by it for a control plane named `cluster`.
pub fn control_plane_pki(cluster: &str) -> Result<ControlPlanePki, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("realkube-ca-{cluster}"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name.push(DnType::CommonName, "convoy-admin");
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    let sa_key = KeyPair::generate()?;
    Ok(ControlPlanePki {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key_pem,
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        sa_public: sa_key.public_key_pem(),
        sa_key: sa_key.serialize_pem(),
    })
}

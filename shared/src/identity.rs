//! Who a certificate speaks for: a cluster's agent, a CLI user with a role, or the hub itself.
//! The identity is read from the certificate's URI SAN (`spiffe://convoy/...`) and never from a
//! message field.

use std::fmt;

use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

const SPIFFE_PREFIX: &str = "spiffe://convoy/";

/// A CLI user's permissions on the fleet API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// May read and change the fleet (refresh, tokens, revocation).
    Admin,
    /// May only read.
    Viewer,
    /// May do what the access policy (`spec.access` of convoy.yaml) binds to the user or their
    /// groups, nothing else.
    Member,
}

impl Role {
    /// The role's name as it appears in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Member => "member",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            other => Err(IdentityError::UnknownRole(other.to_string())),
        }
    }
}

/// The principal a certificate identifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The agent of one cluster: `spiffe://convoy/cluster/<name>`.
    Cluster(String),
    /// A CLI user: `spiffe://convoy/user/<role>/<name>`.
    User { name: String, role: Role },
    /// The hub's own server certificate: `spiffe://convoy/hub`.
    Hub,
}

impl Identity {
    /// The URI SAN that encodes this identity in a certificate.
    pub fn spiffe_uri(&self) -> String {
        match self {
            Identity::Cluster(name) => format!("{SPIFFE_PREFIX}cluster/{name}"),
            Identity::User { name, role } => {
                format!("{SPIFFE_PREFIX}user/{}/{name}", role.as_str())
            }
            Identity::Hub => format!("{SPIFFE_PREFIX}hub"),
        }
    }

    /// Parses a `spiffe://convoy/...` URI; `None` for anything else.
    pub fn from_spiffe_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(SPIFFE_PREFIX)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["hub"] => Some(Identity::Hub),
            ["cluster", name] if valid_name(name) => Some(Identity::Cluster(name.to_string())),
            ["user", role, name] if valid_user_name(name) => {
                Some(Identity::User { name: name.to_string(), role: role.parse().ok()? })
            }
            _ => None,
        }
    }

    /// Reads the identity from a DER certificate: the first `spiffe://convoy/` URI SAN, else a
    /// common name that is a valid cluster name (certificates issued by other tooling).
    pub fn from_certificate_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
        for ext in cert.extensions() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name
                        && let Some(id) = Identity::from_spiffe_uri(uri)
                    {
                        return Ok(id);
                    }
                }
            }
        }
        let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default();
        if valid_name(cn) {
            return Ok(Identity::Cluster(cn.to_string()));
        }
        Err(IdentityError::NoIdentity)
    }
}

/// The URI SAN naming one of a user's groups.
pub fn group_uri(group: &str) -> String {
    format!("{SPIFFE_PREFIX}group/{group}")
}

/// The groups a user certificate names (`spiffe://convoy/group/NAME` URI SANs), which the
/// access policy binds roles to; none for certificates without them.
pub fn groups_from_certificate_der(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Vec::new() };
    let mut groups = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name
                    && let Some(group) = uri.strip_prefix(SPIFFE_PREFIX).and_then(|r| r.strip_prefix("group/"))
                    && valid_user_name(group)
                {
                    groups.push(group.to_string());
                }
            }
        }
    }
    groups
}

/// A user or group name: 1 to 254 of letters, digits and `.` `_` `@` `+` `-`, not starting with
/// `-` or `.` (a login or an email address from an identity provider).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 254
        && !name.starts_with(['-', '.'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'))
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Cluster(name) => write!(f, "cluster '{name}'"),
            Identity::User { name, role } => write!(f, "user '{name}' ({})", role.as_str()),
            Identity::Hub => write!(f, "the hub"),
        }
    }
}

pub use convoy_model::valid_name;

/// Why a certificate did not yield an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate could not be parsed: {0}")]
    Parse(String),
    #[error(
        "the certificate names no Convoy identity (no spiffe://convoy/ URI SAN and no usable common name); issue one with `convoy-hub certs issue`"
    )]
    NoIdentity,
    #[error("unknown role '{0}': use admin, viewer or member")]
    UnknownRole(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_uris_round_trip() {
        for id in [
            Identity::Cluster("prod-eu".into()),
            Identity::User { name: "ana".into(), role: Role::Viewer },
            Identity::User { name: "root".into(), role: Role::Admin },
            Identity::User { name: "auditor@example.com".into(), role: Role::Member },
            Identity::Hub,
        ] {
            assert_eq!(Identity::from_spiffe_uri(&id.spiffe_uri()), Some(id));
        }
    }

    #[test]
    fn foreign_or_malformed_uris_are_not_identities() {
        for uri in [
            "spiffe://other/cluster/a",
            "spiffe://convoy/cluster/",
            "spiffe://convoy/cluster/UPPER",
            "spiffe://convoy/cluster/a/b",
            "spiffe://convoy/user/root/x",
            "spiffe://convoy/user/member/-x",
            "spiffe://convoy/user/member/a b",
            "https://convoy/cluster/a",
        ] {
            assert_eq!(Identity::from_spiffe_uri(uri), None, "{uri}");
        }
    }

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(valid_name("prod-eu-1"));
        assert!(!valid_name("-a"));
        assert!(!valid_name("a_b"));
        assert!(!valid_name(&"a".repeat(64)));
    }
}

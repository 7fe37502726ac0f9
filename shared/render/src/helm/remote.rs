//! Where a chart comes from when it is not in the repository.

/// Where a chart comes from, and which version of it is wanted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Remote {
    /// A chart repository served over HTTP(S) (`helm repo add`): `<url>/index.yaml` lists
    /// each chart's versions and where their tarballs are.
    Repo {
        /// The repository URL (`https://charts.example.com`, or `http://` for a host named
        /// as plain HTTP).
        url: String,
        /// The chart's name in the index.
        name: String,
        /// An exact version or a constraint (`~1.2`, `^1`, `>=1.0 <2`); empty: the highest
        /// stable version.
        version: String,
    },
    /// A chart in an OCI registry, as `helm push` stores it.
    Oci {
        /// `oci://host[:port]/path/name`.
        reference: String,
        /// An exact version (a tag, `+` written as `_`) or a constraint over the tags.
        version: String,
    },
}

impl Remote {
    /// The chart's name.
    pub fn chart(&self) -> &str {
        match self {
            Remote::Repo { name, .. } => name,
            Remote::Oci { reference, .. } => reference.rsplit('/').next().unwrap_or(reference),
        }
    }

    /// The version or constraint asked for.
    pub fn version(&self) -> &str {
        match self {
            Remote::Repo { version, .. } | Remote::Oci { version, .. } => version,
        }
    }

    /// What this location resolved to, for people: `oci://…/demo@1.2.3 sha256:…`, or
    /// `demo@1.2.3 from https://… sha256:…` for a chart repository.
    pub fn resolved(&self, version: &str, digest: &str) -> String {
        match self {
            Remote::Repo { url, name, .. } => format!("{name}@{version} from {url} {digest}"),
            Remote::Oci { reference, .. } => format!("{reference}@{version} {digest}"),
        }
    }

    /// The repository URL or the OCI reference.
    pub fn repository(&self) -> &str {
        match self {
            Remote::Repo { url, .. } => url,
            Remote::Oci { reference, .. } => reference,
        }
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = if self.version().is_empty() { "(latest)" } else { self.version() };
        match self {
            Remote::Repo { url, name, .. } => write!(f, "chart '{name}' {version} from {url}"),
            Remote::Oci { reference, .. } => write!(f, "{reference} {version}"),
        }
    }
}

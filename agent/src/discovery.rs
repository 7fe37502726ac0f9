//! API discovery: which resource serves a group/version/kind and whether it is namespaced,
//! cached per group version and refreshed when a CRD changes what the cluster serves.

use std::collections::HashMap;
use std::sync::Arc;

use kube::Client;
use kube::core::GroupVersion;
use kube::discovery::{ApiResource, Scope, oneshot};
use tokio::sync::RwLock;

use convoy_shared::model::ObjectRef;

/// Errors resolving a kind.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{kind} ({api_version}) is not served by this cluster; is its CRD installed and established?")]
    NotServed { api_version: String, kind: String },
    #[error("discovering {api_version}: {}", crate::api_error::api_message(source))]
    Api {
        api_version: String,
        #[source]
        source: kube::Error,
    },
}

/// What the cluster's API server offers, told to the hub in Hello so Helm charts'
/// `.Capabilities` see the real target cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCapabilities {
    /// The server's version, e.g. `v1.31.2`.
    pub kube_version: String,
    /// The group/versions it serves (`v1`, `apps/v1`, …).
    pub api_versions: Vec<String>,
}

impl ServerCapabilities {
    /// Asks the API server; empty (the hub then uses Helm's defaults) when it does not answer.
    pub async fn of(client: &Client) -> ServerCapabilities {
        let asked = async {
            let version = client.apiserver_version().await?;
            let core = client.list_core_api_versions().await?;
            let groups = client.list_api_groups().await?;
            let mut api_versions = core.versions;
            api_versions
                .extend(groups.groups.into_iter().flat_map(|g| g.versions.into_iter().map(|v| v.group_version)));
            Ok::<_, kube::Error>(ServerCapabilities { kube_version: version.git_version, api_versions })
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), asked).await {
            Ok(Ok(capabilities)) => capabilities,
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not ask the API server what it serves; charts see Helm's defaults");
                ServerCapabilities::default()
            }
            Err(_) => {
                tracing::warn!("the API server did not say what it serves within 5 s; charts see Helm's defaults");
                ServerCapabilities::default()
            }
        }
    }
}

/// How to reach one kind.
#[derive(Debug, Clone)]
pub struct Resource {
    pub api: ApiResource,
    pub namespaced: bool,
}

/// Cached discovery, shared by the applier, pruner and watchers.
#[derive(Clone)]
pub struct Discovery {
    client: Client,
    /// apiVersion → kind → resource; a missing apiVersion means "not asked yet".
    cache: Arc<RwLock<HashMap<String, HashMap<String, Resource>>>>,
}

impl Discovery {
    /// An empty cache over `client`.
    pub fn new(client: Client) -> Self {
        Discovery { client, cache: Arc::default() }
    }

    /// The resource serving `r`'s apiVersion and kind.
    pub async fn resolve(&self, r: &ObjectRef) -> Result<Resource, DiscoveryError> {
        let api_version = r.api_version();
        if let Some(kinds) = self.cache.read().await.get(&api_version)
            && let Some(found) = kinds.get(&r.kind)
        {
            return Ok(found.clone());
        }
        let kinds = self.fetch(&api_version).await?;
        let found = kinds.get(&r.kind).cloned();
        self.cache.write().await.insert(api_version.clone(), kinds);
        found.ok_or_else(|| DiscoveryError::NotServed { api_version, kind: r.kind.clone() })
    }

    async fn fetch(&self, api_version: &str) -> Result<HashMap<String, Resource>, DiscoveryError> {
        let gv: GroupVersion = api_version
            .parse()
            .map_err(|_| DiscoveryError::NotServed { api_version: api_version.to_string(), kind: String::new() })?;
        match oneshot::pinned_group(&self.client, &gv).await {
            Ok(group) => Ok(group
                .versioned_resources(&gv.version)
                .into_iter()
                .filter(|(ar, _)| !ar.plural.contains('/'))
                .map(|(api, caps)| {
                    let namespaced = caps.scope == Scope::Namespaced;
                    (api.kind.clone(), Resource { api, namespaced })
                })
                .collect()),
            // A group the cluster does not serve (yet) answers 404: nothing served.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(HashMap::new()),
            Err(source) => Err(DiscoveryError::Api { api_version: api_version.to_string(), source }),
        }
    }

    /// Forgets what is cached for `group` (every version), e.g. after a CRD of that group is
    /// applied.
    pub async fn invalidate_group(&self, group: &str) {
        self.cache.write().await.retain(|api_version, _| {
            let g = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
            g != group
        });
    }
}

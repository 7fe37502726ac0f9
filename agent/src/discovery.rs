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
    #[error("discovering {api_version}: {source}")]
    Api {
        api_version: String,
        #[source]
        source: kube::Error,
    },
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

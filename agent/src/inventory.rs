//! The Inventory: what the agent applied last, per app — the only basis for prune. Persisted in
//! the cluster (a ConfigMap in the agent's namespace) and in the local cache directory; on load
//! the newer copy wins.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;

use convoy_shared::model::ObjectRef;

use crate::api_error::api_message;
use crate::applier::{RetryPolicy, with_retry};
use crate::cache::{Cache, CacheError};
use crate::fields::FIELD_MANAGER;

/// Errors persisting or loading the inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("storing the inventory in ConfigMap {namespace}/{name}: {message}")]
    Cluster { namespace: String, name: String, message: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("inventory {place} is not valid JSON: {source}")]
    Json {
        place: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One inventoried object: a serializable [`ObjectRef`] plus the content hash and revision it
/// was applied with (an unchanged object keeps its revision, so re-applying it writes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Entry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
}

/// The inventory key of an object: `group/kind/namespace/name` (the version is not identity).
pub fn entry_id(r: &ObjectRef) -> String {
    format!("{}/{}/{}/{}", r.group, r.kind, r.namespace, r.name)
}

impl From<&ObjectRef> for Entry {
    fn from(r: &ObjectRef) -> Self {
        Entry {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            ..Default::default()
        }
    }
}

impl From<&Entry> for ObjectRef {
    fn from(e: &Entry) -> Self {
        ObjectRef {
            group: e.group.clone(),
            version: e.version.clone(),
            kind: e.kind.clone(),
            namespace: e.namespace.clone(),
            name: e.name.clone(),
        }
    }
}

/// One app's part of the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInventory {
    /// The app's prune policy when last applied (used if the app leaves the assignment).
    pub prune: bool,
    /// By [`entry_id`].
    pub objects: BTreeMap<String, Entry>,
}

/// What was applied last, per app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Revision and digest of the assignment the inventory was last written for.
    pub revision: String,
    pub digest: String,
    pub updated_unix_ms: i64,
    pub apps: BTreeMap<String, AppInventory>,
}

impl Inventory {
    /// Every inventoried object with its app.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.apps.iter().flat_map(|(app, inv)| inv.objects.values().map(move |e| (app.as_str(), e)))
    }

    /// How many objects are inventoried.
    pub fn len(&self) -> usize {
        self.apps.values().map(|a| a.objects.len()).sum()
    }

    /// Is nothing inventoried?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds (or updates) objects of an app, keeping what is there.
    pub fn add(&mut self, app: &str, prune: bool, objects: impl IntoIterator<Item = Entry>) {
        let inv = self.apps.entry(app.to_string()).or_default();
        inv.prune = prune;
        for e in objects {
            inv.objects.insert(entry_id(&ObjectRef::from(&e)), e);
        }
    }

    /// The entry of object `id` in `app`.
    pub fn get(&self, app: &str, id: &str) -> Option<&Entry> {
        self.apps.get(app).and_then(|a| a.objects.get(id))
    }
}

/// Where the inventory lives.
#[derive(Clone)]
pub struct InventoryStore {
    client: Client,
    namespace: String,
    name: String,
    cache: Cache,
    retry: RetryPolicy,
}

const LOCAL_FILE: &str = "inventory.json";
const DATA_KEY: &str = "inventory.json";

impl InventoryStore {
    /// A store writing ConfigMap `convoy-inventory` in `namespace` and `inventory.json` in `cache`.
    pub fn new(client: Client, namespace: &str, cache: Cache) -> Self {
        InventoryStore {
            client,
            namespace: namespace.to_string(),
            name: "convoy-inventory".into(),
            cache,
            retry: RetryPolicy::default(),
        }
    }

    /// The newer of the cluster and local copies; empty when neither exists. A cluster that
    /// cannot be read falls back to the local copy.
    pub async fn load(&self) -> Inventory {
        let cluster = match self.load_cluster().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the inventory from the cluster; using the local copy");
                None
            }
        };
        let local = match self.load_local().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the local inventory");
                None
            }
        };
        match (cluster, local) {
            (Some(c), Some(l)) => {
                if l.updated_unix_ms > c.updated_unix_ms {
                    l
                } else {
                    c
                }
            }
            (Some(i), None) | (None, Some(i)) => i,
            (None, None) => Inventory::default(),
        }
    }

    async fn load_cluster(&self) -> Result<Option<Inventory>, InventoryError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let cm = api.get_opt(&self.name).await.map_err(|e| self.cluster_error(&e))?;
        let Some(text) = cm.and_then(|c| c.data).and_then(|d| d.get(DATA_KEY).cloned()) else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|source| InventoryError::Json {
            place: format!("ConfigMap {}/{}", self.namespace, self.name),
            source,
        })
    }

    async fn load_local(&self) -> Result<Option<Inventory>, InventoryError> {
        let Some(bytes) = self.cache.read(LOCAL_FILE).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| InventoryError::Json {
            place: self.cache.dir().join(LOCAL_FILE).display().to_string(),
            source,
        })
    }

    /// Writes the inventory locally, then to the cluster (creating the agent's namespace if it
    /// is missing). The local copy is written even when the cluster is unreachable.
    pub async fn store(&self, inventory: &Inventory) -> Result<(), InventoryError> {
        let text = serde_json::to_string(inventory)
            .map_err(|source| InventoryError::Json { place: "inventory".into(), source })?;
        self.cache.write(LOCAL_FILE, text.clone().into_bytes()).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "convoy-agent"}},
            "data": {DATA_KEY: text}
        });
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let what = ObjectRef {
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            ..Default::default()
        };
        let patch = Patch::Apply(&cm);
        creating_namespace(&self.client, &self.namespace, || async {
            with_retry(&self.retry, &what, || api.patch(&self.name, &params, &patch))
                .await
                .map(|_| ())
                .map_err(|(e, ..)| e)
        })
        .await
        .map_err(|e| self.cluster_error(&e))
    }

    fn cluster_error(&self, e: &kube::Error) -> InventoryError {
        InventoryError::Cluster { namespace: self.namespace.clone(), name: self.name.clone(), message: api_message(e) }
    }
}

/// Runs `write` (into the agent's own `namespace`); when it finds the namespace missing, creates
/// it and writes again.
pub(crate) async fn creating_namespace<F, Fut>(client: &Client, namespace: &str, write: F) -> Result<(), kube::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    match write().await {
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        done => return done,
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    ns_api.patch(namespace, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&ns)).await?;
    write().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_serializes_compactly_and_round_trips() {
        let mut inv = Inventory { revision: "r1".into(), ..Default::default() };
        inv.add(
            "web",
            true,
            [Entry {
                group: String::new(),
                version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: "web".into(),
                name: "x".into(),
                ..Default::default()
            }],
        );
        let text = serde_json::to_string(&inv).unwrap();
        assert!(!text.contains("\"group\""), "{text}");
        let back: Inventory = serde_json::from_str(&text).unwrap();
        assert_eq!(back, inv);
        assert_eq!(back.len(), 1);
    }
}

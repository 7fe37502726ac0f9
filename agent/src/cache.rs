//! The local cache directory: the last assignment (so a restarted agent enforces it without the
//! hub) and a copy of the inventory. Files are written atomically (temp file, then rename) off the
//! runtime threads.

use std::path::{Path, PathBuf};

use prost::Message as _;

use convoy_shared::model::Assignment;
use convoy_shared::proto;

/// Errors reading or writing the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot write {path}: {source}; check that --cache-dir is writable")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt ({reason}); delete it and the agent will wait for the hub")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cache I/O task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The agent's cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

const ASSIGNMENT_FILE: &str = "assignment.pb";

impl Cache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached assignment, if any.
    pub async fn load_assignment(&self) -> Result<Option<Assignment>, CacheError> {
        let path = self.dir.join(ASSIGNMENT_FILE);
        let Some(bytes) = self.read(ASSIGNMENT_FILE).await? else {
            return Ok(None);
        };
        let wire = proto::Assignment::decode(bytes.as_slice())
            .map_err(|e| CacheError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        Assignment::try_from(&wire).map(Some).map_err(|e| CacheError::Corrupt { path, reason: e.to_string() })
    }

    /// Persists `assignment` as the one to enforce after a restart.
    pub async fn store_assignment(&self, assignment: &Assignment) -> Result<(), CacheError> {
        let bytes = proto::Assignment::from(assignment).encode_to_vec();
        self.write(ASSIGNMENT_FILE, bytes).await
    }

    /// Reads `file` from the cache; None when it does not exist.
    pub async fn read(&self, file: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.dir.join(file);
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CacheError::Read { path, source }),
        })
        .await?
    }

    /// Writes `file` atomically.
    pub async fn write(&self, file: &str, bytes: Vec<u8>) -> Result<(), CacheError> {
        let dir = self.dir.clone();
        let file = file.to_string();
        let path = dir.join(&file);
        tokio::task::spawn_blocking(move || {
            let err = |source| CacheError::Write { path: path.clone(), source };
            std::fs::create_dir_all(&dir).map_err(err)?;
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, &bytes).map_err(err)?;
            std::fs::rename(&tmp, &path).map_err(err)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_shared::model::{AppAssignment, SyncPolicy};
    use serde_json::json;

    #[tokio::test]
    async fn assignment_round_trips_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("sub"));
        assert!(cache.load_assignment().await.unwrap().is_none());
        let a = Assignment::new(
            "c1",
            "prod",
            "r1",
            vec![AppAssignment {
                ignore_differences: Vec::new(),
                health_rules: Vec::new(),
                name: "web".into(),
                policy: SyncPolicy::default(),
                depends_on: vec![],
                objects: vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})].into(),
                render_error: None,
            }],
            false,
        );
        cache.store_assignment(&a).await.unwrap();
        assert_eq!(cache.load_assignment().await.unwrap(), Some(a));
        std::fs::write(dir.path().join("sub").join(ASSIGNMENT_FILE), b"\xff\xff").unwrap();
        assert!(matches!(cache.load_assignment().await, Err(CacheError::Corrupt { .. })));
    }
}

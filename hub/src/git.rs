//! The Git source: a bare mirror of the fleet repository fetched with gix, the commit each
//! branch points at, and in-memory snapshots of a commit's tree that the fleet model and the
//! render engine read from. gix is blocking: callers run it in `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix::bstr::ByteSlice;

use convoy_render::{self as render, EntryKind, RenderError, Source};

/// Errors of the Git source.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: {action} failed for {url}: {source}")]
    Gix {
        action: &'static str,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("git: commit {commit} is not in the mirror of {url}")]
    MissingCommit { commit: String, url: String },
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;

/// A bare mirror of one repository URL on local disk.
pub struct GitMirror {
    url: String,
    path: PathBuf,
    /// Blob contents by id, shared between snapshots so a new commit reads only new blobs.
    blobs: HashMap<ObjectId, Arc<[u8]>>,
}

impl GitMirror {
    /// A mirror of `url` kept at `path` (created on the first fetch).
    pub fn new(url: &str, path: &Path) -> Self {
        GitMirror { url: url.to_string(), path: path.to_path_buf(), blobs: HashMap::new() }
    }

    /// The repository URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self, action: &'static str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> GitError + '_ {
        move |source| GitError::Gix { action, url: self.url.clone(), source }
    }

    fn open(&self) -> Result<gix::Repository> {
        if self.path.join("HEAD").exists() {
            gix::open(&self.path).map_err(|e| self.err("opening the mirror")(e.into()))
        } else {
            std::fs::create_dir_all(&self.path).map_err(|e| self.err("creating the mirror directory")(e.into()))?;
            gix::init_bare(&self.path).map_err(|e| self.err("creating the mirror")(e.into()))
        }
    }

    /// Fetches every branch (force-pushes included) and returns branch name → commit, as the
    /// remote has them now. A branch deleted upstream is simply absent.
    pub fn fetch(&self) -> Result<BTreeMap<String, ObjectId>> {
        let repo = self.open()?;
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(|e| self.err("reading the URL")(e.into()))?
            .with_refspecs(["+refs/heads/*:refs/heads/*"], gix::remote::Direction::Fetch)
            .map_err(|e| self.err("setting up the fetch")(e.into()))?;
        let outcome = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| self.err("connecting")(e.into()))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| self.err("listing branches")(e.into()))?
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .map_err(|e| self.err("fetching")(e.into()))?;
        let mut branches = BTreeMap::new();
        for r in &outcome.ref_map.remote_refs {
            let (name, id) = match r {
                gix::protocol::handshake::Ref::Direct { full_ref_name, object } => (full_ref_name, *object),
                gix::protocol::handshake::Ref::Peeled { full_ref_name, object, .. } => (full_ref_name, *object),
                _ => continue,
            };
            if let Some(branch) = name.to_str().ok().and_then(|n| n.strip_prefix("refs/heads/")) {
                branches.insert(branch.to_string(), id);
            }
        }
        Ok(branches)
    }

    /// Reads the whole tree of `commit` into memory.
    pub fn snapshot(&mut self, commit: ObjectId) -> Result<Arc<Snapshot>> {
        let repo = self.open()?;
        let missing = || GitError::MissingCommit { commit: commit.to_string(), url: self.url.clone() };
        let tree = repo.find_commit(commit).map_err(|_| missing())?.tree().map_err(|_| missing())?;
        let mut recorder = gix::traverse::tree::Recorder::default();
        tree.traverse().breadthfirst(&mut recorder).map_err(|e| self.err("reading a tree")(e.into()))?;
        let mut entries = BTreeMap::new();
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        children.insert(String::new(), Vec::new());
        for record in recorder.records {
            let Ok(path) = record.filepath.to_str() else { continue };
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            children.entry(parent.to_string()).or_default().push(name.to_string());
            let entry = if record.mode.is_tree() {
                children.entry(path.to_string()).or_default();
                Entry::Dir(record.oid)
            } else if record.mode.is_blob() {
                let blob = match self.blobs.get(&record.oid) {
                    Some(blob) => blob.clone(),
                    None => {
                        let object = repo.find_object(record.oid).map_err(|e| self.err("reading a file")(e.into()))?;
                        let blob: Arc<[u8]> = object.data.clone().into();
                        self.blobs.insert(record.oid, blob.clone());
                        blob
                    }
                };
                Entry::File(record.oid, blob)
            } else {
                // Symlinks and submodules are never followed: they could point outside the tree.
                Entry::Other(record.oid)
            };
            entries.insert(path.to_string(), entry);
        }
        for names in children.values_mut() {
            names.sort();
        }
        Ok(Arc::new(Snapshot { commit, tree: tree.id, entries, children }))
    }

    /// Commits reachable from `tip` and not from `hidden` (what `git log tip --not hidden`
    /// lists), newest first, at most `limit`: id and subject line.
    pub fn commits_between(&self, tip: ObjectId, hidden: ObjectId, limit: usize) -> Result<Vec<(String, String)>> {
        let repo = self.open()?;
        let walk =
            repo.rev_walk([tip]).with_hidden([hidden]).all().map_err(|e| self.err("walking history")(e.into()))?;
        let mut out = Vec::new();
        for info in walk.take(limit) {
            let info = info.map_err(|e| self.err("walking history")(e.into()))?;
            let subject =
                info.object().ok().and_then(|c| c.message().ok().map(|m| m.summary().to_string())).unwrap_or_default();
            out.push((info.id.to_string(), subject));
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
enum Entry {
    File(ObjectId, Arc<[u8]>),
    Dir(ObjectId),
    Other(ObjectId),
}

/// The tree of one commit, in memory.
#[derive(Debug)]
pub struct Snapshot {
    pub commit: ObjectId,
    tree: ObjectId,
    entries: BTreeMap<String, Entry>,
    children: HashMap<String, Vec<String>>,
}

fn key(path: &Path) -> String {
    path.to_string_lossy().trim_matches('/').to_string()
}

impl Snapshot {
    /// The object id of what `path` names (tree or blob), for change detection.
    pub fn id_of(&self, path: &Path) -> Option<ObjectId> {
        let key = key(path);
        if key.is_empty() {
            return Some(self.tree);
        }
        self.entries.get(&key).map(|e| match e {
            Entry::File(id, _) | Entry::Dir(id) | Entry::Other(id) => *id,
        })
    }

    /// The contents of the file at `path`, if it is one.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(path.trim_matches('/')) {
            Some(Entry::File(_, data)) => Some(data),
            _ => None,
        }
    }

    /// Names in the directory `path` (sorted); `None` when it is not a directory.
    pub fn dir(&self, path: &str) -> Option<&[String]> {
        self.children.get(path.trim_matches('/')).map(Vec::as_slice)
    }
}

impl Source for Snapshot {
    fn kind(&self, path: &Path) -> render::Result<Option<EntryKind>> {
        let key = key(path);
        if key.is_empty() {
            return Ok(Some(EntryKind::Dir));
        }
        Ok(match self.entries.get(&key) {
            Some(Entry::File(..)) => Some(EntryKind::File),
            Some(Entry::Dir(_)) => Some(EntryKind::Dir),
            Some(Entry::Other(_)) => {
                return Err(RenderError::PathEscape { path: key.clone(), from: PathBuf::from(key) });
            }
            None => None,
        })
    }

    fn read(&self, path: &Path) -> render::Result<Vec<u8>> {
        let key = key(path);
        match self.entries.get(&key) {
            Some(Entry::File(_, data)) => Ok(data.to_vec()),
            Some(Entry::Other(_)) => Err(RenderError::PathEscape { path: key.clone(), from: PathBuf::from(key) }),
            _ => Err(RenderError::Io {
                path: PathBuf::from(key),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file in the commit"),
            }),
        }
    }

    fn list_dir(&self, path: &Path) -> render::Result<Vec<String>> {
        let key = key(path);
        self.children.get(&key).cloned().ok_or_else(|| RenderError::Io {
            path: PathBuf::from(key),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory in the commit"),
        })
    }
}

//! The Git source: a bare mirror of the fleet repository fetched with gix, the commit each
//! branch points at, and in-memory snapshots of a commit's tree that the fleet model and the
//! render engine read from. gix is blocking: callers run it in `spawn_blocking`.
//!
//! Over https:// gix speaks smart HTTP through reqwest, whose rustls takes the process-wide ring
//! provider and the [`GitAccess`] TLS configuration; credentials come from [`GitAccess`] alone
//! (never a prompt, a credential helper, or the URL shown in an error).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix::bstr::ByteSlice;
use rustls_pki_types::pem::PemObject;

use convoy_render::helm::fetch::cause_chain;
use convoy_render::{self as render, EntryKind, RenderError, Source};

/// Errors of the Git source. The message carries the whole cause chain (a status code, a TLS
/// verdict) and the URL without any password in it.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git: {action} failed for {url}: {detail}{}", hint(detail))]
    Gix {
        action: &'static str,
        url: String,
        /// The cause chain, with any password in it redacted.
        detail: String,
    },
    #[error("git: commit {commit} is not in the mirror of {url}")]
    MissingCommit { commit: String, url: String },
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;

/// How the hub reaches an https:// repository: basic-auth credentials (a token as the
/// password) and the TLS configuration its certificate must verify against.
#[derive(Clone, Default)]
pub struct GitAccess {
    /// Sent only when the server asks (401).
    pub username: String,
    pub password: Option<String>,
    /// Roots from `--git-ca`, else the system's; `None` uses reqwest's defaults.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for GitAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAccess")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Errors building a [`GitAccess`] from files.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate to trust")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
}

impl GitAccess {
    /// Access from the serve flags: the token from `password_file` (trailing newline dropped)
    /// or `password`, and TLS trusting `ca` or the system's roots.
    pub fn load(
        username: String,
        password_file: Option<&Path>,
        password: Option<String>,
        ca: Option<&Path>,
    ) -> Result<GitAccess, AccessError> {
        let password = match password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| AccessError::Read { path: path.into(), source })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            None => password,
        };
        Ok(GitAccess { username, password, tls: Some(Self::tls_config(ca)?) })
    }

    /// TLS that trusts the certificates in `ca` (PEM), or the system's roots when `None`.
    pub fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, AccessError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| AccessError::Read { path: path.into(), source })?;
                let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| AccessError::BadCertificate { path: path.into(), reason: e.to_string() })?;
                if certs.is_empty() {
                    return Err(AccessError::NoCertificate { path: path.into() });
                }
                // A server certificate that is itself one of these (openssl req -x509) is
                // accepted too, as git and curl accept it.
                let config = convoy_shared::tls::client_config_trusting(certs)
                    .map_err(|e| AccessError::BadCertificate { path: path.into(), reason: e.to_string() })?;
                return Ok(Arc::new(config));
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for error in &native.errors {
                    tracing::warn!(%error, "skipping a system root certificate");
                }
                roots.add_parsable_certificates(native.certs);
            }
        }
        Ok(Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
    }

    /// gix transport options: reqwest with this TLS configuration.
    fn transport_options(&self) -> Box<dyn std::any::Any> {
        use gix::protocol::transport::client::blocking_io::http;
        let tls = self.tls.clone();
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                Ok(match &tls {
                    Some(tls) => builder.tls_backend_preconfigured((**tls).clone()),
                    None => builder,
                })
            })),
            configure_request: None,
        };
        let backend: Arc<std::sync::Mutex<dyn std::any::Any + Send + Sync>> = Arc::new(std::sync::Mutex::new(backend));
        Box::new(http::Options {
            user_agent: Some(format!("convoy-hub/{}", convoy_shared::VERSION)),
            connect_timeout: Some(std::time::Duration::from_secs(20)),
            backend: Some(backend),
            ..Default::default()
        })
    }
}

/// `url` with any password replaced, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:<redacted>@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

/// What to do about a failed fetch, when the cause says.
fn hint(detail: &str) -> &'static str {
    if detail.contains("401") || detail.contains("403") {
        " (check the token in --git-password-file or CONVOY_GIT_PASSWORD, and --git-username)"
    } else if detail.contains("404") {
        " (check --repo: the server has no such repository, or hides it from this user)"
    } else if detail.contains("UnknownIssuer") || detail.contains("invalid peer certificate") {
        " (pass the CA the server's certificate chains to with --git-ca)"
    } else {
        ""
    }
}

/// A bare mirror of one repository URL on local disk.
pub struct GitMirror {
    url: String,
    access: GitAccess,
    path: PathBuf,
    /// Blob contents by id, shared between snapshots so a new commit reads only new blobs.
    /// Holds only blobs some live snapshot holds too (see [`GitMirror::snapshot`]), so it does
    /// not grow with every commit ever read.
    blobs: HashMap<ObjectId, Arc<[u8]>>,
}

impl GitMirror {
    /// A mirror of `url` kept at `path` (created on the first fetch).
    pub fn new(url: &str, path: &Path, access: GitAccess) -> Self {
        GitMirror { url: url.to_string(), access, path: path.to_path_buf(), blobs: HashMap::new() }
    }

    /// The repository URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn err(&self, action: &'static str) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> GitError + '_ {
        move |source| {
            let mut detail = cause_chain(source.as_ref()).replace(&self.url, &redacted(&self.url));
            if let Some(password) = self.access.password.as_deref().filter(|p| !p.is_empty()) {
                detail = detail.replace(password, "<redacted>");
            }
            GitError::Gix { action, url: redacted(&self.url), detail }
        }
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
        let account = self.access.password.as_ref().map(|password| gix::sec::identity::Account {
            username: self.access.username.clone(),
            password: password.clone(),
            oauth_refresh_token: None,
        });
        let outcome = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| self.err("connecting")(e.into()))?
            .with_transport_options(self.access.transport_options())
            // Only what --git-password-file gives, never git's credential helpers or a prompt.
            .with_credentials(move |action| match action {
                gix::credentials::helper::Action::Get(context) => Ok(account
                    .clone()
                    .map(|identity| gix::credentials::protocol::Outcome { identity, next: context.into() })),
                _ => Ok(None),
            })
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
        self.consolidate_packs();
        Ok(branches)
    }

    /// Every fetch adds a pack to the mirror; each is mapped into memory and searched on every
    /// lookup, so left alone the hub grows and slows with every commit. Past [`MAX_PACKS`],
    /// `git repack -a -d` folds them into one (gix cannot repack yet).
    fn consolidate_packs(&self) {
        let packs = self.packs();
        if packs <= MAX_PACKS {
            return;
        }
        let repacked =
            std::process::Command::new("git").arg("-C").arg(&self.path).args(["repack", "-a", "-d", "-q"]).output();
        match repacked {
            Ok(out) if out.status.success() => tracing::debug!(packs, "mirror repacked"),
            Ok(out) => tracing::warn!(
                mirror = %self.path.display(),
                packs,
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "cannot repack the Git mirror; memory grows with every fetch until it can"
            ),
            Err(e) => tracing::warn!(
                mirror = %self.path.display(),
                packs,
                error = %e,
                "cannot run `git repack` (is git on PATH?); memory grows with every fetch until it can"
            ),
        }
    }

    /// Pack files in the mirror (at most [`MAX_PACKS`] + 1 after a fetch).
    pub fn packs(&self) -> usize {
        let pack_dir = self.path.join("objects").join("pack");
        std::fs::read_dir(pack_dir)
            .map(|entries| {
                entries.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "pack")).count()
            })
            .unwrap_or(0)
    }

    /// Blobs held in memory for the snapshots alive now.
    pub fn cached_blobs(&self) -> usize {
        self.blobs.len()
    }

    /// Reads the whole tree of `commit` into memory.
    pub fn snapshot(&mut self, commit: ObjectId) -> Result<Arc<Snapshot>> {
        let repo = self.open()?;
        let missing = || GitError::MissingCommit { commit: commit.to_string(), url: redacted(&self.url) };
        let tree = repo.find_commit(commit).map_err(|_| missing())?.tree().map_err(|_| missing())?;
        let mut recorder = gix::traverse::tree::Recorder::default();
        tree.traverse().breadthfirst(&mut recorder).map_err(|e| self.err("reading a tree")(e.into()))?;
        let mut entries = BTreeMap::new();
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        children.insert(String::new(), Vec::new());
        let mut has_links = false;
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
                        let size = self.blob_size(&repo, record.oid)?;
                        if size > MAX_FILE_BYTES {
                            entries.insert(path.to_string(), Entry::TooLarge(record.oid, size));
                            continue;
                        }
                        let object = repo.find_object(record.oid).map_err(|e| self.err("reading a file")(e.into()))?;
                        let blob: Arc<[u8]> = object.data.clone().into();
                        self.blobs.insert(record.oid, blob.clone());
                        blob
                    }
                };
                Entry::File(record.oid, blob)
            } else if record.mode.is_link() {
                // A symlink's blob is its target; it is followed only inside the tree.
                let object = repo.find_object(record.oid).map_err(|e| self.err("reading a symlink")(e.into()))?;
                has_links = true;
                Entry::Link(record.oid, String::from_utf8_lossy(&object.data).into_owned())
            } else {
                // Submodules are never followed.
                Entry::Other(record.oid)
            };
            entries.insert(path.to_string(), entry);
        }
        for names in children.values_mut() {
            names.sort();
        }
        let snapshot = Arc::new(Snapshot { commit, tree: tree.id, entries, children, has_links });
        // Blobs only this cache still holds belong to snapshots that are gone: forget them.
        self.blobs.retain(|_, blob| Arc::strong_count(blob) > 1);
        Ok(snapshot)
    }

    /// The size of blob `id`, read from its header without inflating it.
    fn blob_size(&self, repo: &gix::Repository, id: ObjectId) -> Result<u64> {
        Ok(repo.find_header(id).map_err(|e| self.err("reading a file")(e.into()))?.size())
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
    /// A symlink and its target as written.
    Link(ObjectId, String),
    Other(ObjectId),
    /// A file over [`MAX_FILE_BYTES`], never read into memory.
    TooLarge(ObjectId, u64),
}

/// The largest file of the fleet repository the hub reads (16 MiB): far above any manifest or
/// chart a cluster can take, far below what would strain the hub's memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Packs the mirror may hold before they are folded into one (one is added per fetch).
pub const MAX_PACKS: usize = 32;

/// The tree of one commit, in memory.
#[derive(Debug)]
pub struct Snapshot {
    pub commit: ObjectId,
    tree: ObjectId,
    entries: BTreeMap<String, Entry>,
    children: HashMap<String, Vec<String>>,
    /// Whether any entry is a symlink (paths of a tree without them resolve to themselves).
    has_links: bool,
}

fn key(path: &Path) -> String {
    path.to_string_lossy().trim_matches('/').to_string()
}

/// Symlinks followed at most while resolving one path (as Linux's limit).
const MAX_LINK_HOPS: usize = 40;

impl Snapshot {
    /// `key` with every symlink on its way followed, as the checkout would resolve it: `None`
    /// when nothing is there. A symlink whose target leaves the tree (absolute, or `..` past
    /// the root) is refused as an escape, as `convoy render` refuses it on a checkout; so is a
    /// loop (an error of its own). Where and whether a render may read what a symlink reaches is the render's
    /// decision ([`Source::real_path`]), the same for the hub and the CLI.
    fn resolve(&self, key: &str) -> render::Result<Option<String>> {
        if key.is_empty() {
            return Ok(Some(String::new()));
        }
        if !self.has_links {
            return Ok(self.entries.contains_key(key).then(|| key.to_string()));
        }
        let escape = || RenderError::PathEscape { path: key.to_string(), from: PathBuf::from(key) };
        let mut pending: Vec<String> = key.split('/').rev().map(String::from).collect();
        let mut resolved = String::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            let candidate = if resolved.is_empty() { part } else { format!("{resolved}/{part}") };
            match self.entries.get(&candidate) {
                None => return Ok(None),
                Some(Entry::Link(_, target)) => {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(RenderError::Io {
                            path: PathBuf::from(key),
                            source: std::io::Error::other("too many levels of symbolic links (a symlink loop)"),
                        });
                    }
                    if target.starts_with('/') {
                        return Err(escape());
                    }
                    // The target, relative to the link's directory, replaces the link.
                    let mut base: Vec<&str> =
                        if resolved.is_empty() { Vec::new() } else { resolved.split('/').collect() };
                    for step in target.split('/') {
                        match step {
                            "" | "." => {}
                            ".." => {
                                base.pop().ok_or_else(escape)?;
                            }
                            name => base.push(name),
                        }
                    }
                    let target_parts: Vec<String> = base.iter().map(|s| s.to_string()).collect();
                    pending.extend(target_parts.into_iter().rev());
                    resolved = String::new();
                }
                Some(_) => resolved = candidate,
            }
        }
        Ok(Some(resolved))
    }

    /// The entry at `key` with symlinks followed, with where it really is.
    fn entry<'k>(&self, key: &'k str) -> render::Result<Option<(Cow<'k, str>, &Entry)>> {
        if !self.has_links {
            return Ok(self.entries.get(key).map(|e| (Cow::Borrowed(key), e)));
        }
        let Some(real) = self.resolve(key)? else { return Ok(None) };
        Ok(self.entries.get(&real).map(|e| (Cow::Owned(real), e)))
    }

    /// The object id of what `path` names (tree or blob, symlinks followed, so a change to a
    /// symlink's target changes its id), for change detection.
    pub fn id_of(&self, path: &Path) -> Option<ObjectId> {
        let key = key(path);
        if key.is_empty() {
            return Some(self.tree);
        }
        self.entry(&key).ok().flatten().map(|(_, e)| match e {
            Entry::File(id, _) | Entry::Dir(id) | Entry::Link(id, _) | Entry::Other(id) | Entry::TooLarge(id, _) => *id,
        })
    }

    /// The contents of the file at `path`, if it is one.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        match self.entry(path.trim_matches('/')).ok().flatten() {
            Some((_, Entry::File(_, data))) => Some(data),
            _ => None,
        }
    }

    /// Names in the directory `path` (sorted); `None` when it is not a directory.
    pub fn dir(&self, path: &str) -> Option<&[String]> {
        let real = self.resolve(path.trim_matches('/')).ok().flatten()?;
        self.children.get(&real).map(Vec::as_slice)
    }
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of `files` (path, contents) and symlinks (path, target) as if committed: ids
    /// are derived from contents (a directory's from everything below it), so a changed file
    /// changes its id and its parents' as in Git. For unit tests of what reads snapshots.
    pub fn of_files(files: &[(&str, &str)], links: &[(&str, &str)]) -> Arc<Snapshot> {
        use sha2::Digest as _;
        let id = |parts: &[&[u8]]| {
            let mut hasher = sha2::Sha256::new();
            for part in parts {
                hasher.update(part);
                hasher.update([0]);
            }
            ObjectId::from_bytes_or_panic(&hasher.finalize()[..20])
        };
        let mut entries = BTreeMap::new();
        let mut children: HashMap<String, Vec<String>> = HashMap::from([(String::new(), Vec::new())]);
        let mut below: BTreeMap<String, Vec<&[u8]>> = BTreeMap::new();
        let all = files.iter().map(|(p, c)| (p, c, false)).chain(links.iter().map(|(p, t)| (p, t, true)));
        for (path, contents, link) in all {
            let entry = if link {
                Entry::Link(id(&[b"link", contents.as_bytes()]), contents.to_string())
            } else {
                Entry::File(id(&[contents.as_bytes()]), contents.as_bytes().into())
            };
            entries.insert(path.to_string(), entry);
            let mut child = *path;
            while let Some((parent, name)) = child.rsplit_once('/') {
                children.entry(parent.to_string()).or_default().push(name.to_string());
                below.entry(parent.to_string()).or_default().extend([path.as_bytes(), contents.as_bytes()]);
                child = parent;
            }
            children.entry(String::new()).or_default().push(child.to_string());
        }
        for (dir, parts) in &below {
            entries.insert(dir.clone(), Entry::Dir(id(parts)));
        }
        for names in children.values_mut() {
            names.sort();
            names.dedup();
        }
        let everything: Vec<&[u8]> = files.iter().flat_map(|(p, c)| [p.as_bytes(), c.as_bytes()]).collect();
        let tree = id(&everything);
        Arc::new(Snapshot { commit: id(&[tree.as_bytes()]), tree, entries, children, has_links: !links.is_empty() })
    }
}

impl Source for Snapshot {
    fn kind(&self, path: &Path) -> render::Result<Option<EntryKind>> {
        let key = key(path);
        if key.is_empty() {
            return Ok(Some(EntryKind::Dir));
        }
        Ok(match self.entry(&key)? {
            Some((_, Entry::File(..) | Entry::TooLarge(..))) => Some(EntryKind::File),
            Some((_, Entry::Dir(_))) => Some(EntryKind::Dir),
            Some((real, Entry::Other(_) | Entry::Link(..))) => {
                return Err(RenderError::PathEscape { path: real.to_string(), from: PathBuf::from(real.as_ref()) });
            }
            None => None,
        })
    }

    fn read(&self, path: &Path) -> render::Result<Vec<u8>> {
        let key = key(path);
        match self.entry(&key)? {
            Some((_, Entry::File(_, data))) => Ok(data.to_vec()),
            Some((real, Entry::Other(_) | Entry::Link(..))) => {
                Err(RenderError::PathEscape { path: real.to_string(), from: PathBuf::from(real.as_ref()) })
            }
            Some((_, Entry::TooLarge(_, size))) => Err(RenderError::Io {
                path: PathBuf::from(key),
                source: std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!(
                        "the file is {} MiB, over the {} MiB a fleet repository file may be; keep large data out of Git",
                        size >> 20,
                        MAX_FILE_BYTES >> 20
                    ),
                ),
            }),
            _ => Err(RenderError::Io {
                path: PathBuf::from(key),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file in the commit"),
            }),
        }
    }

    fn list_dir(&self, path: &Path) -> render::Result<Vec<String>> {
        let key = key(path);
        let real = if key.is_empty() { Some(key.clone()) } else { self.resolve(&key)? };
        real.and_then(|real| self.children.get(&real).cloned()).ok_or_else(|| RenderError::Io {
            path: PathBuf::from(key),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory in the commit"),
        })
    }

    fn real_path(&self, path: &Path) -> render::Result<PathBuf> {
        Ok(self.resolve(&key(path))?.map_or_else(|| path.to_path_buf(), PathBuf::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_in_a_url() {
        assert_eq!(
            redacted("https://git:s3cret@git.example.com/fleet.git"),
            "https://git:<redacted>@git.example.com/fleet.git"
        );
        assert_eq!(redacted("https://tok3n@git.example.com/a@b"), "https://tok3n:<redacted>@git.example.com/a@b");
        assert_eq!(redacted("https://git.example.com/fleet.git"), "https://git.example.com/fleet.git");
        assert_eq!(redacted("/srv/fleet.git"), "/srv/fleet.git");
        let access = GitAccess { username: "git".into(), password: Some("s3cret".into()), tls: None };
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    /// The hub reads a commit's symlinks as `convoy render` reads a checkout's: the same
    /// policy (convoy-render's `check_within`) decides, so both render the same objects or
    /// refuse with the same reason.
    #[test]
    fn symlinks_in_a_commit_follow_the_render_policy() {
        let files = |kustomization: &'static str| {
            vec![
                ("shared/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\n"),
                ("shared/kustomization.yaml", "resources: [cm.yaml]\n"),
                ("app/real.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local}\n"),
                ("app/kustomization.yaml", kustomization),
            ]
        };
        let links = [
            ("app/same-dir.yaml", "real.yaml"),
            ("app/up.yaml", "../shared/cm.yaml"),
            ("app/shared-dir", "../shared"),
            ("app/out.yaml", "../../etc/passwd"),
            ("app/abs.yaml", "/etc/passwd"),
            ("app/loop.yaml", "loop.yaml"),
        ];
        let render = |k: &'static str| {
            let snapshot = Snapshot::of_files(&files(k), &links);
            convoy_render::Renderer::with_source(snapshot).render(Path::new("app"))
        };
        let name = |objects: Vec<serde_json::Value>| objects[0]["metadata"]["name"].as_str().map(String::from);
        let ok = render("resources: [same-dir.yaml]\n").expect("a symlink within the directory is followed");
        assert_eq!(name(ok).as_deref(), Some("local"));
        let ok = render("resources: [shared-dir]\n").expect("a symlinked kustomization directory");
        assert_eq!(name(ok).as_deref(), Some("shared"));
        for k in ["resources: [up.yaml]\n", "resources: [shared-dir/cm.yaml]\n"] {
            let err = render(k).expect_err(k);
            assert!(err.to_string().contains("through a symlink"), "{k}: {err}");
        }
        for k in ["resources: [out.yaml]\n", "resources: [abs.yaml]\n"] {
            let err = render(k).expect_err(k);
            assert!(matches!(err, RenderError::PathEscape { .. }), "{k}: {err}");
        }
        let err = render("resources: [loop.yaml]\n").expect_err("a loop");
        assert!(err.to_string().contains("symlink loop"), "{err}");
        // A change to a symlink's target is a change to the symlink.
        let before = Snapshot::of_files(&files(""), &links);
        let mut changed = files("");
        changed[2].1 = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n";
        let after = Snapshot::of_files(&changed, &links);
        assert_ne!(before.id_of(Path::new("app/same-dir.yaml")), after.id_of(Path::new("app/same-dir.yaml")));
        assert_eq!(before.file("app/same-dir.yaml"), before.file("app/real.yaml"));
    }
}

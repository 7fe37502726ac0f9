//! Commits of the fleet repository read with the `git` program, never through the user's work
//! tree or index: refs resolved with `git rev-parse`, a commit's whole tree listed with `git
//! ls-tree` and its files read with one `git cat-file --batch`, into a [`CommitTree`] the render
//! engine reads as a [`Source`] (what `convoy diff --base --head` renders from).
//!
//! Symlinks in a commit are followed inside the tree only, as the hub follows them in its
//! snapshots and `convoy render` on a checkout: a target that is absolute or climbs out of the
//! tree is refused as an escape, whether kustomize may read what it reaches is the render's
//! decision ([`Source::real_path`]). Submodules are never followed.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use convoy_render::{EntryKind, RenderError, Source};

/// The largest file read from a commit (16 MiB), as the hub: far above any manifest or chart.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Symlinks followed at most while resolving one path (Linux's limit).
const MAX_LINK_HOPS: usize = 40;

/// Why git could not tell what was asked.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git in {dir}: {source}; install git, or run where it is on PATH")]
    Spawn {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {command}` failed in {dir}: {stderr}")]
    Failed { command: String, dir: PathBuf, stderr: String },
    #[error("{dir} is not a Git repository: run in a clone of the fleet repository, or pass --repo DIR naming one")]
    NotARepository { dir: PathBuf },
    #[error(
        "'{written}' names no commit in {dir}: pass a branch, tag or commit it has (`git fetch` first when it is only on a remote)"
    )]
    UnknownRef { written: String, dir: PathBuf },
    #[error("`git {command}` in {dir} printed what it should not: {detail}")]
    Output { command: String, dir: PathBuf, detail: String },
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;

/// How a `git` run failed, for callers that word the error their own way.
#[derive(Debug)]
pub enum GitRun {
    /// git could not be started.
    Spawn(std::io::Error),
    /// git exited non-zero; its stderr, trimmed.
    Failed(String),
}

/// Runs `git args` in `dir` and returns its stdout (the one way this crate runs git; `convoy
/// promote` too).
pub fn run_git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitRun> {
    let out = Command::new("git").args(args).current_dir(dir).output().map_err(GitRun::Spawn)?;
    if !out.status.success() {
        return Err(GitRun::Failed(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(out.stdout)
}

/// A commit a ref resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The ref as the user wrote it.
    pub written: String,
    /// The commit id (full hex).
    pub commit: String,
    /// The full ref name (`refs/heads/main`, `refs/remotes/origin/main`) when the ref is one.
    pub full_name: Option<String>,
}

/// File contents by blob id, shared by the trees of one run: two commits of one repository
/// share most of their files, read once.
pub type Blobs = HashMap<String, Arc<[u8]>>;

/// A repository driven with the `git` program (a clone, a bare repository or a work tree).
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
}

impl Repository {
    /// The repository at `dir`, or the checkout the current directory is in.
    pub fn open(dir: Option<&Path>) -> Result<Repository> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => crate::checkout_root(Path::new("."))
                .ok_or_else(|| GitError::NotARepository { dir: std::env::current_dir().unwrap_or_default() })?,
        };
        let repository = Repository { dir };
        match repository.git(&["rev-parse", "--git-dir"]) {
            Err(GitError::Failed { .. }) => Err(GitError::NotARepository { dir: repository.dir }),
            other => other.map(|_| repository),
        }
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn git(&self, args: &[&str]) -> Result<Vec<u8>> {
        run_git(&self.dir, args).map_err(|failure| match failure {
            GitRun::Spawn(source) => GitError::Spawn { dir: self.dir.clone(), source },
            GitRun::Failed(stderr) => GitError::Failed { command: args.join(" "), dir: self.dir.clone(), stderr },
        })
    }

    fn text(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.git(args)?).trim().to_string())
    }

    /// The commit `written` names (a branch, remote branch, tag, commit or any revision
    /// expression git takes), with its full ref name when it is a ref.
    pub fn resolve(&self, written: &str) -> Result<Resolved> {
        let unknown = || GitError::UnknownRef { written: written.to_string(), dir: self.dir.clone() };
        // Never an option to git.
        if written.is_empty() || written.starts_with('-') {
            return Err(unknown());
        }
        let peeled = format!("{written}^{{commit}}");
        let commit = match self.text(&["rev-parse", "--verify", "--quiet", &peeled]) {
            Ok(commit) if !commit.is_empty() => commit,
            Ok(_) | Err(GitError::Failed { .. }) => return Err(unknown()),
            Err(e) => return Err(e),
        };
        let full_name =
            self.text(&["rev-parse", "--symbolic-full-name", written]).ok().filter(|name| name.starts_with("refs/"));
        Ok(Resolved { written: written.to_string(), commit, full_name })
    }

    /// The names of the repository's remotes.
    pub fn remotes(&self) -> Result<Vec<String>> {
        Ok(self.text(&["remote"])?.lines().map(str::to_string).collect())
    }

    /// Where `branch` is in this repository: the local branch, else `origin`'s.
    pub fn branch(&self, branch: &str) -> Result<Option<Resolved>> {
        for full in [format!("refs/heads/{branch}"), format!("refs/remotes/origin/{branch}")] {
            match self.resolve(&full) {
                Ok(resolved) => return Ok(Some(resolved)),
                Err(GitError::UnknownRef { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The whole tree of `commit`, its files read into memory (through `blobs`, which keeps
    /// what it read for the next tree).
    pub fn tree(&self, commit: &str, blobs: &mut Blobs) -> Result<CommitTree> {
        let listing = self.git(&["ls-tree", "-r", "-z", "-l", "--full-tree", commit])?;
        let bad = |detail: String| GitError::Output {
            command: format!("ls-tree -r -z -l --full-tree {commit}"),
            dir: self.dir.clone(),
            detail,
        };
        let mut listed = Vec::new();
        for record in listing.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let record = String::from_utf8_lossy(record);
            let (meta, path) = record.split_once('\t').ok_or_else(|| bad(format!("no path in '{record}'")))?;
            let fields: Vec<&str> = meta.split_whitespace().collect();
            let [mode, _kind, id, size] = fields[..] else { return Err(bad(format!("'{meta}' is not 4 fields"))) };
            listed.push((mode.to_string(), id.to_string(), size.parse::<u64>().ok(), path.to_string()));
        }
        let wanted: Vec<&str> = listed
            .iter()
            .filter(|(mode, id, size, _)| {
                blob_mode(mode) && !blobs.contains_key(id.as_str()) && size.is_some_and(|s| s <= MAX_FILE_BYTES)
            })
            .map(|(_, id, _, _)| id.as_str())
            .collect();
        self.read_blobs(&wanted, blobs)?;
        let mut tree = CommitTree { commit: commit.to_string(), nodes: HashMap::new(), has_links: false };
        tree.nodes.insert(String::new(), Node::Dir(Vec::new()));
        for (mode, id, size, path) in listed {
            let node = match (mode.as_str(), blobs.get(&id)) {
                ("120000", Some(target)) => {
                    tree.has_links = true;
                    Node::Link(String::from_utf8_lossy(target).into_owned())
                }
                (_, Some(data)) if blob_mode(&mode) => Node::File(data.clone()),
                _ if blob_mode(&mode) => Node::TooLarge(size.unwrap_or(u64::MAX)),
                _ => Node::Submodule,
            };
            tree.add(path, node);
        }
        for node in tree.nodes.values_mut() {
            if let Node::Dir(names) = node {
                names.sort();
                names.dedup();
            }
        }
        Ok(tree)
    }

    /// Reads `ids` with one `git cat-file --batch` into `blobs`.
    fn read_blobs(&self, ids: &[&str], blobs: &mut Blobs) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let command = "cat-file --batch";
        let mut child = Command::new("git")
            .args(["cat-file", "--batch"])
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GitError::Spawn { dir: self.dir.clone(), source })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let request: String = ids.iter().map(|id| format!("{id}\n")).collect();
        // Written from a thread while the answers are read here: neither pipe fills up.
        let writer = std::thread::spawn(move || stdin.write_all(request.as_bytes()));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let bad = |detail: String| GitError::Output { command: command.into(), dir: self.dir.clone(), detail };
        for id in ids {
            let mut header = String::new();
            stdout.read_line(&mut header).map_err(|e| bad(e.to_string()))?;
            let fields: Vec<&str> = header.split_whitespace().collect();
            let [_, _, size] = fields[..] else { return Err(bad(format!("for {id}: '{}'", header.trim()))) };
            let size: usize = size.parse().map_err(|_| bad(format!("for {id}: '{}'", header.trim())))?;
            let mut data = vec![0; size + 1];
            stdout.read_exact(&mut data).map_err(|e| bad(e.to_string()))?;
            data.pop();
            blobs.insert(id.to_string(), data.into());
        }
        let written = writer.join().expect("the writer thread does not panic");
        let status = child.wait().map_err(|source| GitError::Spawn { dir: self.dir.clone(), source })?;
        if written.is_err() || !status.success() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            return Err(GitError::Failed { command: command.into(), dir: self.dir.clone(), stderr });
        }
        Ok(())
    }
}

fn symlink_loop(path: &str) -> RenderError {
    let source = std::io::Error::other("too many levels of symbolic links (a symlink loop)");
    RenderError::Io { path: PathBuf::from(path), source }
}

fn blob_mode(mode: &str) -> bool {
    matches!(mode, "100644" | "100755" | "120000")
}

#[derive(Debug, Clone)]
enum Node {
    File(Arc<[u8]>),
    /// A file over [`MAX_FILE_BYTES`], never read.
    TooLarge(u64),
    /// A symlink and its target as written.
    Link(String),
    /// A directory and the names in it, sorted.
    Dir(Vec<String>),
    Submodule,
}

/// The tree of one commit, in memory: a render [`Source`].
#[derive(Debug, Clone)]
pub struct CommitTree {
    commit: String,
    /// By repository-relative path, `""` the root; directories derived from the files' paths.
    nodes: HashMap<String, Node>,
    has_links: bool,
}

impl CommitTree {
    /// A tree of `files` (path, contents) and `links` (path, target), for tests.
    pub fn of(files: &[(&str, &str)], links: &[(&str, &str)]) -> CommitTree {
        let mut tree = CommitTree { commit: "test".into(), nodes: HashMap::new(), has_links: !links.is_empty() };
        tree.nodes.insert(String::new(), Node::Dir(Vec::new()));
        for (path, contents) in files {
            tree.add(path.to_string(), Node::File(contents.as_bytes().into()));
        }
        for (path, target) in links {
            tree.add(path.to_string(), Node::Link(target.to_string()));
        }
        for node in tree.nodes.values_mut() {
            if let Node::Dir(names) = node {
                names.sort();
                names.dedup();
            }
        }
        tree
    }

    /// The commit it is the tree of.
    pub fn commit(&self) -> &str {
        &self.commit
    }

    /// Adds `node` at `path` and the directories on the way (their listings sorted later).
    fn add(&mut self, path: String, node: Node) {
        let mut child = path.as_str();
        loop {
            let (parent, name) = child.rsplit_once('/').unwrap_or(("", child));
            let entry = self.nodes.entry(parent.to_string()).or_insert_with(|| Node::Dir(Vec::new()));
            let Node::Dir(names) = entry else { break };
            let known = names.iter().any(|n| n == name);
            names.push(name.to_string());
            if known || parent.is_empty() {
                break;
            }
            child = parent;
        }
        self.nodes.insert(path, node);
    }

    /// Where `path` really is, each symlink on the way replaced by its target: `None` when
    /// nothing is there.
    fn locate(&self, path: &str) -> convoy_render::Result<Option<String>> {
        if !self.has_links || path.is_empty() {
            return Ok(self.nodes.contains_key(path).then(|| path.to_string()));
        }
        let escape = || RenderError::PathEscape { path: path.to_string(), from: PathBuf::from(path) };
        let mut todo: std::collections::VecDeque<String> = path.split('/').map(str::to_string).collect();
        let mut at: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(step) = todo.pop_front() {
            match step.as_str() {
                "" | "." => continue,
                ".." => {
                    at.pop().ok_or_else(escape)?;
                    continue;
                }
                _ => at.push(step),
            }
            let Some(Node::Link(target)) = self.nodes.get(&at.join("/")) else {
                if !self.nodes.contains_key(&at.join("/")) {
                    return Ok(None);
                }
                continue;
            };
            hops += 1;
            match (hops > MAX_LINK_HOPS, target.starts_with('/')) {
                (true, _) => return Err(symlink_loop(path)),
                (_, true) => return Err(escape()),
                _ => {}
            }
            // The target stands for the link, read from the link's directory.
            at.pop();
            for part in target.split('/').rev() {
                todo.push_front(part.to_string());
            }
        }
        Ok(Some(at.join("/")))
    }

    /// The node `path` names, symlinks followed, and where it really is.
    fn node(&self, path: &Path) -> convoy_render::Result<Option<(String, &Node)>> {
        let key = path.to_string_lossy().trim_matches('/').to_string();
        Ok(self.locate(&key)?.and_then(|real| self.nodes.get(&real).map(|node| (real, node))))
    }
}

impl Source for CommitTree {
    fn kind(&self, path: &Path) -> convoy_render::Result<Option<EntryKind>> {
        match self.node(path)? {
            None => Ok(None),
            Some((_, Node::File(_) | Node::TooLarge(_))) => Ok(Some(EntryKind::File)),
            Some((_, Node::Dir(_))) => Ok(Some(EntryKind::Dir)),
            Some((real, _)) => Err(RenderError::PathEscape { from: PathBuf::from(&real), path: real }),
        }
    }

    fn read(&self, path: &Path) -> convoy_render::Result<Vec<u8>> {
        let io = |message: String, kind| RenderError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(kind, message),
        };
        match self.node(path)? {
            Some((_, Node::File(data))) => Ok(data.to_vec()),
            Some((_, Node::TooLarge(size))) => Err(io(
                format!(
                    "the file is {} MiB, over the {} MiB a fleet repository file may be; keep large data out of Git",
                    size >> 20,
                    MAX_FILE_BYTES >> 20
                ),
                std::io::ErrorKind::FileTooLarge,
            )),
            Some((_, Node::Dir(_))) => Err(io("a directory, not a file".into(), std::io::ErrorKind::IsADirectory)),
            Some((real, _)) => Err(RenderError::PathEscape { from: PathBuf::from(&real), path: real }),
            None => {
                Err(io(format!("no such file in commit {}", crate::short(&self.commit)), std::io::ErrorKind::NotFound))
            }
        }
    }

    fn list_dir(&self, path: &Path) -> convoy_render::Result<Vec<String>> {
        match self.node(path)? {
            Some((_, Node::Dir(names))) => Ok(names.clone()),
            _ => Err(RenderError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no such directory in commit {}", crate::short(&self.commit)),
                ),
            }),
        }
    }

    fn real_path(&self, path: &Path) -> convoy_render::Result<PathBuf> {
        let key = path.to_string_lossy().trim_matches('/').to_string();
        Ok(self.locate(&key)?.map_or_else(|| path.to_path_buf(), PathBuf::from))
    }
}

/// The branch a ref names: its full name without `refs/heads/` or `refs/remotes/<remote>/`,
/// else the ref as written without those or a leading `<remote>/`. A commit id or an
/// expression (`main~1`) is returned as written: it names no branch.
pub fn branch_of(resolved: &Resolved, remotes: &[String]) -> String {
    let strip = |name: &str| -> Option<String> {
        if let Some(branch) = name.strip_prefix("refs/heads/") {
            return Some(branch.to_string());
        }
        let remote_ref = name.strip_prefix("refs/remotes/");
        let rest = remote_ref.unwrap_or(name);
        // Remote names may hold '/': the longest that prefixes the name wins.
        let mut by_length: Vec<&String> = remotes.iter().collect();
        by_length.sort_by_key(|r| std::cmp::Reverse(r.len()));
        let known = by_length.into_iter().find_map(|remote| rest.strip_prefix(&format!("{remote}/")));
        // A remote-tracking ref of a remote no longer configured: its first part was the remote.
        known.or_else(|| remote_ref.and_then(|r| r.split_once('/')).map(|(_, branch)| branch)).map(str::to_string)
    };
    resolved
        .full_name
        .as_deref()
        .and_then(strip)
        .or_else(|| strip(&resolved.written))
        .unwrap_or_else(|| resolved.written.clone())
}

/// The files of a tree and what each holds, for tests and messages: path → contents.
pub fn files(tree: &CommitTree) -> BTreeMap<String, Vec<u8>> {
    tree.nodes
        .iter()
        .filter_map(|(path, node)| match node {
            Node::File(data) => Some((path.clone(), data.to_vec())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        String::from_utf8(run_git(dir, args).unwrap_or_else(|e| panic!("git {args:?}: {e:?}"))).unwrap().trim().into()
    }

    fn resolved(written: &str, full_name: Option<&str>) -> Resolved {
        Resolved { written: written.into(), commit: "c".into(), full_name: full_name.map(str::to_string) }
    }

    #[test]
    fn a_refs_branch_drops_heads_remotes_and_the_remote() {
        let remotes = vec!["origin".to_string(), "up/stream".to_string()];
        assert_eq!(branch_of(&resolved("main", Some("refs/heads/main")), &remotes), "main");
        assert_eq!(branch_of(&resolved("origin/main", Some("refs/remotes/origin/main")), &remotes), "main");
        assert_eq!(branch_of(&resolved("x", Some("refs/remotes/up/stream/env/prod")), &remotes), "env/prod");
        assert_eq!(branch_of(&resolved("refs/heads/stage", None), &remotes), "stage");
        assert_eq!(branch_of(&resolved("origin/stage", None), &remotes), "stage");
        assert_eq!(branch_of(&resolved("gone/main", Some("refs/remotes/gone/main")), &remotes), "main");
        assert_eq!(branch_of(&resolved("feature/x", None), &remotes), "feature/x");
        assert_eq!(branch_of(&resolved("1a2b3c", None), &remotes), "1a2b3c");
    }

    #[test]
    fn symlinks_are_followed_inside_the_tree_and_refused_outside() {
        let tree = CommitTree::of(
            &[("shared/cm.yaml", "a: 1\n"), ("app/real.yaml", "b: 2\n")],
            &[
                ("app/same.yaml", "real.yaml"),
                ("app/up", "../shared"),
                ("app/out.yaml", "../../etc"),
                ("app/abs", "/etc"),
                ("loop", "loop"),
            ],
        );
        assert_eq!(tree.read(Path::new("app/same.yaml")).unwrap(), b"b: 2\n");
        assert_eq!(tree.read(Path::new("app/up/cm.yaml")).unwrap(), b"a: 1\n");
        assert_eq!(tree.real_path(Path::new("app/up/cm.yaml")).unwrap(), PathBuf::from("shared/cm.yaml"));
        assert_eq!(tree.kind(Path::new("app/up")).unwrap(), Some(EntryKind::Dir));
        assert_eq!(tree.list_dir(Path::new("app")).unwrap(), ["abs", "out.yaml", "real.yaml", "same.yaml", "up"]);
        assert!(matches!(tree.kind(Path::new("app/out.yaml")), Err(RenderError::PathEscape { .. })));
        assert!(matches!(tree.read(Path::new("app/abs")), Err(RenderError::PathEscape { .. })));
        assert!(tree.read(Path::new("loop")).unwrap_err().to_string().contains("symlink loop"));
        assert_eq!(tree.kind(Path::new("app/none.yaml")).unwrap(), None);
    }

    #[test]
    fn a_commit_is_read_as_committed_whatever_the_work_tree_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        git(dir, &["init", "-q", "-b", "main"]);
        for (k, v) in [("user.email", "t@convoy.dev"), ("user.name", "T"), ("commit.gpgsign", "false")] {
            git(dir, &["config", k, v]);
        }
        std::fs::create_dir_all(dir.join("apps/web")).unwrap();
        std::fs::write(dir.join("apps/web/app.yaml"), "first\n").unwrap();
        std::os::unix::fs::symlink("app.yaml", dir.join("apps/web/link.yaml")).unwrap();
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", "one"]);
        std::fs::write(dir.join("apps/web/app.yaml"), "edited, not committed\n").unwrap();
        let repo = Repository::open(Some(dir)).unwrap();
        let main = repo.resolve("main").unwrap();
        assert_eq!(main.full_name.as_deref(), Some("refs/heads/main"));
        let mut blobs = Blobs::new();
        let tree = repo.tree(&main.commit, &mut blobs).unwrap();
        assert_eq!(tree.read(Path::new("apps/web/link.yaml")).unwrap(), b"first\n");
        assert_eq!(tree.list_dir(Path::new("")).unwrap(), ["apps"]);
        assert_eq!(files(&tree).len(), 1);
        assert_eq!(git(dir, &["status", "--porcelain"]), "M apps/web/app.yaml", "the work tree is untouched");
        let err = repo.resolve("no-such-branch").unwrap_err().to_string();
        assert!(err.contains("'no-such-branch'") && err.contains(&dir.display().to_string()), "{err}");
        assert!(repo.branch("main").unwrap().is_some() && repo.branch("stage").unwrap().is_none());
        let outside = tempfile::tempdir().unwrap();
        assert!(matches!(Repository::open(Some(outside.path())), Err(GitError::NotARepository { .. })));
    }
}

//! File access for the renderer: the [`Source`] trait and its filesystem implementation.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{RenderError, Result};

/// What a path names inside a [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// Read-only access to a repository tree. Paths are repository-relative, normalized
/// (no `.`/`..` components) and use `/` separators; the empty path is the root.
pub trait Source: Send + Sync {
    /// What `path` is, or `None` when it does not exist.
    fn kind(&self, path: &Path) -> Result<Option<EntryKind>>;
    /// The bytes of the file at `path`.
    fn read(&self, path: &Path) -> Result<Vec<u8>>;
    /// The names of the entries of the directory at `path`, sorted.
    fn list_dir(&self, path: &Path) -> Result<Vec<String>>;
    /// The path with symlinks resolved (still repository-relative). kustomize works in a
    /// symlinked directory's real location, so relative paths in it start from there.
    /// Sources without symlinks return the path unchanged.
    fn real_path(&self, path: &Path) -> Result<PathBuf> {
        Ok(path.to_path_buf())
    }
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> Result<bool> {
        Ok(self.kind(path)? == Some(EntryKind::Dir))
    }
    /// The filesystem directory this source mirrors, when there is one (used to accept
    /// absolute paths in [`super::Renderer::render`]).
    fn root(&self) -> Option<&Path> {
        None
    }
}

/// A [`Source`] reading the filesystem below a root directory. Symlinks are followed only
/// while they resolve inside the root.
#[derive(Debug, Clone)]
pub struct FsSource {
    root: PathBuf,
    canonical_root: Option<PathBuf>,
    /// Paths (root-relative, files and the directories on the way to them) found to be real
    /// all the way down, not symlinks, with where they are: a render reads many files in few
    /// directories, and a renderer rendering again asks again about the same files. The tree is
    /// taken not to change while it is read.
    real_paths: Arc<RwLock<HashMap<PathBuf, PathBuf>>>,
}

impl FsSource {
    /// A source rooted at `root`.
    pub fn new(root: &Path) -> Self {
        FsSource {
            root: root.to_path_buf(),
            canonical_root: std::fs::canonicalize(root).ok(),
            real_paths: Arc::default(),
        }
    }

    /// The absolute path for `rel`, after checking that it resolves inside the root.
    /// Walks the components with `lstat` (paths already known real are not asked again); only a
    /// path crossing a symlink pays for a full canonicalization.
    fn resolve(&self, rel: &Path) -> Result<Option<PathBuf>> {
        let Some(root) = &self.canonical_root else {
            return self.resolve_slow(rel);
        };
        let known = || self.real_paths.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let remember = |walked: PathBuf, at: PathBuf| {
            self.real_paths.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(walked, at);
        };
        if let Some(at) = known().get(rel) {
            return Ok(Some(at.clone()));
        }
        let mut cur = root.clone();
        let mut walked = PathBuf::new();
        for comp in rel.components() {
            let Component::Normal(part) = comp else {
                return self.resolve_slow(rel);
            };
            cur.push(part);
            walked.push(part);
            if known().contains_key(&walked) {
                continue;
            }
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => return self.resolve_slow(rel),
                Ok(m) if m.is_dir() => remember(walked.clone(), cur.clone()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
                Err(source) => {
                    return Err(RenderError::Io { path: rel.to_path_buf(), source });
                }
            }
        }
        remember(walked, cur.clone());
        Ok(Some(cur))
    }

    fn resolve_slow(&self, rel: &Path) -> Result<Option<PathBuf>> {
        let full = self.root.join(rel);
        let canonical = match std::fs::canonicalize(&full) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink pointing outside is still an escape, not a missing file.
                if let Ok(target) = std::fs::read_link(&full) {
                    let parent = full.parent().unwrap_or(&self.root);
                    let joined = parent.join(target);
                    if !lexically_inside(&joined, &self.root) {
                        return Err(escape(rel));
                    }
                }
                return Ok(None);
            }
            Err(source) => {
                return Err(RenderError::Io { path: rel.to_path_buf(), source });
            }
        };
        let root = self.canonical_root.as_ref().ok_or_else(|| RenderError::Io {
            path: PathBuf::from("."),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "repository root does not exist"),
        })?;
        if !canonical.starts_with(root) {
            return Err(escape(rel));
        }
        Ok(Some(canonical))
    }
}

fn escape(rel: &Path) -> RenderError {
    RenderError::PathEscape { path: rel.display().to_string(), from: rel.to_path_buf() }
}

fn lexically_inside(path: &Path, root: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    normalize(Path::new(""), &rest.to_string_lossy()).is_some()
}

impl Source for FsSource {
    fn kind(&self, path: &Path) -> Result<Option<EntryKind>> {
        let Some(full) = self.resolve(path)? else {
            return Ok(None);
        };
        match std::fs::metadata(&full) {
            Ok(m) if m.is_dir() => Ok(Some(EntryKind::Dir)),
            Ok(_) => Ok(Some(EntryKind::File)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RenderError::Io { path: path.to_path_buf(), source }),
        }
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let Some(full) = self.resolve(path)? else {
            return Err(RenderError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        };
        std::fs::read(&full).map_err(|source| RenderError::Io { path: path.to_path_buf(), source })
    }

    fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        let io = |source| RenderError::Io { path: path.to_path_buf(), source };
        let Some(full) = self.resolve(path)? else {
            return Err(io(std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory")));
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&full).map_err(io)? {
            let entry = entry.map_err(io)?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn real_path(&self, path: &Path) -> Result<PathBuf> {
        match (self.resolve(path)?, &self.canonical_root) {
            (Some(full), Some(root)) => {
                Ok(full.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf()))
            }
            _ => Ok(path.to_path_buf()),
        }
    }
}

/// Joins `rel` (as written in a kustomization) onto the repository-relative directory
/// `base` and resolves `.` and `..` lexically. `None` when the result would leave the
/// root or `rel` is absolute.
pub(crate) fn normalize(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel_path = Path::new(rel);
    if rel_path.is_absolute() {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    for c in base.components().chain(rel_path.components()) {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// kustomize's default load restriction: files (not directories) a kustomization names
/// must lie in or below its own directory.
///
/// Symlinks: the restriction holds for where a file really is, as in kustomize (which
/// checks after resolving symlinks). A symlink to a file in or below the kustomization's
/// directory is followed; one to a file elsewhere in the repository is refused like the
/// `../file` it stands for; one out of the repository never resolves at all
/// ([`FsSource`] refuses it as an escape). So a symlink never lets a kustomization read
/// what its written path could not.
pub(crate) fn check_within(src: &dyn Source, dir: &Path, file: &Path, written: &str, kfile: &Path) -> Result<()> {
    let refuse = || {
        RenderError::invalid(
            kfile,
            format!(
                "file '{written}' is not in or below the kustomization directory '{}'; move it there or make its directory a kustomization and list that",
                dir.display()
            ),
        )
    };
    if !file.starts_with(dir) {
        return Err(refuse());
    }
    if src.kind(file)?.is_none() {
        return Ok(()); // missing: the caller reports it
    }
    if !src.real_path(file)?.starts_with(src.real_path(dir)?) {
        return Err(RenderError::invalid(
            kfile,
            format!(
                "file '{written}' resolves through a symlink to a file outside the kustomization directory '{}' (kustomize refuses it too); copy the file there or make its directory a kustomization and list that",
                dir.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_inside_and_refuses_escape() {
        assert_eq!(normalize(Path::new("apps/web/envs/dev"), "../../base"), Some(PathBuf::from("apps/web/base")));
        assert_eq!(normalize(Path::new("a"), "./b/../c.yaml"), Some(PathBuf::from("a/c.yaml")));
        assert_eq!(normalize(Path::new("a"), "../../etc/passwd"), None);
        assert_eq!(normalize(Path::new(""), ".."), None);
        assert_eq!(normalize(Path::new("a"), "/etc/passwd"), None);
    }

    #[test]
    fn symlink_pointing_outside_is_refused() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret.yaml"), "x: 1\n").expect("write");
        let repo = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path().join("secret.yaml"), repo.path().join("link.yaml")).expect("symlink");
        std::fs::write(repo.path().join("inside.yaml"), "y: 2\n").expect("write");
        std::os::unix::fs::symlink(repo.path().join("inside.yaml"), repo.path().join("ok.yaml")).expect("symlink");
        let src = FsSource::new(repo.path());
        assert!(matches!(src.read(Path::new("link.yaml")), Err(RenderError::PathEscape { .. })));
        assert_eq!(src.read(Path::new("ok.yaml")).expect("read"), b"y: 2\n");
        assert_eq!(src.kind(Path::new("nope.yaml")).expect("kind"), None);
    }
}

//! Kustomize-compatible render engine: turns a kustomization directory into the objects
//! `kubectl kustomize DIR` would print, reading only files under one repository root.
//!
//! The entry point is [`Renderer`]; [`to_yaml`] prints its output like kubectl does.
//! File access goes through the [`Source`] trait so the hub can render straight out of
//! Git trees; [`FsSource`] is the filesystem implementation.
#![forbid(unsafe_code)]

pub mod access;
mod accumulate;
pub mod app;
mod config;
mod engine;
pub mod fleet;
mod generate;
mod gojson;
pub mod helm;
mod helmcharts;
mod kustomization;
mod merge;
mod nameref;
pub mod notifications;
mod patch;
mod plugins;
mod replace;
mod resource;
mod source;
mod transform;
mod vars;
pub mod windows;
mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use source::{EntryKind, FsSource, Source};
pub use yaml::to_yaml;

/// A chart error with the chart named once: load errors name it already, template errors name
/// the template inside it.
fn helm_message(chart: &Path, error: &helm::HelmError) -> String {
    match error {
        helm::HelmError::Load { .. } => error.to_string(),
        _ => format!("chart {}: {error}", chart.display()),
    }
}

/// Result type of the render engine.
pub type Result<T, E = RenderError> = std::result::Result<T, E>;

/// Why a render failed. Every variant names the file (repository-relative) it is about.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A file or directory could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// Repository-relative path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A referenced file or directory does not exist.
    #[error("{from}: '{path}' does not exist; fix the path or add the file")]
    Missing {
        /// Path that was referenced.
        path: PathBuf,
        /// File that referenced it.
        from: PathBuf,
    },
    /// A directory used as a kustomization holds no kustomization file.
    #[error("{dir}: no kustomization.yaml, kustomization.yml or Kustomization in this directory; add one")]
    NoKustomization {
        /// Directory that was expected to hold a kustomization.
        dir: PathBuf,
    },
    /// A directory holds more than one kustomization file.
    #[error("{dir}: found more than one kustomization file; keep only kustomization.yaml")]
    MultipleKustomizations {
        /// Directory with the conflicting files.
        dir: PathBuf,
    },
    /// A file is not valid YAML.
    #[error("{path}: invalid YAML: {message}")]
    Yaml {
        /// File that failed to parse.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A kustomization file has unknown or malformed fields.
    #[error("{path}: invalid kustomization: {message}")]
    InvalidKustomization {
        /// The kustomization file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A kustomize feature Convoy does not implement.
    #[error("{path}: '{feature}' is not supported by convoy's renderer; remove it")]
    Unsupported {
        /// The kustomization file using it.
        path: PathBuf,
        /// The field or feature.
        feature: String,
    },
    /// A remote resource (URL or git reference).
    #[error(
        "{path}: remote resource '{url}' is not supported; vendor it into the repository and refer to it by relative path"
    )]
    Remote {
        /// The kustomization file naming it.
        path: PathBuf,
        /// The remote reference.
        url: String,
    },
    /// A path leaves the repository root (`..` past the root, or a symlink pointing outside).
    #[error("{from}: '{path}' is outside the repository root; only files inside the repository can be used")]
    PathEscape {
        /// The offending path as written.
        path: String,
        /// The file that referenced it.
        from: PathBuf,
    },
    /// Kustomizations refer to each other in a cycle.
    #[error("{path}: cycle in kustomization references: {chain}")]
    Cycle {
        /// Directory where the cycle closes.
        path: PathBuf,
        /// The chain of directories.
        chain: String,
    },
    /// Two resources with the same group/version/kind/namespace/name.
    #[error(
        "{path}: may not add resource with an already registered id: {id}; remove the duplicate or patch it instead"
    )]
    DuplicateId {
        /// File (or kustomization) adding the duplicate.
        path: PathBuf,
        /// The resource id.
        id: String,
    },
    /// A patch without a target matches no resource, or matches several.
    #[error("{path}: {message}")]
    PatchTarget {
        /// The kustomization or patch file.
        path: PathBuf,
        /// What did not match.
        message: String,
    },
    /// A Helm chart did not load or render; the message names the chart file, line and value.
    #[error("{}", helm_message(chart, error))]
    Helm {
        /// The chart directory (repository-relative) or remote chart.
        chart: PathBuf,
        /// What Helm's engine said.
        #[source]
        error: Box<helm::HelmError>,
    },
    /// Any other invalid input.
    #[error("{path}: {message}")]
    Invalid {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
}

impl RenderError {
    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        RenderError::Invalid { path: path.to_path_buf(), message: message.into() }
    }
}

/// Renders kustomization directories of one repository.
///
/// Nothing outside the repository root is ever read: `..` past the root and symlinks that
/// resolve outside it are errors. The same input always gives the same output.
#[derive(Clone)]
pub struct Renderer {
    source: Arc<dyn Source>,
    cache: Arc<yaml::DocCache>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Renderer {
    /// A renderer reading the filesystem below `root` (the repository root).
    pub fn new(root: &Path) -> Self {
        Self::with_source(Arc::new(FsSource::new(root)))
    }

    /// A renderer reading from any [`Source`] (for example a Git tree).
    pub fn with_source(source: Arc<dyn Source>) -> Self {
        Renderer { source, cache: Arc::new(yaml::DocCache::default()) }
    }

    /// Renders the kustomization in `dir` (relative to the root, or absolute below it) into
    /// objects in kustomize's output order.
    pub fn render(&self, dir: &Path) -> Result<Vec<serde_json::Value>> {
        let rel = self.relative_dir(dir)?;
        engine::render(self.source.as_ref(), &self.cache, &rel)
    }

    fn relative_dir(&self, dir: &Path) -> Result<PathBuf> {
        let shown = dir.display().to_string();
        let escape = || RenderError::PathEscape { path: shown.clone(), from: PathBuf::from(".") };
        let rel: PathBuf = if dir.is_absolute() {
            let root = self.source.root().ok_or_else(escape)?;
            match dir.strip_prefix(root) {
                Ok(rest) => rest.to_path_buf(),
                Err(_) => {
                    let canon = std::fs::canonicalize(root).map_err(|_| escape())?;
                    let canon_dir = std::fs::canonicalize(dir).map_err(|_| escape())?;
                    canon_dir.strip_prefix(&canon).map(Path::to_path_buf).map_err(|_| escape())?
                }
            }
        } else {
            dir.to_path_buf()
        };
        source::normalize(Path::new(""), &rel.to_string_lossy()).ok_or_else(escape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(
            root,
            "app/base/kustomization.yaml",
            "resources: [cm.yaml]\nconfigMapGenerator:\n- name: gen\n  literals: [b=2, a=1]\n",
        );
        write(
            root,
            "app/base/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {z: '1', y: '2'}\n",
        );
        write(
            root,
            "app/env/kustomization.yaml",
            "resources: [../base]\nnamePrefix: e-\ncommonLabels: {env: dev, app: web}\n",
        );
        dir
    }

    #[test]
    fn renderer_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Renderer>();
        let dir = repo();
        let r = Renderer::new(dir.path());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || to_yaml(&r.render(Path::new("app/env")).expect("render")))
            })
            .collect();
        let outs: Vec<String> = handles.into_iter().map(|h| h.join().expect("join")).collect();
        assert!(outs.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn rendering_is_deterministic() {
        let dir = repo();
        let r = Renderer::new(dir.path());
        let first = to_yaml(&r.render(Path::new("app/env")).expect("render"));
        for _ in 0..5 {
            let again = to_yaml(&r.render(Path::new("app/env")).expect("render"));
            assert_eq!(first, again);
        }
        assert!(first.contains("name: e-gen-"), "{first}");
        // Absolute paths below the root are accepted and give the same bytes.
        let abs = to_yaml(&r.render(&dir.path().join("app/env")).expect("render"));
        assert_eq!(first, abs);
    }

    #[test]
    fn paths_outside_the_root_are_refused() {
        let dir = repo();
        let r = Renderer::new(&dir.path().join("app"));
        assert!(matches!(r.render(Path::new("../app/env")), Err(RenderError::PathEscape { .. })));
        write(dir.path(), "app/bad/kustomization.yaml", "resources: [../../app/base]\n");
        let err = r.render(Path::new("bad")).expect_err("escape");
        assert!(matches!(err, RenderError::PathEscape { .. }), "{err}");
        assert!(err.to_string().contains("bad/kustomization.yaml"), "{err}");
        let outside = tempfile::tempdir().expect("tempdir");
        assert!(r.render(outside.path()).is_err());
    }

    /// The symlink policy of [`source::check_within`]: followed to a file in or below the
    /// kustomization's directory, refused to one elsewhere in the repository (as kustomize
    /// does) and out of the repository (always).
    #[cfg(unix)]
    #[test]
    fn symlinks_are_followed_only_where_the_written_path_could_reach() {
        use std::os::unix::fs::symlink;
        let dir = repo();
        let root = dir.path();
        write(root, "shared/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\n");
        write(root, "shared/env.txt", "k=v\n");
        write(root, "app/real.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local}\n");
        let outside = tempfile::tempdir().expect("tempdir");
        write(outside.path(), "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: out}\n");
        symlink("real.yaml", root.join("app/same-dir.yaml")).expect("symlink");
        symlink("../shared/cm.yaml", root.join("app/up.yaml")).expect("symlink");
        symlink("../shared", root.join("app/shared-dir")).expect("symlink");
        symlink("../shared/env.txt", root.join("app/env.txt")).expect("symlink");
        symlink(outside.path().join("cm.yaml"), root.join("app/out.yaml")).expect("symlink");
        let r = Renderer::new(root);
        let render = |k: &str| {
            write(root, "app/kustomization.yaml", k);
            r.render(Path::new("app"))
        };
        let ok = render("resources: [same-dir.yaml]\n").expect("a symlink within the directory is followed");
        assert_eq!(ok[0]["metadata"]["name"], "local");
        for k in [
            "resources: [up.yaml]\n",
            "resources: [shared-dir/cm.yaml]\n",
            "configMapGenerator:\n- name: g\n  envs: [env.txt]\n",
        ] {
            let err = render(k).expect_err(k);
            assert!(err.to_string().contains("through a symlink"), "{k}: {err}");
        }
        let err = render("resources: [out.yaml]\n").expect_err("out of the repository");
        assert!(matches!(err, RenderError::PathEscape { .. }), "{err}");
        // A symlinked kustomization directory elsewhere in the repository is fine, as in kustomize.
        write(root, "shared/kustomization.yaml", "resources: [cm.yaml]\n");
        let ok = render("resources: [shared-dir]\n").expect("a symlinked kustomization directory");
        assert_eq!(ok[0]["metadata"]["name"], "shared");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = repo();
        write(dir.path(), "app/broken/kustomization.yaml", "resources: [missing.yaml]\n");
        let err = Renderer::new(dir.path()).render(Path::new("app/broken")).expect_err("missing file");
        let text = err.to_string();
        assert!(text.contains("app/broken/kustomization.yaml"), "{text}");
        assert!(text.contains("missing.yaml"), "{text}");
    }
}

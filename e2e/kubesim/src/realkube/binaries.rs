//! Where the real control plane's programs are: built by `e2e/realkube/build.sh` into a cache
//! outside the clone, keyed by the versions pinned in `e2e/realkube/go.mod`.

use std::path::{Path, PathBuf};

/// The module file build.sh builds from; its pins name the cache directory.
const GO_MOD: &str = include_str!("../../../realkube/go.mod");

/// The three programs of a real control plane.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `kube-apiserver`.
    pub apiserver: PathBuf,
    /// `kube-controller-manager`.
    pub controller_manager: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
}

impl Binaries {
    fn in_dir(dir: &Path) -> Binaries {
        Binaries {
            apiserver: dir.join("kube-apiserver"),
            controller_manager: dir.join("kube-controller-manager"),
            etcd: dir.join("etcd"),
        }
    }

    fn complete(&self) -> bool {
        [&self.apiserver, &self.controller_manager, &self.etcd].iter().all(|p| p.is_file())
    }
}

/// The version go.mod pins for `module`.
fn pinned(module: &str) -> &'static str {
    GO_MOD
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(module)).then(|| words.next()).flatten()
        })
        .next()
        .unwrap_or("unknown")
}

/// The Kubernetes release the control plane is built from (`v1.37.2`).
pub fn kubernetes_version() -> &'static str {
    pinned("k8s.io/kubernetes")
}

/// Where build.sh puts the programs: `$CONVOY_REALKUBE_BIN` if set, else
/// `${CONVOY_REALKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/convoy/realkube}/kube-V-etcd-V/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONVOY_REALKUBE_BIN") {
        return dir.into();
    }
    let root = std::env::var_os("CONVOY_REALKUBE_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
        cache.join("convoy").join("realkube")
    });
    root.join(format!("kube-{}-etcd-{}", kubernetes_version(), pinned("go.etcd.io/etcd/server/v3"))).join("bin")
}

/// Whether tests must run on the real control plane (`CONVOY_REALKUBE` set and not `0`), so a
/// missing build fails them instead of skipping them. e2e/test.sh sets it after building.
pub fn required() -> bool {
    std::env::var("CONVOY_REALKUBE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The built programs, or `None` (with a printed reason) when they are not built and not
/// [`required`]. Panics when they are required and missing: a failed build never skips silently.
pub fn find() -> Option<Binaries> {
    match locate() {
        Ok(bins) => Some(bins),
        Err(missing) => {
            assert!(!required(), "CONVOY_REALKUBE is set but {missing}");
            eprintln!("SKIPPED: this test needs {missing}, or set CONVOY_REALKUBE=1 to make their absence an error");
            None
        }
    }
}

/// The built programs, or what is missing and how to build it.
pub fn locate() -> Result<Binaries, String> {
    let dir = bin_dir();
    let bins = Binaries::in_dir(&dir);
    if bins.complete() {
        return Ok(bins);
    }
    Err(format!(
        "kube-apiserver, kube-controller-manager and etcd are not built in {}: build them with \
         `bash e2e/realkube/build.sh` (e2e/test.sh does; about 15 minutes the first time)",
        dir.display()
    ))
}

//! Charts from outside the repository: HTTP(S) chart repositories (`index.yaml` and
//! digest-checked tarballs) and OCI registries (the registry v2 API, as `helm push` stores a
//! chart), resolved once and cached by digest.
//!
//! A [`ChartFetcher`] resolves a [`Remote`] (a chart and a version or constraint) to an exact
//! version and the sha256 digest of its `.tgz` **once**: the resolution is kept in memory and in
//! `resolutions.json` in the cache directory, and the tarball as `sha256-<hex>.tgz` beside it.
//! So every cluster gets the same bits, a restarted hub does not resolve again, and a repository
//! that is down later does not break a chart already fetched. A cached tarball is checked
//! against its digest whenever it is read from disk.
//!
//! The fetcher is blocking (reqwest's blocking client): call it from a blocking thread
//! (`spawn_blocking`, as the hub's sync does), never on an async runtime's worker.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::Url;
use reqwest::blocking::{Client, Response};
use serde_json::Value as Json;
use sha2::{Digest as _, Sha256};

use super::Chart;
use super::semver::{self, Version};

/// Result type of chart fetching.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;

/// OCI media type of a manifest.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI media type of the layer holding a Helm chart's `.tgz`.
const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The layer type charts pushed by Helm before 3.8 (and its experimental OCI support) carry.
const HELM_LEGACY_LAYER: &str = "application/tar+gzip";
/// Largest `index.yaml` read (large public repositories' indexes run to tens of MiB).
const MAX_INDEX: u64 = 256 << 20;
/// Largest chart archive or manifest read.
const MAX_ARCHIVE: u64 = 64 << 20;
/// How many available versions a "version not found" error lists.
const NEAREST: usize = 6;
/// The file of remembered resolutions in the cache directory.
const RESOLUTIONS: &str = "resolutions.json";

pub use super::remote::Remote;

/// The key a remote's resolution is remembered under.
fn resolution_key(remote: &Remote) -> String {
    match remote {
        Remote::Repo { url, name, version } => format!("repo {} {name} {version}", url.trim_end_matches('/')),
        Remote::Oci { reference, version } => format!("oci {reference} {version}"),
    }
}

/// Credentials for one host (`host` or `host:port`) of chart repositories or registries.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The host the credentials are sent to: `registry.example.com` (any port) or
    /// `registry.example.com:5000`.
    pub host: String,
    /// User name for basic auth (and for a registry's token service).
    #[serde(default)]
    pub username: Option<String>,
    /// Password or access token. With a username it goes in basic auth; without one it is
    /// sent as a bearer token.
    #[serde(default, alias = "token")]
    pub password: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credential {
    /// Reads a credentials file: a YAML (or JSON) list of `{host, username, password}` or
    /// `{host, username, token}` (the hub's `--chart-credentials`, a mounted Secret).
    pub fn load_file(path: &Path) -> Result<Vec<Credential>> {
        let bad = |detail: String| FetchError::Credentials { path: path.to_path_buf(), detail };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let mut list: Vec<Credential> = serde_saphyr::from_str(&text).map_err(|e| bad(e.to_string()))?;
        for (i, c) in list.iter_mut().enumerate() {
            let host = c.host.trim();
            let host = ["https://", "http://", "oci://"].iter().fold(host, |h, s| h.strip_prefix(s).unwrap_or(h));
            c.host = host.trim_end_matches('/').to_string();
            if c.host.is_empty() || c.host.contains('/') {
                return Err(bad(format!("entry {}: host {:?} is not a host or host:port", i + 1, c.host)));
            }
            if c.password.is_none() {
                return Err(bad(format!("entry {} ({}): give a password or a token", i + 1, c.host)));
            }
        }
        Ok(list)
    }
}

/// How a [`ChartFetcher`] reaches repositories and where it caches charts.
#[derive(Clone, Default)]
pub struct FetchConfig {
    /// Where tarballs (`sha256-<hex>.tgz`) and `resolutions.json` live (the hub:
    /// `<data>/charts`). Created when missing.
    pub cache_dir: PathBuf,
    /// Credentials by host.
    pub credentials: Vec<Credential>,
    /// TLS for https:// repositories and registries (the hub builds it from `--chart-ca` as it
    /// does for `--git-ca`); `None`: the platform's verifier and roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Hosts (`host` or `host:port`) reached over plain HTTP, like `helm --plain-http`:
    /// `http://` repository URLs and OCI registries are refused for any other host.
    pub plain_http_hosts: Vec<String>,
}

impl std::fmt::Debug for FetchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchConfig")
            .field("cache_dir", &self.cache_dir)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls.is_some())
            .field("plain_http_hosts", &self.plain_http_hosts)
            .finish()
    }
}

/// A fetched chart archive.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `sha256:<hex>` of the `.tgz`.
    pub digest: String,
    /// The exact version the request resolved to.
    pub version: String,
    /// The `.tgz` ([`Chart::from_archive`] loads it).
    pub archive: Arc<[u8]>,
}

/// Why a chart could not be fetched. Each names the repository or reference, the chart and
/// the version, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The repository or registry did not answer.
    #[error("{repository}: unreachable while fetching chart '{chart}' {version}: {detail} ({hint})")]
    Unreachable {
        /// Repository URL or OCI reference.
        repository: String,
        /// Chart name.
        chart: String,
        /// Version asked for.
        version: String,
        /// The transport's cause chain.
        detail: String,
        /// What to do.
        hint: &'static str,
    },
    /// HTTP 401 or 403.
    #[error("{repository}: HTTP {status} for chart '{chart}' {version}: {hint}")]
    Unauthorized {
        /// Repository URL or OCI reference.
        repository: String,
        /// Chart name.
        chart: String,
        /// Version asked for.
        version: String,
        /// 401 or 403.
        status: u16,
        /// Which credentials to add or check.
        hint: String,
    },
    /// The repository's index has no such chart.
    #[error("{repository}: the index has no chart '{chart}' (it has {available}); check spec.helm.name")]
    ChartNotFound {
        /// Repository URL.
        repository: String,
        /// Chart name.
        chart: String,
        /// A few of the charts it has.
        available: String,
    },
    /// No version matches.
    #[error(
        "{repository}: chart '{chart}' has no version matching '{version}' (nearest available: {}); pin one of them \
         in spec.helm.version",
        if nearest.is_empty() { "none".to_string() } else { nearest.join(", ") }
    )]
    VersionNotFound {
        /// Repository URL or OCI reference.
        repository: String,
        /// Chart name.
        chart: String,
        /// Version or constraint asked for.
        version: String,
        /// Available versions nearest to it, highest first.
        nearest: Vec<String>,
    },
    /// The version or constraint does not parse.
    #[error("{repository}: '{version}' for chart '{chart}' is neither a version nor a constraint: {detail}")]
    BadVersion {
        /// Repository URL or OCI reference.
        repository: String,
        /// Chart name.
        chart: String,
        /// What was asked.
        version: String,
        /// The parser's message.
        detail: String,
    },
    /// The bytes do not hash to the digest the index, the manifest or the cache records.
    #[error(
        "chart '{chart}' {version} from {url}: digest mismatch: expected {expected}, got {actual} (the tarball was \
         changed after it was indexed or recorded; refusing it)"
    )]
    DigestMismatch {
        /// Chart name.
        chart: String,
        /// Exact version.
        version: String,
        /// Where the bytes came from.
        url: String,
        /// The digest recorded (index, manifest or cache).
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// The artifact is not a Helm chart.
    #[error("{repository} {version}: not a Helm chart: {detail}")]
    NotAChart {
        /// Repository URL or OCI reference.
        repository: String,
        /// Exact version.
        version: String,
        /// What was found instead.
        detail: String,
    },
    /// The repository or reference is malformed, or its `index.yaml` is.
    #[error("{repository}: {detail}")]
    BadRepository {
        /// Repository URL or OCI reference.
        repository: String,
        /// What is wrong and what to write instead.
        detail: String,
    },
    /// Another HTTP failure.
    #[error("{url}: HTTP {status} while fetching chart '{chart}' {version}")]
    Http {
        /// The URL asked.
        url: String,
        /// Its status.
        status: u16,
        /// Chart name.
        chart: String,
        /// Version asked for.
        version: String,
    },
    /// A plain-HTTP URL for a host not named as plain HTTP.
    #[error("{url}: plain HTTP to {host} is refused: use https://, or name {host} in the hub's --chart-plain-http")]
    PlainHttp {
        /// The URL.
        url: String,
        /// Its host.
        host: String,
    },
    /// The cache directory cannot be used.
    #[error("chart cache {path}: {detail} (check that the hub's data directory is writable)")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A cached tarball no longer matches its digest, and fetching it again failed.
    #[error(
        "chart cache {path} does not match its digest {expected} (got {actual}), and fetching it again failed: {refetch}"
    )]
    CorruptCache {
        /// The cached tarball.
        path: PathBuf,
        /// Its recorded digest.
        expected: String,
        /// What it hashes to now.
        actual: String,
        /// Why the fresh download failed.
        #[source]
        refetch: Box<FetchError>,
    },
    /// The credentials file is unreadable or malformed.
    #[error("chart credentials {path}: {detail} (expected a YAML list of {{host, username, password|token}})")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The HTTP client could not be built (a TLS configuration problem).
    #[error("chart fetcher: {detail}")]
    Client {
        /// The cause.
        detail: String,
    },
}

/// Resolves and fetches remote charts, caching them by digest. `Send + Sync`: share it in an
/// `Arc`.
pub struct ChartFetcher {
    client: Client,
    config: FetchConfig,
    /// Remembered resolutions by [`Remote`] key; written through to `resolutions.json`.
    resolutions: Mutex<BTreeMap<String, Resolution>>,
    /// Archives already read and verified, by digest.
    archives: Mutex<HashMap<String, Arc<[u8]>>>,
}

impl std::fmt::Debug for ChartFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartFetcher").field("config", &self.config).finish_non_exhaustive()
    }
}

/// What a remote resolved to, once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Resolution {
    version: String,
    digest: String,
}

/// The request the errors of one fetch are about.
struct Ctx<'a> {
    repository: &'a str,
    chart: &'a str,
    version: &'a str,
}

/// A downloaded and verified archive.
struct Download {
    version: String,
    digest: String,
    bytes: Vec<u8>,
}

/// How a cached tarball read.
enum Cached {
    Missing,
    Verified(Arc<[u8]>),
    Corrupt { path: PathBuf, actual: String },
}

impl ChartFetcher {
    /// A fetcher with `config`: creates the cache directory and reads the resolutions an
    /// earlier run remembered.
    pub fn new(config: FetchConfig) -> Result<ChartFetcher> {
        let cache_err =
            |path: &Path, e: &dyn std::fmt::Display| FetchError::Cache { path: path.into(), detail: e.to_string() };
        std::fs::create_dir_all(&config.cache_dir).map_err(|e| cache_err(&config.cache_dir, &e))?;
        let file = config.cache_dir.join(RESOLUTIONS);
        let resolutions = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| FetchError::Cache {
                path: file.clone(),
                detail: format!("{e}; delete it to resolve every remote chart again"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(cache_err(&file, &e)),
        };
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(FetchError::Client {
                detail: "no rustls crypto provider is installed: install the ring provider first \
                         (convoy_shared::install_crypto_provider)"
                    .into(),
            });
        }
        let plain = config.plain_http_hosts.clone();
        let mut builder = Client::builder()
            .user_agent(concat!("convoy/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(300))
            // Redirects (a registry's blob store, a CDN) may not drop to plain HTTP.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    attempt.error("too many redirects")
                } else if attempt.url().scheme() == "http" && !host_listed(&plain, attempt.url()) {
                    let url = attempt.url().to_string();
                    attempt.error(format!("redirected to plain HTTP ({url}): name its host in --chart-plain-http"))
                } else {
                    attempt.follow()
                }
            }));
        if let Some(tls) = &config.tls {
            builder = builder.tls_backend_preconfigured((**tls).clone());
        }
        let client = builder.build().map_err(|e| FetchError::Client { detail: cause_chain(&e) })?;
        Ok(ChartFetcher { client, config, resolutions: Mutex::new(resolutions), archives: Mutex::new(HashMap::new()) })
    }

    /// The chart `remote` names, loaded, with the digest of its tarball; errors as render
    /// errors of the app naming it.
    pub fn chart(&self, remote: &Remote) -> std::result::Result<(Chart, String), crate::RenderError> {
        let invalid = |message: String| crate::RenderError::Invalid { path: remote.to_string().into(), message };
        let fetched = self.fetch(remote).map_err(|e| invalid(e.to_string()))?;
        let chart = Chart::from_archive(&fetched.archive, remote.to_string())
            .map_err(|error| crate::RenderError::Helm { chart: remote.to_string().into(), error: Box::new(error) })?;
        Ok((chart, fetched.digest))
    }

    /// The chart `remote` names: resolved on the first call (and remembered), then served
    /// from the cache. Blocking.
    pub fn fetch(&self, remote: &Remote) -> Result<Fetched> {
        let key = resolution_key(remote);
        let recorded = self.resolutions.lock().expect("resolutions lock").get(&key).cloned();
        if let Some(resolution) = recorded {
            return self.cached(remote, &resolution);
        }
        let download = self.download(remote, None)?;
        let archive = self.store(&download.digest, download.bytes)?;
        let resolution = Resolution { version: download.version, digest: download.digest };
        let kept = self.remember(key, resolution.clone())?;
        if kept != resolution {
            // Another thread resolved the same remote first: everyone gets its bits.
            return self.cached(remote, &kept);
        }
        Ok(Fetched { digest: kept.digest, version: kept.version, archive })
    }

    /// Serves a remembered resolution from memory or disk, downloading its exact version
    /// again (and checking the recorded digest) when the tarball is gone or damaged.
    fn cached(&self, remote: &Remote, resolution: &Resolution) -> Result<Fetched> {
        let fetched =
            |archive| Fetched { digest: resolution.digest.clone(), version: resolution.version.clone(), archive };
        let corrupt = match self.read_cached(&resolution.digest)? {
            Cached::Verified(archive) => return Ok(fetched(archive)),
            Cached::Missing => None,
            Cached::Corrupt { path, actual } => Some((path, actual)),
        };
        let download = match self.download(remote, Some(resolution)) {
            Ok(d) => d,
            Err(refetch) => {
                return Err(match corrupt {
                    Some((path, actual)) => FetchError::CorruptCache {
                        path,
                        expected: resolution.digest.clone(),
                        actual,
                        refetch: Box::new(refetch),
                    },
                    None => refetch,
                });
            }
        };
        Ok(fetched(self.store(&download.digest, download.bytes)?))
    }

    fn archive_path(&self, digest: &str) -> PathBuf {
        self.config.cache_dir.join(format!("{}.tgz", digest.replacen(':', "-", 1)))
    }

    fn read_cached(&self, digest: &str) -> Result<Cached> {
        if let Some(archive) = self.archives.lock().expect("archives lock").get(digest) {
            return Ok(Cached::Verified(archive.clone()));
        }
        let path = self.archive_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Cached::Missing),
            Err(e) => return Err(FetchError::Cache { path, detail: e.to_string() }),
        };
        let actual = sha256(&bytes);
        if actual != digest {
            return Ok(Cached::Corrupt { path, actual });
        }
        let archive: Arc<[u8]> = bytes.into();
        self.archives.lock().expect("archives lock").insert(digest.to_string(), archive.clone());
        Ok(Cached::Verified(archive))
    }

    /// Writes a verified tarball to the cache atomically (a temporary file renamed).
    fn store(&self, digest: &str, bytes: Vec<u8>) -> Result<Arc<[u8]>> {
        let path = self.archive_path(digest);
        write_atomically(&self.config.cache_dir, &path, &bytes)?;
        let archive: Arc<[u8]> = bytes.into();
        self.archives.lock().expect("archives lock").insert(digest.to_string(), archive.clone());
        Ok(archive)
    }

    /// Records a resolution unless one is already there; returns the one kept.
    fn remember(&self, key: String, resolution: Resolution) -> Result<Resolution> {
        let mut resolutions = self.resolutions.lock().expect("resolutions lock");
        if let Some(kept) = resolutions.get(&key) {
            return Ok(kept.clone());
        }
        resolutions.insert(key, resolution.clone());
        let json = serde_json::to_vec_pretty(&*resolutions).expect("resolutions serialize");
        write_atomically(&self.config.cache_dir, &self.config.cache_dir.join(RESOLUTIONS), &json)?;
        Ok(resolution)
    }

    /// Resolves and downloads `remote` (or, with `pin`, exactly its version and digest).
    fn download(&self, remote: &Remote, pin: Option<&Resolution>) -> Result<Download> {
        match remote {
            Remote::Repo { url, name, version } => self.download_repo(url, name, version, pin),
            Remote::Oci { reference, version } => self.download_oci(reference, version, pin),
        }
    }

    fn download_repo(&self, url: &str, name: &str, requested: &str, pin: Option<&Resolution>) -> Result<Download> {
        let ctx = Ctx { repository: url, chart: name, version: requested };
        let base = self.parse_url(url, &ctx)?;
        let index_url = base.join("index.yaml").expect("index.yaml joins");
        let response = self.send(&index_url, None, None, &ctx)?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(FetchError::BadRepository {
                repository: url.into(),
                detail: format!("no index.yaml at {index_url}: is this a Helm chart repository?"),
            });
        }
        let body = read_body(self.ok_status(response, &ctx)?, MAX_INDEX, &ctx)?;
        let index = super::yaml_read::parse_yaml(&String::from_utf8_lossy(&body)).map_err(|e| {
            FetchError::BadRepository { repository: url.into(), detail: format!("index.yaml does not parse: {e}") }
        })?;
        let entries = index.get("entries").and_then(Json::as_object).ok_or_else(|| FetchError::BadRepository {
            repository: url.into(),
            detail: "index.yaml has no entries".into(),
        })?;
        let Some(versions) = entries.get(name).and_then(Json::as_array) else {
            let mut names: Vec<&str> = entries.keys().map(String::as_str).collect();
            names.sort_by_key(|n| edit_distance(n, name));
            names.truncate(NEAREST);
            let available = if names.is_empty() { "none".into() } else { names.join(", ") };
            return Err(FetchError::ChartNotFound { repository: url.into(), chart: name.into(), available });
        };
        let listed: Vec<(String, &Json)> =
            versions.iter().filter_map(|v| Some((json_string(v.get("version")?)?, v))).collect();
        let wanted = pin.map_or(requested, |p| p.version.as_str());
        let tags: Vec<String> = listed.iter().map(|(v, _)| v.clone()).collect();
        let version = select(wanted, &tags, &ctx)?;
        let entry = listed.iter().find(|(v, _)| *v == version).map(|(_, e)| *e).expect("selected from the list");
        let first_url =
            entry.get("urls").and_then(Json::as_array).and_then(|u| u.first()).and_then(Json::as_str).ok_or_else(
                || FetchError::BadRepository {
                    repository: url.into(),
                    detail: format!("index.yaml lists no urls for chart '{name}' {version}"),
                },
            )?;
        let chart_url = base.join(first_url).map_err(|e| FetchError::BadRepository {
            repository: url.into(),
            detail: format!("chart '{name}' {version} has a bad url {first_url:?}: {e}"),
        })?;
        let chart_url = self.check_plain(chart_url)?;
        let ctx = Ctx { repository: url, chart: name, version: &version };
        let response = self.send(&chart_url, None, None, &ctx)?;
        let bytes = read_body(self.ok_status(response, &ctx)?, MAX_ARCHIVE, &ctx)?;
        let actual = sha256(&bytes);
        // The index's digest is bare hex (Helm writes it so); an index without one is trusted
        // on first use, and the digest taken then is what every later fetch must match.
        let expected = match pin {
            Some(p) => Some(p.digest.clone()),
            None => entry.get("digest").and_then(Json::as_str).filter(|d| !d.is_empty()).map(|d| {
                let hex = d.strip_prefix("sha256:").unwrap_or(d).to_ascii_lowercase();
                format!("sha256:{hex}")
            }),
        };
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(FetchError::DigestMismatch {
                chart: name.into(),
                version,
                url: chart_url.to_string(),
                expected,
                actual,
            });
        }
        check_chart(&bytes, url, &version)?;
        Ok(Download { version, digest: actual, bytes })
    }

    fn download_oci(&self, reference: &str, requested: &str, pin: Option<&Resolution>) -> Result<Download> {
        let oci = OciRef::parse(reference)?;
        let ctx = Ctx { repository: reference, chart: oci.name(), version: requested };
        let base = self.parse_url(&format!("{}://{}/", self.oci_scheme(&oci.registry), oci.registry), &ctx)?;
        let mut session = OciSession { token: None };
        let wanted = pin.map_or(requested, |p| p.version.as_str());
        let tag = if is_exact(wanted) {
            wanted.replace('+', "_")
        } else {
            let tags = self.oci_tags(&base, &oci, &mut session, &ctx)?;
            let versions: Vec<String> = tags.iter().map(|t| t.replace('_', "+")).collect();
            select(wanted, &versions, &ctx)?.replace('+', "_")
        };
        let version = tag.replace('_', "+");
        let manifest_url =
            base.join(&format!("v2/{}/manifests/{tag}", oci.path)).map_err(|e| FetchError::BadRepository {
                repository: reference.into(),
                detail: format!("tag {tag:?} does not make a URL: {e}"),
            })?;
        let response = self.oci_get(&manifest_url, Some(OCI_MANIFEST), &mut session, &oci, &ctx)?;
        if response.status() == StatusCode::NOT_FOUND {
            let tags = self.oci_tags(&base, &oci, &mut session, &ctx).unwrap_or_default();
            let versions: Vec<String> = tags.iter().map(|t| t.replace('_', "+")).collect();
            return Err(FetchError::VersionNotFound {
                repository: reference.into(),
                chart: oci.name().into(),
                version: wanted.into(),
                nearest: nearest(wanted, &versions),
            });
        }
        let ctx = Ctx { repository: reference, chart: oci.name(), version: &version };
        let body = read_body(self.ok_status(response, &ctx)?, MAX_ARCHIVE, &ctx)?;
        let not_a_chart =
            |detail: String| FetchError::NotAChart { repository: reference.into(), version: version.clone(), detail };
        let manifest: Json = serde_json::from_slice(&body)
            .map_err(|e| not_a_chart(format!("its manifest is not JSON ({e}); push charts with `helm push`")))?;
        let layers = manifest.get("layers").and_then(Json::as_array).cloned().unwrap_or_default();
        let chart_layer = layers
            .iter()
            .find(|l| l.get("mediaType").and_then(Json::as_str) == Some(HELM_CHART_LAYER))
            .or_else(|| layers.iter().find(|l| l.get("mediaType").and_then(Json::as_str) == Some(HELM_LEGACY_LAYER)));
        let Some(layer) = chart_layer else {
            let kind = manifest.get("mediaType").and_then(Json::as_str).unwrap_or("(no mediaType)");
            let types: Vec<&str> = layers.iter().filter_map(|l| l.get("mediaType").and_then(Json::as_str)).collect();
            return Err(not_a_chart(format!(
                "the artifact ({kind}) has no layer of type {HELM_CHART_LAYER} (its layers: [{}]); is it a container \
                 image? push charts with `helm push`",
                types.join(", ")
            )));
        };
        let digest = layer.get("digest").and_then(Json::as_str).unwrap_or("").to_string();
        if !digest.starts_with("sha256:") || digest.len() != 71 {
            return Err(not_a_chart(format!("the chart layer's digest {digest:?} is not a sha256 digest")));
        }
        if let Some(p) = pin
            && p.digest != digest
        {
            return Err(FetchError::DigestMismatch {
                chart: oci.name().into(),
                version,
                url: manifest_url.to_string(),
                expected: p.digest.clone(),
                actual: digest,
            });
        }
        let blob_url = base.join(&format!("v2/{}/blobs/{digest}", oci.path)).expect("a digest joins");
        let response = self.oci_get(&blob_url, None, &mut session, &oci, &ctx)?;
        let bytes = read_body(self.ok_status(response, &ctx)?, MAX_ARCHIVE, &ctx)?;
        let actual = sha256(&bytes);
        if actual != digest {
            return Err(FetchError::DigestMismatch {
                chart: oci.name().into(),
                version,
                url: blob_url.to_string(),
                expected: digest,
                actual,
            });
        }
        check_chart(&bytes, reference, &version)?;
        Ok(Download { version, digest: actual, bytes })
    }

    /// Every tag of the repository (following `Link` pagination).
    fn oci_tags(&self, base: &Url, oci: &OciRef, session: &mut OciSession, ctx: &Ctx) -> Result<Vec<String>> {
        let mut tags = Vec::new();
        let mut next = Some(base.join(&format!("v2/{}/tags/list", oci.path)).expect("tags URL"));
        while let Some(url) = next.take() {
            let response = self.oci_get(&url, None, session, oci, ctx)?;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(FetchError::VersionNotFound {
                    repository: ctx.repository.into(),
                    chart: ctx.chart.into(),
                    version: ctx.version.into(),
                    nearest: Vec::new(),
                });
            }
            let response = self.ok_status(response, ctx)?;
            next = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .and_then(|(link, _)| base.join(link).ok());
            let body = read_body(response, MAX_ARCHIVE, ctx)?;
            let list: Json = serde_json::from_slice(&body).map_err(|e| FetchError::BadRepository {
                repository: ctx.repository.into(),
                detail: format!("the registry's tag list is not JSON: {e}"),
            })?;
            tags.extend(
                list.get("tags")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Json::as_str)
                    .map(String::from),
            );
        }
        Ok(tags)
    }

    /// A registry request: with the session's bearer token, else the host's credentials; on a
    /// 401 with a Bearer challenge, a token from the registry's token service, then once more.
    fn oci_get(
        &self,
        url: &Url,
        accept: Option<&str>,
        session: &mut OciSession,
        oci: &OciRef,
        ctx: &Ctx,
    ) -> Result<Response> {
        let response = self.send(url, accept, session.token.as_deref(), ctx)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(BearerChallenge::parse)
        else {
            return Ok(response);
        };
        let token = self.oci_token(&challenge, oci, ctx)?;
        session.token = Some(token);
        self.send(url, accept, session.token.as_deref(), ctx)
    }

    /// Asks the registry's token service (the challenge's realm) for a pull token, with the
    /// host's credentials when there are some.
    fn oci_token(&self, challenge: &BearerChallenge, oci: &OciRef, ctx: &Ctx) -> Result<String> {
        let realm = Url::parse(&challenge.realm).map_err(|e| FetchError::BadRepository {
            repository: ctx.repository.into(),
            detail: format!("the registry's token service {:?} is not a URL: {e}", challenge.realm),
        })?;
        let mut realm = self.check_plain(realm)?;
        {
            let mut query = realm.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            let scope = challenge.scope.clone().unwrap_or_else(|| format!("repository:{}:pull", oci.path));
            query.append_pair("scope", &scope);
        }
        let mut request = self.client.get(realm.clone());
        if let Some(Credential { username: Some(user), password, .. }) =
            self.credential(&Url::parse(&format!("http://{}/", oci.registry)).expect("registry URL"))
        {
            request = request.basic_auth(user, password.as_ref());
        }
        let response = request.send().map_err(|e| unreachable(ctx, &e))?;
        let body = read_body(self.ok_status(response, ctx)?, MAX_ARCHIVE, ctx)?;
        let answer: Json = serde_json::from_slice(&body).map_err(|e| FetchError::BadRepository {
            repository: ctx.repository.into(),
            detail: format!("the token service {realm} answered no JSON: {e}"),
        })?;
        answer.get("token").or_else(|| answer.get("access_token")).and_then(Json::as_str).map(String::from).ok_or_else(
            || FetchError::BadRepository {
                repository: ctx.repository.into(),
                detail: format!("the token service {realm} answered without a token"),
            },
        )
    }

    /// GET `url` with `bearer`, else the credentials for its host.
    fn send(&self, url: &Url, accept: Option<&str>, bearer: Option<&str>, ctx: &Ctx) -> Result<Response> {
        let mut request = self.client.get(url.clone());
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        request = match (bearer, self.credential(url)) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Some(Credential { username: Some(user), password, .. })) => {
                request.basic_auth(user, password.as_ref())
            }
            (None, Some(Credential { username: None, password: Some(token), .. })) => request.bearer_auth(token),
            (None, _) => request,
        };
        request.send().map_err(|e| unreachable(ctx, &e))
    }

    /// The response when it succeeded; else what its status means for this chart.
    fn ok_status(&self, response: Response, ctx: &Ctx) -> Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let (_, host) = host_of(response.url());
            let hint = if self.credential(response.url()).is_some() {
                format!("the credentials for {host} in the hub's --chart-credentials file were refused: check them")
            } else {
                format!("add credentials for {host} to the hub's --chart-credentials file")
            };
            return Err(FetchError::Unauthorized {
                repository: ctx.repository.into(),
                chart: ctx.chart.into(),
                version: shown(ctx.version).into(),
                status: status.as_u16(),
                hint,
            });
        }
        Err(FetchError::Http {
            url: response.url().to_string(),
            status: status.as_u16(),
            chart: ctx.chart.into(),
            version: shown(ctx.version).into(),
        })
    }

    fn credential(&self, url: &Url) -> Option<&Credential> {
        let (host, with_port) = host_of(url);
        self.config
            .credentials
            .iter()
            .find(|c| c.host == with_port)
            .or_else(|| self.config.credentials.iter().find(|c| c.host == host))
    }

    /// Parses a repository URL, refusing plain HTTP to hosts not named for it.
    fn parse_url(&self, url: &str, ctx: &Ctx) -> Result<Url> {
        let with_slash = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
        let parsed = Url::parse(&with_slash).map_err(|e| FetchError::BadRepository {
            repository: ctx.repository.into(),
            detail: format!("{url:?} is not a URL: {e}"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::BadRepository {
                repository: ctx.repository.into(),
                detail: format!("{url:?} is neither https:// nor http:// (OCI charts go in spec.helm.oci)"),
            });
        }
        self.check_plain(parsed)
    }

    fn check_plain(&self, url: Url) -> Result<Url> {
        if url.scheme() == "http" && !host_listed(&self.config.plain_http_hosts, &url) {
            return Err(FetchError::PlainHttp { host: host_of(&url).1, url: url.to_string() });
        }
        Ok(url)
    }

    fn oci_scheme(&self, registry: &str) -> &'static str {
        let (host, _) = registry.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).unwrap_or((registry, ""));
        let plain = &self.config.plain_http_hosts;
        if plain.iter().any(|h| h == registry || h == host) { "http" } else { "https" }
    }
}

/// The bearer token of one fetch's registry requests.
struct OciSession {
    token: Option<String>,
}

/// `oci://registry[:port]/path/name`, split.
struct OciRef {
    registry: String,
    /// The repository path inside the registry (`charts/name`).
    path: String,
}

impl OciRef {
    fn parse(reference: &str) -> Result<OciRef> {
        let bad = |detail: &str| FetchError::BadRepository { repository: reference.into(), detail: detail.into() };
        let rest = reference.strip_prefix("oci://").ok_or_else(|| bad("an OCI reference starts with oci://"))?;
        let (registry, path) = rest.split_once('/').ok_or_else(|| bad("write oci://HOST[:PORT]/PATH/CHART"))?;
        let path = path.trim_end_matches('/');
        if registry.is_empty() || path.is_empty() {
            return Err(bad("write oci://HOST[:PORT]/PATH/CHART"));
        }
        let last = path.rsplit('/').next().unwrap_or(path);
        if last.contains(':') || last.contains('@') {
            return Err(bad("put the version in spec.helm.version, not in the reference"));
        }
        if path.chars().any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))) {
            return Err(bad("an OCI repository path holds lowercase letters, digits and . _ - / only"));
        }
        Ok(OciRef { registry: registry.into(), path: path.into() })
    }

    fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<BearerChallenge> {
        let (scheme, params) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut fields: HashMap<String, String> = HashMap::new();
        let mut rest = params.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, tail) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"')?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => after.split_once(',').map_or((after, ""), |(v, t)| (v, t)),
            };
            fields.insert(key.trim().to_ascii_lowercase(), value.to_string());
            rest = tail.trim_start().trim_start_matches(',').trim_start();
        }
        Some(BearerChallenge {
            realm: fields.remove("realm")?,
            service: fields.remove("service"),
            scope: fields.remove("scope"),
        })
    }
}

/// Whether `version` names one version (a tag) rather than a constraint.
fn is_exact(version: &str) -> bool {
    !version.is_empty()
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || ".-+_".contains(c))
        && !matches!(version, "x" | "X")
        && !version.split(['.', '-', '+']).take(3).any(|p| matches!(p, "x" | "X" | "*"))
        && Version::parse(&version.replace('_', "+")).is_some()
}

/// Helm's choice among `available`: the exact string when listed, else the highest version
/// matching the constraint (empty: `*`, the highest stable one).
fn select(requested: &str, available: &[String], ctx: &Ctx) -> Result<String> {
    if !requested.is_empty()
        && let Some(exact) = available.iter().find(|v| *v == requested)
    {
        return Ok(exact.clone());
    }
    let constraint = if requested.is_empty() { "*" } else { requested };
    let probe = Version::parse("0.0.0").expect("a version");
    semver::check_str(constraint, &probe).map_err(|detail| FetchError::BadVersion {
        repository: ctx.repository.into(),
        chart: ctx.chart.into(),
        version: requested.into(),
        detail,
    })?;
    let mut best: Option<(Version, &String)> = None;
    for candidate in available {
        let Some(v) = Version::parse(candidate) else { continue };
        if !semver::check_str(constraint, &v).unwrap_or(false) {
            continue;
        }
        if best.as_ref().is_none_or(|(b, _)| v.precedence(b).is_gt()) {
            best = Some((v, candidate));
        }
    }
    best.map(|(_, v)| v.clone()).ok_or_else(|| FetchError::VersionNotFound {
        repository: ctx.repository.into(),
        chart: ctx.chart.into(),
        version: shown(requested).into(),
        nearest: nearest(requested, available),
    })
}

/// The available versions nearest to what was asked (its first version number), highest
/// first; the highest ones when it names no number.
fn nearest(requested: &str, available: &[String]) -> Vec<String> {
    let mut sorted: Vec<(Version, &String)> =
        available.iter().filter_map(|a| Version::parse(a).map(|v| (v, a))).collect();
    sorted.sort_by(|(a, _), (b, _)| b.precedence(a));
    sorted.dedup_by(|(a, _), (b, _)| a.precedence(b).is_eq());
    let anchor = requested
        .trim_start_matches(|c: char| "=<>!~^v ".contains(c))
        .split([' ', ',', '|'])
        .next()
        .map(|a| a.replace(['x', 'X', '*'], "0"))
        .and_then(|a| Version::parse(a.trim_end_matches('.')));
    let start = match anchor {
        // The first at or below the anchor, with a few above it.
        Some(anchor) => sorted
            .iter()
            .position(|(v, _)| v.precedence(&anchor).is_le())
            .unwrap_or(sorted.len())
            .saturating_sub(NEAREST / 2),
        None => 0,
    };
    sorted.into_iter().skip(start).take(NEAREST).map(|(_, s)| s.clone()).collect()
}

/// Fails unless the bytes load as a chart.
fn check_chart(bytes: &[u8], repository: &str, version: &str) -> Result<()> {
    Chart::from_archive(bytes, repository).map(drop).map_err(|e| FetchError::NotAChart {
        repository: repository.into(),
        version: version.into(),
        detail: e.to_string(),
    })
}

fn read_body(response: Response, limit: u64, ctx: &Ctx) -> Result<Vec<u8>> {
    let url = response.url().to_string();
    let mut bytes = Vec::new();
    response.take(limit + 1).read_to_end(&mut bytes).map_err(|e| unreachable(ctx, &e))?;
    if bytes.len() as u64 > limit {
        return Err(FetchError::BadRepository {
            repository: ctx.repository.into(),
            detail: format!("{url} is larger than {} MiB; refusing it", limit >> 20),
        });
    }
    Ok(bytes)
}

fn unreachable(ctx: &Ctx, error: &(dyn std::error::Error + 'static)) -> FetchError {
    let detail = cause_chain(error);
    let hint = if detail.contains("UnknownIssuer") || detail.contains("invalid peer certificate") {
        "its certificate is not trusted: pass the CA it chains to with the hub's --chart-ca"
    } else {
        "check the URL and that the repository is up; charts fetched before are served from the cache"
    };
    FetchError::Unreachable {
        repository: ctx.repository.into(),
        chart: ctx.chart.into(),
        version: shown(ctx.version).into(),
        detail,
        hint,
    }
}

/// A version as errors show it: an empty one asks for the latest.
fn shown(version: &str) -> &str {
    if version.is_empty() { "(latest)" } else { version }
}

/// `(host, host:port)` of a URL (the port only when the URL names one).
fn host_of(url: &Url) -> (String, String) {
    let host = url.host_str().unwrap_or("").to_string();
    let with_port = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    (host, with_port)
}

fn host_listed(hosts: &[String], url: &Url) -> bool {
    let (host, with_port) = host_of(url);
    hosts.iter().any(|h| *h == host || *h == with_port)
}

/// `sha256:<hex>` of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn json_string(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| FetchError::Cache { path: path.into(), detail: e.to_string() };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(&e))?;
    file.write_all(bytes).map_err(|e| err(&e))?;
    file.as_file().sync_all().map_err(|e| err(&e))?;
    file.persist(path).map_err(|e| err(&e.error))?;
    Ok(())
}

/// An error and its causes, each once, joined by ": " (reqwest's and gix's errors keep the
/// useful part, "connection refused" or a TLS verdict, in their sources).
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Levenshtein distance, to list the charts nearest a misspelt name first.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(config: FetchConfig) -> ChartFetcher {
        let _ = rustls::crypto::ring::default_provider().install_default();
        ChartFetcher::new(config).unwrap()
    }

    fn ctx() -> Ctx<'static> {
        Ctx { repository: "https://charts.example.com", chart: "demo", version: "" }
    }

    fn versions(list: &[&str]) -> Vec<String> {
        list.iter().map(|v| v.to_string()).collect()
    }

    /// A chart archive as `helm package` lays it out: everything under `<name>/`.
    fn archive(name: &str, version: &str) -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
        let files = [
            ("Chart.yaml", format!("apiVersion: v2\nname: {name}\nversion: {version}\n")),
            ("templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".to_string()),
        ];
        for (path, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, format!("{name}/{path}"), text.as_bytes()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn select_takes_the_exact_version_else_the_highest_match() {
        let available = versions(&["1.0.0", "1.2.3", "1.2.10", "1.3.0-rc.1", "2.0.0", "v2.1"]);
        let pick = |want: &str| select(want, &available, &ctx()).unwrap();
        assert_eq!(pick("1.2.3"), "1.2.3");
        assert_eq!(pick("~1.2"), "1.2.10");
        assert_eq!(pick("^1"), "1.2.10", "prereleases only match a prerelease constraint");
        assert_eq!(pick(">=1.0 <2"), "1.2.10");
        assert_eq!(pick(">=1.3.0-0 <2.0.0-0"), "1.3.0-rc.1");
        assert_eq!(pick(""), "v2.1", "empty is the highest stable version");
        assert_eq!(pick("2.1.0"), "v2.1", "an exact version also matches its loose spelling");
        match select("~3.1", &available, &ctx()) {
            Err(FetchError::VersionNotFound { nearest, .. }) => {
                assert_eq!(nearest, versions(&["v2.1", "2.0.0", "1.3.0-rc.1", "1.2.10", "1.2.3", "1.0.0"]))
            }
            other => panic!("{other:?}"),
        }
        match select("not a version", &available, &ctx()) {
            Err(e @ FetchError::BadVersion { .. }) => assert!(e.to_string().contains("'not a version'"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nearest_versions_surround_the_one_asked_for() {
        let available: Vec<String> = (0..20).map(|i| format!("1.{i}.0")).collect();
        assert_eq!(nearest("1.9.5", &available), versions(&["1.12.0", "1.11.0", "1.10.0", "1.9.0", "1.8.0", "1.7.0"]));
        assert_eq!(nearest("~1.0", &available)[3..], versions(&["1.0.0"]));
        assert_eq!(nearest("latest", &available)[0], "1.19.0");
    }

    #[test]
    fn exact_versions_are_told_from_constraints() {
        for exact in ["1.2.3", "v1.2.3", "1.2.3+build.1", "1.2.3_build.1", "1.2.3-rc.1"] {
            assert!(is_exact(exact), "{exact}");
        }
        for constraint in ["", "~1.2", "^1", ">=1.0 <2", "1.2.x", "*", "1.x", "1.2 - 1.4"] {
            assert!(!is_exact(constraint), "{constraint}");
        }
    }

    #[test]
    fn bearer_challenges_parse() {
        let c = BearerChallenge::parse(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:charts/demo:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example.com/token");
        assert_eq!(c.service.as_deref(), Some("registry.example.com"));
        assert_eq!(c.scope.as_deref(), Some("repository:charts/demo:pull"));
        let bare = BearerChallenge::parse("bearer realm=http://127.0.0.1:9/token, service=local").unwrap();
        assert_eq!(
            (bare.realm.as_str(), bare.service.as_deref(), bare.scope),
            ("http://127.0.0.1:9/token", Some("local"), None)
        );
        assert_eq!(BearerChallenge::parse(r#"Basic realm="registry""#), None);
    }

    #[test]
    fn oci_references_split_into_registry_and_path() {
        let r = OciRef::parse("oci://127.0.0.1:5000/charts/demo").unwrap();
        assert_eq!((r.registry.as_str(), r.path.as_str(), r.name()), ("127.0.0.1:5000", "charts/demo", "demo"));
        for bad in
            ["https://x/charts/demo", "oci://registry", "oci://registry/charts/demo:1.0.0", "oci://r/Charts/Demo"]
        {
            let e = OciRef::parse(bad).err().unwrap_or_else(|| panic!("{bad} parsed"));
            assert!(e.to_string().starts_with(bad), "{e}");
        }
    }

    #[test]
    fn credentials_files_take_passwords_or_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.yaml");
        std::fs::write(
            &path,
            "- {host: 'oci://registry.example.com/', username: robot, password: s3cret}\n- {host: charts.example.com:8443, token: t0ken}\n",
        )
        .unwrap();
        let list = Credential::load_file(&path).unwrap();
        assert_eq!(list[0].host, "registry.example.com");
        assert_eq!(list[1].host, "charts.example.com:8443");
        assert_eq!((list[1].username.as_deref(), list[1].password.as_deref()), (None, Some("t0ken")));
        assert!(!format!("{list:?}").contains("s3cret"), "Debug redacts passwords");
        std::fs::write(&path, "- {host: registry.example.com, username: robot}\n").unwrap();
        let e = Credential::load_file(&path).unwrap_err().to_string();
        assert!(e.contains("credentials.yaml") && e.contains("password or a token"), "{e}");
        std::fs::write(&path, "- {host: registry.example.com, user: robot, password: x}\n").unwrap();
        let e = Credential::load_file(&path).unwrap_err().to_string();
        assert!(e.contains("credentials.yaml") && e.contains("user"), "{e}");
    }

    /// A resolution remembered by one fetcher is served by the next one on the same cache
    /// directory without asking the (unreachable) repository; a tarball changed on disk is
    /// noticed, and its error says the cache no longer matches and why fetching again failed.
    #[test]
    fn the_cache_outlives_the_fetcher_and_is_verified_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let config = FetchConfig {
            cache_dir: dir.path().join("charts"),
            plain_http_hosts: vec!["127.0.0.1".into()],
            ..FetchConfig::default()
        };
        let remote = Remote::Repo { url: "http://127.0.0.1:9".into(), name: "demo".into(), version: "~1.2".into() };
        let bytes = archive("demo", "1.2.3");
        let digest = sha256(&bytes);
        {
            let first = fetcher(config.clone());
            first.store(&digest, bytes.clone()).unwrap();
            let kept = first
                .remember(resolution_key(&remote), Resolution { version: "1.2.3".into(), digest: digest.clone() })
                .unwrap();
            assert_eq!(kept.version, "1.2.3");
            let other = Resolution { version: "1.2.4".into(), digest: "sha256:00".into() };
            assert_eq!(
                first.remember(resolution_key(&remote), other).unwrap(),
                kept,
                "a resolution is remembered once"
            );
        }
        let restarted = fetcher(config.clone());
        let fetched = restarted.fetch(&remote).unwrap();
        assert_eq!((fetched.version.as_str(), fetched.digest.as_str()), ("1.2.3", digest.as_str()));
        assert_eq!(&*fetched.archive, &bytes[..]);
        assert_eq!(Chart::from_archive(&fetched.archive, remote.to_string()).unwrap().version(), "1.2.3");

        let cached = dir.path().join("charts").join(format!("{}.tgz", digest.replace(':', "-")));
        std::fs::write(&cached, archive("demo", "6.6.6")).unwrap();
        let e = fetcher(config).fetch(&remote).unwrap_err();
        assert!(
            matches!(&e, FetchError::CorruptCache { refetch, .. } if matches!(**refetch, FetchError::Unreachable { .. })),
            "{e:?}"
        );
        let message = e.to_string();
        assert!(message.contains(&cached.display().to_string()) && message.contains(&digest), "{message}");
    }

    #[test]
    fn plain_http_is_refused_unless_the_host_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = fetcher(FetchConfig { cache_dir: dir.path().into(), ..FetchConfig::default() });
        let remote = Remote::Repo {
            url: "http://charts.internal:8080/stable".into(),
            name: "demo".into(),
            version: "1.0.0".into(),
        };
        let e = fetcher.fetch(&remote).unwrap_err();
        assert!(matches!(e, FetchError::PlainHttp { .. }), "{e:?}");
        assert!(e.to_string().contains("--chart-plain-http") && e.to_string().contains("charts.internal:8080"), "{e}");
    }

    #[test]
    fn edit_distance_orders_names() {
        assert_eq!(edit_distance("nginx", "ngnix"), 2);
        assert_eq!(edit_distance("demo", "demo"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}

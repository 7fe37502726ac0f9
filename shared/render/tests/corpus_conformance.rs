//! Conformance over the public corpus (`../shared/corpus/public-manifests.tar.xz`, beside the
//! workspace): every kustomization in it rendered by `kubectl kustomize DIR` and by
//! [`Renderer`], every Helm chart rendered with its default values by Helm's engine (Helm v4,
//! PyPI helm-python-sdk, through `tests/helm/oracle.py`) and by ours; the outputs compared as
//! YAML documents (parsed, in the order each prints them). Where the peer fails (remote
//! bases, unvendored chart dependencies), we must fail too; where it fetched a remote base
//! over the network, the case is left out (Convoy renders from the repository alone).
//!
//! The peers' outputs are cached by content under `$CARGO_TARGET_TMPDIR/corpus-peers/`: the
//! key hashes the peer's version, the corpus archive (every tree in it, byte for byte) and
//! the case's path, so a warm run only renders with Convoy.
//!
//! `tests/corpus/known-differences.txt` lists the accepted differences, one a line:
//! `kustomize|chart PROJECT/PATH: why`. The test fails on a difference not listed there and
//! on a listed case that no longer differs, so the list stays true.
//!
//! Keys and certificates a chart generates differ by nature (Helm makes new ones at every
//! render; Convoy renders tokens its agents fill): both sides' PEM blocks and tokens, as is or
//! base64-encoded, are compared as one placeholder, and the annotation marking Convoy's tokens
//! is left out.
//!
//! Without the corpus or the peers the test says so and passes vacuously (like the other
//! conformance tests); `CONVOY_CORPUS`, `CONVOY_KUBECTL` and `CONVOY_PYTHON` override where
//! they are found.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use convoy_render::FsSource;
use convoy_render::helm::{Chart, ReleaseOptions, render};
use convoy_render::{RenderError, Renderer, to_yaml};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const RELEASE: &str = "corpus";
const NAMESPACE: &str = "corpus-ns";
/// Longest a peer may take on one kustomization (a remote base on a hanging network).
const PEER_TIMEOUT: Duration = Duration::from_secs(120);

mod peers;
use peers::{helm_oracle, manifest_dir, python, workspace};

fn corpus_archive() -> PathBuf {
    std::env::var_os("CONVOY_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/corpus/public-manifests.tar.xz"))
}

fn kubectl() -> PathBuf {
    if let Some(k) = std::env::var_os("CONVOY_KUBECTL") {
        return PathBuf::from(k);
    }
    workspace().join("e2e/.venv/bin/kubectl")
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("corpus-peers")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kustomize,
    Chart,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Kustomize => "kustomize",
            Kind::Chart => "chart",
        }
    }
}

/// One directory of the corpus to render.
#[derive(Debug, Clone)]
struct Case {
    kind: Kind,
    /// `owner+repo`, the repository root.
    project: String,
    /// The directory, relative to the project.
    dir: PathBuf,
}

impl Case {
    fn id(&self) -> String {
        format!("{} {}/{}", self.kind.label(), self.project, self.dir.display())
    }
}

/// What a peer printed: its output text, or its error.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PeerOutput {
    ok: bool,
    text: String,
}

fn is_kustomization_dir(dir: &Path) -> bool {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"].iter().any(|f| dir.join(f).is_file())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p).expect("metadata");
        if meta.is_dir() {
            out.push(p.clone());
            walk(&p, out);
        }
    }
}

fn find_cases(root: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut projects: Vec<_> =
        std::fs::read_dir(root).expect("corpus root").map(|e| e.expect("entry").path()).collect();
    projects.sort();
    for project in projects {
        let name = project.file_name().unwrap().to_string_lossy().into_owned();
        let mut dirs = vec![project.clone()];
        walk(&project, &mut dirs);
        for d in dirs {
            let rel = d.strip_prefix(&project).unwrap().to_path_buf();
            if is_kustomization_dir(&d) {
                cases.push(Case { kind: Kind::Kustomize, project: name.clone(), dir: rel.clone() });
            }
            if d.join("Chart.yaml").is_file() {
                cases.push(Case { kind: Kind::Chart, project: name.clone(), dir: rel });
            }
        }
    }
    cases
}

/// A hash of the corpus archive: the content of every tree in it.
fn archive_hash(archive: &Path) -> String {
    let bytes = std::fs::read(archive).unwrap_or_else(|e| panic!("cannot read {}: {e}", archive.display()));
    format!("{:x}", Sha256::digest(&bytes))
}

fn cache_key(peer_version: &str, corpus_hash: &str, case: &Case) -> String {
    let mut h = Sha256::new();
    let dir = case.dir.to_string_lossy();
    for part in [peer_version, corpus_hash, case.kind.label(), &case.project, &dir, RELEASE, NAMESPACE] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    format!("{:x}", h.finalize())
}

fn cache_get(key: &str) -> Option<PeerOutput> {
    let text = std::fs::read_to_string(cache_dir().join(format!("{key}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn cache_put(key: &str, out: &PeerOutput) {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).expect("cache dir");
    let tmp = dir.join(format!("{key}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_string(out).expect("JSON")).expect("write cache");
    std::fs::rename(&tmp, dir.join(format!("{key}.json"))).expect("rename cache");
}

fn peer_version(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `kubectl kustomize DIR`, killed after [`PEER_TIMEOUT`].
fn run_kubectl(dir: &Path) -> PeerOutput {
    let mut child = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > PEER_TIMEOUT {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    match status {
        Some(s) if s.success() => PeerOutput { ok: true, text: out },
        Some(_) => PeerOutput { ok: false, text: err },
        None => PeerOutput { ok: false, text: format!("timed out after {PEER_TIMEOUT:?}") },
    }
}

/// Helm's engine over the charts, one Python process for all of them.
fn run_helm(dirs: &[PathBuf]) -> Vec<PeerOutput> {
    if dirs.is_empty() {
        return Vec::new();
    }
    let req: Vec<Value> =
        dirs.iter().map(|d| json!({"chart": d, "values": {}, "name": RELEASE, "namespace": NAMESPACE})).collect();
    helm_oracle(&req)
        .into_iter()
        .map(|a| match a.get("manifest").and_then(Value::as_str) {
            Some(m) => PeerOutput { ok: true, text: m.to_string() },
            None => {
                let err = a.get("install_error").or_else(|| a.get("error")).and_then(Value::as_str).unwrap_or("?");
                PeerOutput { ok: false, text: err.to_string() }
            }
        })
        .collect()
}

/// Parses a YAML stream the way kustomize and Helm's consumers read it (go-yaml v3: only
/// `true`/`false` are booleans, `0755` is octal); empty documents are left out.
fn parse_stream(text: &str) -> Result<Vec<Value>, String> {
    let opts = serde_saphyr::options! { strict_booleans: true, legacy_octal_numbers: true };
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, opts).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The first path where two values differ.
fn first_diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_diff(p, q, &format!("{path}.{k}")),
                (p, q) => Some(format!("{path}.{k}: peer={} ours={}", short(p), short(q))),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_diff(p, q, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: peer={} ours={}", short(Some(a)), short(Some(b)))),
    }
}

fn short(v: Option<&Value>) -> String {
    let s = match v {
        Some(v) => v.to_string(),
        None => "(absent)".into(),
    };
    if s.chars().count() > 160 { format!("{}…", s.chars().take(160).collect::<String>()) } else { s }
}

fn first_line(s: &str) -> String {
    let line = s.lines().find(|l| !l.trim().is_empty() && !l.starts_with("# Warning")).unwrap_or("").trim();
    if line.chars().count() > 300 {
        format!("{}…", line.chars().take(300).collect::<String>())
    } else {
        line.to_string()
    }
}

fn doc_id(d: &Value) -> String {
    format!("{}/{}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"].as_str().unwrap_or("?"))
}

/// Compares the documents; `None` when they are the same. Values that differ between `ours` and
/// `again` (a second render) are random (`randAlphaNum`, `uuidv4`, …) and compared as one
/// placeholder, as is their place in the peer's output.
fn compare(peer: &str, ours: &str, again: &str) -> Option<String> {
    let want = match parse_stream(peer) {
        Ok(d) => d,
        Err(e) => return (peer != ours).then(|| format!("peer output is not YAML ({e}) and ours differs")),
    };
    let got = match parse_stream(ours) {
        Ok(d) => d,
        Err(e) => return Some(format!("our output is not YAML: {e}")),
    };
    let mut want: Vec<Value> = want.into_iter().map(keys_as_placeholders).collect();
    let mut got: Vec<Value> = got.into_iter().map(our_tokens_as_placeholders).map(keys_as_placeholders).collect();
    let again = parse_stream(again).unwrap_or_default();
    for (i, second) in again.into_iter().map(our_tokens_as_placeholders).map(keys_as_placeholders).enumerate() {
        let mut random = Vec::new();
        if let Some(first) = got.get(i) {
            differing_leaves(first, &second, String::new(), &mut random);
        }
        for doc in [want.get_mut(i), got.get_mut(i)].into_iter().flatten() {
            for pointer in &random {
                if let Some(v) = doc.pointer_mut(pointer) {
                    *v = Value::String(GENERATED.into());
                }
            }
        }
    }
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        if w != g {
            return Some(format!(
                "document {i} ({}): {}\n--- peer:\n{}--- ours:\n{}",
                doc_id(w),
                first_diff(w, g, "").unwrap_or_default(),
                excerpt(w),
                excerpt(g)
            ));
        }
    }
    if want.len() != got.len() {
        let ids = |v: &[Value]| v.iter().map(doc_id).collect::<Vec<_>>();
        return Some(format!(
            "document count differs: peer {} ({:?}), ours {} ({:?})",
            want.len(),
            ids(&want[got.len().min(want.len())..]),
            got.len(),
            ids(&got[want.len().min(got.len())..])
        ));
    }
    None
}

const GENERATED: &str = "<generated>";

/// JSON pointers of the scalars that differ between two documents of the same shape.
fn differing_leaves(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                if let Some(w) = y.get(k) {
                    differing_leaves(v, w, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                differing_leaves(v, w, format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(at),
        _ => {}
    }
}

/// The document with every PEM block (as is, or inside base64) a placeholder.
fn keys_as_placeholders(mut doc: Value) -> Value {
    fn pem_blocks(text: &str) -> Option<String> {
        static PEM: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let pem =
            PEM.get_or_init(|| regex::Regex::new(r"-----BEGIN [A-Z ]+-----[\s\S]*?-----END [A-Z ]+-----\n?").unwrap());
        pem.is_match(text).then(|| pem.replace_all(text, GENERATED).into_owned())
    }
    fn walk(v: &mut Value) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        match v {
            Value::String(s) => {
                if let Some(replaced) = pem_blocks(s) {
                    *s = replaced;
                } else if let Some(replaced) =
                    b64.decode(s.as_bytes()).ok().and_then(|d| String::from_utf8(d).ok()).and_then(|t| pem_blocks(&t))
                {
                    *s = b64.encode(replaced);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut doc);
    doc
}

/// Our document with every generated-key token a placeholder, and without the annotation that
/// marks them.
fn our_tokens_as_placeholders(mut doc: Value) -> Value {
    use convoy_model::generated;
    let emptied = doc
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .is_some_and(|a| a.remove(generated::ANNOTATION).is_some() && a.is_empty());
    if emptied && let Some(metadata) = doc["metadata"].as_object_mut() {
        metadata.remove("annotations");
    }
    generated::fill::<()>(&mut doc, &mut |_, _| Ok(GENERATED.to_string())).unwrap_or(false);
    doc
}

fn excerpt(v: &Value) -> String {
    let text = to_yaml(std::slice::from_ref(v));
    let lines: Vec<&str> = text.lines().collect();
    let mut out: String = lines.iter().take(40).map(|l| format!("    {l}\n")).collect();
    if lines.len() > 40 {
        out.push_str(&format!("    … ({} more lines)\n", lines.len() - 40));
    }
    out
}

/// Why Convoy did not render a case.
struct Failure {
    /// The case names a remote base, which Convoy refuses by design (vendor it instead).
    remote: bool,
    message: String,
}

/// What Convoy printed for a case, twice (a chart rendered twice, so that what is random in it
/// is known).
type Printed = (String, String);

/// What Convoy makes of a case: its printed output, or why not.
fn ours(root: &Path, case: &Case) -> Result<Printed, Failure> {
    let project = root.join(&case.project);
    let fail = |e: &dyn std::fmt::Display| Failure { remote: false, message: e.to_string() };
    match case.kind {
        Kind::Kustomize => Renderer::new(&project)
            .render(&case.dir)
            .map(|objs| to_yaml(&objs))
            .map(|text| (text.clone(), text))
            .map_err(|e| Failure { remote: matches!(e, RenderError::Remote { .. }), message: e.to_string() }),
        Kind::Chart => {
            let dir = project.join(&case.dir);
            let source = FsSource::new(dir.parent().unwrap());
            let chart = Chart::load(&source, Path::new(dir.file_name().unwrap())).map_err(|e| fail(&e))?;
            let once = || render(&chart, &json!({}), &ReleaseOptions::new(RELEASE, NAMESPACE)).map(|r| r.manifest_text);
            once().and_then(|first| Ok((first, once()?))).map_err(|e| fail(&e))
        }
    }
}

/// Runs `f` over `items` on `threads` threads, keeping the order.
fn parallel<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let r = f(&items[i]);
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(|r| r.expect("every item ran")).collect()
}

fn known_differences() -> BTreeMap<String, String> {
    let path = manifest_dir().join("tests/corpus/known-differences.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, why) =
            line.split_once(": ").unwrap_or_else(|| panic!("{}: `ID: why` expected: {line}", path.display()));
        assert!(!why.trim().is_empty(), "{}: {id} says no why", path.display());
        out.insert(id.trim().to_string(), why.trim().to_string());
    }
    out
}

#[test]
fn corpus_renders_like_kubectl_and_helm() {
    let started = Instant::now();
    let archive = corpus_archive();
    if !archive.exists() {
        eprintln!("SKIPPED: no corpus at {} (set CONVOY_CORPUS)", archive.display());
        return;
    }
    let Some(kubectl_version) = peer_version(Command::new(kubectl()).args(["version", "--client"])) else {
        eprintln!("SKIPPED: no kubectl at {} (run e2e/peers.sh or set CONVOY_KUBECTL)", kubectl().display());
        return;
    };
    let Some(helm_version) = peer_version(
        Command::new(python())
            .args(["-c", "import importlib.metadata as m; print('helm-python-sdk', m.version('helm-python-sdk'))"]),
    ) else {
        eprintln!("SKIPPED: no Helm engine at {} (run e2e/peers.sh or set CONVOY_PYTHON)", python().display());
        return;
    };

    let tmp = tempfile::tempdir().expect("tempdir");
    let status = Command::new("tar").arg("-xJf").arg(&archive).arg("-C").arg(tmp.path()).status().expect("tar runs");
    assert!(status.success(), "cannot extract {}", archive.display());
    // Absolute and canonical, as kubectl sees it (the temp dir may sit behind a symlink).
    let root = tmp.path().canonicalize().expect("canonical temp dir");
    let cases = find_cases(&root);
    let corpus_hash = archive_hash(&archive);
    let keys: Vec<String> = cases
        .iter()
        .map(|c| {
            let version = match c.kind {
                Kind::Kustomize => &kubectl_version,
                Kind::Chart => &helm_version,
            };
            cache_key(version, &corpus_hash, c)
        })
        .collect();

    // The peers, for what the cache does not hold.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) * 2;
    let mut peer: Vec<Option<PeerOutput>> = keys.iter().map(|k| cache_get(k)).collect();
    let cached = peer.iter().filter(|p| p.is_some()).count();
    let missing_k: Vec<usize> =
        (0..cases.len()).filter(|&i| peer[i].is_none() && cases[i].kind == Kind::Kustomize).collect();
    let missing_c: Vec<usize> =
        (0..cases.len()).filter(|&i| peer[i].is_none() && cases[i].kind == Kind::Chart).collect();
    let helm_dirs: Vec<PathBuf> = missing_c.iter().map(|&i| root.join(&cases[i].project).join(&cases[i].dir)).collect();
    let (k_out, c_out) = std::thread::scope(|s| {
        let helm = s.spawn(|| run_helm(&helm_dirs));
        let k = parallel(&missing_k, threads, |&i| run_kubectl(&root.join(&cases[i].project).join(&cases[i].dir)));
        (k, helm.join().expect("helm thread"))
    });
    for (i, out) in missing_k.iter().zip(k_out).chain(missing_c.iter().zip(c_out)) {
        cache_put(&keys[*i], &out);
        peer[*i] = Some(out);
    }
    let peer: Vec<PeerOutput> = peer.into_iter().map(|p| p.expect("peer ran")).collect();
    let peers_done = started.elapsed();

    // Ours.
    let ours: Vec<(Result<Printed, Failure>, Duration)> = parallel(&cases, threads, |c| {
        let start = Instant::now();
        (ours(&root, c), start.elapsed())
    });
    let mut slowest: Vec<(Duration, String)> = cases.iter().zip(&ours).map(|(c, (_, t))| (*t, c.id())).collect();
    slowest.sort();
    let ours: Vec<Result<Printed, Failure>> = ours.into_iter().map(|(r, _)| r).collect();

    let known = known_differences();
    let mut differing: BTreeMap<String, String> = BTreeMap::new();
    let mut counts: BTreeMap<Kind, (usize, usize, usize)> = BTreeMap::new(); // (cases, peer renders, identical)
    for ((case, p), o) in cases.iter().zip(&peer).zip(&ours) {
        let c = counts.entry(case.kind).or_default();
        c.0 += 1;
        let problem = match (p.ok, o) {
            (true, Ok((text, again))) => {
                c.1 += 1;
                let d = compare(&p.text, text, again);
                if d.is_none() {
                    c.2 += 1;
                }
                d
            }
            (true, Err(e)) if e.remote => {
                // Only where the peer reached the network: Convoy renders from the repository
                // alone, by design.
                println!("remote: {} needs the network; the peer fetched it, Convoy refuses remote bases", case.id());
                None
            }
            (true, Err(e)) => {
                c.1 += 1;
                Some(format!("the peer renders, we fail: {}", first_line(&e.message)))
            }
            (false, Ok(_)) => Some(format!("the peer fails ({}), we render", first_line(&p.text))),
            (false, Err(_)) => None,
        };
        if let Some(problem) = problem {
            differing.insert(case.id(), problem);
        }
    }

    let pct = |a: usize, b: usize| if b == 0 { 100.0 } else { a as f64 * 100.0 / b as f64 };
    let (kc, kr, ki) = counts.get(&Kind::Kustomize).copied().unwrap_or_default();
    let (cc, cr, ci) = counts.get(&Kind::Chart).copied().unwrap_or_default();
    println!(
        "corpus: {kc} kustomizations, {ki} identical of {kr} rendered by kubectl ({:.1}%); {cc} charts, {ci} identical of {cr} rendered by Helm ({:.1}%)",
        pct(ki, kr),
        pct(ci, cr)
    );
    println!(
        "corpus: {cached} of {} peer outputs from the cache; peers done after {:.1}s, all done after {:.1}s",
        cases.len(),
        peers_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let slow: Vec<String> =
        slowest.iter().rev().take(3).map(|(t, id)| format!("{id} {:.1}s", t.as_secs_f64())).collect();
    println!("corpus: slowest Convoy renders: {}", slow.join(", "));
    let mut unexpected = Vec::new();
    for (id, problem) in &differing {
        match known.get(id) {
            Some(why) => println!("known difference: {id}: {why}\n  {}", first_line(problem)),
            None => {
                println!("DIFFERS: {id}: {problem}\n");
                unexpected.push(id.clone());
            }
        }
    }
    let stale: Vec<&String> = known.keys().filter(|id| !differing.contains_key(*id)).collect();
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "{} cases differ from the peers and are not in tests/corpus/known-differences.txt: {unexpected:#?}\n\
         listed there but no longer differing (remove them): {stale:#?}",
        unexpected.len()
    );
}

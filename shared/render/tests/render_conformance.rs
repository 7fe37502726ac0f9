//! Conformance of the render engine against the real `kubectl kustomize`: every case under
//! `tests/kustomize/cases/` is rendered by both and the documents compared in order.
//!
//! Case layout: `cases/<NN-name>/` is the repository root for the case; the entry
//! directory is `<case>/overlay` when it exists, else `<case>` itself. A case holding
//! `expect-error.txt` must fail in both; our message must contain that file's text (the
//! path of the file at fault). Expected output is never stored: kubectl is the oracle.
//! Documents are compared as parsed values first; then [`to_yaml`]'s text must equal
//! kubectl's byte for byte.
//!
//! kubectl comes from `CONVOY_KUBECTL`, else `e2e/.venv/bin/kubectl` (installed by
//! `bash e2e/test.sh`), else `kubectl` on PATH; it must embed kustomize v5.

use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_render::{Renderer, to_yaml};
use serde_json::Value;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kustomize/cases")
}

fn kubectl() -> PathBuf {
    if let Some(k) = std::env::var_os("CONVOY_KUBECTL") {
        return PathBuf::from(k);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e/.venv/bin/kubectl");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("kubectl")
}

fn check_kubectl(k: &Path) {
    let out = Command::new(k).args(["version", "--client"]).output();
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => panic!(
            "kubectl not found at {} ({e}); run `bash e2e/test.sh` to install the real kubectl, or set CONVOY_KUBECTL",
            k.display()
        ),
    };
    assert!(
        text.contains("Kustomize Version: v5"),
        "{} does not embed kustomize v5 (got: {text}); run `bash e2e/test.sh` to install the real kubectl, or set CONVOY_KUBECTL",
        k.display()
    );
}

/// Parses a YAML stream the way kustomize reads resources (go-yaml v3: only `true`/`false`
/// are booleans, `0755` is octal).
fn parse_stream(text: &str) -> Vec<Value> {
    let opts = serde_saphyr::options! { strict_booleans: true, legacy_octal_numbers: true };
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, opts)
        .unwrap_or_else(|e| panic!("cannot parse YAML stream: {e}\n{text}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The first path where two values differ, for a readable failure.
fn first_diff(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_diff(p, q, &format!("{path}.{k}")),
                (p, q) => Some(format!("{path}.{k}: kubectl={p:?} ours={q:?}")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_diff(p, q, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: kubectl={a} ours={b}")),
    }
}

fn run_case(name: &str) {
    let case = cases_dir().join(name);
    assert!(case.is_dir(), "case directory {} missing", case.display());
    let entry_rel = if case.join("overlay").is_dir() { PathBuf::from("overlay") } else { PathBuf::from("") };
    let entry = case.join(&entry_rel);
    let k = kubectl();
    check_kubectl(&k);
    let out = Command::new(&k)
        .arg("kustomize")
        .arg(&entry)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", k.display()));
    let ours = Renderer::new(&case).render(&entry_rel);

    let expect_error = case.join("expect-error.txt");
    if expect_error.exists() {
        let needle = std::fs::read_to_string(&expect_error).expect("read expect-error.txt");
        let needle = needle.trim();
        assert!(
            !out.status.success(),
            "[{name}] kubectl succeeded but the case expects an error:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        match ours {
            Ok(objs) => panic!(
                "[{name}] kubectl failed ({}) but we rendered:\n{}",
                String::from_utf8_lossy(&out.stderr),
                to_yaml(&objs)
            ),
            Err(e) => assert!(
                e.to_string().contains(needle),
                "[{name}] our error does not name '{needle}': {e}\n(kubectl said: {})",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        return;
    }

    assert!(out.status.success(), "[{name}] kubectl kustomize failed: {}", String::from_utf8_lossy(&out.stderr));
    let want = parse_stream(&String::from_utf8_lossy(&out.stdout));
    let got = ours.unwrap_or_else(|e| panic!("[{name}] our render failed: {e}"));
    // Compare what we print, so the printer is checked too.
    let printed = to_yaml(&got);
    let got_printed = parse_stream(&printed);
    assert_eq!(got, got_printed, "[{name}] to_yaml does not round-trip:\n{printed}");
    let mut problems = Vec::new();
    if want.len() != got.len() {
        let ids = |v: &[Value]| -> Vec<String> {
            v.iter().map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"])).collect()
        };
        problems.push(format!(
            "document count differs: kubectl {} {:?}, ours {} {:?}",
            want.len(),
            ids(&want),
            got.len(),
            ids(&got)
        ));
    }
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        if w != g {
            problems.push(format!(
                "document {i}: {}\n--- kubectl:\n{}\n--- ours:\n{}",
                first_diff(w, g, "").unwrap_or_default(),
                serde_json::to_string_pretty(w).unwrap_or_default(),
                serde_json::to_string_pretty(g).unwrap_or_default()
            ));
        }
    }
    assert!(problems.is_empty(), "[{name}] {}", problems.join("\n"));
    // Same objects; the printer should also produce kubectl's exact bytes.
    let theirs = String::from_utf8_lossy(&out.stdout);
    if printed != theirs {
        let line = printed
            .lines()
            .zip(theirs.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(printed.lines().count().min(theirs.lines().count()));
        panic!(
            "[{name}] same objects but to_yaml differs from kubectl's text at line {}:\n kubectl: {:?}\n ours:    {:?}",
            line + 1,
            theirs.lines().nth(line),
            printed.lines().nth(line)
        );
    }
}

macro_rules! cases {
    ($($test:ident => $dir:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run_case($dir);
            }
        )*

        #[test]
        fn every_case_directory_is_listed() {
            let listed = [$($dir),*];
            let mut missing = Vec::new();
            for entry in std::fs::read_dir(cases_dir()).expect("read cases dir") {
                let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
                if !listed.contains(&name.as_str()) {
                    missing.push(name);
                }
            }
            assert!(missing.is_empty(), "cases not listed in render_conformance.rs: {missing:?}");
            assert!(listed.len() >= 60, "the suite must hold at least 60 cases");
        }
    };
}

include!("kustomize/cases.rs");

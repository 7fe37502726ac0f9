//! `convoy schema` against the fleet files users write, checked by an independent validator
//! (Python's `jsonschema`, draft 2020-12, from the venv the test script fills): the sandbox's
//! example fleet validates and names its schemas for editors; a typo'd key is refused by the
//! schema and, with the file and key named, by the fleet model the hub and `convoy render` use.

use std::path::Path;
use std::process::Command;

use convoy_e2e::fleet_repo::{FleetRepo, SCHEMA_DIR, example_fleet};
use convoy_e2e::harness::workspace_binary;

/// The venv's python (`CONVOY_PYTHON`, set by e2e/peers.sh), else this workspace's e2e/.venv.
fn python() -> std::path::PathBuf {
    std::env::var_os("CONVOY_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Validates each (YAML file, schema file) pair; returns the errors the validator printed, one
/// line per invalid file (empty: every file is valid).
fn validate(pairs: &[(&Path, &Path)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut jobs = Vec::new();
    for (i, (file, schema)) in pairs.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap();
        let document: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let instance = dir.path().join(format!("{i}.json"));
        std::fs::write(&instance, document.to_string()).unwrap();
        jobs.push(serde_json::json!([
            file.display().to_string(),
            schema.display().to_string(),
            instance.display().to_string()
        ]));
    }
    let script = r#"
import json, sys, jsonschema
for name, schema, instance in json.load(sys.stdin):
    validator = jsonschema.Draft202012Validator(json.load(open(schema)))
    errors = [e.message for e in validator.iter_errors(json.load(open(instance)))]
    if errors:
        print(name + ": " + "; ".join(errors))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(serde_json::Value::Array(jobs).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the validator failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_sandbox_fleet_validates_against_convoy_schema_and_a_typo_is_refused_by_both() {
    let dir = tempfile::tempdir().unwrap();
    let repo = FleetRepo::init(&dir.path().join("repo"));
    example_fleet(&repo, 1, &[]);

    // `convoy schema --dir` writes what the example repository carries.
    let written = dir.path().join("schemas");
    let out = Command::new(workspace_binary("convoy")).args(["schema", "--dir"]).arg(&written).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["fleet", "cluster", "app"] {
        let ours = std::fs::read_to_string(written.join(format!("{name}.json"))).unwrap();
        let carried = std::fs::read_to_string(repo.dir.join(format!("{SCHEMA_DIR}/{name}.json"))).unwrap();
        assert_eq!(ours, carried, "{name}");
    }

    // Every fleet file names its schema for editors, and validates against it.
    let mut files = vec![repo.dir.join("convoy.yaml")];
    for sub in ["clusters", "apps"] {
        for entry in std::fs::read_dir(repo.dir.join(sub)).unwrap().flatten() {
            let path = entry.path();
            files.push(if sub == "apps" { path.join("app.yaml") } else { path });
        }
    }
    assert!(files.len() >= 9, "{files:?}");
    let mut pairs = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let schema =
            first.strip_prefix("# yaml-language-server: $schema=").unwrap_or_else(|| panic!("{file:?}: {first}"));
        let schema = file.parent().unwrap().join(schema);
        assert!(schema.exists(), "{file:?} names {schema:?}");
        pairs.push((file.clone(), schema));
    }
    let refs: Vec<(&Path, &Path)> = pairs.iter().map(|(f, s)| (f.as_path(), s.as_path())).collect();
    assert_eq!(validate(&refs), "", "the example fleet is valid");

    // A typo'd key: the schema refuses it, and so does the fleet model, naming file and key.
    let app = repo.dir.join("apps/web/app.yaml");
    let text = std::fs::read_to_string(&app).unwrap().replace("  namespace: web", "  namespce: web");
    std::fs::write(&app, text).unwrap();
    let schema = repo.dir.join(format!("{SCHEMA_DIR}/app.json"));
    let refused = validate(&[(&app, &schema)]);
    assert!(refused.contains("namespce"), "{refused}");
    let out = Command::new(workspace_binary("convoy"))
        .args(["render", "--app", "web", "--cluster", "dev-1", "--root"])
        .arg(&repo.dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("apps/web/app.yaml") && stderr.contains("namespce"), "{stderr}");
}

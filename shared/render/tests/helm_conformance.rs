//! Conformance of convoy's Helm engine with Helm's own (Helm v4 via PyPI helm-python-sdk):
//! every chart under tests/helm/charts (and the project's charts/), rendered with each of
//! its values sets (tests/helm/values/<chart>/*.yaml, plus no values at all), must give the
//! same output, template for template and byte for byte; where Helm fails, we must fail too.
//!
//! Helm's engine runs in one Python process (`CONVOY_PYTHON`, default
//! `<workspace>/e2e/.venv/bin/python`); without it the test says so and passes vacuously.

use std::path::{Path, PathBuf};
use std::time::Instant;

use convoy_render::FsSource;
use convoy_render::helm::{Chart, ReleaseOptions, render, render_files};
use serde_json::{Value, json};

mod peers;
use peers::{helm_oracle as ask_helm, manifest_dir, python, workspace};

struct Case {
    chart: String,
    dir: PathBuf,
    values_name: String,
    values: Value,
}

fn charts() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let root = manifest_dir().join("tests/helm/charts");
    let mut names: Vec<_> = std::fs::read_dir(&root).expect("charts dir").map(|e| e.expect("entry").path()).collect();
    names.sort();
    for p in names {
        if p.join("Chart.yaml").exists() {
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), p));
        }
    }
    for name in ["convoy-agent", "convoy-hub"] {
        out.push((name.to_string(), workspace().join("charts").join(name)));
    }
    out
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (chart, dir) in charts() {
        out.push(Case { chart: chart.clone(), dir: dir.clone(), values_name: "(none)".into(), values: json!({}) });
        let vdir = manifest_dir().join("tests/helm/values").join(&chart);
        if let Ok(entries) = std::fs::read_dir(&vdir) {
            let mut files: Vec<_> = entries.map(|e| e.expect("entry").path()).collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).expect("values file");
                let values = convoy_render::helm::yaml_read::parse_yaml(&text).expect("values YAML");
                out.push(Case {
                    chart: chart.clone(),
                    dir: dir.clone(),
                    values_name: f.file_name().unwrap().to_string_lossy().into_owned(),
                    values,
                });
            }
        }
    }
    out
}

fn helm_oracle(cases: &[Case]) -> Option<Vec<Value>> {
    let py = python();
    if !py.exists() {
        return None;
    }
    let req: Vec<Value> = cases
        .iter()
        .map(|c| json!({"chart": c.dir, "values": c.values, "name": "rel-name", "namespace": "ns-x"}))
        .collect();
    Some(ask_helm(&req))
}

/// Cases with at least one failure (a case can fail in several templates).
fn failing_cases(failures: &[String]) -> usize {
    let labels: std::collections::BTreeSet<&str> = failures.iter().filter_map(|f| f.split(": ").next()).collect();
    labels.len()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn charts_render_exactly_like_helm() {
    let cases = cases();
    let Some(expected) = helm_oracle(&cases) else {
        eprintln!(
            "SKIPPED: no Helm oracle at {} (set CONVOY_PYTHON to a python with helm-python-sdk)",
            python().display()
        );
        return;
    };
    let mut failures = Vec::new();
    let mut both_fail = Vec::new();
    let mut same_error = 0;
    let (mut ours_ms, mut helm_ms) = (Vec::new(), Vec::new());
    let chart_count = charts().len();
    for (case, want) in cases.iter().zip(expected.iter()) {
        let label = format!("{} [{}]", case.chart, case.values_name);
        let source = FsSource::new(case.dir.parent().unwrap());
        let name = case.dir.file_name().unwrap();
        let opts = ReleaseOptions::new("rel-name", "ns-x");
        let loaded = Chart::load(&source, Path::new(name));
        // Time the render alone (the chart loaded once), like the oracle's figure; the
        // median of a few renders, as the hub renders one chart for many clusters.
        let mut times = Vec::new();
        let got = loaded.and_then(|c| {
            let mut last = render_files(&c, &case.values, &opts);
            for _ in 0..5 {
                let start = Instant::now();
                last = render_files(&c, &case.values, &opts);
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            last
        });
        let elapsed = median(times);
        match (got, want["ok"].as_bool() == Some(true)) {
            (Ok(files), true) => {
                ours_ms.push(elapsed);
                helm_ms.push(want["ms"].as_f64().unwrap_or(0.0));
                let want_files = want["files"].as_object().unwrap();
                let got_keys: Vec<&String> = files.keys().collect();
                let want_keys: Vec<&String> = want_files.keys().collect();
                if got_keys != want_keys {
                    failures.push(format!("{label}: templates differ: ours {got_keys:?}, helm {want_keys:?}"));
                    continue;
                }
                for (k, text) in &files {
                    let w = want_files[k].as_str().unwrap_or("");
                    if text != w {
                        failures.push(format!("{label}: {k} differs\n--- helm\n{w}\n--- ours\n{text}"));
                    }
                }
                // The release: manifests split, sorted and printed like Helm's install.
                let chart = Chart::load(&source, Path::new(name)).expect("loaded before");
                match (render(&chart, &case.values, &opts), want.get("manifest").and_then(Value::as_str)) {
                    (Ok(r), Some(m)) => {
                        if r.manifest_text != m {
                            failures.push(format!(
                                "{label}: release manifest differs\n--- helm\n{m}\n--- ours\n{}",
                                r.manifest_text
                            ));
                        }
                    }
                    (Err(_), None) => {}
                    (Ok(_), None) => failures
                        .push(format!("{label}: helm's install fails ({}) but ours renders", want["install_error"])),
                    (Err(e), Some(_)) => failures.push(format!("{label}: our release fails ({e}) but helm's installs")),
                }
            }
            (Err(e), false) => {
                let helm_err = want["error"].as_str().unwrap_or("");
                let helm_err = helm_err.split_once(": ").map(|(_, m)| m).unwrap_or(helm_err).trim_end();
                let ours = e.to_string();
                if ours.trim_end() == helm_err {
                    same_error += 1;
                } else {
                    println!("error text differs for {label}:\n  helm: {helm_err:?}\n  ours: {ours:?}");
                }
                both_fail.push(label);
            }
            (Ok(_), false) => failures.push(format!("{label}: helm fails ({}) but we rendered", want["error"])),
            (Err(e), true) => failures.push(format!("{label}: we fail ({e}) but helm rendered")),
        }
    }
    println!("failing in both: {}; with the same error text: {same_error}", both_fail.join(", "));
    println!(
        "helm conformance: {} charts, {} cases ({} rendering, {} failing in both), {} passed; median render {:.3} ms (ours) vs {:.3} ms (Helm's engine)",
        chart_count,
        cases.len(),
        cases.len() - both_fail.len(),
        both_fail.len(),
        cases.len() - failing_cases(&failures),
        median(ours_ms),
        median(helm_ms)
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Helm:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

//! The README's quickstart, run as written: the console block after the
//! `<!-- quickstart: run by e2e/tests/readme.rs -->` marker is split into its commands (`$ `
//! lines, with their `\` continuations) and what each prints; every command runs in one shell
//! state (its directory and exports carry over, as in a terminal) against a fresh
//! `convoy-sandbox`, and its stdout must read as the README shows it once commits, times and
//! column widths are set aside. A read-only `convoy` command is asked again until it does (a
//! person re-runs `convoy envs` while a push is being applied); every other command runs once.
//! `cargo` is a no-op there: the test run built every binary already, and `DIR/env.sh` puts
//! them on PATH.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use convoy_e2e::harness::{Process, workspace_binary};

const MARKER: &str = "<!-- quickstart: run by e2e/tests/readme.rs -->";

/// One `$ ` command of the block and the lines the README shows it printing.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The steps of the quickstart block in `readme`.
fn quickstart(readme: &str) -> Vec<Step> {
    let block = readme.split(MARKER).nth(1).expect("the README marks its quickstart block");
    let block = block.split("```console\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a console block");
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in block.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step { command: command.to_string(), expected: Vec::new() });
            continued = command.ends_with('\\');
        } else if continued {
            let step = steps.last_mut().expect("a continuation follows a command");
            step.command = format!("{}\n{line}", step.command);
            continued = line.ends_with('\\');
        } else {
            steps.last_mut().expect("output follows a command").expected.push(line.to_string());
        }
    }
    steps
}

/// A line with what changes from run to run set aside: commit and digest ids, times, ages,
/// column widths.
fn normalized(line: &str) -> String {
    let id = regex::Regex::new(r"\b[0-9a-f]{8}\b").unwrap();
    let time = regex::Regex::new(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ").unwrap();
    let ago = regex::Regex::new(r"\b\d+[smhd] ago\b").unwrap();
    let line = time.replace_all(line, "<time>");
    let line = ago.replace_all(&line, "<ago>");
    let line = id.replace_all(&line, "<id>");
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn normalized_lines(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| normalized(l)).filter(|l| !l.is_empty()).collect()
}

/// Runs `command` in the shell state kept in `state` (its directory and exports), then saves
/// the state back. Returns (success, stdout, stderr).
fn run(state: &Path, command: &str) -> (bool, String, String) {
    let script = format!(
        "cd \"$(cat '{dir}/cwd')\"\nsource '{dir}/exports' 2>/dev/null\ncargo() {{ :; }}\n{command}\nstatus=$?\nexport -p > '{dir}/exports'\npwd > '{dir}/cwd'\nexit $status\n",
        dir = state.display()
    );
    let out = Command::new("bash").arg("-c").arg(script).output().expect("run bash");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A `convoy` command that only reads: asked again until its answer reads as the README's.
fn read_only(command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.first() == Some(&"convoy") && words.get(1).is_some_and(|w| *w != "promote")
}

#[test]
fn the_readme_quickstart_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let steps = quickstart(&readme);
    assert!(steps.len() >= 10 && steps.iter().any(|s| s.command.starts_with("convoy promote ")), "{steps:#?}");

    let dir = tempfile::tempdir().unwrap();
    let sbx = dir.path().join("sbx");
    let mut sandbox = Command::new(workspace_binary("convoy-sandbox"));
    sandbox.arg("--dir").arg(&sbx).args(["--listen", "127.0.0.1:0", "--status-seconds", "0", "--poll-seconds", "3600"]);
    let sandbox = Process::spawn(sandbox);
    sandbox.wait_for_line("Convoy sandbox ready");

    let state = dir.path().join("shell");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("cwd"), dir.path().display().to_string()).unwrap();
    // The peers the test script installed (kubectl) first on PATH, as `source e2e/peers.sh` does.
    let kubectl_dir = std::env::var("CONVOY_KUBECTL").ok().and_then(|k| Some(Path::new(&k).parent()?.to_path_buf()));
    let path = std::env::var("PATH").unwrap_or_default();
    let path = kubectl_dir.map_or(path.clone(), |d| format!("{}:{path}", d.display()));
    std::fs::write(state.join("exports"), format!("export PATH='{path}'\nunset CONVOY_CONFIG\n")).unwrap();

    for step in &steps {
        let command = step.command.replace("/tmp/sbx", &sbx.display().to_string());
        let expected = normalized_lines(&step.expected);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (ok, stdout, stderr) = run(&state, &command);
            let printed = normalized_lines(&stdout.lines().map(str::to_string).collect::<Vec<_>>());
            if ok && printed == expected {
                break;
            }
            assert!(
                read_only(&step.command) && Instant::now() < deadline,
                "README quickstart: `{}` {}\nREADME shows:\n{}\nit printed:\n{stdout}{stderr}",
                step.command,
                if ok { "printed otherwise" } else { "failed" },
                step.expected.join("\n"),
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn the_quickstart_block_parses_into_commands_and_their_output() {
    let readme = format!(
        "intro\n{MARKER}\n```console\n$ a --x \\\n    --y\nout 1\n$ b\n$ c\nout 2\nout 3\n```\n```console\n$ not this\n```\n"
    );
    let steps = quickstart(&readme);
    let shown: Vec<(&str, Vec<&str>)> =
        steps.iter().map(|s| (s.command.as_str(), s.expected.iter().map(String::as_str).collect())).collect();
    assert_eq!(
        shown,
        [("a --x \\\n    --y", vec!["out 1"]), ("b", vec![]), ("c", vec!["out 2", "out 3"])],
        "{steps:#?}"
    );
    assert_eq!(normalized("dev-1   dev   3c2491fb   12s ago   2026-11-22 03:57:47Z"), "dev-1 dev <id> <ago> <time>");
    assert!(read_only("convoy envs") && read_only("convoy promote-check dev stage"));
    assert!(!read_only("convoy promote dev stage") && !read_only("git push"));
}

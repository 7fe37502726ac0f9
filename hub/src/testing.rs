//! Building blocks for hub tests and benchmarks, behind the `testing` feature (the binary is
//! built without it): a test assignment and a throwaway PostgreSQL server in a temporary
//! directory, as the store tests, the replica scenarios and `bench_replicas` need.
//! `e2e/peers.sh` installs Debian's `postgresql` when it is missing.

use std::net::TcpListener;

use convoy_shared::model::{AppAssignment, Assignment};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A one-app assignment for `cluster` in `prod` whose revision is `greeting`, and whose one
/// ConfigMap carries it (so two greetings make two digests).
pub fn assignment(cluster: &str, greeting: &str) -> Assignment {
    let app = AppAssignment {
        name: "web".into(),
        policy: Default::default(),
        depends_on: vec![],
        objects: vec![serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"g": greeting}})]
            .into(),
        render_error: None,
        ignore_differences: Vec::new(),
        health_rules: Vec::new(),
    };
    Assignment::new(cluster, "prod", greeting, vec![app], false)
}

/// A PostgreSQL server of its own (initdb in a temporary directory, a free port on 127.0.0.1),
/// stopped when dropped. Run as the `postgres` user when the tests run as root.
#[derive(Debug)]
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    databases: std::sync::atomic::AtomicUsize,
}

impl TestPostgres {
    /// Initializes and starts a server; panics with what to do when PostgreSQL is missing.
    pub fn start() -> Self {
        let bin = binaries();
        let dir = tempfile::Builder::new().prefix("convoy-pg").tempdir().expect("temp dir for PostgreSQL");
        if running_as_root() {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()), "chown");
        }
        let data = dir.path().join("data");
        run(
            as_postgres(&bin.join("initdb"))
                .args(["--auth=trust", "--username=postgres", "--no-sync", "--encoding=UTF8", "-D"])
                .arg(&data),
            "initdb",
        );
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=200",
            dir.path().display()
        );
        run(
            as_postgres(&bin.join("pg_ctl"))
                .args(["-w", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .args(["-o", &options, "start"]),
            "pg_ctl start",
        );
        TestPostgres { dir, bin, port, databases: Default::default() }
    }

    /// A new, empty database on this server; its URL.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("convoy{n}");
        run(
            as_postgres(&self.bin.join("createdb")).args(["-h", "127.0.0.1", "-p", &self.port.to_string(), &name]),
            "createdb",
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `statement` in the database at `url` (as [`TestPostgres::database`] gave it), as an
    /// operator at a `psql` prompt would; panics with the server's answer when it fails.
    pub fn sql(&self, url: &str, statement: &str) {
        run(as_postgres(&self.bin.join("psql")).args(["-v", "ON_ERROR_STOP=1", "-d", url, "-c", statement]), "psql");
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(&self.bin.join("pg_ctl")).args(["-m", "immediate", "-D"]).arg(&data).arg("stop").output();
    }
}

/// The directory of the newest installed PostgreSQL's server binaries.
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server in /usr/lib/postgresql/*/bin: run the tests through e2e/test.sh (e2e/peers.sh installs Debian's postgresql)"
        ),
    }
}

fn running_as_root() -> bool {
    std::env::var("USER").is_ok_and(|user| user == "root")
        || Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `program`, run as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what} cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

//! The agent's container image as a release job ships it and a node runs it: `images/build.sh`
//! builds it (from this test profile's binary), it is pushed to a local registry and pulled back
//! by digest into fresh storage, and its root filesystem — mounted read-only, run with `chroot`
//! as the image's user — registers with a hub with a bootstrap token and reconciles a kubesim
//! cluster. Needs root (buildah's vfs storage, mount namespaces, chroot) and buildah and
//! docker-registry (e2e/peers.sh installs both).

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use convoy_agent::testing::namespace;
use convoy_e2e::chart_sources::OciRegistry;
use convoy_e2e::fleet_repo::{create_standard_namespaces, standard_fleet};
use convoy_e2e::harness::{InProcessHub, Process, TestCa, eventually, workspace_binary};
use convoy_shared::identity::Role;
use convoy_shared::proto::CreateTokenRequest;
use kubesim::SimFleet;
use serde_json::Value;

/// The user every Convoy image runs as (the charts' `runAsUser`/`runAsGroup`).
const IMAGE_UID: u32 = 65532;
/// The agent image's size goal for a release build, in bytes.
const AGENT_IMAGE_GOAL: u64 = 25_000_000;

/// Runs `command`, which must succeed; returns its stdout.
fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// buildah on vfs storage kept under `root` (one per "machine": the builder, the node).
fn buildah(root: &Path) -> Command {
    let mut command = Command::new("buildah");
    command.args(["--storage-driver", "vfs", "--root"]).arg(root).arg("--runroot").arg(root.join("run"));
    command
}

/// Every regular file and symlink under `root`, as absolute paths inside it, with its metadata.
fn files(root: &Path) -> Vec<(String, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            let inside = format!("/{}", entry.path().strip_prefix(root).unwrap().display());
            if meta.is_dir() {
                todo.push(entry.path());
            }
            found.push((inside, meta));
        }
    }
    found
}

/// The image's runtime config from `buildah inspect` (User, Entrypoint, Labels, Volumes…).
fn image_config(storage: &Path, image: &str) -> Value {
    let inspect: Value =
        serde_json::from_str(&run(buildah(storage).args(["inspect", "--type", "image", image]))).unwrap();
    inspect["OCIv1"]["config"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_image_pulled_by_digest_runs_read_only_as_its_user_and_reconciles() {
    assert_eq!(run(Command::new("id").arg("-u")), "0", "the image test needs root: buildah (vfs), mount and chroot");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let work = tempfile::tempdir().unwrap();
    let builder = work.path().join("builder");
    let agent = workspace_binary("convoy-agent");

    // Build with the release script, from this profile's binary (CI builds no release binaries).
    let build = || {
        run(Command::new("bash")
            .arg(workspace.join("images/build.sh"))
            .arg("--bin-dir")
            .arg(agent.parent().unwrap())
            .args(["--tag", "e2e", "--registry", "localhost/convoy", "--root"])
            .arg(&builder)
            .arg("agent")
            .env("CARGO_TARGET_DIR", work.path().join("target")))
    };
    let image_id = || std::fs::read_to_string(work.path().join("target/images/convoy-agent-e2e.id")).unwrap();
    println!("{}", build());
    let first = image_id();
    build();
    assert_eq!(image_id(), first, "the same sources and binary build the same image (timestamps from the commit)");

    // Push as a release job would, and pull back by digest into a node's empty storage.
    let registry = OciRegistry::start(None);
    let digest_file = work.path().join("digest");
    let remote = format!("{}/convoy/convoy-agent", registry.host);
    run(buildah(&builder)
        .args(["push", "--quiet", "--tls-verify=false", "--digestfile"])
        .arg(&digest_file)
        .arg("localhost/convoy/convoy-agent:e2e")
        .arg(format!("docker://{remote}:e2e")));
    let digest = std::fs::read_to_string(&digest_file).unwrap().trim().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "buildah push wrote no digest: {digest:?}");
    let node = work.path().join("node");
    let pinned = format!("{remote}@{digest}");
    run(buildah(&node).args(["pull", "--quiet", "--tls-verify=false"]).arg(format!("docker://{pinned}")));

    let config = image_config(&node, &pinned);
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/convoy-agent"]), "{config}");
    assert!(config["Volumes"].get("/var/cache/convoy-agent").is_some(), "the cache is a declared volume: {config}");
    let labels = &config["Labels"];
    let head = run(Command::new("git").arg("-C").arg(workspace).args(["rev-parse", "HEAD"]));
    assert!(labels["org.opencontainers.image.revision"].as_str().unwrap().starts_with(&head), "{labels}");
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"), "{labels}");
    assert!(labels["org.opencontainers.image.source"].as_str().unwrap().starts_with("https://"), "{labels}");

    let container = run(buildah(&node).args(["from", "--quiet", "--pull-never", &pinned]));
    let rootfs = PathBuf::from(run(buildah(&node).args(["mount", &container])));

    // Nothing but the binary, its libraries, CA roots, NSS/user config and the SBOM: no shell, no
    // package manager, nothing setuid, nothing the image's user may write but its volume.
    let everything = files(&rootfs);
    let expected: BTreeSet<&str> = [
        "/convoy-agent",
        "/sbom.spdx.json",
        "/etc/passwd",
        "/etc/group",
        "/etc/hosts",
        "/etc/nsswitch.conf",
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    .into();
    let mut size = 0;
    for (path, meta) in &everything {
        assert!(!meta.file_type().is_symlink(), "{path} is a symlink");
        assert_eq!(meta.permissions().mode() & 0o6000, 0, "{path} is setuid or setgid");
        let writable_by_user = (meta.uid() == IMAGE_UID && meta.mode() & 0o200 != 0) || meta.mode() & 0o002 != 0;
        if meta.is_dir() {
            assert!(!writable_by_user || path == "/var/cache/convoy-agent", "{path} is writable by the image's user");
            continue;
        }
        assert!(!writable_by_user, "{path} is writable by the image's user");
        let library = path.starts_with("/lib") && path.contains(".so");
        assert!(expected.contains(path.as_str()) || library, "unexpected file in the image: {path}");
        size += meta.len();
    }
    for absent in ["/bin/sh", "/bin/bash", "/bin/busybox", "/usr/bin/apt", "/usr/bin/dpkg", "/sbin/apk"] {
        assert!(!rootfs.join(&absent[1..]).exists(), "{absent} is in the image");
    }
    let binary = std::fs::metadata(rootfs.join("convoy-agent")).unwrap().len();
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "agent image: {:.1} MB uncompressed ({profile} binary {:.1} MB + {:.1} MB of libraries, CA roots, config, SBOM); goal for a release build ≤ {} MB",
        size as f64 / 1e6,
        binary as f64 / 1e6,
        (size - binary) as f64 / 1e6,
        AGENT_IMAGE_GOAL / 1_000_000
    );
    assert!(size - binary < 5_000_000, "more than the binary's libraries and config beside it: {size} bytes");
    if profile == "release" {
        assert!(size <= AGENT_IMAGE_GOAL, "the release agent image is {size} bytes, over its {AGENT_IMAGE_GOAL} goal");
    }

    // The SBOM lists the crates the agent is built from (with Cargo.lock's checksums) and the
    // Debian packages the libraries come from; not the hub's crates nor test-only ones.
    let sbom: Value = serde_json::from_str(&std::fs::read_to_string(rootfs.join("sbom.spdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let packages: BTreeSet<String> =
        sbom["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    for crate_name in ["convoy-agent", "convoy-shared", "kube-client", "tokio", "rustls", "ring", "age", "libc6"] {
        assert!(packages.contains(crate_name), "the SBOM misses {crate_name}: {packages:?}");
    }
    for not_linked in ["convoy-hub", "kubesim", "gix"] {
        assert!(!packages.contains(not_linked), "the SBOM lists {not_linked}, which the agent does not link");
    }
    let tokio = sbom["packages"].as_array().unwrap().iter().find(|p| p["name"] == "tokio").unwrap();
    let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).unwrap();
    let pinned_tokio = format!("name = \"tokio\"\nversion = {}\n", tokio["versionInfo"]);
    assert!(lock.contains(&pinned_tokio), "the SBOM's tokio {} is not Cargo.lock's", tokio["versionInfo"]);
    assert_eq!(tokio["checksums"][0]["algorithm"], "SHA256");

    // A hub, a cluster and a bootstrap token; the agent gets the hub's CA and the kubeconfig in
    // a read-only mount and its cache in a writable one, as the chart's volumes give it.
    let ca = TestCa::new();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = standard_fleet(repo_dir.path());
    let hub = InProcessHub::start(&ca, &repo.url()).await;
    let kube = SimFleet::start(&["dev-1"]).await.unwrap();
    let cluster = kube.cluster("dev-1").unwrap();
    create_standard_namespaces(cluster);
    cluster.apply("test", &namespace("convoy-system"), true).unwrap();
    let mut admin = ca.cli(&hub.address, Role::Admin).await;
    let request = CreateTokenRequest { cluster: "dev-1".into(), ..Default::default() };
    let token = admin.create_token(request).await.unwrap().into_inner().token;
    let mounts = tempfile::tempdir().unwrap();
    let (settings, cache) = (mounts.path().join("settings"), mounts.path().join("cache"));
    std::fs::create_dir(&settings).unwrap();
    std::fs::create_dir(&cache).unwrap();
    std::fs::copy(ca.certs.ca_cert(), settings.join("ca.crt")).unwrap();
    std::fs::write(settings.join("kubeconfig"), cluster.kubeconfig()).unwrap();
    for path in [mounts.path(), &settings, &settings.join("ca.crt"), &settings.join("kubeconfig")] {
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::chown(&cache, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();

    // In a private mount namespace (gone with the process): the root filesystem read-only, the
    // two volumes on it, then chroot and drop to the image's user before exec'ing the agent.
    let script = r#"set -e
root="$1" settings="$2" cache="$3"; shift 3
mount --bind "$root" "$root"
mount -o remount,ro,bind "$root"
mount --bind "$settings" "$root/etc/convoy"
mount -o remount,ro,bind "$root/etc/convoy"
mount --bind "$cache" "$root/var/cache/convoy-agent"
exec chroot --userspec=65532:65532 "$root" /convoy-agent "$@""#;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .args([&rootfs, &settings, &cache])
        .args(["--hub", &hub.address, "--bootstrap-token", &token, "--ca", "/etc/convoy/ca.crt"])
        .args(["--kubeconfig", "/etc/convoy/kubeconfig"])
        .env("RUST_LOG", "info");
    let agent = Process::spawn(command);
    agent.wait_for_line("connected to the hub");

    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let ids = |field: &str| {
        status.lines().find(|l| l.starts_with(field)).unwrap().split_whitespace().skip(1).collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), ["65532"; 4], "the agent runs as the image's user");
    assert_eq!(ids("Gid:"), ["65532"; 4], "the agent runs as the image's group");
    assert_eq!(std::fs::read_link(format!("/proc/{}/root", agent.pid())).unwrap(), rootfs, "the agent is chrooted");
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", agent.pid())).unwrap();
    let root_mount = mountinfo.lines().find(|l| l.split_whitespace().nth(4) == Some("/")).unwrap();
    assert!(
        root_mount.split_whitespace().nth(5).unwrap().split(',').any(|o| o == "ro"),
        "root not read-only: {root_mount}"
    );

    eventually("the chrooted agent to apply dev-1's assignment", || {
        let config = cluster.get("v1", "ConfigMap", Some("web"), "web-config");
        async move { (config?["data"]["greeting"] == "hello dev-1").then_some(()) }
    })
    .await;
    assert!(
        cluster.get("v1", "Secret", Some("convoy-system"), "convoy-agent-credentials").is_some(),
        "the registered agent keeps its credentials in the cluster"
    );
    assert!(std::fs::read_dir(&cache).unwrap().next().is_some(), "the agent caches its assignment in its volume");

    drop(agent);
    run(buildah(&node).args(["umount", &container]));
    run(buildah(&node).args(["rm", &container]));
    hub.stop().await;
}

//! `convoy`: ask the fleet what runs where, over mutual TLS with a CLI certificate.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use convoy_cli::{self as cli, ColorChoice, ConfigFile, Context, Output};
use convoy_shared::proto::*;

#[derive(Parser)]
#[command(name = "convoy", version = convoy_shared::VERSION, about = "Ask a Convoy fleet what runs where")]
struct Cli {
    /// Config file with contexts (hub address and certificate paths).
    #[arg(long, global = true, env = "CONVOY_CONFIG")]
    config: Option<PathBuf>,
    /// Context of the config file to use (default: its current-context).
    #[arg(long, global = true, env = "CONVOY_CONTEXT")]
    context: Option<String>,
    /// Hub address HOST:PORT, or hub replicas HOST:PORT,HOST:PORT tried in order (overrides the
    /// context).
    #[arg(long, global = true, env = "CONVOY_HUB")]
    hub: Option<String>,
    /// CA certificate that signed the hub's certificate.
    #[arg(long, global = true, env = "CONVOY_CA")]
    ca: Option<PathBuf>,
    /// CLI certificate (admin or viewer).
    #[arg(long, global = true, env = "CONVOY_CERT")]
    cert: Option<PathBuf>,
    /// Key of the CLI certificate.
    #[arg(long, global = true, env = "CONVOY_KEY")]
    key: Option<PathBuf>,
    /// Name the hub's certificate must carry, when it differs from the host dialed.
    #[arg(long, global = true, env = "CONVOY_SERVER_NAME")]
    server_name: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value = "table", env = "CONVOY_OUTPUT")]
    output: Output,
    /// Colour tables and status lines: auto (a terminal without NO_COLOR), always, never.
    #[arg(long, global = true, value_enum, default_value = "auto", env = "CONVOY_COLOR")]
    color: ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the clusters the hub knows: environment, agent link, sync and health.
    Clusters {
        #[command(subcommand)]
        command: Option<ClustersCommand>,
    },
    /// Bootstrap tokens for registering agents (admin).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Apps, health, revisions and errors of one cluster (or all).
    Status { cluster: Option<String> },
    /// Drift the agents found: object, field, who changed it, desired and live values.
    Drift { cluster: Option<String> },
    /// What a cluster was assigned and applied, newest first.
    History {
        cluster: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Environments in promotion order: branch, commit, clusters applied and healthy.
    Envs,
    /// What TO's clusters would get from FROM's head, per cluster (asks the hub). With --base
    /// and --head instead: the fleet diff of a change, rendered locally from two commits of the
    /// fleet repository (no hub): per environment and cluster the objects added, changed and
    /// removed, Secret values redacted; -o markdown for a pull-request comment. Exit 0 no
    /// change, 1 changes, 2 error (or a render error the head brings).
    #[command(
        group(clap::ArgGroup::new("mode").required(true).args(["from", "base"])),
        override_usage = "convoy diff FROM TO\n       convoy diff --base REF --head REF [--repo DIR] [--all-envs] [-o text|markdown|json]"
    )]
    Diff {
        /// The environment whose head is rendered (by name or branch).
        #[arg(requires = "to")]
        from: Option<String>,
        /// The environment whose clusters it is rendered for.
        to: Option<String>,
        /// The commit the change goes into (the pull request's target, e.g. origin/main): its
        /// branch picks the environments.
        #[arg(long, conflicts_with_all = ["from", "to"], requires = "head")]
        base: Option<String>,
        /// The commit of the change (e.g. HEAD, or the pull request's branch).
        #[arg(long, requires = "base")]
        head: Option<String>,
        /// The fleet repository (default: the clone you are in); its work tree is not read.
        #[arg(long, requires = "base")]
        repo: Option<PathBuf>,
        /// Render every environment, each from base and head (not only those reading base's
        /// branch).
        #[arg(long, requires = "base")]
        all_envs: bool,
    },
    /// Exit 0 only when FROM has a verified commit (every cluster applied and Healthy, past its
    /// soak) and TO has no commits of its own: the gate `promote` uses (a merge-request check).
    /// Environments by name, or by their branch.
    PromoteCheck {
        from: String,
        to: String,
        /// Pass even when TO has commits FROM lacks.
        #[arg(long)]
        allow_divergent: bool,
        /// While FROM is not verified yet (its clusters still applying, soaking), ask again
        /// until it is or this long has passed: 30s, 5m.
        #[arg(long, value_parser = cli::parse_ttl)]
        wait: Option<std::time::Duration>,
    },
    /// Move TO's branch (as convoy.yaml names it) to exactly FROM's verified commit, pushing
    /// from this checkout with your own Git credentials (the hub never writes to Git).
    Promote {
        from: String,
        to: String,
        /// Replace TO even when it has commits FROM lacks (they are listed first).
        #[arg(long)]
        allow_divergent: bool,
        /// While FROM is not verified yet, ask again until it is or this long has passed.
        #[arg(long, value_parser = cli::parse_ttl)]
        wait: Option<std::time::Duration>,
        /// Clone of the fleet repository to push from (default: the one you are in).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Remote the hub reads.
        #[arg(long, default_value = "origin")]
        remote: String,
        /// Say what would be pushed, push nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pin ENV at an earlier revision it applied (default: the one before the current); new
    /// commits on its branch wait until `--release` (admin).
    Rollback {
        environment: String,
        /// The revision to go back to (a prefix is enough).
        #[arg(long, conflicts_with = "release")]
        to: Option<String>,
        /// Lift the pin: the branch's head reaches the clusters again.
        #[arg(long)]
        release: bool,
    },
    /// Follow fleet events as they happen (assigned, applied, connected…) until Ctrl-C.
    Watch,
    /// Make the hub fetch the repository now (admin).
    Refresh,
    /// Sign in through the hub's OpenID provider (single sign-on) and write a CLI config with
    /// the short-lived certificate the hub signs for you and your groups. Needs --hub and --ca
    /// (or a context with them), no certificate.
    Login {
        /// The config file to write (with its certificate, key and CA beside it).
        #[arg(long)]
        out: PathBuf,
        /// Print the sign-in address only; do not open a browser.
        #[arg(long)]
        no_browser: bool,
        /// Sign in on any device with a code (the OAuth device flow), for a machine without a
        /// browser.
        #[arg(long, conflicts_with = "no_browser")]
        device: bool,
    },
    /// Who you are to the hub: user, groups, roles, and what the access policy lets you do.
    Whoami,
    /// People's CLI certificates (verb `users`).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// The receivers convoy.yaml declares and the hub's outbox: what waits, what was
    /// delivered, the dead letters.
    Notifications {
        /// Outbox entries to list, newest first.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(subcommand)]
        command: Option<NotificationsCommand>,
    },
    /// The audit log: every change, denial, certificate issued, token and policy change, oldest
    /// first (verb `audit`). With -o json, one record per line.
    Audit {
        /// Only records of the last 90s, 30m, 1h, 2d…
        #[arg(long, value_parser = cli::parse_ttl)]
        since: Option<std::time::Duration>,
        /// Only this user's records.
        #[arg(long)]
        user: Option<String>,
        /// Then print each new record as it is written, until Ctrl-C (a log shipper's feed).
        #[arg(long)]
        follow: bool,
    },
    /// Serve the web dashboard on this machine, acting with this config's certificate: the
    /// browser sees and may do exactly what this user may.
    Ui {
        /// Loopback address to serve on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Open it in the default browser.
        #[arg(long)]
        open: bool,
    },
    /// Rollouts: status of each environment's, and a person's word on one (admin).
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Render a kustomization, or a Helm chart (a directory with Chart.yaml), locally as the
    /// hub would, to stdout; a chart prints what `helm template --skip-tests` prints. With
    /// --app and --cluster: that app for that cluster, from the fleet repository's work tree,
    /// exactly as the hub would assign it.
    Render {
        /// The kustomization or chart directory (not with --app).
        #[arg(required_unless_present = "app", conflicts_with = "app")]
        dir: Option<PathBuf>,
        /// Repository root; nothing outside it is read (default: the enclosing Git work tree).
        #[arg(long)]
        root: Option<PathBuf>,
        /// The app to render for --cluster (from apps/NAME/app.yaml).
        #[arg(long, requires = "cluster")]
        app: Option<String>,
        /// The cluster to render --app for (from clusters/NAME.yaml).
        #[arg(long, requires = "app")]
        cluster: Option<String>,
        /// Helm chart: the release name.
        #[arg(long, default_value = "release-name", env = "CONVOY_RELEASE_NAME")]
        release_name: String,
        /// Helm chart: the release namespace.
        #[arg(long, short = 'n', default_value = "default", env = "CONVOY_NAMESPACE")]
        namespace: String,
        /// Helm chart: a values file (repeatable; later files win).
        #[arg(long = "values", short = 'f')]
        values: Vec<PathBuf>,
        /// Helm chart: KEY=VALUE (repeatable; applied after the values files).
        #[arg(long = "set")]
        set: Vec<String>,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// JSON Schemas of the fleet repository's files, for editors (YAML language server) and CI:
    /// `fleet` (convoy.yaml), `cluster` (clusters/NAME.yaml), `app` (apps/NAME/app.yaml).
    Schema {
        /// Print this one (fleet, cluster or app); without it and --dir, list them.
        name: Option<String>,
        /// Write all three as DIR/NAME.json.
        #[arg(long, conflicts_with = "name")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Waves, clusters per state, old → new revision and soak left (one environment, or all).
    Status { environment: Option<String> },
    /// Stop handing out the new revision; clusters not yet released keep what they run.
    Pause(Track),
    /// Go on after a pause (failures seen so far are accepted).
    Resume(Track),
    /// Open the next wave of a rollout that waits for approval.
    Approve(Track),
    /// Return every cluster of the rollout to the revision it ran before.
    Abort(Track),
    /// Let the revision a change window (spec.windows) holds back go out once; the reason is
    /// kept in each cluster's history and the audit log.
    Override {
        environment: String,
        #[arg(long)]
        reason: String,
    },
}

/// Which rollout an action is for.
#[derive(clap::Args)]
struct Track {
    environment: String,
    /// The app's own rollout in the environment (`rollout:` in its app.yaml), not the
    /// environment's.
    #[arg(long)]
    app: Option<String>,
}

#[derive(Subcommand)]
enum ClustersCommand {
    /// Close the cluster's agent stream and refuse its certificates from now on (admin). It can
    /// come back only by registering with a new token.
    Revoke { name: String },
    /// Forget a cluster Git no longer declares (orphaned): revoke its certificates, drop its
    /// assignment and state at the hub; nothing in the cluster is touched (admin).
    Retire { name: String },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Write a CLI config (FILE, and its certificate, key and CA beside it) for user NAME with
    /// a certificate for their groups. The key is made here and never sent.
    Issue {
        name: String,
        /// A group the access policy binds roles to (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Lifetime of the certificate, in hours.
        #[arg(long, default_value_t = 12)]
        hours: u32,
        /// The config file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Refuse every certificate of user NAME issued so far; their open streams close.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a single-use bootstrap token with which one agent registers as CLUSTER.
    Create {
        #[arg(long)]
        cluster: String,
        /// Label recorded with the registration, KEY=VALUE (repeatable); apps are still targeted
        /// by the labels in the fleet repository's clusters/<name>.yaml.
        #[arg(long = "label", value_parser = cli::parse_label)]
        labels: Vec<(String, String)>,
        /// How long the token may be used: 90s, 30m, 1h, 2d.
        #[arg(long, default_value = "1h", value_parser = cli::parse_ttl)]
        ttl: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum NotificationsCommand {
    /// Send a test event to RECEIVER through the outbox, and say whether it was delivered.
    Test { receiver: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    convoy_shared::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("convoy: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let output = cli.output;
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print!("{}", cli::error_answer(output, &e).unwrap_or_default());
            eprintln!("convoy: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs the command; its exit status (0 unless it has one of its own to say).
async fn run(cli: Cli) -> Result<u8, cli::CliError> {
    let color = cli.color.enabled();
    let context = || -> Result<Context, cli::CliError> {
        let flags = Context {
            hub: cli.hub.clone(),
            ca: cli.ca.clone(),
            cert: cli.cert.clone(),
            key: cli.key.clone(),
            server_name: cli.server_name.clone(),
            ..Default::default()
        };
        let base = match &cli.config {
            Some(path) => ConfigFile::load(path)?.context(cli.context.as_deref(), path)?,
            None => Context::default(),
        };
        Ok(base.overridden_by(flags))
    };
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "convoy", &mut std::io::stdout());
        }
        Command::Schema { name, dir } => print!("{}", cli::schema::command(name.as_deref(), dir.as_deref())?),
        Command::Render { app: Some(app), cluster: Some(cluster), root, .. } => {
            let root = match root {
                Some(root) => root,
                None => cli::checkout_root(Path::new("."))
                    .ok_or_else(|| cli::CliError::Render(
                        "not inside a clone of the fleet repository: run `convoy render --app` in one, or pass --root REPO".into(),
                    ))?,
            };
            let objects = cli::app::render_app(&root, &app, &cluster)?;
            match cli.output {
                Output::Json => print!("{}", cli::structured(cli.output, &objects).unwrap_or_default()),
                _ => print!("{}", convoy_render::to_yaml(&objects)),
            }
        }
        Command::Render { dir: Some(dir), release_name, namespace, values, set, .. } if cli::chart::is_chart(&dir) => {
            let request = cli::chart::ChartRequest { dir, release_name, namespace, values_files: values, sets: set };
            let rendered = cli::chart::render_chart(&request)?;
            match cli.output {
                Output::Json => {
                    let objects: Vec<_> = rendered.manifests.iter().map(|m| m.object.clone()).collect();
                    print!("{}", cli::structured(cli.output, &objects).unwrap_or_default());
                }
                _ => print!("{}", rendered.to_helm_template()),
            }
        }
        Command::Render { dir, root, .. } => {
            let Some(dir) = dir else {
                return Err(cli::CliError::Render("name a directory to render, or --app and --cluster".into()));
            };
            let root = root.unwrap_or_else(|| cli::repository_root(&dir));
            let objects =
                convoy_render::Renderer::new(&root).render(&dir).map_err(|e| cli::CliError::Render(e.to_string()))?;
            match cli.output {
                Output::Json => print!("{}", cli::structured(cli.output, &objects).unwrap_or_default()),
                _ => print!("{}", convoy_render::to_yaml(&objects)),
            }
        }
        Command::Clusters { command: Some(ClustersCommand::Revoke { name }) } => {
            let request = RevokeClusterRequest { cluster: name };
            let reply = context()?.connect().await?.revoke_cluster(request).await?.into_inner();
            let text = || {
                let stream = if reply.stream_closed { "its agent stream was closed" } else { "no agent was connected" };
                format!("revoked {}: {stream}; its certificates are refused from now on\n", reply.cluster)
            };
            print!("{}", cli::structured(cli.output, &reply).unwrap_or_else(text));
        }
        Command::Clusters { command: Some(ClustersCommand::Retire { name }) } => {
            let request = RetireClusterRequest { cluster: name };
            let reply = context()?.connect().await?.retire_cluster(request).await?.into_inner();
            let text = || {
                format!(
                    "retired {}: its certificates are refused, the hub forgot it; its objects stay in the cluster\n",
                    reply.cluster
                )
            };
            print!("{}", cli::answer(cli.output, color, &reply, text));
        }
        Command::Token { command: TokenCommand::Create { cluster, labels, ttl } } => {
            let request =
                CreateTokenRequest { cluster, labels: labels.into_iter().collect(), ttl_seconds: ttl.as_secs() as i64 };
            let reply = context()?.connect().await?.create_token(request).await?.into_inner();
            // Only the token on stdout (for `$(convoy token create …)`); the rest on stderr.
            match cli.output {
                Output::Table | Output::Markdown => {
                    eprintln!(
                        "bootstrap token for {} (single use, expires at unix {}):",
                        reply.cluster, reply.expires_unix
                    );
                    println!("{}", reply.token);
                }
                _ => print!("{}", cli::structured(cli.output, &reply).unwrap_or_default()),
            }
        }
        Command::Clusters { command: None } => {
            let reply = context()?.connect().await?.list_clusters(ListClustersRequest {}).await?.into_inner();
            let table = || cli::clusters_table(&reply.clusters, convoy_shared::clock::unix_ms());
            print!("{}", cli::answer(cli.output, color, &reply, table));
        }
        Command::Status { cluster } => {
            let request = StatusRequest { cluster: cluster.unwrap_or_default() };
            let reply = context()?.connect().await?.status(request).await?.into_inner();
            print!("{}", cli::answer(cli.output, color, &reply, || cli::status_text(&reply)));
        }
        Command::Drift { cluster } => {
            let request = DriftRequest { cluster: cluster.unwrap_or_default() };
            let reply = context()?.connect().await?.drift(request).await?.into_inner();
            print!("{}", cli::answer(cli.output, color, &reply, || cli::drift_table(&reply)));
        }
        Command::History { cluster, limit } => {
            let request = HistoryRequest { cluster, limit };
            let reply = context()?.connect().await?.history(request).await?.into_inner();
            print!("{}", cli::answer(cli.output, color, &reply, || cli::history_table(&reply)));
        }
        Command::Envs => {
            let reply = context()?.connect().await?.envs(EnvsRequest {}).await?.into_inner();
            print!("{}", cli::answer(cli.output, color, &reply, || cli::envs_table(&reply)));
        }
        Command::Diff { base: Some(base), head: Some(head), repo, all_envs, .. } => {
            let diff = cli::fleet_diff::run(&cli::fleet_diff::Request { repo, base, head, all_envs })?;
            match cli.output {
                Output::Markdown => print!("{}", diff.markdown(cli::fleet_diff::COMMENT_CAP)),
                _ => print!("{}", cli::structured(cli.output, &diff).unwrap_or_else(|| diff.text())),
            }
            return Ok(diff.exit_code());
        }
        Command::Diff { from, to, .. } => {
            let (Some(from), Some(to)) = (from, to) else { unreachable!("clap requires FROM TO or --base --head") };
            let request = DiffRequest { from_env: from, to_env: to };
            let reply = context()?.connect().await?.diff(request).await?.into_inner();
            print!("{}", cli::answer(cli.output, color, &reply, || cli::diff_text(&reply)));
        }
        Command::PromoteCheck { from, to, allow_divergent, wait } => {
            let gate = promotion_gate(&context()?, &from, &to, allow_divergent, wait).await?;
            print!("{}", cli::answer(cli.output, color, &gate, || format!("{}\n", gate.message)));
        }
        Command::Promote { from, to, allow_divergent, wait, repo, remote, dry_run } => {
            let gate = promotion_gate(&context()?, &from, &to, allow_divergent, wait).await?;
            let done = cli::promote::checkout(&repo, &remote).promote(&gate, allow_divergent, dry_run)?;
            print!("{}", cli::answer(cli.output, color, &done, || format!("{}\n", done.line())));
        }
        Command::Rollback { environment, to, release } => {
            let request = RollbackRequest { environment, to_revision: to.unwrap_or_default(), release };
            let reply = context()?.connect().await?.rollback(request).await?.into_inner();
            print!("{}", cli::answer(cli.output, color, &reply, || format!("{}\n", reply.message)));
        }
        Command::Watch => {
            let mut events = context()?.connect().await?.watch(WatchRequest {}).await?.into_inner();
            while let Some(event) = events.message().await? {
                match cli::structured(cli.output, &event) {
                    Some(text) => print!(
                        "{}",
                        if cli.output == Output::Json { text.replace('\n', "") + "\n" } else { format!("---\n{text}") }
                    ),
                    None => print!("{}", cli::styled(color, cli::event_line(&event) + "\n")),
                }
            }
        }
        Command::Rollout { command: RolloutCommand::Status { environment } } => {
            let request = RolloutStatusRequest { environment: environment.unwrap_or_default() };
            let reply = context()?.connect().await?.rollout_status(request).await?.into_inner();
            print!("{}", cli::answer(cli.output, color, &reply, || cli::rollouts_text(&reply.rollouts)));
        }
        Command::Rollout { command } => {
            let (action, Track { environment, app }, reason) = match command {
                RolloutCommand::Pause(track) => ("pause", track, String::new()),
                RolloutCommand::Resume(track) => ("resume", track, String::new()),
                RolloutCommand::Approve(track) => ("approve", track, String::new()),
                RolloutCommand::Abort(track) => ("abort", track, String::new()),
                RolloutCommand::Override { environment, reason } => {
                    ("override", Track { environment, app: None }, reason)
                }
                RolloutCommand::Status { .. } => unreachable!("answered above"),
            };
            let request =
                RolloutActionRequest { environment, action: action.into(), app: app.unwrap_or_default(), reason };
            let reply = context()?.connect().await?.rollout_action(request).await?.into_inner();
            let text = || {
                format!(
                    "{}: {}\n{}",
                    reply.rollout.as_ref().map_or("", |r| r.environment.as_str()),
                    reply.message,
                    cli::rollouts_text(reply.rollout.as_slice())
                )
            };
            print!("{}", cli::answer(cli.output, color, &reply, text));
        }
        Command::Login { out, no_browser, device } => {
            let flow = if device { cli::login::Flow::Device } else { cli::login::Flow::Browser { open: !no_browser } };
            let written = cli::login::login(&context()?, &out, flow).await?;
            let text = || {
                format!(
                    "signed in as '{}': wrote {} (certificate expires at unix {}); use it with --config {}\n",
                    written.user,
                    written.config.display(),
                    written.not_after_unix,
                    written.config.display()
                )
            };
            print!("{}", cli::answer(cli.output, color, &written, text));
        }
        Command::Whoami => {
            let me = context()?.connect().await?.who_am_i(WhoAmIRequest {}).await?.into_inner();
            print!("{}", cli::answer(cli.output, color, &me, || cli::whoami_text(&me)));
        }
        Command::Users { command: UsersCommand::Issue { name, groups, hours, out } } => {
            let context = context()?;
            let csr =
                convoy_shared::enrollment::generate_csr(&name).map_err(|e| cli::CliError::Render(e.to_string()))?;
            let request = IssueUserRequest { name, groups, hours, csr_pem: csr.cert_pem };
            let issued = context.connect().await?.issue_user(request).await?.into_inner();
            let written = cli::users::write_config(&out, &context, &issued, &csr.key_pem)?;
            let text = || {
                format!(
                    "wrote {} for user '{}' (certificate {}, expires at unix {}); use it with --config {}\n",
                    written.config.display(),
                    written.user,
                    written.cert.display(),
                    written.not_after_unix,
                    written.config.display()
                )
            };
            print!("{}", cli::answer(cli.output, color, &written, text));
        }
        Command::Users { command: UsersCommand::Revoke { name } } => {
            let reply = context()?.connect().await?.revoke_user(RevokeUserRequest { name }).await?.into_inner();
            let text = || {
                format!(
                    "user '{}' revoked: every certificate issued before is refused; {} open streams closed\n",
                    reply.name, reply.streams_closed
                )
            };
            print!("{}", cli::answer(cli.output, color, &reply, text));
        }
        Command::Notifications { limit, command: None } => {
            let answer = context()?.connect().await?.notifications(NotificationsRequest { limit }).await?.into_inner();
            match cli.output {
                Output::Json | Output::Yaml => print!("{}", cli::structured(cli.output, &answer).unwrap_or_default()),
                _ => print!("{}", cli::notifications::table(&answer)),
            }
        }
        Command::Notifications { command: Some(NotificationsCommand::Test { receiver }), .. } => {
            let request = TestNotificationRequest { receiver: receiver.clone() };
            let answer = context()?.connect().await?.test_notification(request).await?.into_inner();
            if !answer.delivered {
                return Err(cli::CliError::Render(format!(
                    "the test event to '{receiver}' failed: {}; it stays in the outbox and is retried (`convoy notifications`)",
                    answer.error
                )));
            }
            println!("test event delivered to '{receiver}' (outbox entry {})", answer.seq);
        }
        Command::Audit { since, user, follow } => {
            let since_unix_ms =
                since.map_or(0, |d| convoy_shared::clock::unix_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let request = AuditRequest { since_unix_ms, user: user.unwrap_or_default(), follow };
            let mut records = context()?.connect().await?.audit(request).await?.into_inner();
            let mut shown = Vec::new();
            while let Some(record) = records.message().await? {
                match cli.output {
                    Output::Json => println!("{}", serde_json::to_string(&record).unwrap_or_default()),
                    Output::Yaml => print!("---\n{}", cli::structured(Output::Yaml, &record).unwrap_or_default()),
                    Output::Table | Output::Markdown if follow => {
                        println!("{}", cli::audit_row(&record).join("  "))
                    }
                    Output::Table | Output::Markdown => shown.push(record),
                }
            }
            if matches!(cli.output, Output::Table | Output::Markdown) && !follow {
                print!("{}", cli::audit_table(&shown));
            }
        }
        Command::Ui { listen, open } => {
            let context = context()?;
            let channel = context.channel().await?;
            let cert = context.cert.clone().expect("channel checked the certificate is set");
            let identity = cli::ui::identity_of(&cert)?;
            let listener = cli::ui::bind(listen).await?;
            let addr = listener.local_addr().map_err(|source| cli::ui::UiError::Listen { addr: listen, source })?;
            let ui = cli::ui::dashboard(channel, context.hub.as_deref().unwrap_or(""), addr);
            let url = ui.url().to_string();
            println!("Convoy dashboard at {url}/ as {identity} (Ctrl-C stops it)");
            if open {
                let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
                if let Err(e) = std::process::Command::new(opener).arg(&url).spawn() {
                    eprintln!("convoy: could not open a browser ({opener}: {e}); open {url}/ yourself");
                }
            }
            cli::ui::serve(listener, ui).await.map_err(|source| cli::ui::UiError::Listen { addr, source })?;
        }
        Command::Refresh => {
            let reply = context()?.connect().await?.refresh(RefreshRequest {}).await?.into_inner();
            let branches: std::collections::BTreeMap<_, _> = reply.branches.iter().collect();
            let rows: Vec<Vec<String>> = branches.iter().map(|(b, c)| vec![b.to_string(), c.to_string()]).collect();
            let table = || cli::print_table(&["BRANCH", "COMMIT"], &rows);
            print!("{}", cli::answer(cli.output, color, &reply, table));
        }
    }
    Ok(0)
}

/// The hub's answer to "may FROM go to TO"; with `wait`, asked again every second while FROM
/// is only not verified yet (every other refusal is final), saying once on stderr why it waits.
async fn promotion_gate(
    context: &Context,
    from: &str,
    to: &str,
    allow_divergent: bool,
    wait: Option<std::time::Duration>,
) -> Result<cli::promote::Promotion, cli::CliError> {
    let mut client = context.connect().await?;
    let deadline = std::time::Instant::now() + wait.unwrap_or_default();
    let mut said = String::new();
    loop {
        let envs = client.envs(EnvsRequest {}).await?.into_inner();
        match cli::promote::gate(&envs, from, to, allow_divergent) {
            Err(refusal @ cli::promote::Refusal::NotReady { .. }) if std::time::Instant::now() < deadline => {
                let why = refusal.to_string();
                if why != said {
                    eprintln!("waiting: {why}");
                    said = why;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            answer => return Ok(answer?),
        }
    }
}

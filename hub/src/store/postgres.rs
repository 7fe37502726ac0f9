//! The PostgreSQL store: what [`RedbStore`](crate::store::redb::RedbStore) keeps, in a
//! database several hub replicas share, plus what only replicas need: the leader's fencing
//! epoch and the assignments it published (content-addressed by digest, each app's objects
//! stored once per app digest, announced with `NOTIFY`), so every replica serves them. The schema is migrated at start (a versioned
//! `convoy_migrations` table).
//!
//! [`Store`] is blocking; this store runs its queries on a small runtime of its own, so it may be
//! called from any thread, inside the hub's runtime or not, without starving it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use convoy_shared::model::{Assignment, HeldObjects};
use convoy_shared::proto::{self, AuditRecord, HistoryEntry, Report};
use prost::Message;
use tokio_postgres::{Client, NoTls};

use crate::store::{
    OUTBOX_KEEP_MS, OutboxEntry, Redeemed, Registration, Result, Store, StoreError, StoreEvent, TokenRecord, redeem,
};

/// Advisory lock key migrations run under ("convoy" in ASCII, then 1), so replicas starting
/// together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x0063_6f6e_766f_7901;
/// Advisory lock key of leadership ("convoy", then 2).
pub(crate) const LEADER_LOCK: i64 = 0x0063_6f6e_766f_7902;
/// Channel a leader announces `CLUSTER DIGEST` on when it publishes an assignment.
pub(crate) const PUBLISHED_CHANNEL: &str = "convoy_published";
/// Channel a replica announces `REPLICA CLUSTER` on when it stored a cluster's report.
pub(crate) const REPORTS_CHANNEL: &str = "convoy_reports";
/// Channel the leader announces a new access policy on (the payload is its commit).
pub(crate) const ACCESS_CHANNEL: &str = "convoy_access";
/// Channel a replica announces `CLUSTER AT_UNIX_MS` on when it revoked a cluster.
pub(crate) const REVOCATIONS_CHANNEL: &str = "convoy_revocations";
/// Channel a replica announces `REPLICA SEQ` on when it wrote an audit record, so `--follow`
/// readers of every replica get it.
pub(crate) const AUDIT_CHANNEL: &str = "convoy_audit";
/// How long after a publish the leader prunes what it replaced ([`PgStore::prune_soon`]).
const PRUNE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections each store keeps (queries pipeline on each).
const POOL: usize = 4;

/// Schema versions, applied in order and recorded in `convoy_migrations`; never edit one that
/// shipped, add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE convoy_reports (cluster text PRIMARY KEY, report bytea NOT NULL);
     CREATE TABLE convoy_history (seq bigserial PRIMARY KEY, cluster text NOT NULL, entry bytea NOT NULL);
     CREATE INDEX convoy_history_by_cluster ON convoy_history (cluster, seq DESC);
     CREATE TABLE convoy_tokens (hash text PRIMARY KEY, record text NOT NULL);
     CREATE TABLE convoy_registrations (cluster text PRIMARY KEY, registration text NOT NULL);
     CREATE TABLE convoy_revocations (cluster text PRIMARY KEY, at_unix_ms bigint NOT NULL);
     CREATE TABLE convoy_rollouts (environment text PRIMARY KEY, state text NOT NULL);
     CREATE TABLE convoy_pins (environment text PRIMARY KEY, commit text NOT NULL);
     CREATE TABLE convoy_leader (id integer PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL,
                                 holder text NOT NULL, since timestamptz NOT NULL DEFAULT now());
     INSERT INTO convoy_leader (id, epoch, holder) VALUES (1, 0, '');
     CREATE TABLE convoy_assignments (digest text PRIMARY KEY, body bytea NOT NULL);
     CREATE TABLE convoy_published (cluster text PRIMARY KEY,
                                    digest text NOT NULL REFERENCES convoy_assignments (digest),
                                    environment text NOT NULL, revision text NOT NULL,
                                    epoch bigint NOT NULL, published_at timestamptz NOT NULL DEFAULT now());",
    ),
    (
        2,
        "CREATE TABLE convoy_audit (seq bigserial PRIMARY KEY, at_unix_ms bigint NOT NULL, username text NOT NULL,
                                record bytea NOT NULL);
     CREATE INDEX convoy_audit_by_time ON convoy_audit (at_unix_ms, seq);
     CREATE TABLE convoy_access (id integer PRIMARY KEY CHECK (id = 1), commit text NOT NULL, spec text NOT NULL);",
    ),
    (
        3,
        "CREATE TABLE convoy_outbox (seq bigserial PRIMARY KEY, receiver text NOT NULL, state text NOT NULL,
                                 created_ms bigint NOT NULL, entry text NOT NULL);
     CREATE INDEX convoy_outbox_pending ON convoy_outbox (seq) WHERE state = 'pending';
     CREATE INDEX convoy_outbox_pending_by_receiver ON convoy_outbox (receiver, seq) WHERE state = 'pending';",
    ),
    (
        // An assignment's apps by digest: a one-app change writes that app once per distinct
        // digest, not every cluster's whole assignment again. `apps` lists the digests a body
        // names, so bodies and apps no one uses any more can be pruned. Bodies written before
        // name their apps inline (`apps` NULL) and read as they did.
        4,
        "CREATE TABLE convoy_apps (digest text PRIMARY KEY, body bytea NOT NULL);
     ALTER TABLE convoy_assignments ADD COLUMN apps text[];",
    ),
];

/// The leadership epoch this replica holds (0: none). Set by [`crate::store::leadership`] on taking
/// the lead; every leader-only write carries it and is refused once the database's is newer.
#[derive(Debug, Clone, Default)]
pub struct Fence(Arc<AtomicI64>);

impl Fence {
    pub fn set(&self, epoch: i64) {
        self.0.store(epoch, Ordering::SeqCst);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A few connections, each opened on first use and again after it broke (a database restart).
#[derive(Debug)]
struct Pool {
    config: tokio_postgres::Config,
    slots: Vec<tokio::sync::Mutex<Option<Client>>>,
    next: AtomicUsize,
}

impl Pool {
    /// A connection, opened if need be; held until the guard drops.
    async fn get(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Client>> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut guard = slot.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(connect(&self.config).await?);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |client| client.as_mut().expect("connected just above")))
    }
}

/// Opens a connection whose messages a task on the current runtime drives.
pub(crate) async fn connect(config: &tokio_postgres::Config) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| unreachable_database(config, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "a PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// "HOST:PORT/DB" of a configuration, for messages (never the password).
pub(crate) fn target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

fn unreachable_database(config: &tokio_postgres::Config, e: &tokio_postgres::Error) -> StoreError {
    StoreError::Database { target: target(config), message: e.to_string() }
}

fn db<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// The database's leadership epoch, the leader row share-locked until `txn` ends: a replica
/// taking the lead (which updates the row) waits for it, so a leader-only write in `txn` made
/// while the epoch is the writer's never races another leader's.
async fn leader_epoch(txn: &tokio_postgres::Transaction<'_>) -> Result<i64> {
    let row = txn.query_one("SELECT epoch FROM convoy_leader WHERE id = 1 FOR SHARE", &[]).await.map_err(db)?;
    Ok(row.get(0))
}

/// The PostgreSQL store.
#[derive(Debug)]
pub struct PgStore {
    /// Runs every query; shut down in the background on drop (dropping a runtime inside another
    /// one's context would panic).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Arc<Pool>,
    fence: Fence,
    /// Names this replica in report announcements, so it skips its own.
    replica: String,
    /// The app digests of each cluster's assignment this store last published: those apps are
    /// in `convoy_apps` already, and the next publish does not send them again.
    published_apps: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// A prune is waiting or running (one at a time; a publish meanwhile asks for none).
    pruning: std::sync::atomic::AtomicBool,
    /// Held by a publish and by a prune: this replica's own prune never runs beside its publish.
    writing: std::sync::Mutex<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`, or key=value pairs) and
    /// migrates the schema to this hub's version.
    pub fn connect(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| StoreError::Database {
            target: "--store".into(),
            message: format!("{e}; write it as postgres://USER@HOST:PORT/DATABASE"),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("convoy-postgres")
            .enable_all()
            .build()
            .map_err(db)?;
        let slots = (0..POOL).map(|_| tokio::sync::Mutex::new(None)).collect();
        let pool = Arc::new(Pool { config, slots, next: AtomicUsize::new(0) });
        let replica = format!("{}-{}", std::process::id(), convoy_shared::clock::unix_ms());
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            fence: Fence::default(),
            replica,
            published_apps: Default::default(),
            pruning: Default::default(),
            writing: Default::default(),
        };
        store.run(|pool| async move { migrate(&mut *pool.get().await?).await })?;
        Ok(store)
    }

    /// The database's connection settings (leadership and notifications open their own).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.pool.config
    }

    /// The epoch leader-only writes carry.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// This replica's name in report announcements.
    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Pool>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        futures::executor::block_on(runtime.spawn(f(self.pool.clone()))).map_err(db)?
    }

    /// Records each of `assignments` as its cluster's published one, in one transaction (a
    /// commit's fan-out is one write, not one per cluster), if this replica's epoch is still the
    /// database's, and announces them to the other replicas. Refused whole with
    /// [`StoreError::Fenced`] once another replica took the lead.
    pub fn publish(&self, assignments: &[Arc<Assignment>]) -> Result<()> {
        // Digest → body and the app digests it names (joined by spaces, split in SQL).
        let mut bodies: BTreeMap<String, (Vec<u8>, String)> = BTreeMap::new();
        let mut apps: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut rows: [Vec<String>; 4] = Default::default();
        {
            let written = self.published_apps.lock().unwrap_or_else(|e| e.into_inner());
            for a in assignments {
                bodies.entry(a.digest.clone()).or_insert_with(|| {
                    let held = written.get(&a.cluster).map_or(&[][..], Vec::as_slice);
                    // The apps this store did not write for the cluster travel inline, and
                    // are taken out into `convoy_apps`.
                    let mut wire = a.to_wire(|digest| !held.iter().any(|d| d == digest));
                    for app in wire.apps.iter_mut().filter(|app| !app.by_digest) {
                        apps.entry(app.digest.clone()).or_insert_with(|| app.encode_to_vec());
                        app.objects_json = Vec::new();
                        app.by_digest = true;
                    }
                    (wire.encode_to_vec(), a.app_digests.join(" "))
                });
                for (column, value) in rows.iter_mut().zip([&a.cluster, &a.digest, &a.environment, &a.revision]) {
                    column.push(value.clone());
                }
            }
        }
        let mut digests = Vec::with_capacity(bodies.len());
        let (mut encoded, mut named) = (Vec::with_capacity(bodies.len()), Vec::with_capacity(bodies.len()));
        for (digest, (body, apps)) in bodies {
            digests.push(digest);
            encoded.push(body);
            named.push(apps);
        }
        let (app_digests, app_bodies): (Vec<String>, Vec<Vec<u8>>) = apps.into_iter().unzip();
        let epoch = self.fence.get();
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = client.transaction().await.map_err(db)?;
            txn.execute(
                "INSERT INTO convoy_apps (digest, body) SELECT * FROM unnest($1::text[], $2::bytea[])
                 ON CONFLICT (digest) DO NOTHING",
                &[&app_digests, &app_bodies],
            )
            .await
            .map_err(db)?;
            // A body written before apps were stored apart is written again: the apps it names
            // inline are in `convoy_apps` now, and must be named to be kept.
            txn.execute(
                "INSERT INTO convoy_assignments (digest, body, apps)
                 SELECT d, b, string_to_array(a, ' ') FROM unnest($1::text[], $2::bytea[], $3::text[]) AS t (d, b, a)
                 ON CONFLICT (digest) DO UPDATE SET body = excluded.body, apps = excluded.apps
                 WHERE convoy_assignments.apps IS NULL",
                &[&digests, &encoded, &named],
            )
            .await
            .map_err(db)?;
            let [clusters, digests, environments, revisions] = &rows;
            // The leader row is share-locked until commit: a replica taking the lead (which
            // updates it) waits for this write, and this write sees its epoch if it came first.
            let written = txn
                .execute(
                    "WITH fence AS (SELECT 1 FROM convoy_leader WHERE id = 1 AND epoch = $5 FOR SHARE)
                     INSERT INTO convoy_published (cluster, digest, environment, revision, epoch)
                     SELECT c, d, e, r, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t (c, d, e, r), fence
                     ON CONFLICT (cluster) DO UPDATE SET digest = excluded.digest,
                       environment = excluded.environment, revision = excluded.revision,
                       epoch = excluded.epoch, published_at = now()",
                    &[clusters, digests, environments, revisions, &epoch],
                )
                .await
                .map_err(db)?;
            if written == 0 && !clusters.is_empty() {
                let current: i64 =
                    txn.query_one("SELECT epoch FROM convoy_leader WHERE id = 1", &[]).await.map_err(db)?.get(0);
                return Err(StoreError::Fenced { epoch, current });
            }
            txn.execute(
                "SELECT pg_notify($1, c || ' ' || d) FROM unnest($2::text[], $3::text[]) AS t (c, d)",
                &[&PUBLISHED_CHANNEL, clusters, digests],
            )
            .await
            .map_err(db)?;
            txn.commit().await.map_err(db)
        })?;
        let mut written = self.published_apps.lock().unwrap_or_else(|e| e.into_inner());
        for a in assignments {
            written.insert(a.cluster.clone(), a.app_digests.clone());
        }
        Ok(())
    }

    /// Prunes ([`PgStore::prune`]) [`PRUNE_AFTER`] from now on a thread of its own, unless a
    /// prune is waiting or running already: a commit's fan-out goes first, its leftovers later.
    pub fn prune_soon(self: &Arc<Self>) {
        if self.pruning.swap(true, Ordering::SeqCst) {
            return;
        }
        let store = self.clone();
        let prune = move || {
            std::thread::sleep(PRUNE_AFTER);
            match store.prune() {
                Ok((bodies, apps)) => tracing::debug!(bodies, apps, "pruned what no cluster's assignment uses"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prune assignments no cluster uses; the next publish tries again")
                }
            }
            store.pruning.store(false, Ordering::SeqCst);
        };
        if let Err(e) = std::thread::Builder::new().name("convoy-prune".into()).spawn(prune) {
            tracing::warn!(error = %e, "cannot start pruning assignments no cluster uses");
            self.pruning.store(false, Ordering::SeqCst);
        }
    }

    /// Deletes the assignment bodies that are no cluster's published assignment and the apps no
    /// body names: what each commit leaves behind. Only while this replica leads (the leader row
    /// is share-locked, as a publish does, so it never races another leader's publish). Returns
    /// how many bodies and apps went.
    pub fn prune(&self) -> Result<(u64, u64)> {
        let epoch = self.fence.get();
        let writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let pruned = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = client.transaction().await.map_err(db)?;
            if leader_epoch(&txn).await? != epoch {
                return Ok((0, 0));
            }
            let bodies = txn
                .execute(
                    "DELETE FROM convoy_assignments a
                     WHERE NOT EXISTS (SELECT 1 FROM convoy_published p WHERE p.digest = a.digest)",
                    &[],
                )
                .await
                .map_err(db)?;
            let apps = txn
                .execute(
                    "WITH named AS (SELECT DISTINCT unnest(apps) AS digest FROM convoy_assignments)
                     DELETE FROM convoy_apps x WHERE NOT EXISTS (SELECT 1 FROM named WHERE named.digest = x.digest)",
                    &[],
                )
                .await
                .map_err(db)?;
            txn.commit().await.map_err(db)?;
            Ok((bodies, apps))
        });
        drop(writing);
        pruned
    }

    /// The published assignments: every cluster's, or only those of `clusters`. `held` gives
    /// what this replica holds for a cluster: an app it holds already (same digest) is shared
    /// from there, neither read nor parsed again, so following a one-app change reads one app
    /// per cluster.
    pub fn published(
        &self,
        clusters: Option<&[String]>,
        held: impl Fn(&str) -> Option<Arc<Assignment>>,
    ) -> Result<Vec<Assignment>> {
        let clusters = clusters.map(<[String]>::to_vec);
        let rows: Vec<(String, String, String, proto::Assignment)> = self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "SELECT p.cluster, p.environment, p.revision, a.body FROM convoy_published p
                     JOIN convoy_assignments a ON a.digest = p.digest
                     WHERE $1::text[] IS NULL OR p.cluster = ANY($1)",
                    &[&clusters],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| {
                    let wire = proto::Assignment::decode(row.get::<_, &[u8]>(3)).map_err(db)?;
                    Ok((row.get(0), row.get(1), row.get(2), wire))
                })
                .collect()
        })?;
        let held: Vec<Option<Arc<Assignment>>> = rows.iter().map(|(cluster, ..)| held(cluster)).collect();
        let held_app = |held: &Option<Arc<Assignment>>, digest: &str| {
            held.as_ref()?.digested_apps().find(|(d, _)| *d == digest).map(|(_, app)| app.clone())
        };
        let wanted: BTreeSet<String> = rows
            .iter()
            .zip(&held)
            .flat_map(|((.., wire), held)| {
                wire.apps
                    .iter()
                    .filter(|a| a.by_digest && held_app(held, &a.digest).is_none())
                    .map(|a| a.digest.clone())
            })
            .collect();
        let parts: HashMap<String, proto::AppAssignment> = if wanted.is_empty() {
            HashMap::new()
        } else {
            let wanted: Vec<String> = wanted.into_iter().collect();
            self.run(move |pool| async move {
                let client = pool.get().await?;
                let rows = client
                    .query("SELECT digest, body FROM convoy_apps WHERE digest = ANY($1)", &[&wanted])
                    .await
                    .map_err(db)?;
                rows.iter()
                    .map(|row| Ok((row.get(0), proto::AppAssignment::decode(row.get::<_, &[u8]>(1)).map_err(db)?)))
                    .collect()
            })?
        };
        rows.into_iter()
            .zip(&held)
            .map(|((cluster, environment, revision, mut wire), held)| {
                for app in wire.apps.iter_mut().filter(|a| a.by_digest) {
                    if let Some(part) = parts.get(&app.digest) {
                        *app = part.clone();
                    }
                }
                let read = Assignment::from_wire(&wire, |digest| held_app(held, digest).map(HeldObjects::Held));
                let mut assignment = read.map_err(|e| {
                    db(format!("the published assignment {} of cluster {cluster} does not read: {e}", wire.digest))
                })?;
                assignment.cluster = cluster;
                assignment.environment = environment;
                assignment.revision = revision;
                Ok(assignment)
            })
            .collect()
    }

    /// `cluster`'s last stored report.
    pub fn last_report(&self, cluster: &str) -> Result<Option<Report>> {
        let cluster = cluster.to_string();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_opt("SELECT report FROM convoy_reports WHERE cluster = $1", &[&cluster])
                .await
                .map_err(db)?;
            row.map(|row| Report::decode(row.get::<_, &[u8]>(0)).map_err(db)).transpose()
        })
    }

    /// The audit record written as number `seq`.
    pub fn audit_record(&self, seq: i64) -> Result<Option<AuditRecord>> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let row = client.query_opt("SELECT record FROM convoy_audit WHERE seq = $1", &[&seq]).await.map_err(db)?;
            row.map(|row| AuditRecord::decode(row.get::<_, &[u8]>(0)).map_err(db)).transpose()
        })
    }

    /// The outbox entries a query with a `LIMIT $1` selects.
    fn outbox_rows(&self, sql: &'static str, limit: i64) -> Result<Vec<OutboxEntry>> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client.query(sql, &[&limit]).await.map_err(db)?;
            rows.iter().map(|row| serde_json::from_str(row.get::<_, &str>(0)).map_err(db)).collect()
        })
    }

    /// Every row of a two-text-column query.
    fn strings(&self, sql: &'static str) -> Result<Vec<(String, String)>> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client.query(sql, &[]).await.map_err(db)?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }
}

/// Applies the migrations this database lacks, one replica at a time.
async fn migrate(client: &mut Client) -> Result<()> {
    let txn = client.transaction().await.map_err(db)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS convoy_migrations (version integer PRIMARY KEY,
                                                      applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db)?;
    let applied: i32 =
        txn.query_one("SELECT coalesce(max(version), 0) FROM convoy_migrations", &[]).await.map_err(db)?.get(0);
    let known = MIGRATIONS.last().map(|(version, _)| *version).unwrap_or_default();
    if applied > known {
        return Err(StoreError::Schema { found: applied, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
        txn.batch_execute(sql).await.map_err(db)?;
        txn.execute("INSERT INTO convoy_migrations (version) VALUES ($1)", &[version]).await.map_err(db)?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    txn.commit().await.map_err(db)
}

impl Store for PgStore {
    fn write(&self, events: &[StoreEvent]) -> Result<()> {
        // One statement per table for the whole batch (arrays unnested in the database): a
        // cluster's last report in the batch wins, history keeps its order.
        let mut reports = BTreeMap::new();
        let (mut history_clusters, mut history_entries) = (Vec::new(), Vec::new());
        let (mut rollouts, mut pins) = (BTreeMap::new(), BTreeMap::new());
        let mut access: Option<(String, String)> = None;
        for event in events {
            match event {
                StoreEvent::Report { cluster, report } => {
                    reports.insert(cluster.clone(), report.encode_to_vec());
                }
                StoreEvent::History { cluster, entry } => {
                    history_clusters.push(cluster.clone());
                    history_entries.push(entry.encode_to_vec());
                }
                StoreEvent::Rollout { environment, state } => {
                    rollouts.insert(environment.clone(), state.clone());
                }
                StoreEvent::Pin { environment, commit } => {
                    pins.insert(environment.clone(), commit.clone());
                }
                StoreEvent::Access { commit, spec } => access = Some((commit.clone(), spec.clone())),
            }
        }
        let (epoch, replica) = (self.fence.get(), self.replica.clone());
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = client.transaction().await.map_err(db)?;
            // Rollouts and pins are the leader's: they are written only while this replica's
            // epoch is the database's (share-locked until commit, like a publication).
            if !rollouts.is_empty() || !pins.is_empty() || access.is_some() {
                let current = leader_epoch(&txn).await?;
                if current == epoch {
                    for (environment, state) in &rollouts {
                        txn.execute(
                            "INSERT INTO convoy_rollouts (environment, state) VALUES ($1, $2)
                             ON CONFLICT (environment) DO UPDATE SET state = excluded.state",
                            &[environment, state],
                        )
                        .await
                        .map_err(db)?;
                    }
                    for (environment, commit) in &pins {
                        let written = match commit {
                            Some(commit) => {
                                txn.execute(
                                    "INSERT INTO convoy_pins (environment, commit) VALUES ($1, $2)
                                     ON CONFLICT (environment) DO UPDATE SET commit = excluded.commit",
                                    &[environment, commit],
                                )
                                .await
                            }
                            None => txn.execute("DELETE FROM convoy_pins WHERE environment = $1", &[environment]).await,
                        };
                        written.map_err(db)?;
                    }
                    if let Some((commit, spec)) = &access {
                        txn.execute(
                            "INSERT INTO convoy_access (id, commit, spec) VALUES (1, $1, $2)
                             ON CONFLICT (id) DO UPDATE SET commit = excluded.commit, spec = excluded.spec",
                            &[commit, spec],
                        )
                        .await
                        .map_err(db)?;
                        // The followers put it in force too.
                        txn.execute("SELECT pg_notify($1, $2)", &[&ACCESS_CHANNEL, commit]).await.map_err(db)?;
                    }
                } else {
                    tracing::error!(
                        epoch,
                        current,
                        "rollout, pin and access policy changes refused: this replica no longer leads (another replica took over)"
                    );
                }
            }
            if !reports.is_empty() {
                let (clusters, bodies): (Vec<String>, Vec<Vec<u8>>) = reports.into_iter().unzip();
                txn.execute(
                    "INSERT INTO convoy_reports (cluster, report) SELECT * FROM unnest($1::text[], $2::bytea[])
                     ON CONFLICT (cluster) DO UPDATE SET report = excluded.report",
                    &[&clusters, &bodies],
                )
                .await
                .map_err(db)?;
                // The other replicas take these reports into their status tables.
                txn.execute(
                    "SELECT pg_notify($1, $2 || ' ' || cluster) FROM unnest($3::text[]) AS cluster",
                    &[&REPORTS_CHANNEL, &replica, &clusters],
                )
                .await
                .map_err(db)?;
            }
            if !history_entries.is_empty() {
                txn.execute(
                    "INSERT INTO convoy_history (cluster, entry)
                     SELECT cluster, entry FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(cluster, entry, n)
                     ORDER BY n",
                    &[&history_clusters, &history_entries],
                )
                .await
                .map_err(db)?;
            }
            txn.commit().await.map_err(db)
        })
    }

    fn last_reports(&self) -> Result<Vec<(String, Report)>> {
        self.run(|pool| async move {
            let client = pool.get().await?;
            let rows = client.query("SELECT cluster, report FROM convoy_reports", &[]).await.map_err(db)?;
            rows.iter().map(|row| Ok((row.get(0), Report::decode(row.get::<_, &[u8]>(1)).map_err(db)?))).collect()
        })
    }

    fn history(&self, cluster: &str, limit: usize) -> Result<Vec<HistoryEntry>> {
        let (cluster, limit) = (cluster.to_string(), i64::try_from(limit).unwrap_or(i64::MAX));
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "SELECT entry FROM convoy_history WHERE cluster = $1 ORDER BY seq DESC LIMIT $2",
                    &[&cluster, &limit],
                )
                .await
                .map_err(db)?;
            rows.iter().map(|row| HistoryEntry::decode(row.get::<_, &[u8]>(0)).map_err(db)).collect()
        })
    }

    fn put_token(&self, hash: &str, token: &TokenRecord) -> Result<()> {
        let (hash, json) = (hash.to_string(), serde_json::to_string(token).map_err(db)?);
        self.run(move |pool| async move {
            let client = pool.get().await?;
            client
                .execute(
                    "INSERT INTO convoy_tokens (hash, record) VALUES ($1, $2)
                     ON CONFLICT (hash) DO UPDATE SET record = excluded.record",
                    &[&hash, &json],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
    }

    fn redeem_token(&self, hash: &str, now: i64) -> Result<Redeemed> {
        let hash = hash.to_string();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = client.transaction().await.map_err(db)?;
            // The row lock makes read-check-write one step across replicas.
            let row = txn
                .query_opt("SELECT record FROM convoy_tokens WHERE hash = $1 FOR UPDATE", &[&hash])
                .await
                .map_err(db)?;
            let record = row.map(|row| serde_json::from_str::<TokenRecord>(row.get(0)).map_err(db)).transpose()?;
            let (outcome, write) = redeem(record, now);
            if let Some(record) = write {
                let json = serde_json::to_string(&record).map_err(db)?;
                txn.execute("UPDATE convoy_tokens SET record = $2 WHERE hash = $1", &[&hash, &json])
                    .await
                    .map_err(db)?;
            }
            txn.commit().await.map_err(db)?;
            Ok(outcome)
        })
    }

    fn put_registration(&self, registration: &Registration) -> Result<()> {
        let (cluster, json) = (registration.cluster.clone(), serde_json::to_string(registration).map_err(db)?);
        self.run(move |pool| async move {
            let client = pool.get().await?;
            client
                .execute(
                    "INSERT INTO convoy_registrations (cluster, registration) VALUES ($1, $2)
                     ON CONFLICT (cluster) DO UPDATE SET registration = excluded.registration",
                    &[&cluster, &json],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
    }

    fn registrations(&self) -> Result<Vec<Registration>> {
        let rows = self.strings("SELECT cluster, registration FROM convoy_registrations ORDER BY cluster")?;
        rows.iter().map(|(_, json)| serde_json::from_str(json).map_err(db)).collect()
    }

    fn put_revocation(&self, cluster: &str, at: i64) -> Result<()> {
        let cluster = cluster.to_string();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = client.transaction().await.map_err(db)?;
            txn.execute(
                "INSERT INTO convoy_revocations (cluster, at_unix_ms) VALUES ($1, $2)
                 ON CONFLICT (cluster) DO UPDATE SET at_unix_ms = excluded.at_unix_ms",
                &[&cluster, &at],
            )
            .await
            .map_err(db)?;
            // Every replica refuses the cluster from now on, not only this one.
            txn.execute("SELECT pg_notify($1, $2)", &[&REVOCATIONS_CHANNEL, &format!("{cluster} {at}")])
                .await
                .map_err(db)?;
            txn.commit().await.map_err(db)
        })
    }

    fn access_policy(&self) -> Result<Option<(String, String)>> {
        self.run(|pool| async move {
            let client = pool.get().await?;
            let row = client.query_opt("SELECT commit, spec FROM convoy_access WHERE id = 1", &[]).await.map_err(db)?;
            Ok(row.map(|row| (row.get(0), row.get(1))))
        })
    }

    fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let (at, user, body) = (record.at_unix_ms, record.user.clone(), record.encode_to_vec());
        let replica = self.replica.clone();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            // One statement: the record and its announcement commit together.
            client
                .execute(
                    "WITH written AS (INSERT INTO convoy_audit (at_unix_ms, username, record) VALUES ($1, $2, $3) RETURNING seq)
                     SELECT pg_notify($4, $5 || ' ' || seq) FROM written",
                    &[&at, &user, &body, &AUDIT_CHANNEL, &replica],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
    }

    fn audit(&self, since_ms: i64, user: &str, limit: usize) -> Result<Vec<AuditRecord>> {
        let (user, limit) = (user.to_string(), i64::try_from(limit).unwrap_or(i64::MAX));
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "SELECT record FROM convoy_audit WHERE at_unix_ms >= $1 AND ($2 = '' OR username = $2)
                     ORDER BY at_unix_ms, seq LIMIT $3",
                    &[&since_ms, &user, &limit],
                )
                .await
                .map_err(db)?;
            rows.iter().map(|row| AuditRecord::decode(row.get::<_, &[u8]>(0)).map_err(db)).collect()
        })
    }

    fn outbox_push(&self, entries: &[OutboxEntry]) -> Result<()> {
        let entries = entries.to_vec();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let txn = client.transaction().await.map_err(db)?;
            let newest = entries.iter().map(|e| e.created_ms).max().unwrap_or(0);
            txn.execute(
                "DELETE FROM convoy_outbox WHERE state = 'delivered' AND created_ms < $1",
                &[&(newest - OUTBOX_KEEP_MS)],
            )
            .await
            .map_err(db)?;
            for entry in entries {
                let row = txn
                    .query_one("SELECT nextval(pg_get_serial_sequence('convoy_outbox', 'seq'))", &[])
                    .await
                    .map_err(db)?;
                let entry = OutboxEntry { seq: row.get(0), ..entry };
                let json = serde_json::to_string(&entry).map_err(db)?;
                txn.execute(
                    "INSERT INTO convoy_outbox (seq, receiver, state, created_ms, entry) VALUES ($1, $2, $3, $4, $5)",
                    &[&entry.seq, &entry.receiver, &entry.state.as_str(), &entry.created_ms, &json],
                )
                .await
                .map_err(db)?;
            }
            txn.commit().await.map_err(db)
        })
    }

    fn outbox_pending(&self, receiver: Option<&str>, limit: usize) -> Result<Vec<OutboxEntry>> {
        let (receiver, limit) = (receiver.map(str::to_string), i64::try_from(limit).unwrap_or(i64::MAX));
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "SELECT entry FROM convoy_outbox WHERE state = 'pending' AND ($1::text IS NULL OR receiver = $1)
                     ORDER BY seq LIMIT $2",
                    &[&receiver, &limit],
                )
                .await
                .map_err(db)?;
            rows.iter().map(|row| serde_json::from_str(row.get::<_, &str>(0)).map_err(db)).collect()
        })
    }

    fn outbox_settle(&self, entry: &OutboxEntry) -> Result<()> {
        let entry = entry.clone();
        self.run(move |pool| async move {
            let json = serde_json::to_string(&entry).map_err(db)?;
            let client = pool.get().await?;
            client
                .execute(
                    "UPDATE convoy_outbox SET state = $2, entry = $3 WHERE seq = $1",
                    &[&entry.seq, &entry.state.as_str(), &json],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
    }

    fn outbox_recent(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.outbox_rows("SELECT entry FROM convoy_outbox ORDER BY seq DESC LIMIT $1", limit)
    }

    fn revocations(&self) -> Result<Vec<(String, i64)>> {
        self.run(|pool| async move {
            let client = pool.get().await?;
            let rows = client.query("SELECT cluster, at_unix_ms FROM convoy_revocations", &[]).await.map_err(db)?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn rollouts(&self) -> Result<Vec<(String, String)>> {
        self.strings("SELECT environment, state FROM convoy_rollouts ORDER BY environment")
    }

    fn pins(&self) -> Result<Vec<(String, String)>> {
        self.strings("SELECT environment, commit FROM convoy_pins ORDER BY environment")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::leadership::{Lead, Leadership};
    use crate::store::tests::{entry, exercise, exercise_registration};
    use crate::testing::{TestPostgres, assignment};

    async fn lead(store: &PgStore, holder: &str) -> Lead {
        Leadership::new(store.config().clone(), store.fence().clone(), holder.into()).acquire().await
    }

    #[test]
    fn postgres_store_keeps_the_stores_contract_and_survives_a_reconnect() {
        let server = TestPostgres::start();
        let url = server.database();
        let store = PgStore::connect(&url).unwrap();
        // Rollouts and pins are the leader's to write.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let _lead = runtime.block_on(lead(&store, "test"));
        exercise(&store);
        exercise_registration(&store);

        let reopened = PgStore::connect(&url).unwrap();
        assert_eq!(reopened.history("eu-1", 10).unwrap().len(), 2);
        reopened.write(&[StoreEvent::History { cluster: "eu-1".into(), entry: entry("assigned", "r2") }]).unwrap();
        assert_eq!(reopened.history("eu-1", 1).unwrap()[0].revision, "r2");
        assert_eq!(reopened.last_reports().unwrap().len(), 1);
        assert!(matches!(reopened.redeem_token("live", 162).unwrap(), Redeemed::AlreadyUsed(_)));
        assert_eq!(reopened.revocations().unwrap().len(), 1);
        assert_eq!(reopened.pins().unwrap().len(), 1, "pins outlive the connection");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_published_app_is_stored_once_and_a_change_writes_only_the_changed_app() {
        use convoy_shared::model::AppAssignment;
        let server = TestPostgres::start();
        let url = server.database();
        let store = Arc::new(PgStore::connect(&url).unwrap());
        let _lead = lead(&store, "a").await;
        let app = |name: &str, value: &str| AppAssignment {
            name: name.into(),
            objects: vec![serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "n"}, "data": {"v": value}})]
            .into(),
            ..assignment("x", "r").apps[0].as_ref().clone()
        };
        let fleet = |revision: &str, web: &str| -> Vec<Arc<Assignment>> {
            ["eu-1", "us-1"]
                .map(|cluster| {
                    let apps = vec![app("platform", "shared"), app("web", &format!("{web} {cluster}"))];
                    Arc::new(Assignment::new(cluster, "prod", revision, apps, false))
                })
                .into()
        };
        let admin = connect(store.config()).await.unwrap();
        let stored_apps =
            async || -> i64 { admin.query_one("SELECT count(*) FROM convoy_apps", &[]).await.unwrap().get(0) };
        let publish_and_read = async |assignments: Vec<Arc<Assignment>>| {
            let writer = store.clone();
            let written = assignments.clone();
            tokio::task::spawn_blocking(move || writer.publish(&written)).await.unwrap().unwrap();
            let reader = store.clone();
            let mut read =
                tokio::task::spawn_blocking(move || reader.published(None, |_| None)).await.unwrap().unwrap();
            read.sort_by(|a, b| a.cluster.cmp(&b.cluster));
            let expected: Vec<Assignment> =
                assignments.iter().map(|a| Assignment { trace_context: Default::default(), ..(**a).clone() }).collect();
            assert_eq!(read, expected, "every replica reads the assignments back whole");
        };

        let first = fleet("r1", "hello");
        publish_and_read(first.clone()).await;
        assert_eq!(stored_apps().await, 3, "platform once for both clusters, web once per cluster");
        publish_and_read(fleet("r2", "hi")).await;
        assert_eq!(stored_apps().await, 5, "the change wrote the changed app of each cluster, nothing else");

        // A replica holding r1 reads r2 sharing the app that did not change.
        let reader = store.clone();
        let holding = first.clone();
        let mut followed = tokio::task::spawn_blocking(move || {
            reader.published(None, |cluster| holding.iter().find(|a| a.cluster == cluster).cloned())
        })
        .await
        .unwrap()
        .unwrap();
        followed.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        for (now, before) in followed.iter().zip(&first) {
            assert_eq!(now.revision, "r2");
            assert!(Arc::ptr_eq(&now.apps[0], &before.apps[0]), "platform is shared from what the replica holds");
            assert!(now.apps[1].objects[0]["data"]["v"].as_str().unwrap().starts_with("hi "));
        }

        // What r1 left behind is pruned by the leader only, and r2 still reads whole.
        let follower = Arc::new(PgStore::connect(&url).unwrap());
        let prune = |store: &Arc<PgStore>| {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.prune())
        };
        assert_eq!(prune(&follower).await.unwrap().unwrap(), (0, 0), "a replica that does not lead prunes nothing");
        assert_eq!(prune(&store).await.unwrap().unwrap(), (2, 2), "r1's bodies and its two web apps");
        assert_eq!(stored_apps().await, 3);
        publish_and_read(fleet("r2", "hi")).await;

        // A body written before apps were stored apart names them inline, and reads so.
        let old = assignment("ap-1", "old");
        let body = proto::Assignment::from(&old).encode_to_vec();
        admin
            .execute("INSERT INTO convoy_assignments (digest, body) VALUES ($1, $2)", &[&old.digest, &body])
            .await
            .unwrap();
        admin
            .execute(
                "INSERT INTO convoy_published (cluster, digest, environment, revision, epoch) VALUES ('ap-1', $1, 'prod', 'old', 0)",
                &[&old.digest],
            )
            .await
            .unwrap();
        let reader = store.clone();
        let read = tokio::task::spawn_blocking(move || reader.published(Some(&["ap-1".to_string()]), |_| None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, [old]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_replica_whose_lock_session_ended_cannot_publish_once_another_leads() {
        let server = TestPostgres::start();
        let url = server.database();
        let (a, b) = (Arc::new(PgStore::connect(&url).unwrap()), Arc::new(PgStore::connect(&url).unwrap()));
        let lead_a = lead(&a, "a").await;
        let publish = |store: &Arc<PgStore>, greeting: &'static str| {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.publish(&[Arc::new(assignment("eu-1", greeting))]))
        };
        publish(&a, "r1").await.unwrap().unwrap();

        // What a pause longer than the lease does: the server ends the leader's lock session.
        let admin = connect(b.config()).await.unwrap();
        let ended = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted",
                &[&((LEADER_LOCK & 0xffff_ffff) as u32)],
            )
            .await
            .unwrap();
        assert_eq!(ended.len(), 1, "the leader's lock session was found");
        let lead_b = lead(&b, "b").await;
        assert!(lead_b.epoch > lead_a.epoch);

        let refused = publish(&a, "stale").await.unwrap().unwrap_err();
        assert!(
            matches!(refused, StoreError::Fenced { epoch, current } if epoch == lead_a.epoch && current == lead_b.epoch),
            "{refused}"
        );
        a.write(&[StoreEvent::Pin { environment: "prod".into(), commit: Some("stale".into()) }]).unwrap();
        lead_a.lost().await;

        publish(&b, "r2").await.unwrap().unwrap();
        let reader = a.clone();
        let published = tokio::task::spawn_blocking(move || reader.published(None, |_| None)).await.unwrap().unwrap();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].revision, "r2", "the new leader's assignment, never the stale one");
        assert_eq!(published[0].digest, assignment("eu-1", "r2").digest);
        let reader = a.clone();
        assert!(tokio::task::spawn_blocking(move || reader.pins()).await.unwrap().unwrap().is_empty());
    }
}

//! One replica of a hub that shares a PostgreSQL database with others. Until it leads, it follows:
//! every assignment the leader publishes (announced with `NOTIFY`, fetched by digest) is served to
//! its agents too, and it runs no Git sync or planner. Once it leads
//! ([`crate::store::leadership`]), it runs the sync loop, publishing through the fence; losing
//! the lead stops the replica (its orchestrator restarts it as a follower). Every replica relays the reports other replicas
//! stored into its own status table, so the leader's rollouts see every cluster, and the
//! revocations they recorded, so a revoked cluster is refused by every replica at once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::source::SourceConfig;
use crate::state::hub::{Hub, Publisher};
use crate::store::Store as _;
use crate::store::StoreError;
use crate::store::leadership::Leadership;
use crate::store::postgres::{
    ACCESS_CHANNEL, AUDIT_CHANNEL, PUBLISHED_CHANNEL, PgStore, REPORTS_CHANNEL, REVOCATIONS_CHANNEL,
};

/// Pause before listening again after the notification session failed.
const RELISTEN: Duration = Duration::from_secs(1);
/// Announcements waiting to be handled.
const NOTICES: usize = 1024;

/// Why a replica stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("this replica lost the lead (epoch {epoch}); it stops so that it restarts as a follower")]
    LostLead { epoch: i64 },
}

/// A replica's database and its bid for the lead.
#[derive(Debug)]
pub struct Replication {
    store: Arc<PgStore>,
    leadership: Leadership,
}

impl Replication {
    /// Replication over `store`; the lead is recorded under `holder` (host name, address).
    pub fn new(store: Arc<PgStore>, holder: String) -> Self {
        let leadership = Leadership::new(store.config().clone(), store.fence().clone(), holder);
        Replication { store, leadership }
    }
}

/// Follows until this replica leads, then runs `source` (if any) as the leader until `shutdown`.
pub async fn run(
    replication: Replication,
    source: Option<SourceConfig>,
    mut publisher: Publisher,
    shutdown: CancellationToken,
) -> Result<(), ReplicationError> {
    let Replication { store, leadership } = replication;
    let (notices, mut announced) = mpsc::channel(NOTICES);
    let stop_listening = shutdown.child_token();
    let listener = tokio::spawn(listen(store.clone(), publisher.hub().clone(), notices, stop_listening.clone()));
    let acquire = leadership.acquire();
    tokio::pin!(acquire);
    let lead = loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = listener.await;
                return Ok(());
            }
            lead = &mut acquire => break lead,
            Some(cluster) = announced.recv() => {
                // A commit's fan-out is announced cluster by cluster: read what is waiting at once.
                let mut clusters = vec![cluster];
                while let Ok(next) = announced.try_recv() {
                    clusters.push(next);
                }
                let clusters = clusters.into_iter().collect::<Option<Vec<String>>>();
                follow(&store, &publisher, clusters).await
            }
            // Rollout actions are the leader's: the asker is told this replica runs none.
            Some(request) = publisher.next_request() => drop(request),
        }
    };
    // What the last leader published is this one's starting point: its first plan publishes
    // only what differs.
    drop(announced);
    follow(&store, &publisher, None).await;
    publisher.replicate_to(store.clone());
    let stop = shutdown.child_token();
    let lost = lead.token();
    let watch = tokio::spawn({
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = lost.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        }
    });
    match source {
        Some(source) => crate::sync::run(source, publisher, stop.clone()).await,
        None => {
            // No source, no rollouts: rollout actions are answered at once.
            drop(publisher);
            stop.cancelled().await
        }
    }
    stop.cancel();
    let _ = watch.await;
    stop_listening.cancel();
    let _ = listener.await;
    if shutdown.is_cancelled() { Ok(()) } else { Err(ReplicationError::LostLead { epoch: lead.epoch }) }
}

/// Serves what the leader published: `clusters`' assignments, or every cluster's (`None`).
async fn follow(store: &Arc<PgStore>, publisher: &Publisher, clusters: Option<Vec<String>>) {
    let (reader, hub) = (store.clone(), publisher.hub().clone());
    let read = move || reader.published(clusters.as_deref(), |cluster| hub.assignment(cluster));
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(assignments)) => {
            for assignment in assignments {
                publisher.follow(Arc::new(assignment));
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the leader's assignments; agents keep the ones they have")
        }
        Err(e) => tracing::error!(error = %e, "reading the leader's assignments panicked"),
    }
}

/// Listens for announcements until `stop`: publications go to `notices` (`None`: read them all,
/// after a gap in listening), other replicas' reports into the hub's status table.
async fn listen(store: Arc<PgStore>, hub: Arc<Hub>, notices: mpsc::Sender<Option<String>>, stop: CancellationToken) {
    loop {
        if let Err(e) = listen_once(&store, &hub, &notices, &stop).await {
            tracing::warn!(error = %e, "listening to the other replicas failed; listening again");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RELISTEN) => {}
        }
    }
}

async fn listen_once(
    store: &Arc<PgStore>,
    hub: &Arc<Hub>,
    notices: &mpsc::Sender<Option<String>>,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let config = store.config();
    let database = |e: tokio_postgres::Error| StoreError::Database {
        target: crate::store::postgres::target(config),
        message: e.to_string(),
    };
    let (client, mut connection) = config.connect(NoTls).await.map_err(database)?;
    let (messages, mut received) = mpsc::channel(NOTICES);
    // The connection task owns the session; it ends when `client` is dropped below.
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if messages.send(notification).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the notification session failed");
                    return;
                }
            }
        }
    });
    let channels = format!(
        "LISTEN {PUBLISHED_CHANNEL}; LISTEN {REPORTS_CHANNEL}; LISTEN {REVOCATIONS_CHANNEL}; LISTEN {ACCESS_CHANNEL}; \
         LISTEN {AUDIT_CHANNEL}"
    );
    client.batch_execute(&channels).await.map_err(database)?;
    // Whatever was announced while no one listened is read whole: the publications, the
    // reports other replicas stored (an agent's report stored between this replica's start and
    // its LISTEN would otherwise never reach its status table) and the access policy.
    let _ = notices.send(None).await;
    let reader = store.clone();
    match tokio::task::spawn_blocking(move || Ok::<_, StoreError>((reader.last_reports()?, reader.access_policy()?)))
        .await
    {
        Ok(Ok((reports, access))) => {
            for (cluster, report) in reports {
                hub.relay_report(&cluster, report);
            }
            if let Some((commit, spec)) = access {
                hub.access().restore(&commit, &spec);
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read what the other replicas stored while this one was not listening")
        }
        Err(e) => tracing::error!(error = %e, "reading the other replicas' reports panicked"),
    }
    loop {
        let notification = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            notification = received.recv() => notification,
        };
        let Some(notification) = notification else {
            return Err(StoreError::Database {
                target: crate::store::postgres::target(config),
                message: "the notification session closed".into(),
            });
        };
        let payload = notification.payload();
        if notification.channel() == PUBLISHED_CHANNEL {
            let cluster = payload.split(' ').next().unwrap_or_default().to_string();
            // A replica that leads has stopped reading these: nothing to follow.
            let _ = notices.send(Some(cluster)).await;
        } else if notification.channel() == ACCESS_CHANNEL {
            // The leader put a new access policy in force: this replica answers by it too.
            let reader = store.clone();
            match tokio::task::spawn_blocking(move || reader.access_policy()).await {
                Ok(Ok(Some((commit, spec)))) => hub.access().restore(&commit, &spec),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the access policy the leader put in force"),
                Err(e) => tracing::error!(error = %e, "reading the access policy panicked"),
            }
        } else if notification.channel() == AUDIT_CHANNEL {
            // Another replica's audit record, for this replica's `--follow` readers.
            if let Some((replica, seq)) = payload.split_once(' ')
                && replica != store.replica()
                && let Ok(seq) = seq.parse()
            {
                let reader = store.clone();
                match tokio::task::spawn_blocking(move || reader.audit_record(seq)).await {
                    Ok(Ok(Some(record))) => hub.access().relay(record),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::warn!(seq, error = %e, "cannot read an audit record another replica wrote"),
                    Err(e) => tracing::error!(seq, error = %e, "reading a relayed audit record panicked"),
                }
            }
        } else if notification.channel() == REVOCATIONS_CHANNEL {
            if let Some((cluster, at)) = payload.split_once(' ')
                && let Ok(at) = at.parse()
            {
                hub.relay_revocation(cluster, at);
            }
        } else if let Some((replica, cluster)) = payload.split_once(' ')
            && replica != store.replica()
        {
            let (reader, cluster) = (store.clone(), cluster.to_string());
            let name = cluster.clone();
            match tokio::task::spawn_blocking(move || reader.last_report(&name)).await {
                Ok(Ok(Some(report))) => hub.relay_report(&cluster, report),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(cluster, error = %e, "cannot read a report another replica stored"),
                Err(e) => tracing::error!(cluster, error = %e, "reading a relayed report panicked"),
            }
        }
    }
}

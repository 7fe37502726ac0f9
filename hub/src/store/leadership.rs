//! Which replica leads (runs the Git sync, the planner and rollouts): the one holding a
//! PostgreSQL advisory lock on a session of its own. Taking the lead bumps the epoch in
//! `convoy_leader`; every leader-only write carries the epoch it was taken at and is refused
//! once the database holds a newer one (the fence), so a replica that lost the lock without
//! noticing — paused, partitioned — publishes nothing.
//!
//! The lock's session is the lease: a crashed replica's connection closes and the lock goes with
//! it; a paused one stops talking, and the server ends its session after [`LEASE`] of silence
//! (`idle_session_timeout`). The leader talks every [`LEASE`]/5 and steps down the moment its
//! session fails or the epoch moved.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::store::postgres::{Fence, LEADER_LOCK, connect};
use crate::store::{Result, StoreError};

/// Silence after which the database ends a leader's session, and so its lock.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often a follower tries the lock.
const CAMPAIGN: Duration = Duration::from_millis(500);

/// One replica's bid for the lead.
#[derive(Debug)]
pub struct Leadership {
    config: tokio_postgres::Config,
    fence: Fence,
    /// Who holds the lead, as `convoy_leader.holder` shows it.
    holder: String,
}

/// The lead, while it lasts.
#[derive(Debug)]
pub struct Lead {
    pub epoch: i64,
    /// Cancelled when the lead is lost; the heartbeat task owns the lock's session.
    lost: CancellationToken,
}

impl Lead {
    /// Resolves when this replica no longer leads.
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }

    /// A token cancelled when the lead is lost.
    pub fn token(&self) -> CancellationToken {
        self.lost.clone()
    }
}

impl Leadership {
    /// Campaigns on the database `config` names, setting `fence` on taking the lead.
    pub fn new(config: tokio_postgres::Config, fence: Fence, holder: String) -> Self {
        Leadership { config, fence, holder }
    }

    /// Waits until this replica leads (retrying through database outages).
    pub async fn acquire(&self) -> Lead {
        loop {
            match self.campaign().await {
                Ok(lead) => return lead,
                Err(e) => {
                    tracing::warn!(error = %e, "campaigning for the lead failed; trying again");
                    tokio::time::sleep(CAMPAIGN).await;
                }
            }
        }
    }

    /// Opens the lock's session and tries the lock until it is ours.
    async fn campaign(&self) -> Result<Lead> {
        let client = connect(&self.config).await?;
        client
            .batch_execute(&format!("SET idle_session_timeout = {}", LEASE.as_millis()))
            .await
            .map_err(|e| StoreError::Db(e.into()))?;
        loop {
            let locked: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                .await
                .map_err(|e| StoreError::Db(e.into()))?
                .get(0);
            if locked {
                let epoch: i64 = client
                    .query_one(
                        "UPDATE convoy_leader SET epoch = epoch + 1, holder = $1, since = now() WHERE id = 1 RETURNING epoch",
                        &[&self.holder],
                    )
                    .await
                    .map_err(|e| StoreError::Db(e.into()))?
                    .get(0);
                self.fence.set(epoch);
                tracing::info!(epoch, holder = %self.holder, "leading: this replica runs the sync and the planner");
                let lost = CancellationToken::new();
                tokio::spawn(heartbeat(client, epoch, lost.clone()));
                return Ok(Lead { epoch, lost });
            }
            tokio::time::sleep(CAMPAIGN).await;
        }
    }
}

/// Keeps the lock's session talking; cancels `lost` (and drops the session, releasing the lock
/// if the server had not) once it fails or another replica's epoch is in the database.
async fn heartbeat(client: Client, epoch: i64, lost: CancellationToken) {
    let mut every = tokio::time::interval(LEASE / 5);
    loop {
        every.tick().await;
        match client.query_one("SELECT epoch FROM convoy_leader WHERE id = 1", &[]).await {
            Ok(row) if row.get::<_, i64>(0) == epoch => {}
            Ok(row) => {
                let current: i64 = row.get(0);
                tracing::error!(epoch, current, "lost the lead: another replica leads");
                break;
            }
            Err(e) => {
                tracing::error!(epoch, error = %e, "lost the lead: its database session failed");
                break;
            }
        }
    }
    lost.cancel();
}

//! The store's writer task: reports and history entries are queued and written in batches, so
//! recording one never blocks the runtime or waits for the disk or the database.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreEvent};

/// Events waiting for the writer before new ones are refused (and logged).
const QUEUE: usize = 16_384;
/// Events written per transaction at most.
const BATCH: usize = 1024;

/// The sending half of the writer task.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Queued>,
}

/// What the writer task takes: events to write, and flush requests answered once everything
/// queued before them is written.
enum Queued {
    Event(StoreEvent),
    Flush(oneshot::Sender<()>),
}

impl StoreWriter {
    /// Starts the writer task for `store`. It ends when every `StoreWriter` clone is dropped,
    /// after writing what was queued.
    pub fn spawn(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut flushed = Vec::new();
                let events: Vec<StoreEvent> = batch
                    .drain(..)
                    .filter_map(|queued| match queued {
                        Queued::Event(event) => Some(event),
                        Queued::Flush(done) => {
                            flushed.push(done);
                            None
                        }
                    })
                    .collect();
                if !events.is_empty() {
                    let store = store.clone();
                    match tokio::task::spawn_blocking(move || store.write(&events)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "store write failed"),
                        Err(e) => tracing::error!(error = %e, "store writer panicked"),
                    }
                }
                // The receiver may have stopped waiting; there is no one to tell then.
                for done in flushed {
                    let _ = done.send(());
                }
                // A short pause lets a burst (a commit reaching 10,000 clusters) share transactions.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        (StoreWriter { tx }, task)
    }

    /// Events queued and not yet written.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues an event; a full queue drops it with a warning rather than stall the caller.
    pub fn record(&self, event: StoreEvent) {
        if let Err(e) = self.tx.try_send(Queued::Event(event)) {
            tracing::warn!(error = %e, "store queue full; an audit event was not persisted");
        }
    }

    /// Waits until every event queued before this call is written (or failed, loudly).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Queued::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::tests::entry;

    #[tokio::test(flavor = "current_thread")]
    async fn the_writer_counts_what_waits_and_drains_it() {
        let store = Arc::new(MemoryStore::default());
        let (writer, task) = StoreWriter::spawn(store.clone());
        // On a current-thread runtime the writer task runs only when this test yields.
        for revision in ["r1", "r2", "r3"] {
            writer.record(StoreEvent::History { cluster: "eu-1".into(), entry: entry("assigned", revision) });
        }
        assert_eq!(writer.queued(), 3);
        drop(writer);
        task.await.unwrap();
        assert_eq!(store.history("eu-1", 10).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn flush_returns_once_what_was_queued_before_it_is_written() {
        let store = Arc::new(MemoryStore::default());
        let (writer, _task) = StoreWriter::spawn(store.clone());
        for revision in ["r1", "r2"] {
            writer.record(StoreEvent::History { cluster: "eu-1".into(), entry: entry("assigned", revision) });
        }
        assert!(store.history("eu-1", 10).unwrap().is_empty(), "nothing is written before the writer runs");
        writer.flush().await;
        assert_eq!(store.history("eu-1", 10).unwrap().len(), 2);
        assert_eq!(writer.queued(), 0);
    }
}

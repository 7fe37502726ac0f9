//! Admission of TLS handshakes: bounds on the handshakes in progress (overall and per source
//! address), so that clients which connect and then stall (a partial ClientHello, or nothing
//! at all) can never stop the hub accepting, while a storm of real agents (a whole fleet
//! reconnecting after a restart) is served in arrival order instead of shedding itself.
//!
//! Decisions:
//! - A connection within both bounds starts its handshake at once.
//! - Over a bound, it waits its turn (first come, first served, per source and overall); the
//!   accept loop itself never waits.
//! - A waiting connection sheds the oldest handshake in its way (of its source, or overall) only
//!   once that one has run for [`STALLED_AFTER`]: a real client finishes in milliseconds, and the
//!   one stalled longest is the likeliest attacker. A handshake still progressing is never shed
//!   for a newcomer, so the work done for it is not thrown away.
//! - A source over its own bound pays for itself: while connections from it wait for one of its
//!   places, its handshakes are shed only by them, never to make room overall.
//! - At most [`WAITING_PER_HANDSHAKE`] times the overall bound may wait; beyond that a newcomer
//!   is refused at once (it costs a socket while it waits).
//! - Waiting counts against the handshake timeout: a client is done within it or dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

/// How long a handshake runs before a waiting connection may shed it.
pub const STALLED_AFTER: Duration = Duration::from_secs(2);

/// Connections that may wait for a handshake place, per place overall.
pub const WAITING_PER_HANDSHAKE: usize = 16;

/// Bounds on TLS handshakes in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// How long a client may take to finish the handshake, waiting for its place included.
    pub timeout: Duration,
    /// Handshakes in progress at once.
    pub max_total: usize,
    /// Handshakes in progress from one IP address (many agents behind one NAT share one).
    pub max_per_source: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits { timeout: Duration::from_secs(10), max_total: 1024, max_per_source: 128 }
    }
}

/// Why a connection gets no handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections waiting for a handshake")]
    TooManyWaiting,
}

/// The handshakes in progress and the connections waiting for a place.
pub struct Handshakes {
    limits: HandshakeLimits,
    total: Arc<Semaphore>,
    /// A semaphore per source address with a handshake running or waiting; gone with the last.
    sources: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    running: Mutex<Running>,
    waiting: AtomicUsize,
}

#[derive(Default)]
struct Running {
    next_id: u64,
    /// By admission order: the first entry is the oldest handshake in progress, with when it
    /// started and the sender that tells it why it must make way.
    by_age: BTreeMap<u64, (IpAddr, Instant, oneshot::Sender<&'static str>)>,
    /// Handshakes in progress per source address, by admission order.
    by_source: HashMap<IpAddr, BTreeSet<u64>>,
    /// Connections waiting for a place of their source address, per address.
    waiting_for_source: HashMap<IpAddr, usize>,
}

/// A handshake's place; dropping it (handshake over, or task gone) frees it for the next.
pub struct HandshakeSlot {
    handshakes: Arc<Handshakes>,
    id: u64,
    /// Answers when the handshake must make way, with the reason.
    pub shed: oneshot::Receiver<&'static str>,
    // Dropped in this order, after `drop`: the places, then the source's semaphore.
    _total: OwnedSemaphorePermit,
    _of_source: OwnedSemaphorePermit,
    _lease: SourceLease,
}

/// A hold on a source address's semaphore; the last one out removes it from the map.
struct SourceLease {
    handshakes: Arc<Handshakes>,
    source: IpAddr,
    semaphore: Arc<Semaphore>,
}

/// One connection counted as waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection counted as waiting for a place of its source address while it lives.
struct WaitingForSource<'a> {
    running: &'a Mutex<Running>,
    source: IpAddr,
}

impl<'a> WaitingForSource<'a> {
    fn enter(running: &'a Mutex<Running>, source: IpAddr) -> Self {
        *running.lock().expect("handshakes lock").waiting_for_source.entry(source).or_default() += 1;
        WaitingForSource { running, source }
    }
}

impl Drop for WaitingForSource<'_> {
    fn drop(&mut self) {
        let mut running = self.running.lock().expect("handshakes lock");
        if let Some(count) = running.waiting_for_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                running.waiting_for_source.remove(&self.source);
            }
        }
    }
}

/// Which handshake a waiting connection may shed: the oldest of its source, or the oldest.
#[derive(Clone, Copy)]
enum Scope {
    Source(IpAddr),
    Overall,
}

impl Scope {
    fn reason(self) -> &'static str {
        match self {
            Scope::Source(_) => "too many handshakes in progress from this address",
            Scope::Overall => "too many handshakes in progress",
        }
    }
}

impl Handshakes {
    pub fn new(limits: HandshakeLimits) -> Arc<Self> {
        Arc::new(Handshakes {
            limits,
            total: Arc::new(Semaphore::new(limits.max_total.max(1))),
            sources: Mutex::default(),
            running: Mutex::default(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// A place for a handshake from `source`, at once or in its turn (see the decisions above).
    pub async fn admit(self: &Arc<Self>, source: IpAddr) -> Result<HandshakeSlot, Refusal> {
        let lease = self.lease(source);
        let of_source = lease.semaphore.clone().try_acquire_owned().ok();
        let total = of_source.as_ref().and_then(|_| self.total.clone().try_acquire_owned().ok());
        let (of_source, total) = match (of_source, total) {
            (Some(of_source), Some(total)) => (of_source, total),
            (of_source, _) => {
                let waiting = self.wait()?;
                let of_source = match of_source {
                    Some(permit) => permit,
                    None => {
                        let _counted = WaitingForSource::enter(&self.running, source);
                        self.acquire(&lease.semaphore, Scope::Source(source)).await
                    }
                };
                let total = self.acquire(&self.total, Scope::Overall).await;
                drop(waiting);
                (of_source, total)
            }
        };
        let (tell, shed) = oneshot::channel();
        let mut running = self.running.lock().expect("handshakes lock");
        let id = running.next_id;
        running.next_id += 1;
        running.by_age.insert(id, (source, Instant::now(), tell));
        running.by_source.entry(source).or_default().insert(id);
        Ok(HandshakeSlot { handshakes: self.clone(), id, shed, _total: total, _of_source: of_source, _lease: lease })
    }

    fn lease(self: &Arc<Self>, source: IpAddr) -> SourceLease {
        let per_source = self.limits.max_per_source.max(1);
        let semaphore = self
            .sources
            .lock()
            .expect("sources lock")
            .entry(source)
            .or_insert_with(|| Arc::new(Semaphore::new(per_source)))
            .clone();
        SourceLease { handshakes: self.clone(), source, semaphore }
    }

    fn wait(&self) -> Result<Waiting<'_>, Refusal> {
        let bound = self.limits.max_total.max(1) * WAITING_PER_HANDSHAKE;
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= bound {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::TooManyWaiting);
        }
        Ok(Waiting(&self.waiting))
    }

    /// A permit of `semaphore` in its turn, shedding the handshake in the way (of `scope`) each
    /// time it has run for [`STALLED_AFTER`].
    async fn acquire(&self, semaphore: &Arc<Semaphore>, scope: Scope) -> OwnedSemaphorePermit {
        // One acquire future throughout, so the connection keeps its place in the queue.
        let acquire = semaphore.clone().acquire_owned();
        tokio::pin!(acquire);
        let mut next_check = Instant::now();
        loop {
            tokio::select! {
                biased;
                permit = &mut acquire => return permit.expect("the hub never closes a handshake semaphore"),
                _ = tokio::time::sleep_until(next_check) => {}
            }
            next_check = self.shed_stalled(scope);
        }
    }

    /// Sheds the oldest handshake of `scope` if it has run for [`STALLED_AFTER`]; when to look
    /// again. One at a time: the place it frees may well be this connection's.
    fn shed_stalled(&self, scope: Scope) -> Instant {
        let now = Instant::now();
        let mut running = self.running.lock().expect("handshakes lock");
        let oldest = match scope {
            Scope::Source(source) => running.by_source.get(&source).and_then(|ids| ids.first().copied()),
            Scope::Overall => running
                .by_age
                .iter()
                .find(|(_, (source, _, _))| !running.waiting_for_source.contains_key(source))
                .map(|(&id, _)| id),
        };
        let Some(id) = oldest else { return now + STALLED_AFTER };
        let started = running.by_age[&id].1;
        if now.duration_since(started) < STALLED_AFTER {
            return started + STALLED_AFTER;
        }
        if let Some(tell) = running.forget(id) {
            let _ = tell.send(scope.reason());
        }
        now + STALLED_AFTER
    }
}

impl Running {
    /// Forgets handshake `id`: the sender that would tell it to stop, if it was still running.
    fn forget(&mut self, id: u64) -> Option<oneshot::Sender<&'static str>> {
        let (source, _, tell) = self.by_age.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
        Some(tell)
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.handshakes.running.lock().expect("handshakes lock").forget(self.id);
    }
}

impl Drop for SourceLease {
    fn drop(&mut self) {
        let mut sources = self.handshakes.sources.lock().expect("sources lock");
        // The map's and ours: nobody else runs or waits for this source.
        if Arc::strong_count(&self.semaphore) == 2 {
            sources.remove(&self.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    fn handshakes(max_total: usize, max_per_source: usize) -> Arc<Handshakes> {
        Handshakes::new(HandshakeLimits { timeout: Duration::from_secs(10), max_total, max_per_source })
    }

    /// Handshakes in progress now.
    fn running(h: &Handshakes) -> usize {
        h.running.lock().unwrap().by_age.len()
    }

    /// Whether `future` is still pending after the runtime has run everything else it can.
    async fn still_waiting<F: std::future::Future>(future: &mut std::pin::Pin<&mut F>) -> bool {
        tokio::select! {
            biased;
            _ = future => false,
            _ = tokio::task::yield_now() => true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn within_the_bounds_a_handshake_starts_at_once_and_its_place_is_freed_with_it() {
        let h = handshakes(2, 2);
        let first = h.admit(A).await.unwrap();
        let second = h.admit(B).await.unwrap();
        assert_eq!(running(&h), 2);
        drop(first);
        drop(second);
        assert_eq!(running(&h), 0);
        assert!(h.sources.lock().unwrap().is_empty(), "no semaphore outlives its source's handshakes");
    }

    #[tokio::test(start_paused = true)]
    async fn over_a_bound_a_newcomer_waits_its_turn_and_sheds_nothing_that_progresses() {
        let h = handshakes(10, 1);
        let mut first = h.admit(A).await.unwrap();
        let waiter = h.admit(A);
        tokio::pin!(waiter);
        assert!(still_waiting(&mut waiter).await);
        // A second before the first would count as stalled, it finishes: the waiter goes next.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(still_waiting(&mut waiter).await);
        assert!(first.shed.try_recv().is_err(), "a progressing handshake is not shed");
        drop(first);
        let second = waiter.await.unwrap();
        assert_eq!(running(&h), 1);
        // Another source is not held up by this one's bound.
        let other = h.admit(B).await.unwrap();
        assert_eq!(running(&h), 2);
        drop((second, other));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_handshake_makes_way_for_a_waiting_newcomer() {
        let h = handshakes(2, 8);
        let mut stalled_a = h.admit(A).await.unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        let mut stalled_b = h.admit(B).await.unwrap();
        let newcomer = h.admit(B);
        tokio::pin!(newcomer);
        assert!(still_waiting(&mut newcomer).await);
        // The oldest overall (A's) reaches STALLED_AFTER first and is told why it must go.
        tokio::time::advance(STALLED_AFTER).await;
        assert!(still_waiting(&mut newcomer).await);
        assert_eq!(stalled_a.shed.try_recv(), Ok("too many handshakes in progress"));
        assert!(stalled_b.shed.try_recv().is_err(), "only the one in the way is shed");
        drop(stalled_a);
        let admitted = newcomer.await.unwrap();
        assert_eq!(running(&h), 2);
        drop((admitted, stalled_b));
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_over_its_bound_sheds_its_own_oldest_not_anothers() {
        let h = handshakes(10, 1);
        let mut b = h.admit(B).await.unwrap();
        let mut a = h.admit(A).await.unwrap();
        let newcomer = h.admit(A);
        tokio::pin!(newcomer);
        tokio::time::advance(STALLED_AFTER).await;
        assert!(still_waiting(&mut newcomer).await);
        assert_eq!(a.shed.try_recv(), Ok("too many handshakes in progress from this address"));
        assert!(b.shed.try_recv().is_err(), "another address's handshake is not in the way");
        drop(a);
        drop((newcomer.await.unwrap(), b));
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_with_its_own_waiters_is_shed_by_them_not_to_make_room_overall() {
        let h = handshakes(2, 1);
        let mut a = h.admit(A).await.unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        let mut b = h.admit(B).await.unwrap();
        let for_a = h.admit(A);
        tokio::pin!(for_a);
        assert!(still_waiting(&mut for_a).await);
        let for_c = h.admit(C);
        tokio::pin!(for_c);
        assert!(still_waiting(&mut for_c).await);
        tokio::time::advance(STALLED_AFTER).await;
        // A's handshake is the oldest, but A's own waiter sheds it: C's sheds B's.
        assert!(still_waiting(&mut for_c).await);
        assert_eq!(b.shed.try_recv(), Ok("too many handshakes in progress"));
        assert!(a.shed.try_recv().is_err(), "a source with waiters of its own is not shed for others");
        assert!(still_waiting(&mut for_a).await);
        assert_eq!(a.shed.try_recv(), Ok("too many handshakes in progress from this address"));
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_waiting_bound_a_newcomer_is_refused_at_once() {
        let h = handshakes(1, 1);
        let _running = h.admit(A).await.unwrap();
        let mut waiters: Vec<_> = (0..WAITING_PER_HANDSHAKE).map(|_| Box::pin(h.admit(A))).collect();
        for w in &mut waiters {
            assert!(still_waiting(&mut w.as_mut()).await);
        }
        assert_eq!(h.admit(B).await.err(), Some(Refusal::TooManyWaiting));
        drop(waiters);
        let again = h.admit(B);
        tokio::pin!(again);
        assert!(still_waiting(&mut again).await, "with the waiters gone, a newcomer may wait again");
    }
}

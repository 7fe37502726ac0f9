//! The ReportQueue between the reconciler and the hub link: bounded, and when full the oldest
//! reports are folded into the next one (counted in `summarized_reports`, their drift history
//! kept) rather than silently dropped. It also remembers the latest report, re-sent on every
//! reconnect and on the hub's Resync. A report is held once: the queue and "the latest" share it.
//!
//! Decisions:
//! - A waiting report that the new one supersedes (same revision, digest, applied flag, app
//!   healths and measurements) is folded into it, not kept beside it: while the hub is away the
//!   queue holds the transitions the hub acts on, not every pass's snapshot of the same state
//!   (a thousand-object agent wrote about 85 KiB per pass).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use convoy_shared::model::report::Report;

/// Default number of reports held while the hub is unreachable.
pub const DEFAULT_CAPACITY: usize = 64;

/// Most drift records one summarized report carries.
const MAX_DRIFTS: usize = 1000;

#[derive(Debug, Default)]
struct State {
    pending: VecDeque<Arc<Report>>,
    last: Option<Arc<Report>>,
    applied_revision: String,
    summarized: u64,
}

impl State {
    /// Folds the oldest pending reports into the next until at most `capacity` remain.
    fn fold_overflow(&mut self, capacity: usize) {
        while self.pending.len() > capacity {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            self.summarized += 1;
            if let Some(next) = self.pending.front_mut() {
                fold(&old, Arc::make_mut(next));
            }
        }
    }
}

/// A bounded, summarizing queue of reports. Cheap to clone; clones share the queue.
#[derive(Debug, Clone)]
pub struct ReportQueue {
    state: Arc<Mutex<State>>,
    /// Wakes the link when a report arrives; the link owns the only waiter.
    ready: Arc<Notify>,
    capacity: usize,
}

impl Default for ReportQueue {
    fn default() -> Self {
        ReportQueue::new(DEFAULT_CAPACITY)
    }
}

impl ReportQueue {
    /// A queue holding at most `capacity` reports (at least 1).
    pub fn new(capacity: usize) -> Self {
        ReportQueue { state: Arc::default(), ready: Arc::new(Notify::new()), capacity: capacity.max(1) }
    }

    // Never held across an await: every use below is a short critical section.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a report, folding into it the waiting one it supersedes; when full, folds the
    /// oldest into the next.
    pub fn push(&self, mut report: Report) {
        {
            let mut s = self.lock();
            if s.pending.back().is_some_and(|waiting| report.supersedes(waiting))
                && let Some(waiting) = s.pending.pop_back()
            {
                s.summarized += 1;
                fold(&waiting, &mut report);
            }
            if report.applied {
                s.applied_revision = report.revision.clone();
            }
            let report = Arc::new(report);
            s.last = Some(report.clone());
            s.pending.push_back(report);
            s.fold_overflow(self.capacity);
        }
        self.ready.notify_one();
    }

    /// Puts a report that could not be sent back at the front.
    pub fn requeue(&self, report: Arc<Report>) {
        let mut s = self.lock();
        s.pending.push_front(report);
        s.fold_overflow(self.capacity);
    }

    /// Takes the oldest queued report.
    pub fn pop(&self) -> Option<Arc<Report>> {
        self.lock().pending.pop_front()
    }

    /// Waits until something may have been queued.
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Reports waiting to be sent.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    /// Is nothing waiting?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest report pushed, sent or not.
    pub fn last(&self) -> Option<Arc<Report>> {
        self.lock().last.clone()
    }

    /// The revision of the latest report that said everything applied cleanly.
    pub fn applied_revision(&self) -> String {
        self.lock().applied_revision.clone()
    }

    /// Seeds the applied revision (e.g. from the inventory after a restart).
    pub fn set_applied_revision(&self, revision: &str) {
        let mut s = self.lock();
        if s.applied_revision.is_empty() {
            s.applied_revision = revision.to_string();
        }
    }

    /// How many reports have been folded into others since the start.
    pub fn summarized_total(&self) -> u64 {
        self.lock().summarized
    }
}

/// Folds `old` into the newer `next`: `next` is a full snapshot, so only the count and the drift
/// history (drifts of `old` that `next` no longer lists, e.g. healed ones) need carrying over.
fn fold(old: &Report, next: &mut Report) {
    next.summarized_reports += 1 + old.summarized_reports;
    let mut carried: Vec<_> = old
        .drifts
        .iter()
        .filter(|d| !next.drifts.iter().any(|n| n.object == d.object && n.detected_unix_ms == d.detected_unix_ms))
        .cloned()
        .collect();
    if !carried.is_empty() {
        carried.append(&mut next.drifts);
        let excess = carried.len().saturating_sub(MAX_DRIFTS);
        carried.drain(..excess);
        next.drifts = carried;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_shared::model::ObjectRef;
    use convoy_shared::model::report::{AppStatus, Drift, Health};

    fn report(n: i64) -> Report {
        Report { revision: format!("r{n}"), at_unix_ms: n, ..Default::default() }
    }

    fn drift(name: &str, at: i64) -> Drift {
        Drift {
            object: ObjectRef { name: name.into(), ..Default::default() },
            app: "web".into(),
            missing: false,
            fields: vec![],
            healed: true,
            detected_unix_ms: at,
        }
    }

    #[test]
    fn a_full_queue_summarizes_the_oldest_and_keeps_their_drift_history() {
        let q = ReportQueue::new(3);
        let mut first = report(1);
        first.drifts.push(drift("healed-long-ago", 1));
        q.push(first);
        for n in 2..=10 {
            q.push(report(n));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.summarized_total(), 7);
        let oldest = q.pop().unwrap();
        assert_eq!(oldest.revision, "r8");
        assert_eq!(oldest.summarized_reports, 7);
        assert_eq!(oldest.drifts.len(), 1, "drift history survives folding");
        assert_eq!(q.pop().unwrap().summarized_reports, 0);
        assert_eq!(q.last().unwrap().revision, "r10");
    }

    #[test]
    fn folding_does_not_duplicate_drifts_the_newer_report_has() {
        let mut old = report(1);
        old.drifts.push(drift("a", 5));
        let mut next = report(2);
        next.drifts.push(drift("a", 5));
        fold(&old, &mut next);
        assert_eq!(next.drifts.len(), 1);
        assert_eq!(next.summarized_reports, 1);
    }

    #[test]
    fn a_waiting_report_of_the_same_state_folds_into_the_next_and_a_transition_stays() {
        let q = ReportQueue::new(64);
        let mut first = report(1);
        first.revision = "r1".into();
        first.drifts.push(drift("healed-while-away", 1));
        first.apps.push(AppStatus {
            name: "web".into(),
            health: Health::Progressing,
            message: String::new(),
            objects: vec![],
        });
        let mut second = first.clone();
        second.drifts.clear();
        second.at_unix_ms = 2;
        let mut healthy = second.clone();
        healthy.apps[0].health = Health::Healthy;
        healthy.at_unix_ms = 3;
        q.push(first);
        q.push(second);
        assert_eq!(q.len(), 1, "a second snapshot of the same state replaces the first");
        q.push(healthy);
        assert_eq!(q.len(), 2, "a health transition is kept");
        let progressing = q.pop().unwrap();
        assert_eq!((progressing.at_unix_ms, progressing.summarized_reports), (2, 1));
        assert_eq!(progressing.drifts.len(), 1, "the drift history survives folding");
        assert_eq!(q.pop().unwrap().apps[0].health, Health::Healthy);
        assert_eq!(q.summarized_total(), 1);
    }

    #[test]
    fn a_report_already_taken_for_sending_is_not_folded() {
        let q = ReportQueue::new(64);
        q.push(report(1));
        let sending = q.pop().unwrap();
        let mut again = report(1);
        again.at_unix_ms = 2;
        q.push(again);
        assert_eq!((sending.at_unix_ms, q.len(), q.summarized_total()), (1, 1, 0));
    }

    #[test]
    fn applied_revision_follows_applied_reports() {
        let q = ReportQueue::new(2);
        q.set_applied_revision("cached");
        let mut r = report(1);
        q.push(r.clone());
        assert_eq!(q.applied_revision(), "cached");
        r.applied = true;
        q.push(r);
        assert_eq!(q.applied_revision(), "r1");
    }
}

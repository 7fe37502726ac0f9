//! Fault injection for one simulated cluster: added latency, random 500/429 errors, dropped
//! watch streams and outages (503 answers or refused connections) that end on their own.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How an outage looks to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageMode {
    /// Every request answers 503 ServiceUnavailable.
    Unavailable,
    /// The listener is closed: connections are refused, open ones dropped.
    Refuse,
}

/// Which error a random failure returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 500 InternalError.
    Internal,
    /// 429 TooManyRequests with `Retry-After: 1`.
    TooManyRequests,
}

#[derive(Debug, Clone)]
struct State {
    latency: Duration,
    error_rate: f64,
    error_kind: ErrorKind,
    outage: Option<(Instant, OutageMode)>,
    /// Deployments whose pod template runs an image containing one of these never become
    /// available: their rollout exceeds its progress deadline.
    stuck_images: Vec<String>,
}

/// The fault settings of one cluster; cheap to read on every request.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    /// Bumped to end every open watch stream; watch tasks hold a receiver.
    watch_epoch: watch::Sender<u64>,
    /// Bumped when an outage in Refuse mode starts or ends, so the accept loop re-checks.
    listener_epoch: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Mutex::new(State {
                latency: Duration::ZERO,
                error_rate: 0.0,
                error_kind: ErrorKind::Internal,
                outage: None,
                stuck_images: Vec::new(),
            }),
            watch_epoch: watch::channel(0).0,
            listener_epoch: watch::channel(0).0,
        }
    }
}

/// What the request path should do before serving.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Serve normally after sleeping this long.
    Serve(Duration),
    /// Fail with this error kind after the latency.
    Fail(Duration, ErrorKind),
    /// Answer 503.
    Unavailable,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every Deployment whose pod template uses an image containing `pattern` fail its
    /// rollout (ProgressDeadlineExceeded), as a bad image would on a real cluster.
    pub fn stick_images(&self, pattern: &str) {
        self.lock().stuck_images.push(pattern.to_string());
    }

    /// Whether a Deployment running `images` is stuck by [`Faults::stick_images`].
    pub fn stuck(&self, images: &[&str]) -> bool {
        let state = self.lock();
        images.iter().any(|image| state.stuck_images.iter().any(|p| image.contains(p.as_str())))
    }

    /// Adds `d` before every response.
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }

    /// Fails this fraction (0.0–1.0) of requests with `kind`.
    pub fn set_error_rate(&self, rate: f64, kind: ErrorKind) {
        let mut s = self.lock();
        s.error_rate = rate.clamp(0.0, 1.0);
        s.error_kind = kind;
    }

    /// Starts an outage lasting `d`; it ends by itself.
    pub fn outage(&self, d: Duration, mode: OutageMode) {
        self.lock().outage = Some((Instant::now() + d, mode));
        if mode == OutageMode::Refuse {
            self.listener_epoch.send_modify(|e| *e += 1);
            self.drop_watches();
        }
    }

    /// Ends an outage early.
    pub fn end_outage(&self) {
        self.lock().outage = None;
        self.listener_epoch.send_modify(|e| *e += 1);
    }

    /// Closes every open watch stream (clients see the stream end and re-watch).
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|e| *e += 1);
    }

    /// Clears latency, errors and outages.
    pub fn clear(&self) {
        {
            let mut s = self.lock();
            s.latency = Duration::ZERO;
            s.error_rate = 0.0;
            s.outage = None;
        }
        self.listener_epoch.send_modify(|e| *e += 1);
    }

    /// The end of a current Refuse-mode outage, if any.
    pub fn refusing_until(&self) -> Option<Instant> {
        match self.lock().outage {
            Some((until, OutageMode::Refuse)) if until > Instant::now() => Some(until),
            _ => None,
        }
    }

    /// A receiver that changes whenever watches must be dropped.
    pub fn watch_epoch(&self) -> watch::Receiver<u64> {
        self.watch_epoch.subscribe()
    }

    /// A receiver that changes when a Refuse outage starts or ends.
    pub fn listener_epoch(&self) -> watch::Receiver<u64> {
        self.listener_epoch.subscribe()
    }

    /// Decides the fate of one request.
    pub fn verdict(&self) -> Verdict {
        let s = self.lock().clone();
        if let Some((until, _)) = s.outage
            && until > Instant::now()
        {
            return Verdict::Unavailable;
        }
        if s.error_rate > 0.0 && rand::random::<f64>() < s.error_rate {
            return Verdict::Fail(s.latency, s.error_kind);
        }
        Verdict::Serve(s.latency)
    }
}

//! Waiting on a simulated world from tests: poll until a condition holds, with one hang guard
//! every scenario shares.

use std::time::Duration;

/// How long a scenario waits for something before it fails instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(90);

/// Polls `check` every 50 ms until it returns `Some`; panics naming `what` if it never does.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

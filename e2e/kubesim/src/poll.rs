//! Waiting on a simulated world from tests: poll until a condition holds, with one hang guard
//! every scenario shares.

use std::time::Duration;

/// How long a scenario waits for something before it fails instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(90);

/// Polls `check` every 50 ms until it returns `Some`; panics naming `what` if it never does.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(what, HANG_GUARD, check).await
}

/// Like [`eventually`], for work known to take longer than [`HANG_GUARD`] (20,000 applies in a
/// debug build): gives up after `limit`.
pub async fn within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
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

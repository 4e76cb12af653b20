//! Retrying a remote operation: exponential backoff with full jitter, bounded in attempts and in total time.
//!
//! Only failures classified as transient are retried (server errors, throttling, timeouts, broken
//! connections); anything else (access denied, no such bucket, a bad request) fails at once. Every retry is
//! logged, so an operator sees a flaky link before it becomes a failed backup.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff's upper bound; each further one doubles, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No new attempt starts once this much time has passed since the first.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            max_elapsed: Duration::from_secs(180),
        }
    }
}

/// What went wrong in one attempt, and whether another may succeed.
#[derive(Debug)]
pub struct Attempt<E> {
    pub error: E,
    pub transient: bool,
}

impl RetryPolicy {
    /// Runs `operation` until it succeeds, fails permanently, or the policy is spent; returns the last error.
    /// `what` names the operation in the retry log lines.
    pub async fn run<T, E, F, Fut>(&self, what: &str, mut operation: F) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt<E>>>,
    {
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            match operation().await {
                Ok(value) => return Ok(value),
                Err(Attempt { error, transient }) => {
                    let delay = self.backoff(attempt);
                    let out_of_time = start.elapsed() + delay > self.max_elapsed;
                    if !transient || attempt >= self.max_attempts || out_of_time {
                        return Err(error);
                    }
                    tracing::warn!(
                        attempt,
                        of = self.max_attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        "{what} failed, retrying: {error}"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Full jitter: a uniformly random delay up to the exponential bound, so that many clients retrying
    /// at once spread out instead of returning together.
    fn backoff(&self, attempt: u32) -> Duration {
        let bound = self.base_delay.saturating_mul(1 << (attempt - 1).min(20)).min(self.max_delay);
        bound.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_elapsed: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, String> = quick(5)
            .run("op", || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 3 { Err(Attempt { error: format!("fail {n}"), transient: true }) } else { Ok(n) }
            })
            .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn permanent_failures_and_spent_policies_return_the_last_error() {
        let calls = AtomicU32::new(0);
        let result: Result<(), String> = quick(5)
            .run("op", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Attempt { error: "denied".to_string(), transient: false })
            })
            .await;
        assert_eq!((result, calls.load(Ordering::SeqCst)), (Err("denied".to_string()), 1));

        let calls = AtomicU32::new(0);
        let result: Result<(), String> = quick(4)
            .run("op", || async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                Err(Attempt { error: format!("fail {n}"), transient: true })
            })
            .await;
        assert_eq!(result, Err("fail 4".to_string()));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..30 {
            let delay = policy.backoff(attempt);
            assert!(delay <= policy.max_delay, "{attempt}: {delay:?}");
            assert!(delay <= policy.base_delay * (1 << (attempt - 1).min(20)));
        }
    }
}

//! The one backoff policy of dr: every loop that tries again (an S3 request, a resumed download, a lock
//! that is held by another, an alert webhook) waits as a [`RetryPolicy`] says.
//!
//! The rule: the n-th wait is bounded by `base_delay x 2^(n-1)`, capped at `max_delay`, and is a random time
//! between half and all of that bound ("equal jitter"). Random, so that many clients (or two racing lock
//! takers) that failed together do not return together; never below half, so that nobody retries at once and
//! spins. A policy is bounded in attempts and in total time.
//!
//! [`RetryPolicy::run`] retries only failures the caller classifies as transient (server errors, throttling,
//! timeouts, broken connections); anything else fails at once. Every retry is logged, so an operator sees a
//! flaky link before it becomes a failed backup.
//!
//! `DR_RETRY_BASE` (a duration such as `10ms`), read once per process, replaces every policy's base delay and
//! scales its cap alike; attempts and limits stay. It is for tests (fault tests then retry in milliseconds
//! instead of waiting out the production backoff) and for an operator who must tune it without a rebuild.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that replaces every policy's base delay (docs/configuration.md).
pub const BASE_OVERRIDE_VAR: &str = "DR_RETRY_BASE";

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

    /// The wait after the `attempt`-th failure (1 for the first): the module's one rule.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let (base, cap) = self.bounds(base_override());
        equal_jitter(base, cap, attempt)
    }

    /// The base delay and cap in force: the policy's own, or with `DR_RETRY_BASE` that base and a cap scaled
    /// alike, so the backoff keeps its shape.
    fn bounds(&self, base_override: Option<Duration>) -> (Duration, Duration) {
        match base_override {
            Some(base) if !self.base_delay.is_zero() => {
                (base, self.max_delay.mul_f64(base.as_secs_f64() / self.base_delay.as_secs_f64()))
            }
            _ => (self.base_delay, self.max_delay),
        }
    }
}

fn equal_jitter(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let bound = base.saturating_mul(1 << attempt.saturating_sub(1).min(20)).min(cap);
    bound.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// `DR_RETRY_BASE`, read once; a value that does not parse is ignored with a warning (a typo must not turn a
/// backup's retries off).
fn base_override() -> Option<Duration> {
    static BASE: OnceLock<Option<Duration>> = OnceLock::new();
    *BASE.get_or_init(|| {
        let value = std::env::var(BASE_OVERRIDE_VAR).ok().filter(|v| !v.is_empty())?;
        match humantime::parse_duration(&value) {
            Ok(base) => Some(base),
            Err(e) => {
                tracing::warn!("ignoring {BASE_OVERRIDE_VAR}={value:?}: {e}");
                None
            }
        }
    })
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
    fn the_base_override_shrinks_the_whole_backoff_alike() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.bounds(None), (policy.base_delay, policy.max_delay));
        let (base, cap) = policy.bounds(Some(Duration::from_millis(10)));
        assert_eq!(base, Duration::from_millis(10));
        assert_eq!(cap, Duration::from_secs(1), "20 s scaled by 10 ms / 200 ms");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..30 {
            let delay = equal_jitter(policy.base_delay, policy.max_delay, attempt);
            let bound = (policy.base_delay * (1 << (attempt - 1).min(20))).min(policy.max_delay);
            assert!(delay <= bound, "{attempt}: {delay:?}");
            assert!(delay >= bound / 2, "never less than half the bound: {attempt}: {delay:?}");
        }
    }
}

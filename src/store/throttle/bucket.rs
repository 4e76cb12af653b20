//! A token bucket that every transfer in one direction shares: each asks for the bytes it is about to move (or
//! has just moved) and sleeps until the rate allows them, so that concurrent transfers add up to the rate.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::Rate;

/// How far ahead of the rate transfers may run after a pause. Small, so that the rate achieved over a transfer
/// is the limit (a 50 ms head start is 1 % of a 5 s transfer), yet larger than the timer's resolution.
const BURST: Duration = Duration::from_millis(50);

/// A rate shared by any number of transfers: first come, first served, in slices of about 10 ms each.
///
/// It keeps the moment when every byte granted so far will have been paid for at the rate (the "generic cell
/// rate algorithm"): a request moves that moment on by its own bytes' time and may go once that moment is less
/// than [`BURST`] ahead of now. Nothing polls: a waiting transfer sleeps on tokio's timer until its moment.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: Rate,
    paid_until: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate) -> TokenBucket {
        TokenBucket { state: Mutex::new(State { rate, paid_until: Instant::now() }) }
    }

    pub fn rate(&self) -> Rate {
        self.state().rate
    }

    /// A new rate for the bytes asked for from now on (a reloaded configuration).
    pub fn set_rate(&self, rate: Rate) {
        self.state().rate = rate;
    }

    /// Waits until `bytes` may be sent, asking for them a slice at a time so that other transfers interleave.
    pub async fn take(&self, mut bytes: u64) {
        while bytes > 0 {
            let slice = bytes.min(self.rate().slice());
            if let Some(deadline) = self.reserve(slice) {
                tokio::time::sleep_until(deadline).await;
            }
            bytes -= slice;
        }
    }

    /// Counts `bytes` against the rate; returns the moment they are paid for, if that is not now. A reader
    /// calls this after a read (it cannot know beforehand how many bytes a read returns) and waits before its
    /// next one.
    pub fn reserve(&self, bytes: u64) -> Option<Instant> {
        self.reserve_at(bytes, Instant::now())
    }

    /// [`reserve`](Self::reserve) at `now`: the arithmetic alone, which the tests drive with their own clock.
    fn reserve_at(&self, bytes: u64, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        // Time not used while idle is not saved up beyond the burst: a long pause must not allow a long burst.
        let start = state.paid_until.max(now);
        state.paid_until = start + state.rate.time_for(bytes);
        let go = state.paid_until.checked_sub(BURST)?;
        (go > now).then_some(go)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update under the lock is a plain assignment: a panic elsewhere cannot leave it half-done.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn bucket(bytes_per_second: u64) -> TokenBucket {
        TokenBucket::new(Rate::from_bytes_per_second(bytes_per_second).unwrap())
    }

    /// Runs transfers of these sizes against `bucket` on a simulated clock, as `take` would (each asks for one
    /// slice, sleeps until it may go, asks for the next), and returns when each one finished, from `start`.
    fn simulate(bucket: &TokenBucket, start: Instant, sizes: &[u64]) -> Vec<Duration> {
        let mut left = sizes.to_vec();
        let mut finished = vec![Duration::ZERO; sizes.len()];
        // The transfers that wait, by the moment they wake (and their index, to keep ties in order).
        let mut waiting: BTreeMap<(Instant, usize), ()> = (0..sizes.len()).map(|i| ((start, i), ())).collect();
        while let Some(((now, i), ())) = waiting.pop_first() {
            if left[i] == 0 {
                finished[i] = now - start;
                continue;
            }
            let slice = left[i].min(bucket.rate().slice());
            left[i] -= slice;
            let go = bucket.reserve_at(slice, now).unwrap_or(now);
            waiting.insert((go, i), ());
        }
        finished
    }

    fn assert_near(actual: Duration, expected: Duration) {
        let error = actual.as_secs_f64() - expected.as_secs_f64();
        assert!(error.abs() < 0.001, "took {actual:?}, expected {expected:?}");
    }

    #[test]
    fn one_transfer_goes_at_the_rate_after_a_small_burst() {
        let bucket = bucket(MIB);
        let start = Instant::now();
        let finished = simulate(&bucket, start, &[4 * MIB]);
        // 4 s at 1 MiB/s, less the burst allowed at the start (50 ms, 1.25 % of the transfer).
        assert_near(finished[0], Duration::from_secs(4) - BURST);
    }

    #[test]
    fn concurrent_transfers_share_the_rate_and_take_turns() {
        let bucket = bucket(MIB);
        let start = Instant::now();
        let finished = simulate(&bucket, start, &[MIB, MIB, MIB, MIB]);
        // Four transfers of 1 MiB at 1 MiB/s in total: 4 s, and since they take turns slice by slice (10 ms
        // each), they all end together instead of a second apart. (The first to ask took the burst's five
        // slices in one go, so it is 3 x 5 slices ahead of the others.)
        let last = finished.iter().max().unwrap();
        let first = finished.iter().min().unwrap();
        assert_near(*last, Duration::from_secs(4) - BURST);
        assert!(*last - *first < Duration::from_millis(200), "finished at {finished:?}");
    }

    #[test]
    fn a_pause_saves_up_no_more_than_the_burst() {
        let bucket = bucket(MIB);
        let start = Instant::now();
        simulate(&bucket, start, &[MIB]);
        let later = start + Duration::from_secs(60);
        // The burst (50 ms: 52 KiB) goes at once; a minute's pause is not a minute's bytes.
        assert_eq!(bucket.reserve_at(MIB / 20, later), None);
        let go = bucket.reserve_at(MIB, later).expect("beyond the burst, a transfer waits");
        assert_near(go - later, Duration::from_secs(1));
    }

    #[test]
    fn a_reader_pays_after_the_fact() {
        let bucket = bucket(MIB);
        let now = Instant::now();
        let go = bucket.reserve_at(MIB, now).expect("a read of a second's bytes waits");
        assert_near(go - now, Duration::from_secs(1) - BURST);
        let go = bucket.reserve_at(MIB, now).expect("the next one waits a second more");
        assert_near(go - now, Duration::from_secs(2) - BURST);
    }

    #[test]
    fn a_new_rate_applies_to_the_next_bytes() {
        let bucket = bucket(MIB);
        bucket.set_rate(Rate::from_bytes_per_second(4 * MIB).unwrap());
        let finished = simulate(&bucket, Instant::now(), &[4 * MIB]);
        assert_near(finished[0], Duration::from_secs(1) - BURST);
    }

    #[test]
    fn slices_are_about_ten_milliseconds() {
        for (rate, slice) in [(MIB, MIB / 100), (4 * MIB, 4 * MIB / 100), (10_000, 1024), (1 << 30, MIB)] {
            assert_eq!(bucket(rate).rate().slice(), slice, "at {rate} B/s");
        }
    }

    #[tokio::test]
    async fn take_sleeps_on_the_timer_until_the_rate_allows() {
        let bucket = bucket(4 * MIB);
        let started = Instant::now();
        bucket.take(MIB).await;
        // 250 ms at 4 MiB/s, less the burst; real time, so only the lower bound is tight.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }
}

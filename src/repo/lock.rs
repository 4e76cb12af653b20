//! Repository locks: restic-style leases on top of the plain [`Store`] trait, so that they work the same on a
//! directory and on every S3-compatible store, without compare-and-swap (AWS's conditional writes are not
//! offered by every S3-compatible server, and a lease also ends a crashed holder's lock). docs/locks.md has the
//! protocol and why it is safe.
//!
//! A lock is an object `locks/<id>.json` (plain JSON, no secrets) that says who holds it, how (shared or
//! exclusive) and until when. To acquire: write ours, then list `locks/` and read the others; expired ones are
//! ignored (and deleted, best effort); if a live one conflicts, delete ours and fail, or back off and try again
//! until `wait` runs out. Two racers may both see each other and both back off: nobody holds the lock then,
//! which is safe, and the jittered backoff breaks the tie. Two racers can never both miss each other, because
//! each lists only after its own write finished.
//!
//! The holder renews the lease every `lease / 3` from a background task. It counts a renewal only if it finished
//! before the previous lease ran out, and it counts the new lease from the moment the renewal *started*; so by
//! the time another process may take the lock for expired, the holder has already declared it lost
//! ([`RepositoryLock::is_lost`], [`RepositoryLock::lost`]) and the engine stops before committing anything.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Repository;
use crate::config::LockConfig;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::store::{self, Store};

pub const LOCKS_PREFIX: &str = "locks/";
const LOCK_SUFFIX: &str = ".json";
/// A lock object is a few hundred bytes; anything bigger is not one of ours.
const LOCK_LIMIT: u64 = 64 << 10;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);
/// The shortest lease accepted. It refuses only leases that cannot work at all: the holder renews every
/// `lease / 3` and retries a failed renewal every `lease / 12` (at least 100 ms), so below a second not even
/// one retry of a fast local write fits before the lease runs out. It is a floor, not advice: on S3, where one
/// write can take a second, keep the default or tens of seconds at least (docs/locks.md).
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Waiting for a conflicting lock: the sleeps start at 200 ms and double up to 5 s, jittered by the one rule
/// (`crate::retry`); how long to keep trying is `[lock] wait`'s to say, not the policy's.
const WAIT_BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
    max_elapsed: Duration::MAX,
};
/// An object under `locks/` that does not parse blocks like an exclusive lock for this long after it was written
/// (dr writes lock objects whole, so such an object was not written by this version of dr).
const UNREADABLE_LOCK_LEASE: Duration = DEFAULT_LEASE;

/// Time this process spent waiting for locks, all acquisitions together (for `dr serve`'s
/// `dr_lock_wait_seconds_total`).
static WAITED_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long this process has waited for repository locks in all.
pub fn total_wait() -> Duration {
    Duration::from_micros(WAITED_MICROS.load(std::sync::atomic::Ordering::Relaxed))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Many at once: backup, restore, verify, drill.
    Shared,
    /// Alone: prune.
    Exclusive,
}

impl LockKind {
    /// Exclusive conflicts with everything; shared with shared is fine.
    pub fn conflicts_with(self, other: LockKind) -> bool {
        self == LockKind::Exclusive || other == LockKind::Exclusive
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// What the lock is for ("backup", "prune", ...): shown to whoever it blocks.
    pub purpose: String,
    /// How long the lock lives without renewal; the holder renews it every `lease / 3`.
    pub lease: Duration,
    /// How long to wait for a conflicting lock before failing (zero: fail at once).
    pub wait: Duration,
}

impl LockOptions {
    /// Lease 5 minutes, no wait.
    pub fn new(purpose: impl Into<String>) -> LockOptions {
        LockOptions { purpose: purpose.into(), lease: DEFAULT_LEASE, wait: Duration::ZERO }
    }

    /// `[lock]`'s settings, or the defaults.
    pub fn from_config(config: &LockConfig, purpose: &str) -> LockOptions {
        LockOptions {
            purpose: purpose.to_string(),
            lease: config.lease.unwrap_or(DEFAULT_LEASE),
            wait: config.wait.unwrap_or_default(),
        }
    }
}

/// Checks `[lock]`: the lease must be at least [`MIN_LEASE`].
pub fn validate(config: &LockConfig) -> Result<()> {
    config.lease.map_or(Ok(()), check_lease)
}

/// The one check of the lease minimum, for `[lock]` and for [`LockOptions`] built in code alike.
fn check_lease(lease: Duration) -> Result<()> {
    if lease < MIN_LEASE {
        return Err(Error::ConfigInvalid(format!(
            "[lock] lease = {} is too short; use at least {} (default {})",
            humantime::format_duration(lease),
            humantime::format_duration(MIN_LEASE),
            humantime::format_duration(DEFAULT_LEASE)
        )));
    }
    Ok(())
}

/// The content of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub id: String,
    pub kind: LockKind,
    pub purpose: String,
    pub hostname: String,
    pub pid: u32,
    pub user: String,
    pub dr_version: String,
    pub created_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl LockInfo {
    /// Who holds it, for messages: `prune by root@backup-host (pid 1234)`.
    pub fn holder(&self) -> String {
        format!("{} by {}@{} (pid {})", self.purpose, self.user, self.hostname, self.pid)
    }
}

/// One object under `locks/`, as [`Repository::locks`] lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedLock {
    pub key: String,
    /// `None` when the object could not be read as a lock (`problem` says why).
    pub info: Option<LockInfo>,
    pub problem: Option<String>,
    /// Expired locks no longer count: the next acquisition deletes them.
    pub expired: bool,
}

impl Repository {
    /// Takes a lock of `kind` on the repository, waiting up to `options.wait` for conflicting locks to go.
    /// Fails with [`Error::RepositoryLocked`], naming the holder, if they do not.
    pub async fn lock(&self, kind: LockKind, options: &LockOptions) -> Result<RepositoryLock> {
        acquire(self.store.clone(), kind, options).await
    }

    /// Every lock object, live and expired, oldest first.
    pub async fn locks(&self) -> Result<Vec<ListedLock>> {
        let now = Utc::now();
        let mut listed = Vec::new();
        for seen in other_locks(self.store(), None).await? {
            let expired = seen.expires_at(now) <= now;
            let (info, problem) = match seen.info {
                Ok(info) => (Some(info), None),
                Err(problem) => (None, Some(problem.to_string())),
            };
            listed.push(ListedLock { key: seen.key, info, problem, expired });
        }
        Ok(listed)
    }
}

/// A held lock. Renewed in the background until [`RepositoryLock::release`]; dropping it unreleased deletes
/// its object in a spawned task (best effort: otherwise it expires after one lease).
pub struct RepositoryLock {
    store: Arc<dyn Store>,
    key: String,
    kind: LockKind,
    shared: Arc<Shared>,
    renewer: Option<JoinHandle<()>>,
    waited: Duration,
    released: bool,
}

impl fmt::Debug for RepositoryLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepositoryLock")
            .field("key", &self.key)
            .field("kind", &self.kind)
            .field("waited", &self.waited)
            .field("lost", &self.shared.lost.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// What the holder and its renewer share.
#[derive(Debug)]
struct Shared {
    lease: Duration,
    state: Mutex<State>,
    /// Cancelled once the lock is lost.
    lost: CancellationToken,
    /// Cancelled to stop the renewer (release or drop).
    stop: CancellationToken,
}

#[derive(Debug)]
struct State {
    info: LockInfo,
    /// What the object holds after our last successful write.
    written: Bytes,
    /// A write whose outcome we do not know (it failed, but may have landed anyway).
    attempted: Option<Bytes>,
    /// Start of the last successful write: the lease runs from here.
    confirmed: Instant,
    lost_reason: Option<String>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this short lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When the lease we last confirmed runs out, by this process's monotonic clock.
    fn deadline(&self) -> Instant {
        self.state().confirmed + self.lease
    }

    fn lose(&self, reason: String) {
        let mut state = self.state();
        if state.lost_reason.is_none() {
            tracing::warn!(lock = %state.info.id, purpose = %state.info.purpose, "lost the repository lock: {reason}");
            state.lost_reason = Some(reason);
        }
        drop(state);
        self.lost.cancel();
    }

    fn is_lost(&self) -> bool {
        if self.lost.is_cancelled() {
            return true;
        }
        if Instant::now() >= self.deadline() {
            self.lose(format!("it was not renewed within its lease of {}", crate::units::duration(self.lease)));
            return true;
        }
        false
    }
}

impl RepositoryLock {
    /// The lock's object key (`locks/<id>.json`).
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// The lock object's content as last written.
    pub fn info(&self) -> LockInfo {
        self.shared.state().info.clone()
    }

    /// Whether the lock is lost: its lease ran out without a renewal, or its object was deleted or replaced.
    /// A holder that lost its lock must stop before it commits anything.
    pub fn is_lost(&self) -> bool {
        self.shared.is_lost()
    }

    /// Resolves when the lock is lost (never, while it is renewed).
    pub async fn lost(&self) {
        self.shared.lost.cancelled().await;
    }

    /// Runs `work` while the lock is held: if the lock is lost first, `work` is dropped (stopped) and the result
    /// is [`Error::LockLost`].
    pub async fn while_held<T>(&self, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            result = work => result,
            () = self.lost() => Err(self.lost_error()),
        }
    }

    /// A token cancelled when the lock is lost, for work that watches a token.
    pub fn lost_token(&self) -> CancellationToken {
        self.shared.lost.clone()
    }

    /// `Ok` while the lock is held, [`Error::LockLost`] once it is lost: call it right before a commit.
    pub fn check(&self) -> Result<()> {
        if self.is_lost() { Err(self.lost_error()) } else { Ok(()) }
    }

    /// The error that says this lock was lost, and why.
    pub fn lost_error(&self) -> Error {
        let state = self.shared.state();
        let reason = state.lost_reason.clone().unwrap_or_else(|| "it is no longer renewed".to_string());
        Error::LockLost { purpose: state.info.purpose.clone(), reason }
    }

    /// Stops renewing and deletes the lock object. A failure is logged and returned; the lock then expires by
    /// itself after one lease.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.shared.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            // A renewal in flight finishes first, so that it cannot put the object back after the delete.
            let _ = renewer.await;
        }
        let deleted = self.store.delete(&self.key).await;
        match &deleted {
            Ok(()) => tracing::debug!(key = %self.key, "repository lock released"),
            Err(e) => not_deleted(&self.key, "the repository lock", e),
        }
        deleted
    }
}

impl Drop for RepositoryLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.shared.stop.cancel();
        delete_in_background(self.store.clone(), self.key.clone(), self.renewer.take());
    }
}

/// A conflicting lock, as the error names it.
struct Conflict {
    holder: String,
    since: DateTime<Utc>,
    expires: DateTime<Utc>,
}

impl Conflict {
    fn error(self) -> Error {
        Error::RepositoryLocked { holder: self.holder, since: self.since, expires: self.expires }
    }
}

async fn acquire(store: Arc<dyn Store>, kind: LockKind, options: &LockOptions) -> Result<RepositoryLock> {
    check_lease(options.lease)?;
    let start = Instant::now();
    let created_at = Utc::now();
    let id = format!("{}-{:016x}", created_at.format("%Y%m%dT%H%M%SZ"), rand::random::<u64>());
    let key = format!("{LOCKS_PREFIX}{id}{LOCK_SUFFIX}");
    let mut info = LockInfo {
        id,
        kind,
        purpose: options.purpose.clone(),
        hostname: crate::host::hostname(),
        pid: std::process::id(),
        user: crate::host::user_name(),
        dr_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at,
        renewed_at: created_at,
        expires_at: created_at,
    };
    let mut conflicts = 0;
    let mut announced = false;
    // Also withdraws our attempt if this future is dropped half-way (a waiting command cancelled).
    let mut attempt = LockAttempt { store: store.clone(), key: key.clone(), pending: false };
    loop {
        // The lease counts from before the write, on this process's clock: never later than `expires_at`.
        let written_at = Instant::now();
        info.renewed_at = Utc::now();
        info.expires_at = info.renewed_at + options.lease;
        let bytes = encode(&info)?;
        attempt.pending = true;
        if let Err(e) = store.put(&key, bytes.clone()).await {
            // The write may have landed all the same.
            attempt.withdraw().await;
            return Err(e);
        }
        let conflict = match first_conflict(store.as_ref(), &key, kind).await {
            Ok(conflict) => conflict,
            Err(e) => {
                attempt.withdraw().await;
                return Err(e);
            }
        };
        let Some(conflict) = conflict else {
            attempt.pending = false;
            let waited = start.elapsed();
            WAITED_MICROS.fetch_add(waited.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
            if announced {
                let waited = crate::units::duration(waited);
                tracing::info!(%kind, purpose = %options.purpose, "repository lock taken after waiting {waited}");
            } else {
                tracing::debug!(%key, %kind, purpose = %options.purpose, "repository lock taken");
            }
            return Ok(RepositoryLock::start(store, key, info, bytes, written_at, options.lease, waited));
        };
        // Withdrawn at once: while it exists, our attempt blocks others as much as a held lock would.
        attempt.withdraw().await;
        let elapsed = start.elapsed();
        if elapsed >= options.wait {
            return Err(conflict.error());
        }
        if !announced {
            tracing::info!(
                holder = %conflict.holder,
                "the repository is locked; waiting up to {} for it",
                crate::units::duration(options.wait)
            );
            announced = true;
        }
        // Jittered, so that two racers that backed off together part without spinning.
        conflicts += 1;
        tokio::time::sleep(WAIT_BACKOFF.backoff(conflicts).min(options.wait - elapsed)).await;
    }
}

/// A lock object written during acquisition that is not ours to keep yet.
struct LockAttempt {
    store: Arc<dyn Store>,
    key: String,
    pending: bool,
}

impl LockAttempt {
    async fn withdraw(&mut self) {
        if let Err(e) = self.store.delete(&self.key).await {
            not_deleted(&self.key, "a lock attempt", &e);
        }
        self.pending = false;
    }
}

impl Drop for LockAttempt {
    fn drop(&mut self) {
        if self.pending {
            delete_in_background(self.store.clone(), self.key.clone(), None);
        }
    }
}

/// Deletions of dropped locks and lock attempts still running. A command stopped by a signal is dropped whole,
/// and a runtime that shuts down cancels its tasks: the CLI awaits these first ([`settle`]), or an interrupted
/// command would leave its lock object to block every other one for a whole lease.
static DELETIONS: std::sync::Mutex<Vec<JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

/// Waits (at most `within`) for the lock objects being deleted in the background.
pub async fn settle(within: Duration) {
    let pending = std::mem::take(&mut *DELETIONS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    if pending.is_empty() {
        return;
    }
    if tokio::time::timeout(within, futures::future::join_all(pending)).await.is_err() {
        tracing::warn!("a repository lock could not be deleted in time: it expires by itself after its lease");
    }
}

/// Deletes a lock object from a spawned task (after `renewer` ended): for drops, which cannot wait.
fn delete_in_background(store: Arc<dyn Store>, key: String, renewer: Option<JoinHandle<()>>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let deletion = runtime.spawn(async move {
                if let Some(renewer) = renewer {
                    let _ = renewer.await;
                }
                if let Err(e) = store.delete(&key).await {
                    not_deleted(&key, "the repository lock", &e);
                }
            });
            let mut pending = DELETIONS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.retain(|deletion| !deletion.is_finished());
            pending.push(deletion);
        }
        Err(_) => tracing::warn!(%key, "repository lock dropped outside a runtime: it expires by itself"),
    }
}

impl RepositoryLock {
    fn start(
        store: Arc<dyn Store>,
        key: String,
        info: LockInfo,
        written: Bytes,
        confirmed: Instant,
        lease: Duration,
        waited: Duration,
    ) -> RepositoryLock {
        let kind = info.kind;
        let shared = Arc::new(Shared {
            lease,
            state: Mutex::new(State { info, written, attempted: None, confirmed, lost_reason: None }),
            lost: CancellationToken::new(),
            stop: CancellationToken::new(),
        });
        let renewer = tokio::spawn(renew(store.clone(), key.clone(), shared.clone()));
        RepositoryLock { store, key, kind, shared, renewer: Some(renewer), waited, released: false }
    }
}

/// Why a renewal did not happen.
enum RenewFailure {
    /// Someone else deleted or replaced our object: the lock is gone now, whatever its lease says.
    Gone(String),
    /// The store failed; try again while the lease lasts.
    Store(Error),
}

/// The renewer: every `lease / 3`, rewrite the object with a new expiry; retry failures sooner; declare the lock
/// lost when the lease runs out first or the object is no longer ours.
async fn renew(store: Arc<dyn Store>, key: String, shared: Arc<Shared>) {
    let interval = shared.lease / 3;
    let retry = (shared.lease / 12).max(Duration::from_millis(100));
    let mut next = interval;
    loop {
        let deadline = shared.deadline();
        let wake = (Instant::now() + next).min(deadline);
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        if shared.is_lost() {
            return;
        }
        // A renewal that finishes after the lease ran out does not count: another process may have taken the
        // lock for expired in between.
        match tokio::time::timeout_at(deadline.into(), renew_once(store.as_ref(), &key, &shared)).await {
            Ok(Ok(())) => next = interval,
            Ok(Err(RenewFailure::Gone(reason))) => {
                shared.lose(reason);
                return;
            }
            Ok(Err(RenewFailure::Store(e))) => {
                tracing::warn!(%key, "could not renew the repository lock, retrying: {e}");
                next = retry;
            }
            Err(_) => {
                shared.lose(format!(
                    "renewing it did not finish within its lease of {}",
                    crate::units::duration(shared.lease)
                ));
                return;
            }
        }
    }
}

async fn renew_once(store: &dyn Store, key: &str, shared: &Shared) -> std::result::Result<(), RenewFailure> {
    let current = match store::get_bytes(store, key, LOCK_LIMIT).await {
        Ok(bytes) => Bytes::from(bytes),
        Err(Error::ObjectMissing { .. }) => {
            return Err(RenewFailure::Gone(format!("its lock object {key} was deleted by someone else")));
        }
        Err(Error::ObjectCorrupt { .. }) => {
            return Err(RenewFailure::Gone(format!("its lock object {key} was replaced by someone else")));
        }
        Err(e) => return Err(RenewFailure::Store(e)),
    };
    let (started, bytes, info) = {
        let mut state = shared.state();
        if current != state.written && Some(&current) != state.attempted.as_ref() {
            return Err(RenewFailure::Gone(format!("its lock object {key} was replaced by someone else")));
        }
        // Taken before `renewed_at`, so that our deadline is never later than the `expires_at` others read.
        let started = Instant::now();
        let mut info = state.info.clone();
        info.renewed_at = Utc::now();
        info.expires_at = info.renewed_at + shared.lease;
        let bytes = encode(&info).map_err(RenewFailure::Store)?;
        state.attempted = Some(bytes.clone());
        (started, bytes, info)
    };
    store.put(key, bytes.clone()).await.map_err(RenewFailure::Store)?;
    let mut state = shared.state();
    state.info = info;
    state.written = bytes;
    state.attempted = None;
    state.confirmed = started;
    tracing::trace!(%key, "repository lock renewed");
    Ok(())
}

/// Why an object under `locks/` does not read as a lock (it then counts as an exclusive one until it expires).
#[derive(Debug, thiserror::Error)]
enum UnreadableLock {
    #[error("not a lock: {0}")]
    NotALock(#[source] serde_json::Error),
    /// The store found it damaged (too large, ...): the store's own reason.
    #[error("{reason}")]
    Damaged { reason: String },
}

/// One object under `locks/` other than ours.
struct Seen {
    key: String,
    info: std::result::Result<LockInfo, UnreadableLock>,
    modified: Option<DateTime<Utc>>,
}

impl Seen {
    fn expires_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match &self.info {
            Ok(info) => info.expires_at,
            // Without a time from the store there is nothing to wait for.
            Err(_) => self.modified.map_or(now, |m| m + UNREADABLE_LOCK_LEASE),
        }
    }

    fn kind(&self) -> LockKind {
        self.info.as_ref().map_or(LockKind::Exclusive, |info| info.kind)
    }

    fn conflict(&self, now: DateTime<Utc>) -> Conflict {
        match &self.info {
            Ok(info) => Conflict { holder: info.holder(), since: info.created_at, expires: info.expires_at },
            Err(problem) => Conflict {
                holder: format!("an unreadable lock object {} ({problem})", self.key),
                since: self.modified.unwrap_or(now),
                expires: self.expires_at(now),
            },
        }
    }
}

/// Every lock object but `own`, oldest first; objects that vanish while being read are skipped.
async fn other_locks(store: &dyn Store, own: Option<&str>) -> Result<Vec<Seen>> {
    let mut seen = Vec::new();
    for meta in store.list(LOCKS_PREFIX).await? {
        if Some(meta.key.as_str()) == own || !meta.key.ends_with(LOCK_SUFFIX) {
            continue;
        }
        let info = match store::get_bytes(store, &meta.key, LOCK_LIMIT).await {
            Ok(bytes) => serde_json::from_slice::<LockInfo>(&bytes).map_err(UnreadableLock::NotALock),
            Err(Error::ObjectMissing { .. }) => continue,
            Err(Error::ObjectCorrupt { reason, .. }) => Err(UnreadableLock::Damaged { reason }),
            Err(e) => return Err(e),
        };
        seen.push(Seen { key: meta.key, info, modified: meta.modified });
    }
    Ok(seen)
}

/// The oldest live lock that conflicts with a lock of `kind`; expired locks are deleted on the way (best effort).
async fn first_conflict(store: &dyn Store, own: &str, kind: LockKind) -> Result<Option<Conflict>> {
    let now = Utc::now();
    let mut oldest: Option<Conflict> = None;
    for seen in other_locks(store, Some(own)).await? {
        if seen.expires_at(now) <= now {
            let holder = seen.conflict(now).holder;
            tracing::info!(key = %seen.key, %holder, "removing an expired repository lock");
            if let Err(e) = store.delete(&seen.key).await {
                not_deleted(&seen.key, "an expired repository lock", &e);
            }
            continue;
        }
        if kind.conflicts_with(seen.kind()) {
            let conflict = seen.conflict(now);
            if oldest.as_ref().is_none_or(|o| conflict.since < o.since) {
                oldest = Some(conflict);
            }
        }
    }
    Ok(oldest)
}

/// Logs a lock object left behind. Credentials that may not delete (a backed-up host's, docs/s3.md) are expected
/// to fail here every time: the object then expires by itself, which only ever delays others.
fn not_deleted(key: &str, what: &str, e: &Error) {
    match e {
        Error::StoreAccessDenied { .. } => {
            tracing::info!(%key, "these credentials may not delete {what}: it expires by itself after its lease")
        }
        e => tracing::warn!(%key, "could not delete {what} (it expires by itself after its lease): {e}"),
    }
}

fn encode(info: &LockInfo) -> Result<Bytes> {
    serde_json::to_vec_pretty(info).map(Bytes::from).map_err(|e| Error::io("encoding a lock object", e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    async fn repository() -> Repository {
        Repository::init(Arc::new(MemoryStore::new())).await.unwrap()
    }

    fn options(purpose: &str) -> LockOptions {
        LockOptions { purpose: purpose.to_string(), lease: Duration::from_secs(2), wait: Duration::ZERO }
    }

    #[tokio::test]
    async fn the_lease_minimum_is_one_check_for_the_file_and_for_code() {
        let short = LockConfig { lease: Some(Duration::from_millis(500)), wait: None };
        let err = validate(&short).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: [lock] lease = 500ms is too short; use at least 1s (default 5m)"
        );
        assert!(validate(&LockConfig { lease: Some(MIN_LEASE), wait: None }).is_ok());
        assert!(validate(&LockConfig::default()).is_ok());
        let in_code = LockOptions { lease: Duration::from_millis(500), ..options("backup") };
        let err = repository().await.lock(LockKind::Shared, &in_code).await.unwrap_err();
        assert_eq!(err.to_string(), validate(&short).unwrap_err().to_string());
    }

    #[test]
    fn only_shared_locks_go_together() {
        use LockKind::{Exclusive, Shared};
        assert!(!Shared.conflicts_with(Shared));
        assert!(Shared.conflicts_with(Exclusive));
        assert!(Exclusive.conflicts_with(Shared));
        assert!(Exclusive.conflicts_with(Exclusive));
    }

    #[test]
    fn options_come_from_the_config_or_the_defaults() {
        let defaults = LockOptions::from_config(&LockConfig::default(), "backup");
        assert_eq!(defaults, LockOptions::new("backup"));
        assert_eq!((defaults.lease, defaults.wait), (Duration::from_secs(300), Duration::ZERO));
        let config = LockConfig { lease: Some(Duration::from_secs(60)), wait: Some(Duration::from_secs(600)) };
        let set = LockOptions::from_config(&config, "prune");
        assert_eq!((set.purpose.as_str(), set.lease, set.wait), ("prune", config.lease.unwrap(), config.wait.unwrap()));
    }

    #[tokio::test]
    async fn an_exclusive_lock_names_its_holder_to_the_next_one() {
        let repo = repository().await;
        let held = repo.lock(LockKind::Exclusive, &options("prune")).await.unwrap();
        let err = repo.lock(LockKind::Shared, &options("backup")).await.unwrap_err();
        let Error::RepositoryLocked { holder, since, expires } = &err else { panic!("{err:?}") };
        assert!(
            holder.starts_with("prune by ") && holder.contains(&format!("(pid {})", std::process::id())),
            "{holder}"
        );
        assert_eq!(*since, held.info().created_at);
        assert!(*expires > Utc::now());
        assert!(err.hint().unwrap().contains("expires by itself"), "{:?}", err.hint());
        // The failed attempt left nothing behind.
        assert_eq!(repo.locks().await.unwrap().len(), 1);
        held.release().await.unwrap();
        assert!(repo.locks().await.unwrap().is_empty());
        repo.lock(LockKind::Exclusive, &options("prune")).await.unwrap().release().await.unwrap();
    }

    #[tokio::test]
    async fn shared_locks_go_together() {
        let repo = repository().await;
        let a = repo.lock(LockKind::Shared, &options("backup")).await.unwrap();
        let b = repo.lock(LockKind::Shared, &options("verify")).await.unwrap();
        assert!(matches!(repo.lock(LockKind::Exclusive, &options("prune")).await, Err(Error::RepositoryLocked { .. })));
        assert_eq!(repo.locks().await.unwrap().len(), 2);
        a.release().await.unwrap();
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_shorter_than_a_second_is_refused() {
        let repo = repository().await;
        let mut short = options("backup");
        short.lease = Duration::from_millis(100);
        assert!(matches!(repo.lock(LockKind::Shared, &short).await, Err(Error::ConfigInvalid(_))));
    }

    #[tokio::test]
    async fn a_dropped_lock_is_deleted() {
        let repo = repository().await;
        drop(repo.lock(LockKind::Exclusive, &options("prune")).await.unwrap());
        for _ in 0..100 {
            if repo.locks().await.unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the dropped lock's object is still there");
    }
}

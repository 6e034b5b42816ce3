//! Per-user rate limits and the node's free-disk watermark: what one user may cost the
//! others.
//!
//! - **Rates** ([`Quotas::admit`]): a token bucket per user (across all their sessions and
//!   groups on this node) for state-changing requests (`quotas.requests_per_sec`) and one
//!   for messages (`quotas.messages_per_sec`); reads are not limited. A request over its
//!   rate is answered 509 MESSAGE_CURRENT_LIMITING naming the setting, before its group is
//!   even looked at. A request refused for another reason keeps its token spent: it cost
//!   work too (a look-up, a group loaded), and a refund would let a user loop refused
//!   requests without limit. Within the rate a refused send still gets its own error (605,
//!   602, 507, 506, 511) first, as the contract orders them. The arithmetic is
//!   `group::rules::rate`'s.
//! - **Disk** ([`Quotas::check_disk`]): sends and uploads are refused while the free
//!   space of the data (or files) directory is below `quotas.min_free_disk_mb`, so that the
//!   disk never fills under the store (a full disk fails flushes: nothing could be
//!   acknowledged any more, reads and deletions included). Checked on the node that
//!   writes them: in a cluster, the group's owner, whichever node the client is on. Free
//!   space is read at most once a second per directory.
//! - **Files per user** ([`Quotas::check_file_bytes`]): the shared files one user uploaded,
//!   over all groups (in a cluster, on every core node: the group's owner, where the upload
//!   is checked, asks the others for their part, [`Quotas::file_bytes_of`]; a node that
//!   does not answer is left out, so the quota is soft while one is unreachable), total at
//!   most `quotas.file_mb_per_user`; an upload that
//!   would go over is refused (50 MAX_LIMIT) before a byte is taken. Usage is read from the
//!   store at start, grows as uploads are recorded, and is read again (at most every two
//!   seconds) when a check would refuse after files were deleted or groups destroyed, so
//!   that a deletion frees room without per-owner bookkeeping in the store. A re-read runs
//!   in `spawn_blocking` (one at a time) and keeps what was recorded while it ran. Uploads in
//!   progress are not counted: parallel uploads may overshoot by what is in flight
//!   (bounded by `files.max_transfers_per_user` x `limits.max_file_bytes`).
//! - Member attributes need no quota of their own: the contract bounds them per member and
//!   group (4 KiB) and the groups per user (`limits.max_groups_per_user`).

use crate::clock::mono_ms;
use crate::group::persist::GroupStore;
use crate::group::rules::rate::{Bucket, Rate};
use convoke_protocol::{ApiError, ErrorCode, RequestClass};
use dashmap::DashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The settings this module enforces (from `[quotas]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSettings {
    pub requests: Rate,
    pub messages: Rate,
    /// Sends and uploads are refused below this many free bytes; 0 = never.
    pub min_free_disk_bytes: u64,
    /// Bytes of shared files one user may own on this node; 0 = no limit.
    pub file_bytes_per_user: u64,
}

impl QuotaSettings {
    /// The `[quotas]` settings.
    pub fn from_config(config: &crate::Config) -> Self {
        let q = &config.quotas;
        Self {
            requests: Rate {
                per_sec: q.requests_per_sec,
                burst: q.requests_burst,
            },
            messages: Rate {
                per_sec: q.messages_per_sec,
                burst: q.messages_burst,
            },
            min_free_disk_bytes: q.min_free_disk_mb.saturating_mul(1024 * 1024),
            file_bytes_per_user: q.file_mb_per_user.saturating_mul(1024 * 1024),
        }
    }
}

/// Buckets of one kind, by user. Buckets that are full again are forgotten now and then,
/// so the map holds only users active within the last `burst / per_sec` seconds.
#[derive(Debug)]
struct Buckets {
    rate: Rate,
    /// The setting names, for the refusal.
    setting: &'static str,
    what: &'static str,
    /// The `kind` label of `convoke_rate_limited_total`.
    label: &'static str,
    map: DashMap<String, Bucket>,
    prune_at: AtomicUsize,
}

const PRUNE_MIN: usize = 4096;

impl Buckets {
    fn new(rate: Rate, setting: &'static str, what: &'static str, label: &'static str) -> Self {
        Self {
            rate,
            setting,
            what,
            label,
            map: DashMap::new(),
            prune_at: AtomicUsize::new(PRUNE_MIN),
        }
    }

    fn take(&self, user: &str, now: i64) -> Result<(), ApiError> {
        if !self.rate.is_limited() {
            return Ok(());
        }
        let ok = match self.map.get_mut(user) {
            Some(mut b) => b.take(self.rate, now),
            None => {
                let mut b = Bucket::full(self.rate, now);
                let ok = b.take(self.rate, now);
                self.map.insert(user.to_string(), b);
                self.prune(now);
                ok
            }
        };
        if ok {
            return Ok(());
        }
        metrics::counter!("convoke_rate_limited_total", "kind" => self.label).increment(1);
        Err(ApiError::new(
            ErrorCode::MessageCurrentLimiting,
            format!(
                "user {user:?} is over the rate of {} {} per second (burst {}, {}); retry later",
                self.rate.per_sec, self.what, self.rate.burst, self.setting
            ),
        ))
    }

    fn prune(&self, now: i64) {
        let len = self.map.len();
        if len < self.prune_at.load(Ordering::Relaxed) {
            return;
        }
        self.map.retain(|_, b| !b.is_full(self.rate, now));
        let left = self.map.len();
        self.prune_at
            .store((left * 2).max(PRUNE_MIN), Ordering::Relaxed);
    }
}

/// The node's free-disk watermark over one directory, with its last reading.
#[derive(Debug)]
struct Watermark {
    dir: PathBuf,
    /// Free bytes at the last reading.
    free: AtomicU64,
    /// When it was read ([`mono_ms`]; 0 = never).
    read_at: AtomicI64,
}

impl Watermark {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            free: AtomicU64::new(u64::MAX),
            read_at: AtomicI64::new(0),
        }
    }

    fn free(&self, now: i64) -> u64 {
        if now.saturating_sub(self.read_at.load(Ordering::Relaxed)) < 1000 {
            return self.free.load(Ordering::Relaxed);
        }
        self.read_at.store(now, Ordering::Relaxed);
        match fs2::available_space(&self.dir) {
            Ok(free) => {
                self.free.store(free, Ordering::Relaxed);
                metrics::gauge!("convoke_disk_free_bytes").set(free as f64);
                free
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the free disk space");
                // Unknown: keep the last reading rather than refuse everything.
                self.free.load(Ordering::Relaxed)
            }
        }
    }
}

/// Which directory a write lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// The store (messages).
    Data,
    /// Shared-file blobs (uploads).
    Files,
}

/// The node's quotas. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Quotas {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requests: Buckets,
    messages: Buckets,
    min_free: u64,
    data: Watermark,
    files: Watermark,
    file_bytes: FileBytes,
}

/// Bytes of shared files per owner (see the module doc).
#[derive(Debug, Default)]
struct FileBytes {
    max: u64,
    /// The store and blob directory to read usage from; unset in unit tests.
    source: std::sync::OnceLock<(crate::store::Store, PathBuf)>,
    used: DashMap<String, u64>,
    /// Files were deleted since usage was last read: a refusal reads it again first.
    stale: std::sync::atomic::AtomicBool,
    /// When usage was last read ([`mono_ms`]).
    read_at: AtomicI64,
    /// While usage is being read: what was recorded meanwhile (the read may not see it),
    /// added to the read's totals. `None` when no read is under way.
    recorded_during_read: std::sync::Mutex<Option<std::collections::HashMap<String, u64>>>,
}

impl FileBytes {
    /// Reads every owner's usage from the store (the groups that have a blob directory)
    /// and merges it in; does nothing if another read is under way. Blocking: on the
    /// async path, call it through `spawn_blocking`.
    fn read(&self) {
        let Some((store, dir)) = self.source.get() else {
            return;
        };
        if !self.begin_read() {
            return;
        }
        let used = Self::scan(store, dir);
        self.finish_read(used);
    }

    /// Marks a read as under way; false if one already is.
    fn begin_read(&self) -> bool {
        let mut during = lock(&self.recorded_during_read);
        if during.is_some() {
            return false;
        }
        *during = Some(Default::default());
        true
    }

    /// Ends a read: each owner's usage is what the read found plus what was recorded while
    /// it ran (a file the read also saw counts twice until the next read: too much, never
    /// too little); owners with nothing are forgotten.
    fn finish_read(&self, mut used: std::collections::HashMap<String, u64>) {
        let mut during = lock(&self.recorded_during_read);
        for (u, n) in during.take().unwrap_or_default() {
            *used.entry(u).or_default() += n;
        }
        self.used.retain(|u, _| used.contains_key(u));
        for (u, n) in used {
            self.used.insert(u, n);
        }
        self.read_at.store(mono_ms(), Ordering::Relaxed);
    }

    /// `size` more bytes of `user`'s files were recorded.
    fn record(&self, user: &str, size: u64) {
        let mut during = lock(&self.recorded_during_read);
        if let Some(during) = during.as_mut() {
            *during.entry(user.to_string()).or_default() += size;
        }
        *self.used.entry(user.to_string()).or_default() += size;
    }

    /// Every owner's usage in the store: blocking (a directory listing and a group load
    /// per group with files).
    fn scan(store: &crate::store::Store, dir: &Path) -> std::collections::HashMap<String, u64> {
        let mut used: std::collections::HashMap<String, u64> = Default::default();
        let groups = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok());
        for gid in groups {
            match store.load_group(gid) {
                Ok(Some(g)) => {
                    for f in g.files.values() {
                        *used.entry(f.owner.clone()).or_default() += f.size;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(group = gid, error = %e, "cannot read shared files for the per-user quota")
                }
            }
        }
        used
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Quotas {
    /// Quotas with `settings`, watching the free space of `data_dir` and `files_dir`.
    pub fn new(settings: &QuotaSettings, data_dir: &Path, files_dir: &Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                requests: Buckets::new(
                    settings.requests,
                    "quotas.requests_per_sec",
                    "state-changing requests",
                    "requests",
                ),
                messages: Buckets::new(
                    settings.messages,
                    "quotas.messages_per_sec",
                    "messages",
                    "messages",
                ),
                min_free: settings.min_free_disk_bytes,
                data: Watermark::new(data_dir.to_path_buf()),
                files: Watermark::new(files_dir.to_path_buf()),
                file_bytes: FileBytes {
                    max: settings.file_bytes_per_user,
                    ..FileBytes::default()
                },
            }),
        }
    }

    /// Takes a token for a request of `class` by `user` (reads take none), or answers 509.
    pub fn admit(&self, user: &str, class: RequestClass) -> Result<(), ApiError> {
        let now = mono_ms();
        match class {
            RequestClass::Read => {}
            RequestClass::Change => self.inner.requests.take(user, now)?,
            RequestClass::Message => self.inner.messages.take(user, now)?,
        }
        Ok(())
    }

    /// Whether a write into `disk` may go ahead: refused (500 for a send, retryable once
    /// space is freed; the caller picks the code) while free space is below the watermark.
    pub fn check_disk(&self, disk: Disk, code: ErrorCode) -> Result<(), ApiError> {
        let min = self.inner.min_free;
        if min == 0 {
            return Ok(());
        }
        let w = match disk {
            Disk::Data => &self.inner.data,
            Disk::Files => &self.inner.files,
        };
        let free = w.free(mono_ms());
        if free >= min {
            return Ok(());
        }
        let what = match disk {
            Disk::Data => "disk_data",
            Disk::Files => "disk_files",
        };
        metrics::counter!("convoke_rate_limited_total", "kind" => what).increment(1);
        Err(ApiError::new(
            code,
            format!(
                "the broker's disk is nearly full: {} MiB free in {}, below quotas.min_free_disk_mb = {}; \
                 nothing was stored, retry once space is freed",
                free / (1024 * 1024),
                w.dir.display(),
                min / (1024 * 1024)
            ),
        ))
    }
}

impl Quotas {
    /// Reads the shared files' usage per owner from `store` (the groups with a directory
    /// under `files_dir`), and from then on whenever it may have gone down.
    pub fn load_file_usage(&self, store: &crate::store::Store, files_dir: &Path) {
        let fb = &self.inner.file_bytes;
        if fb.max == 0 {
            return;
        }
        let _ = fb.source.set((store.clone(), files_dir.to_path_buf()));
        fb.read();
    }

    /// Whether the quota is on (`quotas.file_mb_per_user` > 0).
    pub fn counts_file_bytes(&self) -> bool {
        self.inner.file_bytes.max > 0
    }

    /// The bytes of shared files `user` has in this node's groups, for another node's
    /// check (in a cluster). Read again first when files were deleted since the last read
    /// (at most every two seconds). Blocking.
    pub fn file_bytes_of(&self, user: &str) -> u64 {
        let fb = &self.inner.file_bytes;
        if fb.max == 0 {
            return 0;
        }
        if fb.stale.load(Ordering::Relaxed)
            && mono_ms().saturating_sub(fb.read_at.load(Ordering::Relaxed)) >= 2_000
        {
            fb.stale.store(false, Ordering::Relaxed);
            fb.read();
        }
        fb.used.get(user).map_or(0, |u| *u)
    }

    /// Whether `user` may upload `size` more bytes of shared files (50 MAX_LIMIT if not),
    /// with `elsewhere` bytes in groups owned by other nodes (in a cluster; 0 on one node).
    /// Usage is read again (off the async threads) first when it would refuse after files
    /// were deleted.
    pub async fn check_file_bytes(
        &self,
        user: &str,
        size: u64,
        elsewhere: u64,
    ) -> Result<(), ApiError> {
        let fb = &self.inner.file_bytes;
        if fb.max == 0 {
            return Ok(());
        }
        let used = || {
            fb.used
                .get(user)
                .map_or(0, |u| *u)
                .saturating_add(elsewhere)
        };
        if used().saturating_add(size) > fb.max
            && fb.stale.load(Ordering::Relaxed)
            && mono_ms().saturating_sub(fb.read_at.load(Ordering::Relaxed)) >= 2_000
        {
            fb.stale.store(false, Ordering::Relaxed);
            let inner = self.inner.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || inner.file_bytes.read()).await {
                tracing::warn!(error = %e, "reading shared files' usage failed");
            }
        }
        let used = used();
        if used.saturating_add(size) <= fb.max {
            return Ok(());
        }
        metrics::counter!("convoke_rate_limited_total", "kind" => "file_bytes").increment(1);
        Err(ApiError::new(
            ErrorCode::MaxLimit,
            format!(
                "user {user:?} has {used} bytes of shared files; {size} more would exceed \
                 quotas.file_mb_per_user = {} MiB",
                fb.max / (1024 * 1024)
            ),
        ))
    }

    /// An upload of `size` bytes by `user` was recorded.
    pub fn file_recorded(&self, user: &str, size: u64) {
        if self.inner.file_bytes.max > 0 {
            self.inner.file_bytes.record(user, size);
        }
    }

    /// Files may have been deleted (deleteGroupSharedFile, destroyGroup): usage is read
    /// again before the next refusal. Called on the group's owner, the node whose uploads
    /// the quota checks (`crate::ingress::call_with_facts`).
    pub fn files_deleted(&self) {
        self.inner.file_bytes.stale.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(min_free_mb: u64) -> (tempfile::TempDir, Quotas) {
        let dir = tempfile::tempdir().unwrap();
        let settings = QuotaSettings {
            requests: Rate {
                per_sec: 1,
                burst: 2,
            },
            messages: Rate {
                per_sec: 0,
                burst: 0,
            },
            min_free_disk_bytes: min_free_mb * 1024 * 1024,
            file_bytes_per_user: 1000,
        };
        let q = Quotas::new(&settings, dir.path(), dir.path());
        (dir, q)
    }

    #[test]
    fn each_user_has_their_own_bucket_and_a_refusal_names_the_setting() {
        let (_d, q) = quotas(0);
        assert!(q.admit("a", RequestClass::Change).is_ok());
        assert!(q.admit("a", RequestClass::Change).is_ok());
        let e = q.admit("a", RequestClass::Change).unwrap_err();
        assert_eq!(e.code, ErrorCode::MessageCurrentLimiting);
        assert!(
            e.message.contains("quotas.requests_per_sec"),
            "{}",
            e.message
        );
        assert!(q.admit("b", RequestClass::Change).is_ok(), "another user");
        assert!(q.admit("a", RequestClass::Read).is_ok(), "reads are free");
        assert!(
            q.admit("a", RequestClass::Message).is_ok(),
            "messages unlimited here"
        );
    }

    #[tokio::test]
    async fn file_bytes_per_user_are_bounded() {
        let (_d, q) = quotas(0);
        assert!(q.check_file_bytes("a", 1000, 0).await.is_ok());
        q.file_recorded("a", 600);
        let e = q.check_file_bytes("a", 401, 0).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::MaxLimit);
        assert!(
            e.message.contains("quotas.file_mb_per_user"),
            "{}",
            e.message
        );
        assert!(q.check_file_bytes("a", 400, 0).await.is_ok());
        assert!(q.check_file_bytes("b", 1000, 0).await.is_ok(), "per user");
        // In a cluster, what the user has in groups owned by other nodes counts too.
        assert!(q.check_file_bytes("b", 600, 400).await.is_ok());
        let e = q.check_file_bytes("b", 601, 400).await.unwrap_err();
        assert!(e.message.contains("has 400 bytes"), "{}", e.message);
    }

    /// Usage recorded while a re-read runs is not lost when the read's totals replace the
    /// old ones (they used to be cleared and re-inserted from the read alone).
    #[test]
    fn usage_recorded_during_a_read_survives_it() {
        let (_d, q) = quotas(0);
        let fb = &q.inner.file_bytes;
        q.file_recorded("gone", 10);
        assert!(fb.begin_read());
        assert!(!fb.begin_read(), "one read at a time");
        q.file_recorded("a", 600);
        fb.finish_read([("b".to_string(), 5)].into_iter().collect());
        let used = |u: &str| fb.used.get(u).map(|n| *n);
        assert_eq!(used("a"), Some(600), "recorded during the read");
        assert_eq!(used("b"), Some(5), "found by the read");
        assert_eq!(used("gone"), None, "no longer in the store");
        assert!(fb.begin_read(), "the read is over");
    }

    #[test]
    fn the_watermark_refuses_below_it_and_names_the_setting() {
        let (_d, q) = quotas(0);
        assert!(q.check_disk(Disk::Data, ErrorCode::ServerBusy).is_ok());
        let (_d, q) = quotas(u64::MAX / (2 << 20));
        let e = q
            .check_disk(Disk::Files, ErrorCode::UploadFileError)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UploadFileError);
        assert!(
            e.message.contains("quotas.min_free_disk_mb"),
            "{}",
            e.message
        );
    }
}

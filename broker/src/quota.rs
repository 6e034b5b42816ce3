//! Per-user rate limits and the node's free-disk watermark: what one user may cost the
//! others.
//!
//! - **Rates** ([`Quotas::admit`]): a token bucket per user (across all their sessions and
//!   groups on this node) for state-changing requests (`quotas.requests_per_sec`) and one
//!   for messages (`quotas.messages_per_sec`); reads are not limited. A request over its
//!   rate is answered 509 MESSAGE_CURRENT_LIMITING naming the setting, before its group is
//!   even looked at. A request refused for any other reason gives its token back
//!   ([`Admitted::refused`]), so only what was done counts; that is how a refused send's
//!   own error (605, 602, 507, 506, 511) still comes first, as the contract orders them,
//!   unless the sender is already over the rate. The arithmetic is
//!   `group::rules::rate`'s.
//! - **Disk** ([`Quotas::check_disk`]): sends and uploads are refused while the free
//!   space of the data (or files) directory is below `quotas.min_free_disk_mb`, so that the
//!   disk never fills under the store (a full disk fails flushes: nothing could be
//!   acknowledged any more, reads and deletions included). Free space is read at most once
//!   a second per directory.

use crate::clock::now_ms;
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
    map: DashMap<String, Bucket>,
    prune_at: AtomicUsize,
}

const PRUNE_MIN: usize = 4096;

impl Buckets {
    fn new(rate: Rate, setting: &'static str, what: &'static str) -> Self {
        Self {
            rate,
            setting,
            what,
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
        metrics::counter!("convoke_rate_limited_total", "kind" => self.what).increment(1);
        Err(ApiError::new(
            ErrorCode::MessageCurrentLimiting,
            format!(
                "user {user:?} is over the rate of {} {} per second (burst {}, {}); retry later",
                self.rate.per_sec, self.what, self.rate.burst, self.setting
            ),
        ))
    }

    fn give_back(&self, user: &str) {
        if let Some(mut b) = self.map.get_mut(user) {
            b.give_back(self.rate);
        }
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
    /// When it was read, ms since the Unix epoch (0 = never).
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
}

/// A request admitted under its rate: [`Admitted::refused`] gives its token back if it then
/// fails for another reason.
#[derive(Debug)]
#[must_use = "a refused request must give its token back"]
pub struct Admitted {
    class: RequestClass,
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
                ),
                messages: Buckets::new(settings.messages, "quotas.messages_per_sec", "messages"),
                min_free: settings.min_free_disk_bytes,
                data: Watermark::new(data_dir.to_path_buf()),
                files: Watermark::new(files_dir.to_path_buf()),
            }),
        }
    }

    /// Takes a token for a request of `class` by `user` (reads take none), or answers 509.
    pub fn admit(&self, user: &str, class: RequestClass) -> Result<Admitted, ApiError> {
        let now = now_ms();
        match class {
            RequestClass::Read => {}
            RequestClass::Change => self.inner.requests.take(user, now)?,
            RequestClass::Message => self.inner.messages.take(user, now)?,
        }
        Ok(Admitted { class })
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
        let free = w.free(now_ms());
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

impl Admitted {
    /// The request failed for another reason: its token goes back to `user`'s bucket.
    pub fn refused(self, quotas: &Quotas, user: &str) {
        match self.class {
            RequestClass::Read => {}
            RequestClass::Change => quotas.inner.requests.give_back(user),
            RequestClass::Message => quotas.inner.messages.give_back(user),
        }
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

    #[test]
    fn a_refused_request_costs_nothing() {
        let (_d, q) = quotas(0);
        for _ in 0..10 {
            q.admit("a", RequestClass::Change).unwrap().refused(&q, "a");
        }
        assert!(q.admit("a", RequestClass::Change).is_ok());
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

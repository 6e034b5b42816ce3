//! Resumable uploads: which upload ids are being received, kept after an interruption, or
//! completed, per user.
//!
//! An upload is keyed by (user, client-chosen upload id), so one user can never reach
//! another's upload. Each key is in one of three states:
//! - **active**: a stream is receiving it. The stream holds a [`Lease`]; a resume arriving
//!   meanwhile (the client saw its connection drop before the broker did) asks the holder
//!   to stop and waits until it has put the upload down, then takes it over.
//! - **kept**: the stream broke before the end. The partial upload (the caller's payload:
//!   the fsynced temp file and the quota place) waits here for a resume until the keep time
//!   is over, then it is dropped, which deletes the file and gives the place back.
//! - **completed**: recorded; remembered for the keep time so that a resume whose final
//!   answer was lost gets the entry instead of a second copy of the file.
//!
//! The state lives in memory only: a restarted broker knows no upload (its start-up sweep
//! empties `tmp/`), so a resume after a restart starts afresh.

use super::upload::UploadRequest;
use convoke_protocol::{ApiError, ErrorCode, SharedFile};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// Longest a resume waits for the stream that still holds its upload to put it down
/// (that stream may be recording the completed file).
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// Whose upload, and the id its client gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadKey {
    pub user: String,
    pub upload_id: u64,
}

enum Slot<T> {
    Active {
        lease: u64,
        stop: Arc<Notify>,
    },
    Kept {
        epoch: u64,
        req: UploadRequest,
        kept: T,
    },
    Completed {
        epoch: u64,
        req: UploadRequest,
        file: SharedFile,
    },
}

struct State<T> {
    slots: HashMap<UploadKey, Slot<T>>,
    next: u64,
}

/// The node's uploads by key; `T` is what an interrupted upload leaves behind (its drop
/// releases it). Shared by every transfer task of the node.
pub struct Resumes<T> {
    state: Mutex<State<T>>,
    /// Woken whenever a key stops being active.
    changed: Notify,
}

impl<T: Send + 'static> std::fmt::Debug for Resumes<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resumes")
            .field("slots", &self.lock().slots.len())
            .finish()
    }
}

impl<T> Default for Resumes<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                slots: HashMap::new(),
                next: 1,
            }),
            changed: Notify::new(),
        }
    }
}

/// What a stream got by [`Resumes::claim`].
pub enum Claim<T: Send + 'static> {
    /// Nothing is known under the key: upload afresh (admission first).
    Fresh(Lease<T>),
    /// The kept partial upload, now this stream's.
    Kept(Lease<T>, T),
    /// The upload completed earlier: its entry.
    Completed(SharedFile),
}

impl<T: Send + 'static> std::fmt::Debug for Claim<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fresh(lease) => f.debug_tuple("Fresh").field(lease).finish(),
            Self::Kept(lease, _) => f.debug_tuple("Kept").field(lease).finish(),
            Self::Completed(file) => f.debug_tuple("Completed").field(file).finish(),
        }
    }
}

impl<T: Send + 'static> Resumes<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves the map consistent (every change is one
        // insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `key` for a stream about to receive `req`.
    ///
    /// A new upload (`req.resume == false`) gets [`Claim::Fresh`], or a -3 error if the id
    /// is known. A resume gets the kept upload, the completed entry (when group, name, size
    /// and content type match those of the first attempt; a -3 error naming the difference
    /// otherwise), or [`Claim::Fresh`] when the broker does not know the id (never seen,
    /// expired, released, or received by another broker). A resume of an upload that a
    /// stream still receives stops that stream and waits for it (up to [`TAKEOVER_WAIT`];
    /// then 500, retry).
    pub async fn claim(
        self: &Arc<Self>,
        key: UploadKey,
        req: &UploadRequest,
    ) -> Result<Claim<T>, ApiError> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change made after the look is not missed.
            changed.as_mut().enable();
            {
                let mut st = self.lock();
                match st.slots.remove(&key) {
                    None => return Ok(Claim::Fresh(self.activate(&mut st, key))),
                    Some(slot) if !req.resume => {
                        st.slots.insert(key.clone(), slot);
                        return Err(ApiError::param(format!(
                            "upload id {} is already in use; resume it, or choose another id",
                            key.upload_id
                        )));
                    }
                    Some(Slot::Kept {
                        epoch,
                        req: first,
                        kept,
                    }) => {
                        if let Err(e) = check_same(&first, req) {
                            let slot = Slot::Kept {
                                epoch,
                                req: first,
                                kept,
                            };
                            st.slots.insert(key, slot);
                            return Err(e);
                        }
                        let lease = self.activate(&mut st, key);
                        return Ok(Claim::Kept(lease, kept));
                    }
                    Some(Slot::Completed {
                        epoch,
                        req: first,
                        file,
                    }) => {
                        let answer =
                            check_same(&first, req).map(|()| Claim::Completed(file.clone()));
                        let slot = Slot::Completed {
                            epoch,
                            req: first,
                            file,
                        };
                        st.slots.insert(key, slot);
                        return answer;
                    }
                    Some(Slot::Active { lease, stop }) => {
                        stop.notify_one();
                        st.slots.insert(key.clone(), Slot::Active { lease, stop });
                    }
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(ApiError::new(
                    ErrorCode::ServerBusy,
                    format!(
                        "upload id {} is still being received on another stream; retry",
                        key.upload_id
                    ),
                ));
            }
        }
    }

    fn activate(self: &Arc<Self>, st: &mut State<T>, key: UploadKey) -> Lease<T> {
        let lease = st.next;
        st.next += 1;
        let stop = Arc::new(Notify::new());
        st.slots.insert(
            key.clone(),
            Slot::Active {
                lease,
                stop: stop.clone(),
            },
        );
        Lease {
            resumes: self.clone(),
            key,
            lease,
            stop,
            done: false,
        }
    }

    /// Replaces the active slot of `lease` (if it still has it) with `slot`, returning what
    /// it displaced, and wakes waiting resumes.
    fn settle(&self, key: &UploadKey, lease: u64, slot: Option<Slot<T>>) {
        let displaced = {
            let mut st = self.lock();
            match st.slots.get(key) {
                Some(Slot::Active { lease: l, .. }) if *l == lease => match slot {
                    Some(s) => st.slots.insert(key.clone(), s),
                    None => st.slots.remove(key),
                },
                // Not ours (cannot happen: only the holder ends an active slot).
                _ => slot,
            }
        };
        // Dropped outside the lock: dropping a kept upload deletes its file.
        drop(displaced);
        self.changed.notify_waiters();
    }

    /// Drops the kept upload or completed entry of `key` if it is still the one of `epoch`.
    /// Returns whether a kept (partial) upload was dropped.
    fn expire(&self, key: &UploadKey, epoch: u64) -> bool {
        let removed = {
            let mut st = self.lock();
            match st.slots.get(key) {
                Some(Slot::Kept { epoch: e, .. } | Slot::Completed { epoch: e, .. })
                    if *e == epoch =>
                {
                    st.slots.remove(key)
                }
                _ => None,
            }
        };
        matches!(removed, Some(Slot::Kept { .. }))
    }

    /// How many uploads are kept for a resume now.
    pub fn kept(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Kept { .. }))
            .count()
    }

    /// Removes the slot after `keep`, counting an expired partial upload.
    fn expire_after(self: &Arc<Self>, key: UploadKey, epoch: u64, keep: Duration) {
        let resumes = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            if resumes.expire(&key, epoch) {
                metrics::counter!("convoke_file_partials_expired_total").increment(1);
                tracing::debug!(user = %key.user, upload_id = key.upload_id, "interrupted upload not resumed in time: released");
            }
        });
    }
}

/// A stream's hold on an active upload key. Dropped without [`keep`](Self::keep) or
/// [`complete`](Self::complete), it frees the key (the upload failed: nothing is kept).
pub struct Lease<T: Send + 'static> {
    resumes: Arc<Resumes<T>>,
    key: UploadKey,
    lease: u64,
    stop: Arc<Notify>,
    done: bool,
}

impl<T: Send + 'static> std::fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("lease", &self.lease)
            .finish()
    }
}

impl<T: Send + 'static> Lease<T> {
    /// Resolves when a resume on another stream wants this upload.
    pub async fn stop_requested(&self) {
        self.stop.notified().await;
    }

    /// The stream broke: keep `kept` (described by `req`) for a resume for `keep`, then drop
    /// it. With `keep` zero it is dropped at once.
    pub fn keep(mut self, req: UploadRequest, kept: T, keep: Duration) {
        self.done = true;
        if keep.is_zero() {
            self.resumes.settle(&self.key, self.lease, None);
            drop(kept);
            return;
        }
        let slot = Slot::Kept {
            epoch: self.lease,
            req,
            kept,
        };
        self.resumes.settle(&self.key, self.lease, Some(slot));
        self.resumes
            .expire_after(self.key.clone(), self.lease, keep);
    }

    /// The upload was recorded as `file`: remember it for `keep`.
    pub fn complete(mut self, req: UploadRequest, file: SharedFile, keep: Duration) {
        self.done = true;
        if keep.is_zero() {
            self.resumes.settle(&self.key, self.lease, None);
            return;
        }
        let slot = Slot::Completed {
            epoch: self.lease,
            req,
            file,
        };
        self.resumes.settle(&self.key, self.lease, Some(slot));
        self.resumes
            .expire_after(self.key.clone(), self.lease, keep);
    }
}

impl<T: Send + 'static> Drop for Lease<T> {
    fn drop(&mut self) {
        if !self.done {
            self.resumes.settle(&self.key, self.lease, None);
        }
    }
}

/// A resume must describe the same file as the first attempt: -3 naming the first field
/// that differs.
pub fn check_same(first: &UploadRequest, resumed: &UploadRequest) -> Result<(), ApiError> {
    let differs = |what: &str, was: &dyn std::fmt::Debug, now: &dyn std::fmt::Debug| {
        Err(ApiError::param(format!(
            "upload id {} was started with {what} {was:?}, the resume says {now:?}",
            resumed.upload_id
        )))
    };
    if first.group_id != resumed.group_id {
        return differs("group", &first.group_id, &resumed.group_id);
    }
    if first.file_name != resumed.file_name {
        return differs("file name", &first.file_name, &resumed.file_name);
    }
    if first.size != resumed.size {
        return differs("size", &first.size, &resumed.size);
    }
    if first.content_type != resumed.content_type {
        return differs("content type", &first.content_type, &resumed.content_type);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn req(resume: bool) -> UploadRequest {
        UploadRequest {
            group_id: "7".into(),
            file_name: "a.bin".into(),
            size: 10,
            content_type: "application/octet-stream".into(),
            upload_id: 42,
            resume,
        }
    }

    fn key(user: &str) -> UploadKey {
        UploadKey {
            user: user.into(),
            upload_id: 42,
        }
    }

    /// Counts its drops (a kept upload's release).
    struct Payload(Arc<AtomicUsize>);

    impl Drop for Payload {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_resume_must_describe_the_same_file() {
        assert!(check_same(&req(false), &req(true)).is_ok());
        let mut other = req(true);
        other.size = 11;
        let e = check_same(&req(false), &other).expect_err("size differs");
        assert_eq!(e.code, ErrorCode::RequestParameterError);
        assert!(
            e.message.contains("size 10") && e.message.contains("11"),
            "{e}"
        );
        let mut other = req(true);
        other.group_id = "8".into();
        let e = check_same(&req(false), &other).expect_err("group differs");
        assert!(e.message.contains("group \"7\""), "{e}");
        let mut other = req(true);
        other.file_name = "b.bin".into();
        assert!(check_same(&req(false), &other).is_err());
        let mut other = req(true);
        other.content_type = "text/plain".into();
        let e = check_same(&req(false), &other).expect_err("type differs");
        assert!(e.message.contains("content type"), "{e}");
    }

    #[tokio::test]
    async fn kept_uploads_are_resumed_by_their_user_only_and_expire() {
        let resumes = Arc::new(Resumes::<Payload>::default());
        let drops = Arc::new(AtomicUsize::new(0));
        let Ok(Claim::Fresh(lease)) = resumes.claim(key("alice"), &req(false)).await else {
            panic!("a new id is fresh");
        };
        // The id is taken while active: a second new upload with it is refused.
        let e = resumes
            .claim(key("alice"), &req(false))
            .await
            .expect_err("in use");
        assert!(e.message.contains("42"), "{e}");
        let keep = Duration::from_millis(200);
        lease.keep(req(false), Payload(drops.clone()), keep);
        assert_eq!(resumes.kept(), 1);

        // Another user with the same id knows nothing of it.
        let Ok(Claim::Fresh(bob)) = resumes.claim(key("bob"), &req(true)).await else {
            panic!("bob's id is his own");
        };
        drop(bob);
        // A mismatched resume leaves it kept.
        let mut bigger = req(true);
        bigger.size = 99;
        assert!(resumes.claim(key("alice"), &bigger).await.is_err());
        assert_eq!(resumes.kept(), 1);
        let Ok(Claim::Kept(lease, payload)) = resumes.claim(key("alice"), &req(true)).await else {
            panic!("alice resumes");
        };
        assert_eq!(resumes.kept(), 0);
        lease.keep(req(false), payload, keep);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        // Not resumed within the keep time: dropped (file deleted, place released).
        tokio::time::sleep(keep * 3).await;
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(resumes.kept(), 0);
        assert!(matches!(
            resumes.claim(key("alice"), &req(true)).await,
            Ok(Claim::Fresh(_))
        ));
    }

    #[tokio::test]
    async fn a_resume_takes_over_an_active_stream_and_completed_ids_answer_their_entry() {
        let resumes = Arc::new(Resumes::<Payload>::default());
        let drops = Arc::new(AtomicUsize::new(0));
        let Ok(Claim::Fresh(lease)) = resumes.claim(key("alice"), &req(false)).await else {
            panic!("fresh");
        };
        // The old stream keeps receiving until asked to stop, then puts the upload down.
        let old = tokio::spawn({
            let drops = drops.clone();
            async move {
                lease.stop_requested().await;
                lease.keep(req(false), Payload(drops), Duration::from_secs(60));
            }
        });
        let Ok(Claim::Kept(lease, payload)) = resumes.claim(key("alice"), &req(true)).await else {
            panic!("taken over");
        };
        old.await.expect("old stream task");
        drop(payload);
        let file = SharedFile {
            file_id: "9".into(),
            file_name: "a.bin".into(),
            file_owner: "alice".into(),
            file_size: 10,
            created: 1,
            content_type: "application/octet-stream".into(),
            sha256: String::new(),
            secret: String::new(),
        };
        lease.complete(req(true), file.clone(), Duration::from_secs(60));
        match resumes.claim(key("alice"), &req(true)).await {
            Ok(Claim::Completed(f)) => assert_eq!(f, file),
            other => panic!("{other:?}"),
        }
        // A lease dropped without keeping (a failed upload) frees its key.
        let Ok(Claim::Fresh(lease)) = resumes.claim(key("carol"), &req(false)).await else {
            panic!("fresh");
        };
        drop(lease);
        assert!(matches!(
            resumes.claim(key("carol"), &req(false)).await,
            Ok(Claim::Fresh(_))
        ));
    }
}

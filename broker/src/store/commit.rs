//! Group commit: many writers share one flush.
//!
//! Measured on this machine: sled loses recent writes on `kill -9` unless flushed; a flush
//! per write gives ~8,000 durable writes/s, one flush shared by many writes >100,000/s. So
//! every write set goes to one committer thread, which applies all that are waiting, flushes
//! once, and only then tells each writer it is durable. Callers answer their clients after
//! that, never before.
//!
//! What can go wrong, and what the writer hears ([`CommitError`]):
//! - The write or flush fails (a disk error). sled may already hold the batch in memory, so
//!   the outcome is unknown. The committer then refuses every later write (a failed fsync is
//!   not retried: the kernel may have dropped the dirty pages, so a retry that succeeds
//!   proves nothing) and the store reports itself failed; the node stops (see `node.rs`)
//!   and sled's recovery at the next start decides what is on disk.
//! - The write is not confirmed within the commit deadline (a hung disk): the writer is
//!   told the outcome is unknown instead of waiting forever; the store is unhealthy until
//!   the committer catches up.
//! - The queue is over its byte budget ([`Store::overloaded`](super::Store::overloaded)):
//!   nothing is submitted, so nothing changed.
//!
//! Every write set gets a place in one submission order. [`Committer::submitted`] and
//! [`Committer::settle`] let a new group actor wait until everything its predecessor
//! submitted has been committed before it reads the store.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Keys to set (`Some`) or delete (`None`), applied atomically.
#[derive(Debug, Default, Clone)]
pub struct WriteSet {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Set when a record could not be encoded: the whole write set is refused (nothing of
    /// it is written) instead of storing an empty record.
    poisoned: Option<String>,
    /// Test hook (`debug.fault_injection`): what the committer does to the round holding
    /// this write set.
    fault: Option<Fault>,
}

/// Injected store failures, for tests only (`debug.fault_injection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Apply the round's batch, then report the flush as failed (a disk error after the
    /// change reached sled's memory).
    FailFlush,
    /// Sleep this long before applying the round (a hung disk).
    Hang(Duration),
}

impl WriteSet {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    /// Sets `key` to the encoded `value`. If `value` cannot be encoded, the write set is
    /// refused as a whole when submitted (nothing of it is written).
    pub fn put_record<T: bincode::Encode>(&mut self, key: Vec<u8>, value: &T) {
        match super::encode(value) {
            Ok(bytes) => self.put(key, bytes),
            Err(e) => {
                let shown = String::from_utf8_lossy(&key[..key.len().min(32)]).into_owned();
                self.poisoned
                    .get_or_insert_with(|| format!("record under key {shown:?}: {e}"));
            }
        }
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.poisoned.is_none() && self.fault.is_none()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Test hook: makes the round that commits this write set fail or hang.
    pub fn inject(&mut self, fault: Fault) {
        self.fault = Some(fault);
    }

    /// Bytes this write set holds while queued (keys, values and a fixed cost per op).
    fn weight(&self) -> usize {
        self.ops
            .iter()
            .map(|(k, v)| 48 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
            + 64
    }

    /// Adds this write set's operations to `b`, after those already in it.
    fn add_to(self, b: &mut sled::Batch) {
        for (k, v) in self.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
    }
}

/// Why a write set is not known to be durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The write or flush failed, or was not confirmed in time: the change may or may not
    /// be in the store.
    #[error("storage failure, the outcome is unknown ({0})")]
    Unknown(String),
    /// Nothing was written (the store had failed earlier, the committer stopped, the queue
    /// was full, or a record could not be encoded).
    #[error("storage failure, nothing was written ({0})")]
    NotWritten(String),
}

type Job = (WriteSet, usize, oneshot::Sender<Result<(), CommitError>>);

/// What the committer has done so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Write sets taken off the queue and answered (committed or failed), in order.
    done: u64,
    /// Set by the first failed write or flush; never cleared.
    failed: Option<Arc<str>>,
}

#[derive(Debug)]
struct State {
    /// Write sets put on the queue so far.
    submitted: AtomicU64,
    /// Bytes waiting on the queue.
    queued_bytes: AtomicUsize,
    queue_budget: AtomicUsize,
    /// Microseconds a busy committer waits for more write sets before flushing.
    window_us: AtomicU64,
    deadline_ms: AtomicU64,
    /// The highest submission count a writer gave up waiting for (deadline): the store is
    /// unhealthy until the committer has done that many.
    overdue: AtomicU64,
    /// A failure has been reported (metrics and log) once.
    failure_reported: AtomicBool,
    progress: watch::Sender<Progress>,
}

/// Handle to the committer thread. Dropping every handle stops the thread.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    state: Arc<State>,
    thread: Arc<Mutex<Option<thread::JoinHandle<()>>>>,
}

/// The default gathering window of a busy committer, in microseconds.
pub const DEFAULT_WINDOW_US: u64 = 1_000;

/// The default commit deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The default byte budget of the queue.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// A committer that flushed less than this long ago counts as busy.
const BUSY: Duration = Duration::from_millis(5);

impl Committer {
    /// Starts the committer thread for `db`.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let state = Arc::new(State {
            submitted: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            queue_budget: AtomicUsize::new(DEFAULT_QUEUE_BYTES),
            window_us: AtomicU64::new(DEFAULT_WINDOW_US),
            deadline_ms: AtomicU64::new(DEFAULT_DEADLINE.as_millis() as u64),
            overdue: AtomicU64::new(0),
            failure_reported: AtomicBool::new(false),
            progress: watch::Sender::new(Progress::default()),
        });
        let run_state = state.clone();
        let handle = thread::Builder::new()
            .name("convoke-commit".into())
            .spawn(move || run(db, rx, &run_state))?;
        Ok(Self {
            tx,
            state,
            thread: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Sets how long a busy committer gathers write sets before one flush; zero flushes
    /// each group of waiting write sets at once.
    pub fn set_window(&self, window: Duration) {
        let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        self.state.window_us.store(us, Ordering::Relaxed);
    }

    /// Sets the commit deadline (how long a writer waits before its outcome is unknown) and
    /// the queue's byte budget.
    pub fn set_limits(&self, deadline: Duration, queue_bytes: usize) {
        let ms = u64::try_from(deadline.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.state.deadline_ms.store(ms, Ordering::Relaxed);
        self.state
            .queue_budget
            .store(queue_bytes, Ordering::Relaxed);
    }

    /// Stops the thread once every other handle is gone, and waits for it (and so for its
    /// database handle) to finish.
    pub fn close(self) {
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        drop(self.tx);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Applies `ws` atomically and waits until it is on disk (or the deadline passes).
    pub async fn commit(&self, ws: WriteSet) -> Result<(), CommitError> {
        self.submit(ws).outcome().await
    }

    /// Queues `ws` now and returns a handle to wait for its durability later. Write sets
    /// are applied in the order they are submitted.
    pub fn submit(&self, ws: WriteSet) -> Durable {
        let deadline = Instant::now() + self.deadline();
        if let Some(e) = self.failure() {
            return Durable::refused(format!(
                "the store failed earlier ({e}); the node is stopping"
            ));
        }
        if let Some(e) = &ws.poisoned {
            tracing::error!(error = %e, "a record could not be encoded; its write set is refused");
            metrics::counter!("convoke_store_errors_total", "kind" => "encode").increment(1);
            return Durable::refused(e.clone());
        }
        let weight = ws.weight();
        let (done, wait) = oneshot::channel();
        self.state.queued_bytes.fetch_add(weight, Ordering::Relaxed);
        // Counted before it is sent: `submitted` never falls behind the queue, so waiting
        // for `done >= submitted()` covers every write set sent before it was read.
        let ticket = self.state.submitted.fetch_add(1, Ordering::SeqCst) + 1;
        match self.tx.send((ws, weight, done)) {
            Ok(()) => Durable {
                rx: Some(wait),
                ticket,
                deadline,
                state: Some(self.state.clone()),
                refused: None,
            },
            Err(_) => Durable::refused("the store committer has stopped".into()),
        }
    }

    /// Whether the queue holds more bytes than its budget (new changes should be refused).
    pub fn overloaded(&self) -> bool {
        self.state.queued_bytes.load(Ordering::Relaxed)
            > self.state.queue_budget.load(Ordering::Relaxed)
    }

    /// How many write sets have been submitted so far: pass it to [`Committer::settle`] to
    /// wait for all of them.
    pub fn submitted(&self) -> u64 {
        self.state.submitted.load(Ordering::SeqCst)
    }

    /// Whether the first `ticket` write sets have all been committed (or failed).
    pub fn settled(&self, ticket: u64) -> bool {
        self.state.progress.borrow().done >= ticket
    }

    /// Waits until the first `ticket` write sets have been committed (or failed), at most
    /// until the commit deadline. False if the deadline passed first.
    pub async fn settle(&self, ticket: u64) -> bool {
        let mut rx = self.state.progress.subscribe();
        let wait = async { rx.wait_for(|p| p.done >= ticket).await.is_ok() };
        tokio::time::timeout(self.deadline(), wait)
            .await
            .unwrap_or(false)
    }

    /// The failure that stopped the committer, if any.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.state.progress.borrow().failed.clone()
    }

    /// Waits until the committer fails (returns at once if it has).
    pub async fn failed(&self) -> Arc<str> {
        let mut rx = self.state.progress.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().failed.clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Arc::from("the store committer stopped");
            }
        }
    }

    /// False once a write failed, and while a write set is past its deadline.
    pub fn healthy(&self) -> bool {
        let p = self.state.progress.borrow();
        p.failed.is_none() && p.done >= self.state.overdue.load(Ordering::Relaxed)
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.state.deadline_ms.load(Ordering::Relaxed))
    }
}

/// A submitted write set; [`Durable::wait`] returns once it is on disk.
#[derive(Debug)]
pub struct Durable {
    rx: Option<oneshot::Receiver<Result<(), CommitError>>>,
    ticket: u64,
    deadline: Instant,
    state: Option<Arc<State>>,
    refused: Option<String>,
}

impl Durable {
    fn refused(why: String) -> Self {
        Self {
            rx: None,
            ticket: 0,
            deadline: Instant::now(),
            state: None,
            refused: Some(why),
        }
    }

    /// Waits until the write set is applied and flushed, at most until the commit deadline
    /// (counted from its submission).
    pub async fn wait(self) -> Result<(), String> {
        self.outcome().await.map_err(|e| e.to_string())
    }

    /// [`Durable::wait`], with the kind of failure.
    pub async fn outcome(self) -> Result<(), CommitError> {
        let Some(rx) = self.rx else {
            return Err(CommitError::NotWritten(
                self.refused.unwrap_or_else(|| "not submitted".into()),
            ));
        };
        match tokio::time::timeout_at(self.deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CommitError::Unknown(
                "the store committer dropped the write".into(),
            )),
            Err(_) => {
                if let Some(state) = &self.state {
                    state.overdue.fetch_max(self.ticket, Ordering::Relaxed);
                    let ms = state.deadline_ms.load(Ordering::Relaxed);
                    metrics::counter!("convoke_store_errors_total", "kind" => "deadline")
                        .increment(1);
                    tracing::error!(
                        deadline_ms = ms,
                        "a store commit missed its deadline (slow or hung disk); its outcome is unknown"
                    );
                    return Err(CommitError::Unknown(format!(
                        "not confirmed within the commit deadline of {ms} ms"
                    )));
                }
                Err(CommitError::Unknown("not confirmed in time".into()))
            }
        }
    }
}

#[cfg(test)]
impl Durable {
    /// A write set whose committer had stopped: waiting for it fails.
    pub(crate) fn stopped() -> Self {
        Self::refused("the store committer has stopped".into())
    }
}

fn run(db: sled::Db, rx: mpsc::Receiver<Job>, state: &State) {
    let mut last_flush: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let arrived = Instant::now();
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        // Measured: at a few thousand writes per second each write otherwise gets a flush
        // of its own, and flushing is most of the broker's CPU. A busy committer waits a
        // moment so that one flush serves several writers; an idle one flushes at once.
        let window = Duration::from_micros(state.window_us.load(Ordering::Relaxed));
        if !window.is_zero() && last_flush.is_some_and(|t| t.elapsed() < BUSY) {
            let deadline = arrived + window;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(more) => jobs.push(more),
                    Err(_) => break,
                }
            }
        }
        let weight: usize = jobs.iter().map(|j| j.1).sum();
        state.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
        let n = jobs.len() as u64;
        let failed_before = state.progress.borrow().failed.clone();
        let result = match failed_before {
            // A failed fsync is not retried (see the module doc): nothing more is written.
            Some(e) => Err(CommitError::NotWritten(format!(
                "the store failed earlier ({e}); the node is stopping"
            ))),
            None => commit_round(&db, jobs.iter_mut().map(|j| &mut j.0)),
        };
        if let Err(CommitError::Unknown(e)) = &result {
            if !state.failure_reported.swap(true, Ordering::Relaxed) {
                metrics::counter!("convoke_store_errors_total", "kind" => "write").increment(1);
                tracing::error!(error = %e, "store commit failed; refusing every later write, the node stops");
            }
            let e: Arc<str> = Arc::from(e.as_str());
            state.progress.send_modify(|p| {
                p.failed.get_or_insert(e);
            });
        }
        last_flush = Some(Instant::now());
        for (_, _, done) in jobs {
            let _ = done.send(result.clone());
        }
        state.progress.send_modify(|p| p.done += n);
    }
}

/// Applies the round's write sets as one batch and flushes.
fn commit_round<'a>(
    db: &sled::Db,
    sets: impl Iterator<Item = &'a mut WriteSet>,
) -> Result<(), CommitError> {
    let started = Instant::now();
    // Measured (sled 0.34.7 `Tree::apply_batch`): every batch seals and writes sled's
    // in-memory log buffer twice, on its I/O threads, whatever its size. At 2,000 write
    // sets/s one batch each cost more CPU than everything else the broker did. So all
    // waiting write sets go in one batch. The batch keeps the last write to each key, so
    // the result is that of applying them one after another in submission order. Crash
    // recovery replays a batch whole or not at all, so each write set in it is recovered
    // whole or not at all. A write error (disk failure) fails every write set of the
    // round, and sled may keep part of the batch in memory: the outcome is unknown.
    let mut batch = sled::Batch::default();
    let mut fault = None;
    let mut count = 0u64;
    for ws in sets {
        fault = ws.fault.take().or(fault);
        std::mem::take(ws).add_to(&mut batch);
        count += 1;
    }
    if let Some(Fault::Hang(d)) = fault {
        thread::sleep(d);
    }
    let result = db
        .apply_batch(batch)
        .map_err(|e| CommitError::Unknown(format!("write failed: {e}")))
        .and_then(|()| {
            if fault == Some(Fault::FailFlush) {
                return Err(CommitError::Unknown(
                    "flush failed: injected fault (debug.fault_injection)".into(),
                ));
            }
            db.flush()
                .map(|_| ())
                .map_err(|e| CommitError::Unknown(format!("flush failed: {e}")))
        });
    metrics::histogram!("convoke_store_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("convoke_store_commits_total").increment(1);
    metrics::counter!("convoke_store_write_sets_total").increment(count);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> WriteSet {
        let mut ws = WriteSet::default();
        ws.put(key.as_bytes().to_vec(), value.as_bytes().to_vec());
        ws
    }

    /// Write sets that wait together share one batch: each is confirmed, they apply in
    /// submission order (the later write to a key wins, a delete after a put removes it),
    /// and all of it is on disk for the next process.
    #[tokio::test]
    async fn write_sets_committed_together_apply_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let committer = Committer::start(db.clone()).unwrap();
            committer.set_window(Duration::from_millis(20));
            // Make the committer busy, so that the next submissions are gathered together.
            committer.commit(set("warm", "1")).await.unwrap();
            let mut gone = set("gone", "x");
            gone.delete(b"gone".to_vec());
            let waits = [
                committer.submit(set("k", "first")),
                committer.submit(set("k", "second")),
                committer.submit(gone),
                committer.submit(set("other", "o")),
            ];
            for w in waits {
                w.wait().await.unwrap();
            }
            drop(db);
            committer.close();
        }
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"second"[..]));
        assert_eq!(db.get("gone").unwrap(), None);
        assert_eq!(db.get("other").unwrap().as_deref(), Some(&b"o"[..]));
        assert_eq!(db.get("warm").unwrap().as_deref(), Some(&b"1"[..]));
    }

    /// `settle` returns once everything submitted before is committed: what a new group
    /// actor waits for before it reads the store.
    #[tokio::test]
    async fn settle_waits_for_everything_submitted_before() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let committer = Committer::start(db.clone()).unwrap();
        let mut slow = set("a", "1");
        slow.inject(Fault::Hang(Duration::from_millis(300)));
        let first = committer.submit(slow);
        let second = committer.submit(set("b", "2"));
        let ticket = committer.submitted();
        assert!(!committer.settled(ticket));
        assert_eq!(
            db.get("b").unwrap(),
            None,
            "still queued behind the hung round"
        );
        assert!(committer.settle(ticket).await);
        assert_eq!(db.get("a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(db.get("b").unwrap().as_deref(), Some(&b"2"[..]));
        first.wait().await.unwrap();
        second.wait().await.unwrap();
    }

    /// A hung commit answers "outcome unknown" at the deadline and makes the store
    /// unhealthy until the committer catches up; a failed flush fails the store for good:
    /// later writes are refused without being written.
    #[tokio::test]
    async fn deadline_and_failure() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let committer = Committer::start(db.clone()).unwrap();
        committer.set_limits(Duration::from_millis(100), DEFAULT_QUEUE_BYTES);
        let mut hung = set("h", "1");
        hung.inject(Fault::Hang(Duration::from_millis(400)));
        let e = committer.commit(hung).await.unwrap_err();
        assert!(matches!(e, CommitError::Unknown(_)), "{e}");
        assert!(e.to_string().contains("100 ms"), "{e}");
        assert!(!committer.healthy());
        // settle() waits at most one deadline (100 ms) at a time; the hang lasts 400 ms.
        let ticket = committer.submitted();
        let mut tries = 0;
        while !committer.settle(ticket).await {
            tries += 1;
            assert!(tries < 50, "the committer never caught up");
        }
        assert!(committer.healthy());

        let mut bad = set("f", "1");
        bad.inject(Fault::FailFlush);
        let e = committer.commit(bad).await.unwrap_err();
        assert!(matches!(e, CommitError::Unknown(_)), "{e}");
        assert!(!committer.healthy());
        assert!(committer.failure().is_some());
        let e = committer.commit(set("later", "1")).await.unwrap_err();
        assert!(matches!(e, CommitError::NotWritten(_)), "{e}");
        assert_eq!(db.get("later").unwrap(), None);
        assert!(committer.failed().await.contains("injected"));
    }

    /// A record whose encoding fails.
    struct Unencodable;

    impl bincode::Encode for Unencodable {
        fn encode<E: bincode::enc::Encoder>(
            &self,
            _: &mut E,
        ) -> Result<(), bincode::error::EncodeError> {
            Err(bincode::error::EncodeError::Other("boom"))
        }
    }

    /// A write set holding a record that could not be encoded is refused whole: neither
    /// an empty record nor the other writes of the set are stored.
    #[tokio::test]
    async fn a_record_that_cannot_be_encoded_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let committer = Committer::start(db.clone()).unwrap();
        let mut ws = set("x", "1");
        ws.put_record(b"y".to_vec(), &Unencodable);
        assert!(ws.poisoned.as_deref().is_some_and(|e| e.contains("boom")));
        let e = committer.commit(ws).await.unwrap_err();
        assert!(matches!(e, CommitError::NotWritten(_)), "{e}");
        assert_eq!(db.get("x").unwrap(), None);
        assert_eq!(db.get("y").unwrap(), None);
        assert!(committer.healthy());
    }
}

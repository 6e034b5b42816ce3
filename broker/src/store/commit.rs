//! Group commit: many writers share one flush.
//!
//! Measured on this machine: sled loses recent writes on `kill -9` unless flushed; a flush
//! per write gives ~8,000 durable writes/s, one flush shared by many writes >100,000/s. So
//! every write set goes to one committer thread, which applies all that are waiting, flushes
//! once, and only then tells each writer it is durable. Callers answer their clients after
//! that, never before.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Keys to set (`Some`) or delete (`None`), applied atomically.
#[derive(Debug, Default, Clone)]
pub struct WriteSet {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteSet {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
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

type Job = (WriteSet, oneshot::Sender<Result<(), String>>);

/// Handle to the committer thread. Dropping every handle stops the thread.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    /// Microseconds a busy committer waits for more write sets before flushing.
    window_us: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::sync::Arc<std::sync::Mutex<Option<thread::JoinHandle<()>>>>,
}

impl Committer {
    /// Starts the committer thread for `db`.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let window_us = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(DEFAULT_WINDOW_US));
        let window = window_us.clone();
        let handle = thread::Builder::new()
            .name("convoke-commit".into())
            .spawn(move || run(db, rx, &window))?;
        Ok(Self {
            tx,
            window_us,
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(handle))),
        })
    }

    /// Sets how long a busy committer gathers write sets before one flush; zero flushes
    /// each group of waiting write sets at once.
    pub fn set_window(&self, window: Duration) {
        let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        self.window_us
            .store(us, std::sync::atomic::Ordering::Relaxed);
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

    /// Applies `ws` atomically and waits until it is on disk.
    pub async fn commit(&self, ws: WriteSet) -> Result<(), String> {
        self.submit(ws).wait().await
    }

    /// Queues `ws` now and returns a handle to wait for its durability later. Write sets
    /// are applied in the order they are submitted.
    pub fn submit(&self, ws: WriteSet) -> Durable {
        let (done, wait) = oneshot::channel();
        match self.tx.send((ws, done)) {
            Ok(()) => Durable(Some(wait)),
            Err(_) => Durable(None),
        }
    }
}

/// A submitted write set; [`Durable::wait`] returns once it is on disk.
#[derive(Debug)]
pub struct Durable(Option<oneshot::Receiver<Result<(), String>>>);

impl Durable {
    /// Waits until the write set is applied and flushed.
    pub async fn wait(self) -> Result<(), String> {
        match self.0 {
            Some(rx) => rx
                .await
                .map_err(|_| "store committer dropped the write".to_string())?,
            None => Err("store committer has stopped".to_string()),
        }
    }
}

#[cfg(test)]
impl Durable {
    /// A write set whose committer had stopped: waiting for it fails.
    pub(crate) fn stopped() -> Self {
        Self(None)
    }
}

/// The default gathering window of a busy committer, in microseconds.
pub const DEFAULT_WINDOW_US: u64 = 1_000;

/// A committer that flushed less than this long ago counts as busy.
const BUSY: Duration = Duration::from_millis(5);

fn run(db: sled::Db, rx: mpsc::Receiver<Job>, window_us: &std::sync::atomic::AtomicU64) {
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
        let window = Duration::from_micros(window_us.load(std::sync::atomic::Ordering::Relaxed));
        if !window.is_zero() && last_flush.is_some_and(|t| t.elapsed() < BUSY) {
            let deadline = arrived + window;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(more) => jobs.push(more),
                    Err(_) => break,
                }
            }
        }
        let started = std::time::Instant::now();
        // Measured (sled 0.34.7 `Tree::apply_batch`): every batch seals and writes sled's
        // in-memory log buffer twice, on its I/O threads, whatever its size. At 2,000
        // write sets/s one batch each cost more CPU than everything else the broker did.
        // So all waiting write sets go in one batch. The batch keeps the last write to
        // each key, so the result is that of applying them one after another in
        // submission order. Crash recovery replays a batch whole or not at all, so each
        // write set in it is recovered whole or not at all. A write error (disk failure)
        // fails every write set of the round, and sled may keep part of the batch in
        // memory; callers reload what they hold from the store.
        let mut waiters = Vec::with_capacity(jobs.len());
        let mut batch = sled::Batch::default();
        for (ws, done) in jobs {
            ws.add_to(&mut batch);
            waiters.push(done);
        }
        let result = db
            .apply_batch(batch)
            .map_err(|e| format!("write failed: {e}"))
            .and_then(|()| {
                db.flush()
                    .map(|_| ())
                    .map_err(|e| format!("flush failed: {e}"))
            });
        if let Err(e) = &result {
            tracing::error!(error = %e, "store commit failed");
        }
        metrics::histogram!("convoke_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("convoke_store_commits_total").increment(1);
        metrics::counter!("convoke_store_write_sets_total").increment(waiters.len() as u64);
        last_flush = Some(Instant::now());
        for done in waiters {
            let _ = done.send(result.clone());
        }
    }
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
}

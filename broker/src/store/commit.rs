//! Group commit: many writers share one flush.
//!
//! Measured on this machine: sled loses recent writes on `kill -9` unless flushed; a flush
//! per write gives ~8,000 durable writes/s, one flush shared by many writes >100,000/s. So
//! every write set goes to one committer thread, which applies all that are waiting, flushes
//! once, and only then tells each writer it is durable. Callers answer their clients after
//! that, never before.

use std::sync::mpsc;
use std::thread;
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

    fn into_batch(self) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in self.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        b
    }
}

type Job = (WriteSet, oneshot::Sender<Result<(), String>>);

/// Handle to the committer thread. Dropping every handle stops the thread.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    thread: std::sync::Arc<std::sync::Mutex<Option<thread::JoinHandle<()>>>>,
}

impl Committer {
    /// Starts the committer thread for `db`.
    pub fn start(db: sled::Db) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = thread::Builder::new()
            .name("convoke-commit".into())
            .spawn(move || run(db, rx))?;
        Ok(Self {
            tx,
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(handle))),
        })
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

fn run(db: sled::Db, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let started = std::time::Instant::now();
        let mut results: Vec<Result<(), String>> = Vec::with_capacity(jobs.len());
        let mut waiters = Vec::with_capacity(jobs.len());
        for (ws, done) in jobs {
            results.push(db.apply_batch(ws.into_batch()).map_err(|e| e.to_string()));
            waiters.push(done);
        }
        if let Err(e) = db.flush() {
            let msg = format!("flush failed: {e}");
            tracing::error!(error = %e, "store flush failed");
            for r in &mut results {
                *r = Err(msg.clone());
            }
        }
        metrics::histogram!("convoke_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("convoke_store_commits_total").increment(1);
        metrics::counter!("convoke_store_write_sets_total").increment(waiters.len() as u64);
        for (done, r) in waiters.into_iter().zip(results) {
            let _ = done.send(r);
        }
    }
}

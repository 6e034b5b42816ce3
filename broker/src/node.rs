//! The node: everything a connection needs, built once at start.
//!
//! It also decides what a failed store means: after a write or flush fails, the store
//! refuses every later write (see `store::commit`) and the node stops, with exit code
//! [`STORE_FAILED_EXIT`], once the 500 answers of the failed writes have had a moment to
//! leave. A restart runs sled's recovery, the only way back to a state known to be on disk;
//! a service manager restarts the node (ops/convoke.service: `Restart=on-failure`).

use crate::config::Config;
use crate::files::Files;
use crate::group::Groups;
use crate::presence::Presence;
use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Shared by every session of this broker process.
#[derive(Debug)]
pub struct Node {
    pub config: Arc<Config>,
    pub store: Store,
    pub presence: Presence,
    pub groups: Groups,
    /// Shared-file blobs and quotas.
    pub files: Files,
    /// The app secret that signs tokens.
    pub secret: Vec<u8>,
    /// Per-user rate limits and the free-disk watermark.
    pub quotas: crate::quota::Quotas,
    next_session: AtomicU64,
}

impl Node {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        presence: Presence,
        groups: Groups,
        files: Files,
        secret: Vec<u8>,
    ) -> Self {
        let quotas = crate::quota::Quotas::new(
            &crate::quota::QuotaSettings::from_config(&config),
            &config.server.data_dir,
            &config.files_dir(),
        );
        quotas.load_file_usage(&store, &config.files_dir());
        watch_store(&store);
        Self {
            quotas,
            config,
            store,
            presence,
            groups,
            files,
            secret,
            next_session: AtomicU64::new(1),
        }
    }

    /// A session id unique within the cluster: this node's ordinal (the store's) above a
    /// per-process counter (`store::ids::session_id`; ordinal 0 gives today's 1, 2, ...).
    /// Fan-out skips the requesting session by this id, on any node.
    pub fn next_session_id(&self) -> u64 {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        crate::store::ids::session_id(self.store.ordinal(), n)
    }

    /// This node's ordinal (0: a single node), as the store was opened with.
    pub fn ordinal(&self) -> u8 {
        self.store.ordinal()
    }

    /// Shared handle.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

/// The exit code of a node stopped by a failed store write.
pub const STORE_FAILED_EXIT: i32 = 3;

/// How long a failed store leaves the node running (answers of the failed writes, 500,
/// go out; /readyz is already false).
const STORE_FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Stops the process once the store has failed (no-op outside a tokio runtime).
fn watch_store(store: &Store) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let store = store.clone();
    rt.spawn(async move {
        let why = store.failed().await;
        tracing::error!(error = %why, exit_code = STORE_FAILED_EXIT, "the store failed; the node stops (restart it: sled recovers what reached the disk)");
        crate::metrics::set_ready(false);
        tokio::time::sleep(STORE_FAILED_GRACE).await;
        std::process::exit(STORE_FAILED_EXIT);
    });
}

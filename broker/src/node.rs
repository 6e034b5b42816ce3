//! The node: everything a connection needs, built once at start.

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

    /// A session id unique within this process.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Shared handle.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

//! Shared-file transfer streams. Each transfer arrives on a bidirectional stream of its own
//! (see `convoke_protocol::transfer`), so a large file never delays the control stream:
//! this module reads the stream's [`TransferHeader`] and hands the stream to
//! `crate::files::upload` or `crate::files::download`, each in a task of its own.
//!
//! A header that does not arrive in time, or does not decode, is answered with a -3
//! outcome on that stream only; the connection and its other streams carry on. The header
//! is read with the small pre-admission frame limit (4 KiB).
//!
//! Slow transfers are bounded ([`Pace`]): a user has at most `files.max_transfers_per_user`
//! transfers in progress over all their sessions (one more is answered 50 MAX_LIMIT: the
//! contract's code for a full quota; the place frees when a transfer ends, so a client may
//! try again then, which 500 SERVER_BUSY, meant for node overload, would not say), each
//! must move at least `files.transfer_min_bytes_per_sec` over every
//! `files.transfer_rate_window_ms`, and finish within `files.transfer_max_secs`. A slow or
//! overdue upload is kept for a resume like a broken one; a download is reset.
//!
//! The cap counts streams: a resume that takes over an upload whose old stream the broker
//! still holds (the client saw its connection drop first) counts both until the old one
//! has put the upload down, so a user at the cap may see such a resume refused once.

use super::io::{read_small_frame, ReadError};
use crate::cluster::{forward, peer_quic, Route};
use crate::config::FilesConfig;
use crate::files::{self, download::DownloadRequest, upload::UploadRequest};
use crate::group::rules::Caller;
use crate::node::Node;
use bytes::BytesMut;
use convoke_protocol::transfer::TransferHeader;
use convoke_protocol::{ApiError, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Serves one transfer stream: reads its header, then uploads or downloads (on this node,
/// or, in a cluster, proxied to the node that owns the group: `cluster::peer_quic`).
pub async fn serve_transfer(
    node: Arc<Node>,
    caller: Caller,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    serve(node, caller, send, recv, BytesMut::new(), false).await;
}

/// [`serve_transfer`] for a stream a peer node proxies for a client of its own
/// (`cluster::peer_quic`): `buf` holds what came after the peer's opening frame. Served
/// here whatever the route says, never proxied again.
pub async fn serve_for_peer(
    node: Arc<Node>,
    caller: Caller,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
) {
    serve(node, caller, send, recv, buf, true).await;
}

async fn serve(
    node: Arc<Node>,
    caller: Caller,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut buf: BytesMut,
    from_peer: bool,
) {
    let mut pace = Pace::new(&node.config.files, Instant::now());
    let wait = Duration::from_millis(node.config.sessions.handshake_timeout_ms);
    let header = match tokio::time::timeout(
        wait,
        read_small_frame::<TransferHeader>(&mut recv, &mut buf),
    )
    .await
    {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return,
        Ok(Err(ReadError::Stream(e))) => {
            tracing::debug!(user = %caller.user, error = %e, "transfer stream failed before its header");
            return;
        }
        Ok(Err(e)) => {
            let _ = recv.stop(0u32.into());
            let err = ApiError::param(format!("malformed transfer header: {e}"));
            files::answer(&mut send, Err(err)).await;
            return;
        }
        Err(_) => {
            let _ = recv.stop(0u32.into());
            let err = ApiError::param(format!("no transfer header within {} ms", wait.as_millis()));
            files::answer(&mut send, Err(err)).await;
            return;
        }
    };
    if !from_peer {
        if let Some(cluster) = crate::cluster::Cluster::running() {
            let group_id = match &header {
                TransferHeader::Upload { group_id, .. }
                | TransferHeader::Download { group_id, .. } => group_id,
            };
            // An id that does not parse is refused below, as on one node.
            if let Ok(gid) = convoke_protocol::ids::parse_group_id(group_id) {
                match cluster.route(gid) {
                    Route::Local => {}
                    Route::Remote(peer) => {
                        // The owner counts the transfer under the caller's cap and serves it.
                        let frame = match convoke_protocol::codec::frame_bytes(&header) {
                            Ok(f) => f,
                            Err(e) => {
                                let _ = recv.stop(0u32.into());
                                let err = ApiError::new(
                                    ErrorCode::Internal,
                                    format!("transfer header could not be re-encoded: {e}"),
                                );
                                files::answer(&mut send, Err(err)).await;
                                return;
                            }
                        };
                        peer_quic::proxy(cluster, &peer, caller, frame, buf, send, recv).await;
                        return;
                    }
                    Route::Unavailable(peer) => {
                        let _ = recv.stop(0u32.into());
                        files::answer(&mut send, Err(forward::unavailable(gid, &peer))).await;
                        return;
                    }
                }
            }
        }
    }
    let max = node.config.files.max_transfers_per_user;
    let Some(_slot) = node.presence.begin_transfer(&caller.user, max) else {
        metrics::counter!("convoke_transfers_stopped_total", "reason" => "user_limit").increment(1);
        let _ = recv.stop(0u32.into());
        let err = ApiError::new(
            ErrorCode::MaxLimit,
            format!(
                "user {:?} already has {max} file transfers in progress, at most {max} at once; \
                 try again when one ends",
                caller.user
            ),
        );
        files::answer(&mut send, Err(err)).await;
        return;
    };
    match header {
        TransferHeader::Upload {
            group_id,
            file_name,
            size,
            content_type,
            upload_id,
            resume,
        } => {
            let req = UploadRequest {
                group_id,
                file_name,
                size,
                content_type,
                upload_id,
                resume,
            };
            files::upload::serve(&node, &caller, send, recv, buf, req, &mut pace).await;
        }
        TransferHeader::Download {
            group_id,
            file_id,
            secret,
            offset,
        } => {
            drop(recv);
            let req = DownloadRequest {
                group_id,
                file_id,
                secret,
                offset,
            };
            files::download::serve(&node, &caller, send, req, &mut pace).await;
        }
    }
}

/// A transfer's pace: its bytes per rate window and its total deadline. Plain state; the
/// caller passes the time, waits for data no later than [`Pace::next_check`] and calls
/// [`Pace::check`] after each wait.
#[derive(Debug, Clone)]
pub struct Pace {
    /// Bytes per second at least (0: no minimum).
    min_per_sec: u64,
    window: Duration,
    window_start: Instant,
    window_bytes: u64,
    deadline: Instant,
    max: Duration,
}

/// Why a transfer was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TooSlow {
    /// Fewer bytes than the minimum in the last window.
    Rate {
        bytes: u64,
        window: Duration,
        min_per_sec: u64,
    },
    /// Past the transfer's deadline.
    Deadline(Duration),
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rate {
                bytes,
                window,
                min_per_sec,
            } => write!(
                f,
                "was too slow: {bytes} bytes in {} ms, at least {min_per_sec} bytes/s required",
                window.as_millis()
            ),
            Self::Deadline(max) => {
                write!(
                    f,
                    "took longer than the {} s a transfer may take",
                    max.as_secs()
                )
            }
        }
    }
}

impl TooSlow {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Rate { .. } => "slow",
            Self::Deadline(_) => "deadline",
        }
    }
}

impl Pace {
    pub fn new(cfg: &FilesConfig, now: Instant) -> Self {
        let max = Duration::from_secs(cfg.transfer_max_secs);
        Self {
            min_per_sec: cfg.transfer_min_bytes_per_sec,
            window: Duration::from_millis(cfg.transfer_rate_window_ms.max(1)),
            window_start: now,
            window_bytes: 0,
            deadline: now + max,
            max,
        }
    }

    /// Counts `n` bytes moved.
    pub fn moved(&mut self, n: u64) {
        self.window_bytes = self.window_bytes.saturating_add(n);
    }

    /// When [`Pace::check`] must run next, at the latest.
    pub fn next_check(&self) -> Instant {
        if self.min_per_sec == 0 {
            self.deadline
        } else {
            self.deadline.min(self.window_start + self.window)
        }
    }

    /// At a window's end, judges its bytes and starts the next window; past the deadline,
    /// stops the transfer.
    pub fn check(&mut self, now: Instant) -> Result<(), TooSlow> {
        if now >= self.deadline {
            return Err(TooSlow::Deadline(self.max));
        }
        if self.min_per_sec == 0 || now < self.window_start + self.window {
            return Ok(());
        }
        let elapsed = now - self.window_start;
        let needed = u128::from(self.min_per_sec) * elapsed.as_millis() / 1000;
        if u128::from(self.window_bytes) < needed {
            return Err(TooSlow::Rate {
                bytes: self.window_bytes,
                window: elapsed,
                min_per_sec: self.min_per_sec,
            });
        }
        self.window_start = now;
        self.window_bytes = 0;
        Ok(())
    }

    /// Counts the stop in `convoke_transfers_stopped_total`.
    pub fn count(stop: &TooSlow) {
        metrics::counter!("convoke_transfers_stopped_total", "reason" => stop.reason())
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: u64, window_ms: u64, max_secs: u64) -> FilesConfig {
        FilesConfig {
            transfer_min_bytes_per_sec: min,
            transfer_rate_window_ms: window_ms,
            transfer_max_secs: max_secs,
            ..FilesConfig::default()
        }
    }

    #[test]
    fn a_window_below_the_minimum_rate_stops_the_transfer() {
        let t0 = Instant::now();
        let mut p = Pace::new(&cfg(1000, 1000, 60), t0);
        assert_eq!(p.next_check(), t0 + Duration::from_secs(1));
        p.moved(999);
        assert!(
            p.check(t0 + Duration::from_millis(500)).is_ok(),
            "mid-window"
        );
        p.moved(1);
        assert!(
            p.check(t0 + Duration::from_secs(1)).is_ok(),
            "1000 bytes in 1 s"
        );
        assert_eq!(p.next_check(), t0 + Duration::from_secs(2));
        p.moved(10);
        let e = p
            .check(t0 + Duration::from_secs(2))
            .expect_err("10 bytes in 1 s");
        assert_eq!(e.reason(), "slow");
        assert!(e.to_string().contains("10 bytes in 1000 ms"), "{e}");
    }

    #[test]
    fn the_deadline_stops_even_a_fast_transfer_and_zero_means_no_minimum() {
        let t0 = Instant::now();
        let mut p = Pace::new(&cfg(0, 1000, 2), t0);
        assert_eq!(p.next_check(), t0 + Duration::from_secs(2));
        assert!(
            p.check(t0 + Duration::from_secs(1)).is_ok(),
            "no bytes, no minimum"
        );
        p.moved(u64::MAX);
        let e = p.check(t0 + Duration::from_secs(2)).expect_err("deadline");
        assert_eq!(e, TooSlow::Deadline(Duration::from_secs(2)));
    }
}

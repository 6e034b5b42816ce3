//! The one [`Inbound`] of a node: what the router hands over from Up peers, in each peer's
//! order, dispatched without blocking the router (its Pong is the node's heartbeat):
//! - `Forward` / `Create`: into the owner side's lanes ([`super::forward::Lanes`]), which
//!   keep each group's calls in arrival order;
//! - `Query`: answered in a task ([`super::scatter::serve`]);
//! - `Deliver`, `PresenceSnapshot`, `PresenceDelta`, and peers going Down or Up: the
//!   cross-node fan-out's (presence directory, delivery to local sessions).

use std::sync::Arc;

use super::forward::Lanes;
use super::{Cluster, Inbound, Wire};
use crate::node::Node;

/// The node's inbound hook; install with [`install`].
#[derive(Debug)]
pub struct NodeInbound {
    node: Arc<Node>,
    cluster: Cluster,
    lanes: Lanes,
}

/// Installs this node's inbound hook on `cluster` (once, after the node is built).
pub fn install(cluster: &Cluster, node: Arc<Node>) {
    let lanes = Lanes::start(node.clone(), cluster.clone());
    let hook = NodeInbound {
        node,
        cluster: cluster.clone(),
        lanes,
    };
    if !cluster.set_inbound(Arc::new(hook)) {
        tracing::error!("cluster: an inbound hook was already installed; this one is ignored");
    }
}

impl Inbound for NodeInbound {
    fn item(&self, from: &str, item: Wire) {
        match item {
            Wire::Forward {
                caller,
                corr,
                gid,
                remaining_ms,
                payload,
                ..
            }
            | Wire::Create {
                caller,
                corr,
                gid,
                remaining_ms,
                payload,
                ..
            } => self
                .lanes
                .push(from, caller, corr, gid, remaining_ms, payload),
            Wire::Query {
                caller,
                corr,
                payload,
                ..
            } => super::scatter::serve(
                self.node.clone(),
                self.cluster.clone(),
                from.to_owned(),
                caller,
                corr,
                payload,
            ),
            Wire::Deliver {
                gid,
                origin_session,
                to,
                frame,
            } => super::presence::on_deliver(from, gid, origin_session, to, frame),
            Wire::PresenceSnapshot { part, parts, users } => {
                super::presence::on_snapshot(from, part, parts, users);
            }
            Wire::PresenceDelta { online, offline } => {
                super::presence::on_delta(from, online, offline);
            }
            Wire::PresenceWanted => super::presence::on_wanted(from),
            other => {
                tracing::debug!(peer = %from, kind = other.kind(), "cluster: unexpected inbound item; dropped");
            }
        }
    }

    fn peer_down(&self, peer: &str) {
        super::presence::on_peer_down(peer);
    }

    fn peer_up(&self, peer: &str) {
        // The per-peer delivery counters exist from the peer's first Up, at 0, so that
        // dashboards and alerts see the series before the first event or drop.
        for name in [
            "convoke_cluster_deliveries_sent_total",
            "convoke_cluster_deliveries_dropped_total",
        ] {
            metrics::counter!(name, "peer" => peer.to_owned()).increment(0);
        }
        super::presence::on_peer_up(peer);
    }

    fn peer_removed(&self, peer: &str) {
        super::presence::on_peer_removed(peer);
    }
}

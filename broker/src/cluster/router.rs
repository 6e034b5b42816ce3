//! The router: the one remote-capable actor of a node (registered `convoke.router.<name>`,
//! pg scope `convoke`, group `routers`). Peers cast batches to it; it hands each batch to
//! the membership logic in arrival order, so items from one peer are handled in the order
//! that peer queued them. Heavy work never runs here: the heartbeat answer (Pong) proves the
//! node processes messages, so a slow router would look like a sick node.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::wire::RouterMsg;
use super::Inner;

/// pg scope of the routers.
pub const SCOPE: &str = "convoke";
/// pg group of the routers.
pub const GROUP: &str = "routers";
/// Prefix of a router's registered name; the node name follows.
pub const NAME_PREFIX: &str = "convoke.router.";

/// The router actor.
#[derive(Debug)]
pub(crate) struct Router;

impl Actor for Router {
    type Msg = RouterMsg;
    type State = Arc<Inner>;
    type Arguments = Arc<Inner>;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        inner: Arc<Inner>,
    ) -> Result<Arc<Inner>, ActorProcessingErr> {
        ractor::pg::join_scoped(SCOPE.to_owned(), GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(inner)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        inner: &mut Arc<Inner>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Wire(batch) => inner.on_batch(batch),
            RouterMsg::Undecodable(why) => {
                metrics::counter!("convoke_cluster_decode_errors_total").increment(1);
                tracing::warn!(error = %why, "cluster: a frame from a peer did not decode; dropped");
            }
        }
        Ok(())
    }
}

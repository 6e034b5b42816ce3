//! Reads that span groups, in a cluster (../shared/design/cluster.md 7): each node answers
//! for the data it holds, the asking node merges.
//!
//! - getJoinedGroups / getPublicGroups: the `j <user> <gid>` and `p <gid>` indexes live on
//!   the group's shard; every core node returns its rows (ascending by group id, at most as
//!   many as the requested page could need), the asker merges by id and cuts the page, so
//!   the page semantics are those of a single node.
//! - The login inbox: `i <user> ...` lives on the group's shard; the session reads every core
//!   node's kept events page by page (one page per node held at a time) and merges them by
//!   event time ([`merged_inbox`]). Events of one group come from one node, so they keep
//!   their order. `sessions.kept_events_max` bounds the total as on one node: each node's
//!   first page says how many it keeps (and from which operators), and the oldest over the
//!   bound are dropped there; `sessions.kept_events_per_sender_max` too (it is also checked
//!   where an event is kept, per node).
//! - Acknowledgements go to the node that holds the entry: the ordinal in the kept event's
//!   id ([`crate::store::ids::ordinal_of`]); the ordinal to node map is learnt from the
//!   answers (each carries its node's ordinal); while it is unknown, every Up core node gets
//!   the acknowledgement (ids not kept there are ignored).
//! - Facts about users a request names (does the user exist, how many groups has it joined):
//!   the `u <user>` first-login record is written where the user logs in (gateways
//!   included) and the joined index on each group's shard, so every core member and every
//!   gateway this node knows, Up or not, is asked ([`all_nodes`]) and the answers are
//!   combined (exists: any; joined: the sum). What becomes soft in a cluster:
//!   `limits.max_groups_per_user` (two joins on different shards at once can both pass).
//!   A node left out is named in the facts: a user found nowhere else gets 500 (retryable)
//!   until it is back, never 204 USER_NOT_FOUND; a joined count without its part is used as
//!   it is (the limit is soft while a node is unreachable).
//!
//! A node that is not Up, or does not answer within `cluster.request_timeout_ms`, is left
//! out: the result is partial (counted in `convoke_cluster_partial_reads_total{what}`). A
//! node that answers that it could not give its part (its store failed, or its rows were
//! over what one batch between nodes carries) fails a listing with 500 naming it: a page is
//! never silently cut short for a node that is up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bincode::{Decode, Encode};
use bytes::Bytes;
use convoke_protocol::{ApiError, ErrorCode, Role};

use super::forward::{decode, encode};
use super::{Cluster, Wire};
use crate::group::persist::GroupStore;
use crate::group::rules::facts::{Facts, UserFacts};
use crate::node::Node;

/// A question to another node.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Query {
    /// The groups `user` has joined on the receiver's shards, ascending, at most `max`.
    Joined {
        user: String,
        max: u32,
        need_role: bool,
    },
    /// Public groups above `after`, ascending, at most `max`.
    Public { after: Option<u64>, max: u32 },
    /// For each user: logged in there at least once; groups joined there other than
    /// `except`.
    UserFacts { users: Vec<String>, except: u64 },
    /// A page of `user`'s kept events after `after` (the first page also bounds them to
    /// `trim`).
    Inbox {
        user: String,
        after: Option<u64>,
        max: u32,
        max_bytes: u32,
        trim: u32,
    },
    /// Stop keeping these events of `user`.
    Ack { user: String, ids: Vec<u64> },
    /// The bytes of shared files `user` has in the receiver's groups.
    FileBytes { user: String },
}

/// One joined group, as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct JoinedRow {
    pub gid: u64,
    pub name: String,
    pub members: u32,
    pub role: Option<Role>,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Reply {
    Joined(Vec<JoinedRow>),
    Public(Vec<(u64, String)>),
    UserFacts(Vec<(bool, u64)>),
    Inbox {
        frames: Vec<Vec<u8>>,
        next: Option<u64>,
        /// On the first page (no `after`): how many events the node keeps for the user,
        /// after bounding them to `trim`; 0 on later pages.
        total: u32,
        /// On the first page: how many of them each operator has; empty on later pages.
        senders: Vec<(String, u32)>,
    },
    Done,
    FileBytes(u64),
    Failed(String),
}

/// What crosses back: the answering node's ordinal and its reply.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct Answered {
    ordinal: u8,
    reply: Reply,
}

fn storage(e: impl std::fmt::Display) -> String {
    format!("storage failure: {e}")
}

/// Answers `query` from this node's store.
pub fn answer_local(node: &Node, query: &Query) -> Reply {
    let r: Result<Reply, String> = (|| {
        Ok(match query {
            Query::Joined {
                user,
                max,
                need_role,
            } => Reply::Joined(joined_rows(node, user, *max as usize, *need_role)?),
            Query::Public { after, max } => Reply::Public(
                node.store
                    .public_groups(*after, *max as usize)
                    .map_err(storage)?,
            ),
            Query::UserFacts { users, except } => Reply::UserFacts(
                users
                    .iter()
                    .map(|u| {
                        (
                            node.store.user_exists(u),
                            node.store.joined_count_except(u, *except) as u64,
                        )
                    })
                    .collect(),
            ),
            Query::Inbox {
                user,
                after,
                max,
                max_bytes,
                trim,
            } => {
                let mut total = 0;
                let mut senders = Vec::new();
                if after.is_none() {
                    let (dropped, kept) = node
                        .store
                        .inbox_trim(user, *trim as usize)
                        .map_err(storage)?;
                    if dropped > 0 {
                        metrics::counter!("convoke_kept_events_dropped_total")
                            .increment(dropped as u64);
                    }
                    total = u32::try_from(kept).unwrap_or(u32::MAX);
                    senders = node.store.inbox_senders(user).map_err(storage)?;
                }
                let (frames, next) = node
                    .store
                    .inbox_page(user, *after, *max as usize, *max_bytes as usize)
                    .map_err(storage)?;
                Reply::Inbox {
                    frames: frames.into_iter().map(|b| b.to_vec()).collect(),
                    next,
                    total,
                    senders,
                }
            }
            Query::Ack { user, ids } => {
                node.store.inbox_ack(user, ids).map_err(storage)?;
                Reply::Done
            }
            Query::FileBytes { user } => Reply::FileBytes(node.quotas.file_bytes_of(user)),
        })
    })();
    r.unwrap_or_else(Reply::Failed)
}

/// The groups `user` has joined in this node's store, ascending by id, at most `max`.
pub fn joined_rows(
    node: &Node,
    user: &str,
    max: usize,
    need_role: bool,
) -> Result<Vec<JoinedRow>, String> {
    let mut rows = Vec::new();
    for gid in node.store.joined_groups(user).map_err(storage)? {
        if rows.len() >= max {
            break;
        }
        let Some(meta) = node.store.meta(gid).map_err(storage)? else {
            continue;
        };
        let role = if need_role {
            node.store
                .member(gid, user)
                .map_err(storage)?
                .map(|m| m.role)
        } else {
            None
        };
        rows.push(JoinedRow {
            gid,
            name: meta.name,
            members: meta.member_count,
            role,
        });
    }
    Ok(rows)
}

/// A `Query` item from `from`: answered in a task (store reads stay off the router).
pub(crate) fn serve(
    node: Arc<Node>,
    cluster: Cluster,
    from: String,
    caller: u64,
    corr: u64,
    payload: Vec<u8>,
) {
    tokio::spawn(async move {
        let reply = match decode::<Query>(&payload) {
            Ok(q) => {
                let node2 = node.clone();
                tokio::task::spawn_blocking(move || answer_local(&node2, &q))
                    .await
                    .unwrap_or_else(|e| Reply::Failed(e.to_string()))
            }
            Err(e) => {
                metrics::counter!("convoke_cluster_decode_errors_total").increment(1);
                Reply::Failed(format!("the query did not decode: {e}"))
            }
        };
        let answered = Answered {
            ordinal: node.ordinal(),
            reply,
        };
        match encode(&answered) {
            Ok(bytes) => {
                if let Err(e @ super::SendError::TooLarge { .. }) =
                    cluster.reply(&from, caller, corr, bytes)
                {
                    // Answered as failed rather than left to the caller's timeout.
                    let failed = Answered {
                        ordinal: node.ordinal(),
                        reply: Reply::Failed(e.to_string()),
                    };
                    if let Ok(bytes) = encode(&failed) {
                        let _ = cluster.reply(&from, caller, corr, bytes);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e.message, "cannot encode a query's answer"),
        }
    });
}

/// Node names by ordinal, learnt from answers.
fn ordinals() -> &'static Mutex<HashMap<u8, String>> {
    static MAP: OnceLock<Mutex<HashMap<u8, String>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

fn learn(ordinal: u8, name: &str) {
    if let Ok(mut m) = ordinals().lock() {
        if m.get(&ordinal).map(String::as_str) != Some(name) {
            m.insert(ordinal, name.to_owned());
        }
    }
}

/// Shortest time between two partial-read warnings naming the same peer: while a node is
/// down every read that needs it is partial, and the counter says how many.
const PARTIAL_WARN_EVERY: Duration = Duration::from_secs(10);

fn partial(what: &'static str, peer: &str, why: &str) {
    metrics::counter!("convoke_cluster_partial_reads_total", "what" => what).increment(1);
    static LAST: OnceLock<Mutex<WarnedAt>> = OnceLock::new();
    let due = LAST
        .get_or_init(Default::default)
        .lock()
        .ok()
        .and_then(|mut last| warn_due(&mut last, peer, Instant::now()));
    if let Some(suppressed) = due {
        tracing::warn!(%peer, what, reason = why, suppressed, "cluster: a read across nodes left a node out; the result is partial (suppressed: like warnings for this node in the last 10 s, see convoke_cluster_partial_reads_total)");
    }
}

/// Per peer: when a partial read naming it was last logged, and how many were not since.
type WarnedAt = HashMap<String, (Instant, u64)>;

/// Whether a warning naming `peer` is due at `now` (at most one per
/// [`PARTIAL_WARN_EVERY`]), with how many were left out before it; `None` counts one more.
fn warn_due(last: &mut WarnedAt, peer: &str, now: Instant) -> Option<u64> {
    match last.get_mut(peer) {
        Some((at, quiet)) if now.duration_since(*at) < PARTIAL_WARN_EVERY => {
            *quiet += 1;
            None
        }
        Some((at, quiet)) => {
            *at = now;
            Some(std::mem::take(quiet))
        }
        None => {
            last.insert(peer.to_owned(), (now, 0));
            Some(0)
        }
    }
}

/// Asks `peer` one query: its reply, `Reply::Failed` included (the node could not answer:
/// its store failed, or its answer was over what one batch carries), for each read to
/// decide what that means; `None` (counted as partial) when it is not Up, does not answer
/// in time or its answer does not decode.
async fn ask(cluster: &Cluster, peer: &str, what: &'static str, query: &Query) -> Option<Reply> {
    let payload = encode(query).ok()?;
    let remaining_ms = cluster.remaining_ms();
    let sent_ns = cluster.clock_ns();
    let caller = cluster.incarnation();
    let waiting = match cluster.start_call(peer, |corr| Wire::Query {
        caller,
        corr,
        remaining_ms,
        sent_ns,
        payload,
    }) {
        Ok(w) => w,
        Err(e) => {
            partial(what, peer, &e.to_string());
            return None;
        }
    };
    match waiting.await {
        Ok(bytes) => read_answer(peer, what, &bytes),
        Err(e) => {
            partial(what, peer, &e.to_string());
            None
        }
    }
}

/// The reply in `peer`'s answer (see [`ask`]).
fn read_answer(peer: &str, what: &'static str, bytes: &[u8]) -> Option<Reply> {
    match decode::<Answered>(bytes) {
        Ok(a) => {
            learn(a.ordinal, peer);
            Some(a.reply)
        }
        Err(e) => {
            metrics::counter!("convoke_cluster_decode_errors_total").increment(1);
            partial(what, peer, &e);
            None
        }
    }
}

/// A node's `Reply::Failed` in a listing: an error, never a page without that node's rows
/// (a node's rows too many for one batch used to look like a node that is down). `me`:
/// this node, whose failure is its store's.
fn listing_failed(me: &str, peer: &str, what: &str, why: String) -> ApiError {
    if peer == me {
        return ApiError::new(ErrorCode::Internal, why);
    }
    ApiError::new(
        ErrorCode::ServerBusy,
        format!(
            "node {peer} could not give its part of {what}: {why}; ask for a smaller page, \
             or retry"
        ),
    )
}

/// Asks every node of `peers` (this node answers from its own store) concurrently: each
/// node's reply, `None` for a node left out (see [`ask`]).
async fn scatter(
    node: &Node,
    cluster: &Cluster,
    peers: Vec<String>,
    what: &'static str,
    query: &Query,
) -> Vec<(String, Option<Reply>)> {
    let me = cluster.name().to_owned();
    let local = peers
        .contains(&me)
        .then(|| (me.clone(), Some(answer_local(node, query))));
    let others: Vec<String> = peers.into_iter().filter(|p| *p != me).collect();
    let remote =
        futures::future::join_all(others.iter().map(|p| ask(cluster, p, what, query))).await;
    local
        .into_iter()
        .chain(others.into_iter().zip(remote))
        .collect()
}

/// Every node that may hold `u <user>` records: the core members and every gateway this
/// node knows, Up or not. One that is not Up is left out of the answers at once and named
/// as missing in the facts, so a user who only ever logged in on a gateway that is away
/// gets 500 (retryable), not 204 USER_NOT_FOUND (review finding MEDIUM-2). A gateway this
/// node never met or has forgotten (not Up for 20 x `cluster.reconnect_max_ms`) is not
/// asked: ops/README.md, "Gateways hold first-login records".
fn all_nodes(cluster: &Cluster) -> Vec<String> {
    nodes_to_ask(
        cluster.name(),
        cluster.core_members(),
        cluster.known_peers(),
    )
}

/// [`all_nodes`] from this node's name, the core members and the peers it knows.
fn nodes_to_ask(me: &str, core: Vec<String>, known: Vec<String>) -> Vec<String> {
    let mut all = core;
    all.extend(known);
    all.push(me.to_owned());
    all.sort();
    all.dedup();
    all
}

/// getJoinedGroups' rows in a cluster: the first `max` of `user`'s groups by id, merged from
/// every core node.
pub async fn joined(
    node: &Node,
    cluster: &Cluster,
    user: &str,
    max: usize,
    need_role: bool,
) -> Result<Vec<JoinedRow>, ApiError> {
    let query = Query::Joined {
        user: user.to_owned(),
        max: u32::try_from(max).unwrap_or(u32::MAX),
        need_role,
    };
    let replies = scatter(node, cluster, cluster.core_members(), "joined", &query).await;
    merge_joined(cluster.name(), replies, max)
}

/// The first `max` joined rows by id over the nodes' replies; a node left out (not Up, no
/// answer) leaves its rows out, a node that failed fails the page.
fn merge_joined(
    me: &str,
    replies: Vec<(String, Option<Reply>)>,
    max: usize,
) -> Result<Vec<JoinedRow>, ApiError> {
    let mut merged = BTreeMap::new();
    for (peer, reply) in replies {
        match reply {
            Some(Reply::Joined(rows)) => merged.extend(rows.into_iter().map(|r| (r.gid, r))),
            Some(Reply::Failed(why)) => {
                return Err(listing_failed(me, &peer, "the joined groups", why))
            }
            _ => {}
        }
    }
    Ok(merged.into_values().take(max).collect())
}

/// getPublicGroups' rows in a cluster: the first `max` public groups above `after`, merged
/// from every core node.
pub async fn public(
    node: &Node,
    cluster: &Cluster,
    after: Option<u64>,
    max: usize,
) -> Result<Vec<(u64, String)>, ApiError> {
    let query = Query::Public {
        after,
        max: u32::try_from(max).unwrap_or(u32::MAX),
    };
    let mut merged = BTreeMap::new();
    let replies = scatter(node, cluster, cluster.core_members(), "public", &query).await;
    for (peer, reply) in replies {
        match reply {
            Some(Reply::Public(rows)) => merged.extend(rows),
            Some(Reply::Failed(why)) => {
                return Err(listing_failed(
                    cluster.name(),
                    &peer,
                    "the public groups",
                    why,
                ))
            }
            _ => {}
        }
    }
    Ok(merged.into_iter().take(max).collect())
}

/// The facts about `users` in a cluster: exists anywhere; joined counted over all nodes
/// (leaving `except` out). A node that is not Up or does not answer is recorded as
/// missing, so that a user found nowhere else answers 500, not a definite 204 (a joined
/// count without its part is used as it is: `group::rules::facts`).
pub async fn user_facts(node: &Node, cluster: &Cluster, users: &[String], except: u64) -> Facts {
    if users.is_empty() {
        return Facts::default();
    }
    let query = Query::UserFacts {
        users: users.to_vec(),
        except,
    };
    let replies = scatter(node, cluster, all_nodes(cluster), "user_facts", &query).await;
    combine_user_facts(users, replies, &cluster.core_members())
}

/// Combines each node's answer to a `UserFacts` query for `users` (see [`user_facts`]);
/// `core`: the core members, the nodes that hold groups.
fn combine_user_facts(
    users: &[String],
    replies: Vec<(String, Option<Reply>)>,
    core: &[String],
) -> Facts {
    let mut out = vec![(false, 0u64); users.len()];
    let mut facts = Facts::default();
    for (peer, reply) in replies {
        match reply {
            Some(Reply::UserFacts(rows)) if rows.len() == users.len() => {
                for (acc, (exists, joined)) in out.iter_mut().zip(rows) {
                    acc.0 |= exists;
                    acc.1 = acc.1.saturating_add(joined);
                }
            }
            other => {
                if let Some(Reply::Failed(why)) = other {
                    partial("user_facts", &peer, &why);
                }
                facts.missed(&peer, core.contains(&peer));
            }
        }
    }
    for (user, (exists, joined)) in users.iter().zip(out) {
        facts.insert(user, UserFacts { exists, joined });
    }
    facts
}

/// One node's share of a user's kept events during the login replay: a page at a time,
/// oldest first.
struct InboxCursor {
    /// The node; `None` for this one (read from the store directly).
    peer: Option<String>,
    /// The page read and not yet merged.
    page: VecDeque<KeptFrame>,
    /// Where the next page starts; `None` before the first page.
    after: Option<u64>,
    /// More pages to read.
    more: bool,
    /// A page could not be read: the node's share ended early.
    failed: bool,
}

/// One login replay: whose kept events, from which node, in what pages, under what bounds.
#[derive(Debug, Clone, Copy)]
pub struct Replay<'a> {
    pub node: &'a Node,
    pub cluster: &'a Cluster,
    pub user: &'a str,
    /// Kept events per page, and about how many bytes.
    pub page: usize,
    pub page_bytes: usize,
    /// `sessions.kept_events_max` and `sessions.kept_events_per_sender_max`.
    pub max: usize,
    pub per_sender: usize,
}

impl InboxCursor {
    /// Reads the next page; on the first, returns how many events the node keeps for the
    /// user (after bounding them to `max`) and how many each operator has. This node's
    /// share is read with the same query a peer answers ([`answer_local`]). A node that
    /// cannot answer ends its share (counted as a partial read): its events wait for the
    /// next login.
    async fn fill(&mut self, r: &Replay<'_>) -> (usize, Vec<(String, u32)>) {
        let query = Query::Inbox {
            user: r.user.to_owned(),
            after: self.after,
            max: u32::try_from(r.page).unwrap_or(u32::MAX),
            max_bytes: u32::try_from(r.page_bytes).unwrap_or(u32::MAX),
            trim: u32::try_from(r.max).unwrap_or(u32::MAX),
        };
        let reply = match &self.peer {
            None => Some(answer_local(r.node, &query)),
            Some(peer) => ask(r.cluster, peer, "inbox", &query).await,
        };
        let read = match reply {
            Some(Reply::Inbox {
                frames,
                next,
                total,
                senders,
            }) => Ok((
                frames.into_iter().map(Bytes::from).collect::<Vec<_>>(),
                next,
                total as usize,
                senders,
            )),
            Some(Reply::Failed(why)) => Err(why),
            // Not Up, no answer in time or undecodable: counted by `ask`.
            _ => Err(String::new()),
        };
        let cluster = r.cluster;
        let (frames, next, total, senders) = match read {
            Ok(r) => r,
            Err(why) => {
                let peer = self.peer.as_deref().unwrap_or(cluster.name());
                if !why.is_empty() {
                    partial("inbox", peer, &why);
                }
                self.more = false;
                self.failed = true;
                return (0, Vec::new());
            }
        };
        self.page.extend(frames.into_iter().map(KeptFrame::read));
        self.more = next.is_some();
        self.after = next.or(self.after).or(Some(0));
        (total, senders)
    }
}

/// A kept event in the login replay: its `Push::Kept` frame and what the merge needs.
struct KeptFrame {
    /// The event's time, ms (`i64::MIN` for a frame that does not decode as a kept event:
    /// sent first, never acknowledged by id or counted to an operator).
    time: i64,
    id: u64,
    /// The operator (`from`).
    from: String,
    frame: Bytes,
}

impl KeptFrame {
    fn read(frame: Bytes) -> Self {
        match convoke_protocol::decode_frame::<convoke_protocol::Push>(
            &mut bytes::BytesMut::from(&frame[..]),
            convoke_protocol::MAX_FRAME_LEN,
        ) {
            Ok(Some(convoke_protocol::Push::Kept { id, event })) => Self {
                time: event.timestamp,
                id,
                from: event.from,
                frame,
            },
            _ => Self {
                time: i64::MIN,
                id: 0,
                from: String::new(),
                frame,
            },
        }
    }
}

/// The login replay in a cluster: `user`'s kept events from every core node (this one's
/// from its store), merged by event time into pages for `sink` (it returns false to stop:
/// the session ended). Each node's events keep their order (a group's events are all on
/// its owner, so a group's order is kept); between nodes the older event goes first, ties
/// to the node listed first. The bounds hold for the user's events on all nodes together,
/// as on one node: at most `per_sender` (`sessions.kept_events_per_sender_max`) from one
/// operator, then at most `max` (`sessions.kept_events_max`) in all; the oldest over a
/// bound are dropped, not sent, and no longer kept. One page per node is held at a time.
pub async fn merged_inbox<F, Fut>(r: &Replay<'_>, mut sink: F)
where
    F: FnMut(Vec<Bytes>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let Replay {
        node,
        cluster,
        user,
        page,
        max,
        per_sender,
        ..
    } = *r;
    let me = cluster.name().to_owned();
    // Just after this node started, its peers come Up one by one: a login then would read
    // no kept events from those not Up yet, and they would only come at the next login.
    // Wait for them while the start is recent (a peer that is really down costs the
    // logins of the first seconds that wait).
    while cluster.just_started()
        && cluster
            .core_members()
            .iter()
            .any(|p| *p != me && !cluster.is_up(p))
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut cursors: Vec<InboxCursor> = std::iter::once(None)
        .chain(
            cluster
                .core_members()
                .into_iter()
                .filter(|p| *p != me)
                .map(Some),
        )
        .map(|peer| InboxCursor {
            peer,
            page: VecDeque::new(),
            after: None,
            more: true,
            failed: false,
        })
        .collect();
    // The first page of every node: the heads to merge, the counts to bound.
    let firsts = cursors.iter_mut().map(|c| c.fill(r));
    let mut total = 0usize;
    let mut by_sender: HashMap<String, usize> = HashMap::new();
    for (n, senders) in futures::future::join_all(firsts).await {
        total += n;
        for (from, k) in senders {
            *by_sender.entry(from).or_default() += k as usize;
        }
    }
    // How many of each operator's oldest go, then how many of the oldest left.
    let mut sender_over: HashMap<String, usize> = by_sender
        .into_iter()
        .filter(|(_, k)| *k > per_sender)
        .map(|(from, k)| (from, k - per_sender))
        .collect();
    let mut over = total
        .saturating_sub(sender_over.values().sum::<usize>())
        .saturating_sub(max);
    let mut dropped = Vec::new();
    let mut out = Vec::new();
    loop {
        for c in cursors.iter_mut().filter(|c| c.page.is_empty() && c.more) {
            c.fill(r).await;
            if c.failed {
                // A node's share ended early: what is left to merge is not what the counts
                // were taken on, so nothing more is dropped at this login (the bounds
                // apply again at the next).
                over = 0;
                sender_over.clear();
            }
        }
        let Some(i) = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.page.front().map(|h| (h.time, i)))
            .min()
            .map(|(_, i)| i)
        else {
            break;
        };
        let Some(kept) = cursors[i].page.pop_front() else {
            break;
        };
        if let Some(n) = sender_over.get_mut(&kept.from).filter(|n| **n > 0) {
            *n -= 1;
            dropped.push(kept.id);
            continue;
        }
        if over > 0 {
            over -= 1;
            dropped.push(kept.id);
            continue;
        }
        out.push(kept.frame);
        if out.len() >= page && !sink(std::mem::take(&mut out)).await {
            break;
        }
    }
    if !out.is_empty() {
        sink(out).await;
    }
    if !dropped.is_empty() {
        tracing::warn!(%user, dropped = dropped.len(), max, per_sender, "dropped the oldest kept events over their bounds");
        metrics::counter!("convoke_kept_events_dropped_total").increment(dropped.len() as u64);
        ack(node, user, &dropped);
    }
}

/// The bytes of shared files `user` has in groups owned by the other core nodes, for the
/// per-user file quota checked on the group's owner (`quotas.file_mb_per_user`); 0 on a
/// single node. A node that does not answer is left out (a partial read): the quota is
/// soft while a node is unreachable, as `limits.max_groups_per_user` is.
pub async fn file_bytes_elsewhere(user: &str) -> u64 {
    let Some(cluster) = Cluster::get() else {
        return 0;
    };
    let me = cluster.name().to_owned();
    let query = Query::FileBytes {
        user: user.to_owned(),
    };
    let asks = cluster
        .core_members()
        .into_iter()
        .filter(|p| *p != me)
        .map(|peer| {
            let (cluster, query) = (&cluster, &query);
            async move {
                match ask(cluster, &peer, "file_bytes", query).await {
                    Some(Reply::FileBytes(n)) => n,
                    Some(Reply::Failed(why)) => {
                        partial("file_bytes", &peer, &why);
                        0
                    }
                    _ => 0,
                }
            }
        });
    futures::future::join_all(asks).await.into_iter().sum()
}

/// Acknowledged kept events of `user`: this node's are dropped here, the others' are sent
/// to the node whose ordinal their id carries (every Up core node while that is unknown).
pub fn ack(node: &Node, user: &str, ids: &[u64]) {
    let Some(cluster) = Cluster::running() else {
        if let Err(e) = node.store.inbox_ack(user, ids) {
            tracing::error!(%user, error = %e, "could not drop acknowledged events");
        }
        return;
    };
    let mine = node.ordinal();
    let mut by_ordinal: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for &id in ids {
        by_ordinal
            .entry(crate::store::ids::ordinal_of(id))
            .or_default()
            .push(id);
    }
    for (ordinal, ids) in by_ordinal {
        if ordinal == mine {
            if let Err(e) = node.store.inbox_ack(user, &ids) {
                tracing::error!(%user, error = %e, "could not drop acknowledged events");
            }
            continue;
        }
        let known = ordinals()
            .lock()
            .ok()
            .and_then(|m| m.get(&ordinal).cloned());
        let peers = match known {
            Some(p) => vec![p],
            None => cluster
                .core_members()
                .into_iter()
                .filter(|p| p != cluster.name())
                .collect(),
        };
        let query = Query::Ack {
            user: user.to_owned(),
            ids,
        };
        for peer in peers {
            let (cluster, query) = (cluster.clone(), query.clone());
            // Not awaited by the session: a lost acknowledgement only means the event is
            // sent once more at the next login.
            tokio::spawn(async move {
                if let Some(Reply::Failed(why)) = ask(&cluster, &peer, "ack", &query).await {
                    partial("ack", &peer, &why);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Encode + Decode<()> + PartialEq + std::fmt::Debug>(v: &T) {
        let bytes = encode(v).expect("encodes");
        assert_eq!(&decode::<T>(&bytes).expect("decodes"), v);
    }

    /// While a node is down every read that needs it is partial: one warning per node per
    /// 10 s, the next one saying how many were left out; other nodes are not held back.
    #[test]
    fn partial_read_warnings_are_one_per_node_per_ten_seconds() {
        let mut last = WarnedAt::new();
        let t0 = Instant::now();
        assert_eq!(warn_due(&mut last, "n2", t0), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(
                warn_due(&mut last, "n2", t0 + Duration::from_millis(ms)),
                None
            );
        }
        assert_eq!(
            warn_due(&mut last, "n3", t0 + Duration::from_millis(5)),
            Some(0)
        );
        assert_eq!(warn_due(&mut last, "n2", t0 + PARTIAL_WARN_EVERY), Some(3));
        assert_eq!(
            warn_due(&mut last, "n2", t0 + PARTIAL_WARN_EVERY * 2),
            Some(0)
        );
    }

    /// User facts from the nodes that answered are combined (exists: any; joined: the
    /// sum); a node left out (not Up, no answer in time, a failed or malformed answer) is
    /// named as missing, as a node holding groups when it is a core member. Before, it was
    /// silently left out: the user counted as unknown (204) and the count as complete.
    #[test]
    fn user_facts_name_the_nodes_left_out() {
        let users = vec!["a".to_string(), "b".to_string()];
        let core: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let replies = vec![
            (
                "n1".to_string(),
                Some(Reply::UserFacts(vec![(false, 2), (false, 0)])),
            ),
            (
                "n2".to_string(),
                Some(Reply::UserFacts(vec![(true, 3), (false, 0)])),
            ),
            ("n3".to_string(), None),
            (
                "g4".to_string(),
                Some(Reply::Failed("storage failure".into())),
            ),
        ];
        let facts = combine_user_facts(&users, replies, &core);
        assert!(facts.user_exists("a") && !facts.user_exists("b"));
        assert_eq!((facts.joined_count("a"), facts.joined_count("b")), (5, 0));
        assert_eq!(facts.unsure_exists().as_deref(), Some("n3, g4"));
        assert_eq!(facts.unsure_joined().as_deref(), Some("n3"));
        let all = vec![
            (
                "n1".to_string(),
                Some(Reply::UserFacts(vec![(true, 1), (false, 0)])),
            ),
            ("n2".to_string(), Some(Reply::UserFacts(vec![(false, 1)]))),
        ];
        let facts = combine_user_facts(&users, all, &core);
        assert_eq!(
            facts.unsure_exists().as_deref(),
            Some("n2"),
            "an answer for other users than asked is no answer"
        );
        let complete = combine_user_facts(
            &users,
            vec![(
                "n1".to_string(),
                Some(Reply::UserFacts(vec![(true, 1), (false, 0)])),
            )],
            &core,
        );
        assert_eq!(complete.unsure_exists(), None);
    }

    /// A gateway that is not Up is asked (and so named as missing), not left out as if it
    /// held nothing (review finding MEDIUM-2).
    #[test]
    fn user_facts_ask_every_known_gateway_up_or_not() {
        let core = vec!["n1".to_string(), "n2".to_string()];
        let known = vec!["n2".to_string(), "g3".to_string()];
        assert_eq!(
            nodes_to_ask("n1", core.clone(), known),
            vec!["g3", "n1", "n2"]
        );
        // A gateway asks the core members and itself.
        assert_eq!(nodes_to_ask("g3", core, vec![]), vec!["g3", "n1", "n2"]);
    }

    /// A node that answers it could not give its part of a joined-groups page (its rows
    /// were over what one batch carries, or its store failed) fails the page with a 500
    /// naming it; before, `ask` took the failure for a node left out, and the page came
    /// back without that node's groups, silently. A node that did not answer at all is
    /// still left out (partial, counted).
    #[test]
    fn a_node_that_fails_its_part_fails_the_joined_page() {
        let too_large = "an item of 5000000 bytes for node n1 is over the limit".to_string();
        let bytes = encode(&Answered {
            ordinal: 250,
            reply: Reply::Failed(too_large.clone()),
        })
        .unwrap();
        let failed = read_answer("n2", "joined", &bytes);
        assert_eq!(failed, Some(Reply::Failed(too_large)));
        let row = |gid| JoinedRow {
            gid,
            name: format!("g{gid}"),
            members: 2,
            role: None,
        };
        let replies = vec![
            ("n1".to_string(), Some(Reply::Joined(vec![row(1), row(4)]))),
            ("n2".to_string(), failed),
        ];
        let e = merge_joined("n1", replies, 10).unwrap_err();
        assert_eq!(e.code, ErrorCode::ServerBusy);
        assert!(
            e.message.contains("n2") && e.message.contains("smaller page"),
            "{}",
            e.message
        );
        let replies = vec![
            ("n1".to_string(), Some(Reply::Joined(vec![row(1), row(4)]))),
            ("n2".to_string(), Some(Reply::Joined(vec![row(2)]))),
            ("n3".to_string(), None),
        ];
        let rows = merge_joined("n1", replies, 2).unwrap();
        assert_eq!(rows.iter().map(|r| r.gid).collect::<Vec<_>>(), vec![1, 2]);
        let local = vec![("n1".to_string(), Some(Reply::Failed("storage".into())))];
        assert_eq!(
            merge_joined("n1", local, 2).unwrap_err().code,
            ErrorCode::Internal
        );
    }

    /// Queries and answers cross nodes unchanged; a truncated or padded one is an error.
    #[test]
    fn queries_and_answers_are_plain_data() {
        round_trip(&Query::Joined {
            user: "alice".into(),
            max: 40,
            need_role: true,
        });
        round_trip(&Query::Inbox {
            user: "bob".into(),
            after: Some(7 << 54 | 3),
            max: 256,
            max_bytes: 1 << 18,
            trim: 1000,
        });
        round_trip(&Query::Ack {
            user: "bob".into(),
            ids: vec![1, 2, 3],
        });
        let answered = Answered {
            ordinal: 3,
            reply: Reply::Joined(vec![JoinedRow {
                gid: 9,
                name: "g".into(),
                members: 2,
                role: Some(Role::Admin),
            }]),
        };
        round_trip(&answered);
        let mut bytes = encode(&answered).unwrap();
        bytes.push(0);
        assert!(decode::<Answered>(&bytes).is_err());
        bytes.truncate(bytes.len() - 3);
        assert!(decode::<Answered>(&bytes).is_err());
    }
}

//! The wire between nodes: [`RouterMsg`], the one remote-capable message type in the broker,
//! and the [`Batch`] of [`Wire`] items it carries (../shared/design/cluster.md 9).
//!
//! `RouterMsg` implements `ractor::Message` by hand instead of deriving
//! `RactorClusterMessage`: the derive goes through `BytesConvertable`, whose contract allows
//! panics, and ractor drops an undecodable message silently. Here a batch is bincode 2 with
//! a 4 MiB limit (without a limit a forged length prefix aborts the process), and a frame
//! that does not decode becomes [`RouterMsg::Undecodable`], which the router counts and logs.

use bincode::{Decode, Encode};
use ractor::message::BoxedDowncastErr;
use ractor::message::SerializedMessage;

/// The variant tag of a serialized batch; anything else from a peer is refused.
pub const VARIANT: &str = "convoke.wire.1";

/// Protocol version in [`Hello`]; a peer speaking another one is refused (`proto`), which
/// stops neither node: each answers the other's groups with 500 until both run one build.
///
/// Bump it with every change to what crosses between nodes: [`Batch`] and [`Wire`], and
/// the payloads they carry as bytes (`group::call::Forwarded` with its facts and the
/// contract's `Request`, the `Answer`, `cluster::scatter`'s `Query` and `Reply`). Two
/// builds with one number and different layouts come Up together and every call between
/// them fails to decode. The golden test below (`WIRE_HISTORY`) fails on a change made
/// without a bump. [`Hello`] itself (and the batch fields before it) must keep its layout
/// across versions: a peer has to decode it to refuse another version by name.
///
/// 2: `Refuse` carries its reason's `code`; the facts of a forwarded call name the nodes
/// whose part is missing.
pub const PROTO: u32 = 2;

/// Largest encoded batch accepted (and the NodeServer's inbound frame limit).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Target size of one batch when a link drains its queue.
pub const BATCH_TARGET_BYTES: usize = 1 << 20;

/// Most bytes of items in one batch: the limit less room for the batch's own fields
/// (sender name, incarnation, seq, item count). A link never builds a bigger batch, and
/// refuses a single item over it.
pub const MAX_ITEMS_BYTES: usize = MAX_BATCH_BYTES - 4096;

/// What ractor_cluster adds around a batch on the wire (its envelope: variant name, actor
/// id, length prefixes): the NodeServer's inbound frame limit is the batch limit plus this.
pub const ENVELOPE_MARGIN: usize = 64 << 10;

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 4 << 20 }>()
}

/// The router's message.
#[derive(Debug)]
pub enum RouterMsg {
    /// Items from a peer (or this node, in tests).
    Wire(Batch),
    /// A frame from a peer that did not decode: the decoder's words. Counted and logged.
    Undecodable(String),
}

impl ractor::Message for RouterMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            RouterMsg::Wire(batch) => Ok(SerializedMessage::Cast {
                variant: VARIANT.to_owned(),
                args: encode(&batch).map_err(|_| BoxedDowncastErr)?,
                metadata: None,
            }),
            RouterMsg::Undecodable(_) => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(m: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(match m {
            SerializedMessage::Cast { variant, args, .. } if variant == VARIANT => {
                decode(&args).unwrap_or_else(RouterMsg::Undecodable)
            }
            SerializedMessage::Cast { variant, args, .. } => RouterMsg::Undecodable(format!(
                "unknown variant {:?} ({} bytes)",
                variant.chars().take(64).collect::<String>(),
                args.len()
            )),
            SerializedMessage::Call { variant, .. } => RouterMsg::Undecodable(format!(
                "a call ({:?}); the router takes casts only",
                variant.chars().take(64).collect::<String>()
            )),
            SerializedMessage::CallReply(..) => {
                RouterMsg::Undecodable("a call reply; the router makes no calls".to_owned())
            }
        })
    }
}

/// Encodes a batch; fails when it is over [`MAX_BATCH_BYTES`].
pub fn encode(batch: &Batch) -> Result<Vec<u8>, String> {
    // bincode's limit guards decoding only; a peer would refuse a bigger frame anyway.
    let bytes = bincode::encode_to_vec(batch, codec()).map_err(|e| e.to_string())?;
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(format!(
            "a batch of {} bytes is over the {MAX_BATCH_BYTES}-byte limit",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Decodes a batch; never panics, never allocates past the limit.
pub fn decode(bytes: &[u8]) -> Result<RouterMsg, String> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(format!("frame of {} bytes is over the limit", bytes.len()));
    }
    match bincode::decode_from_slice::<Batch, _>(bytes, codec()) {
        Ok((batch, used)) if used == bytes.len() => Ok(RouterMsg::Wire(batch)),
        Ok((_, used)) => Err(format!(
            "{} trailing bytes after a batch of {used}",
            bytes.len() - used
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The encoded size of one item (what a link counts against `peer_queue_bytes`), counted
/// without encoding it into a buffer: a fan-out's `Deliver` carries a whole frame and its
/// user list, measured once per node per event.
pub fn item_len(item: &Wire) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    match bincode::encode_into_writer(item, &mut size, codec()) {
        Ok(()) => size.bytes_written,
        Err(_) => MAX_BATCH_BYTES,
    }
}

/// What one cast between routers carries.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Batch {
    /// The sending node's name.
    pub from: String,
    /// The sender's process incarnation (random per start).
    pub incarnation: u64,
    /// Per link, from 1; 0 for items sent outside a link (Hello, Ping, Pong).
    pub seq: u64,
    /// The items, in the order they were queued.
    pub items: Vec<Wire>,
}

/// Who a node is, sent first on every new session (3.2).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// [`PROTO`].
    pub proto: u32,
    /// `cluster.name`.
    pub name: String,
    /// `cluster.ordinal`.
    pub ordinal: u32,
    /// `core` or `gateway`.
    pub role: String,
    /// The data dir's random id (identity file).
    pub node_uid: String,
    /// Random per process start: a new value means the peer restarted.
    pub incarnation: u64,
    /// `cluster.shards`.
    pub shards: u32,
    /// SHA-256 of the sorted core member list (empty for a gateway without a list).
    pub members_hash: Vec<u8>,
    /// HMAC-SHA256(app secret, "convoke-cluster-fingerprint"): the same app secret, never
    /// the secret itself.
    pub secret_mac: Vec<u8>,
    /// The core members (`name@host:port`), for gateways to learn whom to dial.
    pub members: Vec<String>,
    /// The client-facing QUIC address of this node.
    pub quic_addr: String,
    /// SHA-256 of this node's QUIC server certificate (leaf, DER): a peer that proxies a
    /// file transfer to this node pins it (`cluster::peer_quic`). Empty: not known.
    pub quic_cert_sha256: Vec<u8>,
}

/// One item between nodes. Payloads of forwarded requests and replies are opaque bytes here;
/// request forwarding (wave 2) defines them.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Wire {
    /// First item of a new session, both ways.
    Hello(Hello),
    /// A peer refused this node (the reason, for its log), then closes the session.
    Refuse {
        /// Why, in words naming the setting.
        reason: String,
        /// The reason's code (`convoke_cluster_refused_total{reason}`): the refused node
        /// decides from it whether to stop (`cluster::refusal`).
        code: String,
    },
    /// Heartbeat; `acked_batch` is the highest batch seq processed from the receiver.
    Ping {
        /// Heartbeat number.
        seq: u64,
        /// Sender's monotonic clock, nanoseconds (echoed for the round trip time).
        sent_ns: u64,
        /// Highest batch seq of the receiver's link that the sender has processed.
        acked_batch: u64,
    },
    /// Answer to a Ping, sent by the router that processed it.
    Pong {
        /// The Ping's seq.
        seq: u64,
        /// The Ping's `sent_ns`.
        sent_ns: u64,
        /// Highest batch seq of the receiver's link that the sender has processed.
        acked_batch: u64,
    },
    /// A request for a group owned by the receiver.
    Forward {
        /// The caller's process incarnation, echoed in the `Reply`: an answer meant for a
        /// previous process of the caller (correlation ids restart there) is told apart.
        caller: u64,
        /// Correlation id; the answer is a `Reply` with it.
        corr: u64,
        /// The group.
        gid: u64,
        /// Time left for the call, ms, when it was queued. The receiving router rewrites it
        /// to the time left on arrival, on its own monotonic clock (see `sent_ns`); 0:
        /// expired, answered "not executed". Two hosts' wall clocks are never compared.
        remaining_ms: u64,
        /// The sender's monotonic clock (ns since its process started) when it queued the
        /// call. The receiver maps it onto its own clock with the offset it learns from the
        /// sender's Pings, so time spent queued, in transit or frozen counts.
        sent_ns: u64,
        /// The request (caller, facts, request), encoded by the forwarding code.
        payload: Vec<u8>,
    },
    /// A createGroup for a group id whose shard the receiver owns.
    Create {
        /// The caller's process incarnation, echoed in the `Reply`: an answer meant for a
        /// previous process of the caller (correlation ids restart there) is told apart.
        caller: u64,
        /// Correlation id.
        corr: u64,
        /// The new group's id.
        gid: u64,
        /// Time left for the call, ms, when it was queued. The receiving router rewrites it
        /// to the time left on arrival, on its own monotonic clock (see `sent_ns`); 0:
        /// expired, answered "not executed". Two hosts' wall clocks are never compared.
        remaining_ms: u64,
        /// The sender's monotonic clock (ns since its process started) when it queued the
        /// call. The receiver maps it onto its own clock with the offset it learns from the
        /// sender's Pings, so time spent queued, in transit or frozen counts.
        sent_ns: u64,
        /// The request, encoded by the forwarding code.
        payload: Vec<u8>,
    },
    /// A read across groups (joined and public lists, the login inbox, facts about users)
    /// or a kept-event acknowledgement, answered with a `Reply` (`crate::cluster::scatter`).
    Query {
        /// The caller's process incarnation, echoed in the `Reply`: an answer meant for a
        /// previous process of the caller (correlation ids restart there) is told apart.
        caller: u64,
        /// Correlation id.
        corr: u64,
        /// Time left for the call, ms, when it was queued. The receiving router rewrites it
        /// to the time left on arrival, on its own monotonic clock (see `sent_ns`); 0:
        /// expired, answered "not executed". Two hosts' wall clocks are never compared.
        remaining_ms: u64,
        /// The sender's monotonic clock (ns since its process started) when it queued the
        /// call. The receiver maps it onto its own clock with the offset it learns from the
        /// sender's Pings, so time spent queued, in transit or frozen counts.
        sent_ns: u64,
        /// The query, encoded by `crate::cluster::scatter`.
        payload: Vec<u8>,
    },
    /// The answer to a `Forward`, `Create` or any call.
    Reply {
        /// The call's `caller` incarnation, echoed: a reply for another incarnation of this
        /// node is dropped (counted), never matched to a new call with the same `corr`.
        caller: u64,
        /// The correlation id of the call.
        corr: u64,
        /// The answer, encoded by the code that made the call.
        payload: Vec<u8>,
    },
    /// All users online on the sender, in parts (after every new session).
    PresenceSnapshot {
        /// This part, from 0.
        part: u32,
        /// Number of parts.
        parts: u32,
        /// Users online on the sender.
        users: Vec<String>,
    },
    /// Users whose first session opened / last session closed on the sender.
    PresenceDelta {
        /// Came online on the sender.
        online: Vec<String>,
        /// Went offline on the sender.
        offline: Vec<String>,
    },
    /// A push frame for the receiver's sessions of `to` (droppable under overload).
    Deliver {
        /// The group.
        gid: u64,
        /// The session that caused it (not delivered to), cluster-unique.
        origin_session: u64,
        /// Recipients online on the receiver.
        to: Vec<String>,
        /// The encoded push frame, written as is into the sessions' outboxes.
        frame: Vec<u8>,
    },
    /// "Send me your presence snapshot": sent with this node's own snapshot when a peer
    /// comes Up here, because the two ends do not see each other Up at the same moment and
    /// a snapshot sent before the receiver saw its sender Up is not taken.
    PresenceWanted,
}

impl Wire {
    /// Whether a full link may drop this item (live deliveries: messages come back from
    /// history, kept events from the inbox); everything else is always queued.
    pub fn droppable(&self) -> bool {
        matches!(self, Wire::Deliver { .. })
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Wire::Hello(_) => "hello",
            Wire::Refuse { .. } => "refuse",
            Wire::Ping { .. } => "ping",
            Wire::Pong { .. } => "pong",
            Wire::Forward { .. } => "forward",
            Wire::Create { .. } => "create",
            Wire::Query { .. } => "query",
            Wire::Reply { .. } => "reply",
            Wire::PresenceSnapshot { .. } => "presence_snapshot",
            Wire::PresenceDelta { .. } => "presence_delta",
            Wire::Deliver { .. } => "deliver",
            Wire::PresenceWanted => "presence_wanted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ractor::Message;

    fn batch(items: Vec<Wire>) -> Batch {
        Batch {
            from: "n1".into(),
            incarnation: 7,
            seq: 3,
            items,
        }
    }

    #[test]
    fn a_batch_round_trips_through_the_ractor_message_impl() {
        let b = batch(vec![
            Wire::Ping {
                seq: 1,
                sent_ns: 2,
                acked_batch: 3,
            },
            Wire::Deliver {
                gid: 9,
                origin_session: 1 << 56,
                to: vec!["alice".into()],
                frame: vec![1, 2, 3],
            },
        ]);
        let m = RouterMsg::Wire(b.clone()).serialize().unwrap();
        match RouterMsg::deserialize(m).unwrap() {
            RouterMsg::Wire(back) => assert_eq!(back, b),
            other => panic!("{other:?}"),
        }
        assert!(RouterMsg::Undecodable("x".into()).serialize().is_err());
    }

    #[test]
    fn item_len_is_the_encoded_size() {
        let items = [
            Wire::Deliver {
                gid: 9,
                origin_session: 1 << 56,
                to: vec!["alice".into(), "bob".into()],
                frame: vec![7; 5000],
            },
            Wire::PresenceWanted,
            Wire::PresenceDelta {
                online: vec!["a".into()],
                offline: vec![],
            },
        ];
        for item in items {
            let encoded = bincode::encode_to_vec(&item, codec()).unwrap();
            assert_eq!(item_len(&item), encoded.len(), "{}", item.kind());
        }
    }

    #[test]
    fn foreign_variants_and_calls_become_undecodable() {
        let m = SerializedMessage::Cast {
            variant: "other".into(),
            args: vec![0],
            metadata: None,
        };
        assert!(matches!(
            RouterMsg::deserialize(m),
            Ok(RouterMsg::Undecodable(_))
        ));
        assert!(matches!(
            RouterMsg::deserialize(SerializedMessage::CallReply(1, vec![])),
            Ok(RouterMsg::Undecodable(_))
        ));
    }

    #[test]
    fn a_forged_length_is_an_error_not_an_allocation() {
        // from = a string claiming u64::MAX bytes.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
        // An item list claiming 2^32 entries.
        let mut bytes = encode(&batch(vec![])).unwrap();
        bytes.pop();
        bytes.extend_from_slice(&[252, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode(&bytes).is_err());
        // Over the limit as a whole.
        assert!(decode(&vec![0u8; MAX_BATCH_BYTES + 1]).is_err());
        let big = batch(vec![Wire::Reply {
            caller: 1,
            corr: 1,
            payload: vec![0; MAX_BATCH_BYTES],
        }]);
        assert!(encode(&big).is_err());
    }

    #[test]
    fn an_unknown_item_tag_is_a_decode_error() {
        let mut bytes = encode(&batch(vec![Wire::Refuse {
            reason: "r".into(),
            code: "c".into(),
        }]))
        .unwrap();
        // The last item starts after from (3), incarnation (1), seq (1), count (1).
        bytes[6] = 200;
        assert!(decode(&bytes).is_err());
    }

    /// SHA-256 (hex) of [`golden_batch`] encoded, per wire version, oldest first. A change
    /// to what crosses between nodes changes the hash: bump [`PROTO`] and add a line (never
    /// edit one), so that two builds that cannot decode each other refuse each other at
    /// Hello instead of coming Up and failing every call (review finding MEDIUM-1).
    const WIRE_HISTORY: &[(u32, &str)] = &[(
        2,
        "435c4125a3e89c813ae2e5a62f4ef5575c713180730ccb8c8b69cbed98ad66bd",
    )];

    /// SHA-256 (hex) of [`golden_hello`] in a batch. Never changes: every version must
    /// decode every other's Hello to refuse it as `proto`.
    const HELLO_SHA256: &str = "fcf8cc59a732631e56d265c06668777f7fe336afd3f603b8d48dcb527058905e";

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A batch with an item of each kind that carries a call or its answer, with payloads
    /// as the forwarding and scatter code encode them: fixed values, so that its bytes
    /// change only when a layout does.
    fn golden_batch() -> Batch {
        use crate::cluster::forward::encode as payload;
        use crate::group::call::{Answer, Forwarded, GroupAnswer, GroupCall};
        use crate::group::rules::facts::{Facts, UserFacts};
        use crate::group::rules::Caller;
        use convoke_protocol::{ApiError, ErrorCode, Request, Response};
        let mut facts = Facts::default();
        facts.insert(
            "bob",
            UserFacts {
                exists: true,
                joined: 3,
            },
        );
        facts.missed("g1", false);
        let forwarded = Forwarded {
            caller: Caller {
                user: "alice".into(),
                app_admin: false,
                session_id: 1 << 56 | 5,
            },
            facts,
            call: GroupCall::Request(Request::ChangeGroupOwner {
                group_id: "72057594037927941".into(),
                new_owner: "bob".into(),
            }),
        };
        let ok: Answer = Ok(GroupAnswer::Response(Response::Done));
        let failed: Answer = Err(ApiError::new(ErrorCode::ServerBusy, "retry"));
        let query = crate::cluster::scatter::Query::UserFacts {
            users: vec!["bob".into()],
            except: 9,
        };
        batch(vec![
            Wire::Forward {
                caller: 11,
                corr: 12,
                gid: 13,
                remaining_ms: 14,
                sent_ns: 15,
                payload: payload(&forwarded).unwrap(),
            },
            Wire::Query {
                caller: 11,
                corr: 16,
                remaining_ms: 17,
                sent_ns: 18,
                payload: payload(&query).unwrap(),
            },
            Wire::Reply {
                caller: 11,
                corr: 12,
                payload: payload(&ok).unwrap(),
            },
            Wire::Reply {
                caller: 11,
                corr: 19,
                payload: payload(&failed).unwrap(),
            },
            Wire::Refuse {
                reason: "refused by n1: it speaks protocol 1".into(),
                code: "proto".into(),
            },
        ])
    }

    fn golden_hello() -> Batch {
        Batch {
            from: "n2".into(),
            incarnation: 7,
            seq: 0,
            items: vec![Wire::Hello(Hello {
                proto: 1,
                name: "n2".into(),
                ordinal: 2,
                role: "core".into(),
                node_uid: "00ff".into(),
                incarnation: 7,
                shards: 256,
                members_hash: vec![1, 2],
                secret_mac: vec![3, 4],
                members: vec!["n1@127.0.0.1:7401".into(), "n2@127.0.0.2:7401".into()],
                quic_addr: "127.0.0.2:4433".into(),
                quic_cert_sha256: vec![5, 6],
            })],
        }
    }

    #[test]
    fn the_wire_changes_only_with_a_protocol_bump() {
        let bytes = encode(&golden_batch()).unwrap();
        let hash = sha256_hex(&bytes);
        let (proto, recorded) = *WIRE_HISTORY.last().unwrap();
        assert!(
            WIRE_HISTORY
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1),
            "WIRE_HISTORY: one line per version, versions ascending, each with its own hash"
        );
        assert_eq!(
            hash,
            recorded,
            "the bytes between nodes changed (encoded golden batch: {bytes:02x?}): bump \
             wire::PROTO and add ({}, \"{hash}\") to WIRE_HISTORY",
            PROTO + 1
        );
        assert_eq!(
            proto, PROTO,
            "wire::PROTO changed: add (PROTO, hash) to WIRE_HISTORY"
        );
        // Still a batch a peer decodes.
        match decode(&bytes) {
            Ok(RouterMsg::Wire(back)) => assert_eq!(back, golden_batch()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hello_keeps_its_layout_across_versions() {
        let bytes = encode(&golden_hello()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            HELLO_SHA256,
            "a Hello's bytes changed: a node of another version could no longer decode it \
             and refuse it as `proto`. Keep Hello and the batch fields before it as they are"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode(&bytes);
            let m = SerializedMessage::Cast { variant: VARIANT.into(), args: bytes, metadata: None };
            prop_assert!(RouterMsg::deserialize(m).is_ok());
        }

        #[test]
        fn mutated_batches_never_panic(
            users in proptest::collection::vec("[a-z]{0,12}", 0..8),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = encode(&batch(vec![
                Wire::PresenceDelta { online: users.clone(), offline: users },
                Wire::Forward { caller: 9, corr: 1, gid: 2, remaining_ms: 3, sent_ns: 4, payload: vec![4; 40] },
            ])).unwrap();
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            let _ = decode(&bytes);
        }
    }
}

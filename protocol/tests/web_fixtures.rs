//! Golden fixtures for the TypeScript codec of the web SDK (client/web/src/codec/).
//!
//! Builds values of every request, response, push, event detail, client and server frame,
//! handshake and transfer variant (from the types' own `examples()` plus edge cases: empty,
//! long and unicode strings, None and Some, the varint boundaries, u64 ids beyond 2^53,
//! negative i64), encodes each as a frame with the protocol's own codec, and writes one JSON
//! file per family under client/web/test/fixtures/: each case is the value as the TS codec
//! represents it and the frame's bytes in hex. The node tests decode every case to its value
//! and encode it back to the same bytes.
//!
//! This test fails when the committed fixtures differ from what the code produces (the wire
//! changed: regenerate with `CONVOKE_UPDATE_FIXTURES=1` and make the TS codec agree), and when
//! an enum has a variant without a case: the renderers below match every variant and name
//! every field (a new one does not compile until it is rendered), and [`Coverage`] asks
//! bincode whether the first variant index no case used exists.
//!
//! The TS representation (client/web/README.md): fields in camelCase; u64 as a decimal
//! string (ids beyond 2^53 survive); u32 and i64 as numbers (an i64 outside ±(2^53-1) is a
//! decode error in TS, so no case uses one); bytes as `{"$bytes": hex}` in JSON (a
//! `Uint8Array` in TS); `Option` as null; maps as objects; enums with fields as objects
//! tagged by their family's key (`method`, `type`, `kind`, `push`) with the variant name in
//! camelCase, a newtype variant's value under one named field; unit enums as strings
//! (`Role`, `GroupEventOp`), `ErrorCode` as the SDK's number; `Result` as `{ok: true,
//! value}` or `{ok: false, error}`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use bincode::error::DecodeError;
use convoke_protocol::codec::{frame_bytes, MAX_FRAME_LEN, MAX_HELLO_LEN};
use convoke_protocol::event::{EventDetail, GroupEventOp, Push};
use convoke_protocol::handshake::{
    ClientFrame, ServerFrame, MAX_ACK_IDS, PROTOCOL_VERSION, SUPPORTED_VERSIONS,
};
use convoke_protocol::request::Request;
use convoke_protocol::response::{Response, Role};
use convoke_protocol::transfer::{TransferHeader, TransferReply, CANCELLED, CHUNK_BYTES};
use convoke_protocol::{close, ErrorCode};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The environment variable that rewrites the fixtures instead of comparing them.
const UPDATE: &str = "CONVOKE_UPDATE_FIXTURES";

#[path = "web_fixtures/cases.rs"]
mod cases;
#[path = "web_fixtures/json.rs"]
mod json;
#[path = "web_fixtures/render.rs"]
mod render;

use cases::*;
use json::*;
use render::*;

// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Coverage(BTreeMap<&'static str, BTreeSet<u32>>);

impl Coverage {
    /// Records the variant of `value`, an enum of family `name` (its first varint).
    fn see<T: bincode::Encode>(&mut self, name: &'static str, value: &T) {
        let bytes = bincode::encode_to_vec(value, wire()).unwrap();
        let (index, _): (u32, usize) = bincode::decode_from_slice(&bytes, wire()).unwrap();
        self.0.entry(name).or_default().insert(index);
    }

    /// Fails unless the cases of `name` used variants 0..n and bincode has no variant n.
    fn check<T: bincode::Decode<()> + std::fmt::Debug>(&self, name: &'static str) {
        let seen = self.0.get(name).cloned().unwrap_or_default();
        let n = seen.len() as u32;
        assert_eq!(
            seen,
            (0..n).collect::<BTreeSet<u32>>(),
            "{name}: cases cover variant indices {seen:?}, not 0..{n}: add a case for each missing one"
        );
        let probe = bincode::encode_to_vec(n, wire()).unwrap();
        match bincode::decode_from_slice::<T, _>(&probe, wire()) {
            Err(DecodeError::UnexpectedVariant { .. }) => {}
            other => panic!(
                "{name} has a variant with index {n} but no fixture case uses it ({other:?}): \
                 add a case to protocol/tests/web_fixtures.rs and support it in client/web/src/codec/"
            ),
        }
    }
}

fn wire() -> impl bincode::config::Config {
    // As protocol/src/codec.rs configures it.
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<MAX_FRAME_LEN>()
}

// ---------------------------------------------------------------------------------------

fn case<T: bincode::Encode>(name: &str, ty: &str, value: &T, json: J, max: usize) -> J {
    let frame = frame_bytes(value).unwrap();
    assert!(
        frame.len() - 4 <= max,
        "{ty} case {name} is {} bytes, over its limit {max}",
        frame.len() - 4
    );
    J::Obj(vec![
        ("name".into(), s(name)),
        ("type".into(), s(ty)),
        ("value".into(), json),
        ("hex".into(), J::Str(hex::encode(&frame))),
    ])
}

fn file(cases: Vec<J>) -> String {
    let j = J::Obj(vec![
        (
            "generatedBy".into(),
            s("protocol/tests/web_fixtures.rs: CONVOKE_UPDATE_FIXTURES=1 cargo test -p convoke-protocol --test web_fixtures"),
        ),
        ("cases".into(), J::Arr(cases)),
    ]);
    let mut out = String::new();
    render(&j, 0, &mut out);
    out.push('\n');
    out
}

fn constants() -> String {
    let codes = ErrorCode::ALL
        .iter()
        .map(|c| {
            J::Obj(vec![
                ("code".into(), J::Num(c.code().to_string())),
                ("name".into(), s(c.name())),
            ])
        })
        .collect();
    let close_codes = (0..=8u32)
        .map(|c| {
            J::Obj(vec![
                ("code".into(), u32n(c)),
                ("name".into(), s(close::name(c))),
            ])
        })
        .collect();
    let j = J::Obj(vec![
        (
            "generatedBy".into(),
            s("protocol/tests/web_fixtures.rs: CONVOKE_UPDATE_FIXTURES=1 cargo test -p convoke-protocol --test web_fixtures"),
        ),
        ("maxFrameLen".into(), J::Num(MAX_FRAME_LEN.to_string())),
        ("maxHelloLen".into(), J::Num(MAX_HELLO_LEN.to_string())),
        (
            "headerLen".into(),
            J::Num(convoke_protocol::codec::HEADER_LEN.to_string()),
        ),
        ("protocolVersion".into(), u32n(PROTOCOL_VERSION)),
        (
            "supportedVersions".into(),
            J::Arr(SUPPORTED_VERSIONS.iter().map(|v| u32n(*v)).collect()),
        ),
        ("maxAckIds".into(), J::Num(MAX_ACK_IDS.to_string())),
        (
            "alpn".into(),
            s(std::str::from_utf8(convoke_protocol::ALPN).unwrap()),
        ),
        ("transferCancelled".into(), u32n(CANCELLED)),
        ("chunkBytes".into(), J::Num(CHUNK_BYTES.to_string())),
        (
            "errorCodes".into(),
            J::Arr(codes),
        ),
        (
            "groupEventOps".into(),
            J::Arr(GroupEventOp::ALL.iter().map(|o| s(o.as_str())).collect()),
        ),
        (
            "roles".into(),
            J::Arr(
                [Role::Owner, Role::Admin, Role::Member]
                    .iter()
                    .map(|r| s(r.as_str()))
                    .collect(),
            ),
        ),
        ("closeCodes".into(), J::Arr(close_codes)),
    ]);
    let mut out = String::new();
    render(&j, 0, &mut out);
    out.push('\n');
    out
}

/// Every fixture file and its content, by file name.
fn fixtures() -> BTreeMap<&'static str, String> {
    let mut cov = Coverage::default();
    let mut files = BTreeMap::new();

    let requests = client_frames()
        .iter()
        .map(|(n, f)| {
            case(
                n,
                "ClientFrame",
                f,
                client_frame(f, &mut cov),
                MAX_FRAME_LEN,
            )
        })
        .collect();
    files.insert("requests.json", file(requests));

    let responses = response_frames()
        .iter()
        .map(|(n, f)| {
            case(
                n,
                "ServerFrame",
                f,
                server_frame(f, &mut cov),
                MAX_FRAME_LEN,
            )
        })
        .collect();
    files.insert("responses.json", file(responses));

    let (client, server) = handshake_frames();
    let mut handshake: Vec<J> = client
        .iter()
        .map(|(n, f)| {
            case(
                n,
                "ClientFrame",
                f,
                client_frame(f, &mut cov),
                MAX_HELLO_LEN,
            )
        })
        .collect();
    handshake.extend(server.iter().map(|(n, f)| {
        case(
            n,
            "ServerFrame",
            f,
            server_frame(f, &mut cov),
            MAX_FRAME_LEN,
        )
    }));
    files.insert("handshake.json", file(handshake));

    let events = pushes()
        .iter()
        .map(|(n, p)| case(n, "Push", p, push(p, &mut cov), MAX_FRAME_LEN))
        .collect();
    files.insert("events.json", file(events));

    let (headers, replies) = transfers();
    let mut transfer: Vec<J> = headers
        .iter()
        .map(|(n, h)| {
            let json = transfer_header(h, &mut cov);
            case(n, "TransferHeader", h, json, MAX_HELLO_LEN)
        })
        .collect();
    transfer.extend(replies.iter().map(|(n, r)| {
        let json = transfer_reply(r, &mut cov);
        case(n, "TransferReply", r, json, MAX_FRAME_LEN)
    }));
    files.insert("transfer.json", file(transfer));

    files.insert("constants.json", constants());

    cov.check::<Request>("Request");
    cov.check::<Response>("Response");
    cov.check::<Push>("Push");
    cov.check::<EventDetail>("EventDetail");
    cov.check::<GroupEventOp>("GroupEventOp");
    cov.check::<ErrorCode>("ErrorCode");
    cov.check::<Role>("Role");
    cov.check::<ClientFrame>("ClientFrame");
    cov.check::<ServerFrame>("ServerFrame");
    cov.check::<TransferHeader>("TransferHeader");
    cov.check::<TransferReply>("TransferReply");
    // Result<_, ApiError>: both arms, on both frames that carry one.
    let responses = response_frames();
    assert!(responses
        .iter()
        .any(|(_, f)| matches!(f, ServerFrame::Response { result: Ok(_), .. })));
    assert!(responses
        .iter()
        .any(|(_, f)| matches!(f, ServerFrame::Response { result: Err(_), .. })));
    files
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../client/web/test/fixtures")
}

#[test]
fn web_fixtures_match_the_wire_types() {
    let dir = fixture_dir();
    let files = fixtures();
    if std::env::var(UPDATE).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        eprintln!("wrote {} fixture files to {}", files.len(), dir.display());
    }
    let regen = format!(
        "the wire types changed: regenerate with `{UPDATE}=1 cargo test -p convoke-protocol \
         --test web_fixtures`, then make client/web/src/codec/ agree (`npm test` in client/web)"
    );
    for (name, want) in &files {
        let path = dir.join(name);
        let have = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} cannot be read ({e}); {regen}", path.display()));
        if &have != want {
            let line = have
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
            panic!(
                "{} differs from what the protocol types encode (first at line {}: committed {:?}, now {:?}); {regen}",
                path.display(),
                line + 1,
                have.lines().nth(line).unwrap_or("<end>"),
                want.lines().nth(line).unwrap_or("<end>"),
            );
        }
    }
    let mut stale = vec![];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !files.contains_key(name.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} in {} are no longer produced: delete them",
        dir.display()
    );
}

/// The fixtures' bytes decode back to the values with the Rust codec too (so a case is a
/// frame the broker and the Rust client accept).
#[test]
fn fixture_frames_decode_with_the_rust_codec() {
    use bytes::BytesMut;
    use convoke_protocol::codec::decode_frame;
    fn back<T>(name: &str, value: &T)
    where
        T: bincode::Encode + bincode::Decode<()> + PartialEq + std::fmt::Debug,
    {
        let mut buf = BytesMut::from(&frame_bytes(value).unwrap()[..]);
        let got: T = decode_frame(&mut buf, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(&got, value, "{name}");
    }
    for (n, f) in client_frames() {
        back(&n, &f);
    }
    for (n, f) in response_frames() {
        back(&n, &f);
    }
    let (c, s) = handshake_frames();
    c.iter().for_each(|(n, f)| back(n, f));
    s.iter().for_each(|(n, f)| back(n, f));
    for (n, p) in pushes() {
        back(&n, &p);
    }
    let (h, r) = transfers();
    h.iter().for_each(|(n, f)| back(n, f));
    r.iter().for_each(|(n, f)| back(n, f));
}

//! Frame codec: encoding and decoding one request, and encoding one event for fan-out.

#![allow(clippy::unwrap_used, reason = "benchmark setup")]

use bytes::BytesMut;
use convoke_protocol::codec::{decode_frame, encode_frame, frame_bytes, MAX_FRAME_LEN};
use convoke_protocol::handshake::ClientFrame;
use convoke_protocol::{EventDetail, GroupEvent, GroupEventOp, GroupMessage, Push, Request};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let request = ClientFrame::Request {
        id: 42,
        request: Request::MuteGroupMember {
            group_id: "1234567".into(),
            username: vec!["user1".into(), "user2".into()],
            mute_duration: 60_000,
        },
    };
    c.bench_function("encode request frame", |b| {
        let mut buf = BytesMut::with_capacity(256);
        b.iter(|| {
            buf.clear();
            encode_frame(black_box(&request), &mut buf).unwrap();
        })
    });
    let mut encoded = BytesMut::new();
    encode_frame(&request, &mut encoded).unwrap();
    let encoded = encoded.freeze();
    c.bench_function("decode request frame", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&encoded[..]);
            let f: ClientFrame = decode_frame(black_box(&mut buf), MAX_FRAME_LEN)
                .unwrap()
                .unwrap();
            black_box(f);
        })
    });
    let event = Push::Group(GroupEvent {
        operation: GroupEventOp::MuteMember,
        group_id: "1234567".into(),
        group_name: "game night".into(),
        from: "owner".into(),
        users: vec!["user1".into(), "user2".into()],
        detail: EventDetail::Mute {
            expire: 1_800_000_000_000,
        },
        timestamp: 1_800_000_000_000,
    });
    c.bench_function("encode one event for fan-out", |b| {
        b.iter(|| black_box(frame_bytes(black_box(&event)).unwrap()))
    });
    let message = Push::Message(GroupMessage {
        group_id: "1234567".into(),
        msg_id: "99887766".into(),
        seq: 1234,
        from: "alice".into(),
        payload: vec![b'x'; 64],
        timestamp: 1_800_000_000_000,
        allow_group_ack: false,
    });
    c.bench_function("encode one 64-byte message for fan-out", |b| {
        b.iter(|| black_box(frame_bytes(black_box(&message)).unwrap()))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);

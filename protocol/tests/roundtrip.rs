//! Every wire type survives encode -> decode unchanged, and no byte sequence panics the
//! decoder.

use bytes::BytesMut;
use convoke_protocol::codec::{decode_frame, encode_frame, MAX_FRAME_LEN};
use convoke_protocol::handshake::{ClientFrame, Hello, ServerFrame, Welcome};
use convoke_protocol::transfer::{TransferHeader, TransferReply};
use convoke_protocol::{ApiError, ErrorCode, Push, Request, Response, SharedFile};
use proptest::prelude::*;

fn round_trip<T>(value: &T)
where
    T: bincode::Encode + bincode::Decode<()> + PartialEq + std::fmt::Debug,
{
    let mut buf = BytesMut::new();
    encode_frame(value, &mut buf).expect("encodes");
    let back: T = decode_frame(&mut buf, MAX_FRAME_LEN)
        .expect("decodes")
        .expect("complete");
    assert_eq!(&back, value);
    assert!(buf.is_empty());
}

#[test]
fn every_request_round_trips() {
    let examples = Request::examples();
    // One example per method of the contract plus ping, plus the paged mute, block and
    // allow lists.
    assert_eq!(examples.len(), 52);
    let mut methods: Vec<_> = examples.iter().map(|r| r.method()).collect();
    methods.sort();
    methods.dedup();
    assert_eq!(methods.len(), examples.len(), "one example per variant");
    for (id, request) in examples.into_iter().enumerate() {
        round_trip(&ClientFrame::Request {
            id: id as u64,
            request,
        });
    }
}

#[test]
fn every_response_and_error_round_trips() {
    for (id, response) in Response::examples().into_iter().enumerate() {
        round_trip(&ServerFrame::Response {
            id: id as u64,
            result: Ok(response),
        });
    }
    for code in ErrorCode::ALL {
        let err = ApiError::new(code, format!("because {code}"));
        round_trip(&ServerFrame::Response {
            id: 1,
            result: Err(err.clone()),
        });
        round_trip(&ServerFrame::Refused(err));
    }
}

#[test]
fn every_push_round_trips() {
    for push in Push::examples() {
        round_trip(&push);
    }
}

#[test]
fn handshake_and_transfer_frames_round_trip() {
    round_trip(&ClientFrame::Hello(Hello {
        versions: vec![1, 2],
        token: "tok".into(),
        device_id: "phone".into(),
        events: true,
    }));
    round_trip(&ClientFrame::Ack {
        ids: vec![0, 7, u64::MAX],
    });
    round_trip(&ServerFrame::Welcome(Welcome {
        version: 1,
        user_id: "alice".into(),
        app_admin: false,
        session_id: 4,
        server_time: 5,
    }));
    for resume in [false, true] {
        round_trip(&TransferHeader::Upload {
            group_id: "1".into(),
            file_name: "a.bin".into(),
            size: 10,
            content_type: "application/octet-stream".into(),
            upload_id: u64::MAX,
            resume,
        });
    }
    for offset in [0, 7, u64::MAX] {
        round_trip(&TransferHeader::Download {
            group_id: "1".into(),
            file_id: "2".into(),
            secret: Some("s".into()),
            offset,
        });
    }
    round_trip(&TransferReply::Outcome(Err(ApiError::param("x"))));
    let file = SharedFile {
        file_id: "1".into(),
        file_name: "a.txt".into(),
        file_owner: "a".into(),
        file_size: 10,
        created: 3,
        content_type: "text/plain".into(),
        sha256: "00".into(),
        secret: "s".into(),
    };
    round_trip(&TransferReply::Outcome(Ok(file)));
    for offset in [0, 1 << 20, u64::MAX] {
        round_trip(&TransferReply::ResumeAt { offset });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_frame::<ClientFrame>(&mut buf, MAX_FRAME_LEN);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_frame::<ServerFrame>(&mut buf, MAX_FRAME_LEN);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_frame::<Push>(&mut buf, MAX_FRAME_LEN);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_frame::<TransferHeader>(&mut buf, MAX_FRAME_LEN);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_frame::<TransferReply>(&mut buf, MAX_FRAME_LEN);
    }

    #[test]
    fn framed_arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        // A correct length prefix around garbage: the decoder must reach bincode and fail cleanly.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        let _ = decode_frame::<ClientFrame>(&mut buf, MAX_FRAME_LEN);
    }

    #[test]
    fn mutated_valid_frames_never_panic(idx in 0usize..52, pos in any::<usize>(), val in any::<u8>()) {
        let request = Request::examples().swap_remove(idx);
        let mut buf = BytesMut::new();
        encode_frame(&ClientFrame::Request { id: 1, request }, &mut buf).unwrap();
        let at = 4 + pos % (buf.len() - 4);
        buf[at] = val;
        let _ = decode_frame::<ClientFrame>(&mut buf, MAX_FRAME_LEN);
    }
}

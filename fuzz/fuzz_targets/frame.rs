//! The frame decoder on any bytes, as both sides read them: client frames (what the broker
//! decodes from every connection, hello and requests included) and server frames (what the
//! client decodes).
//!
//! The first input byte chooses the read size and the frame limit; the rest is the stream.
//! Checks: never a panic; "need more bytes" consumes nothing; fed in small reads the decoder
//! yields exactly the frames (or the error) it yields on the whole stream at once; a decoded
//! frame re-encodes to a frame that decodes to the same value.
#![no_main]

use bytes::BytesMut;
use convoke_protocol::codec::{decode_frame, encode_frame, FrameError, MAX_FRAME_LEN};
use convoke_protocol::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;

/// Decodes frames from `stream` delivered in reads of `chunk` bytes, until an error or the
/// end; returns the frames and whether it stopped on an error.
fn decode_all<T: bincode::Decode<()> + Debug>(
    stream: &[u8],
    chunk: usize,
    max: usize,
) -> (Vec<T>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        let len_before = buf.len();
        match decode_frame::<T>(&mut buf, max) {
            Ok(Some(v)) => {
                out.push(v);
                continue;
            }
            Ok(None) => {
                assert_eq!(buf.len(), len_before, "need-more-bytes consumed input");
                if fed == stream.len() {
                    return (out, false);
                }
                let end = (fed + chunk).min(stream.len());
                buf.extend_from_slice(&stream[fed..end]);
                fed = end;
            }
            Err(e) => {
                if let FrameError::TooLarge { len, max: m } = e {
                    assert!(len > m && m <= MAX_FRAME_LEN, "TooLarge {len} <= {m}");
                }
                return (out, true);
            }
        }
    }
}

fn round_trip<T: bincode::Encode + bincode::Decode<()> + PartialEq + Debug>(v: &T) {
    let mut buf = BytesMut::new();
    encode_frame(v, &mut buf).expect("a decoded frame re-encodes");
    let back: T = decode_frame(&mut buf, MAX_FRAME_LEN)
        .expect("a re-encoded frame decodes")
        .expect("a re-encoded frame is whole");
    assert_eq!(&back, v, "round trip changed the frame");
    assert!(buf.is_empty(), "round trip left bytes");
}

fn check<T: bincode::Encode + bincode::Decode<()> + PartialEq + Debug>(
    stream: &[u8],
    chunk: usize,
    max: usize,
) {
    let (whole, whole_err) = decode_all::<T>(stream, stream.len().max(1), max);
    let (parts, parts_err) = decode_all::<T>(stream, chunk, max);
    assert_eq!(whole, parts, "read size changed the frames");
    assert_eq!(whole_err, parts_err, "read size changed the outcome");
    for v in &whole {
        round_trip(v);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(ctl & 0x0f) + 1;
    // Mostly the real limit; sometimes a small one, to cover the too-large path.
    let max = if ctl & 0x80 != 0 {
        usize::from(ctl & 0x70) * 4
    } else {
        MAX_FRAME_LEN
    };
    check::<ClientFrame>(stream, chunk, max);
    check::<ServerFrame>(stream, chunk, max);
});

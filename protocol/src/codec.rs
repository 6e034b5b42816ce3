//! Length-prefixed bincode frames.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of bincode (standard
//! configuration, varint integers). The length is checked against the caller's limit before
//! any byte of the body is looked at, and bincode itself is configured with a limit, so a
//! forged length inside the body cannot make the decoder allocate more than a frame's worth.
//! (Measured: bincode 2 without a limit aborts the process on a hostile length prefix.)

use bincode::config::{BigEndian, Configuration, Limit, Varint};
use bincode::{Decode, Encode};
use bytes::{Buf, BufMut, BytesMut};

/// The largest frame body either side accepts, in bytes (4 MiB).
///
/// Large enough for the biggest legal response (getGroupInfo of 100 groups with 8 KiB of ext
/// each), small enough that a hostile peer cannot make us buffer much.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// The largest frame body read before a peer is authenticated (the hello, a transfer
/// header), in bytes (4 KiB): a hello is a token, a device id and a few versions. Decoded
/// with a bincode limit this size too, so a forged length inside a small frame cannot make
/// the decoder allocate more (with [`MAX_FRAME_LEN`] it could claim 4 MiB).
pub const MAX_HELLO_LEN: usize = 4 * 1024;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

type Config<const L: usize> = Configuration<BigEndian, Varint, Limit<L>>;

fn config() -> Config<MAX_FRAME_LEN> {
    config_with::<MAX_FRAME_LEN>()
}

fn config_with<const L: usize>() -> Config<L> {
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<L>()
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more than the allowed maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced (or encoded) body length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The body is not a valid encoding of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The body decoded but left bytes unread.
    #[error("malformed frame: {unread} trailing bytes after the value")]
    Trailing {
        /// Bytes left over.
        unread: usize,
    },
    /// The value could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Appends one frame holding `value` to `dst`.
pub fn encode_frame<T: Encode>(value: &T, dst: &mut BytesMut) -> Result<(), FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut writer = BufMutWriter(dst);
    if let Err(e) = bincode::encode_into_writer(value, &mut writer, config()) {
        dst.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    let len = dst.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        dst.truncate(start);
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: MAX_FRAME_LEN,
    })?;
    dst[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Encodes `value` as one frame in a fresh buffer.
pub fn frame_bytes<T: Encode>(value: &T) -> Result<bytes::Bytes, FrameError> {
    let mut buf = BytesMut::with_capacity(128);
    encode_frame(value, &mut buf)?;
    Ok(buf.freeze())
}

/// Decodes one frame from the front of `src`.
///
/// Returns `Ok(None)` when `src` does not yet hold a whole frame (read more and call again);
/// on success the frame's bytes are removed from `src`. `max` is the largest body accepted,
/// capped at [`MAX_FRAME_LEN`]. Never panics, whatever the bytes.
pub fn decode_frame<T: Decode<()>>(
    src: &mut BytesMut,
    max: usize,
) -> Result<Option<T>, FrameError> {
    decode_limited::<T, MAX_FRAME_LEN>(src, max)
}

/// [`decode_frame`] for frames read before authentication: at most [`MAX_HELLO_LEN`]
/// bytes, and bincode limited to as much, so nothing larger is ever buffered or allocated.
pub fn decode_hello_frame<T: Decode<()>>(src: &mut BytesMut) -> Result<Option<T>, FrameError> {
    decode_limited::<T, MAX_HELLO_LEN>(src, MAX_HELLO_LEN)
}

fn decode_limited<T: Decode<()>, const L: usize>(
    src: &mut BytesMut,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let max = max.min(L);
    let Some(len) = peek_len(src) else {
        return Ok(None);
    };
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if src.len() < HEADER_LEN + len {
        src.reserve(HEADER_LEN + len - src.len());
        return Ok(None);
    }
    let body = &src[HEADER_LEN..HEADER_LEN + len];
    let (value, used) = bincode::decode_from_slice::<T, _>(body, config_with::<L>())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != len {
        return Err(FrameError::Trailing { unread: len - used });
    }
    src.advance(HEADER_LEN + len);
    Ok(Some(value))
}

/// The body length announced by the frame at the front of `src`, if its header is complete.
pub fn peek_len(src: &[u8]) -> Option<usize> {
    let header: [u8; HEADER_LEN] = src.get(..HEADER_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(header) as usize)
}

/// Decodes a complete frame body (without its header), e.g. one read whole from a stream.
pub fn decode_body<T: Decode<()>>(body: &[u8]) -> Result<T, FrameError> {
    let (value, used) = bincode::decode_from_slice::<T, _>(body, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Trailing {
            unread: body.len() - used,
        });
    }
    Ok(value)
}

struct BufMutWriter<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for BufMutWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_header_and_body_are_none() {
        let mut whole = BytesMut::new();
        encode_frame(&(7u64, String::from("hello")), &mut whole).unwrap();
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            let got: Option<(u64, String)> = decode_frame(&mut part, MAX_FRAME_LEN).unwrap();
            assert!(got.is_none(), "cut at {cut}");
            assert_eq!(part.len(), cut, "nothing consumed");
        }
        let got: Option<(u64, String)> = decode_frame(&mut whole, MAX_FRAME_LEN).unwrap();
        assert_eq!(got, Some((7, "hello".to_string())));
        assert!(whole.is_empty());
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading_body() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        let err = decode_frame::<u64>(&mut buf, MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, .. } if len == u32::MAX as usize));
    }

    #[test]
    fn hostile_inner_length_is_an_error_not_an_abort() {
        // A Vec<u8> whose varint length claims u64::MAX elements.
        let mut buf = BytesMut::new();
        let body = [253u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        assert!(decode_frame::<Vec<u8>>(&mut buf, MAX_FRAME_LEN).is_err());
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode_frame::<u8>(&mut buf, MAX_FRAME_LEN),
            Err(FrameError::Trailing { unread: 2 })
        ));
    }

    #[test]
    fn a_hello_frame_is_small_and_its_inner_lengths_too() {
        let mut buf = BytesMut::new();
        buf.put_u32((MAX_HELLO_LEN + 1) as u32);
        let err = decode_hello_frame::<Vec<u8>>(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max, .. } if max == MAX_HELLO_LEN));
        assert!(
            buf.capacity() < MAX_HELLO_LEN,
            "nothing reserved for the body"
        );
        // A small frame whose string claims 1 MiB: a clean error, no 1 MiB allocation.
        let mut buf = BytesMut::new();
        let body = [252u8, 0x00, 0x10, 0x00, 0x00];
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        assert!(matches!(
            decode_hello_frame::<String>(&mut buf),
            Err(FrameError::Malformed(_))
        ));
        let mut buf = BytesMut::new();
        encode_frame(&String::from("hello"), &mut buf).unwrap();
        assert_eq!(
            decode_hello_frame::<String>(&mut buf).unwrap().as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = BytesMut::new();
        encode_frame(&1u32, &mut buf).unwrap();
        encode_frame(&2u32, &mut buf).unwrap();
        assert_eq!(decode_frame::<u32>(&mut buf, 16).unwrap(), Some(1));
        assert_eq!(decode_frame::<u32>(&mut buf, 16).unwrap(), Some(2));
        assert_eq!(decode_frame::<u32>(&mut buf, 16).unwrap(), None);
    }
}

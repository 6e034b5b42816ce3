/**
 * The Convoke wire codec in TypeScript: bincode 2 (standard, big-endian, varints) frames of
 * the protocol crate's types, checked byte for byte against fixtures the Rust code writes.
 */

export { CodecError, type CodecErrorKind } from './errors.js';
export {
  decodeBody,
  decodeFrame,
  encodeBody,
  encodeFrame,
  FrameDecoder,
  HEADER_LEN,
  limitFor,
  MAX_FRAME_LEN,
  MAX_HELLO_LEN,
  peekLen,
  type FrameType,
  type FrameTypes,
} from './frame.js';
export * from './wire.js';
export { type Infer, type Schema } from './schema.js';

/** The protocol version this codec speaks (handshake.rs PROTOCOL_VERSION). */
export const PROTOCOL_VERSION = 3;
/** The versions offered in a hello, newest first (handshake.rs SUPPORTED_VERSIONS). */
export const SUPPORTED_VERSIONS: readonly number[] = [PROTOCOL_VERSION];
/** Most ids in one ack frame (handshake.rs MAX_ACK_IDS). */
export const MAX_ACK_IDS = 1024;
/** The ALPN of a plain QUIC connection (lib.rs ALPN). */
export const ALPN = 'convoke/1';
/** The code a cancelled transfer stream is reset with (transfer.rs CANCELLED). */
export const TRANSFER_CANCELLED = 1;
/** Bytes per read or write of a file's raw bytes (transfer.rs CHUNK_BYTES). */
export const CHUNK_BYTES = 64 * 1024;

/** Why a connection was closed (lib.rs `close`), by code. */
export const CLOSE_CODES = {
  0: 'normal',
  1: 'malformed frame',
  2: 'frame too large',
  3: 'slow consumer',
  4: 'broker shutting down',
  5: 'handshake refused',
  6: 'protocol violation',
  7: 'session limit',
  8: 'token expired',
} as const;

/**
 * Frames, as protocol/src/codec.rs defines them: a 4-byte big-endian body length, then the
 * bincode body. A length over the limit in force is refused as soon as the 4 bytes are
 * there, before any of the body is buffered; a body must decode to exactly one value.
 */

import { CodecError } from './errors.js';
import { Reader } from './reader.js';
import { compile, type Codec } from './schema.js';
import {
  ClientFrameSchema,
  PushSchema,
  RequestSchema,
  ResponseSchema,
  ServerFrameSchema,
  TransferHeaderSchema,
  TransferReplySchema,
  type ClientFrame,
  type Push,
  type Request,
  type Response,
  type ServerFrame,
  type TransferHeader,
  type TransferReply,
} from './wire.js';
import { Writer } from './writer.js';

/** The largest frame body either side accepts (4 MiB; codec.rs MAX_FRAME_LEN). */
export const MAX_FRAME_LEN = 4 * 1024 * 1024;
/** The largest body the broker reads before authentication: the hello, a transfer header. */
export const MAX_HELLO_LEN = 4 * 1024;
/** The length prefix. */
export const HEADER_LEN = 4;

/** The types a frame body can hold, by name. */
export interface FrameTypes {
  ClientFrame: ClientFrame;
  ServerFrame: ServerFrame;
  Push: Push;
  TransferHeader: TransferHeader;
  TransferReply: TransferReply;
  Request: Request;
  Response: Response;
}
export type FrameType = keyof FrameTypes;

const codecs: { [K in FrameType]: Codec<FrameTypes[K]> } = {
  ClientFrame: compile(ClientFrameSchema),
  ServerFrame: compile(ServerFrameSchema),
  Push: compile(PushSchema),
  TransferHeader: compile(TransferHeaderSchema),
  TransferReply: compile(TransferReplySchema),
  Request: compile(RequestSchema),
  Response: compile(ResponseSchema),
};

/**
 * The body limit the broker applies to a value it reads: a hello and a transfer header are
 * read before authentication, at most MAX_HELLO_LEN bytes.
 */
export function limitFor<K extends FrameType>(type: K, value: FrameTypes[K]): number {
  if (type === 'TransferHeader') return MAX_HELLO_LEN;
  if (type === 'ClientFrame' && (value as ClientFrame).type === 'hello') return MAX_HELLO_LEN;
  return MAX_FRAME_LEN;
}

/** Encodes `value` as a frame body (no length prefix). */
export function encodeBody<K extends FrameType>(
  type: K,
  value: FrameTypes[K],
  max = limitFor(type, value),
): Uint8Array {
  const w = new Writer(max, `the ${type} body limit of ${max} bytes`);
  try {
    codecs[type].encode(w, value);
  } catch (e) {
    throw e instanceof CodecError ? e.inType(type) : e;
  }
  return w.finish().slice();
}

/**
 * Encodes `value` as one frame: the 4-byte big-endian body length, then the body. A body
 * over `max` (by default the limit the broker reads it with) is a `tooLarge` error.
 */
export function encodeFrame<K extends FrameType>(
  type: K,
  value: FrameTypes[K],
  max = limitFor(type, value),
): Uint8Array {
  const w = new Writer(HEADER_LEN + max, `the ${type} body limit of ${max} bytes`);
  w.raw(new Uint8Array(HEADER_LEN));
  try {
    codecs[type].encode(w, value);
  } catch (e) {
    throw e instanceof CodecError ? e.inType(type) : e;
  }
  w.patchU32(0, w.pos - HEADER_LEN);
  return w.finish().slice();
}

/** Decodes a whole frame body (without its prefix): exactly one value, no bytes left over. */
export function decodeBody<K extends FrameType>(type: K, body: Uint8Array): FrameTypes[K] {
  if (body.length > MAX_FRAME_LEN) {
    throw new CodecError(
      'tooLarge',
      `body of ${body.length} bytes exceeds the limit of ${MAX_FRAME_LEN} bytes`,
      '',
      0,
      type,
    );
  }
  const r = new Reader(body);
  let value: FrameTypes[K];
  try {
    value = codecs[type].decode(r);
  } catch (e) {
    throw e instanceof CodecError ? e.inType(type) : e;
  }
  if (r.remaining > 0) {
    throw new CodecError(
      'trailing',
      `${r.remaining} trailing byte${r.remaining === 1 ? '' : 's'} after the value`,
      '',
      r.pos,
      type,
    );
  }
  return value;
}

/** The body length announced by the frame at `bytes[offset..]`, if its header is there. */
export function peekLen(bytes: Uint8Array, offset = 0): number | undefined {
  if (bytes.length - offset < HEADER_LEN) return undefined;
  return new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_LEN).getUint32(0);
}

/**
 * Decodes the frame at the front of `bytes`: its value and the bytes it took, or
 * `undefined` when the frame is not complete yet (read more). A length prefix over `max`
 * (capped at MAX_FRAME_LEN) is a `tooLarge` error at once.
 */
export function decodeFrame<K extends FrameType>(
  type: K,
  bytes: Uint8Array,
  max = MAX_FRAME_LEN,
): { value: FrameTypes[K]; size: number } | undefined {
  const limit = Math.min(max, MAX_FRAME_LEN);
  const len = peekLen(bytes);
  if (len === undefined) return undefined;
  if (len > limit) {
    throw new CodecError(
      'tooLarge',
      `frame of ${len} bytes exceeds the limit of ${limit} bytes`,
      '',
      0,
      type,
    );
  }
  if (bytes.length < HEADER_LEN + len) return undefined;
  const value = decodeBody(type, bytes.subarray(HEADER_LEN, HEADER_LEN + len));
  return { value, size: HEADER_LEN + len };
}

/**
 * Splits a byte stream into frames: `push` each chunk as it arrives, then take the
 * complete frames with `next` until it returns undefined. Holds at most one frame's bytes
 * beyond what was taken; a length over the limit throws before its body is buffered, and
 * after any error the decoder is unusable (close the stream).
 */
export class FrameDecoder<K extends FrameType> {
  private buf = new Uint8Array(0);
  private start = 0;
  private end = 0;
  private failed: CodecError | undefined;

  constructor(
    readonly type: K,
    readonly max = MAX_FRAME_LEN,
  ) {}

  /** Bytes received and not yet taken as frames. */
  get buffered(): number {
    return this.end - this.start;
  }

  push(chunk: Uint8Array): void {
    if (this.failed) throw this.failed;
    if (chunk.length === 0) return;
    if (this.end + chunk.length > this.buf.length) {
      const live = this.end - this.start;
      const need = live + chunk.length;
      if (need <= this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const next = new Uint8Array(Math.max(need, this.buf.length * 2, 1024));
        next.set(this.buf.subarray(this.start, this.end));
        this.buf = next;
      }
      this.start = 0;
      this.end = live;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /**
   * Takes the bytes received past the frames taken so far (e.g. a download's raw bytes
   * after its outcome frame); the decoder is empty afterwards.
   */
  takeBuffered(): Uint8Array {
    const rest = this.buf.slice(this.start, this.end);
    this.start = 0;
    this.end = 0;
    return rest;
  }

  /** The next complete frame's value, or undefined until more bytes arrive. */
  next(): FrameTypes[K] | undefined {
    if (this.failed) throw this.failed;
    try {
      const got = decodeFrame(this.type, this.buf.subarray(this.start, this.end), this.max);
      if (!got) return undefined;
      this.start += got.size;
      if (this.start === this.end) {
        this.start = 0;
        this.end = 0;
      }
      return got.value;
    } catch (e) {
      if (e instanceof CodecError) this.failed = e;
      throw e;
    }
  }
}

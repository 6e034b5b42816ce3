/**
 * Writing bincode 2 primitives, the mirror of reader.ts. The buffer grows as needed up to
 * a cap (the frame limit), so encoding an oversized value stops as soon as it passes the
 * cap instead of building it whole.
 */

import { CodecError } from './errors.js';

const utf8 = new TextEncoder();
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const MAX_U64 = (1n << 64n) - 1n;

function bad(detail: string): never {
  throw new CodecError('badValue', detail);
}

export class Writer {
  private buf: Uint8Array;
  private view: DataView;
  pos = 0;

  constructor(
    /** Bytes after which writing fails with `tooLarge`. */
    readonly cap: number,
    /** What the cap is, for the error message. */
    readonly capName = `the limit of ${cap} bytes`,
    initial = 256,
  ) {
    this.buf = new Uint8Array(Math.min(initial, cap));
    this.view = new DataView(this.buf.buffer);
  }

  private room(n: number): void {
    const end = this.pos + n;
    if (end > this.cap) {
      throw new CodecError('tooLarge', `encoded value exceeds ${this.capName}`);
    }
    if (end <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < end) size *= 2;
    const next = new Uint8Array(Math.min(size, this.cap));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** The bytes written so far (a view; copy it to keep it beyond the next write). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  byte(b: number): void {
    this.room(1);
    this.buf[this.pos++] = b;
  }

  raw(bytes: Uint8Array): void {
    this.room(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** Overwrites 4 bytes at `at` with a big-endian u32 (the frame header). */
  patchU32(at: number, v: number): void {
    this.view.setUint32(at, v);
  }

  /** An unsigned varint of at most 64 bits, in the shortest form (as bincode writes it). */
  varint(v: number | bigint): void {
    if (typeof v === 'number') {
      if (v <= 250) {
        this.byte(v);
      } else if (v <= 0xffff) {
        this.room(3);
        this.buf[this.pos] = 251;
        this.view.setUint16(this.pos + 1, v);
        this.pos += 3;
      } else if (v <= 0xffffffff) {
        this.room(5);
        this.buf[this.pos] = 252;
        this.view.setUint32(this.pos + 1, v);
        this.pos += 5;
      } else {
        this.varint(BigInt(v));
      }
      return;
    }
    if (v <= 0xffffffffn) {
      this.varint(Number(v));
      return;
    }
    this.room(9);
    this.buf[this.pos] = 253;
    this.view.setBigUint64(this.pos + 1, v);
    this.pos += 9;
  }

  bool(v: unknown): void {
    if (typeof v !== 'boolean') bad(`expected a boolean, got ${show(v)}`);
    this.byte(v ? 1 : 0);
  }

  u32(v: unknown): void {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      bad(`expected an integer from 0 to 4294967295 (u32), got ${show(v)}`);
    }
    this.varint(v);
  }

  /** A u64 from its decimal string (as the codec decodes it), a bigint or a safe integer. */
  u64(v: unknown): void {
    this.varint(toU64(v));
  }

  i64(v: unknown): void {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
      bad(`expected an integer within ±(2^53-1) (i64), got ${show(v)}`);
    }
    // Zigzag: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ... (in bigint beyond 2^31: 2|v| may not be
    // exact in floating point).
    if (v >= 0 && v <= 0x7fffffff) {
      this.varint(v * 2);
    } else if (v < 0 && v >= -0x80000000) {
      this.varint(-v * 2 - 1);
    } else {
      const b = BigInt(v);
      this.varint(b >= 0n ? b * 2n : -b * 2n - 1n);
    }
  }

  string(v: unknown): void {
    const bytes = utf8Bytes(v);
    this.varint(bytes.length);
    this.raw(bytes);
  }

  bytes(v: unknown): void {
    if (!(v instanceof Uint8Array)) bad(`expected a Uint8Array, got ${show(v)}`);
    this.varint(v.length);
    this.raw(v);
  }
}

/**
 * The UTF-8 bytes of a string; a lone UTF-16 surrogate is an error (TextEncoder would
 * silently write U+FFFD in its place).
 */
export function utf8Bytes(v: unknown): Uint8Array {
  if (typeof v !== 'string') bad(`expected a string, got ${show(v)}`);
  if (LONE_SURROGATE.test(v)) {
    throw new CodecError(
      'badUtf8',
      `string ${show(v)} has a lone UTF-16 surrogate (not encodable as UTF-8)`,
    );
  }
  return utf8.encode(v);
}

/** A u64 from a decimal string, a bigint or a non-negative safe integer. */
export function toU64(v: unknown): bigint | number {
  if (typeof v === 'string') {
    if (!/^(0|[1-9][0-9]{0,19})$/.test(v)) {
      bad(`expected a u64 as a decimal string, got ${show(v)}`);
    }
    const n = BigInt(v);
    if (n > MAX_U64) bad(`${v} is above the largest u64 (18446744073709551615)`);
    return n;
  }
  if (typeof v === 'bigint') {
    if (v < 0n || v > MAX_U64) bad(`${v} is outside the u64 range`);
    return v;
  }
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  return bad(`expected a u64 (a decimal string, a bigint or a non-negative safe integer), got ${show(v)}`);
}

/** A short rendering of a value for error messages. */
export function show(v: unknown): string {
  if (typeof v === 'string') {
    const cut = v.length > 32 ? v.slice(0, 32) + '...' : v;
    return JSON.stringify(cut) + (v.length > 32 ? ` (${v.length} chars)` : '');
  }
  if (typeof v === 'bigint') return `${v}n`;
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (v instanceof Uint8Array) return `Uint8Array(${v.length})`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'object') return 'an object';
  return String(v);
}

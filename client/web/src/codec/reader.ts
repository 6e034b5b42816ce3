/**
 * Reading bincode 2 primitives as `protocol/src/codec.rs` configures it
 * (`standard().with_big_endian()`): varint integers (0-250 in one byte; 251, 252, 253 then
 * a big-endian u16, u32, u64), zigzag for signed integers, one byte for bool and for the
 * option tag, a varint length before strings, byte vectors, lists and maps.
 *
 * Every read checks the bytes left first, so a truncated or forged body is an error at
 * once: a length is compared with the bytes that remain before anything is allocated, and
 * every element takes at least one byte, so nothing loops longer than the body is long.
 */

import { CodecError } from './errors.js';

const U16_BYTE = 251;
const U32_BYTE = 252;
const U64_BYTE = 253;
const U128_BYTE = 254;

/** 2^53 - 1 as a bigint, the largest integer a JS number holds exactly. */
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export class Reader {
  private readonly view: DataView;
  pos = 0;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.bytes.length - this.pos;
  }

  fail(kind: CodecError['kind'], detail: string, offset = this.pos): never {
    throw new CodecError(kind, detail, '', offset);
  }

  private need(n: number, what: string): void {
    if (this.remaining < n) {
      this.fail(
        'truncated',
        `${what} needs ${n} byte${n === 1 ? '' : 's'}, only ${this.remaining} left`,
      );
    }
  }

  byte(what: string): number {
    this.need(1, what);
    return this.bytes[this.pos++]!;
  }

  bool(): boolean {
    const b = this.byte('bool');
    if (b > 1) this.fail('badBool', `bool byte is ${b}, not 0 or 1`, this.pos - 1);
    return b === 1;
  }

  /** The varint's marker byte and its value as a number (safe below 2^32) or a bigint. */
  private varint(type: 'u32' | 'u64'): number | bigint {
    const start = this.pos;
    const first = this.byte(type);
    if (first <= 250) return first;
    switch (first) {
      case U16_BYTE: {
        this.need(2, `${type} varint (u16 form)`);
        const v = this.view.getUint16(this.pos);
        this.pos += 2;
        return v;
      }
      case U32_BYTE: {
        this.need(4, `${type} varint (u32 form)`);
        const v = this.view.getUint32(this.pos);
        this.pos += 4;
        return v;
      }
      case U64_BYTE: {
        if (type === 'u32') {
          this.fail('varintOverflow', 'u32 varint in the u64 form (marker 253)', start);
        }
        this.need(8, `${type} varint (u64 form)`);
        const v = this.view.getBigUint64(this.pos);
        this.pos += 8;
        return v <= SAFE ? Number(v) : v;
      }
      case U128_BYTE:
        return this.fail('varintOverflow', `${type} varint in the u128 form (marker 254)`, start);
      default:
        return this.fail('varintOverflow', `varint marker ${first} is reserved`, start);
    }
  }

  u32(): number {
    return this.varint('u32') as number;
  }

  /** A u64 as its decimal string (ids and sequence numbers beyond 2^53 stay exact). */
  u64(): string {
    return String(this.varint('u64'));
  }

  /** An i64 (zigzag), as a number: one JS cannot hold exactly is an error, not a rounding. */
  i64(): number {
    const start = this.pos;
    const z = this.varint('u64');
    if (typeof z === 'number') {
      // Below 2^53: exact in floating point.
      return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
    }
    const v = (z >> 1n) ^ -(z & 1n);
    if (v > SAFE || v < -SAFE) {
      this.fail('outOfRange', `i64 ${v} is beyond what a JS number holds exactly (±(2^53-1))`, start);
    }
    return Number(v);
  }

  /**
   * A container length. Each element takes at least `minElement` bytes, so a length the
   * remaining bytes cannot hold is refused here, before any element is read.
   */
  len(what: string, minElement = 1): number {
    const start = this.pos;
    const n = this.varint('u64');
    if (typeof n === 'bigint' || n * minElement > this.remaining) {
      this.fail(
        'truncated',
        `${what} of length ${n} cannot fit in the ${this.remaining} bytes left`,
        start,
      );
    }
    return n;
  }

  take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string(): string {
    const n = this.len('string');
    const start = this.pos;
    const raw = this.take(n, 'string');
    try {
      return utf8.decode(raw);
    } catch {
      return this.fail('badUtf8', `string of ${n} bytes is not valid UTF-8`, start);
    }
  }

  /** A byte vector, copied (the frame buffer it came from may be reused). */
  bytesVec(): Uint8Array {
    const n = this.len('bytes');
    return this.take(n, 'bytes').slice();
  }

  /** The option tag: false for None, true for Some. */
  option(): boolean {
    const b = this.byte('option tag');
    if (b > 1) this.fail('badVariant', `option tag ${b}, not 0 (None) or 1 (Some)`, this.pos - 1);
    return b === 1;
  }

  /** An enum's variant index (a u32 varint), checked against the number of variants. */
  variant(type: string, count: number): number {
    const start = this.pos;
    const v = this.u32();
    if (v >= count) {
      this.fail('badVariant', `${type} has no variant ${v} (it has ${count})`, start);
    }
    return v;
  }
}

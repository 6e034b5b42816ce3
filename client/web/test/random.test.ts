/**
 * Randomized: values generated from the schemas round-trip (encode, decode, encode again:
 * the same value and the same bytes), and mutated or cut fixture frames either decode or
 * throw a CodecError, never anything else. Seeded: `CONVOKE_SEED=<n> npm test` replays a
 * failure (the seed is in the test name).
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ClientFrameSchema,
  CodecError,
  decodeBody,
  encodeBody,
  PushSchema,
  ServerFrameSchema,
  TransferHeaderSchema,
  TransferReplySchema,
  type FrameType,
  type Schema,
} from '../src/index.js';
import { allCases, fromHex, rng } from './support.js';

const SEED = Number(process.env.CONVOKE_SEED ?? Date.now() % 1_000_000_007);
const next = rng(SEED);
const int = (n: number) => Math.floor(next() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

const STRINGS = ['', 'a', 'héllo', '世界', '🎉', '\ufeff', '\u0000', '__proto__', '10', '9', 'constructor'];
const U64S = ['0', '250', '251', '65535', '65536', '4294967295', '4294967296', '9007199254740993', '18446744073709551615'];

function randomString(): string {
  switch (int(4)) {
    case 0:
      return pick(STRINGS);
    case 1:
      return 'x'.repeat(int(400));
    default: {
      let s = '';
      const n = int(12);
      for (let i = 0; i < n; i++) s += pick(STRINGS);
      return s;
    }
  }
}

function randomU64(): string {
  return int(2) === 0 ? pick(U64S) : String(BigInt(int(2 ** 32)) * BigInt(int(2 ** 32)) + BigInt(int(2 ** 32)));
}

function randomI64(): number {
  const edges = [0, -1, 1, 125, -126, 126, 2 ** 31, -(2 ** 31) - 1, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER];
  return int(2) === 0 ? pick(edges) : Math.floor((next() - 0.5) * 2 * Number.MAX_SAFE_INTEGER);
}

function randomValue(s: Schema, depth = 0): unknown {
  switch (s.t) {
    case 'bool':
      return int(2) === 1;
    case 'u32':
      return int(2) === 0 ? pick([0, 250, 251, 65535, 65536, 4294967295]) : int(2 ** 32);
    case 'u64':
      return randomU64();
    case 'i64':
      return randomI64();
    case 'string':
      return randomString();
    case 'bytes':
      return Uint8Array.from({ length: int(300) }, () => int(256));
    case 'code':
      return pick(s.codes)[0];
    case 'opt':
      return int(2) === 0 ? null : randomValue(s.of, depth + 1);
    case 'vec':
      return Array.from({ length: int(depth > 2 ? 2 : 5) }, () => randomValue(s.of, depth + 1));
    case 'map': {
      const out: Record<string, unknown> = {};
      const n = int(5);
      for (let i = 0; i < n; i++) {
        Object.defineProperty(out, randomString(), { value: randomValue(s.of, depth + 1), enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
    case 'struct': {
      const out: Record<string, unknown> = {};
      for (const [k, f] of Object.entries(s.fields)) out[k] = randomValue(f, depth + 1);
      return out;
    }
    case 'enum': {
      const [name, fields] = pick(Object.entries(s.variants));
      const out: Record<string, unknown> = { [s.tag]: name };
      for (const [k, f] of Object.entries(fields)) out[k] = randomValue(f, depth + 1);
      return out;
    }
    case 'names':
      return pick(s.names);
    case 'result':
      return int(2) === 0 ? { ok: true, value: randomValue(s.ok, depth + 1) } : { ok: false, error: randomValue(s.err, depth + 1) };
  }
}

const TYPES: [FrameType, Schema][] = [
  ['ClientFrame', ClientFrameSchema],
  ['ServerFrame', ServerFrameSchema],
  ['Push', PushSchema],
  ['TransferHeader', TransferHeaderSchema],
  ['TransferReply', TransferReplySchema],
];

test(`random values round-trip byte for byte (seed ${SEED})`, () => {
  let n = 0;
  for (let i = 0; i < 3000; i++) {
    const [type, schema] = pick(TYPES);
    const value = randomValue(schema);
    let bytes: Uint8Array;
    try {
      bytes = encodeBody(type, value as never, 4 * 1024 * 1024);
    } catch (e) {
      assert.fail(`seed ${SEED} case ${i}: ${type} did not encode: ${String(e)}`);
    }
    const back = decodeBody(type, bytes);
    assert.deepStrictEqual(back, value, `seed ${SEED} case ${i}`);
    assert.deepStrictEqual(encodeBody(type, back as never, 4 * 1024 * 1024), bytes, `seed ${SEED} case ${i}: re-encoded`);
    n++;
  }
  assert.equal(n, 3000);
});

test(`mutated and cut fixture frames decode or throw a CodecError (seed ${SEED})`, () => {
  const cases = allCases().filter((c) => c.hex.length < 4096);
  const outcomes = { decoded: 0, refused: 0 };
  for (let i = 0; i < 20000; i++) {
    const c = pick(cases);
    const body = fromHex(c.hex).slice(4);
    const flips = 1 + int(3);
    for (let f = 0; f < flips && body.length > 0; f++) {
      body[int(body.length)] = int(3) === 0 ? pick([0, 1, 250, 251, 252, 253, 254, 255]) : int(256);
    }
    const cut = int(4) === 0 ? body.subarray(0, int(body.length + 1)) : body;
    try {
      decodeBody(c.type, cut);
      outcomes.decoded++;
    } catch (e) {
      assert.ok(e instanceof CodecError, `seed ${SEED} case ${i} (${c.name}): ${String(e)}`);
      assert.ok(e.message.length > 0);
      outcomes.refused++;
    }
  }
  assert.ok(outcomes.decoded > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
});

/** Shared by the node tests: the golden fixtures and small helpers. */

import { readFileSync } from 'node:fs';

/** One golden case: a value of `type` and its frame's bytes, as the Rust codec wrote them. */
export interface Case {
  name: string;
  type: 'ClientFrame' | 'ServerFrame' | 'Push' | 'TransferHeader' | 'TransferReply';
  value: unknown;
  hex: string;
}

/** The fixture directory (the tests run from build/test/). */
export const FIXTURES = new URL('../../test/fixtures/', import.meta.url);

export const FAMILIES = ['requests', 'responses', 'handshake', 'events', 'transfer'] as const;

/** `{"$bytes": hex}` in a fixture is a Uint8Array in the value. */
function revive(_key: string, v: unknown): unknown {
  if (
    typeof v === 'object' &&
    v !== null &&
    Object.keys(v).length === 1 &&
    typeof (v as { $bytes?: unknown }).$bytes === 'string'
  ) {
    return fromHex((v as { $bytes: string }).$bytes);
  }
  return v;
}

export function loadCases(family: (typeof FAMILIES)[number]): Case[] {
  const text = readFileSync(new URL(`${family}.json`, FIXTURES), 'utf8');
  return (JSON.parse(text, revive) as { cases: Case[] }).cases;
}

export function allCases(): Case[] {
  return FAMILIES.flatMap((f) => loadCases(f));
}

export function loadConstants(): Record<string, unknown> {
  return JSON.parse(readFileSync(new URL('constants.json', FIXTURES), 'utf8')) as Record<
    string,
    unknown
  >;
}

export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || /[^0-9a-f]/.test(hex)) throw new Error(`bad hex ${hex.slice(0, 40)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A frame: the 4-byte big-endian length of `body`, then `body`. */
export function frame(body: number[] | Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

/** A small seeded PRNG (mulberry32), so a failing random case can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

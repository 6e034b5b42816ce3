/**
 * The golden fixtures (written by protocol/tests/web_fixtures.rs from the Rust types and
 * codec): every case decodes to its value and encodes back to the same bytes, byte for byte.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ALPN,
  CHUNK_BYTES,
  CLOSE_CODES,
  decodeFrame,
  encodeFrame,
  ERROR_CODES,
  GROUP_EVENT_OPS,
  HEADER_LEN,
  MAX_ACK_IDS,
  MAX_FRAME_LEN,
  MAX_HELLO_LEN,
  PROTOCOL_VERSION,
  RequestSchema,
  ResponseSchema,
  SUPPORTED_VERSIONS,
  TRANSFER_CANCELLED,
  type Request,
} from '../src/index.js';
import { FAMILIES, fromHex, loadCases, loadConstants, toHex } from './support.js';

for (const family of FAMILIES) {
  describe(`fixtures/${family}.json`, () => {
    const cases = loadCases(family);
    test('has cases', () => assert.ok(cases.length > 0));
    for (const c of cases) {
      test(`${c.type} ${c.name}: decodes to the value`, () => {
        const bytes = fromHex(c.hex);
        const got = decodeFrame(c.type, bytes);
        assert.ok(got, 'a whole frame');
        assert.equal(got.size, bytes.length);
        assert.deepStrictEqual(got.value, c.value);
      });
      test(`${c.type} ${c.name}: encodes to the same bytes`, () => {
        const bytes = encodeFrame(c.type, c.value as never);
        assert.equal(toHex(bytes), c.hex);
      });
    }
  });
}

describe('fixtures cover the schemas', () => {
  test('every request method and response type has a case', () => {
    const requests = new Set(
      loadCases('requests').map((c) => (c.value as { request: Request }).request.method),
    );
    assert.deepEqual([...requests].sort(), Object.keys(RequestSchema.variants).sort());
    const responses = new Set(
      loadCases('responses')
        .map((c) => (c.value as { result: { ok: boolean; value?: { type: string } } }).result)
        .filter((r) => r.ok)
        .map((r) => r.value!.type),
    );
    assert.deepEqual([...responses].sort(), Object.keys(ResponseSchema.variants).sort());
  });

  test('the 52 request methods of the Rust enum', () => {
    assert.equal(Object.keys(RequestSchema.variants).length, 52);
  });
});

describe('constants.json', () => {
  const k = loadConstants();
  test('frame limits and versions', () => {
    assert.equal(k.maxFrameLen, MAX_FRAME_LEN);
    assert.equal(k.maxHelloLen, MAX_HELLO_LEN);
    assert.equal(k.headerLen, HEADER_LEN);
    assert.equal(k.protocolVersion, PROTOCOL_VERSION);
    assert.deepEqual(k.supportedVersions, SUPPORTED_VERSIONS);
    assert.equal(k.maxAckIds, MAX_ACK_IDS);
    assert.equal(k.alpn, ALPN);
    assert.equal(k.transferCancelled, TRANSFER_CANCELLED);
    assert.equal(k.chunkBytes, CHUNK_BYTES);
  });
  test('error codes in the Rust variant order', () => {
    assert.deepEqual(
      k.errorCodes,
      ERROR_CODES.map(([code, name]) => ({ code, name })),
    );
  });
  test('group event operations in the Rust variant order', () => {
    assert.deepEqual(k.groupEventOps, [...GROUP_EVENT_OPS]);
  });
  test('roles and close codes', () => {
    assert.deepEqual(k.roles, ['owner', 'admin', 'member']);
    assert.deepEqual(
      k.closeCodes,
      Object.entries(CLOSE_CODES).map(([code, name]) => ({ code: Number(code), name })),
    );
  });
});

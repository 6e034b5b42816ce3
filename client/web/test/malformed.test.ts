/**
 * Malformed input: every kind gives a CodecError that names what is wrong (its kind, the
 * path in the value, the byte offset), never a hang or a silently wrong value. The same
 * for values the encoder cannot write faithfully.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CodecError,
  decodeBody,
  decodeFrame,
  encodeBody,
  encodeFrame,
  FrameDecoder,
  MAX_FRAME_LEN,
  MAX_HELLO_LEN,
  type CodecErrorKind,
  type FrameType,
} from '../src/index.js';
import { allCases, frame, fromHex } from './support.js';

/** Asserts `f` throws a CodecError of `kind` whose message contains every `parts`. */
function throwsCodec(f: () => unknown, kind: CodecErrorKind, ...parts: string[]): CodecError {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof CodecError, `expected a CodecError, got ${String(caught)}`);
  assert.equal(caught.kind, kind, caught.message);
  for (const p of parts) assert.ok(caught.message.includes(p), `${JSON.stringify(p)} in: ${caught.message}`);
  return caught;
}

const decode = (type: FrameType, body: number[]) => () => decodeBody(type, new Uint8Array(body));

// A ClientFrame::Request (1) with id 7, then the request variant and its fields.
const req = (variant: number, ...fields: number[]) => [1, 7, variant, ...fields];
const str = (s: string) => {
  const b = new TextEncoder().encode(s);
  return [b.length, ...b];
};

describe('truncated', () => {
  test('every prefix of every fixture body is an error (or, for a frame, "need more")', () => {
    let checked = 0;
    for (const c of allCases()) {
      const bytes = fromHex(c.hex);
      if (bytes.length > 2048) continue; // the 8 KiB cases: the same code paths, slower
      const body = bytes.subarray(4);
      for (let cut = 0; cut < body.length; cut++) {
        const e = throwsCodec(() => decodeBody(c.type, body.subarray(0, cut)), 'truncated');
        assert.ok(e.offset >= 0 && e.offset <= cut, `${c.name} cut ${cut}: offset ${e.offset}`);
        checked++;
      }
      for (let cut = 0; cut < bytes.length; cut++) {
        assert.equal(decodeFrame(c.type, bytes.subarray(0, cut)), undefined, `${c.name} cut ${cut}`);
      }
    }
    assert.ok(checked > 10_000, `${checked} prefixes`);
  });

  test('the message says what needed how many bytes', () => {
    throwsCodec(decode('ClientFrame', req(0, 253, 1, 2)), 'truncated', 'u64 varint (u64 form) needs 8 bytes, only 2 left');
    throwsCodec(decode('ClientFrame', req(2, 5, 0x61)), 'truncated', 'string of length 5 cannot fit in the 1 bytes left', '.groupId');
  });

  test('a length beyond the body is refused before anything is read or allocated', () => {
    // getGroupInfo with a list of 2^40 ids, and a string of 2^63 bytes.
    const start = performance.now();
    throwsCodec(decode('ClientFrame', req(3, 253, 0, 0, 1, 0, 0, 0, 0, 0)), 'truncated', 'list of length 1099511627776');
    throwsCodec(decode('ClientFrame', req(2, 253, 0x80, 0, 0, 0, 0, 0, 0, 0)), 'truncated', 'string of length 9223372036854775808');
    // A map of 3 entries in 5 bytes: each entry takes at least 2.
    throwsCodec(decode('Response', [12, 3, 0, 0, 0, 0, 0]), 'truncated', 'map of length 3');
    assert.ok(performance.now() - start < 100);
  });
});

describe('over the limit', () => {
  test('a length prefix over 4 MiB is refused from its 4 bytes alone', () => {
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, MAX_FRAME_LEN + 1);
    throwsCodec(() => decodeFrame('ServerFrame', header), 'tooLarge', `frame of ${MAX_FRAME_LEN + 1} bytes exceeds the limit of ${MAX_FRAME_LEN} bytes`);
    new DataView(header.buffer).setUint32(0, 0xffffffff);
    throwsCodec(() => decodeFrame('Push', header), 'tooLarge', '4294967295');
    // Exactly the limit is fine (and needs its body).
    new DataView(header.buffer).setUint32(0, MAX_FRAME_LEN);
    assert.equal(decodeFrame('Push', header), undefined);
  });

  test('a smaller limit given by the caller applies, capped at 4 MiB', () => {
    const f = frame([0, 0]);
    throwsCodec(() => decodeFrame('ClientFrame', f, 1), 'tooLarge', 'frame of 2 bytes exceeds the limit of 1 bytes');
  });

  test('the encoder refuses a body over 4 MiB, and a hello or transfer header over 4 KiB', () => {
    const payload = new Uint8Array(MAX_FRAME_LEN);
    throwsCodec(
      () =>
        encodeFrame('ClientFrame', {
          type: 'request',
          id: '1',
          request: { method: 'sendGroupMessage', groupId: '1', payload, allowGroupAck: false, clientMsgId: null },
        }),
      'tooLarge',
      `ClientFrame body limit of ${MAX_FRAME_LEN} bytes`,
    );
    const hello = { type: 'hello' as const, hello: { versions: [3], token: 'x'.repeat(MAX_HELLO_LEN), deviceId: 'd', events: true } };
    throwsCodec(() => encodeFrame('ClientFrame', hello), 'tooLarge', `limit of ${MAX_HELLO_LEN} bytes`);
    throwsCodec(
      () =>
        encodeFrame('TransferHeader', {
          type: 'download',
          groupId: '1',
          fileId: '2',
          secret: 's'.repeat(MAX_HELLO_LEN),
          offset: '0',
        }),
      'tooLarge',
      `TransferHeader body limit of ${MAX_HELLO_LEN} bytes`,
    );
    // Just under the 4 MiB limit encodes, and decodes back.
    const fits = new Uint8Array(MAX_FRAME_LEN - 100);
    const bytes = encodeFrame('ClientFrame', {
      type: 'request',
      id: '1',
      request: { method: 'sendGroupMessage', groupId: '1', payload: fits, allowGroupAck: false, clientMsgId: null },
    });
    const back = decodeFrame('ClientFrame', bytes);
    assert.ok(back && back.value.type === 'request' && back.value.request.method === 'sendGroupMessage');
    assert.equal(back.value.request.payload.length, fits.length);
  });
});

describe('bad variant index', () => {
  test('each enum names itself and its variant count', () => {
    throwsCodec(decode('ClientFrame', [3]), 'badVariant', 'ClientFrame has no variant 3 (it has 3)', 'at byte 0');
    throwsCodec(decode('ClientFrame', req(52)), 'badVariant', 'Request has no variant 52 (it has 52)', 'ClientFrame(request).request', 'at byte 2');
    throwsCodec(decode('ServerFrame', [2, 1, 2]), 'badVariant', 'Result has no variant 2');
    throwsCodec(decode('ServerFrame', [1, 21, 0]), 'badVariant', 'ErrorCode has no variant 21 (it has 21)', '.error.code');
    throwsCodec(decode('Push', [0, 28]), 'badVariant', 'GroupEventOp has no variant 28', '.event.operation');
    throwsCodec(decode('Response', [4, 1, 1, 0x61, 3, 0]), 'badVariant', 'Role has no variant 3', '.members[0].role');
    throwsCodec(decode('Push', [0, 0, 0, 0, 0, 0, 9, 0]), 'badVariant', 'EventDetail has no variant 9');
    throwsCodec(decode('TransferReply', [2]), 'badVariant', 'TransferReply has no variant 2');
    throwsCodec(decode('TransferHeader', [2]), 'badVariant', 'TransferHeader has no variant 2');
    throwsCodec(decode('Response', [21]), 'badVariant', 'Response has no variant 21');
    // A variant index in a wide varint form is still just an index.
    throwsCodec(decode('ClientFrame', [252, 0, 1, 0, 0]), 'badVariant', 'no variant 65536');
  });

  test('an option tag other than 0 or 1', () => {
    // getPublicGroups { limit 5, cursor: tag 2 }
    throwsCodec(decode('ClientFrame', req(42, 5, 2)), 'badVariant', 'option tag 2', '.cursor', 'at byte 4');
  });

  test('a bool byte other than 0 or 1', () => {
    throwsCodec(decode('Response', [7, 2]), 'badBool', 'bool byte is 2', '(joinResult).joined');
  });
});

describe('bad UTF-8', () => {
  const cases: [string, number[]][] = [
    ['invalid byte', [0xff]],
    ['overlong NUL', [0xc0, 0x80]],
    ['UTF-16 surrogate', [0xed, 0xa0, 0x80]],
    ['cut multi-byte', [0xe2, 0x82]],
    ['above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
  ];
  for (const [what, bytes] of cases) {
    test(what, () => {
      throwsCodec(
        decode('ClientFrame', req(2, bytes.length, ...bytes)),
        'badUtf8',
        `string of ${bytes.length} bytes is not valid UTF-8`,
        '(destroyGroup).groupId',
        'at byte 4',
      );
    });
  }

  test('a byte-order mark is kept, not stripped', () => {
    const v = decodeBody('ClientFrame', new Uint8Array(req(2, ...str('\ufeffx'))));
    assert.deepEqual(v, { type: 'request', id: '7', request: { method: 'destroyGroup', groupId: '\ufeffx' } });
  });

  test('the encoder refuses a lone surrogate instead of writing U+FFFD', () => {
    throwsCodec(
      () => encodeBody('Request', { method: 'destroyGroup', groupId: 'a\ud800b' }),
      'badUtf8',
      'lone UTF-16 surrogate',
      'Request(destroyGroup).groupId',
    );
    throwsCodec(
      () => encodeBody('Request', { method: 'setGroupMemberAttributes', groupId: '1', userId: 'u', memberAttributes: { ['\udc00']: 'v' } }),
      'badUtf8',
      '.memberAttributes{key',
    );
  });
});

describe('varint overflow', () => {
  test('a u32 in the u64 form', () => {
    // listGroupMembers { groupId "1", pageNum: 253 + 8 bytes }
    throwsCodec(decode('ClientFrame', req(6, 1, 0x31, 253, 0, 0, 0, 0, 0, 0, 0, 1, 1)), 'varintOverflow', 'u32 varint in the u64 form (marker 253)', '.pageNum', 'at byte 5');
  });
  test('a u64 in the u128 form', () => {
    throwsCodec(decode('ClientFrame', [1, 254, ...new Array(16).fill(0)]), 'varintOverflow', 'u64 varint in the u128 form (marker 254)', '(request).id');
  });
  test('the reserved marker 255', () => {
    throwsCodec(decode('ClientFrame', [1, 255]), 'varintOverflow', 'varint marker 255 is reserved');
    throwsCodec(decode('ClientFrame', [255]), 'varintOverflow', 'varint marker 255 is reserved');
  });
  test('an i64 beyond 2^53 is refused, not rounded', () => {
    // pong { nonce 0, serverTime: zigzag(2^53) = 2^54 }
    const z = [253, 0, 0x40, 0, 0, 0, 0, 0, 0];
    throwsCodec(decode('Response', [1, 0, ...z]), 'outOfRange', 'i64 9007199254740992 is beyond', '(pong).serverTime');
    // zigzag(-(2^53-1)) = 2^54 - 3 is the last that fits.
    const ok = decodeBody('Response', new Uint8Array([1, 0, 253, 0, 0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd]));
    assert.deepEqual(ok, { type: 'pong', nonce: '0', serverTime: -Number.MAX_SAFE_INTEGER });
  });
  test('a non-canonical varint decodes as bincode does (251 + u16 for 5)', () => {
    const v = decodeBody('ClientFrame', new Uint8Array([1, 251, 0, 5, 0, 9]));
    assert.deepEqual(v, { type: 'request', id: '5', request: { method: 'ping', nonce: '9' } });
  });
});

describe('other malformations', () => {
  test('trailing bytes after the value', () => {
    throwsCodec(decode('ClientFrame', [2, 0, 0xaa]), 'trailing', '1 trailing byte after the value', 'at byte 2');
  });
  test('a map with a key twice', () => {
    // attributes { {"k": "a", "k": "b"} }
    throwsCodec(decode('Response', [12, 2, ...str('k'), ...str('a'), ...str('k'), ...str('b')]), 'duplicateKey', 'map has the key "k" twice', 'at byte 6');
  });
  test('an empty body', () => {
    throwsCodec(decode('ServerFrame', []), 'truncated', 'u32 needs 1 byte, only 0 left');
  });
});

describe('values the encoder refuses', () => {
  const bad = (value: unknown, ...parts: string[]) =>
    throwsCodec(() => encodeBody('Request', value as never), 'badValue', ...parts);
  test('u64 ids that are not decimal strings within range', () => {
    for (const nonce of ['01', '-1', '1.5', '', ' 1', '18446744073709551616', -1, 1.5, 2 ** 53, null]) {
      bad({ method: 'ping', nonce }, 'Request(ping).nonce');
    }
    assert.equal(encodeBody('Request', { method: 'ping', nonce: '18446744073709551615' }).length, 10);
    assert.equal(encodeBody('Request', { method: 'ping', nonce: 18446744073709551615n as never }).length, 10);
  });
  test('u32 and i64 out of range', () => {
    bad({ method: 'getPublicGroups', limit: -1, cursor: null }, '.limit', 'u32');
    bad({ method: 'getPublicGroups', limit: 2 ** 32, cursor: null }, '.limit');
    bad({ method: 'muteGroupMember', groupId: '1', username: [], muteDuration: 2 ** 53 }, '.muteDuration', 'i64');
    bad({ method: 'muteGroupMember', groupId: '1', username: [], muteDuration: '5' }, '.muteDuration');
  });
  test('unknown method, missing and unknown fields, wrong types', () => {
    bad({ method: 'acceptGroupInvitation', groupId: '1' }, 'Request has no method "acceptGroupInvitation"');
    bad({ method: 'acceptGroupInvite', groupId: '1' }, '(acceptGroupInvite).invitee', 'expected a string, got undefined');
    bad({ method: 'acceptGroupInvite', groupId: '1', invitee: 'me', groupID: '1' }, 'no field "groupID"', 'its fields: groupId, invitee');
    bad({ method: 'inviteUsersToGroup', groupId: '1', users: 'a' }, '.users', 'expected an array');
    bad({ method: 'inviteUsersToGroup', groupId: '1', users: ['a', 5] }, '.users[1]');
    bad({ method: 'sendGroupMessage', groupId: '1', payload: [1, 2], allowGroupAck: false, clientMsgId: null }, '.payload', 'Uint8Array');
    bad({ method: 'createGroup', data: { groupname: 'g' } }, '(createGroup).data.desc');
    bad('ping', 'expected a Request object');
  });
});

describe('FrameDecoder', () => {
  const cases = allCases().filter((c) => c.type === 'ServerFrame');
  const stream = new Uint8Array(cases.reduce((n, c) => n + c.hex.length / 2, 0));
  let at = 0;
  for (const c of cases) {
    stream.set(fromHex(c.hex), at);
    at += c.hex.length / 2;
  }

  for (const chunk of [1, 3, 7, 4096, stream.length]) {
    test(`frames arrive whole whatever the chunking (${chunk} bytes)`, () => {
      const d = new FrameDecoder('ServerFrame');
      const got: unknown[] = [];
      for (let i = 0; i < stream.length; i += chunk) {
        d.push(stream.subarray(i, i + chunk));
        for (let v = d.next(); v !== undefined; v = d.next()) got.push(v);
      }
      assert.deepStrictEqual(got, cases.map((c) => c.value));
      assert.equal(d.buffered, 0);
    });
  }

  test('an oversized length fails before its body is buffered, and stays failed', () => {
    const d = new FrameDecoder('Push', 16);
    d.push(new Uint8Array([0, 0, 0, 17]));
    throwsCodec(() => d.next(), 'tooLarge', 'frame of 17 bytes exceeds the limit of 16 bytes');
    throwsCodec(() => d.push(new Uint8Array([1])), 'tooLarge');
    throwsCodec(() => d.next(), 'tooLarge');
  });

  test('a malformed frame in the stream is an error, and the frames before it were delivered', () => {
    const d = new FrameDecoder('ClientFrame');
    d.push(frame([2, 0])); // ack { ids: [] }
    d.push(frame([9])); // no ClientFrame variant 9
    assert.deepEqual(d.next(), { type: 'ack', ids: [] });
    throwsCodec(() => d.next(), 'badVariant', 'ClientFrame has no variant 9');
  });
});

/**
 * The connection over an in-memory stream to a fake broker: the hello and its answers,
 * pipelined requests answered out of order, errors, the stream's end, malformed frames,
 * timeouts, and every example call of the seed document as written.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Connection,
  ConnectionError,
  ConvokeError,
  ProtocolError,
  TimeoutError,
  type Request,
  type Response,
} from '../src/index.js';
import { FakeBroker, type Answer } from './fake_broker.js';
import { frame } from './support.js';

const HELLO = { token: 'tok', deviceId: 'laptop' };
const ok = (value: Response): Answer => ({ ok: true, value });

async function rejects<E extends Error>(p: Promise<unknown>, type: new (...a: never[]) => E, ...parts: string[]): Promise<E> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof type, `expected ${type.name}, got ${String(e)}`);
    for (const part of parts) assert.ok(e.message.includes(part), `${JSON.stringify(part)} in: ${e.message}`);
    return e;
  }
  assert.fail(`expected a ${type.name} rejection`);
}

describe('hello', () => {
  test('the first frame is the hello; the welcome opens the connection', async () => {
    const broker = new FakeBroker();
    const c = await Connection.open(broker.stream, { ...HELLO, events: false });
    assert.deepEqual(broker.frames[0], {
      type: 'hello',
      hello: { versions: [3], token: 'tok', deviceId: 'laptop', events: false },
    });
    assert.equal(c.user, 'alice');
    assert.equal(c.session.welcome.sessionId, '18446744073709551615');
    c.close();
  });

  test('a refusal rejects with its code and message', async () => {
    const broker = new FakeBroker(() => ({ type: 'refused', error: { code: 28, message: 'token expired at 5' } }));
    const e = await rejects(Connection.open(broker.stream, HELLO), ConvokeError, 'error 28 TOKEN_NOT_ASSIGNED: token expired at 5');
    assert.equal(e.code, 28);
    assert.equal(e.type, 28);
    assert.equal(e.codeName, 'TOKEN_NOT_ASSIGNED');
  });

  test('a stream that ends before the welcome, or says something else, is a ConnectionError', async () => {
    const ends = new FakeBroker(() => undefined);
    await ends.end();
    await rejects(Connection.open(ends.stream, HELLO), ConnectionError, 'the control stream ended');
    const odd = new FakeBroker(() => ({ type: 'response', id: '1', result: { ok: true, value: { type: 'done' } } }));
    await rejects(Connection.open(odd.stream, HELLO), ConnectionError, 'answered the hello with a response frame');
  });

  test('no answer within the handshake timeout', async () => {
    const silent = new FakeBroker();
    // Swallow the hello: answer nothing.
    const stream = { readable: new ReadableStream<Uint8Array>(), writable: silent.stream.writable };
    await rejects(Connection.open(stream, HELLO, { handshakeTimeoutMs: 50 }), ConnectionError, 'no answer to the hello within 50 ms');
  });

  test('a hello over 4 KiB is refused before sending', async () => {
    const broker = new FakeBroker();
    await rejects(Connection.open(broker.stream, { token: 'x'.repeat(5000), deviceId: 'd' }), ConvokeError, 'the hello cannot be sent', 'limit of 4096 bytes');
    assert.equal(broker.frames.length, 0);
  });
});

describe('requests', () => {
  test('pipelined: all in flight at once, answered out of order, each gets its own answer', async () => {
    const broker = new FakeBroker();
    broker.answer = () => undefined; // hold every request
    const c = await Connection.open(broker.stream, HELLO);
    const calls = [
      c.fetchGroupAnnouncement({ groupId: '1' }),
      c.fetchGroupAnnouncement({ groupId: '2' }),
      c.fetchGroupAnnouncement({ groupId: '3' }),
    ];
    const got = await broker.untilRequests(3);
    assert.equal(c.session.inFlight, 3);
    assert.deepEqual(got.map((r) => r.id), ['1', '2', '3']);
    for (const r of [...got].reverse()) {
      const groupId = (r.request as Extract<Request, { method: 'fetchGroupAnnouncement' }>).groupId;
      await broker.respond(r.id, ok({ type: 'announcement', announcement: `for ${groupId}` }));
    }
    assert.deepEqual(await Promise.all(calls), [
      { announcement: 'for 1' },
      { announcement: 'for 2' },
      { announcement: 'for 3' },
    ]);
    assert.equal(c.session.inFlight, 0);
    c.close();
  });

  test('a refused request rejects with the code, name and message; the connection carries on', async () => {
    const broker = new FakeBroker();
    broker.answer = ({ request }) =>
      request.method === 'destroyGroup'
        ? { ok: false, error: { code: 605, message: 'group "9" does not exist' } }
        : ok({ type: 'done' });
    const c = await Connection.open(broker.stream, HELLO);
    const e = await rejects(c.destroyGroup({ groupId: '9' }), ConvokeError, 'error 605 GROUP_NOT_EXIST: group "9" does not exist');
    assert.equal(e.code, 605);
    await c.leaveGroup({ groupId: '9' });
    c.close();
  });

  test('bad options are refused with -3 naming the option, and nothing is sent', async () => {
    const broker = new FakeBroker();
    const c = await Connection.open(broker.stream, HELLO);
    await rejects(c.destroyGroup({} as never), ConvokeError, 'error -3 REQUEST_PARAMETER_ERROR: destroyGroup: groupId must be a string, got undefined');
    await rejects(c.inviteUsersToGroup({ groupId: '1', users: 'bob' } as never), ConvokeError, 'inviteUsersToGroup: users must be an array of strings');
    await rejects(c.listGroupMembers({ groupId: '1', pageNum: -1 }), ConvokeError, 'pageNum must be a whole number');
    await rejects(c.muteGroupMember({ groupId: '1', username: 'b', muteDuration: 1.5 }), ConvokeError, 'muteDuration');
    await rejects(c.leaveGroup(null as never), ConvokeError, 'leaveGroup: expected an options object, got null');
    await rejects(c.updateGroupAnnouncement({ groupId: '1', announcement: '\ud800' }), ConvokeError, 'lone UTF-16 surrogate');
    assert.equal(broker.requests.length, 0);
    c.close();
  });

  test('an answer of the wrong type is a ProtocolError', async () => {
    const broker = new FakeBroker();
    broker.answer = () => ok({ type: 'bool', value: true });
    const c = await Connection.open(broker.stream, HELLO);
    await rejects(c.createGroup({ data: { groupname: 'g' } }), ProtocolError, 'createGroup: the broker answered bool, expected groupCreated');
    c.close();
  });

  test('a request with no answer in time rejects; its late answer is ignored', async () => {
    const broker = new FakeBroker();
    broker.answer = () => undefined;
    const c = await Connection.open(broker.stream, HELLO, { requestTimeoutMs: 50 });
    await rejects(c.isInGroupMutelist({ groupId: '1' }), TimeoutError, 'isInGroupMutelist: no answer within 50 ms');
    assert.equal(c.session.inFlight, 0);
    await broker.respond('1', ok({ type: 'bool', value: true }));
    broker.answer = () => ok({ type: 'bool', value: false });
    assert.equal(await c.isInGroupMutelist({ groupId: '1' }), false);
    c.close();
  });
});

describe('the end of the connection', () => {
  test('the stream ending fails every call in flight, and later calls at once', async () => {
    const broker = new FakeBroker();
    broker.answer = () => undefined;
    const c = await Connection.open(broker.stream, HELLO);
    const pending = [c.leaveGroup({ groupId: '1' }), c.getGroupAdmin({ groupId: '1' })];
    await broker.untilRequests(2);
    let ended: ConnectionError | undefined;
    c.session.onEnd((e) => (ended = e));
    await broker.end();
    for (const p of pending) await rejects(p, ConnectionError, 'the control stream ended');
    assert.ok(ended);
    assert.ok(c.session.closed);
    await rejects(c.leaveGroup({ groupId: '1' }), ConnectionError, 'the control stream ended');
    assert.equal(broker.requests.length, 2);
  });

  test('a malformed frame ends the connection with close code 1, an oversized one with 2', async () => {
    for (const [bytes, code, text] of [
      [frame([7]), 1, 'ServerFrame has no variant 7'],
      [new Uint8Array([0x00, 0x40, 0x00, 0x01]), 2, 'frame of 4194305 bytes exceeds the limit'],
    ] as const) {
      const broker = new FakeBroker();
      broker.answer = () => undefined;
      const c = await Connection.open(broker.stream, HELLO);
      const p = c.getGroupAllowlist({ groupId: '1' });
      await broker.untilRequests(1);
      await broker.sendRaw(bytes);
      const e = await rejects(p, ConnectionError, 'the broker sent a bad frame', text);
      assert.equal(e.closeCode, code);
    }
  });

  test('a second welcome after the first is a protocol violation (close code 6)', async () => {
    const broker = new FakeBroker();
    broker.answer = () => undefined;
    const c = await Connection.open(broker.stream, HELLO);
    const p = c.getGroupBlocklist({ groupId: '1' });
    await broker.untilRequests(1);
    await broker.send({ type: 'refused', error: { code: 28, message: 'expired' } });
    const e = await rejects(p, ConnectionError, 'the broker sent a refused frame after the welcome');
    assert.equal(e.closeCode, 6);
  });

  test('close() fails calls in flight', async () => {
    const broker = new FakeBroker();
    broker.answer = () => undefined;
    const c = await Connection.open(broker.stream, HELLO);
    const p = c.getGroupMutelist({ groupId: '1' });
    await broker.untilRequests(1);
    c.close();
    await rejects(p, ConnectionError, 'closed by the application');
  });
});

/**
 * The push stream: pushes reach the handlers in order; kept events are handed on once as
 * group events and acknowledged on the control stream (again, not handed on, when a copy
 * comes back); a bad push frame ends the connection.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  Connection,
  ConnectionError,
  encodeFrame,
  MAX_ACK_IDS,
  type GroupEvent,
  type GroupMessage,
  type Push,
} from '../src/index.js';
import { FakeBroker } from './fake_broker.js';
import { frame } from './support.js';

/** A push stream the test writes to. */
function pushStream() {
  const t = new TransformStream<Uint8Array, Uint8Array>();
  const w = t.writable.getWriter();
  return {
    readable: t.readable,
    send: (p: Push) => w.write(encodeFrame('Push', p)),
    raw: (b: Uint8Array) => w.write(b),
    end: () => w.close(),
  };
}

const event = (operation: GroupEvent['operation'], from = 'alice'): GroupEvent => ({
  operation,
  groupId: '12',
  groupName: 'n',
  from,
  users: ['bob'],
  detail: { kind: 'none' },
  timestamp: 1,
});

const message: GroupMessage = {
  groupId: '12',
  msgId: '77',
  seq: '3',
  from: 'alice',
  payload: new TextEncoder().encode('hi'),
  timestamp: 2,
  allowGroupAck: false,
};

/** Waits until `f` holds (the pushes travel through streams and microtasks). */
async function until(f: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!f()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function open() {
  const broker = new FakeBroker();
  const c = await Connection.open(broker.stream, { token: 't', deviceId: 'd' });
  const pushes = pushStream();
  const got: string[] = [];
  c.addEventHandler('test', {
    onGroupEvent: (e) => got.push(`group ${e.operation} from ${e.from}`),
    onMultiDeviceEvent: (e) => got.push(`multiDevice ${e.operation}`),
    onGroupMessage: (m) => got.push(`message ${m.msgId} ${new TextDecoder().decode(m.payload)}`),
    onDisconnected: (e, closing) => got.push(`disconnected ${e.closeCode ?? '-'} ${closing ? closing.reason : '-'}`),
  });
  const done = c.receivePushes(pushes.readable);
  const acks = () => broker.frames.flatMap((f) => (f.type === 'ack' ? [f.ids] : []));
  return { broker, c, pushes, got, done, acks };
}

describe('pushes', () => {
  test('each kind reaches its handler, in order', async () => {
    const { c, pushes, got } = await open();
    await pushes.send({ push: 'group', event: event('memberPresence') });
    await pushes.send({ push: 'multiDevice', event: event('updateInfo') });
    await pushes.send({ push: 'message', message });
    await pushes.send({ push: 'group', event: event('muteMember') });
    await until(() => got.length === 4, 'four pushes');
    assert.deepEqual(got, ['group memberPresence from alice', 'multiDevice updateInfo', 'message 77 hi', 'group muteMember from alice']);
    c.close();
  });

  test('a kept event is handed on once and acknowledged; a repeat is acknowledged again only', async () => {
    const { c, pushes, got, acks } = await open();
    await pushes.send({ push: 'kept', id: '18446744073709551615', event: event('inviteToJoin') });
    await until(() => acks().length === 1, 'the first ack');
    assert.deepEqual(got, ['group inviteToJoin from alice']);
    assert.deepEqual(acks(), [['18446744073709551615']]);
    await pushes.send({ push: 'kept', id: '18446744073709551615', event: event('inviteToJoin') });
    await until(() => acks().length === 2, 'the repeat ack');
    assert.deepEqual(got, ['group inviteToJoin from alice'], 'not handed on twice');
    assert.deepEqual(acks(), [['18446744073709551615'], ['18446744073709551615']]);
    c.close();
  });

  test('kept events arriving together are acknowledged together, at most 1024 ids per frame', async () => {
    const { c, pushes, got, acks } = await open();
    const n = MAX_ACK_IDS + 10;
    const bytes = [];
    for (let i = 1; i <= n; i++) bytes.push(encodeFrame('Push', { push: 'kept', id: String(i), event: event('removeMember') }));
    const all = new Uint8Array(bytes.reduce((s, b) => s + b.length, 0));
    let at = 0;
    for (const b of bytes) {
      all.set(b, at);
      at += b.length;
    }
    await pushes.raw(all);
    await until(() => acks().flat().length === n, `${n} acks`);
    assert.equal(got.length, n);
    assert.deepEqual(acks().map((ids) => ids.length), [MAX_ACK_IDS, 10]);
    assert.deepEqual(acks().flat(), Array.from({ length: n }, (_, i) => String(i + 1)));
    c.close();
  });

  test('a throwing handler neither stops the stream nor the other handlers', async () => {
    const { c, pushes, got } = await open();
    const reported: unknown[] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => reported.push(args[1]);
    try {
      c.addEventHandler('bad', {
        onGroupEvent: () => {
          throw new Error('handler bug');
        },
      });
      await pushes.send({ push: 'group', event: event('setAdmin') });
      await pushes.send({ push: 'group', event: event('removeAdmin') });
      await until(() => got.length === 2, 'both events');
      assert.equal(reported.length, 2);
      assert.ok(reported[0] instanceof Error && reported[0].message === 'handler bug');
    } finally {
      console.error = original;
      c.close();
    }
  });

  test('removeEventHandler stops delivery to that handler', async () => {
    const { c, pushes, got } = await open();
    c.removeEventHandler('test');
    const other: string[] = [];
    c.addEventHandler('other', { onGroupEvent: (e) => other.push(e.operation) });
    await pushes.send({ push: 'group', event: event('destroy') });
    await until(() => other.length === 1, 'the other handler');
    assert.deepEqual(got, []);
    c.close();
  });

  test('a malformed push ends the connection (close code 1) and fails calls in flight', async () => {
    const { broker, c, pushes, got, done } = await open();
    broker.answer = () => undefined;
    const call = c.getGroupAdmin({ groupId: '12' });
    await broker.untilRequests(1);
    await pushes.raw(frame([5]));
    await done;
    await assert.rejects(call, (e: unknown) => e instanceof ConnectionError && e.closeCode === 1 && e.message.includes('Push has no variant 5'));
    assert.deepEqual(got, ['disconnected 1 -']);
  });

  test("the broker's closing notice is given to onDisconnected", async () => {
    const { broker, c, pushes, got } = await open();
    await pushes.send({ push: 'closing', code: 3, reason: 'slow consumer' });
    await until(() => c.closing !== undefined, 'the notice read');
    assert.deepEqual(c.closing, { code: 3, reason: 'slow consumer' });
    assert.deepEqual(got, []);
    await broker.end();
    await until(() => got.length === 1, 'the disconnect');
    assert.deepEqual(got, ['disconnected - slow consumer']);
    assert.ok(c.session.closed);
  });
});

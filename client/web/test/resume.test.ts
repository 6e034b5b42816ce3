/**
 * The sequencer's positions (resume.ts) over the fake world of test/world.ts: the page's
 * own sends with no request timeout, a join replayed at login after the catch-up has
 * passed it, and a broker whose history was rolled back (restored from a backup).
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Connection } from '../src/index.js';
import { fast, G, hello, recorder, sleep, until, World } from './world.js';

describe('resume: positions', () => {
  test("with no request timeout (requestTimeoutMs 0) the page's own send in flight is still waited for before a gap is judged", async () => {
    for (const requestTimeoutMs of [0, 30_000]) {
      const w = new World();
      const r = recorder();
      const c = await Connection.dial(w.dial, hello, { reconnect: fast, requestTimeoutMs, handlers: { r: r.handlers } });
      await w.last.push.send({ push: 'message', message: w.add(1)[0]! });
      await until(() => r.messages.length === 1, 'message 1');
      w.hold.add('sendGroupMessage');
      const sent = c.sendGroupMessage({ groupId: G, payload: 'mine' });
      await until(() => w.held.length === 1, 'the send held');
      // The broker stored it as 2; 3 (someone else's) comes live before the send's answer.
      const [own, m3] = w.add(2);
      await w.last.push.send({ push: 'message', message: m3! });
      await sleep(30);
      const { link, r: q } = w.held[0]!;
      await w.links[link]!.broker.respond(q.id, { ok: true, value: { type: 'messageSent', msgId: own!.msgId, seq: own!.seq, timestamp: own!.timestamp } });
      assert.equal((await sent).seq, '2');
      await until(() => r.messages.length >= 2, 'message 3');
      await sleep(20);
      assert.deepEqual(r.messages, ['1', '3'], `requestTimeoutMs ${requestTimeoutMs}: the own send is not handed back`);
      c.close();
    }
  });

  test('a broker restored from a backup (its history ends before the position): carried on from its newest message, so new messages are not taken for repeats', async () => {
    const w = new World();
    const r = recorder();
    const c = await Connection.dial(w.dial, hello, { reconnect: fast, handlers: { r: r.handlers } });
    for (const m of w.add(5)) await w.last.push.send({ push: 'message', message: m });
    await until(() => r.messages.length === 5, 'messages 1..5');
    // The broker comes back from a backup that ends at 3: 4 and 5 are gone, their seqs
    // will be given to new messages.
    w.history.splice(3);
    await w.drop();
    await until(() => r.log.some((l) => l.startsWith('reconnected')), 'the catch-up');
    assert.equal(c.lastSeq(G), '3');
    for (const m of w.add(2)) await w.last.push.send({ push: 'message', message: m });
    await until(() => r.messages.length >= 7, 'the new 4 and 5');
    await sleep(20);
    assert.deepEqual(r.messages, ['1', '2', '3', '4', '5', '4', '5']);
    c.close();
  });
});

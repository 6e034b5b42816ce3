/**
 * The sequencer's positions (resume.ts) over the fake world of test/world.ts: the page's
 * own sends with no request timeout, a join replayed at login after the catch-up has
 * passed it, and a broker whose history was rolled back (restored from a backup).
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Connection } from '../src/index.js';
import { fast, G, groupEvent, hello, recorder, seqs, sleep, until, World } from './world.js';

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

  test('a join replayed at login after the catch-up handed on the messages since it: the position stays, nothing comes twice', async () => {
    const w = new World();
    const r = recorder();
    const K = '56';
    const tagged: string[] = [];
    const c = await Connection.dial(w.dial, hello, {
      reconnect: fast,
      handlers: { r: r.handlers, t: { onGroupMessage: (m) => tagged.push(`${m.groupId}:${m.seq}`) } },
    });
    for (const m of w.add(1)) await w.last.push.send({ push: 'message', message: m });
    await until(() => r.messages.length === 1, 'message 1');
    // While away: alice added to K at 1400 (a kept directJoined), two messages after it.
    w.joined.add(K);
    w.add(2, K, 1500);
    await w.drop();
    await until(() => r.log.some((l) => l.startsWith('reconnected')), 'the catch-up');
    // The login's replay of the kept event is handed on after the catch-up.
    await w.last.push.send({ push: 'kept', id: '9', event: groupEvent('directJoined', ['alice'], 1400, 'bob', K) });
    await until(() => r.log.some((l) => l.startsWith('event')), 'the event');
    assert.equal(c.lastSeq(K), '2');
    await w.drop();
    await until(() => r.log.filter((l) => l.startsWith('reconnected')).length === 2, 'the second catch-up');
    await sleep(20);
    assert.deepEqual(tagged, [`${G}:1`, `${K}:1`, `${K}:2`]);
    c.close();
  });

  test('removed and re-added while away: the replay comes after the catch-up (README), and no message comes twice at the next reconnect', async () => {
    const w = new World();
    const r = recorder();
    const c = await Connection.dial(w.dial, hello, { reconnect: fast, handlers: { r: r.handlers } });
    for (const m of w.add(3)) await w.last.push.send({ push: 'message', message: m });
    await until(() => r.messages.length === 3, 'messages 1..3');
    // While away: removed at 1004 (kept), 20 posted while out, re-added at 1024 (kept), 2 after.
    w.add(20);
    w.add(2, G, 2000);
    w.hold.add('getJoinedGroups');
    await w.drop();
    await until(() => w.links.length === 2 && w.held.length > 0, 'link 2');
    // The login's replay reaches the push stream before the catch-up starts.
    await w.last.push.send({ push: 'kept', id: '1', event: groupEvent('removeMember', ['alice'], 1004) });
    await w.last.push.send({ push: 'kept', id: '2', event: groupEvent('directJoined', ['alice'], 1024) });
    w.hold.clear();
    for (const { link, r: q } of w.held.splice(0)) await w.links[link]!.broker.respond(q.id, w.answer(link, q)!);
    await until(() => r.log.filter((l) => l.startsWith('event')).length === 2, 'both events');
    // The catch-up ran before the replay was handed on: 4..23, posted while alice was out,
    // were handed on too (the README says so), each once.
    assert.deepEqual(r.messages, seqs(1, 25));
    await w.drop();
    await until(() => r.log.filter((l) => l.startsWith('reconnected')).length === 2, 'the second catch-up');
    await sleep(20);
    assert.deepEqual(r.messages, seqs(1, 25), 'nothing twice');
    c.close();
  });
});

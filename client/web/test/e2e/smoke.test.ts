/** The browser listener end to end: a page opens a session, calls, and gets another page's events. */

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import type { Server } from 'node:http';
import { BrokerProcess, eventually, launchChromium, missingTool, serveStatic, WEB_DIR, WebUser } from './harness.js';

const skip = missingTool();

describe('WebTransport listener', { skip }, () => {
  let broker: BrokerProcess;
  let browser: Browser;
  let http: { server: Server; origin: string };

  before(async () => {
    broker = new BrokerProcess();
    await broker.start();
    http = await serveStatic(WEB_DIR);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    http?.server.close();
    await broker?.stop();
  });

  test('a page logs in, creates a group, and another page hears it joined', async () => {
    const alice = await WebUser.open(browser, http.origin, broker, 'alice');
    const bob = await WebUser.open(browser, http.origin, broker, 'bob');
    const { groupid } = await alice.ok("connection.createGroup({data: {groupname: 'g', desc: '', members: ['bob'], public: true, approval: false, allowinvites: true, inviteNeedConfirm: true, ext: {}}})");
    assert.match(groupid, /^\d+$/);
    // createGroup's members join directly (groups.create_members_as_invitations = false).
    await eventually('bob is told he joined', async () => (await bob.ops(groupid)).includes('directJoined'));
    assert.deepEqual(await alice.ops(groupid), []);
    await alice.close();
    await bob.close();
  });
});

/** The browser listener end to end: a page opens a session, calls, and gets another page's events. */

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import type { Server } from 'node:http';
import { BrokerProcess, eventually, launchChromium, missingTool, serveStatic, tryConnect, WEB_DIR, WebUser } from './harness.js';

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

  test('a refused or expired token reaches the page as error 28', async () => {
    const bad = await tryConnect(browser, http.origin, broker, 'not-a-token');
    assert.match(bad.result, /^ConvokeError 28 /, bad.result);
    const token = broker.token('eve', { ttl: '1' });
    await new Promise((r) => setTimeout(r, 2100));
    const late = await tryConnect(browser, http.origin, broker, token);
    assert.match(late.result, /^ConvokeError 28 .*expired/, late.result);
  });

  test('a session whose token expires ends with TOKEN_EXPIRED and the reason, in the page', async () => {
    const page = await browser.newPage();
    await page.goto(`${http.origin}/test/e2e/page.html`);
    await page.waitForFunction(() => (window as unknown as { sdkLoaded?: boolean }).sdkLoaded === true);
    const ended = await page.evaluate(
      async ({ url, token, hash }) => {
        const w = window as unknown as Record<string, any>;
        const value = new Uint8Array(hash.match(/../g)!.map((h: string) => parseInt(h, 16)));
        return new Promise<{ code?: number; message: string }>((resolve) => {
          void w.sdk.connect({
            url, token, deviceId: 'short', serverCertificateHashes: [{ algorithm: 'sha-256', value }],
            handlers: { t: { onDisconnected: (e: { closeCode?: number; message: string }) => resolve({ code: e.closeCode, message: e.message }) } },
          });
        });
      },
      { url: broker.url, token: broker.token('eve', { ttl: '2' }), hash: broker.certHash },
    );
    // protocol close::TOKEN_EXPIRED, carried by the WebTransport session close.
    assert.equal(ended.code, 8, ended.message);
    assert.match(ended.message, /token expired/);
    await page.close();
  });

  test('a wrong path is refused before any session', async () => {
    const wrong = await tryConnect(browser, http.origin, broker, broker.token('eve'), broker.url.replace('/convoke', '/other'));
    assert.match(wrong.result, /^ConnectionError /, wrong.result);
  });

  test('only pages of an allowed origin connect when webtransport.allowed_origins is set', async () => {
    const other = await serveStatic(WEB_DIR);
    const strict = new BrokerProcess({ 'webtransport.allowed_origins': http.origin });
    try {
      await strict.start();
      const allowed = await tryConnect(browser, http.origin, strict, strict.token('eve'));
      assert.equal(allowed.result, 'ok');
      const refused = await tryConnect(browser, other.origin, strict, strict.token('eve'));
      assert.match(refused.result, /^ConnectionError /, refused.result);
    } finally {
      other.server.close();
      await strict.stop();
    }
  });

  test('kept events wait for an offline page and come once', async () => {
    const alice = await WebUser.open(browser, http.origin, broker, 'alice');
    const groupId = await alice.ok("connection.createGroup({data: {groupname: 'later', members: [], public: false, inviteNeedConfirm: true}}).then(r => r.groupid)");
    // carol has logged in once (users exist from their first login), then has no page
    // open: her invitation is kept for her.
    await (await WebUser.open(browser, http.origin, broker, 'carol')).close();
    await alice.ok("connection.inviteUsersToGroup({groupId, users: ['carol']})", { groupId });
    const carol = await WebUser.open(browser, http.origin, broker, 'carol');
    await eventually('carol gets the kept invitation', async () => (await carol.ops(groupId)).includes('inviteToJoin'));
    // The page acknowledged it (on the control stream, so an answer to a later request
    // means the broker has read the acknowledgement): a new page of carol's does not get it.
    await carol.ok('connection.getJoinedGroups({pageNum: 1, pageSize: 10})');
    await carol.close();
    const marker = await alice.ok("connection.createGroup({data: {groupname: 'marker', members: [], inviteNeedConfirm: true}}).then(r => r.groupid)");
    await alice.ok("connection.inviteUsersToGroup({groupId, users: ['carol']})", { groupId: marker });
    const again = await WebUser.open(browser, http.origin, broker, 'carol', 'second');
    await eventually('the later invitation comes', async () => (await again.ops(marker)).includes('inviteToJoin'));
    assert.deepEqual(await again.ops(groupId), [], 'an acknowledged kept event came again');
    await again.close();
    await alice.close();
  });
});

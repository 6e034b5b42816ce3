/**
 * Reconnect and resume in Chromium against a real broker: the broker is restarted on the
 * same data dir and ports (its sessions end with SHUTDOWN) while another user keeps
 * sending; the page reconnects by itself and ends up with every message once, in order.
 *
 * The broker's development certificate is made anew at each start, so the pages pin
 * whatever hash the test last set (`window.certHash`) through the `WebTransport` option;
 * a broker with a certificate the browser trusts needs none of that.
 */

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Server } from 'node:http';
import type { Browser, Page } from 'playwright-core';
import { BrokerProcess, eventually, launchChromium, missingTool, serveStatic, WEB_DIR } from './harness.js';

const skip = missingTool();

/** A page connected as `user` with a reconnecting connection; `window.log` records its handlers. */
async function openPage(browser: Browser, origin: string, broker: BrokerProcess, user: string): Promise<{ page: Page; console: string[] }> {
  const page = await browser.newPage();
  const console: string[] = [];
  page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
  await page.goto(`${origin}/test/e2e/page.html`);
  await page.waitForFunction(() => (window as unknown as { sdkLoaded?: boolean }).sdkLoaded === true);
  const r = await page.evaluate(
    async ({ url, token, hash, user }) => {
      const w = window as unknown as Record<string, any>;
      w.certHash = hash;
      w.token = token;
      w.gate = Promise.resolve();
      w.log = [];
      w.messages = [];
      const pinned = () => [{ algorithm: 'sha-256', value: new Uint8Array((w.certHash as string).match(/../g)!.map((h) => parseInt(h, 16))) }];
      // The browser's WebTransport, pinning the certificate of the broker running now.
      class PinnedWebTransport extends (w.WebTransport as any) {
        constructor(u: string) {
          super(u, { serverCertificateHashes: pinned() });
        }
      }
      try {
        w.connection = await w.sdk.connect({
          url, token: '', deviceId: `web-${user}`,
          WebTransport: PinnedWebTransport,
          reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
          // A restarted broker may not reach the page with its close: a lost ping tells.
          heartbeatMs: 1000, heartbeatTimeoutMs: 2000,
          // Held while `w.gate` is: the test keeps this page away while the other sends.
          tokenProvider: async () => {
            await w.gate;
            return w.token;
          },
          handlers: {
            e2e: {
              onConnected: () => w.log.push('connected'),
              onDisconnected: (e: { closeCode?: number }) => w.log.push(`disconnected:${e.closeCode}`),
              onReconnecting: (i: { attempt: number }) => w.log.push(`reconnecting:${i.attempt}`),
              onReconnected: (i: { recovered: number }) => w.log.push(`reconnected:${i.recovered}`),
              onClosed: (e: Error) => w.log.push(`closed:${e.message}`),
              onGroupMessage: (m: { seq: string; payload: Uint8Array }) => w.messages.push({ seq: m.seq, text: new TextDecoder().decode(m.payload) }),
            },
          },
        });
        return 'ok';
      } catch (e) {
        return `connect failed: ${String(e)}`;
      }
    },
    { url: broker.url, token: broker.token(user), hash: broker.certHash, user },
  );
  if (r !== 'ok') throw new Error(`${user}: ${r}\n${console.join('\n')}`);
  return { page, console };
}

const log = (p: Page): Promise<string[]> => p.evaluate(() => (window as unknown as { log: string[] }).log);
const messages = (p: Page): Promise<{ seq: string; text: string }[]> =>
  p.evaluate(() => (window as unknown as { messages: { seq: string; text: string }[] }).messages);

describe('reconnect and resume in the browser', { skip }, () => {
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

  test('a broker restart while another user sends: the page reconnects and gets every message once, in order', async () => {
    const alice = await openPage(browser, http.origin, broker, 'alice');
    const bob = await openPage(browser, http.origin, broker, 'bob');
    const groupId: string = await alice.page.evaluate(async () => {
      const w = window as unknown as Record<string, any>;
      const { groupid } = await w.connection.createGroup({ data: { groupname: 'resume', desc: '', members: ['bob'], public: true, approval: false, allowinvites: true, inviteNeedConfirm: false, ext: {} } });
      return groupid;
    });
    const send = (from: number, to: number) =>
      bob.page.evaluate(
        async ({ groupId, from, to }) => {
          const w = window as unknown as Record<string, any>;
          for (let i = from; i <= to; i++) await w.connection.sendGroupMessage({ groupId, payload: `#${i}` });
        },
        { groupId, from, to },
      );
    await send(1, 5);
    await eventually('alice has the first 5', async () => (await messages(alice.page)).length === 5);

    // Alice's next dial waits (her token provider is held) until bob has sent 6..15.
    await alice.page.evaluate(() => {
      const w = window as unknown as Record<string, any>;
      w.gate = new Promise((r) => (w.openGate = r));
    });
    await broker.restart();
    for (const p of [alice.page, bob.page]) await p.evaluate((h) => ((window as unknown as Record<string, unknown>).certHash = h), broker.certHash);
    await eventually('bob is back', async () => (await log(bob.page)).some((l) => l.startsWith('reconnected')), 20_000).catch(async (e: Error) => {
      throw new Error(`${e.message}\nbob: ${(await log(bob.page)).join(' ')}\n${bob.console.join('\n')}\nbroker: ${broker.log.slice(-2000)}`);
    });
    await send(6, 15);
    assert.equal((await messages(alice.page)).length, 5, 'alice is away meanwhile');
    // (Chromium reports the broker's SHUTDOWN close, or only that the session was lost.)
    assert.ok((await log(alice.page)).some((l) => l.startsWith('disconnected:')), (await log(alice.page)).join(' '));

    // Alice comes back while bob keeps sending.
    await alice.page.evaluate(() => (window as unknown as { openGate: () => void }).openGate());
    await send(16, 25);
    await eventually('alice has all 25', async () => (await messages(alice.page)).length >= 25, 20_000);
    await new Promise((r) => setTimeout(r, 300));
    const got = await messages(alice.page);
    assert.deepEqual(got.map((m) => m.text), Array.from({ length: 25 }, (_, i) => `#${i + 1}`), 'every message once, in order');
    assert.deepEqual(got.map((m) => Number(m.seq)), [...got.map((m) => Number(m.seq))].sort((a, b) => a - b));
    const aliceLog = await log(alice.page);
    const reconnected = aliceLog.find((l) => l.startsWith('reconnected:'));
    assert.ok(reconnected && Number(reconnected.split(':')[1]) >= 10, aliceLog.join(' '));
    assert.ok(!aliceLog.some((l) => l.startsWith('closed')), aliceLog.join(' '));
    assert.ok(!alice.console.some((l) => l.startsWith('pageerror')), alice.console.join('\n'));
    await alice.page.close();
    await bob.page.close();
  });
});

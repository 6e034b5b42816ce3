/**
 * Shared-file transfers across a lost link, in Chromium against a real broker: the page's
 * WebTransport session is closed under the SDK in the middle of a transfer (what a lost
 * session looks like to it; the broker sees its client go away). The connection
 * reconnects by itself; the upload continues from the offset the broker kept and is
 * recorded once, with the same bytes (downloaded back by another page and compared by
 * SHA-256); a download cut the same way continues from the bytes it has.
 *
 * The pages connect with a server list whose first entry has no broker (`urls`), so the
 * first connection moves on to the second in the browser too.
 */

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Server } from 'node:http';
import type { Browser, Page } from 'playwright-core';
import { BrokerProcess, eventually, launchChromium, missingTool, serveStatic, WEB_DIR } from './harness.js';

const skip = missingTool();

/** A free UDP port's URL with nothing behind it (a node that went away). */
const DEAD = 'https://127.0.0.1:9/convoke';

/**
 * A page connected as `user` (reconnecting; `window.transports` holds every WebTransport
 * session the SDK opened, `window.log` what its handlers heard).
 */
async function openPage(browser: Browser, origin: string, broker: BrokerProcess, user: string): Promise<{ page: Page; console: string[] }> {
  const page = await browser.newPage();
  const console: string[] = [];
  page.on('console', (m) => console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.push(`pageerror: ${e.message}`));
  await page.goto(`${origin}/test/e2e/page.html`);
  await page.waitForFunction(() => (window as unknown as { sdkLoaded?: boolean }).sdkLoaded === true);
  const r = await page.evaluate(
    async ({ urls, token, hash, user }) => {
      const w = window as unknown as Record<string, any>;
      w.transports = [];
      w.log = [];
      w.events = [];
      const value = new Uint8Array(hash.match(/../g)!.map((h: string) => parseInt(h, 16)));
      class Recorded extends (w.WebTransport as any) {
        constructor(u: string) {
          super(u, { serverCertificateHashes: [{ algorithm: 'sha-256', value }] });
          w.transports.push({ url: u, wt: this });
        }
      }
      /** 8 MB of pseudo-random bytes, and their SHA-256 in hex. */
      w.content = (size: number, seed: number) => {
        const bytes = new Uint8Array(size);
        let x = seed >>> 0;
        for (let i = 0; i < size; i++) {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          bytes[i] = x >>> 24;
        }
        return bytes;
      };
      w.sha256 = async (data: BufferSource) =>
        Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', data)), (b) => b.toString(16).padStart(2, '0')).join('');
      /** Closes the session the SDK is on now, under it. */
      w.cut = () => w.transports.at(-1).wt.close({ closeCode: 0, reason: 'cut by the test' });
      try {
        w.connection = await w.sdk.connect({
          urls, token, deviceId: `web-${user}`,
          WebTransport: Recorded,
          handshakeTimeoutMs: 3000,
          reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
          handlers: {
            e2e: {
              onDisconnected: (e: { closeCode?: number }) => w.log.push(`disconnected:${e.closeCode}`),
              onReconnected: () => w.log.push('reconnected'),
              onClosed: (e: Error) => w.log.push(`closed:${e.message}`),
              onGroupEvent: (e: { operation: string }) => w.events.push(e.operation),
            },
          },
        });
        return 'ok';
      } catch (e) {
        return `connect failed: ${String(e)}`;
      }
    },
    { urls: [DEAD, broker.url], token: broker.token(user), hash: broker.certHash, user },
  );
  if (r !== 'ok') throw new Error(`${user}: ${r}\n${console.join('\n')}`);
  return { page, console };
}

const log = (p: Page): Promise<string[]> => p.evaluate(() => (window as unknown as { log: string[] }).log);

/** Progress is never lower than the report before it. */
function forward(loaded: number[]): boolean {
  return loaded.every((v, i) => i === 0 || v >= loaded[i - 1]!);
}

describe('file transfers across a lost link in the browser', { skip }, () => {
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

  test('an upload cut mid-way completes after the reconnect from the kept offset; one file, the same bytes', async (t) => {
    const alice = await openPage(browser, http.origin, broker, 'alice');
    const bob = await openPage(browser, http.origin, broker, 'bob');
    const dialled: string[] = await alice.page.evaluate(() => (window as unknown as { transports: { url: string }[] }).transports.map((t) => t.url));
    assert.deepEqual(dialled, [DEAD, broker.url], 'the server list: the dead node first, then the live one');
    const groupId: string = await alice.page.evaluate(async () => {
      const w = window as unknown as Record<string, any>;
      const { groupid } = await w.connection.createGroup({ data: { groupname: 'files', desc: '', members: ['bob'], public: true, approval: false, allowinvites: true, inviteNeedConfirm: false, ext: {} } });
      return groupid;
    });

    const size = 8_000_000;
    const up = await alice.page.evaluate(
      async ({ groupId, size }) => {
        const w = window as unknown as Record<string, any>;
        const bytes: Uint8Array<ArrayBuffer> = w.content(size, 7);
        const progress: { loaded: number; resumedAt?: number }[] = [];
        let cut = false;
        try {
          const entry = await w.connection.uploadGroupSharedFile({
            groupId,
            file: new File([bytes], 'cut.bin', { type: 'application/octet-stream' }),
            onFileUploadProgress: (p: { loaded: number; resumedAt?: number }) => {
              progress.push({ loaded: p.loaded, ...(p.resumedAt !== undefined ? { resumedAt: p.resumedAt } : {}) });
              if (!cut && p.loaded >= 3_000_000) {
                cut = true;
                w.cut();
              }
            },
          });
          return { entry, progress, sha: await w.sha256(bytes), sessions: w.transports.length };
        } catch (e) {
          return { error: `${(e as Error).name}: ${(e as Error).message}`, progress };
        }
      },
      { groupId, size },
    );
    assert.ok(!('error' in up), `${JSON.stringify(up).slice(0, 600)}\n${alice.console.join('\n')}\nbroker: ${broker.log.slice(-2000)}`);
    const { entry, progress, sha, sessions } = up as { entry: { file_id: string; file_size: number; sha256: string }; progress: { loaded: number; resumedAt?: number }[]; sha: string; sessions: number };
    assert.equal(sessions, 3, 'the dead node, the first session, the one after the cut');
    assert.ok((await log(alice.page)).includes('reconnected'), (await log(alice.page)).join(' '));
    assert.equal(entry.file_size, size);
    assert.equal(entry.sha256, sha, "the broker's SHA-256 is the page's");
    const loaded = progress.map((p) => p.loaded);
    assert.ok(forward(loaded), 'progress never goes back');
    assert.equal(loaded.at(-1), size);
    const resumedAt = progress.find((p) => p.resumedAt !== undefined)?.resumedAt;
    assert.ok(resumedAt !== undefined && resumedAt > 0 && resumedAt <= 3_000_000 + 65_536, `resumed at ${resumedAt}: from what the broker kept, not from 0`);

    // One file in the list; bob heard one uploadFile; his download has the same bytes.
    const list = await bob.page.evaluate(async (groupId) => {
      const w = window as unknown as Record<string, any>;
      return (await w.connection.getGroupSharedFilelist({ groupId, pageNum: 1, pageSize: 10 })).map((f: { file_name: string }) => f.file_name);
    }, groupId);
    assert.deepEqual(list, ['cut.bin']);
    await eventually('bob hears the upload', async () =>
      (await bob.page.evaluate(() => (window as unknown as { events: string[] }).events)).includes('uploadFile'),
    );
    const down = await bob.page.evaluate(async ({ groupId, fileId }) => {
      const w = window as unknown as Record<string, any>;
      const blob: Blob = await w.connection.downloadGroupSharedFile({ groupId, fileId });
      return { size: blob.size, sha: await w.sha256(await blob.arrayBuffer()) };
    }, { groupId, fileId: entry.file_id });
    assert.deepEqual(down, { size, sha });
    await new Promise((r) => setTimeout(r, 200));
    const bobEvents: string[] = await bob.page.evaluate(() => (window as unknown as { events: string[] }).events);
    assert.equal(bobEvents.filter((e) => e === 'uploadFile').length, 1, bobEvents.join(' '));
    assert.ok(!alice.console.some((l) => l.startsWith('pageerror')), alice.console.join('\n'));

    // Bob's download of it, cut mid-way the same way, continues from the bytes it has.
    const cutDown = await bob.page.evaluate(async ({ groupId, fileId }) => {
      const w = window as unknown as Record<string, any>;
      const progress: { loaded: number; resumedAt?: number }[] = [];
      let cut = false;
      try {
        const blob: Blob = await w.connection.downloadGroupSharedFile({
          groupId,
          fileId,
          onFileDownloadProgress: (p: { loaded: number; resumedAt?: number }) => {
            progress.push({ loaded: p.loaded, ...(p.resumedAt !== undefined ? { resumedAt: p.resumedAt } : {}) });
            if (!cut && p.loaded >= 2_000_000) {
              cut = true;
              w.cut();
            }
          },
        });
        return { size: blob.size, sha: await w.sha256(await blob.arrayBuffer()), progress };
      } catch (e) {
        return { error: `${(e as Error).name}: ${(e as Error).message}`, progress };
      }
    }, { groupId, fileId: entry.file_id });
    assert.ok(!('error' in cutDown), JSON.stringify(cutDown).slice(0, 600));
    const d = cutDown as { size: number; sha: string; progress: { loaded: number; resumedAt?: number }[] };
    assert.deepEqual({ size: d.size, sha: d.sha }, { size, sha });
    assert.ok(forward(d.progress.map((p) => p.loaded)), 'download progress never goes back');
    const from = d.progress.find((p) => p.resumedAt !== undefined)?.resumedAt;
    assert.ok(from !== undefined && from >= 2_000_000 && from < size, `the download resumed at ${from}`);
    assert.ok((await log(bob.page)).includes('reconnected'), (await log(bob.page)).join(' '));
    t.diagnostic(`upload of ${size} bytes cut at 3000000 sent, resumed at ${resumedAt}; download cut at 2000000, resumed at ${from}`);
    await alice.page.close();
    await bob.page.close();
  });
});

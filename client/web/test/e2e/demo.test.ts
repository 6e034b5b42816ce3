/**
 * The demo page (demo/, served by `npm run demo`): two people chat in headless Chromium
 * through a broker the demo server started; a screenshot is kept as a test artifact in
 * $CONVOKE_ARTIFACTS (default target/web-e2e/demo.png), not in the repository.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { convokeBin, launchChromium, missingTool, REPO_DIR, WEB_DIR } from './harness.js';

const skip = missingTool();

describe('the demo page', { skip }, () => {
  let browser: Browser;
  let demo: { origin: string; page: string; dataDir: string; stop(): Promise<void> };
  let startDemo: (opts: Record<string, unknown>) => Promise<any>;

  before(async () => {
    const serve = resolve(WEB_DIR, 'demo/serve.mjs');
    ({ startDemo } = await import(serve));
    demo = await startDemo({ port: 0, wtListen: '127.0.0.1:0', convoke: convokeBin() });
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await demo?.stop();
  });

  async function login(user: string): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1100, height: 640 } });
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    await page.goto(demo.page);
    await page.fill('#user', user);
    await page.click('#login button');
    await page.waitForSelector('body[data-connected="true"]', { timeout: 15_000 }).catch((e) => {
      throw new Error(`${user} did not connect: ${e} ${problems.join('; ')}`);
    });
    assert.equal(await page.textContent('#status'), `connected as ${user}`);
    return page;
  }

  test('two people chat, and the page is kept as a screenshot', async () => {
    const alice = await login('alice');
    const bob = await login('bob');
    await alice.fill('#groupname', 'demo room');
    await alice.click('#create button');
    await alice.waitForSelector('#groups li.selected');
    await alice.fill('#invitee', 'bob');
    await alice.click('#invite button');
    await alice.waitForFunction(() => document.querySelector('#members')?.textContent?.includes('bob'));
    // bob hears he joined (an event), the list refreshes; he opens the group and writes.
    const item = bob.locator('#groups li', { hasText: 'demo room' });
    await item.waitFor({ timeout: 10_000 });
    await item.click();
    await bob.waitForSelector('#groups li.selected');
    await bob.fill('#text', 'hello from bob');
    await bob.click('#send button');
    await alice.waitForFunction(() => document.querySelector('#messages')?.textContent?.includes('bob: hello from bob'), undefined, { timeout: 10_000 });
    await alice.fill('#text', 'hi bob!');
    await alice.click('#send button');
    await bob.waitForFunction(() => document.querySelector('#messages')?.textContent?.includes('alice: hi bob!'), undefined, { timeout: 10_000 });
    const events = await bob.textContent('#events');
    assert.match(events ?? '', /directJoined in demo room by alice/);
    const dir = process.env.CONVOKE_ARTIFACTS ?? join(REPO_DIR, 'target/web-e2e');
    mkdirSync(dir, { recursive: true });
    const shot = join(dir, 'demo.png');
    await alice.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000, `screenshot ${shot} is empty`);
    console.log(`demo screenshot: ${shot}`);
  });

  test('the page gets the certificate hash the broker last wrote (it renews it while running)', async () => {
    const file = join(demo.dataDir, 'webtransport', 'cert.sha256');
    const served = async () => ((await (await fetch(`${demo.origin}/demo/config.json`)).json()) as { certSha256: string }).certSha256;
    const first = readFileSync(file, 'utf8').trim();
    assert.equal(await served(), first);
    const renewed = 'ab'.repeat(32);
    writeFileSync(file, `${renewed}\n`);
    try {
      assert.equal(await served(), renewed, 'a hash read once goes stale at the first renewal');
    } finally {
      writeFileSync(file, `${first}\n`);
    }
  });

  test('a page port in use is a clear error, and the broker started for it is stopped', async () => {
    const holder = createServer();
    await new Promise<void>((ok) => holder.listen(0, '127.0.0.1', ok));
    const taken = (holder.address() as AddressInfo).port;
    const workDir = mkdtempSync(join(tmpdir(), 'convoke-demo-test-'));
    try {
      await assert.rejects(
        startDemo({ port: taken, wtListen: '127.0.0.1:0', convoke: convokeBin(), workDir }),
        new RegExp(`port ${taken} on 127.0.0.1 is in use: pass --port N`),
      );
      // Removed once the broker exited (stop waits for its exit).
      assert.deepEqual(readdirSync(workDir), [], 'the broker it started was not stopped (its data dir is left)');
    } finally {
      holder.close();
      rmSync(workDir, { recursive: true, force: true });
    }
  });

  test('--data-dir that is no broker data dir is refused, not served with tokens nobody accepts', async () => {
    await assert.rejects(
      startDemo({ port: 0, dataDir: '/tmp/convoke-demo-test-no-such-dir', convoke: convokeBin() }),
      /--data-dir \/tmp\/convoke-demo-test-no-such-dir is not a broker's data dir/,
    );
  });

  /** Runs `node demo/serve.mjs ARGS` with `tmp` as its TMPDIR; resolves once it printed its page (or exited). */
  function runDemo(args: string[], tmp = tmpdir()) {
    const child = spawn(process.execPath, [resolve(WEB_DIR, 'demo/serve.mjs'), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TMPDIR: tmp },
    });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const ready = new Promise<void>((ok) => {
      child.stdout.on('data', (d) => {
        out += d;
        if (out.includes('development certificate')) ok();
      });
      void exited.then(() => ok());
    });
    return { child, ready, exited, output: () => ({ out, err }) };
  }

  test('an unknown flag is a usage error, exit 2', async () => {
    const demo = runDemo(['--prot', '8091']);
    assert.equal(await demo.exited, 2);
    assert.match(demo.output().err, /convoke demo: Unknown option '--prot'[\s\S]*usage: npm run demo/);
  });

  test('a closed terminal (SIGHUP) stops the broker the demo started', async () => {
    const workDir = mkdtempSync(join(tmpdir(), 'convoke-demo-test-'));
    try {
      const demo = runDemo(['--port', '0', '--wt-listen', '127.0.0.1:0', '--convoke', convokeBin()], workDir);
      await demo.ready;
      assert.match(demo.output().out, /open http:\/\/127\.0\.0\.1:\d+\/demo\//, demo.output().err);
      assert.equal(readdirSync(workDir).length, 1, 'the demo made its broker a data dir');
      demo.child.kill('SIGHUP');
      assert.equal(await demo.exited, 0);
      // Removed once the broker exited (stop waits for its exit).
      assert.deepEqual(readdirSync(workDir), [], 'the broker was left running (its data dir is still there)');
    } finally {
      rmSync(workDir, { recursive: true, force: true });
    }
  });
});

/**
 * End-to-end harness: a real broker (the `convoke` binary cargo built) with its browser
 * listener and a development certificate made at start, a static server for client/web,
 * and headless Chromium (Debian's `chromium`, driven by playwright-core) whose pages use
 * the SDK over WebTransport.
 *
 * Environment: CONVOKE_BIN (default ../../target/debug/convoke from client/web),
 * CHROMIUM (default /usr/bin/chromium). tests/tests/web_sdk.rs sets both and runs these
 * tests from `cargo test`.
 */

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';

/** client/web (this file is build/test/e2e/harness.js). */
export const WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const REPO_DIR = resolve(WEB_DIR, '../..');

export function convokeBin(): string {
  return process.env.CONVOKE_BIN ?? join(REPO_DIR, 'target/debug/convoke');
}

export function chromiumPath(): string {
  return process.env.CHROMIUM ?? '/usr/bin/chromium';
}

/** Why the end-to-end tests cannot run here, or undefined. */
export function missingTool(): string | undefined {
  if (!existsSync(chromiumPath())) return `no chromium at ${chromiumPath()} (apt-get install chromium)`;
  if (!existsSync(convokeBin())) return `no broker binary at ${convokeBin()} (cargo build -p convoke-broker)`;
  return undefined;
}

/** A broker process with its browser listener. */
export class BrokerProcess {
  readonly dataDir: string;
  child!: ChildProcess;
  quic = '';
  /** `https://127.0.0.1:PORT/convoke` */
  url = '';
  /** The development certificate's SHA-256, hex. */
  certHash = '';
  log = '';
  /** The QUIC listen address (`--listen`); a restart sets it to the port it had. */
  quicListen = '127.0.0.1:0';

  constructor(private readonly settings: Record<string, string> = {}) {
    this.dataDir = mkdtempSync(join(tmpdir(), 'convoke-e2e-'));
  }

  async start(): Promise<void> {
    const args = [
      'serve', '--data-dir', this.dataDir, '--listen', this.quicListen, '--metrics-listen', '',
      '--set', 'webtransport.listen=127.0.0.1:0', '--set', 'webtransport.dev_certificate=true',
      '--set', 'log.level=warn',
    ];
    for (const [k, v] of Object.entries(this.settings)) args.push('--set', `${k}=${v}`);
    this.child = spawn(convokeBin(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stderr!.on('data', (d: Buffer) => { this.log += d.toString(); });
    await new Promise<void>((ok, fail) => {
      let out = '';
      const timer = setTimeout(() => fail(new Error(`broker not ready in 30 s:\n${out}\n${this.log}`)), 30_000);
      this.child.on('exit', (code) => fail(new Error(`broker exited (${code}):\n${out}\n${this.log}`)));
      this.child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const wt = /convoke webtransport=(\S+) path=(\S+) cert_sha256=([0-9a-f]{64})/.exec(out);
        const ready = /convoke ready quic=(\S+)/.exec(out);
        if (wt && ready) {
          clearTimeout(timer);
          this.url = `https://${wt[1]}${wt[2]}`;
          this.certHash = wt[3]!;
          this.quic = ready[1]!;
          ok();
        }
      });
    });
  }

  /** A token for `user`, minted by `convoke token` from the data dir's secret. */
  token(user: string, opts: { admin?: boolean; ttl?: string } = {}): string {
    const args = ['token', '--data-dir', this.dataDir, '--user', user];
    if (opts.admin) args.push('--admin');
    if (opts.ttl) args.push('--ttl', opts.ttl);
    return execFileSync(convokeBin(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  }

  /**
   * Stops the broker gracefully (its sessions end with SHUTDOWN) and starts it again on the
   * same data dir and ports; its development certificate (and so `certHash`) is new.
   */
  async restart(): Promise<void> {
    const exited = new Promise((ok) => this.child.once('exit', ok));
    this.child.kill('SIGTERM');
    await exited;
    this.quicListen = this.quic;
    this.settings['webtransport.listen'] = new URL(this.url).host;
    await this.start();
  }

  async stop(): Promise<void> {
    if (this.child && this.child.exitCode === null) {
      const exited = new Promise((ok) => this.child.once('exit', ok));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.png': 'image/png',
};

/** Serves `root` on 127.0.0.1 (a page from http://127.0.0.1 is a secure context). */
export async function serveStatic(root: string, port = 0): Promise<{ server: Server; origin: string }> {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    const file = join(root, path.endsWith('/') ? `${path}index.html` : path);
    if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((ok) => server.listen(port, '127.0.0.1', ok));
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('no address');
  return { server, origin: `http://127.0.0.1:${addr.port}` };
}

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

/** A result as the page reports it: the value, or the error's name, code and message. */
export type Outcome = { ok: true; value: unknown } | { ok: false; name: string; code?: number; message: string };

/**
 * Opens a page at `origin` and tries to connect with `token`: 'ok', or the error's name,
 * code and message (the page's console lines after it).
 */
export async function tryConnect(
  browser: Browser,
  origin: string,
  broker: BrokerProcess,
  token: string,
  url = broker.url,
): Promise<{ result: string; console: string[] }> {
  const page = await browser.newPage();
  const console: string[] = [];
  page.on('console', (m: ConsoleMessage) => console.push(m.text()));
  await page.goto(`${origin}/test/e2e/page.html`);
  await page.waitForFunction(() => (window as unknown as { sdkLoaded?: boolean }).sdkLoaded === true);
  const result = await page.evaluate(
    async ({ url, token, hash }) => {
      const w = window as unknown as Record<string, any>;
      const value = new Uint8Array(hash.match(/../g)!.map((h: string) => parseInt(h, 16)));
      try {
        const c = await w.sdk.connect({ url, token, deviceId: 'probe', serverCertificateHashes: [{ algorithm: 'sha-256', value }] });
        c.close?.();
        return 'ok';
      } catch (e) {
        const err = e as { name?: string; code?: number; message?: string };
        return `${err.name} ${err.code ?? ''} ${err.message}`;
      }
    },
    { url, token, hash: broker.certHash },
  );
  await page.close();
  return { result, console };
}

/** One user in one page, connected over WebTransport. */
export class WebUser {
  readonly console: string[] = [];

  private constructor(readonly user: string, readonly page: Page) {}

  static async open(browser: Browser, origin: string, broker: BrokerProcess, user: string, deviceId = 'web'): Promise<WebUser> {
    const page = await browser.newPage();
    const u = new WebUser(user, page);
    page.on('console', (m: ConsoleMessage) => u.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => u.console.push(`pageerror: ${e.message}`));
    await page.goto(`${origin}/test/e2e/page.html`);
    await page.waitForFunction(() => (window as unknown as { sdkLoaded?: boolean }).sdkLoaded === true);
    const connected = await page.evaluate(
      async ({ url, token, hash, deviceId }) => {
        const w = window as unknown as Record<string, any>;
        const value = new Uint8Array(hash.match(/../g)!.map((h: string) => parseInt(h, 16)));
        w.events = [];
        w.messages = [];
        w.disconnected = [];
        try {
          w.connection = await w.sdk.connect({
            url, token, deviceId,
            serverCertificateHashes: [{ algorithm: 'sha-256', value }],
            handlers: {
              e2e: {
                onGroupEvent: (e: unknown) => w.events.push(e),
                onGroupMessage: (m: unknown) => w.messages.push(m),
                onDisconnected: (e: Error) => w.disconnected.push(String(e)),
              },
            },
          });
          return 'ok';
        } catch (e) {
          return `connect failed: ${String(e)} ${(e as { code?: number }).code ?? ''}`;
        }
      },
      { url: broker.url, token: broker.token(user), hash: broker.certHash, deviceId },
    );
    if (connected !== 'ok') throw new Error(`${user}: ${connected}\nconsole:\n${u.console.join('\n')}`);
    return u;
  }

  /**
   * Runs `code` in the page with `connection` bound (e.g. the seed's
   * `connection.acceptGroupInvite({invitee: 'bob', groupId: '12'})`) and reports its outcome.
   */
  async run(code: string, vars: Record<string, unknown> = {}): Promise<Outcome> {
    return this.page.evaluate(
      async ({ code, vars }) => {
        const w = window as unknown as Record<string, any>;
        const names = ['connection', ...Object.keys(vars)];
        const f = new Function(...names, `return (async () => (${code}))();`);
        try {
          const value = await f(w.connection, ...Object.values(vars));
          return { ok: true as const, value: value === undefined ? null : JSON.parse(JSON.stringify(value, (_k, v) => (v instanceof Uint8Array ? Array.from(v) : v))) };
        } catch (e) {
          const err = e as { name?: string; code?: number; message?: string };
          return { ok: false as const, name: err.name ?? 'Error', code: err.code, message: err.message ?? String(e) };
        }
      },
      { code, vars },
    );
  }

  /** Runs `code` and expects success; returns the value. */
  async ok<T = any>(code: string, vars: Record<string, unknown> = {}): Promise<T> {
    const r = await this.run(code, vars);
    if (!r.ok) throw new Error(`${this.user}: ${code} failed: ${r.name} ${r.code ?? ''} ${r.message}`);
    return r.value as T;
  }

  /** Runs `code` and expects the broker's error `code`. */
  async fails(code: string, errorCode: number, vars: Record<string, unknown> = {}): Promise<string> {
    const r = await this.run(code, vars);
    if (r.ok) throw new Error(`${this.user}: ${code} succeeded, expected error ${errorCode}`);
    if (r.code !== errorCode) throw new Error(`${this.user}: ${code} failed with ${r.code} (${r.message}), expected ${errorCode}`);
    return r.message;
  }

  /** The group events this page's handler received so far. */
  async events(): Promise<{ operation: string; groupId: string; from: string; users: string[]; detail: any }[]> {
    return this.page.evaluate(() => JSON.parse(JSON.stringify((window as unknown as Record<string, unknown>).events)));
  }

  async messages(): Promise<any[]> {
    return this.page.evaluate(() => JSON.parse(JSON.stringify((window as unknown as Record<string, unknown>).messages)));
  }

  /** Operations of the events received so far for `groupId`. */
  async ops(groupId: string): Promise<string[]> {
    return (await this.events()).filter((e) => e.groupId === groupId).map((e) => e.operation);
  }

  async close(): Promise<void> {
    await this.page.close();
  }
}

/** Polls `check` until it returns true (or throws its last error after `ms`). */
export async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`not within ${ms} ms: ${what}${last ? ` (${String(last)})` : ''}`);
}

/**
 * Issue #14 "Measured": messages per second one browser tab receives from a busy group, and
 * the latency from send to the page's onGroupMessage handler, beside a Rust client
 * (`convoke-cli watch`) in the same group on the same broker. Not a test: `npm run
 * bench:browser` (after `cargo build --release -p convoke-broker -p convoke-client`).
 *
 * A sender page sends RATE messages/s for SECONDS (pipelined, in 5 ms batches, each payload
 * carrying its send time); the tab and the Rust client receive them. Latency is wall clock:
 * sender, tab and this process share the machine's clock (performance.timeOrigin +
 * performance.now()). The Rust figure includes convoke-cli's JSON line on a pipe to this
 * process (tens of microseconds). Env: CONVOKE_BIN (default target/release/convoke),
 * CONVOKE_CLI (default target/release/convoke-cli), RATE (default 2000), SECONDS (10).
 */

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Server } from 'node:http';
import { BrokerProcess, launchChromium, REPO_DIR, serveStatic, WEB_DIR, WebUser } from './harness.js';

const RATE = Number(process.env.RATE ?? 2000);
const SECONDS = Number(process.env.SECONDS ?? 10);
const now = () => performance.timeOrigin + performance.now();

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function summary(name: string, lat: number[], first: number, last: number, sent: number): string {
  const s = [...lat].sort((a, b) => a - b);
  const secs = (last - first) / 1000;
  return `${name}: received ${lat.length}/${sent}, ${(lat.length / secs).toFixed(0)} msgs/s over ${secs.toFixed(2)} s, ` +
    `latency p50 ${pct(s, 50).toFixed(2)} ms, p99 ${pct(s, 99).toFixed(2)} ms, max ${s.at(-1)?.toFixed(2)} ms`;
}

async function main(): Promise<void> {
  process.env.CONVOKE_BIN ??= join(REPO_DIR, 'target/release/convoke');
  const cli = process.env.CONVOKE_CLI ?? join(REPO_DIR, 'target/release/convoke-cli');
  for (const bin of [process.env.CONVOKE_BIN, cli]) {
    if (!existsSync(bin)) throw new Error(`no ${bin}: cargo build --release -p convoke-broker -p convoke-client`);
  }
  const broker = new BrokerProcess({ 'quotas.messages_per_sec': '0', 'quotas.requests_per_sec': '0' });
  await broker.start();
  let http: { server: Server; origin: string } | undefined;
  const browser = await launchChromium();
  try {
    http = await serveStatic(WEB_DIR);
    const sender = await WebUser.open(browser, http.origin, broker, 'sender');
    const tab = await WebUser.open(browser, http.origin, broker, 'tab');
    // The Rust client logs in once so that it exists, then joins through the group's members.
    const rustToken = broker.token('rust');
    const args = ['--server', broker.quic, '--token', rustToken, '--ca', join(broker.dataDir, 'tls/cert.pem'), 'watch'];
    const watch = spawn(cli, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    const rustLat: number[] = [];
    let rustFirst = 0;
    let rustLast = 0;
    createInterface({ input: watch.stdout }).on('line', (line) => {
      const at = now();
      const m = JSON.parse(line) as { push?: string; payload?: string };
      if (m.push !== 'message' || !m.payload?.startsWith('{')) return;
      const { t } = JSON.parse(m.payload) as { t: number };
      if (!rustFirst) rustFirst = at;
      rustLast = at;
      rustLat.push(at - t);
    });
    await new Promise((r) => setTimeout(r, 1500));
    const groupId = await sender.ok("connection.createGroup({data: {groupname: 'bench', members: ['tab', 'rust'], public: false, inviteNeedConfirm: false}}).then(r => r.groupid)");
    await tab.page.evaluate(() => {
      const w = window as unknown as Record<string, any>;
      w.lat = [];
      w.first = 0;
      w.last = 0;
      const dec = new TextDecoder();
      w.connection.addEventHandler('bench', {
        onGroupMessage: (m: { payload: Uint8Array }) => {
          const at = performance.timeOrigin + performance.now();
          const text = dec.decode(m.payload);
          if (!text.startsWith('{')) return;
          if (!w.first) w.first = at;
          w.last = at;
          w.lat.push(at - JSON.parse(text).t);
        },
      });
    });
    await new Promise((r) => setTimeout(r, 500));
    const sent = await sender.page.evaluate(
      async ({ groupId, rate, seconds }) => {
        const w = window as unknown as Record<string, any>;
        const total = rate * seconds;
        const start = performance.now();
        const pending: Promise<unknown>[] = [];
        let i = 0;
        while (i < total) {
          const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
          for (; i < due; i++) {
            const t = performance.timeOrigin + performance.now();
            pending.push(w.connection.sendGroupMessage({ groupId, payload: JSON.stringify({ t, i }) }));
          }
          await new Promise((r) => setTimeout(r, 5));
        }
        await Promise.all(pending);
        return total;
      },
      { groupId, rate: RATE, seconds: SECONDS },
    );
    await new Promise((r) => setTimeout(r, 3000));
    const tabResult = await tab.page.evaluate(() => {
      const w = window as unknown as Record<string, any>;
      return { lat: w.lat as number[], first: w.first as number, last: w.last as number };
    });
    watch.kill('SIGINT');
    console.log(`sent ${sent} messages at ${RATE}/s for ${SECONDS} s (one sender page, one group of 3)`);
    console.log(summary('browser tab (SDK over WebTransport)', tabResult.lat, tabResult.first, tabResult.last, sent));
    console.log(summary('Rust client (convoke-cli watch, QUIC)', rustLat, rustFirst, rustLast, sent));
  } finally {
    await browser.close();
    http?.server.close();
    await broker.stop();
  }
}

await main();

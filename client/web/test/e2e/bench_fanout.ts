/**
 * Issue #14 "Measured": messages per second one browser tab receives from a busy group, and
 * the latency from send to the page's onGroupMessage handler, beside a Rust client
 * (`convoke-cli watch`) in the same group on the same broker. Not a test: `npm run
 * bench:browser` (after `cargo build --release -p convoke-broker -p convoke-client`).
 *
 * A sender page sends RATE messages/s for SECONDS (pipelined, in 5 ms batches, each payload
 * carrying its send time); the tab and the Rust client receive them. With SENDERS=N, a fleet
 * of N Rust clients sends instead (client/examples/bench_senders.rs: RATE/N each, pipelined,
 * open loop, each payload carrying its due time, so a late sender counts in the latency)
 * into a group the tab owns; no sender runs in the browser. Latency is wall clock: senders,
 * tab and this process share the machine's clock (performance.timeOrigin + performance.now(),
 * SystemTime in Rust; the offsets of the page's and this process's clocks from Date.now()
 * are printed). The Rust figure includes convoke-cli's JSON line on a pipe to this process
 * (tens of microseconds). Env: CONVOKE_BIN (default target/release/convoke), CONVOKE_CLI
 * (default target/release/convoke-cli), CONVOKE_SENDERS (default
 * target/release/examples/bench_senders: `cargo build --release -p convoke-client --example
 * bench_senders`), RATE (default 2000), SECONDS (10), SENDERS (default 0: the sender page).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Server } from 'node:http';
import { BrokerProcess, launchChromium, REPO_DIR, serveStatic, WEB_DIR, WebUser } from './harness.js';

const RATE = Number(process.env.RATE ?? 2000);
const SECONDS = Number(process.env.SECONDS ?? 10);
const SENDERS = Number(process.env.SENDERS ?? 0);
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

/** Starts the Rust sender fleet; resolves once its clients are logged in. */
async function startFleet(broker: BrokerProcess, bin: string): Promise<{ child: ChildProcess; send: (groupId: string) => Promise<{ sent: number; ok: number; err: number; sent_secs: number; answered_secs: number }> }> {
  const args = ['--server', broker.quic, '--ca', join(broker.dataDir, 'tls/cert.pem'), '--rate', String(RATE), '--seconds', String(SECONDS)];
  for (let n = 0; n < SENDERS; n++) args.push('--token', broker.token(`sender-${n}`));
  const fleet = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: fleet.stdout })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.value !== 'ready') throw new Error(`sender fleet: ${first.value ?? 'exited'}`);
  return {
    child: fleet,
    send: async (groupId) => {
      fleet.stdin.end(`${groupId}\n`);
      const last = await lines.next();
      if (last.done) throw new Error('sender fleet exited without a summary');
      return JSON.parse(last.value);
    },
  };
}

async function main(): Promise<void> {
  process.env.CONVOKE_BIN ??= join(REPO_DIR, 'target/release/convoke');
  const cli = process.env.CONVOKE_CLI ?? join(REPO_DIR, 'target/release/convoke-cli');
  const fleetBin = process.env.CONVOKE_SENDERS ?? join(REPO_DIR, 'target/release/examples/bench_senders');
  for (const bin of [process.env.CONVOKE_BIN, cli, ...(SENDERS ? [fleetBin] : [])]) {
    if (!existsSync(bin)) throw new Error(`no ${bin}: cargo build --release -p convoke-broker -p convoke-client --bin convoke --bin convoke-cli --example bench_senders`);
  }
  const broker = new BrokerProcess({ 'quotas.messages_per_sec': '0', 'quotas.requests_per_sec': '0' });
  await broker.start();
  let http: { server: Server; origin: string } | undefined;
  let fleet: Awaited<ReturnType<typeof startFleet>> | undefined;
  const browser = await launchChromium();
  try {
    http = await serveStatic(WEB_DIR);
    const sender = SENDERS ? undefined : await WebUser.open(browser, http.origin, broker, 'sender');
    fleet = SENDERS ? await startFleet(broker, fleetBin) : undefined;
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
    const members = sender ? ['tab', 'rust'] : ['rust', ...Array.from({ length: SENDERS }, (_, n) => `sender-${n}`)];
    const groupId = await (sender ?? tab).ok(`connection.createGroup({data: {groupname: 'bench', members: ${JSON.stringify(members)}, public: false, inviteNeedConfirm: false}}).then(r => r.groupid)`);
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
    const offsets = { node: now() - Date.now(), tab: await tab.page.evaluate(() => performance.timeOrigin + performance.now() - Date.now()) };
    const fleetResult = fleet ? await fleet.send(groupId) : undefined;
    const sent = fleetResult?.sent ?? await sender!.page.evaluate(
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
    // Until both have all messages, or neither received one for 3 s (a backlog drains first).
    for (let last = -1, quiet = 0; quiet < 6; ) {
      await new Promise((r) => setTimeout(r, 500));
      const count = rustLat.length + await tab.page.evaluate(() => (window as unknown as { lat: number[] }).lat.length);
      if (count === 2 * sent) break;
      quiet = count === last ? quiet + 1 : 0;
      last = count;
    }
    const tabResult = await tab.page.evaluate(() => {
      const w = window as unknown as Record<string, any>;
      return { lat: w.lat as number[], first: w.first as number, last: w.last as number, disconnected: w.disconnected as string[] };
    });
    watch.kill('SIGINT');
    if (fleetResult) {
      console.log(`sent ${sent} messages at ${RATE}/s for ${SECONDS} s (${SENDERS} Rust senders, ${RATE / SENDERS}/s each, one group of ${SENDERS + 2}): ` +
        `${fleetResult.ok} answered Ok, ${fleetResult.err} failed, last sent after ${fleetResult.sent_secs.toFixed(2)} s, ` +
        `last answered after ${fleetResult.answered_secs.toFixed(2)} s`);
    } else {
      console.log(`sent ${sent} messages at ${RATE}/s for ${SECONDS} s (one sender page, one group of 3)`);
    }
    console.log(`clock offsets from Date.now(): this process ${offsets.node.toFixed(2)} ms, tab ${offsets.tab.toFixed(2)} ms`);
    console.log(summary('browser tab (SDK over WebTransport)', tabResult.lat, tabResult.first, tabResult.last, sent) +
      (tabResult.disconnected.length ? `; disconnected: ${tabResult.disconnected.join(', ')}` : ''));
    console.log(summary('Rust client (convoke-cli watch, QUIC)', rustLat, rustFirst, rustLast, sent));
  } finally {
    fleet?.child.kill();
    await browser.close();
    http?.server.close();
    await broker.stop();
  }
}

await main();

/**
 * `connect({ urls })`: a server list dialled in the Rust client's order, over a stand-in
 * WebTransport whose servers the test makes unreachable, refusing, or closing: the first
 * connection tries each server once, in order; after a drop the same server first, then
 * the next ones in turn; after a SHUTDOWN close the next one at once; `url` still works
 * and comes first when both are given.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connect, ConvokeError, serverList, type ByteStream, type Connection, type WebTransportLike } from '../src/index.js';
import { FakeBroker } from './fake_broker.js';

/** The servers of one test: who is up, who refuses, every session opened. */
class Cluster {
  /** Every URL dialled, in order. */
  readonly dialled: string[] = [];
  readonly sessions: { url: string; close: (info: { closeCode?: number; reason?: string }) => void }[] = [];
  readonly down = new Set<string>();
  readonly refusing = new Map<string, number>();

  readonly WebTransport = (() => {
    const cluster = this;
    return class implements WebTransportLike {
      readonly ready: Promise<unknown>;
      readonly closed: Promise<{ closeCode?: number; reason?: string } | undefined>;
      readonly incomingUnidirectionalStreams = new ReadableStream<ReadableStream<Uint8Array>>();
      private readonly broker: FakeBroker;
      private end!: (info: { closeCode?: number; reason?: string }) => void;

      constructor(url: string) {
        cluster.dialled.push(url);
        this.ready = cluster.down.has(url) ? Promise.reject(new Error(`${url} is unreachable`)) : Promise.resolve();
        this.ready.catch(() => {});
        this.closed = new Promise((r) => (this.end = r));
        const code = cluster.refusing.get(url);
        this.broker = new FakeBroker((h) =>
          code !== undefined
            ? { type: 'refused', error: { code, message: 'refused' } }
            : h.type === 'hello'
              ? { type: 'welcome', welcome: { version: 3, userId: 'alice', appAdmin: false, sessionId: '1', serverTime: 1 } }
              : undefined,
        );
        cluster.sessions.push({ url, close: (info) => this.end(info) });
      }

      async createBidirectionalStream(): Promise<ByteStream> {
        return this.broker.stream;
      }

      close(info?: { closeCode?: number; reason?: string }): void {
        this.end(info ?? {});
      }
    };
  })();

  /** The broker of the last session closes it (with `closeCode`, or lost without one). */
  closeLast(closeCode?: number): void {
    this.sessions.at(-1)!.close(closeCode === undefined ? {} : { closeCode, reason: 'going away' });
  }
}

const A = 'https://127.0.0.1:4001/convoke';
const B = 'https://127.0.0.1:4002/convoke';
const C = 'https://127.0.0.1:4003/convoke';

function options(cluster: Cluster) {
  return {
    token: 't',
    deviceId: 'd',
    WebTransport: cluster.WebTransport,
    reconnect: { initialDelayMs: 5, maxDelayMs: 20 },
    heartbeatMs: 0,
    events: false,
  };
}

async function until(f: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Resolves once `c` is up again after a drop. */
function reconnected(c: Connection): Promise<void> {
  return new Promise((r) => c.addEventHandler('t', { onReconnected: () => r() }));
}

describe('a server list', () => {
  test('the first connection tries each server once, in order, until one answers', async () => {
    const cluster = new Cluster();
    cluster.down.add(A).add(B);
    const c = await connect({ ...options(cluster), urls: [A, B, C] });
    assert.deepEqual(cluster.dialled, [A, B, C]);
    c.close();

    const none = new Cluster();
    none.down.add(A).add(B);
    await assert.rejects(connect({ ...options(none), urls: [A, B] }), (e: unknown) => e instanceof Error && e.message.includes(`${B} is unreachable`));
    assert.deepEqual(none.dialled, [A, B]);
  });

  test('a refusal retrying cannot fix (a bad token) stops the first connection at once', async () => {
    const cluster = new Cluster();
    cluster.refusing.set(A, 28);
    await assert.rejects(connect({ ...options(cluster), urls: [A, B] }), (e: unknown) => e instanceof ConvokeError && e.code === 28);
    assert.deepEqual(cluster.dialled, [A]);
  });

  test('after a drop: the same server first, then the next ones in turn', async () => {
    const cluster = new Cluster();
    const c = await connect({ ...options(cluster), urls: [A, B, C] });
    // A vanishes (its sessions are lost without a close code) and does not come back.
    cluster.down.add(A);
    const back = reconnected(c);
    cluster.closeLast();
    await back;
    assert.deepEqual(cluster.dialled, [A, A, B]);
    // B drops the link but is still there: the same server again.
    const again = reconnected(c);
    cluster.closeLast();
    await again;
    assert.deepEqual(cluster.dialled, [A, A, B, B]);
    c.close();
  });

  test('after a SHUTDOWN close the next server at once; the list wraps around', async () => {
    const cluster = new Cluster();
    const c = await connect({ ...options(cluster), urls: [A, B] });
    let back = reconnected(c);
    cluster.closeLast(4);
    await back;
    assert.deepEqual(cluster.dialled, [A, B]);
    back = reconnected(c);
    cluster.closeLast(4);
    await back;
    assert.deepEqual(cluster.dialled, [A, B, A]);
    await until(() => c.connected, 'connected');
    c.close();
  });

  test('`url` still works alone; with `urls` it comes first; duplicates go; none is -3', async () => {
    const cluster = new Cluster();
    cluster.down.add(A);
    const c = await connect({ ...options(cluster), url: A, urls: [A, B] });
    assert.deepEqual(cluster.dialled, [A, B]);
    c.close();
    assert.deepEqual(serverList({ url: C }), [C]);
    assert.deepEqual(serverList({ url: A, urls: [B, A, C] }), [A, B, C]);
    await assert.rejects(connect({ ...options(cluster), urls: [] }), (e: unknown) => e instanceof ConvokeError && e.code === -3);
    await assert.rejects(connect({ ...options(cluster), urls: [A, 7 as unknown as string] }), (e: unknown) => e instanceof ConvokeError && e.code === -3 && e.message.includes('urls[1]'));
  });
});

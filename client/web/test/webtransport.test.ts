/**
 * `connect` over a stand-in for the browser's WebTransport: the control stream is the first
 * bidirectional stream, pushes come on the first incoming unidirectional stream, each
 * transfer opens a new bidirectional stream, and the transport's end is the connection's.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  connect,
  ConnectionError,
  ConvokeError,
  encodeFrame,
  type ByteStream,
  type Push,
  type WebTransportLike,
} from '../src/index.js';
import { FakeBroker } from './fake_broker.js';

class FakeWebTransport implements WebTransportLike {
  static last: FakeWebTransport | undefined;
  static broker: () => FakeBroker = () => new FakeBroker();
  readonly ready: Promise<unknown>;
  readonly closed: Promise<{ closeCode?: number; reason?: string } | undefined>;
  readonly incomingUnidirectionalStreams: ReadableStream<ReadableStream<Uint8Array>>;
  readonly broker = FakeWebTransport.broker();
  bidirectional = 0;
  closedWith: { closeCode?: number; reason?: string } | undefined;
  private endClosed!: (info: { closeCode?: number; reason?: string }) => void;
  private pushWriter: WritableStreamDefaultWriter<Uint8Array>;

  constructor(
    readonly url: string,
    readonly options?: unknown,
  ) {
    FakeWebTransport.last = this;
    this.ready = url.includes('unreachable') ? Promise.reject(new Error('Opening handshake failed')) : Promise.resolve();
    this.ready.catch(() => {});
    this.closed = new Promise((r) => (this.endClosed = r));
    const push = new TransformStream<Uint8Array, Uint8Array>();
    this.pushWriter = push.writable.getWriter();
    this.incomingUnidirectionalStreams = new ReadableStream({
      start: (c) => c.enqueue(push.readable),
    });
  }

  async createBidirectionalStream(): Promise<ByteStream> {
    this.bidirectional++;
    if (this.bidirectional === 1) return this.broker.stream;
    // A transfer stream: answers a download of an empty file.
    const up = new TransformStream<Uint8Array, Uint8Array>();
    const down = new TransformStream<Uint8Array, Uint8Array>();
    void up.readable.pipeTo(new WritableStream()).catch(() => {});
    const w = down.writable.getWriter();
    void w
      .write(encodeFrame('TransferReply', { type: 'outcome', result: { ok: true, value: { fileId: '1', fileName: 'e', fileOwner: 'a', fileSize: '0', created: 0, contentType: '', sha256: '', secret: '' } } }))
      .then(() => w.close());
    return { readable: down.readable, writable: up.writable };
  }

  push(p: Push): Promise<void> {
    return this.pushWriter.write(encodeFrame('Push', p));
  }

  close(info?: { closeCode?: number; reason?: string }): void {
    this.closedWith ??= info ?? {};
    this.endClosed(info ?? {});
  }

  /** The broker (or the network) ends the session. */
  brokerCloses(info: { closeCode?: number; reason?: string }): void {
    this.endClosed(info);
  }
}

const opts = { url: 'https://127.0.0.1:4434/convoke', token: 't', deviceId: 'd', WebTransport: FakeWebTransport };

describe('connect over WebTransport', () => {
  test('the hello goes on the first bidirectional stream; certificate hashes reach the transport', async () => {
    const hash = { algorithm: 'sha-256' as const, value: new Uint8Array(32) };
    const c = await connect({ ...opts, serverCertificateHashes: [hash] });
    const wt = FakeWebTransport.last!;
    assert.equal(wt.url, opts.url);
    assert.deepEqual(wt.options, { serverCertificateHashes: [hash] });
    assert.equal(wt.broker.frames[0]!.type, 'hello');
    assert.equal(c.user, 'alice');
    await c.getGroupAdmin({ groupId: '1' }).catch(() => {});
    // (The resume's getJoinedGroups at the first link goes on it too.)
    assert.equal(wt.broker.requests.filter((r) => r.request.method === 'getGroupAdmin').length, 1);
    c.close();
  });

  test('pushes from the first incoming unidirectional stream reach the handlers given to connect', async () => {
    const seen: string[] = [];
    const c = await connect({
      ...opts,
      handlers: {
        h: {
          onConnected: () => seen.push('connected'),
          onGroupEvent: (e) => seen.push(e.operation),
        },
      },
    });
    const wt = FakeWebTransport.last!;
    await wt.push({ push: 'group', event: { operation: 'memberPresence', groupId: '1', groupName: 'g', from: 'a', users: [], detail: { kind: 'none' }, timestamp: 0 } });
    const deadline = Date.now() + 5000;
    while (seen.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    assert.deepEqual(seen, ['connected', 'memberPresence']);
    c.close();
  });

  test('a transfer opens a new bidirectional stream', async () => {
    const c = await connect(opts);
    const blob = await c.downloadGroupSharedFile({ groupId: '1', fileId: '1' });
    assert.equal(blob.size, 0);
    assert.equal(FakeWebTransport.last!.bidirectional, 2);
    c.close();
  });

  test("the transport's end ends the connection (reconnect off); closing the connection closes the transport", async () => {
    const c = await connect({ ...opts, reconnect: false });
    const wt = FakeWebTransport.last!;
    let ended: ConnectionError | undefined;
    c.session.onEnd((e) => (ended = e));
    wt.brokerCloses({ closeCode: 4, reason: 'broker shutting down' });
    const deadline = Date.now() + 5000;
    while (!ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    assert.ok(ended);
    assert.equal(ended.closeCode, 4);
    assert.ok(ended.message.includes('broker shutting down'));
    await assert.rejects(c.leaveGroup({ groupId: '1' }), ConnectionError);

    const c2 = await connect(opts);
    const wt2 = FakeWebTransport.last!;
    c2.close();
    assert.deepEqual(wt2.closedWith, { closeCode: 0, reason: 'closed by the application' });
  });

  test('a refused hello closes the transport and rejects with the code', async () => {
    FakeWebTransport.broker = () => new FakeBroker(() => ({ type: 'refused', error: { code: 28, message: 'bad token' } }));
    try {
      await assert.rejects(connect(opts), (e: unknown) => e instanceof ConvokeError && e.code === 28);
      assert.ok(FakeWebTransport.last!.closedWith);
    } finally {
      FakeWebTransport.broker = () => new FakeBroker();
    }
  });

  test('a refusal that comes only as the close reason (the close overtook the frame) is the ConvokeError, and is not retried', async () => {
    let reason = 'error 28 TOKEN_NOT_ASSIGNED: token revoked';
    let welcomes = 0;
    // The broker closes with HANDSHAKE_REFUSED and the refusal as its reason; no frame.
    FakeWebTransport.broker = () => {
      const b: FakeBroker = new FakeBroker(() => {
        if (welcomes-- > 0) return { type: 'welcome', welcome: { version: 3, userId: 'alice', appAdmin: false, sessionId: '1', serverTime: 0 } };
        FakeWebTransport.last!.brokerCloses({ closeCode: 5, reason });
        void b.end();
        return undefined;
      });
      return b;
    };
    try {
      await assert.rejects(connect(opts), (e: unknown) => e instanceof ConvokeError && e.code === 28 && e.detail === 'token revoked');
      // Text that is not a refusal (here: a name that is not the code's) stays the close.
      reason = 'error 28 GROUP_NOT_EXIST: x';
      await assert.rejects(connect(opts), (e: unknown) => e instanceof ConnectionError && e.closeCode === 5 && e.message.includes(reason));
      reason = 'error 28 TOKEN_NOT_ASSIGNED: token revoked';
      // At a reconnect (the token was revoked meanwhile): the connection ends, no retry.
      welcomes = 1;
      let transports = 0;
      const counting = class extends FakeWebTransport {
        constructor(url: string, options?: unknown) {
          super(url, options);
          transports++;
        }
      };
      const closed: unknown[] = [];
      const c = await connect({ ...opts, WebTransport: counting, reconnect: { initialDelayMs: 5, maxDelayMs: 10 }, handlers: { h: { onClosed: (e) => closed.push(e) } } });
      FakeWebTransport.last!.brokerCloses({ closeCode: 4, reason: 'restarting' });
      const deadline = Date.now() + 5000;
      while (closed.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(closed.length, 1);
      assert.ok(closed[0] instanceof ConvokeError && closed[0].code === 28, String(closed[0]));
      assert.equal(transports, 2, 'the first link and one refused attempt');
      await assert.rejects(c.getGroupAdmin({ groupId: '1' }), (e: unknown) => e instanceof ConvokeError && e.code === 28);
    } finally {
      FakeWebTransport.broker = () => new FakeBroker();
    }
  });

  test('an unreachable broker, and no WebTransport at all, are ConnectionErrors', async () => {
    await assert.rejects(connect({ ...opts, url: 'https://unreachable.invalid/' }), (e: unknown) => e instanceof ConnectionError && e.message.includes('Opening handshake failed'));
    const { WebTransport: _, ...without } = opts;
    await assert.rejects(connect(without), (e: unknown) => e instanceof ConnectionError && e.message.includes('no WebTransport'));
  });
});

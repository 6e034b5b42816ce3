/**
 * Shared-file transfers across a lost link, on a reconnecting connection over a fake
 * transport: a fake broker that keeps an interrupted upload by its id (answering a resume
 * with `ResumeAt` at what it holds, or the entry of one that completed) and serves
 * downloads from an offset; links the test drops in the middle of a transfer (the control
 * stream ends, every transfer stream of that link fails).
 *
 * An upload continues from the broker's offset with the same upload id and is recorded
 * once, also when only its answer was lost; a download continues from the bytes it has;
 * progress never goes backwards; a cancel or close() while the transfer waits for the next
 * link, a final refusal, a busy refusal repeated for the request timeout, and a
 * connection that does not reconnect end it. A file call made
 * while the link is down waits for the next one (also with no request timeout); a file
 * that cannot be read ends its upload at once.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CHUNK_BYTES,
  Connection,
  ConnectionError,
  ConvokeError,
  encodeFrame,
  FrameDecoder,
  Session,
  type ByteStream,
  type Dialer,
  type Progress,
  type SharedFile,
  type TransferHeader,
  type TransferReply,
} from '../src/index.js';
import { FakeBroker } from './fake_broker.js';
import { rng } from './support.js';

type Upload = Extract<TransferHeader, { type: 'upload' }>;
type Download = Extract<TransferHeader, { type: 'download' }>;

/** One transfer stream as the broker saw it. */
interface Seen {
  link: number;
  header: TransferHeader;
  /** The bytes that came after the header on this stream. */
  body: number;
  /** The reset reason, when the client reset it. */
  aborted?: unknown;
}

interface Link {
  broker: FakeBroker;
  /** Fails every transfer stream of the link (the session is gone). */
  kill: ((why: string) => void)[];
}

const entryOf = (h: Upload, sha256 = 'feed'): SharedFile => ({
  fileId: '7',
  fileName: h.fileName,
  fileOwner: 'alice',
  fileSize: h.size,
  created: 1,
  contentType: h.contentType,
  sha256,
  secret: 's',
});

/** The broker side of every link: kept and completed uploads by id, and one stored file. */
class FileWorld {
  readonly links: Link[] = [];
  readonly seen: Seen[] = [];
  /** Upload id -> the bytes the broker holds durably. */
  readonly kept = new Map<string, Uint8Array>();
  /** Upload id -> its entry, once recorded. */
  readonly completed = new Map<string, SharedFile>();
  /** Files recorded (a second record of one upload would be a duplicate file). */
  records: Uint8Array[] = [];
  /** Dials fail (the network is down) while this is set. */
  down = false;
  /** Called with the bytes this link's stream holds so far; the test drops the link from it. */
  onBytes: ((s: Seen, got: number) => void) | undefined;
  /** What an interrupted upload keeps of the `got` bytes that arrived (default all). */
  durable: (got: number) => number = (got) => got;
  /** The file downloads read. */
  file: Uint8Array = new Uint8Array(0);
  fileSha = 'feed';
  /** Answers a resumed upload with this instead of the kept offset. */
  refuseResume: { code: number; message: string } | undefined;
  /** Drops the link after recording an upload, before its answer. */
  loseVerdict = false;

  readonly dial: Dialer = async (hello) => {
    if (this.down) throw new ConnectionError('cannot open a WebTransport session: network down');
    const broker = new FakeBroker();
    broker.answer = (r) =>
      r.request.method === 'getJoinedGroups'
        ? { ok: true, value: { type: 'joinedGroups', groups: [] } }
        : { ok: true, value: { type: 'done' } };
    const session = await Session.open(broker.stream, hello, { requestTimeoutMs: 3000 });
    const link: Link = { broker, kill: [] };
    const index = this.links.push(link) - 1;
    return { session, openStream: async () => this.open(index) };
  };

  /** The network drops link `i` (default the last). */
  drop(i = this.links.length - 1): void {
    const link = this.links[i]!;
    void link.broker.end().catch(() => {});
    for (const k of link.kill.splice(0)) k('the session is gone');
  }

  private open(index: number): ByteStream {
    const up = new TransformStream<Uint8Array, Uint8Array>();
    const down = new TransformStream<Uint8Array, Uint8Array>();
    const reader = up.readable.getReader();
    const writer = down.writable.getWriter();
    let dead = false;
    this.links[index]!.kill.push((why) => {
      dead = true;
      void writer.abort(new Error(why)).catch(() => {});
      void reader.cancel(why).catch(() => {});
    });
    void this.serve(index, reader, writer, () => dead).catch(() => {});
    return { readable: down.readable, writable: up.writable };
  }

  private async serve(link: number, reader: ReadableStreamDefaultReader<Uint8Array>, writer: WritableStreamDefaultWriter<Uint8Array>, dead: () => boolean) {
    const frames = new FrameDecoder('TransferHeader');
    let header: TransferHeader | undefined;
    while (!header) {
      const { value, done } = await reader.read();
      if (done) return;
      frames.push(value);
      header = frames.next();
    }
    const s: Seen = { link, header, body: 0 };
    this.seen.push(s);
    const reply = (r: TransferReply) => writer.write(encodeFrame('TransferReply', r));
    if (header.type === 'download') return this.serveDownload(header, s, writer, reply);
    const h = header;
    let have: Uint8Array = new Uint8Array(0);
    if (h.resume) {
      if (this.refuseResume) return reply({ type: 'outcome', result: { ok: false, error: this.refuseResume } });
      const done = this.completed.get(h.uploadId);
      if (done) return reply({ type: 'outcome', result: { ok: true, value: done } });
      have = this.kept.get(h.uploadId) ?? new Uint8Array(0);
      await reply({ type: 'resumeAt', offset: String(have.length) });
    }
    const parts = [have];
    let got = have.length;
    const take = (b: Uint8Array) => {
      parts.push(b.slice());
      got += b.length;
      s.body += b.length;
    };
    take(frames.takeBuffered());
    try {
      while (got < Number(h.size)) {
        this.onBytes?.(s, got);
        if (dead()) throw new Error('dead');
        const { value, done } = await reader.read();
        if (done) break;
        take(value);
      }
    } catch {
      // The link is gone: keep what arrived (its durable part) for a resume.
      const all = concat(parts);
      this.kept.set(h.uploadId, all.subarray(0, this.durable(all.length)));
      return;
    }
    if (got !== Number(h.size)) return;
    const bytes = concat(parts);
    this.records.push(bytes);
    const entry = entryOf(h);
    this.completed.set(h.uploadId, entry);
    this.kept.delete(h.uploadId);
    if (this.loseVerdict) {
      this.loseVerdict = false;
      this.drop(link);
      return;
    }
    await reply({ type: 'outcome', result: { ok: true, value: entry } });
    await writer.close();
  }

  private async serveDownload(h: Download, s: Seen, writer: WritableStreamDefaultWriter<Uint8Array>, reply: (r: TransferReply) => Promise<void>) {
    const entry: SharedFile = { ...entryOf({ type: 'upload', groupId: h.groupId, fileName: 'f.bin', size: String(this.file.length), contentType: 'application/x-f', uploadId: '0', resume: false }, this.fileSha), fileId: h.fileId };
    await reply({ type: 'outcome', result: { ok: true, value: entry } });
    for (let at = Number(h.offset); at < this.file.length; at += 10_000) {
      this.onBytes?.(s, at);
      const chunk = this.file.subarray(at, at + 10_000);
      await writer.write(chunk);
      s.body += chunk.length;
      await new Promise((r) => setTimeout(r, 1));
    }
    await writer.close();
  }
}

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const fast = { initialDelayMs: 5, maxDelayMs: 20 };
const hello = { token: 't', deviceId: 'd' };

function randomBytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const r = rng(seed);
  return new Uint8Array(n).map(() => Math.floor(r() * 256));
}

async function until(f: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Progress never goes down and ends at the total. */
function assertProgress(progress: Progress[], total: number): void {
  const loaded = progress.map((p) => p.loaded);
  assert.deepEqual([...loaded].sort((a, b) => a - b), loaded, `progress goes forward: ${loaded.join(' ')}`);
  assert.equal(loaded.at(-1), total);
  assert.ok(progress.every((p) => p.total === total));
}

describe('an upload across a lost link', () => {
  test("continues on the next link from the broker's ResumeAt offset with the same id; the file is recorded once, byte for byte", async () => {
    const w = new FileWorld();
    const content = randomBytes(6 * CHUNK_BYTES + 17, 1);
    // The broker holds less than arrived (the rest was not durable): those bytes go again.
    w.durable = (got) => Math.max(0, got - 5000);
    w.onBytes = (s, got) => {
      if (s.link === 0 && got >= 2 * CHUNK_BYTES) {
        w.onBytes = undefined;
        w.drop(0);
      }
    };
    const c = await Connection.dial(w.dial, hello, { reconnect: fast });
    const progress: Progress[] = [];
    const events: string[] = [];
    const entry = await c.uploadGroupSharedFile({
      groupId: '12',
      file: new Blob([content], { type: 'application/x-test' }),
      fileName: 'big.bin',
      onFileUploadProgress: (p) => progress.push(p),
      onFileUploadComplete: () => events.push('complete'),
      onFileUploadError: (e) => events.push(`error ${e.message}`),
    });
    assert.deepEqual(events, ['complete']);
    assert.equal(entry.file_size, content.length);
    assert.equal(w.links.length, 2, 'reconnected once');
    assert.equal(w.records.length, 1, 'recorded once');
    assert.deepEqual(Buffer.from(w.records[0]!), Buffer.from(content), 'the same bytes');
    const [first, second] = w.seen as [Seen, Seen];
    assert.equal(w.seen.length, 2);
    const h1 = first.header as Upload;
    const h2 = second.header as Upload;
    assert.equal(h1.resume, false);
    assert.equal(h2.resume, true);
    assert.deepEqual({ ...h2, resume: false }, h1, 'the same upload: id, group, name, size, type');
    assert.equal(second.link, 1);
    const offset = content.length - second.body;
    assert.ok(offset > 0 && offset < first.body, `resumed at ${offset} of the ${first.body} bytes that arrived first`);
    assertProgress(progress, content.length);
    const resumed = progress.filter((p) => p.resumedAt !== undefined);
    assert.equal(resumed[0]!.resumedAt, offset);
    assert.ok(resumed[0]!.loaded >= first.body - CHUNK_BYTES, 'progress did not go back to the offset');
    assert.ok(progress.slice(0, progress.indexOf(resumed[0]!)).every((p) => p.resumedAt === undefined));
    c.close();
  });

  test('only its answer was lost: the resume is answered the entry, no byte is sent again, one record', async () => {
    const w = new FileWorld();
    w.loseVerdict = true;
    const content = randomBytes(3 * CHUNK_BYTES, 2);
    const c = await Connection.dial(w.dial, hello, { reconnect: fast });
    const entry = await c.uploadGroupSharedFile({ groupId: '12', file: new Blob([content]), fileName: 'a.bin' });
    assert.equal(entry.file_size, content.length);
    assert.equal(w.records.length, 1);
    assert.equal(w.seen.length, 2);
    assert.equal((w.seen[1]!.header as Upload).resume, true);
    assert.equal(w.seen[1]!.body, 0);
    c.close();
  });

  test('cancel while it waits for the next link rejects with 101 (onFileUploadCanceled); no stream opens after', async () => {
    const w = new FileWorld();
    w.onBytes = (s, got) => {
      if (got >= CHUNK_BYTES && w.links.length === 1) {
        w.onBytes = undefined;
        w.down = true;
        w.drop(0);
      }
    };
    const c = await Connection.dial(w.dial, hello, { reconnect: fast });
    let canceled = 0;
    const t = c.uploadGroupSharedFile({ groupId: '12', file: new Blob([randomBytes(4 * CHUNK_BYTES, 3)]), onFileUploadCanceled: () => canceled++ });
    await until(() => w.kept.size === 1, 'the interruption');
    await new Promise((r) => setTimeout(r, 30));
    t.cancel();
    await assert.rejects(t, (e: unknown) => e instanceof ConvokeError && e.code === 101 && e.message.includes('was cancelled'));
    assert.equal(canceled, 1);
    w.down = false;
    await until(() => w.links.length === 2, 'the next link');
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(w.seen.length, 1, 'no resume after the cancel');
    assert.equal(w.records.length, 0);
    c.close();
  });

  test("close() while it waits for the next link rejects with the connection's ConnectionError", async () => {
    const w = new FileWorld();
    w.onBytes = (_s, got) => {
      if (got >= CHUNK_BYTES) {
        w.onBytes = undefined;
        w.down = true;
        w.drop(0);
      }
    };
    const c = await Connection.dial(w.dial, hello, { reconnect: fast });
    let reported: unknown;
    const t = c.uploadGroupSharedFile({ groupId: '12', file: new Blob([randomBytes(4 * CHUNK_BYTES, 4)]), onFileUploadError: (e) => (reported = e) });
    await until(() => w.kept.size === 1, 'the interruption');
    c.close();
    await assert.rejects(t, (e: unknown) => e instanceof ConnectionError && e.closeCode === 0 && e.message.includes('closed by the application'));
    assert.ok(reported instanceof ConnectionError);
    assert.equal(w.seen.length, 1);
  });

  test('a refusal of the resume is final: the call rejects with its code, no third attempt', async () => {
    const w = new FileWorld();
    w.refuseResume = { code: -3, message: 'upload id 5 was for another file' };
    w.onBytes = (_s, got) => {
      if (got >= CHUNK_BYTES) {
        w.onBytes = undefined;
        w.drop(0);
      }
    };
    const c = await Connection.dial(w.dial, hello, { reconnect: fast });
    await assert.rejects(
      c.uploadGroupSharedFile({ groupId: '12', file: new Blob([randomBytes(3 * CHUNK_BYTES, 5)]) }),
      (e: unknown) => e instanceof ConvokeError && e.code === -3 && e.message.includes('another file'),
    );
    assert.equal(w.seen.length, 2);
    c.close();
  });

  test('a busy refusal of every resume (the owner node down) ends it with that 500 after the request timeout, not RESUME_WITHIN_MS', async () => {
    const w = new FileWorld();
    w.refuseResume = { code: 500, message: 'group 12 lives on node n3, which is unreachable now; retry' };
    w.onBytes = (_s, got) => {
      if (got >= CHUNK_BYTES) {
        w.onBytes = undefined;
        w.drop(0);
      }
    };
    const c = await Connection.dial(w.dial, hello, { reconnect: fast, requestTimeoutMs: 400 });
    const start = Date.now();
    await assert.rejects(
      c.uploadGroupSharedFile({ groupId: '12', file: new Blob([randomBytes(3 * CHUNK_BYTES, 7)]) }),
      (e: unknown) => e instanceof ConvokeError && e.code === 500 && e.message.includes('n3'),
    );
    const took = Date.now() - start;
    assert.ok(took < 5000, `gave up after ${took} ms`);
    assert.ok(w.seen.length >= 3, `${w.seen.length} attempts: the busy refusal is retried first`);
    c.close();
  });

  test('reconnect off: a lost link ends the upload with its ConnectionError', async () => {
    const w = new FileWorld();
    w.onBytes = (_s, got) => {
      if (got >= CHUNK_BYTES) {
        w.onBytes = undefined;
        w.drop(0);
      }
    };
    const c = await Connection.dial(w.dial, hello, { reconnect: false });
    await assert.rejects(c.uploadGroupSharedFile({ groupId: '12', file: new Blob([randomBytes(3 * CHUNK_BYTES, 6)]) }), ConnectionError);
    assert.equal(w.links.length, 1);
    assert.equal(w.seen.length, 1);
  });
});

/** Drops the current link with dials failing, and returns once the connection knows it is down. */
async function goDown(w: FileWorld, c: Connection): Promise<void> {
  let down = false;
  c.addEventHandler('down', { onDisconnected: () => (down = true) });
  w.down = true;
  w.drop();
  await until(() => down, 'the connection to see the link end');
  c.removeEventHandler('down');
}

describe('calls made while the link is down', () => {
  test('an upload and a download wait for the next link, as other calls do', async () => {
    const w = new FileWorld();
    w.file = randomBytes(CHUNK_BYTES + 3, 9);
    const c = await Connection.dial(w.dial, hello, { reconnect: fast, requestTimeoutMs: 3000 });
    await goDown(w, c);
    const up = c.uploadGroupSharedFile({ groupId: '12', file: new Blob([randomBytes(2 * CHUNK_BYTES, 10)]), fileName: 'a.bin' });
    const down = c.downloadGroupSharedFile({ groupId: '12', fileId: '7' });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(w.seen.length, 0, 'nothing sent while down');
    w.down = false;
    assert.equal((await up).file_size, 2 * CHUNK_BYTES);
    assert.deepEqual(new Uint8Array(await (await down).arrayBuffer()), w.file);
    assert.equal(w.links.length, 2);
    assert.deepEqual(w.seen.map((s) => s.link), [1, 1], 'both went on the next link, once each');
    assert.equal((w.seen.find((s) => s.header.type === 'upload')!.header as Upload).resume, false);
    c.close();
  });

  test('with requestTimeoutMs 0 (no timeout) a call waits for the next link however long it takes', async () => {
    const w = new FileWorld();
    const c = await Connection.dial(w.dial, hello, { reconnect: fast, requestTimeoutMs: 0 });
    await goDown(w, c);
    const outcome: string[] = [];
    const call = c.deleteGroupSharedFile({ groupId: '12', fileId: '7' }).then(
      () => outcome.push('done'),
      (e: unknown) => outcome.push(`rejected: ${(e as Error).message}`),
    );
    const up = c.uploadGroupSharedFile({ groupId: '12', file: new Blob(['hello']) });
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(outcome, [], 'still waiting');
    w.down = false;
    await call;
    assert.deepEqual(outcome, ['done']);
    assert.equal((await up).file_size, 5);
    assert.equal(w.links[1]!.broker.requests.filter((r) => r.request.method === 'deleteGroupSharedFile').length, 1);
    c.close();
  });

  // (Without a bound the old behaviour hangs: the broker waits for bytes that never come.)
  test('a file whose read fails is not taken for a lost link: the call rejects at once with its error, no second attempt', { timeout: 5000 }, async () => {
    const w = new FileWorld();
    const c = await Connection.dial(w.dial, hello, { reconnect: fast });
    const failure = new Error('the file changed on disk (NotReadableError)');
    class Unreadable extends Blob {
      override slice(): Blob {
        return this;
      }
      override stream(): ReadableStream<Uint8Array<ArrayBuffer>> {
        return new ReadableStream({ pull: (controller) => controller.error(failure) });
      }
    }
    const start = Date.now();
    await assert.rejects(c.uploadGroupSharedFile({ groupId: '12', file: new Unreadable([new Uint8Array(3 * CHUNK_BYTES)]) }), (e: unknown) => e === failure);
    const took = Date.now() - start;
    assert.ok(took < 1000, `rejected after ${took} ms`);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(w.seen.length, 1, 'one attempt');
    assert.equal(w.links.length, 1, 'the link stays');
    c.close();
  });
});

describe('a download across a lost link', () => {
  test('continues from the bytes it has: the same bytes, progress forward, resumedAt where it picked up', async () => {
    const w = new FileWorld();
    w.file = randomBytes(5 * CHUNK_BYTES + 5, 7);
    w.onBytes = (s, at) => {
      if (s.link === 0 && at >= 120_000) {
        w.onBytes = undefined;
        w.drop(0);
      }
    };
    const c = await Connection.dial(w.dial, hello, { reconnect: fast });
    const progress: Progress[] = [];
    let completed: Blob | undefined;
    const blob = await c.downloadGroupSharedFile({
      groupId: '12',
      fileId: '7',
      secret: 's',
      onFileDownloadProgress: (p) => progress.push(p),
      onFileDownloadComplete: (data) => (completed = data),
    });
    assert.equal(completed, blob);
    assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), w.file);
    assert.equal(w.seen.length, 2);
    const h1 = w.seen[0]!.header as Download;
    const h2 = w.seen[1]!.header as Download;
    assert.equal(h1.offset, '0');
    const offset = Number(h2.offset);
    assert.ok(offset > 0 && offset <= w.seen[0]!.body, `resumed at ${offset}`);
    assert.deepEqual({ ...h2, offset: '0' }, h1);
    assert.equal(w.seen[1]!.body, w.file.length - offset, 'only the rest came again');
    assertProgress(progress, w.file.length);
    assert.equal(progress.find((p) => p.resumedAt !== undefined)?.resumedAt, offset);
    c.close();
  });

  test('a file that changed meanwhile (another sha256) rejects with 200', async () => {
    const w = new FileWorld();
    w.file = randomBytes(3 * CHUNK_BYTES, 8);
    w.onBytes = (s, at) => {
      if (s.link === 0 && at >= 50_000) {
        w.onBytes = undefined;
        w.fileSha = 'beef';
        w.drop(0);
      }
    };
    const c = await Connection.dial(w.dial, hello, { reconnect: fast });
    await assert.rejects(
      c.downloadGroupSharedFile({ groupId: '12', fileId: '7' }),
      (e: unknown) => e instanceof ConvokeError && e.code === 200 && e.message.includes('changed while its download was resumed'),
    );
    c.close();
  });
});

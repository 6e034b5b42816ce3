/**
 * Shared-file transfers over in-memory streams to a fake broker: the header and bytes an
 * upload sends, progress, the broker's verdict (also when it refuses early and stops the
 * stream), cancel (the stream reset with CANCELLED), downloads with their bytes after the
 * outcome frame, refusals and short downloads; the seed's two file calls as written;
 * application callbacks that throw, a file whose read fails, a cancel while the stream opens.
 */

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  CHUNK_BYTES,
  Connection,
  ConvokeError,
  encodeFrame,
  FrameDecoder,
  type ByteStream,
  type SharedFile,
  type TransferHeader,
  type TransferReply,
} from '../src/index.js';
import { FakeBroker } from './fake_broker.js';

interface Opened {
  header?: TransferHeader;
  body: Uint8Array[];
  /** Why the client reset the stream, if it did. */
  aborted?: unknown;
}

type Behaviour = (header: TransferHeader, s: { reply(r: TransferReply): Promise<void>; raw(b: Uint8Array): Promise<void>; stop(): Promise<void>; end(): Promise<void> }, opened: Opened) => Promise<void>;

const entry = (size: number): SharedFile => ({
  fileId: '9',
  fileName: 'notes.txt',
  fileOwner: 'alice',
  fileSize: String(size),
  created: 5,
  contentType: 'text/plain',
  sha256: 'ab',
  secret: 's',
});

/** Opens transfer streams whose broker side runs `behaviour`. */
class FakeTransfers {
  readonly opened: Opened[] = [];
  constructor(
    private readonly behaviour: Behaviour,
    /**
     * 'slow': read the body a chunk every few ms (the client's writes back up between), until
     * the client resets the stream. (A write blocked on a reader that never reads would hold
     * the reset back: the Streams spec lets an abort wait for the write in flight.)
     */
    private readonly readBody: 'all' | 'slow' = 'all',
  ) {}

  open = async (): Promise<ByteStream> => {
    const up = new TransformStream<Uint8Array, Uint8Array>();
    const down = new TransformStream<Uint8Array, Uint8Array>();
    const o: Opened = { body: [] };
    this.opened.push(o);
    void this.serve(up.readable.getReader(), down.writable.getWriter(), o);
    return { readable: down.readable, writable: up.writable };
  };

  private async serve(reader: ReadableStreamDefaultReader<Uint8Array>, writer: WritableStreamDefaultWriter<Uint8Array>, o: Opened) {
    const frames = new FrameDecoder('TransferHeader');
    let stopped = false;
    const s = {
      reply: (r: TransferReply) => writer.write(encodeFrame('TransferReply', r)),
      raw: (b: Uint8Array) => writer.write(b),
      stop: async () => {
        stopped = true;
        await reader.cancel('stopped');
      },
      end: () => writer.close(),
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        frames.push(value);
        const h = frames.next();
        if (h) {
          o.header = h;
          const rest = frames.takeBuffered();
          if (rest.length) o.body.push(rest);
          break;
        }
      }
      const run = this.behaviour(o.header!, s, o);
      if (this.readBody === 'slow') {
        for (;;) {
          await new Promise((r) => setTimeout(r, 5));
          const { value, done } = await reader.read();
          if (done) return;
          o.body.push(value.slice());
        }
      }
      if (o.header?.type === 'upload') {
        while (!stopped) {
          const { value, done } = await reader.read();
          if (done) break;
          o.body.push(value.slice());
        }
      }
      await run;
    } catch (e) {
      o.aborted = e;
    }
  }
}

const bytesOf = (parts: Uint8Array[]) => Buffer.concat(parts);

/** A File (node 18 has no global File: a Blob with a name, as the SDK reads it). */
const makeFile = (parts: BlobPart[], name: string, type = ''): Blob =>
  typeof File === 'function' ? new File(parts, name, { type }) : Object.assign(new Blob(parts, { type }), { name });

/**
 * A Blob of `size` bytes whose read fails after its first chunk (a File changed or removed
 * on disk after it was picked: the browser's read fails with NotReadableError).
 */
function unreadable(size: number, failure: Error): Blob {
  class Unreadable extends Blob {
    override slice(): Blob {
      return this;
    }
    override stream(): ReadableStream<Uint8Array<ArrayBuffer>> {
      let sent = false;
      return new ReadableStream({
        pull(controller) {
          if (sent) controller.error(failure);
          else controller.enqueue(new Uint8Array(CHUNK_BYTES));
          sent = true;
        },
      });
    }
  }
  return new Unreadable([new Uint8Array(size)]);
}

async function connect(transfers: FakeTransfers) {
  const broker = new FakeBroker();
  return Connection.open(broker.stream, { token: 't', deviceId: 'd' }, { openStream: transfers.open });
}

/** Collects what the SDK reports of the application's callbacks (reportHandlerError) while `f` runs. */
async function reporting<T>(f: (reported: unknown[]) => Promise<T>): Promise<T> {
  const g = globalThis as { reportError?: (e: unknown) => void };
  const before = g.reportError;
  const reported: unknown[] = [];
  g.reportError = (e) => reported.push(e);
  try {
    return await f(reported);
  } finally {
    if (before) g.reportError = before;
    else delete g.reportError;
  }
}

/** Rejects after `ms`, so a call that would hang fails the test instead. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Waits (up to 5 s) until the client resets stream `i`, and returns the reset's code. */
async function resetCode(transfers: FakeTransfers, i = 0): Promise<number | undefined> {
  const deadline = Date.now() + 5000;
  while (transfers.opened[i]?.aborted === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.notEqual(transfers.opened[i]?.aborted, undefined, `stream ${i} was reset`);
  return (transfers.opened[i]!.aborted as { streamErrorCode?: number }).streamErrorCode;
}

/** Answers an upload once its bytes are in (the broker reads to the end, then answers). */
const acceptUpload: Behaviour = async (h, s, o) => {
  await new Promise<void>((r) => {
    const poll = () => (h.type === 'upload' && bytesOf(o.body).length >= Number(h.size) ? r() : setTimeout(poll, 1));
    poll();
  });
  await s.reply({ type: 'outcome', result: { ok: true, value: entry(Number((h as { size: string }).size)) } });
  await s.end();
};

describe('upload', () => {
  test('the header names the file; every byte follows in chunks; progress ends at the total', async () => {
    const transfers = new FakeTransfers(acceptUpload);
    const c = await connect(transfers);
    const content = new Uint8Array(3 * CHUNK_BYTES + 123).map((_, i) => i % 251);
    const progress: number[] = [];
    let completed: unknown;
    const got = await c.uploadGroupSharedFile({
      groupId: '12',
      file: makeFile([content], 'notes.txt', 'text/plain'),
      onFileUploadProgress: (p) => {
        assert.equal(p.total, content.length);
        progress.push(p.loaded);
      },
      onFileUploadComplete: (f) => (completed = f),
    });
    const h = transfers.opened[0]!.header!;
    assert.equal(h.type, 'upload');
    assert.deepEqual({ ...h, uploadId: 'x' }, {
      type: 'upload', groupId: '12', fileName: 'notes.txt', size: String(content.length), contentType: 'text/plain', uploadId: 'x', resume: false,
    });
    assert.match((h as { uploadId: string }).uploadId, /^[0-9]+$/);
    assert.deepEqual(bytesOf(transfers.opened[0]!.body), Buffer.from(content));
    assert.equal(progress.at(-1), content.length);
    assert.ok(progress.every((v, i) => i === 0 || v > progress[i - 1]!), 'progress grows');
    assert.ok(progress.length >= 4, `${progress.length} progress reports`);
    assert.equal(got.file_size, content.length);
    assert.deepEqual(completed, got);
    c.close();
  });

  test("the chat SDK's { data, filename, filetype } object works too", async () => {
    const transfers = new FakeTransfers(acceptUpload);
    const c = await connect(transfers);
    await c.uploadGroupSharedFile({ groupId: '1', file: { data: new Blob(['hello']), filename: 'a.bin', filetype: 'application/x-a' } });
    const h = transfers.opened[0]!.header as Extract<TransferHeader, { type: 'upload' }>;
    assert.equal(h.fileName, 'a.bin');
    assert.equal(h.contentType, 'application/x-a');
    assert.equal(h.size, '5');
    c.close();
  });

  test("a refusal the broker sends early (and stops the stream) is the call's error", async () => {
    const transfers = new FakeTransfers(async (_h, s) => {
      await s.reply({ type: 'outcome', result: { ok: false, error: { code: 101, message: 'file of 5000000 bytes is over the 10 bytes limit' } } });
      await s.stop();
      await s.end();
    });
    const c = await connect(transfers);
    let reported: unknown;
    await assert.rejects(
      c.uploadGroupSharedFile({ groupId: '1', file: new Blob([new Uint8Array(5_000_000)]), onFileUploadError: (e) => (reported = e) }),
      (e: unknown) => e instanceof ConvokeError && e.code === 101 && e.message.includes('over the 10 bytes limit'),
    );
    assert.ok(reported instanceof ConvokeError);
    assert.ok(bytesOf(transfers.opened[0]!.body).length < 5_000_000, 'stopped sending');
    c.close();
  });

  test('cancel resets the stream with CANCELLED and rejects with 101', async () => {
    // A broker that takes the bytes slowly and never answers.
    const transfers = new FakeTransfers(() => new Promise(() => {}), 'slow');
    const c = await connect(transfers);
    let canceled = 0;
    const t = c.uploadGroupSharedFile({ groupId: '1', file: new Blob([new Uint8Array(1_000_000)]), onFileUploadCanceled: () => canceled++ });
    await new Promise((r) => setTimeout(r, 20));
    t.cancel();
    await assert.rejects(t, (e: unknown) => e instanceof ConvokeError && e.code === 101 && e.message.includes('was cancelled'));
    assert.equal(canceled, 1);
    const deadline = Date.now() + 5000;
    while (transfers.opened[0]!.aborted === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.ok(bytesOf(transfers.opened[0]!.body).length < 1_000_000, 'stopped before the end');
    const reason = transfers.opened[0]!.aborted as { streamErrorCode?: number } | undefined;
    assert.equal(reason?.streamErrorCode, 1, `reset with CANCELLED: ${String(reason)}`);
    c.close();
  });

  test('a progress callback that throws neither stops nor fails the upload: its error is reported', async () => {
    const transfers = new FakeTransfers(acceptUpload);
    const c = await connect(transfers);
    const content = new Uint8Array(3 * CHUNK_BYTES + 5).fill(7);
    const errors: unknown[] = [];
    await reporting(async (reported) => {
      let calls = 0;
      const got = await within(
        c.uploadGroupSharedFile({
          groupId: '1',
          file: new Blob([content]),
          onFileUploadProgress: () => {
            calls++;
            throw new Error('progress handler bug');
          },
          onFileUploadError: (e) => errors.push(e),
        }),
        5000,
        'the upload',
      );
      assert.equal(got.file_size, content.length);
      assert.equal(bytesOf(transfers.opened[0]!.body).length, content.length, 'every byte went');
      assert.ok(calls >= 4, `progress went on being reported (${calls} calls)`);
      assert.equal(reported.length, calls);
      assert.ok(reported.every((e) => (e as Error).message === 'progress handler bug'));
    });
    assert.deepEqual(errors, []);
    c.close();
  });

  test("a file whose read fails rejects at once with the read's error; the stream is reset with CANCELLED", async () => {
    // A broker that waits for the declared bytes (as the real one does, up to its stall timeout).
    const transfers = new FakeTransfers(() => new Promise(() => {}));
    const c = await connect(transfers);
    const failure = new Error('the file changed on disk (NotReadableError)');
    let reported: unknown;
    const start = Date.now();
    await assert.rejects(
      within(c.uploadGroupSharedFile({ groupId: '1', file: unreadable(3 * CHUNK_BYTES, failure), onFileUploadError: (e) => (reported = e) }), 3000, 'the upload'),
      (e: unknown) => e === failure,
    );
    const took = Date.now() - start;
    assert.ok(took < 1000, `rejected after ${took} ms`);
    assert.equal(reported, failure);
    assert.equal(await resetCode(transfers), 1, 'reset with CANCELLED');
    c.close();
  });

  test('a cancel while the stream opens resets the stream with CANCELLED once it opens', async () => {
    const transfers = new FakeTransfers(() => new Promise(() => {}));
    let opening = 0;
    let letOpen = () => {};
    const gate = new Promise<void>((r) => (letOpen = r));
    const c = await Connection.open(new FakeBroker().stream, { token: 't', deviceId: 'd' }, {
      openStream: async () => {
        opening++;
        await gate;
        return transfers.open();
      },
    });
    const t = c.uploadGroupSharedFile({ groupId: '1', file: new Blob(['hello']) });
    while (opening === 0) await new Promise((r) => setTimeout(r, 1));
    t.cancel();
    await assert.rejects(t, (e: unknown) => e instanceof ConvokeError && e.code === 101 && e.message.includes('was cancelled'));
    letOpen();
    assert.equal(await resetCode(transfers), 1, 'the late stream is reset with CANCELLED');
    assert.equal(transfers.opened[0]!.header, undefined, 'no header went on it');
    c.close();
  });

  test('a file that is not a Blob is refused with -3 before any stream opens', async () => {
    const transfers = new FakeTransfers(acceptUpload);
    const c = await connect(transfers);
    await assert.rejects(
      c.uploadGroupSharedFile({ groupId: '1', file: 'file object' as never }),
      (e: unknown) => e instanceof ConvokeError && e.code === -3 && e.message.includes('file is "file object"'),
    );
    await assert.rejects(
      c.uploadGroupSharedFile({ groupId: '1', file: { data: 7 } as never }),
      (e: unknown) => e instanceof ConvokeError && e.code === -3 && e.message.includes('file.data is 7'),
    );
    assert.equal(transfers.opened.length, 0);
    c.close();
  });
});

describe('download', () => {
  test('the outcome, then the bytes (some in the same chunk as the frame), as a Blob', async () => {
    const content = new Uint8Array(2 * CHUNK_BYTES + 7).map((_, i) => (i * 7) % 256);
    const transfers = new FakeTransfers(async (_h, s) => {
      const frame = encodeFrame('TransferReply', { type: 'outcome', result: { ok: true, value: entry(content.length) } });
      await s.raw(new Uint8Array([...frame, ...content.subarray(0, 10)]));
      await s.raw(content.subarray(10, 100_000));
      await s.raw(content.subarray(100_000));
      await s.end();
    });
    const c = await connect(transfers);
    const progress: number[] = [];
    let completed: [Blob, unknown] | undefined;
    const blob = await c.downloadGroupSharedFile({
      groupId: '12',
      fileId: '9',
      secret: 's',
      onFileDownloadProgress: (p) => progress.push(p.loaded),
      onFileDownloadComplete: (data, file) => (completed = [data, file]),
    });
    assert.deepEqual(transfers.opened[0]!.header, { type: 'download', groupId: '12', fileId: '9', secret: 's', offset: '0' });
    assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), content);
    assert.equal(blob.type, 'text/plain');
    assert.deepEqual(progress, [10, 100_000, content.length]);
    assert.equal(completed![0], blob);
    assert.equal((completed![1] as { file_id: string }).file_id, '9');
    c.close();
  });

  test('a refusal rejects with its code; a short download with 200', async () => {
    const refused = new FakeTransfers(async (_h, s) => {
      await s.reply({ type: 'outcome', result: { ok: false, error: { code: 200, message: 'file "9" does not exist' } } });
      await s.end();
    });
    const c = await connect(refused);
    let reported: unknown;
    await assert.rejects(
      c.downloadGroupSharedFile({ groupId: '1', fileId: '9', onFileDownloadError: (e) => (reported = e) }),
      (e: unknown) => e instanceof ConvokeError && e.code === 200 && e.message.includes('does not exist'),
    );
    assert.ok(reported instanceof ConvokeError);
    c.close();

    const short = new FakeTransfers(async (_h, s) => {
      await s.reply({ type: 'outcome', result: { ok: true, value: entry(10) } });
      await s.raw(new Uint8Array(4));
      await s.end();
    });
    const c2 = await connect(short);
    await assert.rejects(c2.downloadGroupSharedFile({ groupId: '1', fileId: '9' }), (e: unknown) => e instanceof ConvokeError && e.code === 200 && e.message.includes('ended after 4 of 10 bytes'));
    c2.close();
  });
});

describe('callbacks that throw', () => {
  test('a complete callback that throws does not turn a stored file into a failure (upload and download)', async () => {
    const up = new FakeTransfers(acceptUpload);
    const c = await connect(up);
    const events: string[] = [];
    await reporting(async (reported) => {
      const got = await c.uploadGroupSharedFile({
        groupId: '1',
        file: new Blob(['hello']),
        onFileUploadComplete: () => {
          events.push('complete');
          throw new Error('complete handler bug');
        },
        onFileUploadError: (e) => events.push(`error ${e.message}`),
      });
      assert.equal(got.file_size, 5);
      assert.deepEqual(events, ['complete']);
      assert.deepEqual(reported.map((e) => (e as Error).message), ['complete handler bug']);
    });
    c.close();

    const down = new FakeTransfers(async (_h, s) => {
      await s.reply({ type: 'outcome', result: { ok: true, value: entry(2) } });
      await s.raw(new Uint8Array([104, 105]));
      await s.end();
    });
    const c2 = await connect(down);
    events.length = 0;
    await reporting(async (reported) => {
      const blob = await c2.downloadGroupSharedFile({
        groupId: '1',
        fileId: '9',
        onFileDownloadProgress: () => {
          events.push('progress');
          throw new Error('progress handler bug');
        },
        onFileDownloadComplete: () => {
          events.push('complete');
          throw new Error('complete handler bug');
        },
        onFileDownloadError: (e) => events.push(`error ${e.message}`),
      });
      assert.equal(await blob.text(), 'hi');
      assert.deepEqual(events, ['progress', 'complete']);
      assert.deepEqual(reported.map((e) => (e as Error).message), ['progress handler bug', 'complete handler bug']);
    });
    c2.close();
  });
});

describe('the seed document: the two file calls as written', () => {
  test("connection.downloadGroupSharedFile({groupId: 'groupId', fileId: 'fileId', onFileDownloadComplete: (data)=>{console.log(data)}})", async () => {
    const transfers = new FakeTransfers(async (_h, s) => {
      await s.reply({ type: 'outcome', result: { ok: true, value: entry(2) } });
      await s.raw(new Uint8Array([104, 105]));
      await s.end();
    });
    const connection = await connect(transfers);
    const logged: unknown[] = [];
    const run = new Function(
      'connection',
      'console',
      "return connection.downloadGroupSharedFile({groupId: 'groupId', fileId: 'fileId', onFileDownloadComplete: (data)=>{console.log(data)}})",
    ) as (c: Connection, console: { log: (x: unknown) => void }) => Promise<Blob>;
    await run(connection, { log: (x) => logged.push(x) });
    assert.equal(logged.length, 1);
    assert.ok(logged[0] instanceof Blob);
    assert.equal(await (logged[0] as Blob).text(), 'hi');
    assert.deepEqual(transfers.opened[0]!.header, { type: 'download', groupId: 'groupId', fileId: 'fileId', secret: null, offset: '0' });
    connection.close();
  });

  test("connection.uploadGroupSharedFile({groupId: 'groupId', file: 'file object', onFileUploadProgress: ..., onFileUploadComplete: ..., onFileUploadError: ..., onFileUploadCanceled: ...})", async () => {
    // The seed's `file: 'file object'` stands for a File; as written (a string) it is refused
    // through onFileUploadError, and with a File in its place the same call uploads it.
    const transfers = new FakeTransfers(acceptUpload);
    const connection = await connect(transfers);
    const seen: string[] = [];
    const callbacks = {
      onFileUploadProgress: (p: { loaded: number }) => seen.push(`progress ${p.loaded}`),
      onFileUploadComplete: (f: { file_size: number }) => seen.push(`complete ${f.file_size}`),
      onFileUploadError: (e: Error) => seen.push(`error ${(e as ConvokeError).code}`),
      onFileUploadCanceled: () => seen.push('canceled'),
    };
    const call =
      "connection.uploadGroupSharedFile({groupId: 'groupId', file: 'file object', onFileUploadProgress: onFileUploadProgress, onFileUploadComplete: onFileUploadComplete,onFileUploadError:onFileUploadError,onFileUploadCanceled:onFileUploadCanceled})";
    const run = (text: string, file?: unknown) =>
      (new Function('connection', 'onFileUploadProgress', 'onFileUploadComplete', 'onFileUploadError', 'onFileUploadCanceled', 'fileObject', `return ${text}`) as (...a: unknown[]) => Promise<unknown>)(
        connection,
        callbacks.onFileUploadProgress,
        callbacks.onFileUploadComplete,
        callbacks.onFileUploadError,
        callbacks.onFileUploadCanceled,
        file,
      );
    await run(call).catch(() => {});
    assert.deepEqual(seen, ['error -3']);
    seen.length = 0;
    await run(call.replace("'file object'", 'fileObject'), makeFile(['hello'], 'hello.txt'));
    assert.deepEqual(seen, ['progress 5', 'complete 5']);
    connection.close();
  });
});

/**
 * Shared-file transfers, each on its own bidirectional stream so a file never delays the
 * control stream (protocol/src/transfer.rs): an upload writes a `TransferHeader` frame and
 * the file's raw bytes, then reads one `TransferReply` outcome; a download writes its
 * header and ends its side, then reads the outcome and the raw bytes to the end.
 *
 * Bytes move in CHUNK_BYTES pieces from a Blob's stream, so a file is never copied whole
 * before sending. Cancelling resets both directions of the stream with the protocol's
 * CANCELLED code (the broker then drops a partial upload at once).
 *
 * On a reconnecting connection a transfer outlives a lost link (transfer_resume.ts), as
 * the Rust client's do (client/src/transfer/): the upload's next attempt says `resume:
 * true` with the same upload id, waits for the broker's `ResumeAt { offset }` and sends
 * the Blob from there (`Blob.slice`), or takes the entry the broker answers when the
 * upload had completed (its answer was what got lost: the file is recorded once); the
 * download asks for the bytes from what it already holds (`offset`) and checks that the
 * broker describes the same file.
 */

import {
  CHUNK_BYTES,
  CodecError,
  encodeFrame,
  FrameDecoder,
  TRANSFER_CANCELLED,
  type SharedFile,
  type TransferReply,
} from '../codec/index.js';
import { ConnectionError, ConvokeError, ProtocolError } from './errors.js';
import {
  answerWithin,
  attemptStop,
  CancelSignal,
  classify,
  final,
  Lost,
  refusal,
  RELEASED,
  Reporter,
  Retry,
  Signal,
  until,
  type Progress,
  type ResetReason,
  type TransferLink,
  type TransferLinks,
} from './transfer_resume.js';

export type { Progress, ResetReason, StreamOpener, TransferLink, TransferLinks } from './transfer_resume.js';

export const defaultResetReason: ResetReason = (code) =>
  Object.assign(new Error(`transfer cancelled (stream error code ${code})`), { streamErrorCode: code });

/** A transfer in progress: a promise of its result that can be cancelled. */
export type Transfer<T> = Promise<T> & { cancel(): void };

/** A file to upload: a Blob or File, or the chat SDK's `{ data: File, filename, filetype }`. */
export type UploadFile = Blob | { data: Blob; filename?: string; filetype?: string };

const UPLOAD_FILE_ERROR = 101;
const DOWNLOAD_FILE_ERROR = 200;

/** A random u64 as a decimal string (the upload id; the same for every attempt of one upload). */
export function randomUploadId(): string {
  const words = new Uint32Array(2);
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint32Array) => Uint32Array } }).crypto;
  if (c?.getRandomValues) {
    c.getRandomValues(words);
  } else {
    // Node 18 without the global Web Crypto: the id only tells this user's uploads apart.
    words[0] = Math.floor(Math.random() * 2 ** 32);
    words[1] = Math.floor(Math.random() * 2 ** 32);
  }
  return ((BigInt(words[0]!) << 32n) | BigInt(words[1]!)).toString();
}

/** Reads TransferReply frames from `reader`; the decoder keeps what follows the frame. */
async function nextReply(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  frames: FrameDecoder<'TransferReply'>,
  what: string,
): Promise<TransferReply> {
  for (;;) {
    let reply: TransferReply | undefined;
    try {
      reply = frames.next();
    } catch (e) {
      throw new ConnectionError(`${what}: the broker sent a bad frame: ${(e as CodecError).message}`, undefined, e);
    }
    if (reply) return reply;
    const { value, done } = await reader.read();
    if (done) throw new ConnectionError(`${what}: the stream ended before the broker's answer`);
    frames.push(value);
  }
}

/** Runs `work` as a cancellable transfer. */
function transfer<T>(work: (cancel: Signal) => Promise<T>): Transfer<T> {
  const cancel = new Signal();
  const p = work(cancel) as Transfer<T>;
  p.cancel = () => cancel.fire(new CancelSignal());
  return p;
}

/** One attempt's stream, once open: how to give it up (CANCELLED, or RELEASED for a resume). */
interface Attempt {
  abort?: (code: number) => void;
  /** Bytes this attempt moved. */
  moved: number;
}

/**
 * Runs attempts until one succeeds: after a lost one (the link ended, no answer in time,
 * busy), the next on the connection's next link. A cancel, a final error, or the
 * connection's end rejects (the stream reset with CANCELLED; a lost one is released).
 */
async function attempts<T>(
  links: TransferLinks,
  what: string,
  cancel: Signal,
  run: (link: TransferLink, a: Attempt, stop: Signal, resumed: boolean) => Promise<T>,
): Promise<T> {
  const retry = new Retry(links, what);
  let link = await retry.first(cancel);
  for (let resumed = false; ; resumed = true) {
    const a: Attempt = { moved: 0 };
    // Fires on a cancel or the end of this link; every wait of the attempt watches it.
    const { stop, off } = attemptStop(cancel, link);
    try {
      return await run(link, a, stop, resumed);
    } catch (e) {
      const why = await classify(e, link, links);
      a.abort?.(why instanceof Lost ? RELEASED : TRANSFER_CANCELLED);
      if (!(why instanceof Lost)) throw why;
      if (!links.resumable) throw link.ended.fired ?? why;
      retry.after(why, a.moved > 0);
      link = await retry.next(cancel);
    } finally {
      off();
    }
  }
}

/**
 * Opens a stream on `link` unless `stop` fires first: a stream that opens late is reset
 * once it opens (CANCELLED after a cancel, else released), so it holds no broker slot.
 */
async function openOn(link: TransferLink, stop: Signal) {
  const opening = link.open();
  try {
    return await until(opening, stop);
  } catch (e) {
    const code = e instanceof CancelSignal ? TRANSFER_CANCELLED : RELEASED;
    void opening.then(
      (s) => {
        void s.writable.abort(link.reset(code)).catch(() => {});
        void s.readable.cancel(link.reset(code)).catch(() => {});
      },
      () => {},
    );
    throw e;
  }
}

export interface UploadOptions {
  groupId: string;
  file: UploadFile;
  /** Defaults to the File's name (or the SDK object's `filename`). */
  fileName?: string;
  contentType?: string;
  onProgress?: (p: Progress) => void;
}

/** uploadGroupSharedFile: resolves to the file's index entry. */
export function upload(links: TransferLinks, o: UploadOptions): Transfer<SharedFile> {
  return transfer(async (cancel) => {
    const M = 'uploadGroupSharedFile';
    const blob = o.file instanceof Blob ? o.file : o.file.data;
    const named = o.file instanceof Blob ? undefined : o.file;
    const fileName =
      o.fileName ?? named?.filename ?? (typeof (blob as { name?: unknown }).name === 'string' ? (blob as File).name : 'file');
    const contentType = o.contentType ?? named?.filetype ?? (blob.type || 'application/octet-stream');
    const total = blob.size;
    const uploadId = randomUploadId();
    const header = (resume: boolean) =>
      encodeFrame('TransferHeader', { type: 'upload', groupId: o.groupId, fileName, size: String(total), contentType, uploadId, resume });
    try {
      header(false);
    } catch (e) {
      throw new ConvokeError(-3, `${M}: ${(e as Error).message}`);
    }
    const rep = new Reporter(o.onProgress, total);
    /** The broker's entry for this upload, which must be as long as the file. */
    const accepted = (reply: TransferReply, loaded: number): SharedFile => {
      if (reply.type === 'resumeAt') throw final(new ProtocolError(`${M}: the broker sent a resume offset to an upload that did not ask`));
      if (!reply.result.ok) throw refusal(links, reply.result.error.code, reply.result.error.message);
      if (loaded < total) throw final(new ProtocolError(`${M}: the broker accepted the file after ${loaded} of ${total} bytes`));
      if (reply.result.value.fileSize !== String(total)) {
        throw final(new ProtocolError(`${M}: the broker recorded ${JSON.stringify(fileName)} with ${reply.result.value.fileSize} bytes; ${total} were uploaded`));
      }
      return reply.result.value;
    };
    try {
      return await attempts(links, `the upload of ${JSON.stringify(fileName)}`, cancel, async (link, a, stop, resume) => {
        const stream = await openOn(link, stop);
        const writer = stream.writable.getWriter();
        const reader = stream.readable.getReader();
        a.abort = (code) => {
          void writer.abort(link.reset(code)).catch(() => {});
          void reader.cancel(link.reset(code)).catch(() => {});
        };
        const frames = new FrameDecoder('TransferReply');
        await until(writer.write(header(resume)), stop);
        let from = 0;
        if (resume) {
          // The broker says where to go on before any byte is sent.
          const first = await until(answerWithin(links, nextReply(reader, frames, M), 'answer to the resume'), stop);
          if (first.type === 'outcome') {
            // It had completed (its answer was what got lost), or a refusal.
            void writer.close().catch(() => {});
            return accepted(first, total);
          }
          from = Number(first.offset);
          if (!Number.isSafeInteger(from) || from > total) {
            throw final(new ProtocolError(`${M}: the broker resumed at byte ${first.offset} of a ${total} byte upload`));
          }
          rep.resumed(from);
        }
        // The broker may answer before every byte is out (a refusal, e.g. too large).
        const verdict = nextReply(reader, frames, M);
        verdict.catch(() => {});
        let early: TransferReply | undefined;
        // Stops the bytes once the broker has answered (or its side failed).
        const answered = new Signal();
        const ANSWERED = new Error('the broker answered');
        void verdict.then(
          (r) => {
            early = r;
            answered.fire(ANSWERED);
          },
          (e: unknown) => answered.fire(e),
        );
        let loaded = from;
        // Set when a write failed without an answer: the broker stopped taking bytes (it
        // refused the upload, or the link is gone); its verdict, or the link's end, decides.
        let refused = false;
        const send = async (write: Promise<void>) => {
          try {
            await until(write, stop, answered);
          } catch (e) {
            // An answer during the write: the broker had the chunk (or refused).
            if (e === ANSWERED) return;
            if (e instanceof CancelSignal || e instanceof Lost) throw e;
            refused = true;
          }
        };
        const source = (from === 0 ? blob : blob.slice(from)).stream().getReader();
        try {
          for (;;) {
            if (early || refused) break;
            let next: ReadableStreamReadResult<Uint8Array>;
            try {
              next = await until(source.read(), stop);
            } catch (e) {
              if (e instanceof CancelSignal || e instanceof Lost) throw e;
              // The file could not be read: the upload's own end, not the broker's (the
              // stream is reset with CANCELLED, so the broker drops it at once).
              throw final(typeof e === 'object' && e !== null ? e : new Error(`${M}: the file could not be read: ${String(e)}`));
            }
            const { value, done } = next;
            if (done) break;
            for (let at = 0; at < value.length && !early && !refused; at += CHUNK_BYTES) {
              const chunk = value.subarray(at, at + CHUNK_BYTES);
              await send(writer.write(chunk));
              if (refused) break;
              loaded += chunk.length;
              a.moved += chunk.length;
              rep.report(loaded);
            }
          }
        } finally {
          void source.cancel().catch(() => {});
        }
        if (!early && !refused) await send(writer.close());
        const reply = await until(answerWithin(links, verdict, 'verdict'), stop);
        return accepted(reply, loaded);
      });
    } catch (e) {
      if (e instanceof CancelSignal) {
        throw new ConvokeError(UPLOAD_FILE_ERROR, `the upload of ${JSON.stringify(fileName)} was cancelled`);
      }
      throw e;
    }
  });
}

export interface DownloadOptions {
  groupId: string;
  fileId: string;
  secret?: string | null;
  onProgress?: (p: Progress) => void;
}

/** downloadGroupSharedFile: resolves to the file's entry and its bytes as a Blob. */
export function download(links: TransferLinks, o: DownloadOptions): Transfer<{ entry: SharedFile; data: Blob }> {
  return transfer(async (cancel) => {
    const M = 'downloadGroupSharedFile';
    const header = (offset: number) =>
      encodeFrame('TransferHeader', { type: 'download', groupId: o.groupId, fileId: o.fileId, secret: o.secret ?? null, offset: String(offset) });
    try {
      header(0);
    } catch (e) {
      throw new ConvokeError(-3, `${M}: ${(e as Error).message}`);
    }
    const parts: Uint8Array[] = [];
    let loaded = 0;
    /** The entry of the first attempt: a resume must find the same file. */
    let first: SharedFile | undefined;
    const rep = new Reporter(o.onProgress, 0);
    try {
      const entry = await attempts(links, `the download of file ${JSON.stringify(o.fileId)}`, cancel, async (link, a, stop) => {
        const stream = await openOn(link, stop);
        const writer = stream.writable.getWriter();
        const reader = stream.readable.getReader();
        a.abort = (code) => {
          void writer.abort(link.reset(code)).catch(() => {});
          void reader.cancel(link.reset(code)).catch(() => {});
        };
        await until(writer.write(header(loaded)), stop);
        void writer.close().catch(() => {});
        const frames = new FrameDecoder('TransferReply');
        const reply = await until(answerWithin(links, nextReply(reader, frames, M), 'answer'), stop);
        if (reply.type !== 'outcome') {
          throw final(new ProtocolError(`${M}: the broker answered a download with resumeAt`));
        }
        if (!reply.result.ok) throw refusal(links, reply.result.error.code, reply.result.error.message);
        const entry = reply.result.value;
        if (!first) {
          first = entry;
        } else if (first.fileId !== entry.fileId || first.fileSize !== entry.fileSize || first.sha256 !== entry.sha256) {
          throw final(
            new ConvokeError(
              DOWNLOAD_FILE_ERROR,
              `file ${JSON.stringify(first.fileId)} changed while its download was resumed (${first.fileSize} bytes, sha256 ${first.sha256} before; ${entry.fileSize} bytes, sha256 ${entry.sha256} now)`,
            ),
          );
        } else {
          rep.resumed(loaded);
        }
        const total = Number(entry.fileSize);
        rep.total = total;
        const take = (bytes: Uint8Array) => {
          if (bytes.length === 0) return;
          if (loaded + bytes.length > total) {
            throw final(new ConvokeError(DOWNLOAD_FILE_ERROR, `the broker sent more than the file's ${total} bytes`));
          }
          loaded += bytes.length;
          a.moved += bytes.length;
          parts.push(bytes);
          rep.report(loaded);
        };
        take(frames.takeBuffered());
        for (;;) {
          const { value, done } = await until(reader.read(), stop);
          if (done) break;
          take(value.slice());
        }
        if (loaded !== total) {
          throw new ConvokeError(DOWNLOAD_FILE_ERROR, `the download ended after ${loaded} of ${total} bytes`);
        }
        return entry;
      });
      return { entry, data: new Blob(parts as BlobPart[], { type: entry.contentType }) };
    } catch (e) {
      if (e instanceof CancelSignal) {
        throw new ConvokeError(DOWNLOAD_FILE_ERROR, `the download of file ${JSON.stringify(o.fileId)} was cancelled`);
      }
      throw e;
    }
  });
}

/**
 * Shared-file transfers, each on its own bidirectional stream so a file never delays the
 * control stream (protocol/src/transfer.rs): an upload writes a `TransferHeader` frame and
 * the file's raw bytes, then reads one `TransferReply` outcome; a download writes its
 * header and ends its side, then reads the outcome and the raw bytes to the end.
 *
 * Bytes move in CHUNK_BYTES pieces from a Blob's stream, so a file is never copied whole
 * before sending. Cancelling resets both directions of the stream with the protocol's
 * CANCELLED code (the broker then drops a partial upload at once). Not yet: resuming a
 * transfer after a reconnect (the Rust client's `resume: true`, client/src/transfer/).
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
import type { ByteStream } from './session.js';

/** Opens a new bidirectional stream on the connection (WebTransport: createBidirectionalStream). */
export type StreamOpener = () => Promise<ByteStream>;

/**
 * The reason a stream is reset with: for WebTransport a `WebTransportError` carrying
 * `streamErrorCode`, which becomes the RESET_STREAM / STOP_SENDING code.
 */
export type ResetReason = (code: number) => unknown;

export const defaultResetReason: ResetReason = (code) =>
  Object.assign(new Error(`transfer cancelled (stream error code ${code})`), { streamErrorCode: code });

export interface Progress {
  /** Bytes sent (upload) or received (download) so far. */
  loaded: number;
  total: number;
}

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
function transfer<T>(work: (cancelled: Promise<never>) => Promise<T>): Transfer<T> {
  let cancel!: () => void;
  const cancelled = new Promise<never>((_, reject) => {
    cancel = () => reject(new CancelSignal());
  });
  cancelled.catch(() => {});
  const p = work(cancelled) as Transfer<T>;
  p.cancel = cancel;
  return p;
}

class CancelSignal extends Error {}

export interface UploadOptions {
  groupId: string;
  file: UploadFile;
  /** Defaults to the File's name (or the SDK object's `filename`). */
  fileName?: string;
  contentType?: string;
  onProgress?: (p: Progress) => void;
}

/** uploadGroupSharedFile: resolves to the file's index entry. */
export function upload(open: StreamOpener, reset: ResetReason, o: UploadOptions): Transfer<SharedFile> {
  return transfer(async (cancelled) => {
    const blob = o.file instanceof Blob ? o.file : o.file.data;
    const named = o.file instanceof Blob ? undefined : o.file;
    const fileName =
      o.fileName ?? named?.filename ?? (typeof (blob as { name?: unknown }).name === 'string' ? (blob as File).name : 'file');
    const contentType = o.contentType ?? named?.filetype ?? (blob.type || 'application/octet-stream');
    const total = blob.size;
    let header: Uint8Array;
    try {
      header = encodeFrame('TransferHeader', {
        type: 'upload',
        groupId: o.groupId,
        fileName,
        size: String(total),
        contentType,
        uploadId: randomUploadId(),
        resume: false,
      });
    } catch (e) {
      throw new ConvokeError(-3, `uploadGroupSharedFile: ${(e as Error).message}`);
    }
    const stream = await Promise.race([open(), cancelled]);
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    const frames = new FrameDecoder('TransferReply');
    const abort = () => {
      void writer.abort(reset(TRANSFER_CANCELLED)).catch(() => {});
      void reader.cancel(reset(TRANSFER_CANCELLED)).catch(() => {});
    };
    // The broker may answer before every byte is out (a refusal, e.g. too large).
    const verdict = nextReply(reader, frames, 'uploadGroupSharedFile');
    verdict.catch(() => {});
    let early: TransferReply | undefined;
    void verdict.then((r) => (early = r), () => {});
    let loaded = 0;
    try {
      try {
        await Promise.race([writer.write(header), cancelled]);
        const source = blob.stream().getReader();
        try {
          for (;;) {
            if (early) break;
            const { value, done } = await Promise.race([source.read(), cancelled]);
            if (done) break;
            for (let at = 0; at < value.length && !early; at += CHUNK_BYTES) {
              const chunk = value.subarray(at, at + CHUNK_BYTES);
              await Promise.race([writer.write(chunk), cancelled, verdict.then(() => undefined)]);
              loaded += chunk.length;
              o.onProgress?.({ loaded, total });
            }
          }
        } finally {
          void source.cancel().catch(() => {});
        }
        if (!early) await Promise.race([writer.close(), cancelled]);
      } catch (e) {
        // The broker stopped taking bytes (it refused the upload): its verdict decides.
        if (e instanceof CancelSignal) throw e;
      }
      const reply = await Promise.race([verdict, cancelled]);
      if (reply.type === 'resumeAt') {
        throw new ProtocolError('uploadGroupSharedFile: the broker answered a fresh upload with resumeAt');
      }
      if (!reply.result.ok) throw new ConvokeError(reply.result.error.code, reply.result.error.message);
      if (loaded < total) {
        throw new ProtocolError(`uploadGroupSharedFile: the broker accepted the file after ${loaded} of ${total} bytes`);
      }
      return reply.result.value;
    } catch (e) {
      abort();
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
export function download(
  open: StreamOpener,
  reset: ResetReason,
  o: DownloadOptions,
): Transfer<{ entry: SharedFile; data: Blob }> {
  return transfer(async (cancelled) => {
    let header: Uint8Array;
    try {
      header = encodeFrame('TransferHeader', {
        type: 'download',
        groupId: o.groupId,
        fileId: o.fileId,
        secret: o.secret ?? null,
        offset: '0',
      });
    } catch (e) {
      throw new ConvokeError(-3, `downloadGroupSharedFile: ${(e as Error).message}`);
    }
    const stream = await Promise.race([open(), cancelled]);
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    try {
      await Promise.race([writer.write(header), cancelled]);
      void writer.close().catch(() => {});
      const frames = new FrameDecoder('TransferReply');
      const reply = await Promise.race([nextReply(reader, frames, 'downloadGroupSharedFile'), cancelled]);
      if (reply.type !== 'outcome') {
        throw new ProtocolError('downloadGroupSharedFile: the broker answered a download with resumeAt');
      }
      if (!reply.result.ok) throw new ConvokeError(reply.result.error.code, reply.result.error.message);
      const entry = reply.result.value;
      const total = Number(entry.fileSize);
      const parts: Uint8Array[] = [];
      let loaded = 0;
      const take = (bytes: Uint8Array) => {
        if (bytes.length === 0) return;
        loaded += bytes.length;
        if (loaded > total) {
          throw new ConvokeError(DOWNLOAD_FILE_ERROR, `the broker sent more than the file's ${total} bytes`);
        }
        parts.push(bytes);
        o.onProgress?.({ loaded, total });
      };
      take(frames.takeBuffered());
      for (;;) {
        const { value, done } = await Promise.race([reader.read(), cancelled]);
        if (done) break;
        take(value.slice());
      }
      if (loaded !== total) {
        throw new ConvokeError(DOWNLOAD_FILE_ERROR, `the download ended after ${loaded} of ${total} bytes`);
      }
      return { entry, data: new Blob(parts as BlobPart[], { type: entry.contentType }) };
    } catch (e) {
      void writer.abort(reset(TRANSFER_CANCELLED)).catch(() => {});
      void reader.cancel(reset(TRANSFER_CANCELLED)).catch(() => {});
      if (e instanceof CancelSignal) {
        throw new ConvokeError(DOWNLOAD_FILE_ERROR, `the download of file ${JSON.stringify(o.fileId)} was cancelled`);
      }
      throw e;
    }
  });
}

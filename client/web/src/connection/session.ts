/**
 * One session over a control stream: the hello, then pipelined requests matched to their
 * answers by id, in whatever order the broker answers (handshake.rs describes the layout).
 *
 * The stream is abstract (`ByteStream`: a readable and a writable of bytes, exactly what a
 * WebTransport bidirectional stream is), so the session runs and is tested in node with no
 * browser. One reader loop owns the readable; writes go through one writer in call order.
 */

import {
  CodecError,
  FrameDecoder,
  MAX_FRAME_LEN,
  SUPPORTED_VERSIONS,
  encodeFrame,
  type ClientFrame,
  type Request,
  type Response,
  type ServerFrame,
  type Welcome,
} from '../codec/index.js';
import { ConnectionError, ConvokeError, TimeoutError } from './errors.js';

/** A bidirectional byte stream: a WebTransport bidirectional stream, or a fake in tests. */
export interface ByteStream {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}

/** What the hello says. */
export interface HelloOptions {
  /** A token minted with the app secret (`convoke token`). */
  token: string;
  /** This device among the user's sessions (1-64 bytes). */
  deviceId: string;
  /** Whether this session takes pushes (events and messages). Default true. */
  events?: boolean;
  /** Protocol versions offered; default the codec's. */
  versions?: readonly number[];
}

export interface SessionOptions {
  /** How long a request waits for its answer, in ms (default 30,000; 0 = forever). */
  requestTimeoutMs?: number;
  /** How long the hello waits for the welcome, in ms (default 10,000). */
  handshakeTimeoutMs?: number;
}

interface Waiter {
  resolve(r: Response): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class Session {
  private nextId = 1n;
  private readonly waiters = new Map<string, Waiter>();
  private ended: ConnectionError | undefined;
  private readonly endedListeners: ((e: ConnectionError) => void)[] = [];
  private readonly requestTimeoutMs: number;

  private constructor(
    /** The broker's welcome: the user this session acts as, its session id, the version. */
    readonly welcome: Welcome,
    private readonly writer: WritableStreamDefaultWriter<Uint8Array>,
    private readonly reader: ReadableStreamDefaultReader<Uint8Array>,
    private readonly frames: FrameDecoder<'ServerFrame'>,
    options: SessionOptions,
  ) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /**
   * Sends the hello on `stream` and waits for the broker's answer: a session on a welcome;
   * a ConvokeError on a refusal (e.g. 28 TOKEN_NOT_ASSIGNED); a ConnectionError if the
   * stream ends or says something else first.
   */
  static async open(
    stream: ByteStream,
    hello: HelloOptions,
    options: SessionOptions = {},
  ): Promise<Session> {
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    const frames = new FrameDecoder('ServerFrame', MAX_FRAME_LEN);
    const abort = (e: Error) => {
      void reader.cancel(e).catch(() => {});
      void writer.abort(e).catch(() => {});
      return e;
    };
    let frame: ClientFrame;
    try {
      frame = {
        type: 'hello',
        hello: {
          versions: [...(hello.versions ?? SUPPORTED_VERSIONS)],
          token: hello.token,
          deviceId: hello.deviceId,
          events: hello.events ?? true,
        },
      };
      await writer.write(encodeFrame('ClientFrame', frame));
    } catch (e) {
      throw abort(
        e instanceof CodecError
          ? new ConvokeError(-3, `the hello cannot be sent: ${e.message}`)
          : new ConnectionError(`the hello cannot be sent: ${String(e)}`, undefined, e),
      );
    }
    const timeoutMs = options.handshakeTimeoutMs ?? 10_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ConnectionError(`no answer to the hello within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    let first: ServerFrame;
    try {
      first = await Promise.race([readFrame(reader, frames), timeout]);
    } catch (e) {
      throw abort(e instanceof Error ? e : new ConnectionError(String(e)));
    } finally {
      clearTimeout(timer);
    }
    switch (first.type) {
      case 'welcome': {
        const session = new Session(first.welcome, writer, reader, frames, options);
        void session.readLoop();
        return session;
      }
      case 'refused':
        throw abort(new ConvokeError(first.error.code, first.error.message));
      default:
        throw abort(new ConnectionError(`the broker answered the hello with a ${first.type} frame`, 6));
    }
  }

  /** Whether the session has ended; calls then reject at once. */
  get closed(): boolean {
    return this.ended !== undefined;
  }

  /** Requests sent and not answered yet. */
  get inFlight(): number {
    return this.waiters.size;
  }

  /** Calls `f` once when the session ends (at once if it has). */
  onEnd(f: (e: ConnectionError) => void): void {
    if (this.ended) f(this.ended);
    else this.endedListeners.push(f);
  }

  /**
   * Sends one request and resolves to the broker's answer; rejects with a ConvokeError when
   * the broker refuses it, a TimeoutError when no answer comes in time, a ConnectionError
   * when the session ends first. Any number may be in flight at once.
   */
  request(request: Request, timeoutMs = this.requestTimeoutMs): Promise<Response> {
    if (this.ended) return Promise.reject(this.ended);
    const id = String(this.nextId++);
    let bytes: Uint8Array;
    try {
      bytes = encodeFrame('ClientFrame', { type: 'request', id, request });
    } catch (e) {
      // A value the codec cannot write is the caller's parameter error; nothing was sent.
      return Promise.reject(
        e instanceof CodecError ? new ConvokeError(-3, `${request.method}: ${e.message}`) : e,
      );
    }
    return new Promise<Response>((resolve, reject) => {
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              this.waiters.delete(id);
              reject(new TimeoutError(`${request.method}: no answer within ${timeoutMs} ms`));
            }, timeoutMs)
          : undefined;
      this.waiters.set(id, { resolve, reject, timer });
      this.writer.write(bytes).catch((e: unknown) => {
        this.end(new ConnectionError(`the control stream cannot be written: ${String(e)}`, undefined, e));
      });
    });
  }

  /** Acknowledges kept events (push `kept` ids); no answer. */
  async ack(ids: readonly string[]): Promise<void> {
    if (this.ended) throw this.ended;
    await this.writer.write(encodeFrame('ClientFrame', { type: 'ack', ids: [...ids] }));
  }

  /** Ends the session: pending calls reject with a ConnectionError, the stream is closed. */
  close(reason = 'closed by the application'): void {
    this.end(new ConnectionError(reason, 0));
  }

  /** Ends the session because of `e` (e.g. a bad frame on the push stream). */
  fail(e: ConnectionError): void {
    this.end(e);
  }

  private end(e: ConnectionError): void {
    if (this.ended) return;
    this.ended = e;
    for (const w of this.waiters.values()) {
      clearTimeout(w.timer);
      w.reject(e);
    }
    this.waiters.clear();
    void this.reader.cancel(e.message).catch(() => {});
    void this.writer.close().catch(() => {});
    for (const f of this.endedListeners.splice(0)) f(e);
  }

  private async readLoop(): Promise<void> {
    try {
      for (;;) {
        const frame = await readFrame(this.reader, this.frames);
        if (frame.type !== 'response') {
          // protocol `close::PROTOCOL_VIOLATION`
          this.end(new ConnectionError(`the broker sent a ${frame.type} frame after the welcome`, 6));
          return;
        }
        const w = this.waiters.get(frame.id);
        if (!w) continue; // its caller timed out; nothing waits for it
        this.waiters.delete(frame.id);
        clearTimeout(w.timer);
        if (frame.result.ok) w.resolve(frame.result.value);
        else w.reject(new ConvokeError(frame.result.error.code, frame.result.error.message));
      }
    } catch (e) {
      this.end(
        e instanceof ConnectionError
          ? e
          : new ConnectionError(`the control stream failed: ${String(e)}`, undefined, e),
      );
    }
  }
}

/**
 * The next server frame from the stream. A malformed or oversized frame is a
 * ConnectionError with the close code the protocol gives it (1 or 2); the stream ending
 * is a ConnectionError too.
 */
async function readFrame(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  frames: FrameDecoder<'ServerFrame'>,
): Promise<ServerFrame> {
  for (;;) {
    let frame: ServerFrame | undefined;
    try {
      frame = frames.next();
    } catch (e) {
      if (e instanceof CodecError) {
        const code = e.kind === 'tooLarge' ? 2 : 1;
        throw new ConnectionError(`the broker sent a bad frame: ${e.message}`, code, e);
      }
      throw e;
    }
    if (frame) return frame;
    const { value, done } = await reader.read();
    if (done) {
      throw new ConnectionError(
        frames.buffered > 0
          ? `the control stream ended in the middle of a frame (${frames.buffered} bytes)`
          : 'the control stream ended',
      );
    }
    frames.push(value);
  }
}

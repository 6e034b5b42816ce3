/**
 * A broker stand-in for the connection tests: the other end of an in-memory byte stream
 * that decodes the client's frames with the real codec and answers as a test says.
 */

import {
  encodeFrame,
  FrameDecoder,
  type ApiError,
  type ClientFrame,
  type Request,
  type Response,
  type ServerFrame,
} from '../src/index.js';
import type { ByteStream } from '../src/index.js';

export type Answer = { ok: true; value: Response } | { ok: false; error: ApiError };

export interface Received {
  id: string;
  request: Request;
}

export class FakeBroker {
  /** The stream to give the client. */
  readonly stream: ByteStream;
  readonly frames: ClientFrame[] = [];
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly waiting: (() => void)[] = [];
  /** Answers requests as they arrive (undefined = hold: the test answers later). */
  answer: (r: Received) => Answer | undefined = () => ({ ok: true, value: { type: 'done' } });

  constructor(
    /** The answer to the hello. */
    hello: (h: ClientFrame) => ServerFrame | undefined = () => ({
      type: 'welcome',
      welcome: { version: 3, userId: 'alice', appAdmin: false, sessionId: '18446744073709551615', serverTime: 1_700_000_000_000 },
    }),
  ) {
    const up = new TransformStream<Uint8Array, Uint8Array>();
    const down = new TransformStream<Uint8Array, Uint8Array>();
    this.stream = { readable: down.readable, writable: up.writable };
    this.writer = down.writable.getWriter();
    void this.serve(up.readable.getReader(), hello);
  }

  private async serve(reader: ReadableStreamDefaultReader<Uint8Array>, hello: (h: ClientFrame) => ServerFrame | undefined) {
    try {
      await this.loop(reader, hello);
    } catch {
      // The client closed or aborted its side, or this side was ended by the test.
    }
  }

  private async loop(reader: ReadableStreamDefaultReader<Uint8Array>, hello: (h: ClientFrame) => ServerFrame | undefined) {
    const frames = new FrameDecoder('ClientFrame');
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true as const }));
      if (done) return;
      frames.push(value);
      for (let f = frames.next(); f !== undefined; f = frames.next()) {
        this.frames.push(f);
        if (f.type === 'hello') {
          const answer = hello(f);
          if (answer) await this.send(answer);
        } else if (f.type === 'request') {
          const a = this.answer({ id: f.id, request: f.request });
          if (a) await this.respond(f.id, a);
        }
        this.waiting.splice(0).forEach((w) => w());
      }
    }
  }

  /** The requests received so far. */
  get requests(): Received[] {
    return this.frames.flatMap((f) => (f.type === 'request' ? [{ id: f.id, request: f.request }] : []));
  }

  /** Resolves once `n` requests have arrived. */
  async untilRequests(n: number): Promise<Received[]> {
    while (this.requests.length < n) await new Promise<void>((r) => this.waiting.push(r));
    return this.requests;
  }

  send(frame: ServerFrame): Promise<void> {
    return this.sendRaw(encodeFrame('ServerFrame', frame));
  }

  respond(id: string, result: Answer): Promise<void> {
    return this.send({ type: 'response', id, result });
  }

  sendRaw(bytes: Uint8Array): Promise<void> {
    return this.writer.write(bytes);
  }

  /** Ends the broker's side of the stream. */
  end(): Promise<void> {
    return this.writer.close();
  }
}

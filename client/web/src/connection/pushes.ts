/**
 * The broker's push stream (a unidirectional stream it opens after the welcome): events,
 * multi-device events, messages, kept events and a closing notice, in order, each handed to
 * `deliver` as it is read. Deduplication, acknowledgements and gap filling are the
 * sequencer's (resume.ts), across the links of a connection.
 */

import {
  CodecError,
  FrameDecoder,
  MAX_FRAME_LEN,
  type Push,
} from '../codec/index.js';
import { ConnectionError, reportHandlerError } from './errors.js';
import type { Session } from './session.js';

/** Reads pushes from `readable` and hands each to `deliver`, in order. */
export class PushReader {
  /** The broker's closing notice, if it sent one. */
  closing: { code: number; reason: string } | undefined;

  constructor(
    private readonly session: Session,
    private readonly deliver: (push: Push) => void,
  ) {}

  /**
   * Reads until the stream ends. A malformed frame ends the session (close code 1, or 2 when
   * oversized), as the control stream's would; so does the stream failing.
   */
  async run(readable: ReadableStream<Uint8Array>): Promise<void> {
    const reader = readable.getReader();
    const frames = new FrameDecoder('Push', MAX_FRAME_LEN);
    try {
      for (;;) {
        for (let p = frames.next(); p !== undefined; p = frames.next()) this.take(p);
        const { value, done } = await reader.read();
        if (done) return;
        frames.push(value);
      }
    } catch (e) {
      const code = e instanceof CodecError ? (e.kind === 'tooLarge' ? 2 : 1) : undefined;
      const why = e instanceof CodecError ? `the broker sent a bad push: ${e.message}` : `the push stream failed: ${String(e)}`;
      // A ConnectionError already says why (the transport's close, with its code).
      this.session.fail(e instanceof ConnectionError ? e : new ConnectionError(why, code, e));
      void reader.cancel(why).catch(() => {});
    }
  }

  private take(push: Push): void {
    if (push.push === 'closing') this.closing = { code: push.code, reason: push.reason };
    try {
      this.deliver(push);
    } catch (e) {
      // An application handler's fault is its own; the stream goes on.
      reportHandlerError(e);
    }
  }
}

/**
 * The broker's push stream (a unidirectional stream it opens after the welcome): events,
 * multi-device events, messages and a closing notice, in order. Kept events (`push:
 * 'kept'`, those that change the recipient's state) are handed on once as a group event,
 * then acknowledged on the control stream; a copy that comes again (the broker did not get
 * the acknowledgement yet) is acknowledged again, not handed on, as the Rust client does
 * (client/src/resume.rs).
 */

import {
  CodecError,
  FrameDecoder,
  MAX_ACK_IDS,
  MAX_FRAME_LEN,
  type Push,
} from '../codec/index.js';
import { ConnectionError, reportHandlerError } from './errors.js';
import type { Session } from './session.js';

/** Kept event ids remembered to recognise a repeat (the most recent ones). */
const REMEMBERED = 10_000;

/** Reads pushes from `readable` and hands each to `deliver`, in order. */
export class PushReader {
  private readonly seen = new Set<string>();
  private readonly toAck: string[] = [];
  private flushing = false;
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
    if (push.push === 'kept') {
      const first = !this.seen.has(push.id);
      if (first) {
        this.remember(push.id);
        this.handOn({ push: 'group', event: push.event });
      }
      this.ack(push.id);
      return;
    }
    if (push.push === 'closing') this.closing = { code: push.code, reason: push.reason };
    this.handOn(push);
  }

  private handOn(push: Push): void {
    try {
      this.deliver(push);
    } catch (e) {
      // An application handler's fault is its own; the stream goes on.
      reportHandlerError(e);
    }
  }

  private remember(id: string): void {
    this.seen.add(id);
    if (this.seen.size > REMEMBERED) {
      const oldest = this.seen.values().next().value as string;
      this.seen.delete(oldest);
    }
  }

  /** Queues an acknowledgement; those queued in one turn go out together. */
  private ack(id: string): void {
    this.toAck.push(id);
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(() => {
      this.flushing = false;
      while (this.toAck.length > 0 && !this.session.closed) {
        const ids = this.toAck.splice(0, MAX_ACK_IDS);
        this.session.ack(ids).catch(() => {
          // The session ended: the broker keeps the events and sends them again next login.
        });
      }
    });
  }
}

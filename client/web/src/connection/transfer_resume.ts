/**
 * How a shared-file transfer outlives a dropped link, as the Rust client's transfers do
 * (client/src/transfer/mod.rs): an attempt is one stream on one link; when that link ends
 * mid-way (or the broker does not answer in time, or says it is busy) the transfer waits
 * for the connection's next link and makes another attempt there, resuming. files.ts says
 * what an upload or a download sends on each attempt; this file holds what they share:
 * the links a transfer runs on, what counts as a lost attempt, the retry deadline and
 * back-off, and progress that never goes backwards.
 *
 * Only a reconnecting connection (`connect()`, `Connection.dial`) resumes; on one that
 * does not, a transfer whose link ends rejects with the link's ConnectionError.
 */

import { ConnectionError, ConvokeError, reportHandlerError } from './errors.js';
import type { ByteStream } from './session.js';

/** Opens a new bidirectional stream on a link (WebTransport: createBidirectionalStream). */
export type StreamOpener = () => Promise<ByteStream>;

/**
 * The reason a stream is reset with: for WebTransport a `WebTransportError` carrying
 * `streamErrorCode`, which becomes the RESET_STREAM / STOP_SENDING code.
 */
export type ResetReason = (code: number) => unknown;

/**
 * Something that happens once (a cancel, a link's end), with listeners that can leave
 * again. Transfers wait on these instead of racing long-lived promises: a promise that
 * stays pending for a session's life would keep every chunk raced against it reachable.
 */
export class Signal<W = unknown> {
  private reason: W | undefined;
  private done = false;
  private readonly listeners = new Set<(why: W) => void>();

  /** Why it fired, once it has. */
  get fired(): W | undefined {
    return this.reason;
  }

  fire(why: W): void {
    if (this.done) return;
    this.done = true;
    this.reason = why;
    const listeners = [...this.listeners];
    this.listeners.clear();
    for (const f of listeners) f(why);
  }

  /** Calls `f` once it fires (at once if it has); returns how to stop listening. */
  on(f: (why: W) => void): () => void {
    if (this.done) {
      f(this.reason as W);
      return () => {};
    }
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }
}

/** `p`, unless one of `signals` fires first: then it rejects with that reason. Leaves no listener behind. */
export function until<T>(p: Promise<T>, ...signals: Signal[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const offs = signals.map((s) => s.on(reject));
    const done = () => offs.forEach((off) => off());
    p.then(
      (v) => {
        done();
        resolve(v);
      },
      (e: unknown) => {
        done();
        reject(e);
      },
    );
  });
}

/** One link of the connection, as a transfer attempt uses it. */
export interface TransferLink {
  open: StreamOpener;
  reset: ResetReason;
  /** Fires (with why) once this link has ended; one per link. */
  ended: Signal<Error>;
}

/** Where a transfer's attempts run: the connection's links, one after the other. */
export interface TransferLinks {
  /** Whether an attempt whose link ends is followed by one on the next link. */
  readonly resumable: boolean;
  /**
   * The connection's request timeout (ms; 0: none): how long a transfer waits for a link
   * when it starts, and, when resumable, for each broker answer before the attempt counts
   * as lost.
   */
  readonly requestTimeoutMs: number;
  /**
   * The live link, waiting while the connection reconnects until `deadline` (ms since the
   * epoch): undefined if none came by then. Rejects with the connection's final error
   * (closed by the application, or it gave up).
   */
  next(deadline: number): Promise<TransferLink | undefined>;
}

/**
 * How long a transfer keeps trying to resume, counted from the last interruption that
 * followed progress (the Rust client's RESUME_WITHIN). The broker keeps an interrupted
 * upload for `files.resume_keep_secs`, 300 s by default; after that a resume starts over.
 */
export const RESUME_WITHIN_MS = 300_000;

/** Longest pause between two attempts that moved no bytes. */
const MAX_BACKOFF_MS = 1_000;

/**
 * How long a failed stream waits for its link to end before the failure counts as the
 * transfer's own: a browser fails a session's streams before it reports the session's end.
 */
const LOSS_GRACE_MS = 1_000;

/** The reset code of a stream given up for a resume: not CANCELLED, so the broker keeps the upload. */
export const RELEASED = 0;

/** An attempt that may go on from the next link (the link ended, no answer in time, busy). */
export class Lost extends Error {
  override name = 'Lost';
  /** The broker's retryable refusal (500 busy, e.g. the group's owner node unreachable; 509), when that is why. */
  busy?: ConvokeError;
}

/** The application cancelled the transfer. */
export class CancelSignal extends Error {}

const FINAL = new WeakSet<object>();

/** Marks `e` as the transfer's end whatever its link does (a refusal, a changed file). */
export function final<E extends object>(e: E): E {
  FINAL.add(e);
  return e;
}

/** The broker's refusal: final, unless it says to try again (busy, rate-limited). */
export function refusal(links: TransferLinks, code: number, message: string): Error {
  if (links.resumable && (code === 500 || code === 509)) {
    const lost = new Lost(`the broker answered ${code}: ${message}`);
    lost.busy = new ConvokeError(code, message);
    return lost;
  }
  return final(new ConvokeError(code, message));
}

/** `p`, or after `ms` (when resumable and not 0) an attempt lost for want of an answer. */
export function answerWithin<T>(links: TransferLinks, p: Promise<T>, what: string): Promise<T> {
  const ms = links.requestTimeoutMs;
  if (!links.resumable || ms <= 0) return p;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Lost(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * What an attempt's failure `e` on `link` means: a Lost attempt when the link ended
 * meanwhile (or does within a moment), else `e` itself. Cancels and final errors are
 * what they are; so is everything when the connection does not resume.
 */
export async function classify(e: unknown, link: TransferLink, links: TransferLinks): Promise<unknown> {
  if (e instanceof Lost || e instanceof CancelSignal || !links.resumable) return e;
  if (typeof e === 'object' && e !== null && FINAL.has(e)) return e;
  const ended = await new Promise<boolean>((resolve) => {
    let off = () => {};
    const timer = setTimeout(() => {
      off();
      resolve(false);
    }, LOSS_GRACE_MS);
    off = link.ended.on(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  return ended ? new Lost(e instanceof Error ? e.message : String(e)) : e;
}

/**
 * The stop signal of one attempt on `link`: fires with the cancel's reason, or with a
 * Lost attempt when the link ends. Call the returned `off` when the attempt is over.
 */
export function attemptStop(cancel: Signal, link: TransferLink): { stop: Signal; off: () => void } {
  const stop = new Signal();
  const offs = [
    cancel.on((why) => stop.fire(why)),
    link.ended.on((why) => stop.fire(new Lost(`the connection was lost (${why.message})`))),
  ];
  return { stop, off: () => offs.forEach((off) => off()) };
}

/** When and on which link a transfer tries again after interruptions. */
export class Retry {
  /** No attempt starts after this: RESUME_WITHIN_MS after the first interruption, renewed by each that followed progress. */
  private deadline: number | undefined;
  /** Pause before the next attempt (0 after one that moved bytes). */
  private backoff = 0;
  /** Why the last attempt stopped. */
  private last = '';
  /** Since when the broker has refused every attempt as busy, with no progress between. */
  private busySince: number | undefined;

  constructor(
    private readonly links: TransferLinks,
    /** e.g. `the upload of "a.txt"`, for the error when it cannot resume. */
    private readonly what: string,
  ) {}

  /** The link of the first attempt (waiting, while the connection reconnects, up to its request timeout). */
  async first(cancel: Signal): Promise<TransferLink> {
    const ms = this.links.requestTimeoutMs > 0 ? this.links.requestTimeoutMs : RESUME_WITHIN_MS;
    const link = await until(this.links.next(Date.now() + ms), cancel);
    if (!link) throw new ConnectionError(`${this.what}: not connected within ${ms} ms`);
    return link;
  }

  /**
   * An attempt stopped with `why`; `progressed` when it moved bytes. A busy refusal
   * repeated without progress for longer than the request timeout (a node that does not
   * come back) ends the transfer with it: the caller waits that long, not RESUME_WITHIN_MS
   * (the Rust client's Retry::after).
   */
  after(why: Lost, progressed: boolean): void {
    if (why.busy === undefined || progressed) this.busySince = undefined;
    if (why.busy !== undefined) {
      this.busySince ??= Date.now();
      const patience = this.links.requestTimeoutMs > 0 ? this.links.requestTimeoutMs : RESUME_WITHIN_MS;
      if (Date.now() - this.busySince >= patience) throw final(why.busy);
    }
    this.interrupted(why.message, progressed);
  }

  /** An attempt stopped for `why`; `progressed` when it moved bytes. */
  interrupted(why: string, progressed: boolean): void {
    if (progressed || this.deadline === undefined) this.deadline = Date.now() + RESUME_WITHIN_MS;
    this.backoff = progressed ? 0 : Math.min(Math.max(this.backoff * 2, 50), MAX_BACKOFF_MS);
    this.last = why;
  }

  /**
   * The link to try again on, after the back-off: the connection's next live one. Rejects
   * with the connection's final error when it ends meanwhile (closed, gave up), and with a
   * ConnectionError when no link comes before the deadline.
   */
  async next(cancel: Signal): Promise<TransferLink> {
    const deadline = this.deadline ?? Date.now() + RESUME_WITHIN_MS;
    const gaveUp = () =>
      new ConnectionError(`${this.what} was interrupted (${this.last}) and could not resume within ${RESUME_WITHIN_MS / 1000} s`);
    if (this.backoff > 0) {
      if (Date.now() + this.backoff > deadline) throw gaveUp();
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await until(new Promise((r) => (timer = setTimeout(r, this.backoff))), cancel);
      } finally {
        clearTimeout(timer);
      }
    }
    const link = await until(this.links.next(deadline), cancel);
    if (!link) throw gaveUp();
    return link;
  }
}

/** A transfer's progress: bytes sent or received so far, of the total. */
export interface Progress {
  /** Bytes sent (upload) or received (download) so far; never goes down across a resume. */
  loaded: number;
  total: number;
  /**
   * Set once the transfer resumed after a lost link: the byte offset it resumed at (the
   * latest, if several). An upload resumed at 0 started over (the broker no longer had it).
   */
  resumedAt?: number;
}

/** Feeds a progress callback, never backwards; a callback that throws does not stop the transfer. */
export class Reporter {
  /** The most ever reported. */
  private high = 0;
  private resumedAt: number | undefined;

  constructor(
    private readonly f: ((p: Progress) => void) | undefined,
    public total: number,
  ) {}

  /** `done` bytes are through: reported when that is more than before. */
  report(done: number): void {
    if (done <= this.high) return;
    this.high = done;
    this.emit();
  }

  /** The transfer resumed at byte `offset` (reported at once, with the most reported so far). */
  resumed(offset: number): void {
    this.resumedAt = offset;
    this.high = Math.max(this.high, offset);
    this.emit();
  }

  private emit(): void {
    try {
      this.f?.({ loaded: this.high, total: this.total, ...(this.resumedAt !== undefined ? { resumedAt: this.resumedAt } : {}) });
    } catch (e) {
      // The application's fault: reported as other handlers' are, the transfer goes on.
      reportHandlerError(e);
    }
  }
}

/**
 * The errors a connection's calls reject with: the broker's answer (an error code of the
 * contract), or the end of the connection.
 */

import { errorName } from '../codec/index.js';

/**
 * A request the broker (or the SDK, checking the options first) refused: the contract's
 * error code (spec/group-api.md), its name and a message naming the bad value.
 */
export class ConvokeError extends Error {
  override name = 'ConvokeError';
  /** The SDK's name of the code, e.g. `GROUP_NOT_EXIST`. */
  readonly codeName: string;

  constructor(
    /** The numeric code, e.g. 605. */
    readonly code: number,
    /** What exactly was wrong. */
    readonly detail: string,
  ) {
    const codeName = errorName(code) ?? 'UNKNOWN';
    super(`error ${code} ${codeName}: ${detail}`);
    this.codeName = codeName;
  }

  /** The chat SDK's field name for the code (its errors carry `type`). */
  get type(): number {
    return this.code;
  }
}

/**
 * Reads a refusal back from a close reason: the broker closes a refused hello with
 * HANDSHAKE_REFUSED and the refusal as `error <code> <NAME>: <message>` (the message of a
 * ConvokeError; protocol/src/handshake.rs `refusal_reason`), since the close can overtake
 * the Refused frame. Undefined for any other text (an unknown code, a name that is not the
 * code's), as `parse_refusal` does.
 */
export function parseRefusal(reason: string): ConvokeError | undefined {
  const m = /^error (-?\d+) ([^:]+): /.exec(reason);
  if (!m) return undefined;
  const code = Number(m[1]);
  if (errorName(code) !== m[2]) return undefined;
  return new ConvokeError(code, reason.slice(m[0].length));
}

/** REQUEST_PARAMETER_ERROR, for options the SDK refuses before sending anything. */
export function paramError(detail: string): ConvokeError {
  return new ConvokeError(-3, detail);
}

/** The connection ended (or never opened): the close code and reason when known. */
export class ConnectionError extends Error {
  override name = 'ConnectionError';

  constructor(
    message: string,
    /** The close code (protocol `close`), when the end had one. */
    readonly closeCode?: number,
    /** The error that caused the end, if any. */
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

/** A request got no answer in time; the connection itself may be fine. */
export class TimeoutError extends Error {
  override name = 'TimeoutError';
}

/** The broker answered with something the contract does not allow for this call. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

/**
 * Reports an application handler's exception without letting it stop the caller: to the
 * page's error reporting (`reportError`) where there is one, else to the console.
 */
export function reportHandlerError(e: unknown): void {
  const g = globalThis as { reportError?: (e: unknown) => void };
  if (typeof g.reportError === 'function') g.reportError(e);
  else console.error('convoke: an event handler threw', e);
}

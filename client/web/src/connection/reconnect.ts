/**
 * Staying connected, as the Rust client does (client/src/reconnect.rs, client/src/client.rs):
 * when a link ends for a reason retrying can fix (network loss, the broker restarting or
 * shutting down, a slow-consumer cut) the connection waits a jittered exponential back-off
 * and dials again with the current token (or a new one from `tokenProvider`). A deliberate
 * `close()`, a refusal retrying cannot fix (bad token, unsupported version, a bad hello),
 * too many sessions or a protocol violation end it instead. This file holds the policy and
 * the classifications; connection.ts runs the loop.
 */

import type { Request } from '../codec/index.js';
import { ConnectionError, ConvokeError } from './errors.js';

/** When and how often a connection reconnects after it drops (the Rust `ReconnectPolicy`). */
export interface ReconnectPolicy {
  /** Whether to reconnect at all. Default true. */
  enabled?: boolean;
  /** The back-off before the first attempt after a drop, in ms. Default 100. */
  initialDelayMs?: number;
  /** The longest back-off, in ms; each failed attempt doubles it up to this. Default 5,000. */
  maxDelayMs?: number;
  /** Attempts after one drop before giving up; default: try forever. */
  maxAttempts?: number;
}

/** A link that stays up this long makes the next drop start the back-off afresh (ms). */
export const STABLE_MS = 10_000;

/**
 * The back-off before attempt `attempt` (1-based): `initial * 2^(attempt-1)`, capped at
 * `maxDelayMs`, then a random point in its upper half (so pages cut off together do not
 * come back together).
 */
export function backoffDelay(policy: ReconnectPolicy, attempt: number, random: () => number = Math.random): number {
  const initial = policy.initialDelayMs ?? 100;
  const max = policy.maxDelayMs ?? 5_000;
  const exp = Math.min(Math.max(attempt - 1, 0), 20);
  const full = Math.min(initial * 2 ** exp, max);
  const half = full / 2;
  return half + (full - half) * random();
}

/** Protocol close codes (protocol/src/lib.rs `close`). */
export const CLOSE = {
  NORMAL: 0,
  MALFORMED_FRAME: 1,
  FRAME_TOO_LARGE: 2,
  SLOW_CONSUMER: 3,
  SHUTDOWN: 4,
  HANDSHAKE_REFUSED: 5,
  PROTOCOL_VIOLATION: 6,
  SESSION_LIMIT: 7,
  TOKEN_EXPIRED: 8,
} as const;

/**
 * Why an ended link (or a failed dial) must not be replaced, if it must not: a refused
 * hello (TOKEN_NOT_ASSIGNED 28, UNSUPPORTED_VERSION 505, REQUEST_PARAMETER_ERROR -3; other
 * codes, a busy or failing broker, may pass), or a close code that says retrying is
 * pointless (a malformed or oversized frame, a protocol violation, too many sessions).
 * HANDSHAKE_REFUSED without a refusal the page could read is a handshake that timed out:
 * retried. TOKEN_EXPIRED is decided by the caller (retried only with a token provider).
 */
export function finalReason(e: unknown): string | undefined {
  if (e instanceof ConvokeError) {
    return e.code === 28 || e.code === 505 || e.code === -3 ? `refused: ${e.message}` : undefined;
  }
  if (e instanceof ConnectionError) {
    const c = e.closeCode;
    if (
      c === CLOSE.MALFORMED_FRAME ||
      c === CLOSE.FRAME_TOO_LARGE ||
      c === CLOSE.PROTOCOL_VIOLATION ||
      c === CLOSE.SESSION_LIMIT
    ) {
      return e.message;
    }
  }
  return undefined;
}

/**
 * Whether a request may be sent again when the link it went out on dropped before its
 * answer: reads, and sends that carry a client message id (the broker answers a repeat
 * with the original). Other changes reject with the link's ConnectionError: they may have
 * taken effect, so the application decides.
 */
export function retrySafe(request: Request): boolean {
  switch (request.method) {
    case 'sendGroupMessage':
      return request.clientMsgId !== null && request.clientMsgId !== undefined;
    case 'ping':
    case 'getGroupInfo':
    case 'listGroupMembers':
    case 'getGroupAdmin':
    case 'getGroupMutelist':
    case 'isInGroupMutelist':
    case 'getGroupBlocklist':
    case 'getGroupAllowlist':
    case 'isInGroupAllowlist':
    case 'fetchGroupAnnouncement':
    case 'getGroupSharedFilelist':
    case 'getGroupMemberAttributes':
    case 'getGroupMembersAttributes':
    case 'getJoinedGroups':
    case 'getPublicGroups':
    case 'getGroupMsgReadUser':
    case 'getGroupMessages':
    case 'ackGroupMessage':
      return true;
    default:
      return false;
  }
}

/** A random client message id (so that a send retried after a drop is stored once). */
export function randomClientMsgId(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return 'w' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * A list of brokers to dial (a cluster's nodes), in the Rust client's order
 * (client/src/builder.rs `servers`, client/src/reconnect.rs): the first connection tries
 * each server once, in order, until one answers (a refusal retrying cannot fix, e.g. a bad
 * token, stops it at once); after a drop the connection dials the server it was on first,
 * then the next ones in turn, one per attempt. A server that closed the link with SHUTDOWN
 * (it is going away) is skipped at once: the first attempt goes to the next one.
 */

import type { Dialer, Link } from './connection.js';
import { paramError } from './errors.js';
import { CLOSE, finalReason } from './reconnect.js';
import type { HelloOptions } from './session.js';

/** Where to connect: one `url`, or a list `urls` (with both, `url` comes first). */
export type ServerList = { url: string; urls?: readonly string[] } | { url?: string; urls: readonly string[] };

/** The servers of `options`, in order, each once; -3 when there is none. */
export function serverList(options: { url?: unknown; urls?: unknown }): string[] {
  const out: string[] = [];
  const add = (u: unknown, what: string) => {
    if (typeof u !== 'string' || u === '') throw paramError(`connect: ${what} must be a non-empty string, got ${JSON.stringify(u)}`);
    if (!out.includes(u)) out.push(u);
  };
  if (options.url !== undefined && options.url !== null) add(options.url, 'url');
  if (options.urls !== undefined && options.urls !== null) {
    if (!Array.isArray(options.urls)) throw paramError(`connect: urls must be a list of URLs, got ${JSON.stringify(options.urls)}`);
    options.urls.forEach((u: unknown, i: number) => add(u, `urls[${i}]`));
  }
  if (out.length === 0) throw paramError('connect: give the broker as `url` or `urls`');
  return out;
}

/**
 * A dialer over `servers` that picks the server of each dial by the rule above;
 * `dialOne(url, hello)` opens one link to one server.
 */
export function rotatingDialer(servers: readonly string[], dialOne: (url: string, hello: HelloOptions) => Promise<Link>): Dialer {
  if (servers.length === 0) throw paramError('connect: no server to dial');
  /** The server of the last dial. */
  let target = 0;
  let started = false;
  /** The last dial opened a link (so the next dial is the first attempt after its drop). */
  let linked = false;
  /** That link ended with SHUTDOWN. */
  let moving = false;
  const track = (link: Link): Link => {
    linked = true;
    moving = false;
    link.session.onEnd((e) => (moving = e.closeCode === CLOSE.SHUTDOWN));
    return link;
  };
  return async (hello) => {
    if (!started) {
      started = true;
      let last: unknown;
      for (let i = 0; i < servers.length; i++) {
        target = i;
        try {
          return track(await dialOne(servers[i]!, hello));
        } catch (e) {
          last = e;
          if (finalReason(e) !== undefined) break;
        }
      }
      throw last;
    }
    // The same server first (unless it is shutting down), then the others in turn.
    if (!linked || moving) target = (target + 1) % servers.length;
    linked = false;
    moving = false;
    return track(await dialOne(servers[target]!, hello));
  };
}

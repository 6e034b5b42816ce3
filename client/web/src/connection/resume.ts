/**
 * The sequencer: between the broker's pushes (from whichever link is up) and the
 * application's handlers. It makes the stream duplicate-free and, with `resume` on (a
 * reconnecting connection that takes events), gap-free across reconnects, as the Rust
 * client's does (client/src/resume.rs).
 *
 * - **Kept events** (`push: 'kept'`): handed on once (as a group event), whatever link they
 *   come on, then acknowledged on the link that is up; a copy that comes again (the broker
 *   did not get the acknowledgement before the old link dropped, and replays it at the
 *   next login) is acknowledged again, not handed on.
 * - **Messages** (`resume` on): per group, the last sequence number handed on. A message at
 *   or below it is a duplicate and dropped (so is one at or below the highest seq ever
 *   handed on for the group, whatever its tracking since); one further ahead than the next shows a gap:
 *   the missing ones are fetched (`getGroupMessages`) and handed on first. A message whose
 *   gap cannot be filled on a live link (three tries) is held back and tried again on a
 *   timer (1 s, doubling up to 30 s), so it is not lost on a group that goes quiet. After a
 *   reconnect every tracked group is caught up the same way before any push of the new
 *   link, then `onReconnected({ recovered })` (if the link is still up: one that ends during
 *   its catch-up leaves it to the next). A group whose history ends before its position
 *   (the broker was restored from a backup) is carried on from its newest message, so the
 *   seqs given out again are not dropped as repeats. The page's own sends are not handed back
 *   (their seqs are recorded, and a gap is judged only once sends in flight to the group
 *   have their seqs). A group is tracked from the first message handed on, from its
 *   creation by this user (seq 0), or from `trackGroup`; a group known only from an event
 *   (joined, no message yet), or found in the joined list (getJoinedGroups at each link), is
 *   caught up by time: its messages stamped since the event (the join), since the first
 *   welcome, or, for one first found after a reconnect (joined while away), since the
 *   newest broker time this connection had seen.
 * - **Membership**: a group stops being tracked when it stops being the user's: a removal
 *   or block naming the user (`removeMember`), `destroy`, the user's leave on another
 *   device (`memberAbsence` naming the user), or the page's own successful `leaveGroup`,
 *   `destroyGroup` or `blockGroupMessages` (`answered`). Messages that still come for it
 *   (sent before) are handed on untracked. After a rejoin (an event naming the user, or the
 *   page's own `joinGroup`, `acceptGroupInvite`, `unblockGroupMessages`) it is tracked from
 *   its first live message again, so the time away is not "filled"; a position at a message
 *   stamped since the join is kept. Events the page hears only from the login's replay of
 *   kept events are handed on after the catch-up (the broker does not mark the replay's
 *   end): a removal and re-add that both happened while the page was away are learnt only
 *   after the catch-up has handed on what was posted in between. A reconnect's
 *   catch-up first asks getGroupInfo (100 groups a request) and skips the groups whose
 *   messages the user blocked (`shieldgroup`: the broker sends them no live message, but
 *   its history reads ignore the block) or is no longer in.
 *
 * Work is done one item at a time, in order; items that need no request are handed on
 * synchronously.
 */

import type { GroupEvent, GroupMessage, Push, Request, Response, Welcome } from '../codec/index.js';
import { ConvokeError, reportHandlerError } from './errors.js';
import { MAX_ACK_IDS } from '../codec/index.js';

/** What the sequencer needs from its connection. */
export interface SequencerHost {
  /** Sends a request on the link that is up now (no retry on another link). */
  request(request: Request): Promise<Response>;
  /** Whether the link `gen` is still the one up. */
  isLive(gen: number): boolean;
  /** Acknowledges kept events on the link that is up (dropped when none is). */
  ack(ids: string[]): void;
  /** Hands a push to the handlers. */
  deliver(push: Push): void;
  /** A link is up: onConnected. */
  connected(reconnect: boolean): void;
  /** A reconnect's catch-up is done: onReconnected. */
  resumed(recovered: number): void;
  /** How long a wait for the page's own sends may take (ms). */
  readonly requestTimeoutMs: number;
}

type Item =
  | { kind: 'push'; gen: number; push: Push }
  | { kind: 'up'; gen: number; reconnect: boolean; welcome: Welcome }
  /** The page's own call changed its membership of `groupId` (joined: since `since`). */
  | { kind: 'member'; groupId: string; member: boolean; since: number }
  /** A live message held back after failed gap fills, tried again. */
  | { kind: 'retry'; gen: number; message: GroupMessage; tries: number };

/** Kept event ids remembered to recognise a repeat. */
const REMEMBERED = 10_000;
/** The broker's largest history page. */
const PAGE = 100;
/** joined groups per page (the contract's maximum). */
const JOINED_PAGE = 500;
/** Ids per getGroupInfo (the contract's maximum). */
const INFO_IDS = 100;
/** getGroupInfo requests a catch-up has in flight at once. */
const INFO_IN_FLIGHT = 8;
/** Tries of a gap fill on a live link before the message is held back for a while. */
const FILL_ATTEMPTS = 3;
/** First wait before a held-back message is tried again (ms); doubles up to the cap. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;

/** Why a history fetch did not complete. */
class Gone extends Error {}
class Lost extends Error {}
/**
 * The group's history ends (at `head`) before the position: the broker was restored from
 * a backup and will give the seqs after `head` to new messages (client/src/resume.rs
 * `FillError::RolledBack`).
 */
class RolledBack extends Error {
  constructor(readonly head: bigint) {
    super(`the history ends at ${head}`);
  }
}

export class Sequencer {
  private readonly queue: Item[] = [];
  private running = false;
  /** Kept ids handed on, with the link generation each came on last. */
  private readonly kept = new Map<string, number>();
  private readonly toAck: string[] = [];
  private flushing = false;
  /** Per tracked group, the last seq handed on (or passed as the page's own). */
  private readonly last = new Map<string, bigint>();
  /** The (broker) time of the message at the position, when it came from one. */
  private readonly lastAt = new Map<string, number>();
  /**
   * Per group, the highest seq handed on, kept across leaves and rejoins: seqs only grow,
   * so a message at or below it is never handed on again (a restore from a backup lowers it).
   */
  private readonly handed = new Map<string, bigint>();
  /** Groups the user is in but with no position yet, with the (broker) time to fetch from. */
  private readonly known = new Map<string, number>();
  /** Groups that stopped being the user's on this link (left, removed, destroyed, blocked). */
  private readonly absent = new Set<string>();
  /** The user (from the welcome): events naming them change their membership. */
  private me = '';
  /** Broker time minus local time at the last welcome: a local moment in broker time. */
  private skew = 0;
  /** The newest broker time seen (welcomes, events, messages). */
  private clock = 0;
  /** Own sends in flight per group (ticket -> its end), and own seqs answered. */
  private nextTicket = 0;
  private readonly inFlight = new Map<string, Map<number, Promise<void>>>();
  private readonly own = new Map<string, Set<bigint>>();
  /** Recovered by the current catch-up (gap fills included). */
  private recovered = 0;

  constructor(
    private readonly host: SequencerHost,
    /** Whether messages are sequenced and gaps filled (a reconnecting connection that takes events). */
    readonly resume: boolean,
  ) {}

  /** A push from link `gen`, in the order the broker sent it. */
  push(gen: number, push: Push): void {
    this.enqueue({ kind: 'push', gen, push });
  }

  /** Link `gen` is up (its welcome); its pushes come after this. */
  up(gen: number, reconnect: boolean, welcome: Welcome): void {
    this.me = welcome.userId;
    this.skew = welcome.serverTime - Date.now();
    this.enqueue({ kind: 'up', gen, reconnect, welcome });
  }

  /**
   * The page's own call `request` was answered `response` (a success). A leave, destroy or
   * block of a group's messages ends its tracking; a join, an accepted invite or an unblock
   * starts it again from the first live message. Returns `response`.
   */
  answered(request: Request, response: Response): Response {
    if (!this.resume) return response;
    const since = Date.now() + this.skew;
    switch (request.method) {
      case 'leaveGroup':
      case 'destroyGroup':
      case 'blockGroupMessages':
        this.enqueue({ kind: 'member', groupId: request.groupId, member: false, since });
        break;
      case 'joinGroup':
        if (response.type === 'joinResult' && response.joined) this.enqueue({ kind: 'member', groupId: request.groupId, member: true, since });
        break;
      case 'acceptGroupInvite':
      case 'unblockGroupMessages':
        this.enqueue({ kind: 'member', groupId: request.groupId, member: true, since });
        break;
      default:
    }
    return response;
  }

  /** Resume `groupId` after `seq` (a position the application kept). */
  track(groupId: string, seq: string | bigint): void {
    this.known.delete(groupId);
    this.absent.delete(groupId);
    this.handed.delete(groupId);
    this.setPosition(groupId, BigInt(seq));
  }

  /** The page created `groupId`: tracked from its first message. */
  created(groupId: string): void {
    this.known.delete(groupId);
    this.absent.delete(groupId);
    if (!this.last.has(groupId)) this.setPosition(groupId, 0n);
  }

  /** The last seq handed on for `groupId`, if tracked (a resume point to keep). */
  position(groupId: string): string | undefined {
    return this.last.get(groupId)?.toString();
  }

  /** A send to `groupId` is going out; call the returned function with its seq (or null). */
  beginSend(groupId: string): (seq: string | null) => void {
    const ticket = this.nextTicket++;
    let done!: () => void;
    const ended = new Promise<void>((r) => (done = r));
    let sends = this.inFlight.get(groupId);
    if (!sends) this.inFlight.set(groupId, (sends = new Map()));
    sends.set(ticket, ended);
    return (seq) => {
      const s = this.inFlight.get(groupId);
      s?.delete(ticket);
      if (s?.size === 0) this.inFlight.delete(groupId);
      if (seq !== null) {
        let o = this.own.get(groupId);
        if (!o) this.own.set(groupId, (o = new Set()));
        o.add(BigInt(seq));
        if (o.size > 4096) o.delete(o.values().next().value as bigint);
      }
      done();
    };
  }

  private enqueue(item: Item): void {
    this.queue.push(item);
    if (!this.running) void this.drain();
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const item = this.queue.shift()!;
        try {
          const r = this.process(item);
          if (r) await r;
        } catch (e) {
          reportHandlerError(e);
        }
      }
    } finally {
      this.running = false;
    }
  }

  private process(item: Item): void | Promise<void> {
    switch (item.kind) {
      case 'up':
        return this.onUp(item.gen, item.reconnect, item.welcome);
      case 'member':
        if (item.member) this.joined(item.groupId, item.since);
        else this.left(item.groupId);
        return;
      case 'retry':
        return this.host.isLive(item.gen) ? this.onMessage(item.gen, item.message, item.tries) : undefined;
      default:
    }
    const { gen, push } = item;
    switch (push.push) {
      case 'kept': {
        const seen = this.kept.get(push.id);
        this.remember(push.id, gen);
        if (seen === undefined) {
          this.learn(push.event);
          this.host.deliver({ push: 'group', event: push.event });
        }
        // Taken (handlers run synchronously): acknowledged, and a copy again.
        this.ack(push.id);
        return;
      }
      case 'group':
      case 'multiDevice':
        this.learn(push.event);
        this.host.deliver(push);
        return;
      case 'message':
        if (!this.resume) {
          this.host.deliver(push);
          return;
        }
        return this.onMessage(gen, push.message, 0);
      default:
        this.host.deliver(push);
    }
  }

  private remember(id: string, gen: number): void {
    this.kept.delete(id);
    this.kept.set(id, gen);
    if (this.kept.size > REMEMBERED) this.kept.delete(this.kept.keys().next().value as string);
  }

  /** Queues an acknowledgement; those queued in one turn go out together. */
  private ack(id: string): void {
    this.toAck.push(id);
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(() => {
      this.flushing = false;
      while (this.toAck.length > 0) this.host.ack(this.toAck.splice(0, MAX_ACK_IDS));
    });
  }

  /** What an event says of the user's groups: left, joined, or (any other) in it. */
  private learn(event: GroupEvent): void {
    if (!this.resume) return;
    this.clock = Math.max(this.clock, event.timestamp);
    const g = event.groupId;
    const namesMe = event.users.includes(this.me);
    switch (event.operation) {
      case 'destroy':
        return this.left(g);
      case 'removeMember': // naming the user: removed or blocked
      case 'memberAbsence': // naming the user: their leave on another device
        if (namesMe) this.left(g);
        else this.note(g, event.timestamp);
        return;
      case 'memberPresence':
      case 'directJoined':
      case 'acceptRequest':
        if (namesMe) this.joined(g, event.timestamp);
        else this.note(g, event.timestamp);
        return;
      case 'create': // the user's creation on another device: all its messages
        if (event.from === this.me) this.created(g);
        return;
      case 'inviteToJoin':
      case 'joinPublicGroupDeclined':
      case 'unblockMember':
        return; // told to users who are not members
      default:
        this.note(g, event.timestamp);
    }
  }

  /** `g` is one of the user's groups: caught up from `since` unless it has a position. */
  private note(g: string, since: number): void {
    if (!this.absent.has(g) && !this.last.has(g) && !this.known.has(g)) this.known.set(g, since);
  }

  /** `g` is no longer the user's: forgotten until a join. */
  private left(g: string): void {
    this.last.delete(g);
    this.lastAt.delete(g);
    this.known.delete(g);
    this.own.delete(g);
    this.absent.add(g);
  }

  /** The user joined `g` (again) at `since`: tracked from its first message from then. */
  private joined(g: string, since: number): void {
    const wasAbsent = this.absent.delete(g);
    // A position from before (a leave this page did not hear of) would "fill" the time away.
    // One at a message stamped since the join stays: the kept join replayed at login comes
    // after the catch-up, which has already handed on the messages that followed it.
    const before = this.last.has(g) && (this.lastAt.get(g) ?? -Infinity) < since;
    if (before || wasAbsent) {
      this.last.delete(g);
      this.lastAt.delete(g);
      this.known.set(g, since);
    } else {
      this.note(g, since);
    }
  }

  /** `g`'s position is `seq`, the message stamped `at` when known. */
  private setPosition(g: string, seq: bigint, at?: number): void {
    this.last.set(g, seq);
    if (at === undefined) this.lastAt.delete(g);
    else this.lastAt.set(g, at);
  }

  /** Hands `m` on unless a message at or after its seq was (returns whether it did). */
  private deliverMessage(m: GroupMessage): boolean {
    const seq = BigInt(m.seq);
    const top = this.handed.get(m.groupId);
    if (top !== undefined && seq <= top) return false;
    this.handed.set(m.groupId, seq);
    this.host.deliver({ push: 'message', message: m });
    return true;
  }

  private async onUp(gen: number, reconnect: boolean, welcome: Welcome): Promise<void> {
    // The first link: every joined group from now on. Later links: groups joined while
    // away, from the newest time this connection knew of.
    const since = reconnect ? this.clock : welcome.serverTime;
    this.clock = Math.max(this.clock, welcome.serverTime);
    // A link that ended before its turn here (or during its catch-up) was announced
    // disconnected already (connection.ts): no onConnected or onReconnected after that.
    if (!this.host.isLive(gen)) return;
    this.host.connected(reconnect);
    if (!this.resume) {
      // Nothing to catch up (no events taken): onReconnected still says the link is back.
      if (reconnect) this.host.resumed(0);
      return;
    }
    // The joined list is the truth from here on.
    const wasAbsent = [...this.absent];
    this.absent.clear();
    await this.learnJoined(gen, since);
    // A group left on the old link and listed again was rejoined meanwhile: what was handed
    // on untracked after the leave (sent before it) is not fetched again.
    for (const g of wasAbsent) {
      const t = this.known.get(g);
      if (t !== undefined && t <= since) this.known.set(g, since + 1);
    }
    if (!reconnect) return;
    this.recovered = 0;
    const unchecked = await this.checkGroups(gen);
    await this.catchUp(gen, unchecked);
    if (this.host.isLive(gen)) this.host.resumed(this.recovered);
  }

  /** Groups the user is in that are not tracked yet: caught up from `since`. */
  private async learnJoined(gen: number, since: number): Promise<void> {
    for (let pageNum = 1; this.host.isLive(gen); pageNum++) {
      let r: Response;
      try {
        r = await this.host.request({ method: 'getJoinedGroups', pageNum, pageSize: JOINED_PAGE, needAffiliations: false, needRole: false });
      } catch {
        return; // the tracked groups are still caught up
      }
      if (r.type !== 'joinedGroups') return;
      for (const g of r.groups) this.note(g.groupId, since);
      if (r.groups.length < JOINED_PAGE) return;
    }
  }

  /**
   * Forgets the groups to catch up whose messages the user blocked (the broker sends none
   * live; its history reads ignore the block) or is no longer in; returns those it could
   * not check (left for the next catch-up: a live message still fills their gap).
   */
  private async checkGroups(gen: number): Promise<Set<string>> {
    const ids = [...new Set([...this.last.keys(), ...this.known.keys()])];
    const unchecked = new Set<string>();
    const batches: string[][] = [];
    for (let i = 0; i < ids.length; i += INFO_IDS) batches.push(ids.slice(i, i + INFO_IDS));
    const check = async (batch: string[]): Promise<void> => {
      let r: Response | undefined;
      try {
        if (this.host.isLive(gen)) r = await this.host.request({ method: 'getGroupInfo', groupIds: batch });
      } catch {
        r = undefined;
      }
      if (r?.type !== 'groupInfos') {
        for (const g of batch) unchecked.add(g);
        return;
      }
      const answered = new Set<string>();
      for (const e of r.groups) {
        answered.add(e.groupId);
        const gone = e.info ? e.info.shieldgroup || e.info.role === null : e.error?.code === 602 || e.error?.code === 605;
        if (gone) {
          this.last.delete(e.groupId);
          this.known.delete(e.groupId);
        } else if (!e.info) unchecked.add(e.groupId);
      }
      for (const g of batch) if (!answered.has(g)) unchecked.add(g);
    };
    for (let i = 0; i < batches.length; i += INFO_IN_FLIGHT) {
      await Promise.all(batches.slice(i, i + INFO_IN_FLIGHT).map(check));
    }
    return unchecked;
  }

  private async catchUp(gen: number, skip: Set<string>): Promise<void> {
    for (const [g, after] of [...this.last]) {
      if (!this.host.isLive(gen)) return;
      if (skip.has(g)) continue;
      await this.waitSends(g);
      try {
        this.recovered += this.handOn(g, await this.fetch(g, this.last.get(g) ?? after, undefined));
      } catch (e) {
        if (e instanceof Gone) this.last.delete(g);
        // Carried on from the newest message, or new ones would be dropped as repeats.
        else if (e instanceof RolledBack) {
          this.setPosition(g, e.head);
          if ((this.handed.get(g) ?? 0n) > e.head) this.handed.set(g, e.head);
        }
        // Lost: the next link's catch-up fetches it.
      }
    }
    for (const [g, since] of [...this.known]) {
      if (!this.host.isLive(gen)) return;
      if (skip.has(g)) continue;
      try {
        const { messages, newest } = await this.fetchSince(g, since);
        if (this.known.get(g) !== since || this.last.has(g)) continue; // changed meanwhile
        this.known.delete(g);
        const first = messages[0];
        this.setPosition(g, first ? BigInt(first.seq) - 1n : newest);
        this.recovered += this.handOn(g, messages);
      } catch (e) {
        if (e instanceof Gone) this.known.delete(g);
      }
    }
  }

  private async onMessage(gen: number, m: GroupMessage, tries: number): Promise<void> {
    const g = m.groupId;
    const seq = BigInt(m.seq);
    this.clock = Math.max(this.clock, m.timestamp);
    // Sent before the user left (it came after the page's own leave was answered).
    if (this.absent.has(g)) {
      this.deliverMessage(m);
      return;
    }
    let last = this.last.get(g);
    if (last === undefined) {
      const since = this.known.get(g);
      // From before the join (the catch-up by time does not fetch it either): not a start.
      if (since !== undefined && m.timestamp < since) {
        this.deliverMessage(m);
        return;
      }
      this.known.delete(g);
      this.setPosition(g, seq, m.timestamp);
      this.deliverMessage(m);
      return;
    }
    if (seq <= last) return;
    last = this.skipOwn(g, last);
    if (seq > last + 1n) {
      await this.waitSends(g);
      last = this.skipOwn(g, this.last.get(g) ?? last);
    }
    if (seq <= last) return;
    if (seq > last + 1n) {
      for (let attempt = 1; ; attempt++) {
        try {
          this.recovered += this.handOn(g, await this.fetch(g, last, seq));
          break;
        } catch (e) {
          // Gone: no longer a member. On a dead link: the next link's catch-up fetches it
          // (with this message).
          if (e instanceof Gone || !this.host.isLive(gen)) return;
          if (attempt >= FILL_ATTEMPTS) {
            this.holdBack(gen, m, tries + 1);
            return;
          }
          await new Promise((r) => setTimeout(r, 100 * attempt));
        }
      }
    }
    if (seq <= (this.last.get(g) ?? 0n)) return;
    this.setPosition(g, seq, m.timestamp);
    this.deliverMessage(m);
  }

  /**
   * A message whose gap could not be filled: tried again after a while on the same link
   * (a later message of the group fills the gap sooner; a new link's catch-up fetches it).
   */
  private holdBack(gen: number, m: GroupMessage, tries: number): void {
    const delay = Math.min(RETRY_FIRST_MS * 2 ** (tries - 1), RETRY_MAX_MS);
    const timer = setTimeout(() => {
      if (this.host.isLive(gen)) this.enqueue({ kind: 'retry', gen, message: m, tries });
    }, delay);
    // In node (the tests), a pending retry does not keep the process alive.
    (timer as { unref?: () => void }).unref?.();
  }

  /** Hands on fetched messages in order, skipping own sends and anything handed on. */
  private handOn(g: string, messages: GroupMessage[]): number {
    let n = 0;
    for (const m of messages) {
      const seq = BigInt(m.seq);
      if (seq <= (this.last.get(g) ?? 0n)) continue;
      this.setPosition(g, seq, m.timestamp);
      if (this.own.get(g)?.has(seq)) continue;
      if (this.deliverMessage(m)) n++;
    }
    return n;
  }

  /** Moves `last` past the page's own seqs that follow it; forgets those at or below. */
  private skipOwn(g: string, last: bigint): bigint {
    const own = this.own.get(g);
    if (own) {
      while (own.has(last + 1n)) last++;
      for (const s of own) if (s <= last) own.delete(s);
      if (own.size === 0) this.own.delete(g);
      this.last.set(g, last);
    }
    return last;
  }

  /**
   * Waits (up to the request timeout) for the sends to `g` in flight now; with no request
   * timeout (0), until they end (each ends, answered or failed, with the connection).
   */
  private async waitSends(g: string): Promise<void> {
    const sends = this.inFlight.get(g);
    if (!sends || sends.size === 0) return;
    const ended = Promise.allSettled([...sends.values()]);
    const timeoutMs = this.host.requestTimeoutMs;
    if (timeoutMs <= 0) {
      await ended;
      return;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    // setTimeout takes at most 2^31 - 1 ms; a longer delay would fire at once.
    await Promise.race([ended, new Promise((r) => (timer = setTimeout(r, Math.min(timeoutMs, 2_147_483_647))))]);
    clearTimeout(timer);
  }

  private async history(g: string, before: bigint | null, after: bigint | null, limit: number): Promise<GroupMessage[]> {
    let r: Response;
    try {
      r = await this.host.request({
        method: 'getGroupMessages',
        groupId: g,
        before: before === null ? null : before.toString(),
        after: after === null ? null : after.toString(),
        limit,
      });
    } catch (e) {
      if (e instanceof ConvokeError && (e.code === 602 || e.code === 605)) throw new Gone();
      throw new Lost(String(e));
    }
    if (r.type !== 'messages') throw new Lost(`getGroupMessages answered ${r.type}`);
    return r.messages;
  }

  /**
   * The messages of `g` after `after` (and before `until`), in order: pages until one comes
   * back empty (a page shorter than asked is not the end: the broker caps pages in bytes).
   * Without `until` (a catch-up), nothing after `after` makes it ask for the newest
   * message: a history that ends before `after` throws RolledBack.
   */
  private async fetch(g: string, after: bigint, until: bigint | undefined): Promise<GroupMessage[]> {
    const out: GroupMessage[] = [];
    let from = after;
    for (;;) {
      const limit = until === undefined ? PAGE : Number(until - from - 1n < BigInt(PAGE) ? until - from - 1n : BigInt(PAGE));
      if (limit <= 0) break;
      const page = await this.history(g, null, from, limit);
      if (page.length === 0 && until === undefined && from === after) {
        const newest = await this.history(g, null, null, 1);
        const head = newest.length > 0 ? BigInt(newest[newest.length - 1]!.seq) : 0n;
        if (head < after) throw new RolledBack(head);
      }
      const lastSeq = page.length > 0 ? BigInt(page[page.length - 1]!.seq) : undefined;
      out.push(...page.filter((m) => until === undefined || BigInt(m.seq) < until));
      if (lastSeq === undefined || lastSeq <= from) break;
      from = lastSeq;
      if (until !== undefined && from >= until - 1n) break;
    }
    out.sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
    return out;
  }

  /** The messages of `g` stamped at or after `since`, in order, and its newest seq. */
  private async fetchSince(g: string, since: number): Promise<{ messages: GroupMessage[]; newest: bigint }> {
    const out: GroupMessage[] = [];
    let before: bigint | null = null;
    let newest: bigint | undefined;
    for (;;) {
      const page = await this.history(g, before, null, PAGE);
      if (page.length === 0) break;
      newest ??= BigInt(page[page.length - 1]!.seq);
      before = BigInt(page[0]!.seq);
      out.push(...page.filter((m) => m.timestamp >= since));
      if (page.some((m) => m.timestamp < since) || before <= 1n) break;
    }
    out.sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
    return { messages: out, newest: newest ?? 0n };
  }
}

/**
 * The fake world of the reconnect and resume tests: a Dialer whose links are in-memory
 * FakeBrokers the test drops at will, with the groups' histories and memberships on the
 * broker side, and a recorder of what the page's handlers saw.
 */

import assert from 'node:assert/strict';
import {
  ConnectionError,
  ConvokeError,
  encodeFrame,
  Session,
  type ApiError,
  type Dialer,
  type EventHandlers,
  type GroupEvent,
  type GroupInfo,
  type GroupMessage,
  type HelloOptions,
  type Push,
  type Request,
} from '../src/index.js';
import { FakeBroker, type Answer, type Received } from './fake_broker.js';

export const G = '12';

export function pushStream() {
  const t = new TransformStream<Uint8Array, Uint8Array>();
  const w = t.writable.getWriter();
  return { readable: t.readable, send: (p: Push) => w.write(encodeFrame('Push', p)) };
}

export const event = (id: number): GroupEvent => ({
  operation: 'memberPresence',
  groupId: G,
  groupName: 'n',
  from: `u${id}`,
  users: [],
  detail: { kind: 'none' },
  timestamp: 1,
});

export const info = (id: string, shieldgroup: boolean): GroupInfo => ({
  id,
  name: 'n',
  description: '',
  owner: 'bob',
  created: 1,
  affiliationsCount: 2,
  maxusers: 200,
  public: true,
  membersonly: false,
  allowinvites: false,
  inviteNeedConfirm: true,
  mute: false,
  custom: '',
  shieldgroup,
  role: 'member',
});

export interface FakeLink {
  broker: FakeBroker;
  push: ReturnType<typeof pushStream>;
  session: Session;
  hello: HelloOptions;
}

/** The broker side of every link: the groups' histories, and what each dial is told. */
export class World {
  /** Group G's history (the one most tests use). */
  readonly history: GroupMessage[] = [];
  /** Every group's history, by id. */
  readonly histories = new Map<string, GroupMessage[]>([[G, this.history]]);
  /** The groups alice is in (getJoinedGroups), and those whose messages she blocked. */
  readonly joined = new Set<string>([G]);
  readonly blocked = new Set<string>();
  readonly links: FakeLink[] = [];
  readonly hellos: string[] = [];
  /** Answers the hello with this refusal instead of a welcome. */
  refuse: ((token: string) => ApiError | undefined) | undefined;
  /** Dials fail (the network is down) while this is set. */
  down = false;
  /** Requests held unanswered (by method). */
  hold = new Set<string>();
  held: { link: number; r: Received }[] = [];
  /** The next this many getGroupMessages are answered SERVER_BUSY. */
  failHistory = 0;
  /** The broker's clock in its welcomes. */
  now = 1000;

  /** `n` new messages in `group`, stamped `stamp` (default 1000 + seq). */
  add(n: number, group = G, stamp?: number): GroupMessage[] {
    let h = this.histories.get(group);
    if (!h) this.histories.set(group, (h = []));
    const out: GroupMessage[] = [];
    for (let i = 0; i < n; i++) {
      const seq = h.length + 1;
      const timestamp = stamp ?? 1000 + seq;
      const m: GroupMessage = { groupId: group, msgId: `${group}m${seq}`, seq: String(seq), from: 'bob', payload: new TextEncoder().encode(`#${seq}`), timestamp, allowGroupAck: false };
      h.push(m);
      out.push(m);
    }
    return out;
  }

  readonly dial: Dialer = async (hello) => {
    this.hellos.push(hello.token);
    if (this.down) throw new ConnectionError('cannot open a WebTransport session: network down');
    const refusal = this.refuse?.(hello.token);
    const broker = new FakeBroker(() =>
      refusal
        ? { type: 'refused', error: refusal }
        : { type: 'welcome', welcome: { version: 3, userId: 'alice', appAdmin: false, sessionId: String(this.links.length + 1), serverTime: this.now } },
    );
    const index = this.links.length;
    broker.answer = (r) => this.answer(index, r);
    const session = await Session.open(broker.stream, hello, { requestTimeoutMs: 3000 });
    const push = pushStream();
    this.links.push({ broker, push, session, hello });
    return { session, pushes: Promise.resolve(push.readable) };
  };

  answer(link: number, r: Received): Answer | undefined {
    const q = r.request;
    if (this.hold.has(q.method)) {
      this.held.push({ link, r });
      return undefined;
    }
    if (q.method === 'getGroupMessages') {
      if (this.failHistory > 0) {
        this.failHistory--;
        return { ok: false, error: { code: 500, message: 'busy' } };
      }
      if (!this.joined.has(q.groupId)) return { ok: false, error: { code: 602, message: 'not a member' } };
      const after = q.after === null ? null : BigInt(q.after);
      const before = q.before === null ? null : BigInt(q.before);
      let ms = (this.histories.get(q.groupId) ?? []).filter((m) => (after === null || BigInt(m.seq) > after) && (before === null || BigInt(m.seq) < before));
      ms = after !== null ? ms.slice(0, q.limit) : ms.slice(-q.limit);
      return { ok: true, value: { type: 'messages', messages: ms } };
    }
    if (q.method === 'getJoinedGroups') {
      const groups = [...this.joined].map((groupId) => ({ groupId, groupName: 'n', affiliationsCount: null, role: null }));
      return { ok: true, value: { type: 'joinedGroups', groups } };
    }
    if (q.method === 'getGroupInfo') {
      const groups = q.groupIds.map((groupId) =>
        this.joined.has(groupId)
          ? { groupId, info: info(groupId, this.blocked.has(groupId)), error: null }
          : { groupId, info: null, error: { code: 602, message: 'not a member' } },
      );
      return { ok: true, value: { type: 'groupInfos', groups } };
    }
    if (q.method === 'leaveGroup') this.joined.delete(q.groupId);
    if (q.method === 'blockGroupMessages') this.blocked.add(q.groupId);
    if (q.method === 'joinGroup') {
      this.joined.add(q.groupId);
      return { ok: true, value: { type: 'joinResult', joined: true } };
    }
    if (q.method === 'sendGroupMessage') {
      // A repeat of a client message id answers the original (the broker's dedup).
      const prior = this.history.find((m) => m.msgId === `c:${q.clientMsgId}`);
      const m = prior ?? this.add(1)[0]!;
      if (!prior && q.clientMsgId) m.msgId = `c:${q.clientMsgId}`;
      return { ok: true, value: { type: 'messageSent', msgId: m.msgId, seq: m.seq, timestamp: m.timestamp } };
    }
    if (q.method === 'getGroupAdmin') return { ok: true, value: { type: 'users', users: ['alice'] } };
    return { ok: true, value: { type: 'done' } };
  }

  get last(): FakeLink {
    return this.links[this.links.length - 1]!;
  }

  /** The network drops the current link (its control stream ends; no close code). */
  drop(): Promise<void> {
    return this.last.broker.end();
  }

  acks(link: number): string[] {
    return this.links[link]!.broker.frames.flatMap((f) => (f.type === 'ack' ? f.ids : []));
  }

  requests(link: number, method: Request['method']): Request[] {
    return this.links[link]!.broker.requests.map((r) => r.request).filter((r) => r.method === method);
  }
}

/** What the handlers saw, in order. */
export function recorder() {
  const log: string[] = [];
  const messages: string[] = [];
  const handlers: EventHandlers = {
    onConnected: () => log.push('connected'),
    onDisconnected: (e) => log.push(`disconnected${e.closeCode === undefined ? '' : `:${e.closeCode}`}`),
    onReconnecting: (i) => log.push(`reconnecting:${i.attempt}`),
    onReconnected: (i) => log.push(`reconnected:${i.recovered}`),
    onTokenExpired: (i) => log.push(`tokenExpired:${i.refreshing}`),
    onClosed: (e) => log.push(`closed:${e instanceof ConvokeError ? e.code : (e as ConnectionError).closeCode}`),
    onGroupEvent: (e) => log.push(`event:${e.from}`),
    onGroupMessage: (m) => {
      messages.push(m.seq);
      log.push(`message:${m.seq}`);
    },
  };
  return { log, messages, handlers };
}

export async function until(f: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

export const fast = { initialDelayMs: 5, maxDelayMs: 40 };
export const hello = { token: 't0', deviceId: 'd' };

export function seqs(from: number, to: number): string[] {
  return Array.from({ length: to - from + 1 }, (_, i) => String(from + i));
}

export const H = '34';

export const groupEvent = (operation: GroupEvent['operation'], users: string[], timestamp: number, from = 'bob', groupId = G): GroupEvent => ({
  operation,
  groupId,
  groupName: 'n',
  from,
  users,
  detail: { kind: 'none' },
  timestamp,
});

export const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

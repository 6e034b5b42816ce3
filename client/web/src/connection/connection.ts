/**
 * The `connection` of the seed's Group API (spec/seed-group-api.txt): its method names and
 * option objects as written there, e.g. `connection.acceptGroupInvite({invitee: 'myUserId',
 * groupId: 'groupId'})`, each a promise. Where the seed names no result, a call resolves to
 * what the contract (spec/group-api.md) returns, with the contract's field names
 * (`affiliations_count`, `{owner}`/`{member}` entries, `groupid`/`groupname`); calls that
 * return nothing resolve to `undefined`.
 *
 * Requests go through a Session (pipelined; any number in flight); pushes from the
 * broker's push stream reach the handlers of `addEventHandler`; shared files move on
 * streams of their own (files.ts). Reconnects, resume and the WebTransport dialing come
 * next (issue #14 item 2); this layer works over any ByteStream.
 */

import type {
  GroupEvent,
  GroupInfo as WireGroupInfo,
  GroupMessage,
  Push,
  Request,
  Response,
  ResponseOf,
  Role,
  SharedFile,
} from '../codec/index.js';
import { ConnectionError, ConvokeError, paramError, ProtocolError, reportHandlerError, TimeoutError } from './errors.js';
import {
  defaultResetReason,
  download,
  upload,
  type Progress,
  type ResetReason,
  type StreamOpener,
  type Transfer,
  type TransferLink,
  type TransferLinks,
  type UploadFile,
} from './files.js';
import { PushReader } from './pushes.js';
import { Signal } from './transfer_resume.js';
import { backoffDelay, CLOSE, finalReason, randomClientMsgId, retrySafe, STABLE_MS, type ReconnectPolicy } from './reconnect.js';
import { Sequencer } from './resume.js';
import {
  ext,
  flag,
  optStr,
  options,
  str,
  strMap,
  strs,
  show,
  u32,
  type Options,
} from './options.js';
import { Session, type ByteStream, type HelloOptions, type SessionOptions } from './session.js';

/** getGroupInfo, per group (the contract's names). */
export interface GroupDetail {
  id: string;
  name: string;
  description: string;
  owner: string;
  /** ms since the Unix epoch. */
  created: number;
  affiliations_count: number;
  maxusers: number;
  public: boolean;
  membersonly: boolean;
  allowinvites: boolean;
  invite_need_confirm: boolean;
  /** Mute-all is on. */
  mute: boolean;
  /** createGroup's `ext`. */
  custom: string;
  /** The caller blocked this group's messages. */
  shieldgroup: boolean;
  /** The caller's role; absent when the caller is not a member. */
  role?: Role;
}

/** getGroupInfo of an id that has no info: why. */
export interface GroupDetailError {
  id: string;
  error: { code: number; message: string };
}

/** listGroupMembers: `{owner}` or `{member}` (admins are members with `role: 'admin'`). */
export type MemberListEntry =
  | { owner: string; role: 'owner'; joined_at: number }
  | { member: string; role: 'admin' | 'member'; joined_at: number };

export interface MuteListEntry {
  user: string;
  /** ms since the Unix epoch; -1 = forever. */
  expire: number;
}

export interface SharedFileEntry {
  file_id: string;
  file_name: string;
  file_owner: string;
  file_size: number;
  created: number;
  content_type: string;
  sha256: string;
  /** The download secret. */
  secret: string;
}

export interface JoinedGroupEntry {
  groupid: string;
  groupname: string;
  affiliations_count?: number;
  role?: Role;
}

export interface PublicGroupEntry {
  groupid: string;
  groupname: string;
}

export interface ReadUsersPage {
  total: number;
  users: { user_id: string; read_at: number }[];
  /** The next page's cursor; null on the last page. */
  cursor: string | null;
}

export interface SentMessage {
  msgId: string;
  /** The group's sequence number of the message (a decimal string: u64). */
  seq: string;
  timestamp: number;
}

/** Option objects of the seed's calls. */
export interface GroupIdOption {
  groupId: string;
}
export interface CreateGroupOptions {
  data: {
    groupname: string;
    desc?: string;
    members?: string[];
    public?: boolean;
    approval?: boolean;
    allowinvites?: boolean;
    inviteNeedConfirm?: boolean;
    maxusers?: number;
    /** A string, or any JSON value (stored as its JSON text). */
    ext?: unknown;
  };
}
export type UserOrUsers = string | string[];

function expect<T extends Response['type']>(method: string, r: Response, type: T): ResponseOf<T> {
  if (r.type !== type) {
    throw new ProtocolError(`${method}: the broker answered ${r.type}, expected ${type}`);
  }
  return r as ResponseOf<T>;
}

function detail(info: WireGroupInfo): GroupDetail {
  const out: GroupDetail = {
    id: info.id,
    name: info.name,
    description: info.description,
    owner: info.owner,
    created: info.created,
    affiliations_count: info.affiliationsCount,
    maxusers: info.maxusers,
    public: info.public,
    membersonly: info.membersonly,
    allowinvites: info.allowinvites,
    invite_need_confirm: info.inviteNeedConfirm,
    mute: info.mute,
    custom: info.custom,
    shieldgroup: info.shieldgroup,
  };
  if (info.role !== null) out.role = info.role;
  return out;
}

/** Runs an application callback; what it throws is reported, as an event handler's is. */
function guarded(f: () => void): void {
  try {
    f();
  } catch (e) {
    reportHandlerError(e);
  }
}

/** The longest delay setTimeout takes (2^31 - 1 ms); past it, the timer fires at once. */
const MAX_TIMER_MS = 2_147_483_647;

function fileEntry(f: SharedFile): SharedFileEntry {
  return {
    file_id: f.fileId,
    file_name: f.fileName,
    file_owner: f.fileOwner,
    // At most the contract's 10 MiB: exact as a number.
    file_size: Number(f.fileSize),
    created: f.created,
    content_type: f.contentType,
    sha256: f.sha256,
    secret: f.secret,
  };
}

/**
 * What `addEventHandler` takes: the seed's `onGroupEvent` and `onMultiDeviceEvent`, a
 * message handler, and the connection's end. Events are the codec's `GroupEvent`
 * (`operation`, `groupId`, `groupName`, `from`, `users`, `detail`, `timestamp`).
 */
export interface EventHandlers {
  onGroupEvent?: (event: GroupEvent) => void;
  onMultiDeviceEvent?: (event: GroupEvent) => void;
  onGroupMessage?: (message: GroupMessage) => void;
  /**
   * A link is up: the first (called by `connect` for the handlers given to it) and each
   * one after a reconnect (then before the catch-up's messages and `onReconnected`). A
   * link that ends before it is announced, or during its catch-up, gets neither: after
   * `onDisconnected`, nothing of that link follows.
   */
  onConnected?: () => void;
  /**
   * A link ended: `error` says why (its `closeCode` when the broker closed it); `closing`
   * is the broker's notice when it sent one. A reconnecting connection then reports
   * `onReconnecting` for each attempt, or, when it gives up or was closed, nothing more.
   */
  onDisconnected?: (error: ConnectionError, closing?: { code: number; reason: string }) => void;
  /** A reconnect attempt is about to be made after `delayMs` (the jittered back-off). */
  onReconnecting?: (info: { attempt: number; delayMs: number; reason: string }) => void;
  /**
   * Reconnected and caught up: every message missed meanwhile (`recovered` of them) has
   * been handed on, in order, before this; newer pushes follow. Events that are not kept
   * (updates, mutes, ...) made while away are not replayed: the cue to re-read group state.
   */
  onReconnected?: (info: { recovered: number }) => void;
  /**
   * The session ended because its token expired (close code 8); `refreshing` when the
   * `tokenProvider` will be asked for a new one, else the connection ends (log in again).
   */
  onTokenExpired?: (info: { refreshing: boolean }) => void;
  /** The connection ended for good (closed, or a refusal retrying cannot fix): why. */
  onClosed?: (error: ConnectionError | ConvokeError) => void;
}

/** One link of a connection: a session and the streams that go with it. */
export interface Link {
  session: Session;
  /** The broker's push stream, once it comes (undefined: this link takes no pushes). */
  pushes?: Promise<ReadableStream<Uint8Array> | undefined>;
  /** Opens a transfer stream on this link. */
  openStream?: StreamOpener;
  resetReason?: ResetReason;
}

/** Opens a new link with this hello (its token is the current one). */
export type Dialer = (hello: HelloOptions) => Promise<Link>;

/** Options of a reconnecting connection. */
export interface ResilienceOptions {
  /** When and how often to reconnect; `false` never. Default: jittered 100 ms .. 5 s, forever. */
  reconnect?: ReconnectPolicy | false;
  /**
   * Asked for a token for every dial after the first (and for the first, when `token` is
   * empty), as the Rust client's `token_provider`: a session ended by its token's expiry is
   * then replaced with a new token instead of ending the connection.
   */
  tokenProvider?: () => string | Promise<string>;
  /**
   * How often (ms) the link is checked with a ping, whether or not other traffic flows; a
   * link whose ping gets no answer in `heartbeatTimeoutMs` is taken as lost and replaced. A
   * browser cannot set QUIC's idle timeout, so without this a tab whose network (or broker)
   * vanished without a close waits for the browser's own timeout. Default 15,000; 0 sends
   * no pings.
   */
  heartbeatMs?: number;
  /**
   * How long a heartbeat ping may take before the link counts as lost (ms). Default
   * 10,000; 0 sets no limit (pings still go out, but a silent link is not found by them).
   */
  heartbeatTimeoutMs?: number;
}

/** How a connection opens its transfer streams (WebTransport: `createBidirectionalStream`). */
export interface StreamOptions {
  /** Opens a new bidirectional stream for a shared-file transfer. */
  openStream?: StreamOpener;
  /** The reason a cancelled transfer's stream is reset with (see files.ts). */
  resetReason?: ResetReason;
}

export interface UploadCallbacks {
  onFileUploadProgress?: (p: Progress) => void;
  onFileUploadComplete?: (file: SharedFileEntry) => void;
  onFileUploadError?: (e: Error) => void;
  onFileUploadCanceled?: () => void;
}

export interface DownloadCallbacks {
  onFileDownloadProgress?: (p: Progress) => void;
  /** The file's bytes (a Blob of its content type) and its index entry. */
  onFileDownloadComplete?: (data: Blob, file: SharedFileEntry) => void;
  onFileDownloadError?: (e: Error) => void;
}

/** How the broker words a 500 after which a change may or may not have been made. */
const OUTCOME_OPEN = 'may or may not';

export class Connection {
  private readonly handlers = new Map<string, EventHandlers>();
  private pushes: PushReader | undefined;
  private streams: StreamOptions;
  private current: Session;
  /** The generation of the current link (1 for the first). */
  private gen = 0;
  private readonly sequencer: Sequencer;
  private readonly resilience: { dial: Dialer; hello: HelloOptions; policy: ReconnectPolicy; tokenProvider?: () => string | Promise<string> } | undefined;
  private readonly requestTimeoutMs: number;
  /** Set once the connection is over for good: every call rejects with it. */
  private final: ConnectionError | ConvokeError | undefined;
  private closingByApp = false;
  private readonly upWaiters = new Set<() => void>();
  /** Ends the back-off sleep early (close()). */
  private wake: (() => void) | undefined;
  private upSince = Date.now();
  private attempt = 0;
  private readonly heartbeat: { every: number; timeout: number };

  constructor(
    /** The session the calls go through (the first link's). */
    session: Session,
    streams: StreamOptions = {},
    resilience?: {
      dial: Dialer;
      hello: HelloOptions;
      link?: Link;
      requestTimeoutMs?: number;
      handlers?: Record<string, EventHandlers>;
    } & ResilienceOptions,
  ) {
    this.streams = streams;
    this.current = session;
    this.requestTimeoutMs = resilience?.requestTimeoutMs ?? 30_000;
    this.heartbeat = resilience
      ? { every: resilience.heartbeatMs ?? 15_000, timeout: resilience.heartbeatTimeoutMs ?? 10_000 }
      : { every: 0, timeout: 0 };
    if (resilience) {
      this.resilience = {
        dial: resilience.dial,
        hello: resilience.hello,
        policy: resilience.reconnect === false ? { enabled: false } : (resilience.reconnect ?? {}),
        ...(resilience.tokenProvider ? { tokenProvider: resilience.tokenProvider } : {}),
      };
    }
    this.sequencer = new Sequencer(
      {
        request: (r) => this.current.request(r),
        isLive: (gen) => gen === this.gen && !this.current.closed,
        ack: (ids) => {
          if (!this.current.closed) this.current.ack(ids).catch(() => {});
          // else: the broker keeps the events and replays them at the next login; the copy is acknowledged.
        },
        deliver: (push) => this.handOn(push),
        connected: () => this.emit((h) => h.onConnected?.()),
        resumed: (recovered) => this.emit((h) => h.onReconnected?.({ recovered })),
        requestTimeoutMs: this.requestTimeoutMs,
      },
      // No message catch-up for a connection that takes no events.
      this.resilience !== undefined && resilience?.hello.events !== false,
    );
    // Handlers go on before the first link is attached: they see onConnected and its first pushes.
    for (const [id, h] of Object.entries(resilience?.handlers ?? {})) this.handlers.set(id, h);
    this.attach(session, false, resilience?.link);
  }

  /** The session calls go through now (the current link's; a reconnect replaces it). */
  get session(): Session {
    return this.current;
  }

  /** Whether a link is up now. */
  get connected(): boolean {
    return !this.current.closed && this.final === undefined;
  }

  private attach(session: Session, reconnect: boolean, link?: Link): void {
    this.current = session;
    const gen = ++this.gen;
    this.pushes = undefined;
    if (link) {
      this.streams = {
        ...(link.openStream ? { openStream: link.openStream } : {}),
        ...(link.resetReason ? { resetReason: link.resetReason } : {}),
      };
    }
    session.onEnd((e) => void this.linkEnded(gen, e));
    if (this.heartbeat.every > 0) this.keepAlive(session);
    if (this.resilience) this.sequencer.up(gen, reconnect, session.welcome);
    for (const w of [...this.upWaiters]) w();
    if (link?.pushes) {
      void link.pushes.then(
        (readable) => {
          if (readable && gen === this.gen) void this.readPushes(readable, gen);
        },
        () => {},
      );
    }
  }

  /** Pings `session` while it lasts; no answer in time ends it as lost. */
  private keepAlive(session: Session): void {
    let nonce = 0;
    const timer = setInterval(() => {
      const timeout = this.heartbeat.timeout;
      session.request({ method: 'ping', nonce: String(++nonce) }, timeout).catch((e: unknown) => {
        if (e instanceof TimeoutError) {
          session.fail(new ConnectionError(`no answer to a ping within ${timeout} ms: the connection is lost`));
        }
      });
    }, this.heartbeat.every);
    session.onEnd(() => clearInterval(timer));
  }

  /** Adds (or replaces) the handlers registered under `id`, as the seed's SDK does. */
  addEventHandler(id: string, handlers: EventHandlers): void {
    this.handlers.set(id, handlers);
  }

  /** The broker's notice that it is closing this connection, once one has come. */
  get closing(): { code: number; reason: string } | undefined {
    return this.pushes?.closing;
  }

  removeEventHandler(id: string): void {
    this.handlers.delete(id);
  }

  /**
   * Resume `groupId`'s messages after `seq` at the next reconnect (a position the page
   * kept, e.g. across reloads: `lastSeq(groupId)`). Only on a reconnecting connection.
   */
  trackGroup(groupId: string, seq: string): void {
    this.sequencer.track(groupId, seq);
  }

  /** The last message seq handed on for `groupId`, if it is tracked. */
  lastSeq(groupId: string): string | undefined {
    return this.sequencer.position(groupId);
  }

  /**
   * Reads the broker's push stream (the unidirectional stream it opens after the welcome)
   * and hands its pushes to the handlers, acknowledging kept events once handed on.
   * Resolves when the stream ends.
   */
  receivePushes(readable: ReadableStream<Uint8Array>): Promise<void> {
    return this.readPushes(readable, this.gen);
  }

  private readPushes(readable: ReadableStream<Uint8Array>, gen: number): Promise<void> {
    const reader = new PushReader(this.current, (push) => this.sequencer.push(gen, push));
    this.pushes = reader;
    return reader.run(readable);
  }

  private handOn(push: Push): void {
    switch (push.push) {
      case 'group':
        return this.emit((h) => h.onGroupEvent?.(push.event));
      case 'multiDevice':
        return this.emit((h) => h.onMultiDeviceEvent?.(push.event));
      case 'message':
        return this.emit((h) => h.onGroupMessage?.(push.message));
      default:
        // `closing` is kept for onDisconnected; `kept` arrives as `group`.
        return undefined;
    }
  }

  private emit(f: (h: EventHandlers) => void): void {
    for (const h of [...this.handlers.values()]) {
      try {
        f(h);
      } catch (e) {
        // One handler's fault neither stops the others nor the stream.
        reportHandlerError(e);
      }
    }
  }

  /** Opens a session on `stream` (hello, welcome) and returns its connection (no reconnects). */
  static async open(
    stream: ByteStream,
    hello: HelloOptions,
    options: SessionOptions & StreamOptions = {},
  ): Promise<Connection> {
    return new Connection(await Session.open(stream, hello, options), options);
  }

  /**
   * Opens a reconnecting connection: `dial` opens each link (the first now, with `hello`;
   * later ones with the current token, or the `tokenProvider`'s), and the connection
   * replaces a link that drops as the Rust client does (reconnect.ts), resuming the
   * message stream gap-free (resume.ts). Rejects as the first dial does.
   */
  static async dial(
    dial: Dialer,
    hello: HelloOptions,
    options: SessionOptions & ResilienceOptions & { handlers?: Record<string, EventHandlers> } = {},
  ): Promise<Connection> {
    let first = hello;
    if (!hello.token && options.tokenProvider) first = { ...hello, token: await options.tokenProvider() };
    const link = await dial(first);
    return new Connection(link.session, {}, { ...options, dial, hello: first, link });
  }

  /** The user this connection acts as (from the token). */
  get user(): string {
    return this.current.welcome.userId;
  }

  /** Ends the connection for good; calls in flight reject with a ConnectionError. */
  close(): void {
    this.closingByApp = true;
    this.wake?.();
    this.current.close();
    if (!this.final) this.finish(new ConnectionError('closed by the application', 0));
  }

  private finish(e: ConnectionError | ConvokeError): void {
    if (this.final) return;
    this.final = e;
    for (const w of [...this.upWaiters]) w();
    this.emit((h) => h.onClosed?.(e));
  }

  /** The current link ended: replaced, unless it must not be (reconnect.ts). */
  private async linkEnded(gen: number, e: ConnectionError): Promise<void> {
    if (gen !== this.gen) return;
    const closing = this.pushes?.closing;
    this.emit((h) => h.onDisconnected?.(e, closing));
    const r = this.resilience;
    if (!r || this.closingByApp || this.final) {
      this.finish(this.closingByApp ? new ConnectionError('closed by the application', 0) : e);
      return;
    }
    if (e.closeCode === CLOSE.TOKEN_EXPIRED) {
      const refreshing = (r.policy.enabled ?? true) && r.tokenProvider !== undefined;
      this.emit((h) => h.onTokenExpired?.({ refreshing }));
      if (!refreshing) {
        this.finish(new ConnectionError(`token expired: log in again with a new token (${e.message})`, e.closeCode, e));
        return;
      }
    }
    const why = finalReason(e) ?? ((r.policy.enabled ?? true) ? undefined : `connection lost (${e.message}); reconnecting is off`);
    if (why !== undefined) {
      this.finish(e);
      return;
    }
    if (Date.now() - this.upSince >= STABLE_MS) this.attempt = 0;
    const before = this.attempt;
    let reason = e.message;
    for (;;) {
      // close() (or the end) came while the last attempt dialled: nothing more to report.
      if (this.closingByApp || this.final) return;
      this.attempt++;
      if (r.policy.maxAttempts !== undefined && this.attempt - before > r.policy.maxAttempts) {
        this.finish(new ConnectionError(`gave up after ${this.attempt - before - 1} attempts: ${reason}`, e.closeCode, e));
        return;
      }
      const delayMs = backoffDelay(r.policy, this.attempt);
      this.emit((h) => h.onReconnecting?.({ attempt: this.attempt, delayMs, reason }));
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delayMs);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
      if (this.closingByApp) return;
      let link: Link;
      try {
        const token = r.tokenProvider ? await r.tokenProvider() : r.hello.token;
        r.hello = { ...r.hello, token };
        link = await r.dial(r.hello);
      } catch (err) {
        if (this.closingByApp || this.final) return;
        const fin = finalReason(err);
        if (fin !== undefined) {
          this.finish(err instanceof ConvokeError || err instanceof ConnectionError ? err : new ConnectionError(fin, undefined, err));
          return;
        }
        reason = err instanceof Error ? err.message : String(err);
        continue;
      }
      if (this.closingByApp) {
        link.session.close();
        return;
      }
      if (link.session.welcome.userId !== this.current.welcome.userId) {
        link.session.close('wrong user');
        this.finish(new ConnectionError(`the token provider gave a token for ${JSON.stringify(link.session.welcome.userId)}, not ${JSON.stringify(this.current.welcome.userId)}`));
        return;
      }
      this.upSince = Date.now();
      this.attach(link.session, true, link);
      return;
    }
  }

  /** Waits for a live link until `deadline`; rejects with why there is none. */
  private waitUp(deadline: number, method: string): Promise<Session> {
    return new Promise<Session>((resolve, reject) => {
      const check = (): boolean => {
        if (this.final) {
          reject(this.final);
          return true;
        }
        if (!this.current.closed) {
          resolve(this.current);
          return true;
        }
        return false;
      };
      if (check()) return;
      const waiter = () => {
        if (check()) {
          clearTimeout(timer);
          this.upWaiters.delete(waiter);
        }
      };
      // No deadline (requestTimeoutMs 0): no timer; setTimeout(Infinity) would fire at once.
      const timer = Number.isFinite(deadline)
        ? setTimeout(
            () => {
              this.upWaiters.delete(waiter);
              reject(new ConnectionError(`${method}: not reconnected in time (${this.requestTimeoutMs} ms)`));
            },
            // setTimeout takes at most 2^31 - 1 ms; a longer delay would fire at once too.
            Math.min(Math.max(deadline - Date.now(), 0), MAX_TIMER_MS),
          )
        : undefined;
      this.upWaiters.add(waiter);
    });
  }

  /**
   * Sends `request` and resolves to the answer. A reconnecting connection waits for a link
   * (up to the request timeout), and sends a request again on the next link when the one it
   * went out on dropped first only if that is safe (reads; sends with a client message
   * id); other changes reject with the link's ConnectionError, as they may have taken effect.
   *
   * A send with a client message id answered 500 "may or may not have been made" (in a
   * cluster, its group's owner node died or froze mid-call) is sent again after 100 ms
   * (doubling to 1 s) while repeats are answered so. Once a send may have been made (that
   * answer, or its link lost after it went out) only a success resolves it: any other
   * answer, the request timeout or the connection's end rejects with a ConvokeError 500
   * that says the outcome is open and names the clientMsgId to send it again with (the
   * broker answers a repeat with the original), as the Rust client does.
   */
  private async send(request: Request): Promise<Response> {
    if (!this.resilience) return this.current.request(request);
    const deadline = this.requestTimeoutMs > 0 ? Date.now() + this.requestTimeoutMs : Infinity;
    const id = request.method === 'sendGroupMessage' ? (request.clientMsgId ?? undefined) : undefined;
    let open: ConvokeError | undefined;
    let delay = 100;
    const openError = (first: ConvokeError): ConvokeError =>
      new ConvokeError(first.code, `${first.detail}; send it again with clientMsgId ${JSON.stringify(id)} to learn whether it was stored`);
    for (;;) {
      let s: Session;
      try {
        s = await this.waitUp(deadline, request.method);
      } catch (e) {
        throw open ? openError(open) : e;
      }
      const left = deadline === Infinity ? 0 : Math.max(1, deadline - Date.now());
      try {
        return await s.request(request, left);
      } catch (e) {
        if (e instanceof ConnectionError) {
          if (id !== undefined) {
            open ??= new ConvokeError(500, `${e.message}: the send may or may not have been made, read the group's messages before sending it anew`);
          }
          if (this.final || this.closingByApp || !retrySafe(request) || Date.now() >= deadline) {
            if (open) throw openError(open);
            if (Date.now() >= deadline) throw new TimeoutError(`${request.method}: no answer within ${this.requestTimeoutMs} ms`);
            throw e;
          }
          continue;
        }
        if (id === undefined) throw e;
        if (e instanceof TimeoutError) {
          throw openError(open ?? new ConvokeError(500, `no answer within the request timeout (${this.requestTimeoutMs} ms): the send may or may not have been made`));
        }
        const isOpen = e instanceof ConvokeError && e.code === 500 && e.detail.includes(OUTCOME_OPEN);
        if (!isOpen && !open) throw e;
        open ??= e as ConvokeError;
        if (!isOpen || this.final || this.closingByApp || Date.now() + 2 * delay >= deadline) throw openError(open);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  /** Validates the options with `build`, sends the request, checks the answer. */
  private async call<T>(
    method: Request['method'],
    opts: unknown,
    build: (o: Options) => Request,
    answer: (r: Response) => T,
  ): Promise<T> {
    if (this.final) throw this.final;
    const o = options(method, opts);
    const request = build(o);
    return answer(this.sequencer.answered(request, await this.send(request)));
  }

  private done(method: Request['method'], opts: unknown, build: (o: Options) => Request): Promise<void> {
    return this.call(method, opts, build, (r) => {
      expect(method, r, 'done');
    });
  }

  private users(method: Request['method'], opts: unknown, build: (o: Options) => Request): Promise<string[]> {
    return this.call(method, opts, build, (r) => expect(method, r, 'users').users);
  }

  private bool(method: Request['method'], opts: unknown, build: (o: Options) => Request): Promise<boolean> {
    return this.call(method, opts, build, (r) => expect(method, r, 'bool').value);
  }

  // --- groups -------------------------------------------------------------------------

  /** createGroup: resolves to `{ groupid }`. */
  createGroup(opts: CreateGroupOptions): Promise<{ groupid: string }> {
    const m = 'createGroup';
    return this.call(
      m,
      opts,
      (o) => {
        const d = options(`${m}: data`, o.data);
        const maxusers = d.maxusers === undefined || d.maxusers === null ? null : u32(m, d, 'maxusers');
        return {
          method: m,
          data: {
            groupname: str(m, d, 'groupname'),
            desc: optStr(m, d, 'desc') ?? '',
            members: strs(m, d, 'members', false, []),
            public: flag(m, d, 'public', false),
            approval: flag(m, d, 'approval', false),
            allowinvites: flag(m, d, 'allowinvites', false),
            inviteNeedConfirm: flag(m, d, 'inviteNeedConfirm', true),
            maxusers,
            ext: ext(m, d, 'ext') ?? '',
          },
        };
      },
      (r) => {
        const groupid = expect(m, r, 'groupCreated').groupId;
        if (this.sequencer.resume) this.sequencer.created(groupid);
        return { groupid };
      },
    );
  }

  /** destroyGroup (owner). */
  destroyGroup(opts: GroupIdOption): Promise<void> {
    return this.done('destroyGroup', opts, (o) => ({ method: 'destroyGroup', groupId: str('destroyGroup', o, 'groupId') }));
  }

  /** getGroupInfo: `groupId` is one id or a list (<= 100); one entry per id, in order. */
  getGroupInfo(opts: { groupId: string | string[] }): Promise<(GroupDetail | GroupDetailError)[]> {
    const m = 'getGroupInfo';
    return this.call(
      m,
      opts,
      (o) => ({ method: m, groupIds: strs(m, o, 'groupId', true) }),
      (r) =>
        expect(m, r, 'groupInfos').groups.map((g) =>
          g.info
            ? detail(g.info)
            : { id: g.groupId, error: g.error ?? { code: 1, message: 'no info and no error' } },
        ),
    );
  }

  /** modifyGroup (owner, admin): only the fields given change. */
  modifyGroup(opts: { groupId: string; groupName?: string; description?: string; ext?: unknown }): Promise<void> {
    const m = 'modifyGroup';
    return this.done(m, opts, (o) => ({
      method: m,
      groupId: str(m, o, 'groupId'),
      groupName: optStr(m, o, 'groupName'),
      description: optStr(m, o, 'description'),
      ext: ext(m, o, 'ext'),
    }));
  }

  /** changeGroupOwner (owner): `newOwner` must be a member. */
  changeGroupOwner(opts: { groupId: string; newOwner: string }): Promise<void> {
    const m = 'changeGroupOwner';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), newOwner: str(m, o, 'newOwner') }));
  }

  /** listGroupMembers: `pageNum` from 1 (default 1), `pageSize` up to 1000 (default 20). */
  listGroupMembers(opts: { groupId: string; pageNum?: number; pageSize?: number }): Promise<MemberListEntry[]> {
    const m = 'listGroupMembers';
    return this.call(
      m,
      opts,
      (o) => ({
        method: m,
        groupId: str(m, o, 'groupId'),
        pageNum: u32(m, o, 'pageNum', 1),
        pageSize: u32(m, o, 'pageSize', 20),
      }),
      (r) =>
        expect(m, r, 'members').members.map((e): MemberListEntry =>
          e.role === 'owner'
            ? { owner: e.userId, role: 'owner', joined_at: e.joinedAt }
            : { member: e.userId, role: e.role, joined_at: e.joinedAt },
        ),
    );
  }

  /** getGroupAdmin: the admins' user ids. */
  getGroupAdmin(opts: GroupIdOption): Promise<string[]> {
    return this.users('getGroupAdmin', opts, (o) => ({ method: 'getGroupAdmin', groupId: str('getGroupAdmin', o, 'groupId') }));
  }

  /** setGroupAdmin (owner). */
  setGroupAdmin(opts: { groupId: string; username: string }): Promise<void> {
    const m = 'setGroupAdmin';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), username: str(m, o, 'username') }));
  }

  /** removeGroupAdmin (owner). */
  removeGroupAdmin(opts: { groupId: string; username: string }): Promise<void> {
    const m = 'removeGroupAdmin';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), username: str(m, o, 'username') }));
  }

  /** fetchGroupAnnouncement: resolves to `{ announcement }`. */
  fetchGroupAnnouncement(opts: GroupIdOption): Promise<{ announcement: string }> {
    const m = 'fetchGroupAnnouncement';
    return this.call(
      m,
      opts,
      (o) => ({ method: m, groupId: str(m, o, 'groupId') }),
      (r) => ({ announcement: expect(m, r, 'announcement').announcement }),
    );
  }

  /** updateGroupAnnouncement (owner, admin): "" deletes it. */
  updateGroupAnnouncement(opts: { groupId: string; announcement: string }): Promise<void> {
    const m = 'updateGroupAnnouncement';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), announcement: str(m, o, 'announcement') }));
  }

  /**
   * getJoinedGroups: with `needAffiliations` or `needRole`, `pageNum` starts at 0 and
   * `pageSize` is at most 20; otherwise from 1 and at most 500 (the seed's paging rules).
   * Defaults: the first page, 20 groups.
   */
  getJoinedGroups(opts: {
    pageNum?: number;
    pageSize?: number;
    needAffiliations?: boolean;
    needRole?: boolean;
  }): Promise<JoinedGroupEntry[]> {
    const m = 'getJoinedGroups';
    return this.call(
      m,
      opts,
      (o) => {
        const needAffiliations = flag(m, o, 'needAffiliations', false);
        const needRole = flag(m, o, 'needRole', false);
        return {
          method: m,
          pageNum: u32(m, o, 'pageNum', needAffiliations || needRole ? 0 : 1),
          pageSize: u32(m, o, 'pageSize', 20),
          needAffiliations,
          needRole,
        };
      },
      (r) =>
        expect(m, r, 'joinedGroups').groups.map((g) => {
          const out: JoinedGroupEntry = { groupid: g.groupId, groupname: g.groupName };
          if (g.affiliationsCount !== null) out.affiliations_count = g.affiliationsCount;
          if (g.role !== null) out.role = g.role;
          return out;
        }),
    );
  }

  /** getPublicGroups: `cursor` null for the first page; the answer's cursor is null on the last. */
  getPublicGroups(opts: { limit: number; cursor?: string | null }): Promise<{ data: PublicGroupEntry[]; cursor: string | null }> {
    const m = 'getPublicGroups';
    return this.call(
      m,
      opts,
      (o) => ({ method: m, limit: u32(m, o, 'limit'), cursor: optStr(m, o, 'cursor') }),
      (r) => {
        const p = expect(m, r, 'publicGroups');
        return { data: p.groups.map((g) => ({ groupid: g.groupId, groupname: g.groupName })), cursor: p.cursor };
      },
    );
  }

  // --- membership ---------------------------------------------------------------------

  /** inviteUsersToGroup: who got a pending invitation, who joined directly. */
  inviteUsersToGroup(opts: { groupId: string; users: string[] }): Promise<{ pending: string[]; joined: string[] }> {
    const m = 'inviteUsersToGroup';
    return this.call(
      m,
      opts,
      (o) => ({ method: m, groupId: str(m, o, 'groupId'), users: strs(m, o, 'users') }),
      (r) => {
        const i = expect(m, r, 'invited');
        return { pending: i.pending, joined: i.joined };
      },
    );
  }

  /** acceptGroupInvite: `invitee` is the caller's own user id. */
  acceptGroupInvite(opts: { invitee: string; groupId: string }): Promise<void> {
    const m = 'acceptGroupInvite';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), invitee: str(m, o, 'invitee') }));
  }

  /** rejectGroupInvite: `invitee` is the caller's own user id. */
  rejectGroupInvite(opts: { invitee: string; groupId: string }): Promise<void> {
    const m = 'rejectGroupInvite';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), invitee: str(m, o, 'invitee') }));
  }

  /** joinGroup (public groups): `{ joined: false }` while the request awaits approval. */
  joinGroup(opts: { groupId: string; message?: string }): Promise<{ joined: boolean }> {
    const m = 'joinGroup';
    return this.call(
      m,
      opts,
      (o) => ({ method: m, groupId: str(m, o, 'groupId'), message: optStr(m, o, 'message') ?? '' }),
      (r) => ({ joined: expect(m, r, 'joinResult').joined }),
    );
  }

  /** acceptGroupJoinRequest (owner, admin). */
  acceptGroupJoinRequest(opts: { applicant: string; groupId: string }): Promise<void> {
    const m = 'acceptGroupJoinRequest';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), applicant: str(m, o, 'applicant') }));
  }

  /** rejectGroupJoinRequest (owner, admin): the applicant gets the reason. */
  rejectGroupJoinRequest(opts: { applicant: string; groupId: string; reason?: string }): Promise<void> {
    const m = 'rejectGroupJoinRequest';
    return this.done(m, opts, (o) => ({
      method: m,
      groupId: str(m, o, 'groupId'),
      applicant: str(m, o, 'applicant'),
      reason: optStr(m, o, 'reason') ?? '',
    }));
  }

  /** leaveGroup (not the owner). */
  leaveGroup(opts: GroupIdOption): Promise<void> {
    return this.done('leaveGroup', opts, (o) => ({ method: 'leaveGroup', groupId: str('leaveGroup', o, 'groupId') }));
  }

  /** removeGroupMember (owner, admin). */
  removeGroupMember(opts: { groupId: string; username: string }): Promise<void> {
    const m = 'removeGroupMember';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), username: str(m, o, 'username') }));
  }

  /** removeGroupMembers (owner, admin): at most 60 users. */
  removeGroupMembers(opts: { groupId: string; users: string[] }): Promise<void> {
    const m = 'removeGroupMembers';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), users: strs(m, o, 'users') }));
  }

  /** blockGroupMember (owner, admin): removes the member and keeps them out. */
  blockGroupMember(opts: { groupId: string; username: string }): Promise<void> {
    const m = 'blockGroupMember';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), username: str(m, o, 'username') }));
  }

  /** blockGroupMembers (owner, admin): at most 60 users. */
  blockGroupMembers(opts: { usernames: string[]; groupId: string }): Promise<void> {
    const m = 'blockGroupMembers';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), usernames: strs(m, o, 'usernames') }));
  }

  /** unblockGroupMember (owner, admin). */
  unblockGroupMember(opts: { groupId: string; username: string }): Promise<void> {
    const m = 'unblockGroupMember';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), username: str(m, o, 'username') }));
  }

  /** unblockGroupMembers (owner, admin): at most 60 users. */
  unblockGroupMembers(opts: { groupId: string; usernames: string[] }): Promise<void> {
    const m = 'unblockGroupMembers';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), usernames: strs(m, o, 'usernames') }));
  }

  /** getGroupBlocklist (owner, admin): the first page of blocked users. */
  getGroupBlocklist(opts: GroupIdOption): Promise<string[]> {
    return this.users('getGroupBlocklist', opts, (o) => ({ method: 'getGroupBlocklist', groupId: str('getGroupBlocklist', o, 'groupId') }));
  }

  // --- moderation ---------------------------------------------------------------------

  /**
   * muteGroupMember (owner, admin): `username` is one user or a list (<= 60);
   * `muteDuration` in ms, -1 = forever. Resolves to the mutes set.
   */
  muteGroupMember(opts: { groupId: string; username: UserOrUsers; muteDuration: number }): Promise<MuteListEntry[]> {
    const m = 'muteGroupMember';
    return this.call(
      m,
      opts,
      (o) => {
        const d = o.muteDuration;
        if (typeof d !== 'number' || !Number.isSafeInteger(d)) {
          throw paramError(`${m}: muteDuration must be a whole number of ms (-1 = forever), got ${String(d)}`);
        }
        return { method: m, groupId: str(m, o, 'groupId'), username: strs(m, o, 'username', true), muteDuration: d };
      },
      (r) => expect(m, r, 'mutes').mutes.map((x) => ({ user: x.user, expire: x.expire })),
    );
  }

  /** unmuteGroupMember (owner, admin): `username` is one user or a list. */
  unmuteGroupMember(opts: { groupId: string; username: UserOrUsers }): Promise<void> {
    const m = 'unmuteGroupMember';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), username: strs(m, o, 'username', true) }));
  }

  /** getGroupMutelist (owner, admin): user and expiry of each mute (the first page). */
  getGroupMutelist(opts: GroupIdOption): Promise<MuteListEntry[]> {
    const m = 'getGroupMutelist';
    return this.call(
      m,
      opts,
      (o) => ({ method: m, groupId: str(m, o, 'groupId') }),
      (r) => expect(m, r, 'mutes').mutes.map((x) => ({ user: x.user, expire: x.expire })),
    );
  }

  /** isInGroupMutelist: whether the caller is muted. */
  isInGroupMutelist(opts: GroupIdOption): Promise<boolean> {
    return this.bool('isInGroupMutelist', opts, (o) => ({ method: 'isInGroupMutelist', groupId: str('isInGroupMutelist', o, 'groupId') }));
  }

  /** disableSendGroupMsg (owner, admin): mute-all on. */
  disableSendGroupMsg(opts: GroupIdOption): Promise<void> {
    return this.done('disableSendGroupMsg', opts, (o) => ({ method: 'disableSendGroupMsg', groupId: str('disableSendGroupMsg', o, 'groupId') }));
  }

  /** enableSendGroupMsg (owner, admin): mute-all off. */
  enableSendGroupMsg(opts: GroupIdOption): Promise<void> {
    return this.done('enableSendGroupMsg', opts, (o) => ({ method: 'enableSendGroupMsg', groupId: str('enableSendGroupMsg', o, 'groupId') }));
  }

  /** addUsersToGroupAllowlist (owner, admin): at most 60 users. */
  addUsersToGroupAllowlist(opts: { groupId: string; users: string[] }): Promise<void> {
    const m = 'addUsersToGroupAllowlist';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), users: strs(m, o, 'users') }));
  }

  /** removeGroupAllowlistMember (owner, admin). */
  removeGroupAllowlistMember(opts: { groupId: string; userName: string }): Promise<void> {
    const m = 'removeGroupAllowlistMember';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), userName: str(m, o, 'userName') }));
  }

  /** getGroupAllowlist (owner, admin): the first page of allowlisted users. */
  getGroupAllowlist(opts: GroupIdOption): Promise<string[]> {
    return this.users('getGroupAllowlist', opts, (o) => ({ method: 'getGroupAllowlist', groupId: str('getGroupAllowlist', o, 'groupId') }));
  }

  /** isInGroupAllowlist: app admins may ask about anyone, others about themselves. */
  isInGroupAllowlist(opts: { groupId: string; userName: string }): Promise<boolean> {
    const m = 'isInGroupAllowlist';
    return this.bool(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), userName: str(m, o, 'userName') }));
  }

  /** blockGroupMessages (members, not owner or admins): stop receiving the group's messages. */
  blockGroupMessages(opts: GroupIdOption): Promise<void> {
    return this.done('blockGroupMessages', opts, (o) => ({ method: 'blockGroupMessages', groupId: str('blockGroupMessages', o, 'groupId') }));
  }

  /** unblockGroupMessages (a Convoke addition): undoes blockGroupMessages. */
  unblockGroupMessages(opts: GroupIdOption): Promise<void> {
    return this.done('unblockGroupMessages', opts, (o) => ({ method: 'unblockGroupMessages', groupId: str('unblockGroupMessages', o, 'groupId') }));
  }

  // --- files (the index; upload and download come with the transfer streams) ----------

  /** getGroupSharedFilelist: `pageNum` from 1 (default 1), `pageSize` up to 10 (default 10). */
  getGroupSharedFilelist(opts: { groupId: string; pageNum?: number; pageSize?: number }): Promise<SharedFileEntry[]> {
    const m = 'getGroupSharedFilelist';
    return this.call(
      m,
      opts,
      (o) => ({
        method: m,
        groupId: str(m, o, 'groupId'),
        pageNum: u32(m, o, 'pageNum', 1),
        pageSize: u32(m, o, 'pageSize', 10),
      }),
      (r) => expect(m, r, 'files').files.map(fileEntry),
    );
  }

  /**
   * uploadGroupSharedFile (members): `file` is a Blob/File or the chat SDK's `{ data: File,
   * filename, filetype }`. Resolves to the file's entry (and calls onFileUploadComplete);
   * `cancel()` on the result stops it (onFileUploadCanceled; the promise rejects with 101).
   * With an error or cancel callback given, the promise's rejection counts as handled.
   */
  uploadGroupSharedFile(
    opts: { groupId: string; file: UploadFile; fileName?: string; contentType?: string } & UploadCallbacks,
  ): Transfer<SharedFileEntry> {
    const m = 'uploadGroupSharedFile';
    return this.transferCall(
      () => {
        const o = options(m, opts);
        if (!(opts.file instanceof Blob) && !(opts.file?.data instanceof Blob)) {
          const f: unknown = opts.file;
          const [what, bad] = typeof f === 'object' && f !== null && !Array.isArray(f)
            ? ['file.data', (f as { data?: unknown }).data]
            : ['file', f];
          throw paramError(`${m}: file must be a Blob, a File or { data: File }; ${what} is ${show(bad)}`);
        }
        return upload(this.transferLinks(), {
          groupId: str(m, o, 'groupId'),
          file: opts.file,
          ...(optStr(m, o, 'fileName') !== null ? { fileName: str(m, o, 'fileName') } : {}),
          ...(optStr(m, o, 'contentType') !== null ? { contentType: str(m, o, 'contentType') } : {}),
          ...(opts.onFileUploadProgress ? { onProgress: opts.onFileUploadProgress } : {}),
        });
      },
      (f) => {
        const entry = fileEntry(f);
        // The file is stored whatever the callback does: its fault is reported, not the call's.
        guarded(() => opts.onFileUploadComplete?.(entry));
        return entry;
      },
      opts.onFileUploadError,
      opts.onFileUploadCanceled,
    );
  }

  /**
   * downloadGroupSharedFile (members): resolves to the file's bytes as a Blob and calls
   * onFileDownloadComplete(blob, entry); `cancel()` on the result stops it.
   */
  downloadGroupSharedFile(
    opts: { groupId: string; fileId: string; secret?: string | null } & DownloadCallbacks,
  ): Transfer<Blob> {
    const m = 'downloadGroupSharedFile';
    return this.transferCall(
      () => {
        const o = options(m, opts);
        return download(this.transferLinks(), {
          groupId: str(m, o, 'groupId'),
          fileId: str(m, o, 'fileId'),
          secret: optStr(m, o, 'secret'),
          ...(opts.onFileDownloadProgress ? { onProgress: opts.onFileDownloadProgress } : {}),
        });
      },
      ({ entry, data }) => {
        guarded(() => opts.onFileDownloadComplete?.(data, fileEntry(entry)));
        return data;
      },
      opts.onFileDownloadError,
    );
  }

  /**
   * The links a transfer's attempts run on (files.ts): the current one, then, on a
   * reconnecting connection, each next one (a transfer cut by a lost link resumes there).
   */
  private transferLinks(): TransferLinks {
    return {
      resumable: this.resilience !== undefined,
      requestTimeoutMs: this.requestTimeoutMs,
      next: (deadline) => this.transferLink(deadline),
    };
  }

  /** Per link, its end as transfers watch it (one listener on the session, however many transfers). */
  private readonly linkEnds = new WeakMap<Session, Signal<Error>>();

  /** The live link for a transfer, waiting for one until `deadline`; rejects with the final error. */
  private async transferLink(deadline: number): Promise<TransferLink | undefined> {
    for (;;) {
      let session: Session;
      try {
        session = await this.waitUp(deadline, 'transfer');
      } catch (e) {
        if (e === this.final) throw e;
        return undefined;
      }
      // A newer link came meanwhile: its streams go with it.
      if (session !== this.current) continue;
      const open = this.streams.openStream;
      if (!open) throw new ProtocolError('this connection was opened without a way to open transfer streams');
      let ended = this.linkEnds.get(session);
      if (!ended) {
        const signal = new Signal<Error>();
        session.onEnd((e) => signal.fire(e));
        this.linkEnds.set(session, signal);
        ended = signal;
      }
      return { open, reset: this.streams.resetReason ?? defaultResetReason, ended };
    }
  }

  /** Starts a transfer, maps its result, and routes its end to the seed's callbacks. */
  private transferCall<T, R>(
    start: () => Transfer<T>,
    done: (t: T) => R,
    onError?: (e: Error) => void,
    onCanceled?: () => void,
  ): Transfer<R> {
    let inner: Transfer<T> | undefined;
    let cancelled = false;
    const run = async (): Promise<R> => {
      inner = start();
      return done(await inner);
    };
    const p = run().catch((e: unknown) => {
      const err = e instanceof Error ? e : new Error(String(e));
      try {
        if (cancelled && onCanceled) onCanceled();
        else onError?.(err);
      } catch (h) {
        reportHandlerError(h);
      }
      throw err;
    }) as Transfer<R>;
    p.cancel = () => {
      cancelled = true;
      inner?.cancel();
    };
    if (onError || onCanceled) p.catch(() => {});
    return p;
  }

  /** deleteGroupSharedFile (owner, admin: any file; members: their own). */
  deleteGroupSharedFile(opts: { groupId: string; fileId: string }): Promise<void> {
    const m = 'deleteGroupSharedFile';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), fileId: str(m, o, 'fileId') }));
  }

  // --- member attributes --------------------------------------------------------------

  /** setGroupMemberAttributes: a value of "" deletes its key. */
  setGroupMemberAttributes(opts: { groupId: string; userId: string; memberAttributes: Record<string, string> }): Promise<void> {
    const m = 'setGroupMemberAttributes';
    return this.done(m, opts, (o) => ({
      method: m,
      groupId: str(m, o, 'groupId'),
      userId: str(m, o, 'userId'),
      memberAttributes: strMap(m, o, 'memberAttributes'),
    }));
  }

  /** getGroupMemberAttributes: all of one member's attributes. */
  getGroupMemberAttributes(opts: { groupId: string; userId: string }): Promise<Record<string, string>> {
    const m = 'getGroupMemberAttributes';
    return this.call(
      m,
      opts,
      (o) => ({ method: m, groupId: str(m, o, 'groupId'), userId: str(m, o, 'userId') }),
      (r) => expect(m, r, 'attributes').attributes,
    );
  }

  /** getGroupMembersAttributes: up to 10 users; `keys` empty or absent = all keys. */
  getGroupMembersAttributes(opts: { groupId: string; userIds: string[]; keys?: string[] }): Promise<Record<string, Record<string, string>>> {
    const m = 'getGroupMembersAttributes';
    return this.call(
      m,
      opts,
      (o) => ({ method: m, groupId: str(m, o, 'groupId'), userIds: strs(m, o, 'userIds'), keys: strs(m, o, 'keys', false, []) }),
      (r) => expect(m, r, 'membersAttributes').members,
    );
  }

  // --- messages -----------------------------------------------------------------------

  /** getGroupMsgReadUser (the sender, owner, admins): readers of a message, paged. */
  getGroupMsgReadUser(opts: { groupId: string; msgId: string; limit?: number; cursor?: string | null }): Promise<ReadUsersPage> {
    const m = 'getGroupMsgReadUser';
    return this.call(
      m,
      opts,
      (o) => ({
        method: m,
        groupId: str(m, o, 'groupId'),
        msgId: str(m, o, 'msgId'),
        limit: u32(m, o, 'limit', 100),
        cursor: optStr(m, o, 'cursor'),
      }),
      (r) => {
        const p = expect(m, r, 'readUsers');
        return { total: p.total, users: p.users.map((u) => ({ user_id: u.userId, read_at: u.readAt })), cursor: p.cursor };
      },
    );
  }

  /**
   * sendGroupMessage (a Convoke addition: the message path the mute and allow lists
   * govern). `payload` is bytes or a string (sent as UTF-8); `clientMsgId` makes a retry
   * idempotent.
   */
  sendGroupMessage(opts: {
    groupId: string;
    payload: Uint8Array | string;
    allowGroupAck?: boolean;
    clientMsgId?: string;
  }): Promise<SentMessage> {
    const m = 'sendGroupMessage';
    let sent: ((seq: string | null) => void) | undefined;
    const p = this.call(
      m,
      opts,
      (o) => {
        const p = o.payload;
        const payload = typeof p === 'string' ? new TextEncoder().encode(p) : p;
        if (!(payload instanceof Uint8Array)) {
          throw paramError(`${m}: payload must be a Uint8Array or a string`);
        }
        const groupId = str(m, o, 'groupId');
        const request: Request = {
          method: m,
          groupId,
          payload,
          allowGroupAck: flag(m, o, 'allowGroupAck', false),
          // A reconnecting connection gives every send an id, so that one sent again after
          // a drop is stored once (the broker answers a repeat with the original).
          clientMsgId: optStr(m, o, 'clientMsgId') ?? (this.resilience ? randomClientMsgId() : null),
        };
        // Its seq is the page's own: not handed back, not taken for a gap.
        if (this.sequencer.resume) sent = this.sequencer.beginSend(groupId);
        return request;
      },
      (r) => {
        const s = expect(m, r, 'messageSent');
        sent?.(s.seq);
        sent = undefined;
        return { msgId: s.msgId, seq: s.seq, timestamp: s.timestamp };
      },
    );
    return p.finally(() => sent?.(null));
  }

  /** ackGroupMessage (a Convoke addition): a read receipt. */
  ackGroupMessage(opts: { groupId: string; msgId: string }): Promise<void> {
    const m = 'ackGroupMessage';
    return this.done(m, opts, (o) => ({ method: m, groupId: str(m, o, 'groupId'), msgId: str(m, o, 'msgId') }));
  }

  /** getGroupMessages (a Convoke addition): history after or before a sequence number. */
  getGroupMessages(opts: { groupId: string; before?: string | null; after?: string | null; limit?: number }): Promise<GroupMessage[]> {
    const m = 'getGroupMessages';
    return this.call(
      m,
      opts,
      (o) => ({
        method: m,
        groupId: str(m, o, 'groupId'),
        before: optStr(m, o, 'before'),
        after: optStr(m, o, 'after'),
        limit: u32(m, o, 'limit', 100),
      }),
      (r) => expect(m, r, 'messages').messages,
    );
  }
}

/**
 * Dialing the broker from a browser over WebTransport (HTTP/3 on QUIC): the control stream
 * is the session's first bidirectional stream, the broker's push stream its first
 * incoming unidirectional stream, each shared-file transfer a new bidirectional stream
 * (the same layout as the `convoke/1` QUIC connection; handshake.rs, transfer.rs).
 *
 * Written against the W3C WebTransport API; node has none, so the tests pass a stand-in
 * constructor (`options.WebTransport`). A dropped session is replaced by a new one
 * (Connection.dial, reconnect.ts).
 */

import { Connection, type Dialer, type EventHandlers, type ResilienceOptions } from './connection.js';
import { ConnectionError, parseRefusal, type ConvokeError } from './errors.js';
import { CLOSE } from './reconnect.js';
import type { ResetReason } from './files.js';
import { rotatingDialer, serverList, type ServerList } from './servers.js';
import { Session, type ByteStream, type HelloOptions, type SessionOptions } from './session.js';

/** The part of the W3C WebTransport interface the SDK uses. */
export interface WebTransportLike {
  readonly ready: Promise<unknown>;
  readonly closed: Promise<{ closeCode?: number; reason?: string } | undefined>;
  createBidirectionalStream(): Promise<ByteStream>;
  readonly incomingUnidirectionalStreams: ReadableStream<ReadableStream<Uint8Array>>;
  close(info?: { closeCode?: number; reason?: string }): void;
}

export type WebTransportConstructor = new (
  url: string,
  options?: { serverCertificateHashes?: { algorithm: string; value: BufferSource }[] },
) => WebTransportLike;

/**
 * `connect`'s options: where (`url`, or a server list `urls`), the hello (token, device),
 * the session's and the reconnect's settings, and the transport's.
 */
export type ConnectOptions = ConnectSettings & ServerList;

/**
 * `connect`'s options besides the servers (`ServerList`): `url`, the broker's WebTransport
 * URL, e.g. `https://127.0.0.1:4434/convoke`; or `urls`, several (a cluster's nodes): the
 * first connection tries each once, in order, and after a drop the connection dials the
 * one it was on first (the next at once when that one closed with SHUTDOWN), then the
 * others in turn (servers.ts). With both, `url` is the first of the list.
 */
export interface ConnectSettings extends HelloOptions, SessionOptions, ResilienceOptions {
  /**
   * Hashes of a self-signed development certificate (ECDSA P-256, valid at most 14 days),
   * for a broker without a certificate the browser trusts.
   */
  serverCertificateHashes?: { algorithm: 'sha-256'; value: BufferSource }[];
  /** Handlers to add before the connection opens (so they see its first pushes). */
  handlers?: Record<string, EventHandlers>;
  /** The WebTransport constructor; default the browser's. */
  WebTransport?: WebTransportConstructor;
}

/**
 * The browser's WebTransportError with a stream error code, when there is one. Chromium's
 * constructor takes one init dictionary (`{ message, streamErrorCode }`; a second argument
 * makes it throw), the W3C draft's a message and options: the first form is tried and
 * kept only if it carried the code.
 */
const webTransportReset: ResetReason | undefined = (() => {
  const E = (globalThis as { WebTransportError?: new (...args: unknown[]) => { streamErrorCode?: number | null } })
    .WebTransportError;
  if (!E) return undefined;
  return (code: number) => {
    try {
      const e = new E({ message: 'transfer cancelled', streamErrorCode: code });
      if (e.streamErrorCode === code) return e;
    } catch {
      // the draft's form below
    }
    return new E('transfer cancelled', { streamErrorCode: code });
  };
})();

/** How long a failed or ended stream waits for the session's close to say why. */
const CLOSE_WAIT_MS = 300;

type CloseInfo = { closeCode?: number; reason?: string };

/**
 * `readable`, except that when it fails or ends because the broker closed the session, it
 * fails with the broker's close code and reason (a ConnectionError): the browser aborts
 * the streams ("Connection lost") before it resolves `closed` with the code. A refused
 * hello whose close overtook the Refused frame fails with the refusal (a ConvokeError, e.g.
 * 28), read back from the reason.
 */
function closeAware(readable: ReadableStream<Uint8Array>, closed: Promise<CloseInfo | undefined>): ReadableStream<Uint8Array> {
  const reader = readable.getReader();
  const brokerClose = async (): Promise<ConnectionError | ConvokeError | undefined> => {
    const info = await Promise.race([closed, new Promise<undefined>((r) => setTimeout(r, CLOSE_WAIT_MS))]);
    if (!info) return undefined;
    const refusal = info.closeCode === CLOSE.HANDSHAKE_REFUSED && info.reason ? parseRefusal(info.reason) : undefined;
    return refusal ?? new ConnectionError(`the broker closed the connection${info.reason ? `: ${info.reason}` : ''}`, info.closeCode);
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let next: ReadableStreamReadResult<Uint8Array>;
      try {
        next = await reader.read();
      } catch (e) {
        controller.error((await brokerClose()) ?? e);
        return;
      }
      if (next.done) {
        const why = await brokerClose();
        if (why) controller.error(why);
        else controller.close();
        return;
      }
      controller.enqueue(next.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/**
 * Opens links to the broker over WebTransport: each call a new WebTransport session, the
 * hello with the given token on its first bidirectional stream, the broker's push stream
 * its first incoming unidirectional stream. The transport's end is the session's end, and
 * the other way round. Rejects with a ConvokeError when the broker refuses the hello (e.g.
 * 28 for a bad token), a ConnectionError when the transport cannot be opened. With several
 * servers (`urls`), each dial picks one as the Rust client does (servers.ts).
 */
export function webTransportDialer(options: ConnectOptions): Dialer {
  return rotatingDialer(serverList(options), (url, hello) => dialerFor(url, options)(hello));
}

/** Opens links to the one broker at `url`. */
function dialerFor(url: string, options: ConnectSettings): Dialer {
  return async (hello) => {
    const WT =
      options.WebTransport ??
      (globalThis as { WebTransport?: WebTransportConstructor }).WebTransport;
    if (!WT) throw new ConnectionError('this environment has no WebTransport (a browser with HTTP/3 support is needed)');
    const wt = new WT(
      url,
      options.serverCertificateHashes ? { serverCertificateHashes: options.serverCertificateHashes } : {},
    );
    // A dial that never completes (packets lost) must not hold a reconnect forever.
    const timeoutMs = options.handshakeTimeoutMs ?? 10_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        wt.ready,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no WebTransport session within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (e) {
      try {
        wt.close({ closeCode: 0, reason: 'dial failed' });
      } catch {
        // not open: nothing to close
      }
      throw new ConnectionError(`cannot open a WebTransport session to ${url}: ${String(e)}`, undefined, e);
    } finally {
      clearTimeout(timer);
    }
    // The session's close, once it is known: its code and reason, or nothing for a lost one.
    const closed: Promise<CloseInfo | undefined> = wt.closed.then(
      (info) => info ?? {},
      () => undefined,
    );
    let session: Session;
    try {
      const bidi = await wt.createBidirectionalStream();
      const control = { readable: closeAware(bidi.readable, closed), writable: bidi.writable };
      session = await Session.open(control, hello, options);
    } catch (e) {
      wt.close({ closeCode: 0, reason: 'hello refused or failed' });
      throw e;
    }
    void wt.closed.then(
      (info) => session.fail(new ConnectionError(`the broker closed the connection${info?.reason ? `: ${info.reason}` : ''}`, info?.closeCode)),
      (e: unknown) => session.fail(new ConnectionError(`the connection was lost: ${String(e)}`, undefined, e)),
    );
    session.onEnd((e) => wt.close({ closeCode: e.closeCode ?? 0, reason: e.message.slice(0, 200) }));
    let pushes: Promise<ReadableStream<Uint8Array> | undefined> | undefined;
    if (hello.events ?? true) {
      const incoming = wt.incomingUnidirectionalStreams.getReader();
      pushes = incoming.read().then(
        ({ value }) => {
          incoming.releaseLock();
          return value ? closeAware(value, closed) : undefined;
        },
        () => undefined,
      );
    }
    return {
      session,
      ...(pushes ? { pushes } : {}),
      openStream: () => wt.createBidirectionalStream(),
      ...(webTransportReset ? { resetReason: webTransportReset } : {}),
    };
  };
}

/**
 * Opens a connection to the broker over WebTransport and starts reading pushes; it
 * reconnects and resumes when a link drops (ResilienceOptions: `reconnect`,
 * `tokenProvider`; see Connection.dial). Rejects as the first dial does: a ConvokeError
 * when the broker refuses the hello, a ConnectionError when the transport cannot be opened.
 */
export async function connect(options: ConnectOptions): Promise<Connection> {
  return Connection.dial(webTransportDialer(options), options, options);
}

import { EventEmitter } from 'node:events';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { setSendBufferSize } from '@ambient/native';
import type { Identity } from '../identity/identity.ts';
import { TlsError } from '../tls/errors.ts';
import {
  credentialsIdentity,
  hboneServerTlsOptions,
  type TlsCredentials,
  verifyHboneClient,
} from '../tls/secure-context.ts';
import { type HboneAuthority, parseAuthority } from './authority.ts';
import { HboneError } from './errors.ts';
import { startKeepalive } from './keepalive.ts';
import { type BaggageSource, formatBaggage, HBONE_HEADER } from './request-headers.ts';
import { SessionTransport } from './session-transport.ts';
import { type HboneSettings, resolveHboneSettings, serverSessionOptions } from './settings.ts';
import { HboneTunnel } from './tunnel.ts';

/** The telemetry headers of a CONNECT, raw (spec §1.3 "Headers the server reads"). */
export interface HboneRequestHeaders {
  readonly forwarded: string | undefined;
  readonly baggage: string | undefined;
  readonly traceparent: string | undefined;
  readonly forwardedNetwork: string | undefined;
}

/** Endpoints of the TLS connection a request arrived on. */
export interface HboneConnectionInfo {
  /** The identity the client certificate proved (its trust domain equals ours). */
  readonly peerIdentity: Identity;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
}

/**
 * A well-formed CONNECT awaiting the caller's decision: `accept()` answers 200 and returns the
 * tunnel; `reject(401 | 503 | …)` answers and ends the stream (spec §1.3 steps 4–8 are the
 * caller's: destination validation, upstream resolution, authorization, connecting the app).
 */
export interface HboneRequest extends HboneConnectionInfo {
  readonly stream: http2.ServerHttp2Stream;
  readonly authority: HboneAuthority;
  readonly headers: HboneRequestHeaders;
  readonly rawHeaders: http2.IncomingHttpHeaders;
  readonly session: http2.ServerHttp2Session;
  /** The TLS connection the session runs on (destroying it drops every stream on it). */
  readonly socket: tls.TLSSocket;
  /** Whether accept or reject was called. */
  readonly answered: boolean;
  /** Answers 200 (with the destination's `baggage` when given) and returns the tunnel. */
  accept(response?: {
    readonly baggage?: BaggageSource | string;
    readonly highWaterMark?: number;
  }): HboneTunnel;
  /** Answers `status` (not 200) with END_STREAM. */
  reject(status: number): void;
}

/** Called once per well-formed CONNECT; it must eventually accept or reject. */
export type HboneRequestHandler = (request: HboneRequest) => void | Promise<void>;

export interface HboneServerOptions {
  /** The certificate this listener presents (the destination workload's) and the trust roots. */
  readonly credentials: TlsCredentials;
  readonly handler: HboneRequestHandler;
  readonly settings?: Partial<HboneSettings>;
  /**
   * `auto` (default): the kernel send buffer when the process may size it, else userspace.
   * `userspace`: always a {@link SessionTransport} (tests of that path).
   */
  readonly writeBudget?: 'auto' | 'userspace';
}

/** Where a session's write budget lives (see `HboneServer#transportFor`). */
export type WriteBudgetPlace = 'kernel' | 'userspace';

/** Events, for logs and metrics (ztunnel's `log_early_deny` and access log). */
export interface HboneServerEvents {
  /** An mTLS + HTTP/2 connection was established. */
  session: [
    info: HboneConnectionInfo & {
      readonly session: http2.ServerHttp2Session;
      readonly socket: tls.TLSSocket;
      /** Where the session's write budget is kept: the kernel send buffer, or a SessionTransport. */
      readonly writeBudget: WriteBudgetPlace;
    },
  ];
  /** A connection failed TLS or the SPIFFE check, before any request (no HTTP/2 was spoken). */
  connectionRejected: [
    error: TlsError,
    peer: { readonly remoteAddress?: string; readonly remotePort?: number },
  ];
  /** The server itself answered a request 400 (non-CONNECT, malformed authority). */
  requestRejected: [error: HboneError, status: number, info: HboneConnectionInfo];
  /** The handler threw or rejected; answered 503 if it had not answered yet. */
  handlerError: [error: unknown, request: HboneRequest];
}

interface Connection extends HboneConnectionInfo {
  readonly session: http2.ServerHttp2Session;
  readonly socket: tls.TLSSocket;
  readonly writeBudget: WriteBudgetPlace;
}

/**
 * The HBONE server side (spec §1.3): TLS 1.3 with a required client certificate that chains to the
 * roots and carries a SPIFFE ID in our trust domain, then HTTP/2 with ztunnel's settings, then
 * CONNECT-only request handling. Connections come from {@link listen}, from an existing
 * `net.Server` via {@link attach} (ztunnel's in-pod listener made by the native addon), or one by
 * one via {@link handleConnection}.
 */
export class HboneServer extends EventEmitter<HboneServerEvents> {
  readonly settings: HboneSettings;
  readonly #handler: HboneRequestHandler;
  readonly #tls: tls.Server;
  // Never listens: it only turns verified TLS sockets into HTTP/2 sessions.
  readonly #h2: http2.Http2Server;
  #trustDomain: string;
  #identity: Identity;
  readonly #sockets = new Set<Duplex>();
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  readonly #attached = new Map<net.Server, (socket: net.Socket) => void>();
  readonly #writeBudget: 'auto' | 'userspace';
  #accepting: Omit<Connection, 'session'> | undefined;
  #closed = false;

  constructor(options: HboneServerOptions) {
    super();
    this.settings = resolveHboneSettings(options.settings);
    this.#handler = options.handler;
    this.#writeBudget = options.writeBudget ?? 'auto';
    this.#identity = credentialsIdentity(options.credentials);
    this.#trustDomain = this.#identity.trustDomain;
    this.#tls = tls.createServer({
      ...hboneServerTlsOptions(options.credentials),
      handshakeTimeout: this.settings.connectTimeoutMs,
    });
    this.#h2 = http2.createServer(serverSessionOptions(this.settings));
    this.#tls.on('connection', (raw: Duplex) => {
      this.#sockets.add(raw);
      raw.once('close', () => this.#sockets.delete(raw));
    });
    this.#tls.on('secureConnection', (socket) => this.#onSecureConnection(socket));
    this.#tls.on('tlsClientError', (err, socket) => this.#onTlsClientError(err, socket));
    this.#h2.on('session', (session) => this.#onSession(session));
  }

  /** The identity of the certificate this server presents. */
  get identity(): Identity {
    return this.#identity;
  }

  /** The trust domain client certificates must be in (the served certificate's). */
  get trustDomain(): string {
    return this.#trustDomain;
  }

  /** Live HTTP/2 connections. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Listens on its own socket (`{ port, host }`, `{ fd }`, …); resolves with the bound address. */
  listen(options: net.ListenOptions): Promise<net.AddressInfo> {
    this.#assertOpen();
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#tls.once('error', onError);
      this.#tls.listen(options, () => {
        this.#tls.off('error', onError);
        resolve(this.#tls.address() as net.AddressInfo);
      });
    });
  }

  /** The address {@link listen} bound, if it did. */
  address(): net.AddressInfo | undefined {
    const a = this.#tls.address();
    return a !== null && typeof a === 'object' ? a : undefined;
  }

  /** Serves every connection an existing, caller-owned listener accepts (until {@link close}). */
  attach(server: net.Server): void {
    this.#assertOpen();
    if (this.#attached.has(server)) return;
    const onConnection = (socket: net.Socket): void => this.handleConnection(socket);
    this.#attached.set(server, onConnection);
    server.on('connection', onConnection);
  }

  /** Serves one accepted connection (TCP socket or any byte Duplex); TLS starts here. */
  handleConnection(socket: Duplex): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    if (socket instanceof net.Socket) socket.setNoDelay(true);
    this.#tls.emit('connection', socket);
  }

  /** Presents new credentials (certificate rotation) to connections accepted from now on. */
  setCredentials(credentials: TlsCredentials): void {
    const identity = credentialsIdentity(credentials);
    this.#tls.setSecureContext(hboneServerTlsOptions(credentials));
    this.#identity = identity;
    this.#trustDomain = identity.trustDomain;
  }

  /**
   * Graceful shutdown: stops accepting, sends GOAWAY on every connection so clients open no new
   * streams, and resolves once the streams in flight have finished and the connections closed.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#detach();
    const listening = this.#tls.listening
      ? new Promise<void>((resolve) => this.#tls.close(() => resolve()))
      : Promise.resolve();
    const sessions = [...this.#sessions].map(
      (session) =>
        new Promise<void>((resolve) => {
          if (session.destroyed) return resolve();
          session.once('close', () => resolve());
          session.close();
        }),
    );
    // Handshakes still in progress are dropped when they complete (#onSecureConnection) or time
    // out; only established sessions are waited for.
    await Promise.all([listening, ...sessions]);
  }

  /** Immediate shutdown: every connection and stream is torn down. */
  destroy(): void {
    this.#closed = true;
    this.#detach();
    if (this.#tls.listening) this.#tls.close();
    for (const session of this.#sessions) session.destroy();
    for (const socket of this.#sockets) socket.destroy();
  }

  #assertOpen(): void {
    if (this.#closed) throw new HboneError('HBONE_CLOSED', 'hbone server is closed');
  }

  #detach(): void {
    for (const [server, listener] of this.#attached) server.off('connection', listener);
    this.#attached.clear();
  }

  #onTlsClientError(err: Error, socket: tls.TLSSocket): void {
    // Node reports a certificate that failed verification as a hang-up; the reason is kept on
    // the socket.
    const reason = socket.authorizationError;
    const error =
      typeof reason === 'string' && reason !== ''
        ? new TlsError('PEER_CERTIFICATE_INVALID', `client certificate rejected: ${String(reason)}`, {
            cause: err,
          })
        : (err as { code?: unknown }).code === 'ERR_SSL_NO_APPLICATION_PROTOCOL'
          ? new TlsError('ALPN_MISMATCH', 'client did not offer alpn h2', { cause: err })
          : new TlsError('HANDSHAKE_FAILED', `tls handshake failed: ${describeTlsFailure(err)}`, {
              cause: err,
            });
    const peer = { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
    socket.destroy();
    this.emit('connectionRejected', error, peer);
  }

  #onSecureConnection(socket: tls.TLSSocket): void {
    let peerIdentity: Identity;
    try {
      peerIdentity = verifyHboneClient(socket, this.#trustDomain);
    } catch (err) {
      const peer = { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
      socket.destroy();
      const error =
        err instanceof TlsError ? err : new TlsError('CERTIFICATE_MALFORMED', String(err), { cause: err });
      this.emit('connectionRejected', error, peer);
      return;
    }
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const { transport, writeBudget } = this.#transportFor(socket);
    // 'session' fires synchronously inside emit('connection'), which is how it gets this info.
    this.#accepting = {
      socket,
      writeBudget,
      peerIdentity,
      localAddress: socket.localAddress,
      localPort: socket.localPort,
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
    };
    try {
      this.#h2.emit('connection', transport);
    } finally {
      this.#accepting = undefined;
    }
  }

  /**
   * What the HTTP/2 session runs on. A session must never stop reading for long while it waits
   * on its own socket write, or two Node peers deadlock (see {@link SessionTransport}). The cheap
   * way is a kernel send buffer of `sessionWriteBudget` bytes: flow control bounds what the peer
   * lets us send, so our writes always complete, and the session stays on Node's native
   * TLS-to-HTTP/2 path. That needs CAP_NET_ADMIN (SO_SNDBUFFORCE) unless `net.core.wmem_max` is
   * that large; without it, the budget is kept in userspace by a SessionTransport, at ~40% of
   * the receive throughput.
   */
  #transportFor(socket: tls.TLSSocket): { transport: Duplex; writeBudget: WriteBudgetPlace } {
    const budget = this.settings.sessionWriteBudget;
    if (this.#writeBudget === 'auto') {
      try {
        // The kernel grants twice the request when it meets it (half is its own bookkeeping).
        if (setSendBufferSize(socket, budget) >= 2 * budget)
          return { transport: socket, writeBudget: 'kernel' };
      } catch {
        // No fd (a socket not backed by TCP): keep the budget in userspace.
      }
    }
    return { transport: new SessionTransport(socket, budget), writeBudget: 'userspace' };
  }

  #onSession(session: http2.ServerHttp2Session): void {
    const info = this.#accepting;
    if (info === undefined) {
      session.destroy();
      return;
    }
    const conn: Connection = { ...info, session };
    this.#sessions.add(session);
    session.once('close', () => this.#sessions.delete(session));
    // Errors end the session (and its streams report them); nothing else to do here.
    session.on('error', () => {});
    // An HTTP/2 peer never half-closes: EOF means the connection is gone. Over a half-open
    // capable socket (ztunnel's in-pod listeners) the TLS socket only emits 'end', and a session
    // on it directly (the kernel write budget) would keep its streams, and their tunnels, open.
    info.socket.once('end', () => session.destroy());
    session.on('stream', (stream, headers) => this.#onStream(conn, stream, headers));
    const raiseWindow = (): void => session.setLocalWindowSize(this.settings.connectionWindowSize);
    if (session.connecting) session.once('connect', raiseWindow);
    else raiseWindow();
    startKeepalive(session, this.settings.keepaliveIntervalMs, this.settings.keepaliveTimeoutMs);
    this.emit('session', conn);
  }

  #onStream(conn: Connection, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => {}); // reported through the tunnel or the response; never fatal here
    const info: HboneConnectionInfo = {
      peerIdentity: conn.peerIdentity,
      localAddress: conn.localAddress,
      localPort: conn.localPort,
      remoteAddress: conn.remoteAddress,
      remotePort: conn.remotePort,
    };
    const method = headers[':method'];
    if (method !== 'CONNECT') {
      this.#refuse(
        stream,
        new HboneError('HBONE_METHOD', `method ${JSON.stringify(method)} is not CONNECT`, { status: 400 }),
        info,
      );
      return;
    }
    let authority: HboneAuthority;
    try {
      authority = parseAuthority(String(headers[':authority'] ?? ''));
    } catch (err) {
      this.#refuse(
        stream,
        err instanceof HboneError ? err : new HboneError('HBONE_AUTHORITY', String(err), { status: 400 }),
        info,
      );
      return;
    }

    let answered = false;
    const request: HboneRequest = {
      ...info,
      stream,
      authority,
      session: conn.session,
      socket: conn.socket,
      rawHeaders: headers,
      headers: {
        forwarded: headerValue(headers[HBONE_HEADER.FORWARDED]),
        baggage: headerValue(headers[HBONE_HEADER.BAGGAGE]),
        traceparent: headerValue(headers[HBONE_HEADER.TRACEPARENT]),
        forwardedNetwork: headerValue(headers[HBONE_HEADER.FORWARDED_NETWORK]),
      },
      get answered() {
        return answered;
      },
      accept(response = {}) {
        if (answered) throw new Error('hbone request was already answered');
        answered = true;
        const out: http2.OutgoingHttpHeaders = { ':status': 200 };
        if (response.baggage !== undefined) {
          const baggage =
            typeof response.baggage === 'string' ? response.baggage : formatBaggage(response.baggage);
          if (baggage !== '') out[HBONE_HEADER.BAGGAGE] = baggage;
        }
        stream.respond(out);
        return new HboneTunnel(stream, { highWaterMark: response.highWaterMark });
      },
      reject(status) {
        if (answered) throw new Error('hbone request was already answered');
        if (status === 200 || !Number.isInteger(status) || status < 100 || status > 599) {
          throw new RangeError(`hbone reject status ${status} must be a non-200 HTTP status`);
        }
        answered = true;
        respondAndEnd(stream, status);
      },
    };

    const fail = (err: unknown): void => {
      if (!answered && !stream.destroyed) {
        answered = true;
        respondAndEnd(stream, 503);
      }
      this.emit(
        'handlerError',
        new HboneError('HBONE_HANDLER_FAILED', 'hbone request handler failed', { cause: err, status: 503 }),
        request,
      );
    };
    // The handler runs once the rest of this read is processed: HEADERS and the RST_STREAM that
    // cancels it often arrive together, and a request its client already cancelled must not cost
    // an upstream dial. Rapid reset (CVE-2023-44487) sends thousands of such pairs per connection;
    // nghttp2 only gives up after about a thousand of them.
    setImmediate(() => {
      if (stream.destroyed || stream.closed) return;
      try {
        const result = this.#handler(request);
        if (result !== undefined) result.catch(fail);
      } catch (err) {
        fail(err);
      }
    });
  }

  #refuse(stream: http2.ServerHttp2Stream, error: HboneError, info: HboneConnectionInfo): void {
    respondAndEnd(stream, 400);
    this.emit('requestRejected', error, 400, info);
  }
}

// OpenSSL messages carry a pointer-valued prefix and source paths; the code is the stable part.
function describeTlsFailure(err: Error): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string'
    ? `${code} (${err.message.split(':').slice(4, 5).join('').trim() || err.message})`
    : err.message;
}

function respondAndEnd(stream: http2.ServerHttp2Stream, status: number): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond({ ':status': status }, { endStream: true });
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(',') : v;
}

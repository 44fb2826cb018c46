import * as http2 from 'node:http2';
import * as tls from 'node:tls';
import type { Identity } from '../identity/identity.ts';
import { TlsError } from '../tls/errors.ts';
import { hboneClientTlsOptions, type TlsCredentials, verifyHboneServer } from '../tls/secure-context.ts';
import { formatAuthority, type HboneAuthority, parseAuthority } from './authority.ts';
import { HboneError } from './errors.ts';
import { startKeepalive } from './keepalive.ts';
import {
  type BaggageSource,
  formatBaggage,
  formatForwarded,
  HBONE_HEADER,
  newTraceparent,
} from './request-headers.ts';
import { clientSessionOptions, type HboneSettings, resolveHboneSettings } from './settings.ts';
import { HboneTunnel, http2ErrorName } from './tunnel.ts';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM } = http2.constants;

/**
 * Opens the TLS connection to an HBONE peer. Receives complete `tls.connect` options (TLS
 * settings, `host`, `port`, `localAddress`) and returns the socket, connecting or connected.
 * ztunnel supplies one that first connects the TCP socket inside the pod's network namespace
 * (asynchronously, through the native addon) and passes it as `socket`; the default is
 * `tls.connect`. An asynchronous dialer resolves as soon as the TLS socket exists, before the
 * handshake, so no handshake event is missed; the connect timeout covers the whole dial.
 */
export type HboneDialer = (options: tls.ConnectionOptions) => tls.TLSSocket | Promise<tls.TLSSocket>;

/** Where and as whom to open an HBONE connection. */
export interface HboneConnectOptions {
  /** Destination IP (a pod or waypoint). */
  readonly address: string;
  /** Destination port, normally 15008. */
  readonly port: number;
  /** Source IP to bind (the pod IP in in-pod mode); omitted lets the kernel choose. */
  readonly localAddress?: string;
  /** The source workload's certificate, key and trust roots. */
  readonly credentials: TlsCredentials;
  /** The server must present one of these identities (pinned). */
  readonly expectedIdentities: readonly Identity[];
  readonly settings?: HboneSettings;
  readonly dial?: HboneDialer;
  readonly signal?: AbortSignal;
}

/** An established HBONE connection: mTLS done, the peer's HTTP/2 SETTINGS received. */
export interface HboneClientConnection {
  readonly session: http2.ClientHttp2Session;
  readonly socket: tls.TLSSocket;
  /** The server identity that matched one of the expected identities. */
  readonly peerIdentity: Identity;
}

/**
 * Dials an HBONE peer: TCP, TLS 1.3 with the pinned-identity check, then HTTP/2 with ztunnel's
 * windows and frame size, then waits for the server's SETTINGS (so the stream limit is known
 * and a server that rejected our certificate after the handshake is noticed here, not on the
 * first stream). Keepalive PINGs start once connected.
 *
 * Fails with `TlsError` for certificate and handshake problems, `HBONE_CONNECT_TIMEOUT` after
 * `settings.connectTimeoutMs`, `HBONE_DIAL_FAILED` otherwise.
 */
export async function connectHbone(options: HboneConnectOptions): Promise<HboneClientConnection> {
  const settings = options.settings ?? resolveHboneSettings();
  const dial = options.dial ?? tls.connect;
  const target = formatAuthority({ address: options.address, port: options.port });
  const tlsOptions: tls.ConnectionOptions = {
    ...hboneClientTlsOptions(options.credentials, options.expectedIdentities),
    host: options.address,
    port: options.port,
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
  };

  let socket: tls.TLSSocket | undefined;
  let session: http2.ClientHttp2Session | undefined;
  try {
    return await withDeadline(target, settings.connectTimeoutMs, options.signal, async (onCleanup) => {
      let abandoned = false;
      onCleanup(() => {
        abandoned = true;
        session?.destroy();
        socket?.destroy();
      });
      const dialled = await dialSocket(dial, tlsOptions, target);
      socket = dialled;
      // The deadline may have passed while an asynchronous dialer was still connecting.
      if (abandoned) throw new HboneError('HBONE_CONNECT_TIMEOUT', `dial to ${target} was abandoned`);
      await handshake(dialled, target);
      dialled.setNoDelay(true);
      const peerIdentity = verifyHboneServer(dialled, options.expectedIdentities);
      // The client talks to the TLS socket directly (native TLS↔HTTP/2, the fast path); the
      // server side of every connection carries the SessionTransport that rules out the
      // both-peers-stop-reading deadlock, and one side is enough.
      session = http2.connect(`https://${target}`, {
        ...clientSessionOptions(settings),
        createConnection: () => dialled,
      });
      // Session failures also reach every stream and the 'close' event; without a listener an
      // 'error' (a keepalive timeout, a peer's GOAWAY with an error code) would crash the process.
      session.on('error', () => {});
      // An HTTP/2 peer never half-closes: EOF (or a reset) means the connection is gone. Over a
      // half-open-capable socket (ztunnel's in-pod dialer) the TLS socket then only emits 'end'
      // and the session would stay open, taking new streams that are never answered, until the
      // keepalive noticed; destroying it now fails its streams and drops it from the pool.
      const established = session;
      dialled.once('end', () => established.destroy());
      await settingsReceived(session, target);
      // The connection window can only be raised after the session exists (SETTINGS cannot).
      session.setLocalWindowSize(settings.connectionWindowSize);
      startKeepalive(session, settings.keepaliveIntervalMs, settings.keepaliveTimeoutMs);
      return { session, socket: dialled, peerIdentity };
    });
  } catch (err) {
    session?.destroy();
    socket?.destroy();
    throw err;
  }
}

async function dialSocket(
  dial: HboneDialer,
  options: tls.ConnectionOptions,
  target: string,
): Promise<tls.TLSSocket> {
  try {
    return await dial(options);
  } catch (err) {
    throw classifyDialError(err, target);
  }
}

function handshake(socket: tls.TLSSocket, target: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      socket.off('secureConnect', onSecure);
      reject(classifyDialError(err, target));
    };
    const onSecure = (): void => {
      socket.off('error', onError);
      resolve();
    };
    socket.once('error', onError);
    socket.once('secureConnect', onSecure);
  });
}

function settingsReceived(session: http2.ClientHttp2Session, target: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      session.off('remoteSettings', onSettings);
      session.off('error', onError);
      session.off('close', onClose);
    };
    const onSettings = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(classifyDialError(err, target));
    };
    const onClose = (): void => {
      cleanup();
      reject(
        new HboneError(
          'HBONE_DIAL_FAILED',
          `${target} closed the connection before sending HTTP/2 SETTINGS; it may have rejected our certificate`,
          { retryable: true },
        ),
      );
    };
    session.on('remoteSettings', onSettings);
    session.on('error', onError);
    session.on('close', onClose);
  });
}

// OpenSSL verification codes Node reports for a server chain that does not verify.
const CERT_VERIFY_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_PURPOSE',
  'INVALID_CA',
  'CERT_REVOKED',
]);

/** Maps a dial failure to the most specific typed error. */
function classifyDialError(err: unknown, target: string): Error {
  if (err instanceof TlsError || err instanceof HboneError) return err;
  const code = (err as { code?: unknown }).code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof code === 'string' && CERT_VERIFY_CODES.has(code)) {
    return new TlsError('PEER_CERTIFICATE_INVALID', `server certificate of ${target} rejected: ${code}`, {
      cause: err,
    });
  }
  if (code === 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL') {
    return new TlsError('ALPN_MISMATCH', `${target} refused ALPN h2`, { cause: err });
  }
  if (typeof code === 'string' && code.startsWith('ERR_SSL_')) {
    return new TlsError('HANDSHAKE_FAILED', `tls handshake with ${target} failed: ${message}`, {
      cause: err,
    });
  }
  return new HboneError('HBONE_DIAL_FAILED', `connecting to ${target} failed: ${message}`, {
    cause: err,
    retryable: true,
  });
}

/**
 * Runs `work` under the connect timeout and the caller's AbortSignal. Cleanup callbacks run when
 * either fires, so the socket being dialled is destroyed and the work fails promptly.
 */
async function withDeadline<T>(
  target: string,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  work: (onCleanup: (fn: () => void) => void) => Promise<T>,
): Promise<T> {
  const cleanups: (() => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const deadline = new Promise<never>((_, reject) => {
    const fail = (err: Error): void => {
      for (const fn of cleanups) fn();
      reject(err);
    };
    timer = setTimeout(
      () =>
        fail(
          new HboneError(
            'HBONE_CONNECT_TIMEOUT',
            `connecting to ${target} timed out after ${timeoutMs} ms; maybe a NetworkPolicy is blocking HBONE port 15008`,
            { retryable: true },
          ),
        ),
      timeoutMs,
    );
    if (signal !== undefined) {
      onAbort = () =>
        fail(
          new HboneError('HBONE_ABORTED', `connecting to ${target} was aborted`, { cause: signal.reason }),
        );
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    }
  });
  try {
    return await Promise.race([work((fn) => cleanups.push(fn)), deadline]);
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
}

/** One CONNECT request (spec §1.2). */
export interface HboneConnectRequest {
  /** `:authority`: the inner target, `ip:port` (IPv6 in brackets) or `hostname:port`. */
  readonly target: string | HboneAuthority | { readonly address: string; readonly port: number };
  /** The user connection's client address, sent as `forwarded: for="ip:port"`. */
  readonly source?: { readonly address: string; readonly port: number };
  /** Service FQDN when the connection was addressed to a Service: `forwarded: …;host=<fqdn>`. */
  readonly serviceHost?: string;
  /** The source workload, sent as `baggage` (or a pre-formatted value). */
  readonly baggage?: BaggageSource | string;
  /** W3C traceparent; a fresh random one per connection when omitted. */
  readonly traceparent?: string;
  /** `x-forwarded-network`, only on the inner CONNECT of double-HBONE. */
  readonly forwardedNetwork?: string;
  /** Buffering of the returned tunnel. */
  readonly highWaterMark?: number;
  readonly signal?: AbortSignal;
}

/**
 * The request headers for a CONNECT: pseudo-headers plus forwarded, baggage and traceparent.
 * A string target is validated (and IPv6 canonicalised) like the server will; a malformed one
 * throws `HboneError('HBONE_AUTHORITY')` instead of costing a round trip for a 400.
 */
export function connectHeaders(request: HboneConnectRequest): http2.OutgoingHttpHeaders {
  const target = request.target;
  const authority =
    typeof target === 'string'
      ? formatAuthority(parseAuthority(target))
      : 'kind' in target && target.kind === 'hostname'
        ? formatAuthority(target)
        : formatAuthority(target as { address: string; port: number });
  const headers: http2.OutgoingHttpHeaders = {
    ':method': 'CONNECT',
    ':authority': authority,
  };
  if (request.source !== undefined) {
    headers[HBONE_HEADER.FORWARDED] = formatForwarded(request.source, request.serviceHost);
  }
  if (request.baggage !== undefined) {
    const baggage = typeof request.baggage === 'string' ? request.baggage : formatBaggage(request.baggage);
    if (baggage !== '') headers[HBONE_HEADER.BAGGAGE] = baggage;
  }
  headers[HBONE_HEADER.TRACEPARENT] = request.traceparent ?? newTraceparent();
  if (request.forwardedNetwork !== undefined)
    headers[HBONE_HEADER.FORWARDED_NETWORK] = request.forwardedNetwork;
  return headers;
}

/**
 * Sends a CONNECT on `session` and resolves with the tunnel once the server answers 200. Any other
 * status fails with `HboneError('HBONE_STATUS')` carrying `status`; a reset before the answer with
 * `HBONE_STREAM_RESET` (retryable for REFUSED_STREAM: the server did not process it).
 */
export function openTunnel(
  session: http2.ClientHttp2Session,
  request: HboneConnectRequest,
): Promise<HboneTunnel> {
  let headers: http2.OutgoingHttpHeaders;
  try {
    headers = connectHeaders(request);
  } catch (err) {
    return Promise.reject(err);
  }
  const authority = String(headers[':authority']);
  let stream: http2.ClientHttp2Stream;
  try {
    stream = session.request(headers, { endStream: false });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'ERR_HTTP2_GOAWAY_SESSION') {
      return Promise.reject(
        new HboneError('HBONE_GOAWAY', `connection received GOAWAY; CONNECT ${authority} not sent`, {
          cause: err,
          retryable: true,
        }),
      );
    }
    if (code === 'ERR_HTTP2_INVALID_SESSION') {
      return Promise.reject(
        new HboneError('HBONE_SESSION_CLOSED', `connection is closed; CONNECT ${authority} not sent`, {
          cause: err,
          retryable: true,
        }),
      );
    }
    return Promise.reject(err);
  }
  return new Promise<HboneTunnel>((resolve, reject) => {
    let streamError: Error | undefined;
    const cleanup = (): void => {
      stream.off('response', onResponse);
      stream.off('close', onClose);
      request.signal?.removeEventListener('abort', onAbort);
    };
    const onResponse = (responseHeaders: http2.IncomingHttpHeaders): void => {
      cleanup();
      const status = Number(responseHeaders[':status']);
      if (status !== 200) {
        stream.close(NGHTTP2_CANCEL);
        reject(
          new HboneError('HBONE_STATUS', `CONNECT ${authority} was answered with status ${status}`, {
            status,
          }),
        );
        return;
      }
      resolve(new HboneTunnel(stream, { responseHeaders, highWaterMark: request.highWaterMark }));
    };
    const onClose = (): void => {
      cleanup();
      const code = stream.rstCode ?? NGHTTP2_CANCEL;
      if (session.destroyed) {
        // Retryable: no tunnel was handed out, so no application byte went over this stream.
        reject(
          new HboneError(
            'HBONE_SESSION_CLOSED',
            `connection closed before CONNECT ${authority} was answered`,
            {
              cause: streamError,
              rstCode: code,
              retryable: true,
            },
          ),
        );
        return;
      }
      reject(
        new HboneError(
          'HBONE_STREAM_RESET',
          `CONNECT ${authority} was reset with ${http2ErrorName(code)} before a response`,
          {
            cause: streamError,
            rstCode: code,
            retryable: code === NGHTTP2_REFUSED_STREAM,
          },
        ),
      );
    };
    const onAbort = (): void => {
      cleanup();
      stream.close(NGHTTP2_CANCEL);
      reject(
        new HboneError('HBONE_ABORTED', `CONNECT ${authority} was aborted`, {
          cause: request.signal?.reason,
        }),
      );
    };
    // Kept for the tunnel's lifetime too: an unhandled 'error' on the raw stream would crash.
    stream.on('error', (err) => {
      streamError ??= err;
    });
    stream.on('response', onResponse);
    stream.on('close', onClose);
    if (request.signal?.aborted) onAbort();
    else request.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

import * as net from 'node:net';
import * as tls from 'node:tls';
import type { HboneDialer } from '@ambient/common/hbone/client';
import { normalizeIp, type SocketAddr } from '@ambient/common/model';
import { connectFd, listenInNetns, originalDst, type TransparentMode } from '@ambient/native';

/** ztunnel's mark on every socket it makes in a pod (`DEFAULT_INPOD_MARK`, spec §2.2). */
export const DEFAULT_INPOD_MARK = 0x539;

/** A bound listener, served by `server` (whose `'connection'` the caller handles). */
export interface ProxyListener {
  readonly server: net.Server;
  /** The bound address, IP in canonical form. */
  readonly address: SocketAddr;
  /** Whether IP_TRANSPARENT could be set on it (in-pod only). */
  readonly transparent: boolean;
}

/** An outbound TCP connection made by the proxy: to an app, a plain-TCP upstream or an HBONE peer. */
export interface SocketConnectOptions {
  readonly address: string;
  readonly port: number;
  /**
   * Source IP to bind. With `transparent` it need not be local (IP_TRANSPARENT + IP_FREEBIND):
   * inbound connects to the app this way so the app sees the client's IP.
   */
  readonly source?: string;
  readonly transparent?: boolean;
  /** Give up after this long (0 or omitted: the kernel's own timeout). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * Where a per-pod proxy gets its sockets (ztunnel `SocketFactory`). In-pod, every listener and
 * every outbound socket is created inside the pod's network namespace with mark 0x539, so the
 * pod's redirection rules let ztunnel's own traffic through and replies to spoofed connections
 * come back to ztunnel. Locally (tests, dedicated mode) sockets are plain, on one local IP.
 *
 * Sockets returned allow half-open connections: a FIN in one direction leaves the other usable.
 */
export interface SocketFactory {
  readonly kind: 'inpod' | 'local';
  /** Binds `port` on the factory's listen address (SO_REUSEPORT, so an upgrade can overlap). */
  listen(port: number): Promise<ProxyListener>;
  /** Connects; rejects with the connect error (or a timeout / abort). */
  connect(options: SocketConnectOptions): Promise<net.Socket>;
  /** Opens TLS to an HBONE peer over a socket made by this factory (for HbonePool's `dial`). */
  readonly hboneDialer: HboneDialer;
  /**
   * The destination an accepted capture connection (15001, 15006) was addressed to: SO_ORIGINAL_DST
   * after the pod's NAT REDIRECT, else the socket's local address (TPROXY style, spec §2.3).
   */
  originalDestination(socket: net.Socket): SocketAddr;
}

function localAddressOf(socket: net.Socket): SocketAddr {
  return {
    ip: normalizeIp(socket.localAddress ?? '') ?? socket.localAddress ?? '',
    port: socket.localPort ?? 0,
  };
}

/** SO_ORIGINAL_DST (then its IPv6 form); undefined without a NAT entry or native support. */
function natOriginalDestination(socket: net.Socket): SocketAddr | undefined {
  try {
    const od = originalDst(socket);
    return { ip: normalizeIp(od.address) ?? od.address, port: od.port };
  } catch {
    return undefined;
  }
}

function boundAddress(server: net.Server): SocketAddr {
  const a = server.address() as net.AddressInfo;
  return { ip: normalizeIp(a.address) ?? a.address, port: a.port };
}

function serverForProxy(): net.Server {
  // Half-open: the proxy propagates a FIN as END_STREAM and keeps the other direction going.
  return net.createServer({ allowHalfOpen: true, noDelay: true });
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('connect aborted');
}

export interface InpodSocketFactoryOptions {
  /**
   * Listener address inside the pod. Default `::` (dual-stack; IPv4 arrives v4-mapped and
   * SO_ORIGINAL_DST still works), falling back to `0.0.0.0` where IPv6 is unavailable.
   */
  readonly listenAddress?: string;
  /** IP_TRANSPARENT on listeners: ztunnel tries it and goes on without (`best-effort`). */
  readonly transparent?: TransparentMode;
}

/**
 * Sockets inside a pod's network namespace through the native addon: setns, socket, SO_MARK,
 * bind/connect, setns back, all before returning to JavaScript. The netns fd stays owned by the
 * caller (the workload manager) and must outlive the proxy.
 */
export class InpodSocketFactory implements SocketFactory {
  readonly kind = 'inpod' as const;
  readonly netnsFd: number;
  readonly mark: number;
  readonly #listenAddress: string;
  readonly #transparent: TransparentMode;

  constructor(netnsFd: number, mark = DEFAULT_INPOD_MARK, options: InpodSocketFactoryOptions = {}) {
    this.netnsFd = netnsFd;
    this.mark = mark;
    this.#listenAddress = options.listenAddress ?? '::';
    this.#transparent = options.transparent ?? 'best-effort';
  }

  async listen(port: number): Promise<ProxyListener> {
    const attempt = async (address: string): Promise<ProxyListener> => {
      const server = serverForProxy();
      const bound = await listenInNetns(server, {
        netnsFd: this.netnsFd,
        address,
        port,
        mark: this.mark,
        reusePort: true,
        transparent: this.#transparent,
        ...(address === '::' ? { ipv6Only: false } : {}),
      });
      return { server, address: boundAddress(server), transparent: bound.transparent };
    };
    try {
      return await attempt(this.#listenAddress);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (this.#listenAddress !== '::' || (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL')) throw err;
      return attempt('0.0.0.0');
    }
  }

  async connect(options: SocketConnectOptions): Promise<net.Socket> {
    const fd = await connectFd({
      netnsFd: this.netnsFd,
      address: options.address,
      port: options.port,
      mark: this.mark,
      ...(options.source === undefined
        ? {}
        : { source: { address: options.source, transparent: options.transparent ?? false } }),
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    // Adopted here rather than through connectInNetns: the socket must allow half-open.
    const socket = new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    socket.setNoDelay(true);
    return socket;
  }

  // The TCP connect completes inside the pod netns first; TLS then runs on the native socket
  // (Node's fast TLS path). connectHbone's deadline bounds the whole dial.
  readonly hboneDialer: HboneDialer = async (options) => {
    const socket = await this.connect({ address: options.host ?? '', port: options.port ?? 0 });
    return tls.connect({ ...options, socket });
  };

  originalDestination(socket: net.Socket): SocketAddr {
    return natOriginalDestination(socket) ?? localAddressOf(socket);
  }
}

export interface LocalSocketFactoryOptions {
  /** The IP this "pod" owns: listeners bind it and outbound sockets use it as source. */
  readonly address: string;
  /**
   * Where an accepted capture connection was going, when something other than NAT steered it (a
   * test harness). Undefined (or no resolver) falls back to SO_ORIGINAL_DST (dedicated mode
   * behind the host's REDIRECT rules), then to the socket's local address, as ztunnel does.
   */
  readonly originalDestination?: (socket: net.Socket) => SocketAddr | undefined;
  /** SO_REUSEPORT on listeners (default true); tests turn it off so overlapping binds fail. */
  readonly reusePort?: boolean;
}

/**
 * Plain sockets in the current network namespace, all on one local IP (tests give each "pod" its
 * own 127.0.0.x; dedicated mode uses the host's IP). A `transparent` source is simply bound:
 * within 127.0.0.0/8 any address is local, elsewhere the bind fails and the caller falls back.
 */
export class LocalSocketFactory implements SocketFactory {
  readonly kind = 'local' as const;
  readonly address: string;
  readonly #resolve: ((socket: net.Socket) => SocketAddr | undefined) | undefined;
  readonly #reusePort: boolean;

  constructor(options: LocalSocketFactoryOptions) {
    this.address = options.address;
    this.#resolve = options.originalDestination;
    this.#reusePort = options.reusePort ?? true;
  }

  listen(port: number): Promise<ProxyListener> {
    const server = serverForProxy();
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen({ host: this.address, port, reusePort: this.#reusePort }, () => {
        server.off('error', onError);
        resolve({ server, address: boundAddress(server), transparent: false });
      });
    });
  }

  connect(options: SocketConnectOptions): Promise<net.Socket> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise((resolve, reject) => {
      const socket = net.connect({
        host: options.address,
        port: options.port,
        localAddress: options.source ?? this.address,
        allowHalfOpen: true,
        noDelay: true,
      });
      let timer: NodeJS.Timeout | undefined;
      const settle = (err?: Error): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket.off('error', onError);
        socket.off('connect', onConnect);
        if (err === undefined) {
          resolve(socket);
          return;
        }
        socket.destroy();
        reject(err);
      };
      const onError = (err: Error): void => settle(err);
      const onConnect = (): void => settle();
      const onAbort = (): void => settle(abortError(signal as AbortSignal));
      socket.once('error', onError);
      socket.once('connect', onConnect);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (options.timeoutMs !== undefined && options.timeoutMs > 0) {
        const ms = options.timeoutMs;
        timer = setTimeout(() => {
          const err = new Error(`connect ${options.address}:${options.port} timed out after ${ms} ms`);
          (err as Error & { code: string }).code = 'ETIMEDOUT';
          settle(err);
        }, ms);
      }
    });
  }

  // tls.connect hands `localAddress` to its TCP connect; Node's typings omit it.
  readonly hboneDialer: HboneDialer = (options) => {
    const { localAddress } = options as { localAddress?: string };
    return tls.connect({ ...options, localAddress: localAddress ?? this.address } as tls.ConnectionOptions);
  };

  originalDestination(socket: net.Socket): SocketAddr {
    return this.#resolve?.(socket) ?? natOriginalDestination(socket) ?? localAddressOf(socket);
  }
}

/**
 * Connects with the client's IP as source when `preserveSource` is on (ztunnel
 * `freebind_connect`), and without it when the kernel refuses the spoofed bind (no
 * CAP_NET_ADMIN, address not usable here): the connection then still goes through, from the
 * proxy's own address. Resolves with whether the source was kept.
 */
export async function connectPreservingSource(
  factory: SocketFactory,
  options: SocketConnectOptions & { readonly preserveSource: boolean },
): Promise<{ socket: net.Socket; sourcePreserved: boolean }> {
  const { preserveSource, source, ...rest } = options;
  if (preserveSource && source !== undefined) {
    try {
      return { socket: await factory.connect({ ...rest, source, transparent: true }), sourcePreserved: true };
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (!SPOOF_REFUSED.has(String(code))) throw err;
    }
  }
  return { socket: await factory.connect(rest), sourcePreserved: false };
}

// Errors a spoofed bind fails with when spoofing is not possible here, as opposed to the
// destination refusing the connection.
const SPOOF_REFUSED = new Set(['EPERM', 'EACCES', 'EADDRNOTAVAIL', 'EINVAL', 'ENOPROTOOPT', 'EADDRINUSE']);

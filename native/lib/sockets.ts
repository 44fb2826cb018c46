import { type AddressInfo, type Server, Socket } from 'node:net';
import { callNative } from './binding.ts';
import { NativeError, toNativeError } from './errors.ts';

/** How a listener treats IP_TRANSPARENT: ztunnel tries it and goes on without it unless forced. */
export type TransparentMode = 'off' | 'best-effort' | 'required';

export interface ListenerOptions {
  /** Namespace to create the socket in; omitted means the calling thread's namespace. */
  netnsFd?: number;
  /** Numeric IPv4 or IPv6 address (`0.0.0.0`, `::`, a pod IP). */
  address: string;
  /** 0 lets the kernel choose. */
  port: number;
  /** listen(2) backlog; Node re-applies its own when it adopts the fd. Default 511. */
  backlog?: number;
  /** SO_MARK, e.g. 0x539 for in-pod ztunnel sockets. */
  mark?: number;
  /** SO_REUSEPORT, default true: an old and a new ztunnel can listen during an upgrade. */
  reusePort?: boolean;
  /** Default 'best-effort'. */
  transparent?: TransparentMode;
  /** IPV6_V6ONLY for IPv6 addresses; left at the kernel default when omitted. */
  ipv6Only?: boolean;
}

export interface ListenerFd {
  /** A listening TCP socket; owned by the caller until handed to `net.Server.listen({ fd })`. */
  fd: number;
  /** Whether IP_TRANSPARENT was set. */
  transparent: boolean;
}

const transparentModes: Record<TransparentMode, 0 | 1 | 2> = { off: 0, 'best-effort': 1, required: 2 };

/**
 * Creates a listening TCP socket inside a network namespace: setns(target), socket, SO_REUSEADDR,
 * SO_REUSEPORT, SO_MARK, IP_TRANSPARENT, bind, listen, setns(back), all before returning, so the event
 * loop thread never runs JavaScript in the other namespace.
 */
export function createListenerFd(options: ListenerOptions): ListenerFd {
  checkMark(options.mark);
  return callNative((n) =>
    n.createListener({
      netnsFd: options.netnsFd ?? -1,
      address: options.address,
      port: options.port,
      backlog: options.backlog ?? 511,
      mark: options.mark ?? -1,
      reusePort: options.reusePort ?? true,
      transparent: transparentModes[options.transparent ?? 'best-effort'],
      ipv6Only: options.ipv6Only,
    }),
  );
}

/**
 * Creates a listener with {@link createListenerFd} and serves it with `server`. Resolves with the bound
 * address once the server listens; the server owns the socket from then on.
 */
export function listenInNetns(
  server: Server,
  options: ListenerOptions,
): Promise<AddressInfo & { transparent: boolean }> {
  const { fd, transparent } = createListenerFd(options);
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve({ ...(server.address() as AddressInfo), transparent });
    };
    server.once('error', onError);
    server.once('listening', onListening);
    try {
      server.listen({ fd });
    } catch (err) {
      // Thrown before Node adopted the fd (e.g. ERR_SERVER_ALREADY_LISTEN): it is still ours to close.
      server.off('error', onError);
      server.off('listening', onListening);
      callNative((n) => n.closeFd(fd));
      reject(err);
    }
  });
}

export interface ConnectOptions {
  /** Namespace to create the socket in; omitted means the calling thread's namespace. */
  netnsFd?: number;
  address: string;
  port: number;
  /** SO_MARK, e.g. 0x539 so in-pod redirection rules let the connection through. */
  mark?: number;
  /**
   * Bind to this source first. With `transparent` (IP_TRANSPARENT + IP_FREEBIND) it need not be a
   * local address: ztunnel connects to the app with the original client IP this way.
   */
  source?: { address: string; port?: number; transparent?: boolean };
  /** Give up after this long with NativeError `ETIMEDOUT`; 0 or omitted waits for the kernel's own timeout. */
  timeoutMs?: number;
  /** Aborting rejects with NativeError `ECANCELED` and closes the socket. */
  signal?: AbortSignal;
}

/**
 * Starts a non-blocking TCP connect inside a namespace (setns, socket, marks, bind, connect, setns back,
 * all synchronously) and waits on the event loop for it to complete. Resolves with the connected fd,
 * owned by the caller. Immediate failures (bad address, EADDRNOTAVAIL on bind...) reject as well.
 */
export function connectFd(options: ConnectOptions): Promise<number> {
  checkMark(options.mark);
  const { signal } = options;
  if (signal?.aborted) {
    return Promise.reject(
      new NativeError('ECANCELED', `connect ${options.address}:${options.port}: aborted before start`, {
        syscall: 'connect',
        cause: signal.reason,
      }),
    );
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => op.cancel();
    const op = callNative(
      (n) =>
        new n.PendingConnect(
          {
            netnsFd: options.netnsFd ?? -1,
            address: options.address,
            port: options.port,
            mark: options.mark ?? -1,
            sourceAddress: options.source?.address,
            sourcePort: options.source?.port ?? 0,
            transparent: options.source?.transparent ?? false,
            timeoutMs: options.timeoutMs ?? 0,
          },
          (err, fd) => {
            signal?.removeEventListener('abort', onAbort);
            if (err) reject(toNativeError(err));
            else resolve(fd as number);
          },
        ),
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** {@link connectFd}, then adopts the fd as a connected `net.Socket` (which owns it from then on). */
export async function connectInNetns(options: ConnectOptions): Promise<Socket> {
  const fd = await connectFd(options);
  try {
    return new Socket({ fd, readable: true, writable: true });
  } catch (err) {
    callNative((n) => n.closeFd(fd));
    throw err;
  }
}

/**
 * The fd behind a Node socket. Node exposes it only through the internal `_handle.fd`; this is the one
 * place that relies on it.
 * @throws NativeError `EBADF` when the socket has no open handle (destroyed, or not a TCP/pipe socket).
 */
export function socketFd(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new NativeError('EBADF', 'socket has no open file descriptor (destroyed or not yet connected)', {
      syscall: 'getsockopt',
    });
  }
  return fd;
}

function checkMark(mark: number | undefined): void {
  if (mark !== undefined && !(Number.isInteger(mark) && mark >= 0 && mark <= 0xffffffff)) {
    throw new TypeError(`mark ${mark} is not a 32-bit unsigned integer`);
  }
}

function toFd(target: Socket | number): number {
  return typeof target === 'number' ? target : socketFd(target);
}

/**
 * The destination an accepted connection had before NAT REDIRECT rewrote it: SO_ORIGINAL_DST, then
 * IP6T_SO_ORIGINAL_DST for IPv6 sockets. No fallback to the local address here: the caller decides.
 * @throws NativeError `ENOENT` when conntrack holds no NAT entry for the connection.
 */
export function originalDst(socket: Socket | number): AddressInfo {
  const fd = toFd(socket);
  return callNative((n) => n.originalDst(fd));
}

/** Sets SO_MARK on an existing socket. */
export function setMark(socket: Socket | number, mark: number): void {
  checkMark(mark);
  const fd = toFd(socket);
  callNative((n) => n.setMark(fd, mark));
}

/** Reads SO_MARK. */
export function getMark(socket: Socket | number): number {
  const fd = toFd(socket);
  return callNative((n) => n.getMark(fd));
}

/**
 * Sizes the kernel send buffer: SO_SNDBUFFORCE when the process has CAP_NET_ADMIN, else SO_SNDBUF
 * (capped by `net.core.wmem_max`). Returns the size the kernel granted, which is twice the
 * request when it was met (the kernel doubles it for its bookkeeping).
 */
export function setSendBufferSize(socket: Socket | number, bytes: number): number {
  if (!Number.isInteger(bytes) || bytes <= 0 || bytes > 2 ** 30) {
    throw new RangeError(`send buffer size ${bytes} is not an integer from 1 to 2^30`);
  }
  const fd = toFd(socket);
  return callNative((n) => n.setSendBufferSize(fd, bytes));
}

/** SO_COOKIE: the kernel's id for the socket, the key `bpf_get_socket_cookie` returns in eBPF programs. */
export function socketCookie(socket: Socket | number): bigint {
  const fd = toFd(socket);
  return callNative((n) => n.socketCookie(fd));
}

import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';
import { callNative, type RawSeqpacketHandle } from './binding.ts';
import { NativeError, toNativeError } from './errors.ts';

/** Kernel limit on descriptors in one SCM_RIGHTS message (SCM_MAX_FD). */
const maxFdsPerMessage = 253;

export interface SeqpacketOptions {
  /** Longest message accepted; a longer one is an `EMSGSIZE` error (MSG_TRUNC). Default 65536. */
  maxMessageSize?: number;
  /** Most fds accepted with one message; more is an `EMSGSIZE` error (MSG_CTRUNC). Default 16. */
  maxFds?: number;
}

export interface SeqpacketSocketEvents {
  /**
   * One datagram, boundaries preserved. The listener owns `fds` and must close each one (closeFd) or
   * hand it on; they are opened with O_CLOEXEC.
   */
  message: [data: Buffer, fds: number[]];
  /** A receive or poll error; the socket closes right after. */
  error: [err: NativeError];
  /** The socket is closed: by close(), by the peer, or after an error. Emitted once. */
  close: [];
}

/**
 * A connected SOCK_SEQPACKET unix socket (the ZDS transport). Reading runs while a 'message' listener is
 * attached (so `events.once(socket, 'message')` reads exactly one message) and can be paused; writes never block: a message the kernel cannot take yet waits
 * in a queue until the socket is writable. Call close() when done: the socket keeps itself alive
 * (and, unless unref()'d, the event loop) until then.
 */
export class SeqpacketSocket extends EventEmitter<SeqpacketSocketEvents> {
  #handle: RawSeqpacketHandle;
  #maxMessageSize: number;
  #maxFds: number;
  #closed = false;
  #reading = false;
  #paused = false;
  #pendingWrites = new Set<(err: NativeError) => void>();

  /**
   * Connects to a listening SEQPACKET socket. A unix connect does not wait, so this is synchronous.
   * @throws NativeError `ENOENT` (no socket at path), `ECONNREFUSED` (nobody listening), `EAGAIN`
   * (listener backlog full; retryable).
   */
  static connect(path: string, options: SeqpacketOptions = {}): SeqpacketSocket {
    return new SeqpacketSocket(
      callNative((n) => n.SeqpacketHandle.connect(path)),
      options,
    );
  }

  /** @internal Wraps a native handle; use {@link SeqpacketSocket.connect} or a SeqpacketServer. */
  constructor(handle: RawSeqpacketHandle, options: SeqpacketOptions = {}) {
    super();
    this.#handle = handle;
    this.#maxMessageSize = options.maxMessageSize ?? 65536;
    this.#maxFds = options.maxFds ?? 16;
    if (!Number.isInteger(this.#maxMessageSize) || this.#maxMessageSize < 1) {
      throw new TypeError(`maxMessageSize ${this.#maxMessageSize} is not a positive integer`);
    }
    if (!Number.isInteger(this.#maxFds) || this.#maxFds < 0 || this.#maxFds > maxFdsPerMessage) {
      throw new TypeError(`maxFds ${this.#maxFds} is not an integer in [0, ${maxFdsPerMessage}]`);
    }
    // Reading waits for a consumer: received fds would otherwise have no owner to close them.
    const emitter = this as EventEmitter;
    emitter.on('newListener', (event: string | symbol) => {
      if (event === 'message') queueMicrotask(() => this.#startReading());
    });
    emitter.on('removeListener', (event: string | symbol) => {
      if (event === 'message' && this.listenerCount('message') === 0) this.#stopReading();
    });
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The socket's fd, for diagnostics; -1 once closed. Do not close it directly. */
  get fd(): number {
    return this.#handle.fd;
  }

  /**
   * Sends one message with optional fds (SCM_RIGHTS). The fds are duplicated by the kernel (or by the
   * queue while the socket is not writable), so the caller still owns them and may close them as soon
   * as this returns. Resolves when the kernel took the message.
   * @throws NativeError `EINVAL` for an empty message (indistinguishable from end-of-stream).
   */
  send(data: Uint8Array, fds: readonly number[] = []): Promise<void> {
    if (this.#closed) {
      return Promise.reject(
        new NativeError('EBADF', 'sendmsg: seqpacket socket is closed', { syscall: 'sendmsg' }),
      );
    }
    if (fds.length > maxFdsPerMessage) {
      return Promise.reject(
        new NativeError('EINVAL', `sendmsg: ${fds.length} fds exceed the limit of ${maxFdsPerMessage}`, {
          syscall: 'sendmsg',
        }),
      );
    }
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return new Promise((resolve, reject) => {
      const settle = (err: NativeError | null) => {
        this.#pendingWrites.delete(settle);
        if (err) reject(err);
        else resolve();
      };
      try {
        const sent = callNative(() =>
          this.#handle.write(buf, [...fds], (err) =>
            settle(err ? (toNativeError(err) as NativeError) : null),
          ),
        );
        if (sent) resolve();
        else this.#pendingWrites.add(settle);
      } catch (err) {
        reject(err);
      }
    });
  }

  /** Stops reading until resume(); messages wait in the kernel's queue. */
  pause(): void {
    this.#paused = true;
    this.#stopReading();
  }

  resume(): void {
    this.#paused = false;
    this.#startReading();
  }

  /** Lets the process exit while this socket is open. */
  unref(): this {
    if (!this.#closed) this.#handle.setRef(false);
    return this;
  }

  ref(): this {
    if (!this.#closed) this.#handle.setRef(true);
    return this;
  }

  /** Closes the socket and releases its libuv handle; pending sends reject with `ECANCELED`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reading = false;
    this.#handle.close();
    const pending = [...this.#pendingWrites];
    this.#pendingWrites.clear();
    for (const settle of pending) {
      settle(
        new NativeError('ECANCELED', 'sendmsg: seqpacket socket closed before the message was sent', {
          syscall: 'sendmsg',
        }),
      );
    }
    process.nextTick(() => this.emit('close'));
  }

  #startReading(): void {
    if (this.#reading || this.#paused || this.#closed || this.listenerCount('message') === 0) return;
    this.#reading = true;
    callNative(() =>
      this.#handle.startRead(
        (err, data, fds) => this.#onRead(err, data, fds),
        this.#maxMessageSize,
        this.#maxFds,
      ),
    );
  }

  #stopReading(): void {
    if (!this.#reading || this.#closed) return;
    this.#reading = false;
    this.#handle.stopRead();
  }

  #onRead(err: Error | null, data: Buffer | null | undefined, fds: number[] | undefined): void {
    if (err) {
      this.#reading = false;
      const error = toNativeError(err) as NativeError;
      this.close();
      this.emit('error', error);
      return;
    }
    if (!data) {
      this.close();
      return;
    }
    this.emit('message', data, fds ?? []);
  }
}

export interface SeqpacketServerEvents {
  connection: [socket: SeqpacketSocket];
  error: [err: NativeError];
  close: [];
}

/**
 * A listening SOCK_SEQPACKET unix socket (the istio-cni node agent's side of ZDS). Accepted sockets
 * get the server's SeqpacketOptions.
 */
export class SeqpacketServer extends EventEmitter<SeqpacketServerEvents> {
  #handle: RawSeqpacketHandle | undefined;
  #path: string | undefined;
  #options: SeqpacketOptions;

  constructor(options: SeqpacketOptions = {}) {
    super();
    this.#options = options;
  }

  /**
   * Binds and listens at `path`, then emits 'connection' for each peer. A stale socket file is not
   * removed: that is the caller's decision.
   * @throws NativeError `EADDRINUSE` when the path exists, `ENOENT` when its directory does not.
   */
  listen(path: string, backlog = 128): this {
    if (this.#handle)
      throw new NativeError('EINVAL', `listen ${path}: server is already listening`, { syscall: 'listen' });
    const handle = callNative((n) => n.SeqpacketHandle.listen(path, backlog));
    this.#handle = handle;
    this.#path = path;
    handle.startAccept((err, conn) => {
      if (err || !conn) {
        this.emit('error', toNativeError(err) as NativeError);
        return;
      }
      let socket: SeqpacketSocket;
      try {
        socket = new SeqpacketSocket(conn, this.#options);
      } catch (wrapErr) {
        conn.close();
        throw wrapErr;
      }
      this.emit('connection', socket);
    });
    return this;
  }

  /** The path listened on, or undefined before listen() and after close(). */
  address(): string | undefined {
    return this.#path;
  }

  unref(): this {
    this.#handle?.setRef(false);
    return this;
  }

  ref(): this {
    this.#handle?.setRef(true);
    return this;
  }

  /**
   * Stops accepting, closes the listening socket and removes its path (as net.Server does for unix
   * sockets). Accepted sockets stay open.
   */
  close(): void {
    if (!this.#handle) return;
    this.#handle.close();
    this.#handle = undefined;
    const path = this.#path;
    this.#path = undefined;
    if (path !== undefined) {
      try {
        unlinkSync(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    process.nextTick(() => this.emit('close'));
  }
}

import type { NativeError, SeqpacketSocket } from '@ambient/native';
import { errorMessage } from '../errors.ts';
import { ZdsError } from './errors.ts';
import { closeFds } from './protocol.ts';

/** One received datagram; whoever takes it owns `fds`. */
export interface ZdsDatagram {
  readonly data: Buffer;
  readonly fds: number[];
}

/** How a {@link ZdsChannel} treats datagrams nobody is waiting for. */
export interface ZdsChannelOptions {
  /**
   * Called with a datagram that arrives while no {@link ZdsChannel.next} is pending; it owns the
   * datagram's fds. Without it datagrams queue, up to `maxQueued`.
   */
  readonly onUnsolicited?: (datagram: ZdsDatagram) => void;
  /** Most datagrams held for a later next(); one more closes the channel as a protocol error. Default 8. */
  readonly maxQueued?: number;
}

interface Waiter {
  readonly resolve: (d: ZdsDatagram) => void;
  readonly reject: (err: ZdsError) => void;
  readonly timer: NodeJS.Timeout | undefined;
}

/**
 * A ZDS connection's datagram stream over a SEQPACKET socket: reads continuously (so a peer that
 * closes or resets is seen at once, through the poll's hang-up event), hands datagrams to one waiter
 * at a time with a deadline, and records why the connection ended.
 */
export class ZdsChannel {
  readonly #socket: SeqpacketSocket;
  readonly #queue: ZdsDatagram[] = [];
  readonly #onUnsolicited: ((d: ZdsDatagram) => void) | undefined;
  readonly #maxQueued: number;
  #waiter: Waiter | undefined;
  #transportError: ZdsError | undefined;
  #closeReason: ZdsError | undefined;
  #resolveClosed!: (reason: ZdsError) => void;
  /** Settles once the socket is closed, with the reason (always a ZdsError, `ZDS_CLOSED` for a plain EOF). */
  readonly closed: Promise<ZdsError>;

  constructor(socket: SeqpacketSocket, options: ZdsChannelOptions = {}) {
    this.#socket = socket;
    this.#onUnsolicited = options.onUnsolicited;
    this.#maxQueued = options.maxQueued ?? 8;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    socket.on('error', (err) => {
      this.#transportError = transportError(err);
    });
    socket.on('close', () => this.#finish());
    socket.on('message', (data, fds) => this.#deliver({ data, fds }));
    if (socket.closed) this.#finish();
  }

  /** True once the channel is closed (locally or by the peer). */
  get isClosed(): boolean {
    return this.#closeReason !== undefined || this.#socket.closed;
  }

  /** Why the channel closed, once it has. */
  get closeReason(): ZdsError | undefined {
    return this.#closeReason;
  }

  /** Datagrams received and not yet taken. */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * The next datagram. Rejects with `ZDS_TIMEOUT` after `timeoutMs` (the channel stays open: the
   * caller decides), or with the close reason once the channel is closed. One waiter at a time.
   */
  next(timeoutMs: number | undefined, what: string): Promise<ZdsDatagram> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closeReason) return Promise.reject(this.#closeReason);
    if (this.#waiter) {
      return Promise.reject(new ZdsError('ZDS_PROTOCOL', `a read for ${what} started while another waits`));
    }
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.#waiter = undefined;
              reject(new ZdsError('ZDS_TIMEOUT', `no ${what} within ${timeoutMs}ms`, { retryable: true }));
            }, timeoutMs);
      this.#waiter = { resolve, reject, timer };
    });
  }

  /** Sends one datagram; `fds` stay owned by the caller. Rejects `ZDS_CLOSED` when the socket is gone. */
  async send(data: Uint8Array, fds: readonly number[] = []): Promise<void> {
    if (this.#closeReason) throw this.#closeReason;
    try {
      await this.#socket.send(data, fds);
    } catch (err) {
      throw new ZdsError('ZDS_CLOSED', `zds write failed: ${errorMessage(err)}`, {
        cause: err,
        retryable: true,
      });
    }
  }

  /** Closes the socket; a pending next() rejects with `reason`, queued fds are released. Idempotent. */
  close(reason: ZdsError = new ZdsError('ZDS_CLOSED', 'zds connection closed locally')): void {
    if (this.#closeReason) return;
    this.#closeReason = reason;
    this.#releaseAll();
    this.#socket.close();
  }

  #deliver(d: ZdsDatagram): void {
    const waiter = this.#waiter;
    if (waiter) {
      this.#waiter = undefined;
      clearTimeout(waiter.timer);
      waiter.resolve(d);
      return;
    }
    if (this.#onUnsolicited) {
      this.#onUnsolicited(d);
      return;
    }
    if (this.#queue.length >= this.#maxQueued) {
      closeFds(d.fds);
      this.close(
        new ZdsError(
          'ZDS_PROTOCOL',
          `peer sent more than ${this.#maxQueued} datagrams without waiting for an ack`,
        ),
      );
      return;
    }
    this.#queue.push(d);
  }

  #finish(): void {
    this.#closeReason ??=
      this.#transportError ??
      new ZdsError('ZDS_CLOSED', 'zds peer closed the connection', { retryable: true });
    this.#releaseAll();
    this.#resolveClosed(this.#closeReason);
  }

  #releaseAll(): void {
    const reason = this.#closeReason;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter && reason) {
      clearTimeout(waiter.timer);
      waiter.reject(reason);
    }
    for (const d of this.#queue.splice(0)) closeFds(d.fds);
  }
}

/** A receive error from the transport: MSG_TRUNC/MSG_CTRUNC surface as EMSGSIZE. */
function transportError(err: NativeError): ZdsError {
  if (err.code === 'EMSGSIZE') {
    return new ZdsError('ZDS_PROTOCOL', `zds datagram rejected by the transport: ${err.message}`, {
      cause: err,
    });
  }
  return new ZdsError('ZDS_CLOSED', `zds connection failed: ${err.message}`, { cause: err, retryable: true });
}

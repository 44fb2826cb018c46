import { randomUUID } from 'node:crypto';
import { isNetns, openNetns, type SeqpacketSocket } from '@ambient/native';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';
import { ZdsChannel } from './channel.ts';
import { ZdsError } from './errors.ts';
import {
  closeFds,
  decodeHello,
  decodeResponse,
  describeRequest,
  encodeRequest,
  type ZdsRequestBody,
  type ZdsWorkloadInfo,
} from './protocol.ts';

/** One pod of the node agent's snapshot. */
export interface ZdsSnapshotEntry {
  /** Kubernetes pod `metadata.uid`. */
  readonly uid: string;
  readonly info: ZdsWorkloadInfo;
  /**
   * The pod's network namespace: an open fd (still owned by the provider, which must keep it open
   * until the snapshot is sent), a path the server opens and closes itself (`/proc/<pid>/ns/net`,
   * `/var/run/netns/<name>`), or undefined. A pod whose netns is undefined, cannot be opened, or is
   * not a network namespace is sent as KeepWorkload.
   */
  readonly netns?: number | string | undefined;
}

/** Returns the pods to send to each newly connected ztunnel. */
export type ZdsSnapshotProvider = () => Iterable<ZdsSnapshotEntry> | Promise<Iterable<ZdsSnapshotEntry>>;

/** Where a connection is in the protocol. */
export type ZdsConnectionPhase = 'hello' | 'snapshot' | 'ready' | 'closed';

/** A connection's state, for `/debug` dumps and tests. Times are ISO-8601 strings. */
export interface ZdsConnectionState {
  /** Random id, as upstream's `conn_uuid` log label. */
  readonly id: string;
  readonly phase: ZdsConnectionPhase;
  readonly connectedAt: string;
  readonly helloVersion: number | undefined;
  /** Snapshot progress: pods sent as Add and as Keep, and how many of those were NACKed. */
  readonly snapshot: { readonly adds: number; readonly keeps: number; readonly nacks: number };
  /** Requests written, and their answers. */
  readonly sent: number;
  readonly acked: number;
  readonly nacked: number;
  /** Requests waiting behind the one in flight. */
  readonly queued: number;
  /** The request whose ack is awaited, e.g. `add pod <uid>`. */
  readonly inFlight: string | undefined;
  readonly lastAckAt: string | undefined;
  readonly lastLivenessCheckAt: string | undefined;
  /** Why the connection closed, once it has. */
  readonly closeReason: string | undefined;
}

/** Timing and callbacks a {@link ZdsServerConnection} gets from its server. */
export interface ZdsServerConnectionOptions {
  readonly helloTimeoutMs: number;
  readonly ackTimeoutMs: number;
  readonly livenessIntervalMs: number;
  readonly snapshot: ZdsSnapshotProvider;
  readonly log: Logger;
  /** Called once the snapshot's SnapshotSent was answered. */
  readonly onSnapshotSent?: (conn: ZdsServerConnection) => void;
}

interface Job {
  readonly what: string;
  readonly run: () => Promise<void>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

function asZdsError(err: unknown): ZdsError {
  return err instanceof ZdsError
    ? err
    : new ZdsError('ZDS_CLOSED', `zds connection failed: ${errorMessage(err)}`, { cause: err });
}

/**
 * The node agent's side of one ztunnel connection (`ztunnelserver.go` `handleConn`): reads the hello,
 * sends the snapshot, then carries incremental requests. Acks carry no correlation id, so every
 * request goes through one serial queue and waits for its ack before the next is written. A missing
 * ack closes the connection: a late ack would otherwise be taken as the answer to the next request.
 */
export class ZdsServerConnection {
  readonly id = randomUUID();
  /** Settles with the reason once the connection is closed. */
  readonly closed: Promise<ZdsError>;
  readonly #channel: ZdsChannel;
  readonly #options: ZdsServerConnectionOptions;
  readonly #log: Logger;
  readonly #connectedAt = new Date();
  readonly #jobs: Job[] = [];
  readonly #idleWaiters: (() => void)[] = [];
  readonly #liveness: NodeJS.Timeout;
  #running = false;
  #phase: ZdsConnectionPhase = 'hello';
  #helloVersion: number | undefined;
  #snapshot = { adds: 0, keeps: 0, nacks: 0 };
  #sent = 0;
  #acked = 0;
  #nacked = 0;
  #inFlight: string | undefined;
  #lastAckAt: Date | undefined;
  #lastLivenessCheckAt: Date | undefined;

  constructor(socket: SeqpacketSocket, options: ZdsServerConnectionOptions) {
    this.#options = options;
    this.#log = options.log.child({ conn_uuid: this.id });
    // ztunnel only ever answers; anything it sends unasked is upstream's "unexpected message".
    this.#channel = new ZdsChannel(socket, {
      onUnsolicited: (d) => {
        closeFds(d.fds);
        this.close(
          new ZdsError('ZDS_PROTOCOL', `ztunnel sent an unsolicited message of ${d.data.length} bytes`),
        );
      },
    });
    // Peer close and reset reach the channel through the always-armed read (poll hang-up), the event
    // counterpart of upstream's periodic short read. The periodic check below is upstream's keepalive
    // tick: it drops a connection whose socket is gone even if no close event was processed for it
    // (so a dead connection never stays "newest"), and stamps the time for the debug dump.
    this.#liveness = setInterval(() => this.#checkLiveness(), options.livenessIntervalMs);
    this.#liveness.unref();
    this.closed = this.#channel.closed.then((reason) => {
      this.#phase = 'closed';
      clearInterval(this.#liveness);
      this.#rejectQueued(reason);
      this.#notifyIdle();
      return reason;
    });
  }

  get phase(): ZdsConnectionPhase {
    return this.#phase;
  }

  /** Starts the handshake: hello, then the snapshot. Later requests queue behind it. */
  start(): Promise<void> {
    return this.#enqueue('hello and snapshot', () => this.#handshake());
  }

  /**
   * Sends one request (with `fds` for an Add) after those queued before it and resolves when it is
   * ACKed. Rejects `ZDS_NACK` with ztunnel's error text, `ZDS_TIMEOUT` when no ack came (the
   * connection is then closed), `ZDS_CLOSED` when the connection ends first.
   */
  request(body: ZdsRequestBody, fds: readonly number[] = []): Promise<void> {
    return this.#enqueue(describeRequest(body), () => this.#exchange(body, fds));
  }

  /** Resolves once nothing is queued or in flight (or the connection closed). */
  whenIdle(): Promise<void> {
    if (!this.#running && this.#jobs.length === 0) return Promise.resolve();
    if (this.#phase === 'closed') return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Closes the connection; queued requests reject with `ZDS_CLOSED`. Idempotent. */
  close(reason: ZdsError = new ZdsError('ZDS_CLOSED', 'zds connection closed by the node agent')): void {
    if (this.#channel.closeReason) return;
    this.#log.debug({ reason: reason.message, code: reason.code }, 'closing ztunnel connection');
    this.#channel.close(reason);
    this.#rejectQueued(reason);
  }

  state(): ZdsConnectionState {
    return {
      id: this.id,
      phase: this.#phase,
      connectedAt: this.#connectedAt.toISOString(),
      helloVersion: this.#helloVersion,
      snapshot: { ...this.#snapshot },
      sent: this.#sent,
      acked: this.#acked,
      nacked: this.#nacked,
      queued: this.#jobs.length,
      inFlight: this.#inFlight,
      lastAckAt: this.#lastAckAt?.toISOString(),
      lastLivenessCheckAt: this.#lastLivenessCheckAt?.toISOString(),
      closeReason: this.#channel.closeReason?.message,
    };
  }

  #enqueue(what: string, run: () => Promise<void>): Promise<void> {
    const reason = this.#channel.closeReason;
    if (reason) return Promise.reject(this.#closedBefore(what, reason));
    return new Promise((resolve, reject) => {
      this.#jobs.push({ what, run, resolve, reject });
      void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    for (let job = this.#jobs.shift(); job; job = this.#jobs.shift()) {
      const reason = this.#channel.closeReason;
      if (reason) {
        job.reject(this.#closedBefore(job.what, reason));
        continue;
      }
      this.#inFlight = job.what;
      try {
        await job.run();
        job.resolve();
      } catch (err) {
        job.reject(err);
      }
      this.#inFlight = undefined;
    }
    this.#running = false;
    this.#notifyIdle();
  }

  #notifyIdle(): void {
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  #closedBefore(what: string, reason: ZdsError): ZdsError {
    return new ZdsError('ZDS_CLOSED', `zds connection closed before ${what} was sent: ${reason.message}`, {
      cause: reason,
      retryable: true,
    });
  }

  #rejectQueued(reason: ZdsError): void {
    for (const job of this.#jobs.splice(0)) job.reject(this.#closedBefore(job.what, reason));
  }

  /** Writes one request and waits for its ack; any failure but a NACK closes the connection. */
  async #exchange(body: ZdsRequestBody, fds: readonly number[]): Promise<void> {
    const bytes = encodeRequest(body);
    const what = describeRequest(body);
    const ack = this.#channel.next(this.#options.ackTimeoutMs, `ack for ${what}`);
    // Observed below; this keeps a rejection while the write is pending from going unhandled.
    ack.catch(() => {});
    this.#sent++;
    let answer: { error: string };
    try {
      await this.#channel.send(bytes, fds);
      const d = await ack;
      answer = decodeResponse(d.data, d.fds);
    } catch (err) {
      const zerr = asZdsError(err);
      this.close(zerr);
      throw zerr;
    }
    this.#lastAckAt = new Date();
    if (answer.error !== '') {
      this.#nacked++;
      throw new ZdsError('ZDS_NACK', `ztunnel rejected ${what}: ${answer.error}`);
    }
    this.#acked++;
  }

  async #handshake(): Promise<void> {
    try {
      const d = await this.#channel.next(this.#options.helloTimeoutMs, 'hello from ztunnel');
      this.#helloVersion = decodeHello(d.data, d.fds).version;
    } catch (err) {
      const zerr = asZdsError(err);
      this.close(zerr);
      throw zerr;
    }
    this.#log.info({ version: this.#helloVersion }, 'received hello from ztunnel');
    this.#phase = 'snapshot';

    let entries: ZdsSnapshotEntry[];
    try {
      entries = [...(await this.#options.snapshot())];
    } catch (err) {
      const zerr = new ZdsError('ZDS_SNAPSHOT', `snapshot provider failed: ${errorMessage(err)}`, {
        cause: err,
      });
      this.close(zerr);
      throw zerr;
    }
    for (const entry of entries) await this.#sendSnapshotEntry(entry);

    try {
      await this.#exchange({ kind: 'snapshotSent' }, []);
    } catch (err) {
      if (!(err instanceof ZdsError) || err.code !== 'ZDS_NACK') throw err;
      this.#log.error({ ackErr: err.message }, 'snapshot-sent: got ack error');
    }
    this.#phase = 'ready';
    this.#log.debug({ ...this.#snapshot }, 'snapshot sent to ztunnel');
    this.#options.onSnapshotSent?.(this);
  }

  async #sendSnapshotEntry(entry: ZdsSnapshotEntry): Promise<void> {
    const log = this.#log.child({ uid: entry.uid });
    const { fd, owned } = this.#snapshotNetns(entry, log);
    try {
      if (fd === undefined) {
        log.info('netns is not available for pod, sending keep to ztunnel');
        this.#snapshot.keeps++;
        await this.#exchange({ kind: 'keep', uid: entry.uid }, []);
      } else {
        log.info('sending pod to ztunnel as part of snapshot');
        this.#snapshot.adds++;
        await this.#exchange({ kind: 'add', uid: entry.uid, info: entry.info }, [fd]);
      }
    } catch (err) {
      // Upstream logs a NACKed snapshot entry and goes on; an entry that cannot even be encoded is
      // skipped. Anything else has closed the connection and ends the snapshot.
      if (err instanceof ZdsError && err.code === 'ZDS_NACK') {
        this.#snapshot.nacks++;
        log.error({ ackErr: err.message }, 'snapshot entry: got ack error');
      } else if (this.#channel.closeReason === undefined) {
        log.error({ err }, 'snapshot entry skipped');
      } else {
        throw err;
      }
    } finally {
      if (owned && fd !== undefined) closeFds([fd]);
    }
  }

  /** The fd to send for a snapshot entry, and whether this connection opened it (and must close it). */
  #snapshotNetns(entry: ZdsSnapshotEntry, log: Logger): { fd: number | undefined; owned: boolean } {
    const netns = entry.netns;
    if (netns === undefined) return { fd: undefined, owned: false };
    if (typeof netns === 'string') {
      try {
        return { fd: openNetns(netns), owned: true };
      } catch (err) {
        log.warn({ netns, err: errorMessage(err) }, 'cannot open pod netns');
        return { fd: undefined, owned: false };
      }
    }
    let ok = false;
    try {
      ok = isNetns(netns);
    } catch (err) {
      log.warn({ fd: netns, err: errorMessage(err) }, 'cannot inspect pod netns fd');
    }
    if (!ok) log.error({ fd: netns }, 'snapshot netns fd is not a network namespace');
    return { fd: ok ? netns : undefined, owned: false };
  }

  #checkLiveness(): void {
    this.#lastLivenessCheckAt = new Date();
    if (this.#channel.isClosed && this.#channel.closeReason === undefined) {
      this.close(new ZdsError('ZDS_CLOSED', 'zds socket closed under the connection (liveness check)'));
    }
  }
}

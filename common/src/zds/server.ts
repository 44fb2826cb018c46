import { EventEmitter } from 'node:events';
import { lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { isNetns, SeqpacketServer, type SeqpacketSocket } from '@ambient/native';
import { errorMessage } from '../errors.ts';
import type { Component, StopContext } from '../lifecycle.ts';
import { type Logger, logger } from '../log.ts';
import { ZdsError } from './errors.ts';
import { ZDS_DEFAULT_SOCKET_PATH, ZDS_SOCKET_OPTIONS, type ZdsWorkloadInfo } from './protocol.ts';
import {
  type ZdsConnectionState,
  ZdsServerConnection,
  type ZdsSnapshotProvider,
} from './server-connection.ts';

/** Configuration of the node agent's ZDS server; durations in milliseconds. */
export interface ZdsServerOptions {
  /** Socket path; default `/var/run/ztunnel/ztunnel.sock`. Its directory is created on start. */
  readonly path?: string;
  /** The pods to send as the snapshot to each new connection. */
  readonly snapshot: ZdsSnapshotProvider;
  /** How long a new connection has to send its hello. Default 5000 (upstream `readWriteDeadline`). */
  readonly helloTimeoutMs?: number;
  /** How long ztunnel has to answer one request. Default 5000. */
  readonly ackTimeoutMs?: number;
  /** Period of the liveness check on each connection. Default 5000. */
  readonly livenessIntervalMs?: number;
  /** Connections accepted per second; more are closed at once. Default 5 (upstream's rate limit). */
  readonly maxConnectionsPerSecond?: number;
  readonly log?: Logger;
}

export interface ZdsServerEvents {
  /** A ztunnel connected (before its hello). */
  connect: [state: ZdsConnectionState];
  /** A connection's snapshot was sent and its SnapshotSent answered. */
  snapshot: [state: ZdsConnectionState];
  /** A connection ended; `reason.code` tells why (`ZDS_CLOSED` for a plain disconnect). */
  disconnect: [state: ZdsConnectionState, reason: ZdsError];
  /** A connection was refused (rate limit, or the server is stopping) and closed at once. */
  rejected: [reason: ZdsError];
}

function positive(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v <= 0) throw new TypeError(`${name} ${v} is not a positive number`);
  return v;
}

/**
 * The istio-cni node agent's ZDS server (`istio:cni/pkg/nodeagent/ztunnelserver.go`): ztunnels
 * connect over SOCK_SEQPACKET, say hello, get the snapshot of enrolled pods, then incremental
 * updates. Adds go to the newest connection only (the new ztunnel during an upgrade), deletes to
 * all of them.
 */
export class ZdsServer extends EventEmitter<ZdsServerEvents> implements Component {
  readonly name = 'zds-server';
  /** The socket path served. */
  readonly path: string;
  readonly #snapshot: ZdsSnapshotProvider;
  readonly #helloTimeoutMs: number;
  readonly #ackTimeoutMs: number;
  readonly #livenessIntervalMs: number;
  readonly #maxPerSecond: number;
  readonly #log: Logger;
  /** Live connections, oldest first (Map keeps insertion order). */
  readonly #conns = new Map<string, ZdsServerConnection>();
  /** Accept times within the last second, for the rate limit. */
  #recentAccepts: number[] = [];
  #listener: SeqpacketServer | undefined;
  #stopping = false;

  constructor(options: ZdsServerOptions) {
    super();
    this.path = options.path ?? ZDS_DEFAULT_SOCKET_PATH;
    this.#snapshot = options.snapshot;
    this.#helloTimeoutMs = positive(options.helloTimeoutMs, 5000, 'helloTimeoutMs');
    this.#ackTimeoutMs = positive(options.ackTimeoutMs, 5000, 'ackTimeoutMs');
    this.#livenessIntervalMs = positive(options.livenessIntervalMs, 5000, 'livenessIntervalMs');
    this.#maxPerSecond = positive(options.maxConnectionsPerSecond, 5, 'maxConnectionsPerSecond');
    this.#log = options.log ?? logger('zds');
  }

  /** Connected ztunnels, including those still in hello or snapshot. */
  get connectionCount(): number {
    return this.#conns.size;
  }

  /** True between start() and stop(). */
  get listening(): boolean {
    return this.#listener !== undefined;
  }

  /** Every connection's state, oldest first. */
  connections(): ZdsConnectionState[] {
    return [...this.#conns.values()].map((c) => c.state());
  }

  /**
   * Listens at {@link path}: creates its directory and removes a socket left by a previous run (a
   * non-socket file there is an error, not something to delete). Throws ZdsError `ZDS_LISTEN`.
   */
  start(): void {
    if (this.#listener) return;
    this.#stopping = false;
    try {
      mkdirSync(dirname(this.path), { recursive: true });
      removeStaleSocket(this.path);
      const listener = new SeqpacketServer(ZDS_SOCKET_OPTIONS);
      listener.on('connection', (socket) => this.#onConnection(socket));
      listener.on('error', (err) =>
        this.#log.error({ err: err.message }, 'failed to accept ztunnel connection'),
      );
      listener.listen(this.path);
      this.#listener = listener;
    } catch (err) {
      throw new ZdsError('ZDS_LISTEN', `cannot listen for zds at ${this.path}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    this.#log.info({ path: this.path }, 'zds server listening');
  }

  /**
   * Stops accepting, lets requests in flight finish until `ctx.force` (at once without a context or
   * in immediate mode), then closes every connection and removes the socket file.
   */
  async stop(ctx?: StopContext): Promise<void> {
    if (!this.#listener) return;
    this.#stopping = true;
    this.#listener.close();
    this.#listener = undefined;
    const conns = [...this.#conns.values()];
    if (ctx && ctx.mode === 'graceful' && !ctx.force.aborted) {
      // A connection still in hello has nothing in flight worth waiting for.
      for (const c of conns) if (c.phase === 'hello') c.close(stoppedError());
      const forced = new Promise<void>((resolve) => ctx.force.addEventListener('abort', () => resolve()));
      await Promise.race([Promise.all(conns.map((c) => c.whenIdle())), forced]);
    }
    for (const c of conns) c.close(stoppedError());
    await Promise.all(conns.map((c) => c.closed));
    this.#log.info('zds server stopped');
  }

  /**
   * Sends AddWorkload for a pod to the newest connection and resolves when ztunnel ACKs it. Keep
   * `netnsFd` open until the promise settles (the request may wait behind others). Rejects ZdsError:
   * `ZDS_NACK` with ztunnel's text, `ZDS_TIMEOUT`, `ZDS_CLOSED`, `ZDS_NO_CONNECTION`, `ZDS_NOT_NETNS`
   * when `netnsFd` is not a network namespace, `ZDS_PROTOCOL` when the request is invalid (empty uid,
   * too long).
   */
  async podAdded(uid: string, info: ZdsWorkloadInfo, netnsFd: number): Promise<void> {
    if (!this.#listener) throw stoppedError();
    let netns = false;
    try {
      netns = isNetns(netnsFd);
    } catch (err) {
      throw new ZdsError('ZDS_NOT_NETNS', `netns fd ${netnsFd} for pod ${uid} is not open`, { cause: err });
    }
    if (!netns)
      throw new ZdsError('ZDS_NOT_NETNS', `fd ${netnsFd} for pod ${uid} is not a network namespace`);
    const conn = [...this.#conns.values()].at(-1);
    if (!conn) {
      throw new ZdsError('ZDS_NO_CONNECTION', `no ztunnel connection to send pod ${uid} to`, {
        retryable: true,
      });
    }
    this.#log.info(
      {
        uid,
        name: info.name,
        namespace: info.namespace,
        serviceAccount: info.serviceAccount,
        conn_uuid: conn.id,
      },
      'sending pod add to ztunnel',
    );
    await conn.request({ kind: 'add', uid, info }, [netnsFd]);
  }

  /**
   * Sends DelWorkload to every connection (so an old ztunnel still draining also lets the pod go) and
   * resolves when all answered. With no connection it resolves at once, as upstream. When any
   * connection failed it rejects with a ZdsError whose code is the first failure's, naming all.
   */
  async podDeleted(uid: string): Promise<void> {
    if (!this.#listener) throw stoppedError();
    const conns = [...this.#conns.values()];
    this.#log.debug({ uid, connections: conns.length }, 'sending delete pod to all ztunnels');
    const results = await Promise.allSettled(conns.map((c) => c.request({ kind: 'del', uid })));
    const failures = results.flatMap((r, i) =>
      r.status === 'rejected' ? [{ conn: conns[i]?.id, err: r.reason as unknown }] : [],
    );
    const first = failures[0];
    if (!first) return;
    const code = first.err instanceof ZdsError ? first.err.code : 'ZDS_CLOSED';
    throw new ZdsError(
      code,
      `delete of pod ${uid} failed on ${failures.length} of ${conns.length} ztunnel connections: ${failures
        .map((f) => `${f.conn}: ${errorMessage(f.err)}`)
        .join('; ')}`,
      { cause: failures.length === 1 ? first.err : new AggregateError(failures.map((f) => f.err)) },
    );
  }

  #onConnection(socket: SeqpacketSocket): void {
    if (this.#stopping) {
      socket.close();
      this.emit('rejected', stoppedError());
      return;
    }
    const now = Date.now();
    this.#recentAccepts = this.#recentAccepts.filter((t) => now - t < 1000);
    if (this.#recentAccepts.length >= this.#maxPerSecond) {
      // Upstream waits on a token bucket before accept(); with the accept loop in the addon the
      // excess is closed instead, and ztunnel retries with backoff.
      socket.close();
      const err = new ZdsError(
        'ZDS_CLOSED',
        `ztunnel connection refused: more than ${this.#maxPerSecond} connections in one second`,
        { retryable: true },
      );
      this.#log.warn(err.message);
      this.emit('rejected', err);
      return;
    }
    this.#recentAccepts.push(now);

    const conn = new ZdsServerConnection(socket, {
      helloTimeoutMs: this.#helloTimeoutMs,
      ackTimeoutMs: this.#ackTimeoutMs,
      livenessIntervalMs: this.#livenessIntervalMs,
      snapshot: this.#snapshot,
      log: this.#log,
      onSnapshotSent: (c) => this.emit('snapshot', c.state()),
    });
    this.#conns.set(conn.id, conn);
    this.#log.info({ conn_uuid: conn.id, total: this.#conns.size }, 'new ztunnel connected');
    void conn.closed.then((reason) => {
      this.#conns.delete(conn.id);
      this.#log.info(
        { conn_uuid: conn.id, total: this.#conns.size, reason: reason.message, code: reason.code },
        'ztunnel disconnected',
      );
      this.emit('disconnect', conn.state(), reason);
    });
    this.emit('connect', conn.state());
    conn.start().catch((err: unknown) => {
      this.#log.error({ conn_uuid: conn.id, err: errorMessage(err) }, 'failed to handle ztunnel connection');
    });
  }
}

function stoppedError(): ZdsError {
  return new ZdsError('ZDS_CLOSED', 'zds server is not running');
}

/** Removes a socket left at `path` by a previous run; refuses to remove anything that is not a socket. */
function removeStaleSocket(path: string): void {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket`);
  unlinkSync(path);
}

import { EventEmitter } from 'node:events';
import { SeqpacketSocket } from '@ambient/native';
import { errorMessage } from '../errors.ts';
import type { Component, Readiness, StopContext } from '../lifecycle.ts';
import { type Logger, logger } from '../log.ts';
import { ZdsChannel, type ZdsDatagram } from './channel.ts';
import { ZdsError } from './errors.ts';
import {
  decodeRequest,
  describeRequest,
  encodeAck,
  encodeHello,
  ZDS_DEFAULT_SOCKET_PATH,
  ZDS_SOCKET_OPTIONS,
  type ZdsReceivedRequest,
  type ZdsWorkloadInfo,
} from './protocol.ts';
import { type ZdsSnapshot, ZdsSnapshotTracker } from './snapshot.ts';

/**
 * What ztunnel does with each request. A handler that throws makes the client NACK with the error's
 * message and stay connected (upstream's proxy-start failure, retried by the caller); throwing a
 * ZdsError with code `ZDS_PROTOCOL` NACKs and drops the connection instead.
 */
export interface ZdsClientHandler {
  /**
   * Start (or replace, when the netns differs) the proxy of a pod. `netnsFd` has been checked to be
   * a network namespace; the handler owns it from this call on, also when it throws (keep it to
   * retry the proxy, as ztunnel does every 5 s, or close it with `closeFd`).
   */
  onAdd(uid: string, info: ZdsWorkloadInfo, netnsFd: number): void | Promise<void>;
  /** Snapshot only: the node agent cannot open the pod's netns, but the pod exists; keep its proxy. */
  onKeep?(uid: string): void | Promise<void>;
  /** The pod is gone: drain its proxy now. */
  onDel(uid: string): void | Promise<void>;
  /**
   * The snapshot is complete: drain every proxy whose uid `snapshot.stale(running)` returns (pods
   * deleted while disconnected). The client is ready once this returns.
   */
  onSnapshotSent(snapshot: ZdsSnapshot): void | Promise<void>;
}

/** Configuration of ztunnel's ZDS client; durations in milliseconds. */
export interface ZdsClientOptions {
  /** Socket path; default `/var/run/ztunnel/ztunnel.sock` (ztunnel `INPOD_UDS`). */
  readonly path?: string;
  readonly handler: ZdsClientHandler;
  /** First reconnect delay; doubles per failure. Default 10. */
  readonly initialBackoffMs?: number;
  /** Reconnect delay cap. Default 15000. */
  readonly maxBackoffMs?: number;
  /** Registers a pending task here while disconnected or before the snapshot is complete. */
  readonly readiness?: Readiness;
  /** The task's name. Default `workload proxy manager` (ztunnel's). */
  readonly readinessTask?: string;
  readonly log?: Logger;
}

/** The client's state, for `/debug` dumps and tests. */
export interface ZdsClientState {
  readonly connected: boolean;
  readonly ready: boolean;
  readonly snapshotReceived: boolean;
  /** Connections established (hello sent), and connect attempts that failed. */
  readonly connects: number;
  readonly failedConnects: number;
  /** Delay before the next reconnect after a failure. */
  readonly backoffMs: number;
  /** Requests received, and how many were NACKed. */
  readonly requests: number;
  readonly nacks: number;
  readonly lastError: string | undefined;
}

export interface ZdsClientEvents {
  /** Connected and sent the hello. */
  connect: [];
  /** The snapshot was handled: ready. */
  ready: [snapshot: ZdsSnapshot];
  /** A request was NACKed (`error.code` `ZDS_PROTOCOL`/`ZDS_NOT_NETNS` means the connection drops too). */
  nack: [request: string, error: Error];
  /** The connection ended; the client reconnects unless stopped. */
  disconnect: [reason: ZdsError];
}

function positive(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v <= 0) throw new TypeError(`${name} ${v} is not a positive number`);
  return v;
}

/** Waits `ms`, or less when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    if (signal.aborted) done();
  });
}

/** Errors that make the client drop the connection after NACKing. */
function dropsConnection(err: unknown): err is ZdsError {
  return err instanceof ZdsError && (err.code === 'ZDS_PROTOCOL' || err.code === 'ZDS_NOT_NETNS');
}

/**
 * ztunnel's side of ZDS (`ztunnel:src/inpod/workloadmanager.rs`, `protocol.rs`): connects with
 * backoff, says hello, and answers every request with exactly one Ack, in order. Tracks the snapshot
 * of each connection so the caller can drop proxies of pods deleted while it was disconnected, and
 * is ready only while connected with the snapshot handled.
 */
export class ZdsClient extends EventEmitter<ZdsClientEvents> implements Component {
  readonly name = 'zds-client';
  /** The socket path connected to. */
  readonly path: string;
  readonly #handler: ZdsClientHandler;
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #readiness: Readiness | undefined;
  readonly #readinessTask: string;
  readonly #log: Logger;
  readonly #tracker = new ZdsSnapshotTracker();
  #abort: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #readinessDone: (() => void) | undefined;
  #connected = false;
  #ready = false;
  #connects = 0;
  #failedConnects = 0;
  #backoffMs: number;
  #requests = 0;
  #nacks = 0;
  #lastError: string | undefined;

  constructor(options: ZdsClientOptions) {
    super();
    this.path = options.path ?? ZDS_DEFAULT_SOCKET_PATH;
    this.#handler = options.handler;
    this.#initialBackoffMs = positive(options.initialBackoffMs, 10, 'initialBackoffMs');
    this.#maxBackoffMs = positive(options.maxBackoffMs, 15_000, 'maxBackoffMs');
    this.#backoffMs = this.#initialBackoffMs;
    this.#readiness = options.readiness;
    this.#readinessTask = options.readinessTask ?? 'workload proxy manager';
    this.#log = options.log ?? logger('zds');
  }

  /** Connected, with the hello sent. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Connected and the current connection's snapshot handled. */
  get ready(): boolean {
    return this.#ready;
  }

  state(): ZdsClientState {
    return {
      connected: this.#connected,
      ready: this.#ready,
      snapshotReceived: this.#tracker.received,
      connects: this.#connects,
      failedConnects: this.#failedConnects,
      backoffMs: this.#backoffMs,
      requests: this.#requests,
      nacks: this.#nacks,
      lastError: this.#lastError,
    };
  }

  /** Starts connecting in the background; readiness follows the connection. */
  start(): void {
    if (this.#loop) return;
    this.#notReady();
    const abort = new AbortController();
    this.#abort = abort;
    this.#loop = this.#run(abort.signal);
  }

  /**
   * Closes the connection and stops reconnecting. A handler call in progress is awaited until
   * `ctx.force` (not at all without a context). The client stays not ready.
   */
  async stop(ctx?: StopContext): Promise<void> {
    const loop = this.#loop;
    if (!loop) return;
    this.#abort?.abort();
    this.#loop = undefined;
    this.#notReady();
    if (ctx && !ctx.force.aborted) {
      const forced = new Promise<void>((resolve) => ctx.force.addEventListener('abort', () => resolve()));
      await Promise.race([loop, forced]);
    }
  }

  async #run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let socket: SeqpacketSocket;
      try {
        socket = SeqpacketSocket.connect(this.path, ZDS_SOCKET_OPTIONS);
      } catch (err) {
        this.#failedConnects++;
        this.#lastError = errorMessage(err);
        this.#log.warn(
          { path: this.path, err: this.#lastError, retryInMs: this.#backoffMs },
          'failed to connect to zds server; retrying',
        );
        await this.#backoff(signal);
        continue;
      }
      const { reason, snapshotReceived } = await this.#serve(socket, signal);
      this.#notReady();
      if (signal.aborted) {
        this.emit('disconnect', reason);
        break;
      }
      this.#lastError = reason.message;
      this.#log.info({ reason: reason.message, code: reason.code }, 'zds connection ended');
      this.emit('disconnect', reason);
      if (snapshotReceived) this.#backoffMs = this.#initialBackoffMs;
      // A node agent that restarts after a full sync gets an immediate reconnect (as upstream);
      // a connection that failed, or ended before its snapshot, waits so a broken peer is no hot loop.
      if (!snapshotReceived || reason.code !== 'ZDS_CLOSED') await this.#backoff(signal);
    }
  }

  async #backoff(signal: AbortSignal): Promise<void> {
    await sleep(this.#backoffMs, signal);
    this.#backoffMs = Math.min(this.#backoffMs * 2, this.#maxBackoffMs);
  }

  /** Runs one connection to its end; resolves with why it ended. */
  async #serve(
    socket: SeqpacketSocket,
    signal: AbortSignal,
  ): Promise<{ reason: ZdsError; snapshotReceived: boolean }> {
    const channel = new ZdsChannel(socket);
    const onAbort = (): void => channel.close(new ZdsError('ZDS_CLOSED', 'zds client stopped'));
    signal.addEventListener('abort', onAbort, { once: true });
    this.#tracker.reset();
    try {
      await channel.send(encodeHello());
      this.#connected = true;
      this.#connects++;
      this.#log.info({ path: this.path }, 'connected to zds server, hello sent');
      this.emit('connect');
      for (;;) {
        const d = await channel.next(undefined, 'workload request');
        await this.#handle(channel, d);
      }
    } catch (err) {
      // The channel closed (peer, protocol error, stop) or the hello could not be written.
      if (err instanceof ZdsError) channel.close(err);
      else channel.close(new ZdsError('ZDS_CLOSED', errorMessage(err), { cause: err }));
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.#connected = false;
    }
    return { reason: await channel.closed, snapshotReceived: this.#tracker.received };
  }

  /** Handles one request and writes its one Ack. */
  async #handle(channel: ZdsChannel, d: ZdsDatagram): Promise<void> {
    this.#requests++;
    let req: ZdsReceivedRequest;
    try {
      req = decodeRequest(d.data, d.fds);
    } catch (err) {
      await this.#nackAndDrop(channel, 'invalid request', err);
      return;
    }
    const what = describeRequest(req);
    try {
      await this.#dispatch(req);
    } catch (err) {
      if (dropsConnection(err)) {
        await this.#nackAndDrop(channel, what, err);
        return;
      }
      this.#nacks++;
      this.#log.error({ request: what, err: errorMessage(err) }, 'failed to process request; nack');
      this.emit('nack', what, err instanceof Error ? err : new Error(errorMessage(err)));
      await this.#reply(channel, errorMessage(err));
      return;
    }
    await this.#reply(channel, '');
  }

  async #dispatch(req: ZdsReceivedRequest): Promise<void> {
    switch (req.kind) {
      case 'add':
        this.#tracker.add(req.uid);
        this.#log.info({ uid: req.uid, ...req.info }, 'pod received netns, starting proxy');
        await this.#handler.onAdd(req.uid, req.info, req.netnsFd);
        return;
      case 'keep':
        this.#tracker.keep(req.uid);
        await this.#handler.onKeep?.(req.uid);
        return;
      case 'del':
        this.#tracker.del(req.uid);
        this.#log.info({ uid: req.uid }, 'pod delete request, draining proxy');
        await this.#handler.onDel(req.uid);
        return;
      case 'snapshotSent': {
        const snapshot = this.#tracker.finish();
        this.#log.info({ added: snapshot.added.size, kept: snapshot.kept.size }, 'snapshot received');
        await this.#handler.onSnapshotSent(snapshot);
        this.#markReady();
        this.emit('ready', snapshot);
        return;
      }
    }
  }

  async #reply(channel: ZdsChannel, error: string): Promise<void> {
    try {
      await channel.send(encodeAck(error));
    } catch (err) {
      channel.close(err instanceof ZdsError ? err : undefined);
    }
  }

  /** Upstream's "other errors": NACK with the reason, then drop the connection to reconnect. */
  async #nackAndDrop(channel: ZdsChannel, what: string, err: unknown): Promise<void> {
    const zerr =
      err instanceof ZdsError ? err : new ZdsError('ZDS_PROTOCOL', errorMessage(err), { cause: err });
    this.#nacks++;
    this.#log.error(
      { request: what, err: zerr.message, code: zerr.code },
      'zds protocol error; nack and reconnect',
    );
    this.emit('nack', what, zerr);
    await this.#reply(channel, zerr.message);
    channel.close(zerr);
  }

  #markReady(): void {
    this.#ready = true;
    const done = this.#readinessDone;
    this.#readinessDone = undefined;
    done?.();
  }

  #notReady(): void {
    this.#ready = false;
    if (this.#readiness && !this.#readinessDone) {
      this.#readinessDone = this.#readiness.register(this.#readinessTask);
    }
  }
}

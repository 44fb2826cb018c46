import type * as http2 from 'node:http2';
import { formatIdentity, type Identity } from '../identity/identity.ts';
import type { TlsCredentials } from '../tls/secure-context.ts';
import { formatAuthority } from './authority.ts';
import { connectHbone, type HboneConnectRequest, type HboneDialer, openTunnel } from './client.ts';
import { HboneError } from './errors.ts';
import { type HboneSettings, resolveHboneSettings } from './settings.ts';
import type { HboneTunnel } from './tunnel.ts';

/**
 * What makes two HBONE connections interchangeable (ztunnel `WorkloadKey`): the same source
 * identity and IP, the same destination socket address, and the same set of acceptable
 * destination identities. Different source identities never share a connection.
 */
export interface WorkloadKey {
  readonly srcIdentity: Identity;
  /** Any of these may answer; order does not matter. */
  readonly dstIdentities: readonly Identity[];
  readonly srcIp: string;
  /** The HBONE endpoint: pod or waypoint IP, port 15008. */
  readonly dst: { readonly address: string; readonly port: number };
}

/** A stable string form of a {@link WorkloadKey}; the destination identities are sorted. */
export function workloadKeyString(key: WorkloadKey): string {
  const dst = key.dstIdentities.map(formatIdentity).sort().join(',');
  return `${formatIdentity(key.srcIdentity)}|${dst}|${key.srcIp}|${formatAuthority(key.dst)}`;
}

export interface HbonePoolOptions {
  /** The client certificate for a source identity (the cert manager's fetch). */
  readonly credentials: (srcIdentity: Identity) => TlsCredentials | Promise<TlsCredentials>;
  /** How TLS connections are opened; default `tls.connect`. */
  readonly dial?: HboneDialer;
  readonly settings?: Partial<HboneSettings>;
  /** Streams per connection before another is opened (ztunnel 100), capped by the peer's limit. */
  readonly maxStreamsPerConnection?: number;
  /** A connection with no streams for this long is closed (ztunnel 5 min). */
  readonly idleTimeoutMs?: number;
  /** Whether to bind the source IP of the key when dialling (default true). */
  readonly bindSourceIp?: boolean;
}

/** Counters for tests, metrics and `/config_dump`. */
export interface HbonePoolStats {
  /** Connections successfully established. */
  readonly connectionsCreated: number;
  /** Streams opened on a connection that had carried a stream before. */
  readonly connectionsReused: number;
  /** Connections currently held (including ones draining after GOAWAY). */
  readonly connectionsOpen: number;
  readonly dialsFailed: number;
  readonly goawaysReceived: number;
  readonly idleReleased: number;
  readonly streamsOpened: number;
  readonly streamsActive: number;
}

interface PooledConnection {
  readonly key: string;
  readonly session: http2.ClientHttp2Session;
  readonly peerIdentity: Identity;
  /** Streams reserved or open. */
  active: number;
  /** Streams ever opened on it. */
  used: number;
  /** GOAWAY received or closing: no new streams. */
  draining: boolean;
  idleTimer: NodeJS.Timeout | undefined;
}

interface KeyEntry {
  readonly connections: PooledConnection[];
  dialing: Promise<PooledConnection> | undefined;
}

const DEFAULT_MAX_STREAMS = 100;
const DEFAULT_IDLE_TIMEOUT_MS = 5 * 60_000;

/**
 * HTTP/2 connection pool for HBONE clients (ztunnel `proxy/pool.rs`). Per {@link WorkloadKey} it
 * keeps connections with spare stream capacity, opens a new one only when all are full, lets at
 * most one dial per key run at a time (concurrent callers wait for it instead of dialling in
 * parallel), drops connections that received GOAWAY or died, and closes ones idle for
 * `idleTimeoutMs`.
 */
export class HbonePool {
  readonly settings: HboneSettings;
  readonly #options: HbonePoolOptions;
  readonly #maxStreams: number;
  readonly #idleTimeoutMs: number;
  readonly #entries = new Map<string, KeyEntry>();
  readonly #all = new Set<PooledConnection>();
  #closed = false;
  #stats = {
    connectionsCreated: 0,
    connectionsReused: 0,
    dialsFailed: 0,
    goawaysReceived: 0,
    idleReleased: 0,
    streamsOpened: 0,
  };

  constructor(options: HbonePoolOptions) {
    this.#options = options;
    this.settings = resolveHboneSettings(options.settings);
    this.#maxStreams = options.maxStreamsPerConnection ?? DEFAULT_MAX_STREAMS;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    if (!Number.isInteger(this.#maxStreams) || this.#maxStreams < 1) {
      throw new RangeError(`maxStreamsPerConnection is ${this.#maxStreams}; it must be a positive integer`);
    }
    if (!Number.isFinite(this.#idleTimeoutMs) || this.#idleTimeoutMs <= 0) {
      throw new RangeError(`idleTimeoutMs is ${this.#idleTimeoutMs}; it must be positive`);
    }
  }

  get stats(): HbonePoolStats {
    let streamsActive = 0;
    for (const c of this.#all) streamsActive += c.active;
    return { ...this.#stats, connectionsOpen: this.#all.size, streamsActive };
  }

  /**
   * Opens a CONNECT tunnel to `request.target` over a pooled connection for `key`. A stream
   * refused because the connection was going away is retried once on another connection.
   */
  async openTunnel(key: WorkloadKey, request: HboneConnectRequest): Promise<HboneTunnel> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.#acquire(key, request.signal);
      let tunnel: HboneTunnel;
      try {
        tunnel = await openTunnel(conn.session, request);
      } catch (err) {
        this.#release(conn);
        // A connection that died under the CONNECT (the peer process was killed) is retried too:
        // no tunnel was handed out, so nothing was sent on it.
        const refused =
          err instanceof HboneError &&
          (err.code === 'HBONE_GOAWAY' ||
            err.code === 'HBONE_SESSION_CLOSED' ||
            (err.code === 'HBONE_STREAM_RESET' && err.retryable));
        if (refused) this.#drain(conn);
        if (refused && attempt === 0) continue;
        throw err;
      }
      tunnel.once('close', () => this.#release(conn));
      return tunnel;
    }
  }

  /** Gracefully closes every connection (streams in flight finish) and refuses new requests. */
  async close(): Promise<void> {
    this.#closed = true;
    const closing = [...this.#all].map(
      (c) =>
        new Promise<void>((resolve) => {
          this.#drain(c);
          if (c.session.destroyed) return resolve();
          c.session.once('close', () => resolve());
          c.session.close();
        }),
    );
    await Promise.all(closing);
  }

  /** Tears every connection down at once. */
  destroy(): void {
    this.#closed = true;
    for (const c of [...this.#all]) {
      this.#remove(c);
      c.session.destroy();
    }
  }

  async #acquire(key: WorkloadKey, signal: AbortSignal | undefined): Promise<PooledConnection> {
    const id = workloadKeyString(key);
    for (;;) {
      if (this.#closed) throw new HboneError('HBONE_CLOSED', 'hbone pool is closed');
      signal?.throwIfAborted();
      let entry = this.#entries.get(id);
      if (entry === undefined) {
        entry = { connections: [], dialing: undefined };
        this.#entries.set(id, entry);
      }
      const conn = this.#pick(entry);
      if (conn !== undefined) {
        this.#reserve(conn);
        return conn;
      }
      if (entry.dialing === undefined) {
        const dialing = this.#dial(id, key, entry);
        entry.dialing = dialing;
        // Whoever dialled, every waiter re-picks once it settles; the entry forgets it first.
        const settled = (): void => {
          if (entry.dialing !== dialing) return;
          entry.dialing = undefined;
          if (entry.connections.length === 0 && this.#entries.get(id) === entry) this.#entries.delete(id);
        };
        dialing.then(settled, settled);
      }
      await entry.dialing;
    }
  }

  #pick(entry: KeyEntry): PooledConnection | undefined {
    for (const c of entry.connections) {
      if (c.draining || c.session.closed || c.session.destroyed) continue;
      if (c.active < this.#capacity(c)) return c;
    }
    return undefined;
  }

  #capacity(c: PooledConnection): number {
    const peer = c.session.remoteSettings.maxConcurrentStreams ?? Number.POSITIVE_INFINITY;
    return Math.min(this.#maxStreams, peer);
  }

  #reserve(c: PooledConnection): void {
    if (c.idleTimer !== undefined) {
      clearTimeout(c.idleTimer);
      c.idleTimer = undefined;
    }
    if (c.used > 0) this.#stats.connectionsReused++;
    c.used++;
    c.active++;
    this.#stats.streamsOpened++;
  }

  #release(c: PooledConnection): void {
    c.active--;
    if (c.active > 0 || !this.#all.has(c)) return;
    if (c.draining) {
      // Node closes a session that received GOAWAY(NO_ERROR) by itself; this covers other codes.
      c.session.close();
      return;
    }
    c.idleTimer = setTimeout(() => {
      c.idleTimer = undefined;
      if (c.active > 0 || !this.#all.has(c)) return;
      this.#stats.idleReleased++;
      this.#remove(c);
      c.session.close();
    }, this.#idleTimeoutMs);
    c.idleTimer.unref();
  }

  async #dial(id: string, key: WorkloadKey, entry: KeyEntry): Promise<PooledConnection> {
    try {
      const credentials = await this.#options.credentials(key.srcIdentity);
      const established = await connectHbone({
        address: key.dst.address,
        port: key.dst.port,
        ...(this.#options.bindSourceIp === false ? {} : { localAddress: key.srcIp }),
        credentials,
        expectedIdentities: key.dstIdentities,
        settings: this.settings,
        ...(this.#options.dial === undefined ? {} : { dial: this.#options.dial }),
      });
      const conn: PooledConnection = {
        key: id,
        session: established.session,
        peerIdentity: established.peerIdentity,
        active: 0,
        used: 0,
        draining: false,
        idleTimer: undefined,
      };
      if (this.#closed) {
        established.session.close();
        throw new HboneError('HBONE_CLOSED', 'hbone pool was closed while dialling');
      }
      this.#stats.connectionsCreated++;
      this.#all.add(conn);
      entry.connections.push(conn);
      const session = established.session;
      session.on('goaway', () => {
        this.#stats.goawaysReceived++;
        this.#drain(conn);
        if (conn.active === 0) session.close();
      });
      session.once('close', () => this.#remove(conn));
      // A failed session is closed and removed through 'close'; streams report the error.
      session.on('error', () => {});
      return conn;
    } catch (err) {
      this.#stats.dialsFailed++;
      throw err;
    }
  }

  /** Takes a connection out of rotation; its open streams carry on. */
  #drain(c: PooledConnection): void {
    c.draining = true;
    const entry = this.#entries.get(c.key);
    if (entry === undefined) return;
    const i = entry.connections.indexOf(c);
    if (i >= 0) entry.connections.splice(i, 1);
    if (entry.connections.length === 0 && entry.dialing === undefined) this.#entries.delete(c.key);
  }

  #remove(c: PooledConnection): void {
    if (c.idleTimer !== undefined) clearTimeout(c.idleTimer);
    c.idleTimer = undefined;
    this.#drain(c);
    this.#all.delete(c);
  }
}

import { formatIdentity } from '@ambient/common/identity';
import { type Logger, logger } from '@ambient/common/log';
import {
  assertRbac,
  type Connection,
  formatSocketAddr,
  type ProxyState,
  type ProxyStateEvents,
  type RbacDecision,
  type Workload,
} from '@ambient/common/model';
import { ProxyError } from './errors.ts';

/** What the connection manager needs to know about a live inbound connection. */
export interface TrackedConnectionInput {
  /** The proxy (pod uid) the connection belongs to; {@link ConnectionManager.closeOwner} uses it. */
  readonly owner: string;
  /** The authorization inputs, checked again on every policy or workload change. */
  readonly connection: Omit<Connection, 'dstWorkload'>;
  /** The destination workload as it was when the connection arrived. */
  readonly dstWorkload: Workload;
  /** Closes the connection; called at most once, with the reason. */
  readonly close: (reason: ProxyError) => void;
}

/** A registered connection: the initial decision and the release for when it ends. */
export interface ConnectionRegistration {
  readonly decision: RbacDecision;
  /** Stops tracking (idempotent); call when the connection ends. A denied registration is already released. */
  release(): void;
}

/** A snapshot of one tracked connection, for `/config_dump`-style debugging. */
export interface TrackedConnectionInfo {
  readonly owner: string;
  readonly src: string;
  readonly dst: string;
  readonly srcIdentity?: string;
  readonly dstWorkload: string;
}

interface Entry extends TrackedConnectionInput {
  closed: boolean;
}

/** Just the subscription side of ProxyStateUpdater. */
export interface ProxyStateEventSource {
  on<E extends keyof ProxyStateEvents>(event: E, listener: (event: ProxyStateEvents[E]) => void): () => void;
}

/**
 * Tracks live inbound connections with their authorization inputs (ztunnel
 * `ConnectionManager` + `PolicyWatcher`, checklist 19). Policies are evaluated when a connection
 * is registered, and again for every tracked connection whenever policies or workloads change;
 * connections no longer allowed are closed with `POLICY_CHANGED`. A pod's connections are closed
 * together when its proxy stops.
 *
 * Registration happens before the first check, in the same synchronous step, so a policy push
 * cannot slip between the check and the tracking.
 */
export class ConnectionManager {
  readonly #state: ProxyState;
  readonly #log: Logger;
  readonly #entries = new Set<Entry>();

  constructor(options: { readonly state: ProxyState; readonly log?: Logger }) {
    this.#state = options.state;
    this.#log = options.log ?? logger('proxy');
  }

  /** Live tracked connections. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Registers a connection and authorizes it. When denied, it is not tracked and the caller
   * refuses it; when allowed, the caller must `release()` it when it ends.
   */
  register(input: TrackedConnectionInput): ConnectionRegistration {
    const entry: Entry = { ...input, closed: false };
    this.#entries.add(entry);
    const decision = assertRbac(this.#state, { ...input.connection, dstWorkload: input.dstWorkload });
    this.#logDecision(entry, decision);
    const release = (): void => {
      this.#entries.delete(entry);
    };
    if (!decision.allowed) release();
    return { decision, release };
  }

  /**
   * Re-evaluates every tracked connection against the current state and closes those now denied.
   * Returns how many were closed.
   */
  recheck(reason = 'policy change'): number {
    let closed = 0;
    for (const entry of [...this.#entries]) {
      if (entry.closed) continue;
      // The latest version of the workload: its selector policies may have changed.
      const dstWorkload = this.#state.findWorkloadByUid(entry.dstWorkload.uid) ?? entry.dstWorkload;
      const decision = assertRbac(this.#state, { ...entry.connection, dstWorkload });
      if (decision.allowed) continue;
      closed++;
      entry.closed = true;
      this.#entries.delete(entry);
      this.#log.info(
        { ...describe(entry), reason, rbac: decision.message },
        'connection closed because of policy change',
      );
      entry.close(
        new ProxyError('POLICY_CHANGED', `connection closed due to policy change: ${decision.message}`),
      );
    }
    return closed;
  }

  /** Closes and forgets every connection of `owner` (its proxy stopped). Returns how many. */
  closeOwner(owner: string, reason: ProxyError): number {
    let closed = 0;
    for (const entry of [...this.#entries]) {
      if (entry.owner !== owner || entry.closed) continue;
      entry.closed = true;
      this.#entries.delete(entry);
      closed++;
      entry.close(reason);
    }
    return closed;
  }

  /** Re-checks on every policy and workload change; returns the unsubscribe function. */
  watch(events: ProxyStateEventSource): () => void {
    const offPolicies = events.on('policiesChanged', () => this.recheck('policy change'));
    const offWorkloads = events.on('workloadsChanged', () => this.recheck('workload change'));
    return () => {
      offPolicies();
      offWorkloads();
    };
  }

  /** The tracked connections, for debugging endpoints. */
  connections(): TrackedConnectionInfo[] {
    return [...this.#entries].map((e) => ({
      owner: e.owner,
      src: e.connection.srcIp,
      dst: formatSocketAddr({ ip: e.connection.dstIp, port: e.connection.dstPort }),
      ...(e.connection.srcIdentity === undefined
        ? {}
        : { srcIdentity: formatIdentity(e.connection.srcIdentity) }),
      dstWorkload: e.dstWorkload.uid,
    }));
  }

  #logDecision(entry: Entry, decision: RbacDecision): void {
    // ztunnel logs authorization decisions in their own scope, at debug unless configured.
    for (const m of decision.dryRunMatches) {
      this.#log.info({ ...describe(entry), policy: m.policy, action: m.action }, 'dry-run policy matched');
    }
    for (const key of decision.missingPolicies) {
      this.#log.warn({ ...describe(entry), policy: key }, 'skipping unknown policy');
    }
    if (this.#log.isLevelEnabled('debug')) {
      this.#log.debug(
        { ...describe(entry), allowed: decision.allowed, rbac: decision.message },
        'authorization',
      );
    }
  }
}

function describe(entry: TrackedConnectionInput): Record<string, unknown> {
  const c = entry.connection;
  return {
    src: c.srcIp,
    dst: formatSocketAddr({ ip: c.dstIp, port: c.dstPort }),
    ...(c.srcIdentity === undefined ? {} : { 'src.identity': formatIdentity(c.srcIdentity) }),
    workload: entry.dstWorkload.uid,
  };
}

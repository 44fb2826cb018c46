import { errorMessage } from '@ambient/common/errors';
import type { Component, Readiness, StopContext } from '@ambient/common/lifecycle';
import { type Logger, logger } from '@ambient/common/log';
import type { ProxyState } from '@ambient/common/model';
import type { ZdsClientHandler, ZdsSnapshot, ZdsWorkloadInfo } from '@ambient/common/zds';
import { closeFd, netnsInode } from '@ambient/native';
import type { Registry } from 'prom-client';
import { InpodError } from '../errors.ts';
import { WorkloadManagerMetrics } from './metrics.ts';

/** One connection a pod's proxy carries, as istioctl `ztunnel-config connections` shows it. */
export interface ProxyConnectionInfo {
  readonly src: string;
  readonly originalDst: string;
  readonly actualDst: string;
  readonly protocol: 'HBONE' | 'TCP';
}

/** The proxy of one enrolled pod, as the manager drives it (the proxy's `WorkloadProxy`). */
export interface ManagedProxy {
  /** Binds the pod's listeners (15001, 15006, 15008) inside its network namespace. */
  start(): Promise<void>;
  /**
   * Closes the listeners at once, then drains the connections until `ctx.force` aborts (at once in
   * immediate mode) and closes what is left.
   */
  stop(ctx: StopContext): Promise<void>;
  /**
   * A repeated Add for the running proxy (the node agent's snapshot after a reconnect): restate
   * anything outside the proxy the agent may have rebuilt meanwhile (the eBPF inbound listener
   * registration). Throws to NACK the Add.
   */
  readd?(): void;
  /** Live connections, for `/config_dump`'s `workloadState`. */
  connections?(): {
    readonly inbound: readonly ProxyConnectionInfo[];
    readonly outbound: readonly ProxyConnectionInfo[];
  };
}

/** What the manager hands to the proxy factory for one pod. */
export interface PodProxyRequest {
  /** Kubernetes pod uid, from ZDS. */
  readonly uid: string;
  readonly info: ZdsWorkloadInfo;
  /** The pod's network namespace; owned by the manager, open until the proxy has stopped. */
  readonly netnsFd: number;
}

/** Builds (without starting) the proxy of one pod. */
export type CreateManagedProxy = (request: PodProxyRequest) => ManagedProxy | Promise<ManagedProxy>;

export interface WorkloadManagerOptions {
  readonly state: ProxyState;
  readonly createProxy: CreateManagedProxy;
  /** Gets one pending task per pod whose proxy failed to start. */
  readonly readiness?: Readiness;
  readonly registry?: Registry;
  readonly log?: Logger;
  /** Retry period of a pod whose proxy failed to start (upstream 5 s, spec §5.3). Default 5000. */
  readonly retryIntervalMs?: number;
}

/** A pod's entry in `/config_dump` `workloadState` (istioctl `WorkloadState`). */
export interface WorkloadStateDump {
  readonly state: 'Up' | 'Pending';
  readonly connections?: {
    readonly inbound: readonly ProxyConnectionInfo[];
    readonly outbound: readonly ProxyConnectionInfo[];
  };
  readonly info: {
    readonly name: string;
    readonly namespace: string;
    readonly trustDomain: string;
    readonly serviceAccount: string;
  };
  /** Why the pod is pending (ours; istioctl ignores it). */
  readonly error?: string;
}

/** One enrolled pod. The entry owns `netnsFd` and closes it once it is discarded. */
interface PodEntry {
  readonly uid: string;
  readonly info: ZdsWorkloadInfo;
  readonly netnsFd: number;
  readonly netnsInode: number;
  /** Aborted when the entry is discarded (deleted, replaced, manager stopping). */
  readonly discarded: AbortController;
  proxy: ManagedProxy | undefined;
  lastError: string | undefined;
  readinessDone: (() => void) | undefined;
}

const IMMEDIATE_GRACE_MS = 1000;

/** A stop context for tearing one pod down now (pod deleted or replaced). */
function immediateStop(): StopContext {
  const force = new AbortController();
  force.abort();
  return { mode: 'immediate', force: force.signal, deadline: Date.now() };
}

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

function podName(info: ZdsWorkloadInfo): string {
  return `${info.namespace}/${info.name}`;
}

/**
 * The in-pod workload manager (`ztunnel:src/inpod/statemanager.rs`): the one owner of the
 * uid → pod proxy map, driven by the ZDS client.
 *
 * - **Add**: build the pod's proxy with the received netns and start it, then ACK, whether or not
 *   xDS has sent the pod's Workload yet (see `#startProxy`). On failure the pod becomes pending:
 *   the Add is NACKed, the connection stays up, and the start is retried every
 *   `retryIntervalMs`. An Add for a running pod with the same netns is a no-op;
 *   with a different netns (a recreated sandbox) the old proxy is torn down and replaced.
 * - **Del**: tear the proxy down at once (immediate drain, reliability checklist 32).
 * - **SnapshotSent**: tear down every proxy the snapshot neither added nor kept (pods deleted while
 *   disconnected, checklist 33).
 * - A new ZDS connection drops the pending pods: the node agent re-sends them in its snapshot.
 *
 * Readiness has one pending task per pending pod; the ZDS client adds its own while disconnected.
 */
export class WorkloadManager implements ZdsClientHandler, Component {
  readonly name = 'workload-manager';
  readonly #state: ProxyState;
  readonly #createProxy: CreateManagedProxy;
  readonly #readiness: Readiness | undefined;
  readonly #metrics: WorkloadManagerMetrics;
  readonly #log: Logger;
  readonly #retryMs: number;
  /** Pods whose proxy runs. */
  readonly #up = new Map<string, PodEntry>();
  /** Pods whose proxy failed to start; retried. */
  readonly #pending = new Map<string, PodEntry>();
  /** Teardowns in progress (deleted or replaced pods), awaited by stop. */
  readonly #teardowns = new Set<Promise<void>>();
  #stopping = false;

  constructor(options: WorkloadManagerOptions) {
    this.#state = options.state;
    this.#createProxy = options.createProxy;
    this.#readiness = options.readiness;
    this.#metrics = new WorkloadManagerMetrics(options.registry);
    this.#log = options.log ?? logger('inpod');
    this.#retryMs = options.retryIntervalMs ?? 5000;
  }

  /** Uids of the pods whose proxy runs. */
  activeUids(): string[] {
    return [...this.#up.keys()].sort();
  }

  /** Uids of the pods whose proxy failed to start and is retried. */
  pendingUids(): string[] {
    return [...this.#pending.keys()].sort();
  }

  start(): void {
    this.#stopping = false;
  }

  /** ZDS Add: start (or replace) a pod's proxy. Throws InpodError, which the ZDS client NACKs. */
  async onAdd(uid: string, info: ZdsWorkloadInfo, netnsFd: number): Promise<void> {
    if (this.#stopping) {
      safeClose(netnsFd);
      throw new InpodError(
        'MANAGER_STOPPING',
        `ztunnel is shutting down; not starting a proxy for pod ${uid}`,
      );
    }
    let inode: number;
    try {
      inode = netnsInode(netnsFd);
    } catch (err) {
      safeClose(netnsFd);
      throw new InpodError(
        'NETNS_INVALID',
        `cannot inspect the netns fd of pod ${uid}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    const running = this.#up.get(uid);
    if (running) {
      if (running.netnsInode === inode) {
        // Idempotent: the snapshot after a reconnect re-sends every pod.
        safeClose(netnsFd);
        this.#log.debug({ uid }, 'pod already has a proxy for this netns');
        running.proxy?.readd?.();
        return;
      }
      this.#log.info({ uid, pod: podName(info) }, 'pod netns changed; replacing its proxy');
      this.#discard(running);
    }
    const pending = this.#pending.get(uid);
    if (pending) this.#discard(pending);

    const entry: PodEntry = {
      uid,
      info,
      netnsFd,
      netnsInode: inode,
      discarded: new AbortController(),
      proxy: undefined,
      lastError: undefined,
      readinessDone: undefined,
    };
    try {
      await this.#startProxy(entry);
    } catch (err) {
      if (entry.discarded.signal.aborted) throw err;
      this.#markPending(entry, err);
      throw err;
    }
  }

  /** ZDS Keep: nothing to do now; the snapshot bookkeeping (in the client) keeps the pod. */
  onKeep(uid: string): void {
    this.#log.debug({ uid }, 'pod kept by the snapshot');
  }

  /** ZDS Del: tear the pod's proxy down at once, closing its listeners and connections. */
  async onDel(uid: string): Promise<void> {
    const pending = this.#pending.get(uid);
    if (pending) this.#discard(pending);
    const running = this.#up.get(uid);
    if (running) await this.#discard(running);
  }

  /** ZDS SnapshotSent: drop every pod the snapshot did not name. */
  async onSnapshotSent(snapshot: ZdsSnapshot): Promise<void> {
    const stale = snapshot.stale(new Set([...this.#up.keys(), ...this.#pending.keys()]));
    if (stale.length > 0)
      this.#log.info({ uids: stale }, 'pods missing from the snapshot; removing their proxies');
    const teardowns: Promise<void>[] = [];
    for (const uid of stale) {
      const entry = this.#up.get(uid) ?? this.#pending.get(uid);
      if (entry) teardowns.push(this.#discard(entry));
    }
    await Promise.all(teardowns);
  }

  /**
   * A new ZDS connection began: pending pods are forgotten, as upstream's `reset_snapshot`; the node
   * agent re-sends every pod it still has.
   */
  connectionReset(): void {
    for (const entry of [...this.#pending.values()]) void this.#discard(entry);
  }

  /** `/config_dump` `workloadState`: uid → state, connections and pod info. */
  dump(): Record<string, WorkloadStateDump> {
    const out: Record<string, WorkloadStateDump> = {};
    const entries = [...this.#up.values(), ...this.#pending.values()].sort((a, b) =>
      a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0,
    );
    for (const e of entries) {
      const up = this.#up.get(e.uid) === e;
      const connections = up ? e.proxy?.connections?.() : undefined;
      out[e.uid] = {
        state: up ? 'Up' : 'Pending',
        ...(connections ? { connections } : {}),
        info: {
          name: e.info.name,
          namespace: e.info.namespace,
          trustDomain: this.#state.findWorkloadByInfo(e.info)?.trustDomain ?? '',
          serviceAccount: e.info.serviceAccount,
        },
        ...(e.lastError === undefined || up ? {} : { error: e.lastError }),
      };
    }
    return out;
  }

  /**
   * Stops every proxy: listeners close at once, connections drain until `ctx.force` (the drain
   * deadline), then are closed. Pending pods stop retrying.
   */
  async stop(ctx: StopContext): Promise<void> {
    this.#stopping = true;
    for (const entry of [...this.#pending.values()]) void this.#discard(entry);
    const running = [...this.#up.values()];
    await Promise.all(running.map((e) => this.#discard(e, ctx)));
    await Promise.all([...this.#teardowns]);
  }

  /**
   * Builds the proxy and starts it. On success the entry is up; throws InpodError otherwise. An
   * entry discarded meanwhile is left alone (its proxy stopped).
   *
   * The pod's Workload is not needed yet, and must not be waited for: in Kubernetes the CNI
   * plugin enrolls a pod during its sandbox setup, before the pod has an IP in the API server, so
   * istiod cannot have sent its Workload. The proxy takes its identity from ZDS and looks the
   * Workload up per connection (`LocalWorkload`), as upstream ztunnel does.
   */
  async #startProxy(entry: PodEntry): Promise<void> {
    const { info, uid } = entry;
    const signal = entry.discarded.signal;
    let proxy: ManagedProxy | undefined;
    try {
      proxy = await this.#createProxy({ uid, info, netnsFd: entry.netnsFd });
      await proxy.start();
    } catch (err) {
      if (proxy) await proxy.stop(immediateStop()).catch(() => {});
      throw new InpodError(
        'PROXY_START_FAILED',
        `failed to start the proxy of pod ${podName(info)} (uid ${uid}): ${errorMessage(err)}`,
        { cause: err, retryable: true },
      );
    }
    if (signal.aborted) {
      // Deleted or replaced while starting: this proxy must not outlive its entry.
      await proxy.stop(immediateStop()).catch(() => {});
      return;
    }
    entry.proxy = proxy;
    entry.lastError = undefined;
    if (this.#pending.get(uid) === entry) this.#pending.delete(uid);
    entry.readinessDone?.();
    entry.readinessDone = undefined;
    this.#up.set(uid, entry);
    this.#metrics.proxiesStarted.inc();
    this.#updateGauges();
    const workload = this.#state.findWorkloadByInfo(info);
    this.#log.info(
      { uid, pod: podName(info), workload: workload?.uid, ips: workload?.workloadIps },
      workload ? 'proxy started for pod' : 'proxy started for pod; its workload is not in xds yet',
    );
  }

  #markPending(entry: PodEntry, err: unknown): void {
    entry.lastError = errorMessage(err);
    this.#pending.set(entry.uid, entry);
    entry.readinessDone ??= this.#readiness?.register(`proxy pending for pod ${podName(entry.info)}`);
    this.#updateGauges();
    this.#log.warn(
      { uid: entry.uid, pod: podName(entry.info), err: entry.lastError, retryInMs: this.#retryMs },
      'failed to start proxy for pod; will retry',
    );
    void this.#retry(entry);
  }

  /** Retries a pending pod until it starts or is discarded. */
  async #retry(entry: PodEntry): Promise<void> {
    const signal = entry.discarded.signal;
    while (!signal.aborted && this.#pending.get(entry.uid) === entry) {
      await sleep(this.#retryMs, signal);
      if (signal.aborted) return;
      try {
        await this.#startProxy(entry);
        return;
      } catch (err) {
        entry.lastError = errorMessage(err);
        this.#log.info(
          { uid: entry.uid, pod: podName(entry.info), err: entry.lastError },
          'retrying pod failed',
        );
      }
    }
  }

  /**
   * Removes an entry (up or pending) and tears its proxy down: immediately unless a graceful
   * context is given. Closes the netns fd once the proxy has stopped.
   */
  #discard(entry: PodEntry, ctx: StopContext = immediateStop()): Promise<void> {
    entry.discarded.abort();
    if (this.#up.get(entry.uid) === entry) this.#up.delete(entry.uid);
    if (this.#pending.get(entry.uid) === entry) this.#pending.delete(entry.uid);
    entry.readinessDone?.();
    entry.readinessDone = undefined;
    this.#updateGauges();
    const proxy = entry.proxy;
    entry.proxy = undefined;
    const teardown = (async () => {
      if (proxy) {
        try {
          await withGrace(proxy.stop(ctx), ctx);
        } catch (err) {
          this.#log.error({ uid: entry.uid, err: errorMessage(err) }, 'proxy stop failed');
        }
        this.#metrics.proxiesStopped.inc();
        this.#log.info({ uid: entry.uid, pod: podName(entry.info), mode: ctx.mode }, 'proxy stopped for pod');
      }
      safeClose(entry.netnsFd);
    })();
    this.#teardowns.add(teardown);
    void teardown.finally(() => this.#teardowns.delete(teardown));
    return teardown;
  }

  #updateGauges(): void {
    this.#metrics.activeProxyCount.set(this.#up.size);
    this.#metrics.pendingProxyCount.set(this.#pending.size);
  }
}

/** Waits for a stop, but no longer than the force signal plus a short grace. */
async function withGrace(stop: Promise<void>, ctx: StopContext): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const overdue = new Promise<void>((resolve) => {
    const arm = (): void => {
      timer = setTimeout(resolve, IMMEDIATE_GRACE_MS);
    };
    if (ctx.force.aborted) arm();
    else ctx.force.addEventListener('abort', arm, { once: true });
  });
  try {
    await Promise.race([stop, overdue]);
  } finally {
    clearTimeout(timer);
  }
}

function safeClose(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // Already closed: nothing holds it any more.
  }
}

import type { Authorization } from './authorization.ts';
import { buildConfigDump, type ConfigDump, type ConfigDumpHooks } from './config-dump.ts';
import { ModelError } from './errors.ts';
import { normalizeIp } from './ip-address.ts';
import { PolicyStore, type ReadonlyPolicyStore } from './policy-store.ts';
import { type Endpoint, type Service, serviceKey } from './service.ts';
import { type ReadonlyServiceStore, ServiceStore } from './service-store.ts';
import type { GatewayDestination, Workload, WorkloadInfo } from './workload.ts';
import { type ReadonlyWorkloadStore, WorkloadStore } from './workload-store.ts';

/** What an IP or hostname resolves to in WDS. */
export type Address =
  | { readonly kind: 'workload'; readonly workload: Workload }
  | { readonly kind: 'service'; readonly service: Service };

export interface ProxyStateOptions {
  /**
   * This ztunnel's node (`NODE_NAME`). Local-pod matching (`findWorkloadByInfo`) only considers
   * workloads on it; when unset every workload is considered.
   */
  readonly localNode?: string;
  readonly dumpHooks?: ConfigDumpHooks;
}

export interface WaitForWorkloadOptions {
  /** Give up after this long and resolve undefined. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

/** The policies that apply to a workload, and the selector names that were not (yet) received. */
export interface WorkloadPolicies {
  readonly policies: readonly Authorization[];
  /** Selector policy keys named by the workload but absent from the store; ztunnel skips these. */
  readonly missing: readonly string[];
}

/** The write side handed to ProxyStateUpdater; obtained through {@link claimStateWriter}. */
export interface ProxyStateWriter {
  readonly workloads: WorkloadStore;
  readonly services: ServiceStore;
  readonly policies: PolicyStore;
  /** Re-checks pending `waitForWorkload` calls; call once after a push is applied. */
  wakeWaiters(): void;
}

interface Waiter {
  readonly info: WorkloadInfo;
  readonly resolve: (w: Workload | undefined) => void;
}

let claimWriter: (state: ProxyState) => ProxyStateWriter;

/**
 * Everything this proxy knows from WDS (ztunnel `ProxyState`): workloads, services with their
 * endpoints, and L4 policies. Reads are synchronous and always see a whole push, because the one
 * writer (ProxyStateUpdater) applies each push without yielding. Returned objects are frozen
 * snapshots; hold them freely.
 */
export class ProxyState {
  readonly #workloads: WorkloadStore;
  readonly #services = new ServiceStore();
  readonly #policies = new PolicyStore();
  readonly #waiters = new Set<Waiter>();
  #dumpHooks: ConfigDumpHooks;
  #writerClaimed = false;

  static {
    claimWriter = (state) => {
      if (state.#writerClaimed) {
        throw new ModelError(
          'WRITER_ALREADY_CLAIMED',
          'this ProxyState already has a ProxyStateUpdater; it must have exactly one writer',
        );
      }
      state.#writerClaimed = true;
      return {
        workloads: state.#workloads,
        services: state.#services,
        policies: state.#policies,
        wakeWaiters: () => state.#wakeWaiters(),
      };
    };
  }

  constructor(options: ProxyStateOptions = {}) {
    this.#workloads = new WorkloadStore(options.localNode);
    this.#dumpHooks = options.dumpHooks ?? {};
  }

  get localNode(): string | undefined {
    return this.#workloads.localNode;
  }

  /** Read-only views of the stores, for iteration and counts. */
  get workloads(): ReadonlyWorkloadStore {
    return this.#workloads;
  }
  get services(): ReadonlyServiceStore {
    return this.#services;
  }
  get policies(): ReadonlyPolicyStore {
    return this.#policies;
  }

  findWorkloadByUid(uid: string): Workload | undefined {
    return this.#workloads.findByUid(uid);
  }

  /** The workload at `network/ip`; `ip` may be in any textual form. */
  findWorkloadByAddress(network: string, ip: string): Workload | undefined {
    const canonical = normalizeIp(ip);
    return canonical === undefined ? undefined : this.#workloads.findByAddress(network, canonical);
  }

  /** A pod on the local node by (namespace, service account, name), as learned from ZDS. */
  findWorkloadByInfo(info: WorkloadInfo): Workload | undefined {
    return this.#workloads.findByInfo(info);
  }

  findWorkloadsByHostname(hostname: string): readonly Workload[] {
    return this.#workloads.findByHostname(hostname);
  }

  /** The service with this `namespace/hostname` key. */
  findServiceByKey(key: string): Service | undefined {
    return this.#services.findByKey(key);
  }

  findService(namespace: string, hostname: string): Service | undefined {
    return this.#services.findByKey(serviceKey(namespace, hostname));
  }

  /** The service owning a VIP on `network`; `ip` may be in any textual form. */
  findServiceByVip(network: string, ip: string): Service | undefined {
    const canonical = normalizeIp(ip);
    return canonical === undefined ? undefined : this.#services.findByVip(network, canonical);
  }

  findServicesByHostname(hostname: string): readonly Service[] {
    return this.#services.findByHostname(hostname);
  }

  /** Namespace match first, then `canonical`, then the first one (HBONE hostname authorities). */
  findBestServiceByHostname(hostname: string, clientNamespace?: string): Service | undefined {
    return this.#services.findBestByHostname(hostname, clientNamespace);
  }

  /** uid → endpoint of a service, whatever their health. */
  serviceEndpoints(service: Service): ReadonlyMap<string, Endpoint> {
    return this.#services.endpoints(service.key);
  }

  /** The services a workload backs and that are known. */
  servicesOfWorkload(workload: Workload): readonly Service[] {
    const out: Service[] = [];
    for (const key of workload.services.keys()) {
      const s = this.#services.findByKey(key);
      if (s !== undefined) out.push(s);
    }
    return out;
  }

  /** A workload IP first, else a service VIP (ztunnel `find_address`). */
  findAddress(network: string, ip: string): Address | undefined {
    const workload = this.findWorkloadByAddress(network, ip);
    if (workload !== undefined) return { kind: 'workload', workload };
    const service = this.findServiceByVip(network, ip);
    return service === undefined ? undefined : { kind: 'service', service };
  }

  /** A service `namespace/hostname` first, else a workload with that hostname in that namespace. */
  findHostname(namespace: string, hostname: string): Address | undefined {
    const service = this.findService(namespace, hostname);
    if (service !== undefined) return { kind: 'service', service };
    const workload = this.#workloads.findByHostname(hostname).find((w) => w.namespace === namespace);
    return workload === undefined ? undefined : { kind: 'workload', workload };
  }

  /** Resolves a GatewayAddress destination (waypoint or network gateway). */
  findDestination(destination: GatewayDestination): Address | undefined {
    return destination.kind === 'hostname'
      ? this.findHostname(destination.namespace, destination.hostname)
      : this.findAddress(destination.address.network, destination.address.ip);
  }

  findPolicy(key: string): Authorization | undefined {
    return this.#policies.get(key);
  }

  /**
   * The policies that apply to a workload (spec §3.5): NAMESPACE-scope ones of its namespace,
   * GLOBAL ones, and the selector ones it names; each once, in that order.
   */
  policiesForWorkload(workload: Workload): WorkloadPolicies {
    const keys = new Set<string>([
      ...this.#policies.keysByNamespace(workload.namespace),
      ...this.#policies.keysByNamespace(''),
      ...workload.authorizationPolicies,
    ]);
    const policies: Authorization[] = [];
    const missing: string[] = [];
    for (const key of keys) {
      const p = this.#policies.get(key);
      if (p === undefined) missing.push(key);
      else policies.push(p);
    }
    return { policies, missing };
  }

  /**
   * Resolves with the local workload matching `info` as soon as the updater applies it, or
   * undefined at the deadline or on abort (ztunnel `wait_for_workload`: ZDS may announce a pod
   * before WDS has sent it).
   */
  waitForWorkload(info: WorkloadInfo, options: WaitForWorkloadOptions): Promise<Workload | undefined> {
    const found = this.#workloads.findByInfo(info);
    if (found !== undefined || options.signal?.aborted === true) return Promise.resolve(found);
    return new Promise((resolve) => {
      const finish = (w: Workload | undefined) => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        this.#waiters.delete(waiter);
        resolve(w);
      };
      const onAbort = () => finish(undefined);
      const waiter: Waiter = { info, resolve: finish };
      const timer = setTimeout(() => finish(undefined), options.timeoutMs);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** Installs ztunnel's `certificates` / `workloadState` sections of the dump. */
  setDumpHooks(hooks: ConfigDumpHooks): void {
    this.#dumpHooks = hooks;
  }

  /** The `/config_dump` document (istioctl `ztunnel-config` shape). */
  toJSON(): ConfigDump {
    return buildConfigDump(this.#workloads, this.#services, this.#policies, this.#dumpHooks);
  }

  #wakeWaiters(): void {
    for (const waiter of [...this.#waiters]) {
      const w = this.#workloads.findByInfo(waiter.info);
      if (w !== undefined) waiter.resolve(w);
    }
  }
}

/**
 * Hands out the write side of a ProxyState, once. Only ProxyStateUpdater calls this; it is not
 * exported from the package's `model` entry point.
 */
export function claimStateWriter(state: ProxyState): ProxyStateWriter {
  return claimWriter(state);
}

import { type Cidr, cidrContains, makeCidr, parseIp } from './ip-address.ts';
import type { Endpoint, Service } from './service.ts';
import { networkAddressKey, type Workload } from './workload.ts';

/** Read access to the services; what ProxyState hands to anything but the updater. */
export interface ReadonlyServiceStore {
  readonly size: number;
  findByKey(key: string): Service | undefined;
  findByVip(network: string, ip: string): Service | undefined;
  findByHostname(hostname: string): readonly Service[];
  findBestByHostname(hostname: string, clientNamespace?: string): Service | undefined;
  endpoints(key: string): ReadonlyMap<string, Endpoint>;
  all(): IterableIterator<Service>;
}

interface CidrVip {
  readonly network: string;
  readonly cidr: Cidr;
  readonly service: Service;
}

const NO_ENDPOINTS: ReadonlyMap<string, Endpoint> = new Map();

/**
 * All services, indexed by `namespace/hostname`, by hostname (ServiceEntry lets several
 * namespaces share one), and by VIP. Endpoints are kept per service key from the workloads
 * that name the service, independently of the Service itself; this is why workloads arriving
 * before their service need no staging, and why a Service update keeps its endpoints.
 *
 * Mutated only through ProxyStateUpdater.
 */
export class ServiceStore implements ReadonlyServiceStore {
  readonly #byKey = new Map<string, Service>();
  readonly #byHostname = new Map<string, Service[]>();
  readonly #byVip = new Map<string, Service>();
  readonly #cidrVips: CidrVip[] = [];
  readonly #endpoints = new Map<string, Map<string, Endpoint>>();

  get size(): number {
    return this.#byKey.size;
  }

  /** Inserts or replaces by key; returns the replaced service. */
  insert(s: Service): Service | undefined {
    const previous = this.remove(s.key);
    this.#byKey.set(s.key, s);
    const same = this.#byHostname.get(s.hostname);
    if (same === undefined) this.#byHostname.set(s.hostname, [s]);
    else same.push(s);
    for (const vip of s.vips) {
      if (vip.prefixLength === undefined) {
        this.#byVip.set(networkAddressKey(vip.network, vip.ip), s);
        continue;
      }
      const bytes = parseIp(vip.ip);
      const cidr = bytes === undefined ? undefined : makeCidr(bytes, vip.prefixLength);
      if (cidr !== undefined) this.#cidrVips.push({ network: vip.network, cidr, service: s });
    }
    return previous;
  }

  /** Removes by key; returns the removed service. Its endpoints stay, owned by their workloads. */
  remove(key: string): Service | undefined {
    const prev = this.#byKey.get(key);
    if (prev === undefined) return undefined;
    this.#byKey.delete(key);
    const same = this.#byHostname.get(prev.hostname)?.filter((s) => s.key !== key) ?? [];
    if (same.length === 0) this.#byHostname.delete(prev.hostname);
    else this.#byHostname.set(prev.hostname, same);
    for (const vip of prev.vips) {
      const vipKey = networkAddressKey(vip.network, vip.ip);
      // Another service may have claimed the VIP since; only drop our own entry.
      if (this.#byVip.get(vipKey) === prev) this.#byVip.delete(vipKey);
    }
    for (let i = this.#cidrVips.length - 1; i >= 0; i--) {
      if (this.#cidrVips[i]?.service === prev) this.#cidrVips.splice(i, 1);
    }
    return prev;
  }

  /** Replaces the endpoints `previous` contributed with those `next` contributes. */
  updateWorkloadEndpoints(next: Workload | undefined, previous: Workload | undefined): void {
    if (previous !== undefined) {
      for (const key of previous.services.keys()) {
        const eps = this.#endpoints.get(key);
        if (eps === undefined) continue;
        eps.delete(previous.uid);
        if (eps.size === 0) this.#endpoints.delete(key);
      }
    }
    if (next === undefined) return;
    for (const [key, port] of next.services) {
      let eps = this.#endpoints.get(key);
      if (eps === undefined) {
        eps = new Map();
        this.#endpoints.set(key, eps);
      }
      eps.set(next.uid, Object.freeze({ workloadUid: next.uid, port, status: next.status }));
    }
  }

  findByKey(key: string): Service | undefined {
    return this.#byKey.get(key);
  }

  /** The service owning `network/ip` exactly, else the longest CIDR VIP containing it. */
  findByVip(network: string, ip: string): Service | undefined {
    const exact = this.#byVip.get(networkAddressKey(network, ip));
    if (exact !== undefined || this.#cidrVips.length === 0) return exact;
    const bytes = parseIp(ip);
    if (bytes === undefined) return undefined;
    let best: CidrVip | undefined;
    for (const c of this.#cidrVips) {
      if (c.network !== network || !cidrContains(c.cidr, bytes)) continue;
      if (best === undefined || c.cidr.prefixLength > best.cidr.prefixLength) best = c;
    }
    return best?.service;
  }

  findByHostname(hostname: string): readonly Service[] {
    return this.#byHostname.get(hostname) ?? [];
  }

  /**
   * The service for a hostname as ztunnel picks it (`ServiceMatch::find_best_match`): one in the
   * client's namespace, else a `canonical` one, else the first seen.
   */
  findBestByHostname(hostname: string, clientNamespace?: string): Service | undefined {
    let canonical: Service | undefined;
    let first: Service | undefined;
    for (const s of this.findByHostname(hostname)) {
      if (clientNamespace !== undefined && s.namespace === clientNamespace) return s;
      if (s.canonical) canonical = s;
      first ??= s;
    }
    return canonical ?? first;
  }

  /** uid → endpoint for the service key; all health states (selection filters). */
  endpoints(key: string): ReadonlyMap<string, Endpoint> {
    return this.#endpoints.get(key) ?? NO_ENDPOINTS;
  }

  all(): IterableIterator<Service> {
    return this.#byKey.values();
  }
}

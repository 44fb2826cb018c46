import { networkAddressKey, type Workload, type WorkloadInfo } from './workload.ts';

/** Read access to the workloads; what ProxyState hands to anything but the updater. */
export interface ReadonlyWorkloadStore {
  readonly localNode: string | undefined;
  readonly size: number;
  findByUid(uid: string): Workload | undefined;
  findByAddress(network: string, ip: string): Workload | undefined;
  findByInfo(info: WorkloadInfo): Workload | undefined;
  findByHostname(hostname: string): readonly Workload[];
  hasNodeLocalIdentity(namespace: string, serviceAccount: string): boolean;
  all(): IterableIterator<Workload>;
}

function identityKey(namespace: string, serviceAccount: string): string {
  return `${namespace}/${serviceAccount}`;
}

// When several workloads claim one address, prefer a Pod (not spoofable through the API the way
// a WorkloadEntry is) and then an HBONE one: it has the richer, mesh-verified context
// (ztunnel `WorkloadByAddr::get`).
function addressRank(w: Workload): number {
  return (w.uid.includes('//Pod/') ? 2 : 0) + (w.protocol === 'HBONE' ? 1 : 0);
}

/**
 * All workloads, indexed by uid, by `network/ip` (host-network workloads excluded, as their IP is
 * the node's), by DNS hostname, and by (namespace, service account) among workloads on the local
 * node (all workloads when no node is configured), which is how ztunnel finds a pod's Workload
 * from ZDS info (spec §3.2).
 *
 * Mutated only through ProxyStateUpdater; insert/remove keep every index consistent.
 */
export class WorkloadStore implements ReadonlyWorkloadStore {
  readonly localNode: string | undefined;
  readonly #byUid = new Map<string, Workload>();
  readonly #byAddress = new Map<string, Workload[]>();
  readonly #byHostname = new Map<string, Set<string>>();
  readonly #nodeLocalByIdentity = new Map<string, Set<string>>();

  constructor(localNode?: string) {
    this.localNode = localNode === '' ? undefined : localNode;
  }

  get size(): number {
    return this.#byUid.size;
  }

  /** Inserts or replaces by uid; returns the replaced workload. */
  insert(w: Workload): Workload | undefined {
    const previous = this.remove(w.uid);
    this.#byUid.set(w.uid, w);
    if (w.networkMode !== 'HostNetwork') {
      for (const ip of w.workloadIps) {
        const key = networkAddressKey(w.network, ip);
        const list = this.#byAddress.get(key);
        if (list === undefined) this.#byAddress.set(key, [w]);
        else list.push(w);
      }
    }
    if (w.hostname !== '') addToSet(this.#byHostname, w.hostname, w.uid);
    if (this.#isLocal(w))
      addToSet(this.#nodeLocalByIdentity, identityKey(w.namespace, w.serviceAccount), w.uid);
    return previous;
  }

  /** Removes by uid; returns the removed workload. */
  remove(uid: string): Workload | undefined {
    const prev = this.#byUid.get(uid);
    if (prev === undefined) return undefined;
    this.#byUid.delete(uid);
    if (prev.networkMode !== 'HostNetwork') {
      for (const ip of prev.workloadIps) {
        const key = networkAddressKey(prev.network, ip);
        const list = this.#byAddress.get(key);
        if (list === undefined) continue;
        const rest = list.filter((w) => w.uid !== uid);
        if (rest.length === 0) this.#byAddress.delete(key);
        else this.#byAddress.set(key, rest);
      }
    }
    if (prev.hostname !== '') removeFromSet(this.#byHostname, prev.hostname, uid);
    removeFromSet(this.#nodeLocalByIdentity, identityKey(prev.namespace, prev.serviceAccount), uid);
    return prev;
  }

  findByUid(uid: string): Workload | undefined {
    return this.#byUid.get(uid);
  }

  /** The workload at `network/ip` (ip canonical); the best-ranked one when several claim it. */
  findByAddress(network: string, ip: string): Workload | undefined {
    const list = this.#byAddress.get(networkAddressKey(network, ip));
    if (list === undefined) return undefined;
    let best = list[0];
    for (const w of list) if (best === undefined || addressRank(w) > addressRank(best)) best = w;
    return best;
  }

  /** The local-node workload with this name, namespace and service account (ztunnel `find_by_info`). */
  findByInfo(info: WorkloadInfo): Workload | undefined {
    const uids = this.#nodeLocalByIdentity.get(identityKey(info.namespace, info.serviceAccount));
    if (uids === undefined) return undefined;
    for (const uid of uids) {
      const w = this.#byUid.get(uid);
      if (w !== undefined && w.name === info.name) return w;
    }
    return undefined;
  }

  findByHostname(hostname: string): readonly Workload[] {
    const uids = this.#byHostname.get(hostname);
    if (uids === undefined) return [];
    const out: Workload[] = [];
    for (const uid of uids) {
      const w = this.#byUid.get(uid);
      if (w !== undefined) out.push(w);
    }
    return out;
  }

  /**
   * Whether any local-node workload still runs as this identity; ztunnel drops a certificate
   * when the last one goes (`was_last_identity_on_node`).
   */
  hasNodeLocalIdentity(namespace: string, serviceAccount: string): boolean {
    return this.#nodeLocalByIdentity.has(identityKey(namespace, serviceAccount));
  }

  all(): IterableIterator<Workload> {
    return this.#byUid.values();
  }

  #isLocal(w: Workload): boolean {
    return this.localNode === undefined || this.localNode === w.node;
  }
}

export function addToSet<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) map.set(key, new Set([value]));
  else set.add(value);
}

export function removeFromSet<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}

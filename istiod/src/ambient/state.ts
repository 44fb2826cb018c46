import type { Kind } from '@ambient/common/config/kinds';
import type {
  AnyObject,
  EndpointSlice,
  Namespace,
  ObjectsByKind,
  PeerAuthentication,
  Pod,
  Service,
  ServiceEntry,
  WorkloadEntry,
} from '@ambient/common/config/objects';
import { LABELS, selectsNonEmpty } from './labels.ts';
import { type HostnameCandidate, pickHostnameOwners, serviceHostname } from './services.ts';
import type { MeshSettings } from './settings.ts';
import { type Waypoint, waypointFromGateway } from './waypoints.ts';

/**
 * What a builder may look up besides the object it builds. Builders are pure functions of their
 * object and these lookups; {@link AmbientState} is the implementation the index keeps current.
 */
export interface AmbientInputs {
  readonly settings: MeshSettings;
  namespace(name: string): Namespace | undefined;
  /** The resolved waypoint of a Gateway, when it is a ready `istio-waypoint` Gateway. */
  waypoint(namespace: string, name: string): Waypoint | undefined;
  service(namespace: string, name: string): Service | undefined;
  /**
   * Objects of a namespace whose non-empty selector (Service `selector`, ServiceEntry
   * `workloadSelector.labels`, AuthorizationPolicy `selector.matchLabels`) selects these labels.
   */
  selecting<K extends SelectorKind>(
    kind: K,
    namespace: string,
    labels: Readonly<Record<string, string>>,
  ): ObjectsByKind[K][];
  /** EndpointSlices (of a Service) that list this pod as an endpoint's targetRef. */
  endpointSlicesForPod(pod: Pod): Iterable<EndpointSlice>;
  peerAuthentications(namespace: string): Iterable<PeerAuthentication>;
  /**
   * Which object publishes `namespace/hostname` after de-duplication (a Service beats
   * ServiceEntries; among ServiceEntries the oldest wins), or undefined when nothing does.
   */
  hostnameOwner(namespace: string, hostname: string): HostnameCandidate | undefined;
  /** The namespace whose publisher of this hostname is canonical, if any. */
  canonicalNamespace(hostname: string): string | undefined;
}

/** Kinds whose objects select workloads by labels, indexed for {@link AmbientInputs.selecting}. */
export type SelectorKind = 'Service' | 'ServiceEntry' | 'AuthorizationPolicy';

function selectorOf(obj: AnyObject): Readonly<Record<string, string>> | undefined {
  switch (obj.kind) {
    case 'Service':
      return obj.spec?.selector;
    case 'ServiceEntry':
      return obj.spec?.workloadSelector?.labels;
    case 'AuthorizationPolicy':
      return obj.spec?.selector?.matchLabels;
    default:
      return undefined;
  }
}

/**
 * The one selector entry an object is indexed under (the smallest key): a workload can only be
 * selected if it carries that entry, so looking up each of its labels finds every candidate once.
 */
function selectorIndexKey(
  namespace: string,
  selector: Readonly<Record<string, string>> | undefined,
): string | undefined {
  if (!selector) return undefined;
  let first: string | undefined;
  for (const k in selector) if (first === undefined || k < first) first = k;
  return first === undefined ? undefined : `${namespace}\u0000${labelKey(first, selector[first] as string)}`;
}

/** `Kind/namespace/name`: names one source object inside the index. */
export type SourceRef = string;

/** Formats a {@link SourceRef}. */
export function sourceRef(kind: Kind, namespace: string, name: string): SourceRef {
  return `${kind}/${namespace}/${name}`;
}

/** The labels a WorkloadEntry is selected by: spec labels overlaid with metadata labels (istiod's rule). */
export function workloadEntryLabels(we: WorkloadEntry): Record<string, string> {
  const spec = we.spec?.labels;
  const meta = we.metadata.labels;
  if (!spec) return meta ?? {};
  return { ...spec, ...meta };
}

function labelKey(k: string, v: string): string {
  return `${k}\u0000${v}`;
}

function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) {
    s = new Set();
    m.set(k, s);
  }
  s.add(v);
}

function removeFrom<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

const EMPTY: ReadonlySet<never> = new Set();

/**
 * The validated objects the ambient index reads, with the secondary indexes that keep one
 * object's rebuild proportional to its neighbourhood: objects by namespace, pods and
 * WorkloadEntries by label, EndpointSlices by pod and by Service, resolved waypoints, and the
 * publishers of each hostname.
 */
export class AmbientState implements AmbientInputs {
  readonly settings: MeshSettings;
  readonly #objects = new Map<Kind, Map<string, AnyObject>>();
  readonly #byNamespace = new Map<Kind, Map<string, Set<string>>>();
  /** `label\0value` → pod and WorkloadEntry refs carrying it. */
  readonly #workloadsByLabel = new Map<string, Set<SourceRef>>();
  /** `ns\0label\0value` → keys of selecting objects indexed under that selector entry, per kind. */
  readonly #bySelector = new Map<Kind, Map<string, Set<string>>>();
  readonly #slicesByPod = new Map<string, Set<string>>();
  readonly #slicesByService = new Map<string, Set<string>>();
  readonly #waypoints = new Map<string, Waypoint>();
  readonly #hostnames = new Map<string, Map<SourceRef, HostnameCandidate>>();
  readonly #owners = new Map<string, { byNamespace: Map<string, HostnameCandidate>; canonical?: string }>();

  constructor(settings: MeshSettings) {
    this.settings = settings;
  }

  #collection<K extends Kind>(kind: K): Map<string, ObjectsByKind[K]> {
    let c = this.#objects.get(kind);
    if (!c) {
      c = new Map();
      this.#objects.set(kind, c);
    }
    return c as Map<string, ObjectsByKind[K]>;
  }

  get<K extends Kind>(kind: K, namespace: string, name: string): ObjectsByKind[K] | undefined {
    return this.#collection(kind).get(keyOf(namespace, name));
  }

  /** All objects of a kind in one namespace. */
  *inNamespace<K extends Kind>(kind: K, namespace: string): Iterable<ObjectsByKind[K]> {
    const keys = this.#byNamespace.get(kind)?.get(namespace);
    if (!keys) return;
    const c = this.#collection(kind);
    for (const k of keys) {
      const o = c.get(k);
      if (o) yield o;
    }
  }

  all<K extends Kind>(kind: K): Iterable<ObjectsByKind[K]> {
    return this.#collection(kind).values();
  }

  count(kind: Kind): number {
    return this.#collection(kind).size;
  }

  /** Namespaces that hold at least one object of this kind. */
  namespacesWith(kind: Kind): Iterable<string> {
    return this.#byNamespace.get(kind)?.keys() ?? EMPTY;
  }

  /** Replaces (or with `obj` undefined, removes) the stored object at `kind/namespace/name`. */
  put(kind: Kind, namespace: string, name: string, obj: AnyObject | undefined): void {
    const key = keyOf(namespace, name);
    const coll = this.#collection(kind);
    const old = coll.get(key);
    if (old) this.#unindex(kind, old);
    if (obj) {
      coll.set(key, obj);
      this.#index(kind, obj);
    } else {
      coll.delete(key);
    }
  }

  /** Stores objects as an upsert batch; a convenience for building fixtures and initial loads. */
  upsert(objects: readonly AnyObject[]): void {
    for (const o of objects) this.put(o.kind as Kind, o.metadata.namespace ?? '', o.metadata.name, o);
  }

  #index(kind: Kind, obj: AnyObject): void {
    const ns = obj.metadata.namespace ?? '';
    const key = keyOf(obj.metadata.namespace, obj.metadata.name);
    let byNs = this.#byNamespace.get(kind);
    if (!byNs) {
      byNs = new Map();
      this.#byNamespace.set(kind, byNs);
    }
    addTo(byNs, ns, key);
    const selKey = selectorIndexKey(ns, selectorOf(obj));
    if (selKey !== undefined) {
      let idx = this.#bySelector.get(kind);
      if (!idx) {
        idx = new Map();
        this.#bySelector.set(kind, idx);
      }
      addTo(idx, selKey, key);
    }
    switch (obj.kind) {
      case 'Pod':
        for (const [k, v] of Object.entries(obj.metadata.labels ?? {})) {
          addTo(this.#workloadsByLabel, labelKey(k, v), sourceRef('Pod', ns, obj.metadata.name));
        }
        break;
      case 'WorkloadEntry':
        for (const [k, v] of Object.entries(workloadEntryLabels(obj))) {
          addTo(this.#workloadsByLabel, labelKey(k, v), sourceRef('WorkloadEntry', ns, obj.metadata.name));
        }
        break;
      case 'EndpointSlice':
        for (const pod of slicePods(obj)) addTo(this.#slicesByPod, pod, key);
        {
          const svc = obj.metadata.labels?.[LABELS.endpointSliceService];
          if (svc) addTo(this.#slicesByService, keyOf(ns, svc), key);
        }
        break;
      case 'Gateway': {
        const wp = waypointFromGateway(obj, this.settings);
        if (wp) this.#waypoints.set(key, wp);
        break;
      }
      case 'Service':
        if (obj.spec?.type !== 'ExternalName') {
          this.#addHostname(
            serviceHostname(obj.metadata.name, ns, this.settings.domainSuffix),
            'Service',
            obj,
          );
        }
        break;
      case 'ServiceEntry':
        for (const h of new Set(obj.spec?.hosts ?? [])) this.#addHostname(h, 'ServiceEntry', obj);
        break;
      default:
        break;
    }
  }

  #unindex(kind: Kind, obj: AnyObject): void {
    const ns = obj.metadata.namespace ?? '';
    const key = keyOf(obj.metadata.namespace, obj.metadata.name);
    const byNs = this.#byNamespace.get(kind);
    if (byNs) removeFrom(byNs, ns, key);
    const selKey = selectorIndexKey(ns, selectorOf(obj));
    const idx = this.#bySelector.get(kind);
    if (selKey !== undefined && idx) removeFrom(idx, selKey, key);
    switch (obj.kind) {
      case 'Pod':
        for (const [k, v] of Object.entries(obj.metadata.labels ?? {})) {
          removeFrom(this.#workloadsByLabel, labelKey(k, v), sourceRef('Pod', ns, obj.metadata.name));
        }
        break;
      case 'WorkloadEntry':
        for (const [k, v] of Object.entries(workloadEntryLabels(obj))) {
          removeFrom(
            this.#workloadsByLabel,
            labelKey(k, v),
            sourceRef('WorkloadEntry', ns, obj.metadata.name),
          );
        }
        break;
      case 'EndpointSlice':
        for (const pod of slicePods(obj)) removeFrom(this.#slicesByPod, pod, key);
        {
          const svc = obj.metadata.labels?.[LABELS.endpointSliceService];
          if (svc) removeFrom(this.#slicesByService, keyOf(ns, svc), key);
        }
        break;
      case 'Gateway':
        this.#waypoints.delete(key);
        break;
      case 'Service':
        this.#removeHostname(
          serviceHostname(obj.metadata.name, ns, this.settings.domainSuffix),
          sourceRef('Service', ns, obj.metadata.name),
        );
        break;
      case 'ServiceEntry':
        for (const h of new Set(obj.spec?.hosts ?? [])) {
          this.#removeHostname(h, sourceRef('ServiceEntry', ns, obj.metadata.name));
        }
        break;
      default:
        break;
    }
  }

  #addHostname(hostname: string, kind: 'Service' | 'ServiceEntry', obj: Service | ServiceEntry): void {
    const ns = obj.metadata.namespace ?? '';
    let m = this.#hostnames.get(hostname);
    if (!m) {
      m = new Map();
      this.#hostnames.set(hostname, m);
    }
    m.set(sourceRef(kind, ns, obj.metadata.name), {
      kind,
      namespace: ns,
      name: obj.metadata.name,
      created: obj.metadata.creationTimestamp ?? '',
    });
    this.#owners.delete(hostname);
  }

  #removeHostname(hostname: string, ref: SourceRef): void {
    const m = this.#hostnames.get(hostname);
    if (!m) return;
    m.delete(ref);
    if (m.size === 0) this.#hostnames.delete(hostname);
    this.#owners.delete(hostname);
  }

  #ownersOf(hostname: string): { byNamespace: Map<string, HostnameCandidate>; canonical?: string } {
    let o = this.#owners.get(hostname);
    if (!o) {
      o = pickHostnameOwners(this.#hostnames.get(hostname)?.values() ?? EMPTY);
      this.#owners.set(hostname, o);
    }
    return o;
  }

  // ---- AmbientInputs ----

  namespace(name: string): Namespace | undefined {
    return this.get('Namespace', '', name);
  }

  waypoint(namespace: string, name: string): Waypoint | undefined {
    return this.#waypoints.get(keyOf(namespace, name));
  }

  service(namespace: string, name: string): Service | undefined {
    return this.get('Service', namespace, name);
  }

  services(namespace: string): Iterable<Service> {
    return this.inNamespace('Service', namespace);
  }

  serviceEntries(namespace: string): Iterable<ServiceEntry> {
    return this.inNamespace('ServiceEntry', namespace);
  }

  selecting<K extends SelectorKind>(
    kind: K,
    namespace: string,
    labels: Readonly<Record<string, string>>,
  ): ObjectsByKind[K][] {
    const idx = this.#bySelector.get(kind);
    const out: ObjectsByKind[K][] = [];
    if (!idx) return out;
    const coll = this.#collection(kind);
    for (const k in labels) {
      const keys = idx.get(`${namespace}\u0000${labelKey(k, labels[k] as string)}`);
      if (!keys) continue;
      for (const key of keys) {
        const o = coll.get(key);
        if (o && selectsNonEmpty(selectorOf(o), labels)) out.push(o);
      }
    }
    return out;
  }

  *endpointSlicesForPod(pod: Pod): Iterable<EndpointSlice> {
    const keys = this.#slicesByPod.get(keyOf(pod.metadata.namespace ?? '', pod.metadata.name));
    if (!keys) return;
    const c = this.#collection('EndpointSlice');
    for (const k of keys) {
      const s = c.get(k);
      if (!s) continue;
      // A slice naming a previous pod of the same name (another uid) does not describe this one.
      const matches = (s.endpoints ?? []).some(
        (ep) =>
          ep.targetRef?.kind === 'Pod' &&
          ep.targetRef.name === pod.metadata.name &&
          (ep.targetRef.namespace ?? s.metadata.namespace) === pod.metadata.namespace &&
          (ep.targetRef.uid === undefined ||
            pod.metadata.uid === undefined ||
            ep.targetRef.uid === pod.metadata.uid),
      );
      if (matches) yield s;
    }
  }

  peerAuthentications(namespace: string): Iterable<PeerAuthentication> {
    return this.inNamespace('PeerAuthentication', namespace);
  }

  /** Whether any PeerAuthentication exists (the static STRICT policy is only sent then). */
  hasPeerAuthentications(): boolean {
    return this.count('PeerAuthentication') > 0;
  }

  hostnameOwner(namespace: string, hostname: string): HostnameCandidate | undefined {
    return this.#ownersOf(hostname).byNamespace.get(namespace);
  }

  canonicalNamespace(hostname: string): string | undefined {
    return this.#ownersOf(hostname).canonical;
  }

  // ---- lookups for the index's invalidation rules ----

  /** Every source (Service or ServiceEntry) publishing this hostname. */
  hostnamePublishers(hostname: string): Iterable<HostnameCandidate> {
    return this.#hostnames.get(hostname)?.values() ?? EMPTY;
  }

  /** EndpointSlices labelled with this Service's name. */
  *endpointSlicesForService(namespace: string, name: string): Iterable<EndpointSlice> {
    const keys = this.#slicesByService.get(keyOf(namespace, name));
    if (!keys) return;
    const c = this.#collection('EndpointSlice');
    for (const k of keys) {
      const s = c.get(k);
      if (s) yield s;
    }
  }

  /**
   * Pods and WorkloadEntries whose labels include every selector label, in one namespace or (with
   * `namespace` undefined) in all. Uses the rarest selector label to avoid scanning.
   */
  workloadsSelectedBy(
    selector: Readonly<Record<string, string>>,
    namespace: string | undefined,
  ): SourceRef[] {
    let smallest: Set<SourceRef> | undefined;
    for (const [k, v] of Object.entries(selector)) {
      const s = this.#workloadsByLabel.get(labelKey(k, v));
      if (!s) return [];
      if (!smallest || s.size < smallest.size) smallest = s;
    }
    if (!smallest) return [];
    const out: SourceRef[] = [];
    for (const ref of smallest) {
      const [kind, ns, name] = splitRef(ref);
      if (namespace !== undefined && ns !== namespace) continue;
      const obj = this.get(kind as 'Pod' | 'WorkloadEntry', ns, name);
      if (!obj) continue;
      const labels = obj.kind === 'Pod' ? obj.metadata.labels : workloadEntryLabels(obj);
      if (Object.entries(selector).every(([k, v]) => labels?.[k] === v)) out.push(ref);
    }
    return out;
  }

  /** Pods in a namespace carrying `label=value`. */
  podsWithLabel(namespace: string, label: string, value: string): SourceRef[] {
    return this.workloadsSelectedBy({ [label]: value }, namespace).filter((r) => r.startsWith('Pod/'));
  }
}

/** Splits a {@link SourceRef}; names cannot contain `/`, so the split is unambiguous. */
export function splitRef(ref: SourceRef): [kind: string, namespace: string, name: string] {
  const a = ref.indexOf('/');
  const b = ref.indexOf('/', a + 1);
  return [ref.slice(0, a), ref.slice(a + 1, b), ref.slice(b + 1)];
}

function slicePods(s: EndpointSlice): Set<string> {
  const out = new Set<string>();
  if (s.addressType === 'FQDN') return out;
  if (!s.metadata.labels?.[LABELS.endpointSliceService]) return out;
  for (const ep of s.endpoints ?? []) {
    if (ep.targetRef?.kind !== 'Pod' || !ep.targetRef.name) continue;
    out.add(keyOf(ep.targetRef.namespace ?? s.metadata.namespace ?? '', ep.targetRef.name));
  }
  return out;
}

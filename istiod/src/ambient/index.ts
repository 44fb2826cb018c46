import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { KIND_NAMES, type Kind } from '@ambient/common/config/kinds';
import type { AnyObject, EndpointSlice } from '@ambient/common/config/objects';
import type { ConfigChange, ConfigStore } from '@ambient/common/config/store';
import { type Authorization, AuthorizationSchema } from '@ambient/common/gen/istio/security/authorization_pb';
import {
  AddressSchema,
  ServiceSchema,
  type Service as WdsService,
  type Workload,
  WorkloadSchema,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { type Logger, logger } from '@ambient/common/log';
import { create, toBinary, toJson } from '@bufbuild/protobuf';
import type { ResourceSource, ResourcesUpdated, XdsResource } from '../xds/resources.ts';
import type { Diagnostic } from './diagnostics.ts';
import { formatIp } from './ip.ts';
import { hasEntries, LABELS, selectsNonEmpty } from './labels.ts';
import {
  authorizationResourceName,
  buildPeerAuthenticationPolicy,
  convertAuthorizationPolicy,
  staticStrictPolicy,
} from './policies.ts';
import {
  type BuiltServices,
  buildKubeService,
  buildServiceEntryServices,
  serviceHostname,
  serviceResourceName,
} from './services.ts';
import type { MeshSettings } from './settings.ts';
import { AmbientState, type SourceRef, sourceRef, splitRef } from './state.ts';
import { requestedWaypoints } from './waypoints.ts';
import {
  type BuiltWorkloads,
  buildEndpointSliceWorkloads,
  buildPodWorkload,
  buildServiceEntryWorkloads,
  buildWorkloadEntryWorkload,
} from './workloads.ts';

/** What ztunnel subscribes to: Workloads and Services, each wrapped in an Address. */
export const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';
/** What ztunnel subscribes to: L4 authorization policies. */
export const AUTHORIZATION_TYPE_URL = 'type.googleapis.com/istio.security.Authorization';

// ---------------------------------------------------------------------------------------------
// Invalidation rules. One function per kind says which outputs a change of that kind can affect;
// everything else is left alone. Outputs are rebuilt from the state after the whole batch is
// applied, so "old" selectors are looked up against current objects (objects that changed in the
// same batch are rebuilt by their own rule).
// ---------------------------------------------------------------------------------------------

type Rule<K extends Kind> = (change: ConfigChange<K>, dirty: Dirty) => void;

const INVALIDATION: { readonly [K in Kind]: Rule<K> } = {
  // Labels carry waypoint bindings (and allowedRoutes selection); annotations carry traffic
  // distribution and canary weights: everything in the namespace may change.
  Namespace: (c, d) => {
    const o = c.old?.metadata;
    const n = c.new?.metadata;
    if (o && n && sameRecord(o.labels, n.labels) && sameRecord(o.annotations, n.annotations)) return;
    d.namespaceContents((n ?? o)?.name ?? '');
  },
  Pod: (c, d) => d.workloadSource(sourceRef('Pod', nsOf(c), nameOf(c))),
  WorkloadEntry: (c, d) => d.workloadSource(sourceRef('WorkloadEntry', nsOf(c), nameOf(c))),
  // A Service changes its own Service, the workloads its old and new selectors select, and the
  // pods and addresses its EndpointSlices list; other publishers of its hostname may win or lose.
  Service: (c, d) => {
    const ns = nsOf(c);
    d.hostname(serviceHostname(nameOf(c), ns, d.settings.domainSuffix));
    for (const obj of [c.old, c.new]) d.selectedWorkloads(obj?.spec?.selector, ns);
    d.endpointSlicesOf(ns, nameOf(c));
  },
  ServiceEntry: (c, d) => {
    const ns = nsOf(c);
    d.workloadSource(sourceRef('ServiceEntry', ns, nameOf(c)));
    for (const obj of [c.old, c.new]) {
      for (const h of obj?.spec?.hosts ?? []) d.hostname(h);
      d.selectedWorkloads(obj?.spec?.workloadSelector?.labels, ns);
    }
  },
  // EndpointSlices matter only where the Service's selector does not already say it all: pods a
  // selector-less Service reaches through its slices, and manually managed (non-pod) addresses.
  // Pods of selector Services come from the label index, which carries more than a slice; so the
  // frequent slice updates of ordinary Services (every readiness flip) rebuild no pod.
  EndpointSlice: (c, d) => {
    d.workloadSource(sourceRef('EndpointSlice', nsOf(c), nameOf(c)));
    for (const obj of [c.old, c.new]) if (obj) d.slicePods(obj, false);
  },
  // A policy rebuilds its Authorization and the policy lists of the workloads it selects, in its
  // namespace or, from the root namespace, in all. Policies without a selector are not listed on
  // workloads (ztunnel applies them by scope), so they touch no workload.
  AuthorizationPolicy: (c, d) => {
    const ns = nsOf(c);
    d.authorization(sourceRef('AuthorizationPolicy', ns, nameOf(c)));
    const scope = ns === d.settings.rootNamespace ? undefined : ns;
    for (const obj of [c.old, c.new]) d.policySelected(obj?.spec?.selector?.matchLabels, scope);
  },
  // Namespace- and mesh-level PeerAuthentications change the effective mode of every workload
  // below them and the merge of every port-level conversion there.
  PeerAuthentication: (c, d) => {
    const ns = nsOf(c);
    d.authorization(sourceRef('PeerAuthentication', ns, nameOf(c)));
    d.staticStrict();
    const root = ns === d.settings.rootNamespace;
    for (const obj of [c.old, c.new]) {
      if (!obj) continue;
      const sel = obj.spec?.selector;
      if (sel === undefined) {
        d.peerAuthenticationConversions(root ? undefined : ns);
        d.allWorkloads(root ? undefined : ns);
      } else if (!hasEntries(sel.matchLabels)) {
        d.allWorkloads(ns);
      } else {
        d.policySelected(sel.matchLabels, ns);
      }
    }
  },
  // A waypoint appearing, moving or going away reaches everything that asked for it by name, and
  // its own instances (which may carry its sandwich binding).
  Gateway: (c, d) => {
    const ns = nsOf(c);
    d.waypointWaiters(`${ns}/${nameOf(c)}`);
    for (const ref of d.state.podsWithLabel(ns, LABELS.gatewayName, nameOf(c))) d.workloadSource(ref);
  },
};

function nsOf(c: ConfigChange): string {
  return (c.new ?? c.old)?.metadata.namespace ?? '';
}

function nameOf(c: ConfigChange): string {
  return (c.new ?? c.old)?.metadata.name ?? '';
}

function sameRecord(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const ea = Object.entries(a ?? {});
  if (ea.length !== Object.keys(b ?? {}).length) return false;
  return ea.every(([k, v]) => b?.[k] === v);
}

/** The outputs a batch must rebuild, filled by the rules above. */
class Dirty {
  readonly state: AmbientState;
  readonly settings: MeshSettings;
  readonly workloads = new Set<SourceRef>();
  readonly hostnames = new Set<string>();
  readonly authorizations = new Set<SourceRef>();
  #waiters: ReadonlyMap<string, ReadonlySet<string>>;

  constructor(state: AmbientState, waiters: ReadonlyMap<string, ReadonlySet<string>>) {
    this.state = state;
    this.settings = state.settings;
    this.#waiters = waiters;
  }

  workloadSource(ref: SourceRef): void {
    this.workloads.add(ref);
  }

  authorization(ref: SourceRef): void {
    this.authorizations.add(ref);
  }

  staticStrict(): void {
    this.authorizations.add(STATIC_STRICT_PRODUCER);
  }

  /**
   * A hostname's Services, and the workloads of every publisher of it: which publisher wins
   * decides both the Service resource and the workloads' `services` keys.
   */
  hostname(h: string): void {
    if (this.hostnames.has(h)) return;
    this.hostnames.add(h);
    for (const p of this.state.hostnamePublishers(h)) {
      if (p.kind === 'ServiceEntry') {
        this.workloads.add(sourceRef('ServiceEntry', p.namespace, p.name));
        const se = this.state.get('ServiceEntry', p.namespace, p.name);
        this.selectedWorkloads(se?.spec?.workloadSelector?.labels, p.namespace);
      }
    }
  }

  /** Pods and WorkloadEntries a Service/ServiceEntry selector selects in its namespace. */
  selectedWorkloads(selector: Readonly<Record<string, string>> | undefined, ns: string): void {
    if (!hasEntries(selector)) return;
    for (const ref of this.state.workloadsSelectedBy(selector as Record<string, string>, ns))
      this.workloads.add(ref);
  }

  /**
   * Workloads whose policy list a selector-scoped policy touches: pods and WorkloadEntries it
   * selects, and ServiceEntries (whose inline endpoints take the entry's labels).
   */
  policySelected(selector: Readonly<Record<string, string>> | undefined, ns: string | undefined): void {
    if (!hasEntries(selector)) return;
    const sel = selector as Record<string, string>;
    for (const ref of this.state.workloadsSelectedBy(sel, ns)) this.workloads.add(ref);
    const namespaces = ns === undefined ? this.state.namespacesWith('ServiceEntry') : [ns];
    for (const n of namespaces) {
      for (const se of this.state.serviceEntries(n)) {
        if (Object.entries(sel).every(([k, v]) => se.metadata.labels?.[k] === v)) {
          this.workloads.add(sourceRef('ServiceEntry', n, se.metadata.name));
        }
      }
    }
  }

  /** Every workload source in a namespace, or everywhere. */
  allWorkloads(ns: string | undefined): void {
    for (const kind of ['Pod', 'WorkloadEntry', 'ServiceEntry'] as const) {
      const namespaces = ns === undefined ? [...this.state.namespacesWith(kind)] : [ns];
      for (const n of namespaces) {
        for (const o of this.state.inNamespace(kind, n))
          this.workloads.add(sourceRef(kind, n, o.metadata.name));
      }
    }
  }

  peerAuthenticationConversions(ns: string | undefined): void {
    const namespaces = ns === undefined ? [...this.state.namespacesWith('PeerAuthentication')] : [ns];
    for (const n of namespaces) {
      for (const pa of this.state.peerAuthentications(n)) {
        this.authorizations.add(sourceRef('PeerAuthentication', n, pa.metadata.name));
      }
    }
  }

  namespaceContents(ns: string): void {
    this.allWorkloads(ns);
    for (const svc of this.state.services(ns)) {
      this.hostname(serviceHostname(svc.metadata.name, ns, this.settings.domainSuffix));
    }
    for (const se of this.state.serviceEntries(ns)) for (const h of se.spec?.hosts ?? []) this.hostname(h);
  }

  /** The workloads derived from a Service's EndpointSlices, and every pod they list. */
  endpointSlicesOf(ns: string, service: string): void {
    for (const slice of this.state.endpointSlicesForService(ns, service)) {
      this.workloads.add(sourceRef('EndpointSlice', ns, slice.metadata.name));
      this.slicePods(slice, true);
    }
  }

  /**
   * Pods a slice lists. Unless `all`, only those its Service's selector does not select: for the
   * others the slice changes nothing (the pod has the Service through the selector), and when the
   * Service does not exist the slice adds nothing.
   */
  slicePods(slice: EndpointSlice, all: boolean): void {
    const sliceNs = slice.metadata.namespace ?? '';
    const svcName = slice.metadata.labels?.[LABELS.endpointSliceService];
    const svc = svcName ? this.state.service(sliceNs, svcName) : undefined;
    if (!all && !svc) return;
    for (const ep of slice.endpoints ?? []) {
      if (ep.targetRef?.kind !== 'Pod' || !ep.targetRef.name) continue;
      const ns = ep.targetRef.namespace ?? sliceNs;
      if (!all) {
        const pod = this.state.get('Pod', ns, ep.targetRef.name);
        if (!pod || selectsNonEmpty(svc?.spec?.selector, pod.metadata.labels)) continue;
      }
      this.workloads.add(sourceRef('Pod', ns, ep.targetRef.name));
    }
  }

  waypointWaiters(key: string): void {
    for (const producer of this.#waiters.get(key) ?? []) {
      if (producer.startsWith(HOSTNAME_PRODUCER)) this.hostname(producer.slice(HOSTNAME_PRODUCER.length));
      else this.workloads.add(producer);
    }
  }
}

// ---------------------------------------------------------------------------------------------

const STATIC_STRICT_PRODUCER = 'static-strict';
/** Producer keys of Service outputs are `host:<hostname>`; workload producers are SourceRefs. */
const HOSTNAME_PRODUCER = 'host:';

/** One encoded resource plus the message it came from (kept for the debug view). */
interface Stored<M> {
  readonly resource: XdsResource;
  readonly message: M;
}

/** The resources of one type, with which producer made each. */
class Table<M> {
  readonly entries = new Map<string, Stored<M>>();
  /** producer → names of the outputs it made last time. */
  readonly produced = new Map<string, Set<string>>();
  /** output name → the producer that made it last. */
  readonly owner = new Map<string, string>();
}

interface Output<M> {
  readonly name: string;
  readonly message: M;
  readonly bytes: Uint8Array;
  readonly aliases?: readonly string[];
}

/** Debug snapshot of the index (`toJSON`). */
export interface AmbientIndexView {
  workloads: Record<string, unknown>;
  services: Record<string, unknown>;
  policies: Record<string, unknown>;
  diagnostics: Diagnostic[];
}

/** A content hash: equal bytes, equal version. */
export function contentVersion(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex').slice(0, 16);
}

function workloadAliases(w: Workload): string[] {
  return w.addresses.map((a) => `${w.network}/${formatIp(a)}`);
}

function serviceAliases(s: WdsService): string[] {
  return s.addresses.map((a) =>
    a.length === undefined
      ? `${a.network}/${formatIp(a.address)}`
      : `${a.network}/${formatIp(a.address)}/${a.length}`,
  );
}

/**
 * The ambient index: every Workload, Service and Authorization ztunnel needs, built from the
 * ConfigStore by the pure builders in this directory, encoded once per change and versioned by
 * content. It follows the store's batched `changes` events and applies the invalidation rules at
 * the top of this file, so a change costs in proportion to what it can affect: one pod, the
 * services of its namespace; one Service, the pods it selects.
 *
 * `updated` is emitted once per type and batch, naming the resources whose bytes changed or that
 * were removed; a rebuild that yields identical bytes emits nothing.
 */
export class AmbientIndex
  extends EventEmitter<{ updated: [update: ResourcesUpdated] }>
  implements ResourceSource
{
  readonly settings: MeshSettings;
  readonly #state: AmbientState;
  readonly #store: ConfigStore;
  readonly #log: Logger;
  readonly #addresses = new Table<Workload | WdsService>();
  readonly #authorizations = new Table<Authorization>();
  readonly #diagnostics = new Map<string, Diagnostic[]>();
  /** waypoint key → producers that asked for it; and the reverse. */
  readonly #waiters = new Map<string, Set<string>>();
  readonly #waiting = new Map<string, string[]>();
  readonly #onChanges = (changes: readonly ConfigChange[]) => this.#apply(changes);
  #closed = false;

  constructor(store: ConfigStore, settings: MeshSettings, log: Logger = logger('ambient')) {
    super();
    this.settings = settings;
    this.#store = store;
    this.#log = log;
    this.#state = new AmbientState(settings);
    const initial: ConfigChange[] = [];
    for (const kind of KIND_NAMES) {
      for (const obj of store.list(kind)) initial.push({ kind, key: '', new: obj } as ConfigChange);
    }
    this.#apply(initial);
    store.on('changes', this.#onChanges);
  }

  /** Stops following the store. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#store.off('changes', this.#onChanges);
  }

  typeUrls(): readonly string[] {
    return [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL];
  }

  get(typeUrl: string, name: string): XdsResource | undefined {
    if (typeUrl === ADDRESS_TYPE_URL) return this.#addresses.entries.get(name)?.resource;
    if (typeUrl === AUTHORIZATION_TYPE_URL) return this.#authorizations.entries.get(name)?.resource;
    return undefined;
  }

  names(typeUrl: string): Iterable<string> {
    if (typeUrl === ADDRESS_TYPE_URL) return this.#addresses.entries.keys();
    if (typeUrl === AUTHORIZATION_TYPE_URL) return this.#authorizations.entries.keys();
    return [];
  }

  /** The decoded message behind an Address resource (a Workload or a Service). */
  address(name: string): Workload | WdsService | undefined {
    return this.#addresses.entries.get(name)?.message;
  }

  /** The decoded Authorization behind a resource name. */
  authorization(name: string): Authorization | undefined {
    return this.#authorizations.entries.get(name)?.message;
  }

  /** Problems found while building, by object (policy status, waypoint binding errors). */
  diagnostics(): Diagnostic[] {
    // A ServiceEntry's problem is found once per host it publishes; report it once.
    return dedupeDiagnostics([...this.#diagnostics.values()].flat());
  }

  toJSON(): AmbientIndexView {
    const view: AmbientIndexView = {
      workloads: {},
      services: {},
      policies: {},
      diagnostics: this.diagnostics(),
    };
    for (const [name, s] of this.#addresses.entries) {
      const m = s.message;
      if (m.$typeName === 'istio.workload.Workload') view.workloads[name] = toJson(WorkloadSchema, m);
      else view.services[name] = toJson(ServiceSchema, m);
    }
    for (const [name, s] of this.#authorizations.entries) {
      view.policies[name] = toJson(AuthorizationSchema, s.message);
    }
    return view;
  }

  #apply(changes: readonly ConfigChange[]): void {
    if (changes.length === 0) return;
    const started = performance.now();
    for (const c of changes) {
      const obj = (c.new ?? c.old) as AnyObject;
      this.#state.put(
        c.kind,
        obj.metadata.namespace ?? '',
        obj.metadata.name,
        c.new as AnyObject | undefined,
      );
    }
    const dirty = new Dirty(this.#state, this.#waiters);
    for (const c of changes) {
      try {
        (INVALIDATION[c.kind] as Rule<Kind> | undefined)?.(c, dirty);
      } catch (err) {
        this.#log.error({ err, kind: c.kind, key: c.key }, 'ambient invalidation rule failed');
      }
    }
    const addressNames = new Set<string>();
    const authorizationNames = new Set<string>();

    // A producer whose build failed (undefined) keeps its previous outputs.
    const addressOutputs = new Map<string, Output<Workload | WdsService>[] | undefined>();
    for (const ref of dirty.workloads) addressOutputs.set(ref, this.#buildWorkloadSource(ref));
    const servicesBySource = new Map<string, BuiltServices | undefined>();
    for (const h of dirty.hostnames) {
      addressOutputs.set(HOSTNAME_PRODUCER + h, this.#buildHostname(h, servicesBySource));
    }
    this.#commit(this.#addresses, addressOutputs, addressNames);

    const authOutputs = new Map<string, Output<Authorization>[] | undefined>();
    for (const ref of dirty.authorizations) authOutputs.set(ref, this.#buildAuthorization(ref));
    this.#commit(this.#authorizations, authOutputs, authorizationNames);

    const ms = performance.now() - started;
    this.#log.debug(
      { changes: changes.length, addresses: addressNames.size, authorizations: authorizationNames.size, ms },
      'ambient index updated',
    );
    if (addressNames.size > 0) this.emit('updated', { typeUrl: ADDRESS_TYPE_URL, names: addressNames });
    if (authorizationNames.size > 0) {
      this.emit('updated', { typeUrl: AUTHORIZATION_TYPE_URL, names: authorizationNames });
    }
  }

  /**
   * Replaces each producer's outputs. A name is removed only when the producer that owned it no
   * longer makes it and no producer of this batch made it again, so ownership can move between
   * producers without a spurious delete.
   */
  #commit<M>(table: Table<M>, outputs: Map<string, Output<M>[] | undefined>, changed: Set<string>): void {
    const claimed = new Set<string>();
    const released: [name: string, producer: string][] = [];
    for (const [producer, outs] of outputs) {
      if (outs === undefined) continue;
      const names = new Set<string>();
      for (const o of outs) {
        names.add(o.name);
        claimed.add(o.name);
        table.owner.set(o.name, producer);
        const version = contentVersion(o.bytes);
        if (table.entries.get(o.name)?.resource.version === version) continue;
        table.entries.set(o.name, {
          resource: { name: o.name, version, value: o.bytes, ...(o.aliases ? { aliases: o.aliases } : {}) },
          message: o.message,
        });
        changed.add(o.name);
      }
      for (const old of table.produced.get(producer) ?? [])
        if (!names.has(old)) released.push([old, producer]);
      if (names.size > 0) table.produced.set(producer, names);
      else table.produced.delete(producer);
    }
    for (const [name, producer] of released) {
      if (claimed.has(name) || table.owner.get(name) !== producer) continue;
      table.owner.delete(name);
      if (table.entries.delete(name)) changed.add(name);
    }
  }

  #record(producer: string, diagnostics: Diagnostic[], waits: string[]): void {
    if (diagnostics.length > 0) this.#diagnostics.set(producer, diagnostics);
    else this.#diagnostics.delete(producer);
    for (const key of this.#waiting.get(producer) ?? []) {
      const s = this.#waiters.get(key);
      s?.delete(producer);
      if (s?.size === 0) this.#waiters.delete(key);
    }
    if (waits.length === 0) {
      this.#waiting.delete(producer);
      return;
    }
    const unique = [...new Set(waits)];
    this.#waiting.set(producer, unique);
    for (const key of unique) {
      let s = this.#waiters.get(key);
      if (!s) {
        s = new Set();
        this.#waiters.set(key, s);
      }
      s.add(producer);
    }
  }

  /** Builds one workload source; undefined (keep the previous outputs) when the builder threw. */
  #buildWorkloadSource(ref: SourceRef): Output<Workload>[] | undefined {
    const [kind, ns, name] = splitRef(ref);
    const state = this.#state;
    let built: BuiltWorkloads = { workloads: [], diagnostics: [] };
    const waits: string[] = [];
    try {
      switch (kind) {
        case 'Pod': {
          const pod = state.get('Pod', ns, name);
          if (pod) {
            built = buildPodWorkload(pod, state);
            waits.push(...requestedWaypoints(pod.metadata, state));
          }
          break;
        }
        case 'WorkloadEntry': {
          const we = state.get('WorkloadEntry', ns, name);
          if (we) {
            built = buildWorkloadEntryWorkload(we, state);
            waits.push(...requestedWaypoints(we.metadata, state));
          }
          break;
        }
        case 'ServiceEntry': {
          const se = state.get('ServiceEntry', ns, name);
          if (se) {
            built = buildServiceEntryWorkloads(se, state);
            for (const ep of se.spec?.endpoints ?? []) {
              waits.push(...requestedWaypoints({ name, namespace: ns, labels: ep.labels ?? {} }, state));
            }
          }
          break;
        }
        case 'EndpointSlice': {
          const slice = state.get('EndpointSlice', ns, name);
          if (slice) built = buildEndpointSliceWorkloads(slice, state);
          break;
        }
        default:
          break;
      }
      this.#record(ref, built.diagnostics, waits);
      return built.workloads.map((w) => ({
        name: w.uid,
        message: w,
        bytes: toBinary(AddressSchema, create(AddressSchema, { type: { case: 'workload', value: w } })),
        aliases: workloadAliases(w),
      }));
    } catch (err) {
      // A builder bug must neither take the index down nor withdraw what ztunnel already has.
      this.#log.error({ err, source: ref }, 'building workloads failed; keeping the previous ones');
      return undefined;
    }
  }

  /**
   * Builds the Services published under one hostname. Sources are built once per batch
   * (`memo`), since a ServiceEntry with many hosts is reached through each of them.
   */
  #buildHostname(
    hostname: string,
    memo: Map<string, BuiltServices | undefined>,
  ): Output<WdsService>[] | undefined {
    const state = this.#state;
    const outs: Output<WdsService>[] = [];
    const diagnostics: Diagnostic[] = [];
    const waits: string[] = [];
    for (const p of state.hostnamePublishers(hostname)) {
      const key = `${p.kind}/${p.namespace}/${p.name}`;
      let built = memo.get(key);
      if (!memo.has(key)) {
        const obj =
          p.kind === 'Service'
            ? state.get('Service', p.namespace, p.name)
            : state.get('ServiceEntry', p.namespace, p.name);
        try {
          built = !obj
            ? { services: [], diagnostics: [] }
            : obj.kind === 'Service'
              ? buildKubeService(obj, state)
              : buildServiceEntryServices(obj, state);
        } catch (err) {
          this.#log.error(
            { err, hostname, source: key },
            'building services failed; keeping the previous ones',
          );
          built = undefined;
        }
        memo.set(key, built);
      }
      if (!built) return undefined;
      const obj =
        p.kind === 'Service'
          ? state.get('Service', p.namespace, p.name)
          : state.get('ServiceEntry', p.namespace, p.name);
      if (obj) waits.push(...requestedWaypoints(obj.metadata, state));
      diagnostics.push(...built.diagnostics);
      for (const s of built.services) {
        if (s.hostname !== hostname) continue;
        outs.push({
          name: serviceResourceName(s.namespace, s.hostname),
          message: s,
          bytes: toBinary(AddressSchema, create(AddressSchema, { type: { case: 'service', value: s } })),
          aliases: serviceAliases(s),
        });
      }
    }
    this.#record(HOSTNAME_PRODUCER + hostname, dedupeDiagnostics(diagnostics), waits);
    return outs;
  }

  #buildAuthorization(ref: string): Output<Authorization>[] | undefined {
    const state = this.#state;
    let auth: Authorization | undefined;
    let diagnostics: Diagnostic[] = [];
    try {
      if (ref === STATIC_STRICT_PRODUCER) {
        if (state.hasPeerAuthentications()) auth = staticStrictPolicy(this.settings.rootNamespace);
      } else {
        const [kind, ns, name] = splitRef(ref);
        if (kind === 'AuthorizationPolicy') {
          const ap = state.get('AuthorizationPolicy', ns, name);
          if (ap) {
            const converted = convertAuthorizationPolicy(ap, this.settings);
            auth = converted.authorization;
            diagnostics = converted.diagnostics;
          }
        } else if (kind === 'PeerAuthentication') {
          const pa = state.get('PeerAuthentication', ns, name);
          if (pa) auth = buildPeerAuthenticationPolicy(pa, state);
        }
      }
    } catch (err) {
      this.#log.error({ err, source: ref }, 'building authorization failed; keeping the previous one');
      return undefined;
    }
    this.#record(ref, diagnostics, []);
    if (!auth) return [];
    return [
      { name: authorizationResourceName(auth), message: auth, bytes: toBinary(AuthorizationSchema, auth) },
    ];
  }
}

/** A hostname shared by several hosts of one ServiceEntry reports each waypoint problem once. */
function dedupeDiagnostics(ds: Diagnostic[]): Diagnostic[] {
  const seen = new Set<string>();
  return ds.filter((d) => {
    const k = `${d.kind}/${d.namespace}/${d.name}/${d.reason}/${d.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

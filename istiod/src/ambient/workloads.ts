import type {
  EndpointSlice,
  ObjectMeta,
  Pod,
  Service,
  ServiceEntry,
  WorkloadEntry,
  WorkloadEntrySpec,
} from '@ambient/common/config/objects';
import {
  type ApplicationTunnel,
  ApplicationTunnelSchema,
  type GatewayAddress,
  type Locality,
  LocalitySchema,
  NetworkMode,
  type PortList,
  PortListSchema,
  PortSchema,
  TunnelProtocol,
  type Workload,
  WorkloadSchema,
  WorkloadStatus,
  WorkloadType,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { create } from '@bufbuild/protobuf';
import type { Diagnostic } from './diagnostics.ts';
import { parseIp } from './ip.ts';
import { ANNOTATIONS, LABELS } from './labels.ts';
import { workloadPolicyNames } from './policies.ts';
import { serviceHostname, serviceResourceName } from './services.ts';
import type { MeshSettings } from './settings.ts';
import { type AmbientInputs, workloadEntryLabels } from './state.ts';
import { waypointForWorkload, waypointInstanceOf } from './waypoints.ts';

/** API fields the typed shapes in config/objects.ts do not carry yet. */
interface PodExtras {
  metadata: ObjectMeta & { generateName?: string };
  spec?: NonNullable<Pod['spec']> & {
    initContainers?: {
      name: string;
      restartPolicy?: string;
      ports?: { name?: string; containerPort: number; protocol?: string }[];
    }[];
  };
}

/** `<cluster>//Pod/<ns>/<name>` (istiod's `generatePodUID`). */
export function podUid(settings: MeshSettings, namespace: string, name: string): string {
  return `${settings.clusterId}//Pod/${namespace}/${name}`;
}

/** `<cluster>/networking.istio.io/WorkloadEntry/<ns>/<name>`. */
export function workloadEntryUid(settings: MeshSettings, namespace: string, name: string): string {
  return `${settings.clusterId}/networking.istio.io/WorkloadEntry/${namespace}/${name}`;
}

/** `<cluster>/networking.istio.io/ServiceEntry/<ns>/<name>/<address or hostname>`. */
export function serviceEntryWorkloadUid(
  settings: MeshSettings,
  namespace: string,
  name: string,
  addr: string,
): string {
  return `${settings.clusterId}/networking.istio.io/ServiceEntry/${namespace}/${name}/${addr}`;
}

/** `<cluster>/discovery.k8s.io/EndpointSlice/<ns>/<slice>/<first address>`. */
export function endpointSliceWorkloadUid(
  settings: MeshSettings,
  namespace: string,
  name: string,
  addr: string,
): string {
  return `${settings.clusterId}/discovery.k8s.io/EndpointSlice/${namespace}/${name}/${addr}`;
}

/** The result of building one source object into Workloads. */
export interface BuiltWorkloads {
  readonly workloads: Workload[];
  readonly diagnostics: Diagnostic[];
}

const NONE: BuiltWorkloads = Object.freeze({ workloads: [], diagnostics: [] }) as BuiltWorkloads;

/** Empty trust domain on the wire means `cluster.local`. */
function wireTrustDomain(settings: MeshSettings): string {
  return settings.trustDomain === 'cluster.local' ? '' : settings.trustDomain;
}

/** istiod's `setTunnelProtocol`: HBONE once istio-cni enrolled the pod, or when it speaks HBONE itself. */
function tunnelOf(
  labels: Readonly<Record<string, string>> | undefined,
  annotations: Readonly<Record<string, string>> | undefined,
): { tunnelProtocol: TunnelProtocol; nativeTunnel: boolean } {
  if (labels?.[LABELS.tunnel] === 'http') return { tunnelProtocol: TunnelProtocol.HBONE, nativeTunnel: true };
  if (annotations?.[ANNOTATIONS.redirection] === 'enabled') {
    return { tunnelProtocol: TunnelProtocol.HBONE, nativeTunnel: false };
  }
  return { tunnelProtocol: TunnelProtocol.NONE, nativeTunnel: false };
}

/** Canonical service name and revision, with istiod's label fallbacks. */
export function canonicalService(
  labels: Readonly<Record<string, string>> | undefined,
  workloadName: string,
): { canonicalName: string; canonicalRevision: string } {
  const pick = (keys: string[]) => {
    for (const k of keys) if (labels && Object.hasOwn(labels, k)) return labels[k];
    return undefined;
  };
  return {
    canonicalName: pick([LABELS.canonicalName, 'app.kubernetes.io/name', 'app']) ?? workloadName,
    canonicalRevision: pick([LABELS.canonicalRevision, 'app.kubernetes.io/version', 'version']) ?? 'latest',
  };
}

const CRONJOB_JOB_NAME = /^(.+)-\d{8,10}$/;

/**
 * The workload a pod belongs to, from its controller owner reference (istiod's
 * `GetDeployMetaFromPod`): a ReplicaSet named `<deploy>-<pod-template-hash>` is a Deployment, a Job
 * named `<cronjob>-<timestamp>` a CronJob; pods without a generated name are their own workload.
 * `service.istio.io/workload-name` overrides the name.
 */
export function podWorkloadOwner(pod: Pod): { kind: string; name: string } {
  const meta = (pod as unknown as PodExtras).metadata;
  const labels = meta.labels ?? {};
  let kind = 'Pod';
  let name = meta.name;
  if (meta.generateName) {
    const ref = (meta.ownerReferences ?? []).find((r) => r.controller === true);
    if (ref) {
      kind = ref.kind;
      name = ref.name;
      const hash = labels[LABELS.podTemplateHash];
      const rolloutHash = labels[LABELS.rolloutsPodTemplateHash];
      if (ref.kind === 'ReplicaSet' && hash && ref.name.endsWith(hash)) {
        name = ref.name.slice(0, ref.name.length - hash.length - 1);
        kind = 'Deployment';
      } else if (ref.kind === 'ReplicaSet' && rolloutHash && ref.name.endsWith(rolloutHash)) {
        name = ref.name.slice(0, ref.name.length - rolloutHash.length - 1);
        kind = 'Rollout';
      } else if (ref.kind === 'ReplicationController' && labels[LABELS.deploymentConfig]) {
        name = labels[LABELS.deploymentConfig] as string;
        kind = 'DeploymentConfig';
      } else if (ref.kind === 'Job') {
        const m = CRONJOB_JOB_NAME.exec(ref.name);
        if (m) {
          name = m[1] as string;
          kind = 'CronJob';
        }
      }
    }
  }
  if (name === '') name = meta.name;
  const override = labels[LABELS.workloadName];
  return { kind, name: override ?? name };
}

/** A container port by name (TCP only), including native sidecars (`restartPolicy: Always`). */
function findPodPort(pod: Pod, portName: string): number | undefined {
  const spec = (pod as unknown as PodExtras).spec;
  for (const c of spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      if (p.name === portName && (p.protocol ?? 'TCP') === 'TCP') return p.containerPort;
    }
  }
  for (const c of spec?.initContainers ?? []) {
    if (c.restartPolicy !== 'Always') continue;
    for (const p of c.ports ?? []) {
      if (p.name === portName && (p.protocol ?? 'TCP') === 'TCP') return p.containerPort;
    }
  }
  return undefined;
}

/** A Service or ServiceEntry host that selects a workload, with what its ports map needs. */
interface SelectingService {
  readonly key: string;
  readonly kind: 'Service' | 'ServiceEntry';
  readonly ports: readonly {
    readonly servicePort: number;
    /** Numeric target, 0 when named. For ServiceEntries, `targetPort || number`. */
    readonly targetPort: number;
    readonly portName?: string;
    /** Set when a Service names its targetPort. */
    readonly targetPortName?: string;
  }[];
}

function kubeSelecting(svc: Service, settings: MeshSettings): SelectingService {
  const ns = svc.metadata.namespace ?? '';
  return {
    key: serviceResourceName(ns, serviceHostname(svc.metadata.name, ns, settings.domainSuffix)),
    kind: 'Service',
    ports: (svc.spec?.ports ?? []).map((p) => {
      // The API server defaults an absent targetPort to the port.
      const tp = p.targetPort ?? p.port;
      return typeof tp === 'number'
        ? { servicePort: p.port, targetPort: tp, ...(p.name ? { portName: p.name } : {}) }
        : { servicePort: p.port, targetPort: 0, ...(p.name ? { portName: p.name } : {}), targetPortName: tp };
    }),
  };
}

function serviceEntrySelecting(se: ServiceEntry, host: string): SelectingService {
  return {
    key: serviceResourceName(se.metadata.namespace ?? '', host),
    kind: 'ServiceEntry',
    ports: (se.spec?.ports ?? []).map((p) => ({
      servicePort: p.number,
      targetPort: p.targetPort || p.number,
      ...(p.name ? { portName: p.name } : {}),
    })),
  };
}

/** Hosts of a ServiceEntry that it owns after de-duplication. */
function ownedHosts(se: ServiceEntry, inputs: AmbientInputs): string[] {
  const ns = se.metadata.namespace ?? '';
  return [...new Set(se.spec?.hosts ?? [])].filter((h) => {
    const o = inputs.hostnameOwner(ns, h);
    return o?.kind === 'ServiceEntry' && o.name === se.metadata.name;
  });
}

/**
 * Services (with a non-empty selector) and ServiceEntries (with a non-empty workloadSelector) of a
 * namespace that select these labels. ExternalName Services have no endpoints.
 */
function selectingServices(
  namespace: string,
  labels: Readonly<Record<string, string>>,
  inputs: AmbientInputs,
  includeKube: boolean,
): SelectingService[] {
  const out: SelectingService[] = [];
  if (includeKube) {
    for (const svc of inputs.selecting('Service', namespace, labels)) {
      if (svc.spec?.type !== 'ExternalName') out.push(kubeSelecting(svc, inputs.settings));
    }
  }
  for (const se of inputs.selecting('ServiceEntry', namespace, labels)) {
    for (const h of ownedHosts(se, inputs)) out.push(serviceEntrySelecting(se, h));
  }
  return out;
}

function sortedServices(entries: [string, PortList][]): Record<string, PortList> {
  // Map order is encoding order: sort so equal content always encodes to equal bytes.
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: Record<string, PortList> = {};
  for (const [k, v] of entries) out[k] = v;
  return out;
}

/** istiod's `constructServices`: per selecting service, the ports with named targets resolved on the pod. */
function podServices(pod: Pod, services: readonly SelectingService[]): Record<string, PortList> {
  const entries: [string, PortList][] = [];
  for (const svc of services) {
    const ports = [];
    for (const p of svc.ports) {
      let target = p.targetPort;
      if (p.targetPortName !== undefined) {
        const tp = findPodPort(pod, p.targetPortName);
        // The pod does not expose the named port: it does not serve this service port.
        if (tp === undefined) continue;
        target = tp;
      } else if (svc.kind === 'ServiceEntry' && p.portName) {
        const tp = findPodPort(pod, p.portName);
        if (tp !== undefined) target = tp;
        else if (target === 0) target = p.servicePort;
      }
      ports.push(create(PortSchema, { servicePort: p.servicePort, targetPort: target }));
    }
    entries.push([svc.key, create(PortListSchema, { ports })]);
  }
  return sortedServices(entries);
}

/** istiod's `constructServicesFromWorkloadEntry`: named ports resolve against the entry's `ports` map. */
function entryServices(
  spec: WorkloadEntrySpec,
  services: readonly SelectingService[],
): Record<string, PortList> {
  const entries: [string, PortList][] = [];
  const named = spec.ports ?? {};
  for (const svc of services) {
    const ports = [];
    for (const p of svc.ports) {
      let target = p.targetPort;
      if (svc.kind === 'Service') {
        if (p.targetPortName !== undefined) {
          const tv = named[p.targetPortName];
          if (tv === undefined) continue;
          target = tv;
        } else if (p.portName !== undefined && named[p.portName] !== undefined) {
          target = named[p.portName] as number;
        }
      } else if (p.portName !== undefined && named[p.portName] !== undefined) {
        target = named[p.portName] as number;
      } else if (target === 0) {
        target = p.servicePort;
      }
      ports.push(create(PortSchema, { servicePort: p.servicePort, targetPort: target }));
    }
    entries.push([svc.key, create(PortListSchema, { ports })]);
  }
  return sortedServices(entries);
}

function localityOf(locality: string | undefined): Locality | undefined {
  if (!locality) return undefined;
  const [region = '', zone = '', subzone = ''] = locality.split('/');
  if (region === '' && zone === '' && subzone === '') return undefined;
  return create(LocalitySchema, { region, zone, subzone });
}

interface WaypointFields {
  waypoint?: GatewayAddress;
  applicationTunnel?: ApplicationTunnel;
}

/**
 * istiod's `computeWaypoint`: a waypoint instance never gets a waypoint (it may get the sandwich
 * binding instead); anything else gets its workload waypoint if one is bound.
 */
function workloadWaypoint(
  meta: ObjectMeta,
  inputs: AmbientInputs,
  kind: string,
): { fields: WaypointFields; diagnostics: Diagnostic[] } {
  const inst = waypointInstanceOf(meta, inputs);
  if (inst.instance) {
    const b = inst.waypoint?.inboundBinding;
    return {
      fields: b
        ? { applicationTunnel: create(ApplicationTunnelSchema, { protocol: b.protocol, port: b.port }) }
        : {},
      diagnostics: [],
    };
  }
  const binding = waypointForWorkload(meta, inputs);
  const diagnostics: Diagnostic[] = binding.error
    ? [{ kind, namespace: meta.namespace ?? '', name: meta.name, ...binding.error }]
    : [];
  return { fields: binding.waypoint ? { waypoint: binding.waypoint.address } : {}, diagnostics };
}

function isPodReady(pod: Pod): boolean {
  return (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/**
 * Pod → Workload (istiod's `podWorkloadBuilder`). No Workload for a terminal pod (Succeeded or
 * Failed) or one without a (valid) IP yet; a Pending pod with an IP is sent. `workload_type` is
 * always POD, as istiod sends it for compatibility; the owner only shapes `workload_name`.
 */
export function buildPodWorkload(pod: Pod, inputs: AmbientInputs): BuiltWorkloads {
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return NONE;
  const ips = pod.status?.podIPs?.length
    ? pod.status.podIPs.map((p) => p.ip)
    : pod.status?.podIP
      ? [pod.status.podIP]
      : [];
  if (ips.length === 0) return NONE;
  const addresses: Uint8Array[] = [];
  for (const ip of ips) {
    const b = parseIp(ip);
    if (!b) return NONE;
    addresses.push(b);
  }
  const settings = inputs.settings;
  const ns = pod.metadata.namespace ?? '';
  const labels = pod.metadata.labels ?? {};

  const services = selectingServices(ns, labels, inputs, true);
  // Services without a selector reach the pod through EndpointSlices that name it.
  const seen = new Set(services.map((s) => s.key));
  for (const slice of inputs.endpointSlicesForPod(pod)) {
    const svcName = slice.metadata.labels?.[LABELS.endpointSliceService];
    const sliceNs = slice.metadata.namespace ?? '';
    if (!svcName) continue;
    const key = serviceResourceName(sliceNs, serviceHostname(svcName, sliceNs, settings.domainSuffix));
    if (seen.has(key)) continue;
    const svc = inputs.service(sliceNs, svcName);
    if (!svc || svc.spec?.type === 'ExternalName') continue;
    seen.add(key);
    services.push(kubeSelecting(svc, settings));
  }

  const wp = workloadWaypoint(pod.metadata, inputs, 'Pod');
  const owner = podWorkloadOwner(pod);
  const workload = create(WorkloadSchema, {
    uid: podUid(settings, ns, pod.metadata.name),
    name: pod.metadata.name,
    namespace: ns,
    addresses,
    network: settings.network,
    ...tunnelOf(labels, pod.metadata.annotations),
    trustDomain: wireTrustDomain(settings),
    serviceAccount: pod.spec?.serviceAccountName ?? '',
    ...wp.fields,
    node: pod.spec?.nodeName ?? '',
    ...canonicalService(labels, owner.name),
    workloadType: WorkloadType.POD,
    workloadName: owner.name,
    services: podServices(pod, services),
    authorizationPolicies: workloadPolicyNames(ns, labels, inputs),
    status:
      isPodReady(pod) && pod.metadata.deletionTimestamp === undefined
        ? WorkloadStatus.HEALTHY
        : WorkloadStatus.UNHEALTHY,
    clusterId: settings.clusterId,
    networkMode: pod.spec?.hostNetwork ? NetworkMode.HOST_NETWORK : NetworkMode.STANDARD,
  });
  return { workloads: [workload], diagnostics: wp.diagnostics };
}

function entryAddress(address: string | undefined): { addresses: Uint8Array[] } | { hostname: string } {
  const b = address ? parseIp(address) : undefined;
  return b ? { addresses: [b] } : { hostname: address ?? '' };
}

/** WorkloadEntry → Workload (istiod's `workloadEntryWorkloadBuilder`). */
export function buildWorkloadEntryWorkload(we: WorkloadEntry, inputs: AmbientInputs): BuiltWorkloads {
  const settings = inputs.settings;
  const ns = we.metadata.namespace ?? '';
  const spec = we.spec ?? {};
  const labels = workloadEntryLabels(we);
  const wp = workloadWaypoint({ ...we.metadata, labels }, inputs, 'WorkloadEntry');
  // istiod's `WorkloadNameFromWorkloadEntry`: the auto-registration group, else the label, else the name.
  const workloadName =
    we.metadata.annotations?.[ANNOTATIONS.autoRegistrationGroup] ??
    labels[LABELS.workloadName] ??
    we.metadata.name;
  const locality = localityOf(spec.locality);
  const workload = create(WorkloadSchema, {
    uid: workloadEntryUid(settings, ns, we.metadata.name),
    name: we.metadata.name,
    namespace: ns,
    ...entryAddress(spec.address),
    network: spec.network || settings.network,
    ...tunnelOf(labels, we.metadata.annotations),
    trustDomain: wireTrustDomain(settings),
    serviceAccount: spec.serviceAccount ?? '',
    ...wp.fields,
    ...canonicalService(labels, workloadName),
    workloadType: WorkloadType.POD,
    workloadName,
    services: entryServices(spec, selectingServices(ns, labels, inputs, true)),
    authorizationPolicies: workloadPolicyNames(ns, labels, inputs),
    status: WorkloadStatus.HEALTHY,
    clusterId: settings.clusterId,
    ...(locality ? { locality } : {}),
    ...(spec.weight && spec.weight > 0 ? { capacity: spec.weight } : {}),
  });
  return { workloads: [workload], diagnostics: wp.diagnostics };
}

/**
 * A ServiceEntry's inline endpoints → Workloads (istiod's `serviceEntryWorkloadBuilder`). A DNS
 * entry without endpoints or selector gets one implicit endpoint per host, addressed by hostname.
 */
export function buildServiceEntryWorkloads(se: ServiceEntry, inputs: AmbientInputs): BuiltWorkloads {
  const settings = inputs.settings;
  const ns = se.metadata.namespace ?? '';
  const spec = se.spec ?? {};
  let eps = spec.endpoints ?? [];
  const resolution = spec.resolution ?? 'NONE';
  const implicit =
    eps.length === 0 &&
    (resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN' || (resolution as string) === 'DYNAMIC_DNS') &&
    spec.workloadSelector === undefined;
  if (eps.length === 0 && !implicit) return NONE;
  const hosts = ownedHosts(se, inputs);
  // Every host lost to another publisher: its endpoints are not served either.
  if (hosts.length === 0) return NONE;
  const all = hosts.map((h) => serviceEntrySelecting(se, h));
  if (implicit) eps = hosts.map((h) => ({ address: h }));

  const labels = se.metadata.labels ?? {};
  const policies = workloadPolicyNames(ns, labels, inputs);
  const canonical = canonicalService(labels, se.metadata.name);
  const tunnel = tunnelOf(labels, se.metadata.annotations);
  const workloads: Workload[] = [];
  const diagnostics: Diagnostic[] = [];
  eps.forEach((ep, i) => {
    const services = implicit ? [all[i] as SelectingService] : all;
    let fields: WaypointFields = {};
    if (!implicit) {
      // An endpoint has no metadata of its own: its labels stand in for the object's.
      const wp = workloadWaypoint(
        { name: se.metadata.name, namespace: ns, labels: ep.labels ?? {} },
        inputs,
        'ServiceEntry',
      );
      fields = wp.fields;
      diagnostics.push(...wp.diagnostics);
    }
    const locality = localityOf(ep.locality);
    workloads.push(
      create(WorkloadSchema, {
        uid: serviceEntryWorkloadUid(settings, ns, se.metadata.name, ep.address ?? ''),
        name: se.metadata.name,
        namespace: ns,
        ...entryAddress(ep.address),
        network: ep.network || settings.network,
        ...tunnel,
        trustDomain: wireTrustDomain(settings),
        serviceAccount: ep.serviceAccount ?? '',
        ...fields,
        ...canonical,
        workloadType: WorkloadType.POD,
        workloadName: se.metadata.name,
        services: entryServices(ep, services),
        authorizationPolicies: policies,
        status: WorkloadStatus.HEALTHY,
        clusterId: settings.clusterId,
        ...(locality ? { locality } : {}),
        ...(ep.weight && ep.weight > 0 ? { capacity: ep.weight } : {}),
      }),
    );
  });
  return { workloads, diagnostics };
}

/**
 * The non-pod endpoints of a Service's EndpointSlice → Workloads (istiod's
 * `endpointSlicesBuilder`). Pod endpoints are skipped: the Pod itself says much more. These are
 * addresses of Services without selectors (manually managed endpoints); they carry no identity,
 * so they are marked HOST_NETWORK (shared address, never looked up by IP) and get no policies.
 */
export function buildEndpointSliceWorkloads(slice: EndpointSlice, inputs: AmbientInputs): BuiltWorkloads {
  const settings = inputs.settings;
  const svcName = slice.metadata.labels?.[LABELS.endpointSliceService];
  if (!svcName || slice.addressType === 'FQDN') return NONE;
  const ns = slice.metadata.namespace ?? '';
  const svc = inputs.service(ns, svcName);
  if (!svc || svc.spec?.type === 'ExternalName') return NONE;
  const key = serviceResourceName(ns, serviceHostname(svcName, ns, settings.domainSuffix));

  // Slice ports carry the service port's name and the target port number.
  const ports = [];
  for (const p of slice.ports ?? []) {
    if (p.name === undefined || p.port === undefined || (p.protocol ?? 'TCP') !== 'TCP') continue;
    const sp = (svc.spec?.ports ?? []).find((s) => (s.name ?? '') === p.name);
    if (sp) ports.push(create(PortSchema, { servicePort: sp.port, targetPort: p.port }));
  }
  const workloads: Workload[] = [];
  const seen = new Set<string>();
  for (const ep of slice.endpoints ?? []) {
    if (ep.targetRef?.kind === 'Pod') continue;
    const first = ep.addresses[0];
    if (first === undefined || seen.has(first)) continue;
    seen.add(first);
    const addresses: Uint8Array[] = [];
    let valid = true;
    for (const a of ep.addresses) {
      const b = parseIp(a);
      if (!b) valid = false;
      else addresses.push(b);
    }
    if (!valid) continue;
    workloads.push(
      create(WorkloadSchema, {
        uid: endpointSliceWorkloadUid(settings, ns, slice.metadata.name, first),
        name: slice.metadata.name,
        namespace: ns,
        addresses,
        network: settings.network,
        trustDomain: wireTrustDomain(settings),
        services: { [key]: create(PortListSchema, { ports }) },
        status: ep.conditions?.ready === false ? WorkloadStatus.UNHEALTHY : WorkloadStatus.HEALTHY,
        clusterId: settings.clusterId,
        networkMode: NetworkMode.HOST_NETWORK,
      }),
    );
  }
  return { workloads, diagnostics: [] };
}

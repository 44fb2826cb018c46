import type { Service, ServiceEntry, ServicePort } from '@ambient/common/config/objects';
import {
  AppProtocol,
  IPFamilies,
  type LoadBalancing,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  LoadBalancingSchema,
  type NetworkAddress,
  NetworkAddressSchema,
  type Port,
  PortSchema,
  ServiceSchema,
  type Service as WdsService,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { create } from '@bufbuild/protobuf';
import type { Diagnostic } from './diagnostics.ts';
import { maskPrefix, parseCidr, parseIp } from './ip.ts';
import { ANNOTATIONS, LABELS } from './labels.ts';
import type { AmbientInputs } from './state.ts';
import { type WaypointBinding, waypointForService, weightedWaypoints } from './waypoints.ts';

/** Fields of the API objects the typed shapes in config/objects.ts do not carry yet. */
interface ServiceSpecExtras {
  internalTrafficPolicy?: 'Cluster' | 'Local';
}
interface ServiceEntrySpecExtras {
  subjectAltNames?: string[];
}

/** `<name>.<namespace>.svc.<domainSuffix>`: a Kubernetes Service's hostname. */
export function serviceHostname(name: string, namespace: string, domainSuffix: string): string {
  return `${name}.${namespace}.svc.${domainSuffix}`;
}

/** The xDS name of a Service: `<namespace>/<hostname>`. */
export function serviceResourceName(namespace: string, hostname: string): string {
  return `${namespace}/${hostname}`;
}

/** One object publishing a hostname. */
export interface HostnameCandidate {
  readonly kind: 'Service' | 'ServiceEntry';
  readonly namespace: string;
  readonly name: string;
  /** RFC 3339 creationTimestamp ('' when unknown); older wins among ServiceEntries. */
  readonly created: string;
}

function olderThan(a: HostnameCandidate, b: HostnameCandidate): boolean {
  if (a.created !== b.created) {
    // RFC 3339 timestamps in UTC with the same precision order lexically; '' (unknown) sorts last.
    if (a.created === '') return false;
    if (b.created === '') return true;
    return a.created < b.created;
  }
  // Ties go to the lexically smaller name so the choice does not depend on event order.
  return a.name < b.name;
}

/**
 * istiod's `selectWorkloadServices`: for one hostname, the publisher in each namespace (a
 * Kubernetes Service always wins, else the oldest ServiceEntry) and the namespace whose publisher
 * is canonical (the Kubernetes Service if any, else the oldest ServiceEntry winner).
 */
export function pickHostnameOwners(candidates: Iterable<HostnameCandidate>): {
  byNamespace: Map<string, HostnameCandidate>;
  canonical?: string;
} {
  const byNamespace = new Map<string, HostnameCandidate>();
  for (const c of candidates) {
    const cur = byNamespace.get(c.namespace);
    if (!cur || (cur.kind !== 'Service' && (c.kind === 'Service' || olderThan(c, cur)))) {
      byNamespace.set(c.namespace, c);
    }
  }
  let canonical: HostnameCandidate | undefined;
  for (const c of byNamespace.values()) {
    if (canonical?.kind === 'Service') break;
    if (!canonical || c.kind === 'Service' || olderThan(c, canonical)) canonical = c;
  }
  return canonical ? { byNamespace, canonical: canonical.namespace } : { byNamespace };
}

const WELL_KNOWN_TCP_PORTS = new Set([25, 53, 3306, 27017]);

/** Istio's protocol names (`protocol.Parse`), upper-cased as istiod spells them. */
function parseProtocol(s: string): string | undefined {
  const p = s.toLowerCase();
  switch (p) {
    case 'tcp':
    case 'udp':
    case 'grpc':
    case 'http':
    case 'http2':
    case 'https':
    case 'tls':
    case 'mongo':
    case 'redis':
    case 'mysql':
      return p.toUpperCase();
    case 'grpc-web':
      return 'GRPC-Web';
    case 'http_proxy':
      return 'HTTP_PROXY';
    default:
      return undefined;
  }
}

function appProtocolOf(protocol: string | undefined): AppProtocol {
  switch (protocol) {
    case 'HTTP':
      return AppProtocol.HTTP11;
    case 'HTTP2':
      return AppProtocol.HTTP2;
    case 'GRPC':
      return AppProtocol.GRPC;
    case 'TLS':
    case 'HTTPS':
      return AppProtocol.TLS;
    case 'TCP':
      return AppProtocol.TCP;
    default:
      return AppProtocol.UNKNOWN;
  }
}

/** istiod's `ConvertProtocol` for a Service port: appProtocol, else the port name's prefix. */
export function kubePortAppProtocol(p: ServicePort): AppProtocol {
  if (p.protocol === 'UDP') return AppProtocol.UNKNOWN;
  let name = p.name ?? '';
  if (p.appProtocol !== undefined) {
    name = p.appProtocol;
    // Kubernetes' standard appProtocol names.
    if (name === 'kubernetes.io/h2c') return AppProtocol.HTTP2;
    if (name === 'kubernetes.io/ws') return AppProtocol.HTTP11;
    if (name === 'kubernetes.io/wss') return AppProtocol.TLS;
  }
  if (name.length >= 8 && name.slice(0, 8).toLowerCase() === 'grpc-web') return AppProtocol.UNKNOWN;
  const dash = name.indexOf('-');
  const proto = parseProtocol(dash === -1 ? name : name.slice(0, dash));
  if (proto === undefined && WELL_KNOWN_TCP_PORTS.has(p.port)) return AppProtocol.TCP;
  return proto === 'UDP' ? AppProtocol.UNKNOWN : appProtocolOf(proto);
}

/** ServiceEntry ports name their protocol directly. */
export function serviceEntryPortAppProtocol(protocol: string | undefined): AppProtocol {
  return appProtocolOf(parseProtocol(protocol ?? ''));
}

type TrafficDistribution = 'any' | 'zone' | 'node';

/** `spec.trafficDistribution`, else the annotation on the object, else on its namespace. */
function trafficDistribution(
  spec: string | undefined,
  annotations: Readonly<Record<string, string>> | undefined,
  nsAnnotations: Readonly<Record<string, string>> | undefined,
): TrafficDistribution {
  if (spec === 'PreferClose' || spec === 'PreferSameZone') return 'zone';
  if (spec === 'PreferSameNode') return 'node';
  const ann =
    annotations?.[ANNOTATIONS.trafficDistribution] ?? nsAnnotations?.[ANNOTATIONS.trafficDistribution] ?? '';
  switch (ann.toLowerCase()) {
    case 'preferclose':
    case 'prefersamezone':
      return 'zone';
    case 'prefersamenode':
      return 'node';
    default:
      return 'any';
  }
}

function distributionLoadBalancing(td: TrafficDistribution): LoadBalancing | undefined {
  const S = LoadBalancing_Scope;
  if (td === 'zone') {
    return create(LoadBalancingSchema, {
      routingPreference: [S.NETWORK, S.REGION, S.ZONE],
      mode: LoadBalancing_Mode.FAILOVER,
    });
  }
  if (td === 'node') {
    return create(LoadBalancingSchema, {
      routingPreference: [S.NETWORK, S.REGION, S.ZONE, S.SUBZONE, S.NODE],
      mode: LoadBalancing_Mode.FAILOVER,
    });
  }
  return undefined;
}

/** Go's `strconv.ParseBool`. */
function parseBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

/** `istio.io/ingress-use-waypoint` on the object, else its namespace, as a bool. */
function ingressUseWaypoint(
  labels: Readonly<Record<string, string>> | undefined,
  nsLabels: Readonly<Record<string, string>> | undefined,
): boolean {
  const v = labels?.[LABELS.ingressUseWaypoint] ?? nsLabels?.[LABELS.ingressUseWaypoint];
  return v === undefined ? false : parseBool(v) === true;
}

/** The result of building one source object into WDS Services. */
export interface BuiltServices {
  readonly services: WdsService[];
  readonly diagnostics: Diagnostic[];
}

function waypointDiagnostics(
  kind: string,
  namespace: string,
  name: string,
  ...errors: (WaypointBinding['error'] | undefined)[]
): Diagnostic[] {
  return errors.filter((e) => e !== undefined).map((e) => ({ kind, namespace, name, ...e }));
}

/**
 * A Kubernetes Service → WDS Service (istiod's `constructService`). ExternalName Services are not
 * served (DNS forwarding handles them). `canonical` is always true: a Service's hostname is its own.
 */
export function buildKubeService(svc: Service, inputs: AmbientInputs): BuiltServices {
  const ns = svc.metadata.namespace ?? '';
  const name = svc.metadata.name;
  const spec = (svc.spec ?? {}) as NonNullable<Service['spec']> & ServiceSpecExtras;
  if (spec.type === 'ExternalName') return { services: [], diagnostics: [] };
  const settings = inputs.settings;

  const vips = (spec.clusterIPs?.length ? spec.clusterIPs : [spec.clusterIP ?? '']).filter(
    (ip) => ip !== '' && ip !== 'None',
  );
  const addresses: NetworkAddress[] = [];
  for (const vip of vips) {
    const b = parseIp(vip);
    if (!b) {
      return {
        services: [],
        diagnostics: [
          {
            kind: 'Service',
            namespace: ns,
            name,
            reason: 'InvalidValue',
            message: `cluster IP ${JSON.stringify(vip)} is not an IP address`,
          },
        ],
      };
    }
    addresses.push(create(NetworkAddressSchema, { network: settings.network, address: b }));
  }

  const ports: Port[] = (spec.ports ?? []).map((p) =>
    create(PortSchema, {
      servicePort: p.port,
      // A named target resolves per pod (Workload.services); an absent one defaults to the port.
      targetPort: typeof (p.targetPort ?? p.port) === 'number' ? ((p.targetPort ?? p.port) as number) : 0,
      appProtocol: kubePortAppProtocol(p),
    }),
  );

  const nsObj = inputs.namespace(ns);
  let lb: LoadBalancing | undefined;
  if (spec.internalTrafficPolicy === 'Local') {
    lb = create(LoadBalancingSchema, {
      routingPreference: [LoadBalancing_Scope.NODE],
      mode: LoadBalancing_Mode.STRICT,
    });
  } else {
    lb = distributionLoadBalancing(
      trafficDistribution(spec.trafficDistribution, svc.metadata.annotations, nsObj?.metadata.annotations),
    );
  }
  if (spec.publishNotReadyAddresses) {
    lb ??= create(LoadBalancingSchema, {});
    lb.healthPolicy = LoadBalancing_HealthPolicy.ALLOW_ALL;
  }

  const families = spec.ipFamilies ?? [];
  const ipFamilies =
    families.length === 2
      ? IPFamilies.DUAL
      : families.length === 1
        ? families[0] === 'IPv4'
          ? IPFamilies.IPV4_ONLY
          : IPFamilies.IPV6_ONLY
        : IPFamilies.AUTOMATIC;

  const binding = waypointForService(svc.metadata, inputs);
  const weighted = binding.waypoint
    ? weightedWaypoints(svc.metadata, binding.waypoint, inputs)
    : { weighted: [] };
  const service = create(ServiceSchema, {
    name,
    namespace: ns,
    hostname: serviceHostname(name, ns, settings.domainSuffix),
    addresses,
    ports,
    ...(binding.waypoint ? { waypoint: binding.waypoint.address } : {}),
    ...(lb ? { loadBalancing: lb } : {}),
    ipFamilies,
    canonical: true,
    ingressUseWaypoint: binding.waypoint
      ? ingressUseWaypoint(svc.metadata.labels, nsObj?.metadata.labels)
      : false,
    weightedWaypoints: weighted.weighted,
  });
  return {
    services: [service],
    diagnostics: waypointDiagnostics('Service', ns, name, binding.error, weighted.error),
  };
}

/**
 * A ServiceEntry → one WDS Service per host it publishes (istiod's `constructServiceEntries`).
 * Hosts another object owns after de-duplication are left out; `canonical` follows
 * {@link pickHostnameOwners}. An unparsable address drops the whole entry, as in istiod.
 */
export function buildServiceEntryServices(se: ServiceEntry, inputs: AmbientInputs): BuiltServices {
  const ns = se.metadata.namespace ?? '';
  const name = se.metadata.name;
  const spec = (se.spec ?? {}) as NonNullable<ServiceEntry['spec']> & ServiceEntrySpecExtras;
  const settings = inputs.settings;

  const addresses: NetworkAddress[] = [];
  for (const a of spec.addresses ?? []) {
    const p = parseCidr(a);
    if (!p) {
      return {
        services: [],
        diagnostics: [
          {
            kind: 'ServiceEntry',
            namespace: ns,
            name,
            reason: 'InvalidValue',
            message: `address ${JSON.stringify(a)} is not an IP address or CIDR`,
          },
        ],
      };
    }
    const m = maskPrefix(p);
    const single = m.length === m.address.length * 8;
    addresses.push(
      create(NetworkAddressSchema, {
        network: settings.network,
        address: m.address,
        ...(single ? {} : { length: m.length }),
      }),
    );
  }

  const ports = (spec.ports ?? []).map((p) =>
    create(PortSchema, {
      servicePort: p.number,
      targetPort: p.targetPort || p.number,
      appProtocol: serviceEntryPortAppProtocol(p.protocol),
    }),
  );

  const nsObj = inputs.namespace(ns);
  let lb: LoadBalancing | undefined;
  if (spec.resolution === 'NONE') {
    // Traffic goes to the address the client dialled; the health policy only keeps WDS readable.
    lb = create(LoadBalancingSchema, {
      mode: LoadBalancing_Mode.PASSTHROUGH,
      healthPolicy: LoadBalancing_HealthPolicy.ALLOW_ALL,
    });
  } else {
    lb = distributionLoadBalancing(
      trafficDistribution(undefined, se.metadata.annotations, nsObj?.metadata.annotations),
    );
  }

  const binding = waypointForService(se.metadata, inputs);
  const weighted = binding.waypoint
    ? weightedWaypoints(se.metadata, binding.waypoint, inputs)
    : { weighted: [] };
  const ingress = binding.waypoint ? ingressUseWaypoint(se.metadata.labels, nsObj?.metadata.labels) : false;

  const services: WdsService[] = [];
  for (const host of new Set(spec.hosts ?? [])) {
    const owner = inputs.hostnameOwner(ns, host);
    if (owner?.kind !== 'ServiceEntry' || owner.name !== name) continue;
    services.push(
      create(ServiceSchema, {
        name,
        namespace: ns,
        hostname: host,
        addresses,
        ports,
        subjectAltNames: spec.subjectAltNames ?? [],
        ...(binding.waypoint ? { waypoint: binding.waypoint.address } : {}),
        ...(lb ? { loadBalancing: lb } : {}),
        canonical: inputs.canonicalNamespace(host) === ns,
        ingressUseWaypoint: ingress,
        weightedWaypoints: weighted.weighted,
      }),
    );
  }
  return {
    services,
    diagnostics: waypointDiagnostics('ServiceEntry', ns, name, binding.error, weighted.error),
  };
}

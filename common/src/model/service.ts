import {
  AppProtocol,
  IPFamilies,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  type LoadBalancing as PbLoadBalancing,
  type Service as PbService,
  Service_Visibility,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { ModelError } from './errors.ts';
import { ipFamily } from './ip-address.ts';
import {
  checkPort,
  type GatewayAddress,
  gatewayAddressFromProto,
  type HealthStatus,
  ipFromBytes,
  type NetworkAddress,
  type PortMap,
  unknownEnum,
} from './workload.ts';

/** `AppProtocol` names as in the proto. */
export type AppProtocolName = 'UNKNOWN' | 'HTTP11' | 'HTTP2' | 'GRPC' | 'TCP' | 'TLS';

export interface ServicePort {
  readonly servicePort: number;
  /** 0 means unknown (a named port); the per-endpoint map in `Workload.services` then decides. */
  readonly targetPort: number;
  readonly appProtocol: AppProtocolName;
}

/** `LoadBalancing.Scope` without UNSPECIFIED (ztunnel rejects it), in ztunnel's spelling. */
export type LoadBalancerScope = 'Region' | 'Zone' | 'Subzone' | 'Node' | 'Cluster' | 'Network';
/** `LoadBalancing.Mode`; UNSPECIFIED is `Standard` (ignore routing preferences). */
export type LoadBalancerMode = 'Standard' | 'Strict' | 'Failover' | 'Passthrough';
export type LoadBalancerHealthPolicy = 'OnlyHealthy' | 'AllowAll';

export interface LoadBalancer {
  readonly routingPreferences: readonly LoadBalancerScope[];
  readonly mode: LoadBalancerMode;
  readonly healthPolicy: LoadBalancerHealthPolicy;
}

/** `IPFamilies` with AUTOMATIC as absence, as ztunnel does. */
export type ServiceIpFamilies = 'IPv4' | 'IPv6' | 'Dual';

/** A VIP; `prefixLength` is set only for CIDR VIPs (istio 1.30+) shorter than a host address. */
export interface ServiceVip extends NetworkAddress {
  readonly prefixLength?: number;
}

export interface WeightedWaypoint {
  readonly destination: GatewayAddress;
  /** Relative weight; 0 is never chosen. */
  readonly weight: number;
}

/**
 * A WDS Service. Endpoints are not part of it: they are derived from the workloads whose
 * `services` map names this service (see ServiceStore), so a Service update never loses them.
 */
export interface Service {
  readonly name: string;
  readonly namespace: string;
  readonly hostname: string;
  /** `namespace/hostname`: the xDS resource name and store key. */
  readonly key: string;
  readonly vips: readonly ServiceVip[];
  /** service port → port details. */
  readonly ports: ReadonlyMap<number, ServicePort>;
  readonly subjectAltNames: readonly string[];
  readonly waypoint?: GatewayAddress;
  readonly weightedWaypoints: readonly WeightedWaypoint[];
  readonly loadBalancer?: LoadBalancer;
  readonly ipFamilies?: ServiceIpFamilies;
  readonly canonical: boolean;
  readonly ingressUseWaypoint: boolean;
  readonly visibility: 'Public' | 'Namespace';
}

/** One workload backing a service, as derived from `Workload.services`. */
export interface Endpoint {
  readonly workloadUid: string;
  /** Per-endpoint service port → target port override. */
  readonly port: PortMap;
  readonly status: HealthStatus;
}

/** `namespace/hostname`. */
export function serviceKey(namespace: string, hostname: string): string {
  return `${namespace}/${hostname}`;
}

function appProtocolFromProto(v: AppProtocol, owner: string): AppProtocolName {
  switch (v) {
    case AppProtocol.UNKNOWN:
      return 'UNKNOWN';
    case AppProtocol.HTTP11:
      return 'HTTP11';
    case AppProtocol.HTTP2:
      return 'HTTP2';
    case AppProtocol.GRPC:
      return 'GRPC';
    case AppProtocol.TCP:
      return 'TCP';
    case AppProtocol.TLS:
      return 'TLS';
    default:
      throw unknownEnum('ports.app_protocol', v, owner);
  }
}

function scopeFromProto(v: LoadBalancing_Scope, owner: string): LoadBalancerScope {
  switch (v) {
    case LoadBalancing_Scope.REGION:
      return 'Region';
    case LoadBalancing_Scope.ZONE:
      return 'Zone';
    case LoadBalancing_Scope.SUBZONE:
      return 'Subzone';
    case LoadBalancing_Scope.NODE:
      return 'Node';
    case LoadBalancing_Scope.CLUSTER:
      return 'Cluster';
    case LoadBalancing_Scope.NETWORK:
      return 'Network';
    default:
      // UNSPECIFIED_SCOPE included: ztunnel refuses it ("invalid target").
      throw unknownEnum('load_balancing.routing_preference', v, owner);
  }
}

function modeFromProto(v: LoadBalancing_Mode, owner: string): LoadBalancerMode {
  switch (v) {
    case LoadBalancing_Mode.UNSPECIFIED_MODE:
      return 'Standard';
    case LoadBalancing_Mode.STRICT:
      return 'Strict';
    case LoadBalancing_Mode.FAILOVER:
      return 'Failover';
    case LoadBalancing_Mode.PASSTHROUGH:
      return 'Passthrough';
    default:
      throw unknownEnum('load_balancing.mode', v, owner);
  }
}

function healthPolicyFromProto(v: LoadBalancing_HealthPolicy, owner: string): LoadBalancerHealthPolicy {
  switch (v) {
    case LoadBalancing_HealthPolicy.ONLY_HEALTHY:
      return 'OnlyHealthy';
    case LoadBalancing_HealthPolicy.ALLOW_ALL:
      return 'AllowAll';
    default:
      throw unknownEnum('load_balancing.health_policy', v, owner);
  }
}

function loadBalancerFromProto(pb: PbLoadBalancing, owner: string): LoadBalancer {
  return Object.freeze({
    routingPreferences: Object.freeze(pb.routingPreference.map((s) => scopeFromProto(s, owner))),
    mode: modeFromProto(pb.mode, owner),
    healthPolicy: healthPolicyFromProto(pb.healthPolicy, owner),
  });
}

function ipFamiliesFromProto(v: IPFamilies, owner: string): ServiceIpFamilies | undefined {
  switch (v) {
    case IPFamilies.AUTOMATIC:
      return undefined;
    case IPFamilies.IPV4_ONLY:
      return 'IPv4';
    case IPFamilies.IPV6_ONLY:
      return 'IPv6';
    case IPFamilies.DUAL:
      return 'Dual';
    default:
      throw unknownEnum('ip_families', v, owner);
  }
}

function visibilityFromProto(v: Service_Visibility, owner: string): 'Public' | 'Namespace' {
  switch (v) {
    case Service_Visibility.PUBLIC:
      return 'Public';
    case Service_Visibility.NAMESPACE:
      return 'Namespace';
    default:
      throw unknownEnum('visibility', v, owner);
  }
}

/**
 * Converts a WDS Service into the model (ztunnel `TryFrom<&XdsService> for Service`). Throws
 * ModelError naming the first problem.
 */
export function serviceFromProto(pb: PbService): Service {
  if (pb.namespace === '') {
    throw new ModelError('MISSING_NAMESPACE', `service ${JSON.stringify(pb.hostname)} has no namespace`);
  }
  if (pb.hostname === '') {
    throw new ModelError('MISSING_HOSTNAME', `service ${pb.namespace}/${pb.name} has no hostname`);
  }
  const key = serviceKey(pb.namespace, pb.hostname);
  const owner = `service ${key}`;
  const vips = pb.addresses.map((a, i): ServiceVip => {
    const ip = ipFromBytes(a.address, `${owner} addresses[${i}].address`);
    const width = ipFamily(ip) === 4 ? 32 : 128;
    if (a.length === undefined || a.length === width) return Object.freeze({ network: a.network, ip });
    if (a.length > width) {
      throw new ModelError(
        'INVALID_CIDR',
        `${owner} addresses[${i}] has prefix length ${a.length}, longer than ${width} for ${ip}`,
      );
    }
    return Object.freeze({ network: a.network, ip, prefixLength: a.length });
  });
  const ports = new Map<number, ServicePort>();
  for (const p of pb.ports) {
    const servicePort = checkPort(p.servicePort, `${owner} ports.service_port`);
    ports.set(
      servicePort,
      Object.freeze({
        servicePort,
        targetPort: checkPort(p.targetPort, `${owner} ports.target_port`),
        appProtocol: appProtocolFromProto(p.appProtocol, owner),
      }),
    );
  }
  const weightedWaypoints = pb.weightedWaypoints.map((w, i): WeightedWaypoint => {
    if (w.destination === undefined) {
      throw new ModelError(
        'GATEWAY_DESTINATION_MISSING',
        `${owner} weighted_waypoints[${i}] has no destination`,
      );
    }
    return Object.freeze({
      destination: gatewayAddressFromProto(w.destination, `${owner} weighted_waypoints[${i}]`),
      weight: w.weight,
    });
  });
  const loadBalancer =
    pb.loadBalancing === undefined ? undefined : loadBalancerFromProto(pb.loadBalancing, owner);
  const ipFamilies = ipFamiliesFromProto(pb.ipFamilies, owner);
  return Object.freeze({
    name: pb.name,
    namespace: pb.namespace,
    hostname: pb.hostname,
    key,
    vips: Object.freeze(vips),
    ports,
    subjectAltNames: Object.freeze([...pb.subjectAltNames]),
    ...(pb.waypoint === undefined
      ? {}
      : { waypoint: gatewayAddressFromProto(pb.waypoint, `${owner} waypoint`) }),
    weightedWaypoints: Object.freeze(weightedWaypoints),
    ...(loadBalancer === undefined ? {} : { loadBalancer }),
    ...(ipFamilies === undefined ? {} : { ipFamilies }),
    canonical: pb.canonical,
    ingressUseWaypoint: pb.ingressUseWaypoint,
    visibility: visibilityFromProto(pb.visibility, owner),
  });
}

/** Whether an endpoint with this health may be chosen (health_policy ONLY_HEALTHY by default). */
export function acceptsEndpointHealth(service: Service, status: HealthStatus): boolean {
  return status === 'Healthy' || service.loadBalancer?.healthPolicy === 'AllowAll';
}

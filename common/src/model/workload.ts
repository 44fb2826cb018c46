import {
  ApplicationTunnel_Protocol,
  NetworkMode,
  type GatewayAddress as PbGatewayAddress,
  type NetworkAddress as PbNetworkAddress,
  type PortList as PbPortList,
  type Workload as PbWorkload,
  TunnelProtocol,
  WorkloadStatus,
  WorkloadType,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { type Identity, IdentityError, workloadIdentity } from '../identity/identity.ts';
import { ModelError } from './errors.ts';
import { formatIp } from './ip-address.ts';

/** Applied when `Workload.cluster_id` is empty (spec §11.A.4). */
export const DEFAULT_CLUSTER_ID = 'Kubernetes';

/** An IP on a named network; `ip` is canonical (see ip-address.ts), `network` may be empty. */
export interface NetworkAddress {
  readonly network: string;
  readonly ip: string;
}

/** `network/ip`: the store key, the on-demand xDS alias and the config_dump spelling. */
export function networkAddressKey(network: string, ip: string): string {
  return `${network}/${ip}`;
}

/** Where a waypoint or network gateway lives: a Service/Workload hostname, or a bare address. */
export type GatewayDestination =
  | { readonly kind: 'hostname'; readonly namespace: string; readonly hostname: string }
  | { readonly kind: 'address'; readonly address: NetworkAddress };

/** A waypoint or east-west gateway reference (spec §3.3 GatewayAddress). */
export interface GatewayAddress {
  readonly destination: GatewayDestination;
  /** HBONE port on the gateway; istiod always sends 15008. */
  readonly hboneMtlsPort: number;
}

/** How a workload is reached: HBONE, or plain TCP (`tunnel_protocol = NONE`). ztunnel's names. */
export type WorkloadProtocol = 'HBONE' | 'TCP';
/** `WorkloadStatus`, spelled as ztunnel's config_dump spells it. */
export type HealthStatus = 'Healthy' | 'Unhealthy';
/** `NetworkMode`; host-network workloads are never indexed by IP. */
export type WorkloadNetworkMode = 'Standard' | 'HostNetwork';
/** `WorkloadType` lower-cased, as used in baggage keys (`k8s.deployment.name`). */
export type WorkloadKind = 'deployment' | 'cronjob' | 'pod' | 'job';

export interface Locality {
  readonly region: string;
  readonly zone: string;
  readonly subzone: string;
}

/** Sandwiched-waypoint settings: PROXY protocol on the final hop, optional port override. */
export interface ApplicationTunnel {
  readonly protocol: 'NONE' | 'PROXY';
  readonly port?: number;
}

/** service port → target port. */
export type PortMap = ReadonlyMap<number, number>;

/**
 * A WDS Workload after defaults are applied (empty trust domain = cluster.local, empty service
 * account = default, empty cluster = Kubernetes, capacity unset = 1). Instances are frozen and
 * replaced, never mutated, so a reader may hold one across an update.
 */
export interface Workload {
  /** Globally unique; also the xDS resource name. */
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  /** Canonical IPs; empty for hostname workloads and remote-network workloads behind a gateway. */
  readonly workloadIps: readonly string[];
  /** DNS name for workloads without addresses (ServiceEntry `resolution: DNS`). */
  readonly hostname: string;
  readonly network: string;
  readonly protocol: WorkloadProtocol;
  readonly trustDomain: string;
  readonly serviceAccount: string;
  /** `spiffe://trustDomain/ns/namespace/sa/serviceAccount`, validated at conversion. */
  readonly identity: Identity;
  /** Workload-addressed waypoint. */
  readonly waypoint?: GatewayAddress;
  /** East-west gateway used to reach this workload from other networks. */
  readonly networkGateway?: GatewayAddress;
  readonly node: string;
  readonly canonicalName: string;
  readonly canonicalRevision: string;
  readonly workloadType: WorkloadKind;
  readonly workloadName: string;
  readonly nativeTunnel: boolean;
  readonly applicationTunnel?: ApplicationTunnel;
  /** `namespace/hostname` of each Service this workload backs → its per-endpoint port map. */
  readonly services: ReadonlyMap<string, PortMap>;
  /** `ns/name` keys of the WORKLOAD_SELECTOR policies that select this workload. */
  readonly authorizationPolicies: readonly string[];
  readonly status: HealthStatus;
  readonly clusterId: string;
  readonly locality: Locality;
  readonly networkMode: WorkloadNetworkMode;
  /** Relative load-balancing weight; 0 means never chosen. */
  readonly capacity: number;
}

/** The part of a workload ztunnel learns from ZDS, used to find a local pod's Workload. */
export interface WorkloadInfo {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

const MAX_PORT = 65_535;

/** Converts WDS IP bytes; throws ModelError('ADDRESS_LENGTH') naming the field. */
export function ipFromBytes(bytes: Uint8Array, field: string): string {
  const ip = formatIp(bytes);
  if (ip === undefined) {
    throw new ModelError(
      'ADDRESS_LENGTH',
      `${field} has ${bytes.length} bytes; an IP address must be 4 (IPv4) or 16 (IPv6) bytes`,
    );
  }
  return ip;
}

/** Checks a uint32 wire port fits in 0..65535; throws ModelError('PORT_RANGE'). */
export function checkPort(port: number, field: string): number {
  if (!Number.isInteger(port) || port < 0 || port > MAX_PORT) {
    throw new ModelError('PORT_RANGE', `${field} is ${port}, outside 0..${MAX_PORT}`);
  }
  return port;
}

export function networkAddressFromProto(pb: PbNetworkAddress, field: string): NetworkAddress {
  return Object.freeze({ network: pb.network, ip: ipFromBytes(pb.address, `${field}.address`) });
}

/** Converts a GatewayAddress; a missing destination is an error (ztunnel `MissingGatewayAddress`). */
export function gatewayAddressFromProto(pb: PbGatewayAddress, field: string): GatewayAddress {
  const port = checkPort(pb.hboneMtlsPort, `${field}.hbone_mtls_port`);
  switch (pb.destination.case) {
    case 'hostname': {
      const { namespace, hostname } = pb.destination.value;
      if (hostname === '') {
        throw new ModelError('MISSING_HOSTNAME', `${field}.hostname has an empty hostname`);
      }
      return Object.freeze({
        destination: Object.freeze({ kind: 'hostname', namespace, hostname }),
        hboneMtlsPort: port,
      });
    }
    case 'address':
      return Object.freeze({
        destination: Object.freeze({
          kind: 'address',
          address: networkAddressFromProto(pb.destination.value, `${field}.address`),
        }),
        hboneMtlsPort: port,
      });
    default:
      throw new ModelError(
        'GATEWAY_DESTINATION_MISSING',
        `${field} has neither a hostname nor an address destination`,
      );
  }
}

/** `ns/hostname` or `network/ip`, the spelling config_dump and logs use for a gateway. */
export function formatGatewayDestination(d: GatewayDestination): string {
  return d.kind === 'hostname'
    ? `${d.namespace}/${d.hostname}`
    : networkAddressKey(d.address.network, d.address.ip);
}

/** Splits a `namespace/hostname` key at the first `/`; both parts must be non-empty. */
export function parseNamespacedHostname(key: string): { namespace: string; hostname: string } {
  const slash = key.indexOf('/');
  if (slash <= 0 || slash === key.length - 1) {
    throw new ModelError(
      'NAMESPACED_HOSTNAME',
      `service key ${JSON.stringify(key)} is not of the form namespace/hostname`,
    );
  }
  return { namespace: key.slice(0, slash), hostname: key.slice(slash + 1) };
}

/** service_port → target_port of a PortList; ports are range-checked. */
export function portMapFromProto(pb: PbPortList, field: string): PortMap {
  const out = new Map<number, number>();
  for (const p of pb.ports) {
    out.set(
      checkPort(p.servicePort, `${field}.service_port`),
      checkPort(p.targetPort, `${field}.target_port`),
    );
  }
  return out;
}

function protocolFromProto(v: TunnelProtocol, uid: string): WorkloadProtocol {
  switch (v) {
    case TunnelProtocol.HBONE:
      return 'HBONE';
    case TunnelProtocol.NONE:
      return 'TCP';
    case TunnelProtocol.LEGACY_ISTIO_MTLS:
      throw new ModelError(
        'LEGACY_ISTIO_MTLS',
        `workload ${uid} has tunnel_protocol LEGACY_ISTIO_MTLS, which ambient does not support`,
      );
    default:
      throw unknownEnum('tunnel_protocol', v, uid);
  }
}

function statusFromProto(v: WorkloadStatus, uid: string): HealthStatus {
  switch (v) {
    case WorkloadStatus.HEALTHY:
      return 'Healthy';
    case WorkloadStatus.UNHEALTHY:
      return 'Unhealthy';
    default:
      throw unknownEnum('status', v, uid);
  }
}

function networkModeFromProto(v: NetworkMode, uid: string): WorkloadNetworkMode {
  switch (v) {
    case NetworkMode.STANDARD:
      return 'Standard';
    case NetworkMode.HOST_NETWORK:
      return 'HostNetwork';
    default:
      throw unknownEnum('network_mode', v, uid);
  }
}

function workloadTypeFromProto(v: WorkloadType, uid: string): WorkloadKind {
  switch (v) {
    case WorkloadType.DEPLOYMENT:
      return 'deployment';
    case WorkloadType.CRONJOB:
      return 'cronjob';
    case WorkloadType.POD:
      return 'pod';
    case WorkloadType.JOB:
      return 'job';
    default:
      throw unknownEnum('workload_type', v, uid);
  }
}

function applicationTunnelProtocolFromProto(v: ApplicationTunnel_Protocol, uid: string): 'NONE' | 'PROXY' {
  switch (v) {
    case ApplicationTunnel_Protocol.NONE:
      return 'NONE';
    case ApplicationTunnel_Protocol.PROXY:
      return 'PROXY';
    default:
      throw unknownEnum('application_tunnel.protocol', v, uid);
  }
}

export function unknownEnum(field: string, value: number, owner: string): ModelError {
  return new ModelError('UNKNOWN_ENUM', `${owner} has unknown ${field} value ${value}`);
}

/**
 * Converts a WDS Workload into the model (ztunnel `TryFrom<XdsWorkload> for Workload`), applying
 * WDS defaults. Throws ModelError naming the first problem; nothing partial is returned.
 */
export function workloadFromProto(pb: PbWorkload): Workload {
  const uid = pb.uid;
  if (uid === '') {
    throw new ModelError('MISSING_UID', `workload ${JSON.stringify(pb.name)} in ${pb.namespace} has no uid`);
  }
  const protocol = protocolFromProto(pb.tunnelProtocol, uid);
  let identity: Identity;
  try {
    identity = workloadIdentity(pb);
  } catch (err) {
    if (!(err instanceof IdentityError)) throw err;
    throw new ModelError('INVALID_IDENTITY', `workload ${uid} has no valid identity: ${err.message}`, {
      cause: err,
    });
  }
  const workloadIps = Object.freeze(
    pb.addresses.map((a, i) => ipFromBytes(a, `workload ${uid} addresses[${i}]`)),
  );
  const services = new Map<string, PortMap>();
  for (const [key, ports] of Object.entries(pb.services)) {
    parseNamespacedHostname(key);
    services.set(key, portMapFromProto(ports, `workload ${uid} services[${key}]`));
  }
  let applicationTunnel: ApplicationTunnel | undefined;
  if (pb.applicationTunnel !== undefined) {
    const port = checkPort(pb.applicationTunnel.port, `workload ${uid} application_tunnel.port`);
    applicationTunnel = Object.freeze({
      protocol: applicationTunnelProtocolFromProto(pb.applicationTunnel.protocol, uid),
      ...(port === 0 ? {} : { port }),
    });
  }
  return Object.freeze({
    uid,
    name: pb.name,
    namespace: pb.namespace,
    workloadIps,
    hostname: pb.hostname,
    network: pb.network,
    protocol,
    trustDomain: identity.trustDomain,
    serviceAccount: identity.serviceAccount,
    identity,
    ...(pb.waypoint === undefined
      ? {}
      : { waypoint: gatewayAddressFromProto(pb.waypoint, `workload ${uid} waypoint`) }),
    ...(pb.networkGateway === undefined
      ? {}
      : { networkGateway: gatewayAddressFromProto(pb.networkGateway, `workload ${uid} network_gateway`) }),
    node: pb.node,
    canonicalName: pb.canonicalName,
    canonicalRevision: pb.canonicalRevision,
    workloadType: workloadTypeFromProto(pb.workloadType, uid),
    workloadName: pb.workloadName,
    nativeTunnel: pb.nativeTunnel,
    ...(applicationTunnel === undefined ? {} : { applicationTunnel }),
    services,
    authorizationPolicies: Object.freeze([...pb.authorizationPolicies]),
    status: statusFromProto(pb.status, uid),
    clusterId: pb.clusterId || DEFAULT_CLUSTER_ID,
    locality: Object.freeze({
      region: pb.locality?.region ?? '',
      zone: pb.locality?.zone ?? '',
      subzone: pb.locality?.subzone ?? '',
    }),
    networkMode: networkModeFromProto(pb.networkMode, uid),
    capacity: pb.capacity ?? 1,
  });
}

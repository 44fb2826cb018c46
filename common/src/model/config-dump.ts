import type { Authorization, RbacMatch, ServiceAccountMatch, StringMatch } from './authorization.ts';
import { formatCidr } from './ip-address.ts';
import type { ReadonlyPolicyStore } from './policy-store.ts';
import type { Endpoint, Service } from './service.ts';
import type { ReadonlyServiceStore } from './service-store.ts';
import {
  formatGatewayDestination,
  type GatewayAddress,
  networkAddressKey,
  type PortMap,
  type Workload,
} from './workload.ts';
import type { ReadonlyWorkloadStore } from './workload-store.ts';

/*
 * The JSON ztunnel serves at /config_dump and `istioctl ztunnel-config` reads. Field names follow
 * istio:istioctl/pkg/writer/ztunnel/configdump/api.go; values follow ztunnel's serde spelling
 * (protocol "HBONE"/"TCP", status "Healthy", scope "WorkloadSelector", StringMatch {"Exact": …}).
 * Lists are sorted by key so two dumps of the same state are byte-identical.
 */

export interface ConfigDumpGatewayAddress {
  /** `namespace/hostname` or `network/ip`. */
  readonly destination: string;
  readonly hboneMtlsPort: number;
}

export interface ConfigDumpWorkload {
  readonly uid: string;
  readonly workloadIps: readonly string[];
  readonly waypoint?: ConfigDumpGatewayAddress;
  readonly networkGateway?: ConfigDumpGatewayAddress;
  readonly protocol: string;
  readonly networkMode: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly workloadName: string;
  readonly workloadType: string;
  readonly canonicalName: string;
  readonly canonicalRevision: string;
  readonly clusterId: string;
  readonly trustDomain: string;
  readonly locality: { readonly region: string; readonly zone: string; readonly subzone: string };
  readonly node: string;
  readonly network: string;
  readonly status: string;
  readonly hostname: string;
  readonly nativeTunnel: boolean;
  readonly applicationTunnel?: { readonly protocol: string; readonly port?: number };
  readonly authorizationPolicies: readonly string[];
  /** `namespace/hostname` of the services this workload backs. */
  readonly services: readonly string[];
  readonly capacity: number;
}

export interface ConfigDumpEndpoint {
  readonly workloadUid: string;
  readonly service: string;
  readonly port: Readonly<Record<string, number>>;
  readonly status: string;
}

export interface ConfigDumpService {
  readonly name: string;
  readonly namespace: string;
  readonly hostname: string;
  /** `network/ip`, or `network/ip/len` for CIDR VIPs. */
  readonly vips: readonly string[];
  readonly ports: Readonly<Record<string, number>>;
  readonly endpoints: Readonly<Record<string, ConfigDumpEndpoint>>;
  readonly subjectAltNames: readonly string[];
  readonly waypoint?: ConfigDumpGatewayAddress;
  readonly weightedWaypoints?: readonly {
    readonly destination: ConfigDumpGatewayAddress;
    readonly weight: number;
  }[];
  readonly loadBalancer?: {
    readonly mode: string;
    readonly routingPreferences: readonly string[];
    readonly healthPolicy: string;
  };
  readonly ipFamilies?: string;
  readonly canonical: boolean;
}

export type ConfigDumpStringMatch =
  | { readonly Exact: string }
  | { readonly Prefix: string }
  | { readonly Suffix: string }
  | { readonly Presence: readonly [] };

export interface ConfigDumpMatch {
  readonly namespaces?: readonly ConfigDumpStringMatch[];
  readonly notNamespaces?: readonly ConfigDumpStringMatch[];
  readonly principals?: readonly ConfigDumpStringMatch[];
  readonly notPrincipals?: readonly ConfigDumpStringMatch[];
  readonly sourceIps?: readonly string[];
  readonly notSourceIps?: readonly string[];
  readonly destinationIps?: readonly string[];
  readonly notDestinationIps?: readonly string[];
  readonly destinationPorts?: readonly number[];
  readonly notDestinationPorts?: readonly number[];
  readonly serviceAccounts?: readonly ServiceAccountMatch[];
  readonly notServiceAccounts?: readonly ServiceAccountMatch[];
}

export interface ConfigDumpPolicy {
  readonly name: string;
  readonly namespace: string;
  readonly scope: string;
  readonly action: string;
  readonly rules: readonly (readonly (readonly ConfigDumpMatch[])[])[];
  readonly dryRun: boolean;
}

/** The whole document; `certificates` and `workloadState` come from ztunnel's dump hooks. */
export interface ConfigDump {
  readonly workloads: readonly ConfigDumpWorkload[];
  readonly services: readonly ConfigDumpService[];
  readonly policies: readonly ConfigDumpPolicy[];
  readonly certificates: readonly unknown[];
  readonly workloadState: Readonly<Record<string, unknown>>;
}

/** Sections of the dump owned by ztunnel rather than by the WDS model. */
export interface ConfigDumpHooks {
  /** istioctl `CertsDump[]`: identity, state, certChain. */
  readonly certificates?: () => readonly unknown[];
  /** istioctl `map[uid]WorkloadState`: state, connections, info. */
  readonly workloadState?: () => Readonly<Record<string, unknown>>;
}

function byString<T>(key: (t: T) => string): (a: T, b: T) => number {
  return (a, b) => {
    const ka = key(a);
    const kb = key(b);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  };
}

function gateway(g: GatewayAddress): ConfigDumpGatewayAddress {
  return { destination: formatGatewayDestination(g.destination), hboneMtlsPort: g.hboneMtlsPort };
}

function portRecord(ports: PortMap): Record<string, number> {
  // Integer-like keys enumerate in ascending order, so the record is sorted by port.
  const out: Record<string, number> = {};
  for (const [servicePort, targetPort] of ports) out[String(servicePort)] = targetPort;
  return out;
}

/** One workload in config_dump form. */
export function dumpWorkload(w: Workload): ConfigDumpWorkload {
  return {
    uid: w.uid,
    workloadIps: [...w.workloadIps],
    ...(w.waypoint === undefined ? {} : { waypoint: gateway(w.waypoint) }),
    ...(w.networkGateway === undefined ? {} : { networkGateway: gateway(w.networkGateway) }),
    protocol: w.protocol,
    networkMode: w.networkMode,
    name: w.name,
    namespace: w.namespace,
    serviceAccount: w.serviceAccount,
    workloadName: w.workloadName,
    workloadType: w.workloadType,
    canonicalName: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    clusterId: w.clusterId,
    trustDomain: w.trustDomain,
    locality: { region: w.locality.region, zone: w.locality.zone, subzone: w.locality.subzone },
    node: w.node,
    network: w.network,
    status: w.status,
    hostname: w.hostname,
    nativeTunnel: w.nativeTunnel,
    ...(w.applicationTunnel === undefined
      ? {}
      : {
          applicationTunnel: {
            protocol: w.applicationTunnel.protocol,
            ...(w.applicationTunnel.port === undefined ? {} : { port: w.applicationTunnel.port }),
          },
        }),
    authorizationPolicies: [...w.authorizationPolicies],
    services: [...w.services.keys()].sort(),
    capacity: w.capacity,
  };
}

/** One service, with its endpoints, in config_dump form. */
export function dumpService(s: Service, endpoints: ReadonlyMap<string, Endpoint>): ConfigDumpService {
  const ports: Record<string, number> = {};
  for (const [servicePort, p] of s.ports) ports[String(servicePort)] = p.targetPort;
  const eps: Record<string, ConfigDumpEndpoint> = {};
  for (const uid of [...endpoints.keys()].sort()) {
    const ep = endpoints.get(uid) as Endpoint;
    eps[uid] = { workloadUid: ep.workloadUid, service: s.key, port: portRecord(ep.port), status: ep.status };
  }
  return {
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    vips: s.vips.map((v) => {
      const base = networkAddressKey(v.network, v.ip);
      return v.prefixLength === undefined ? base : `${base}/${v.prefixLength}`;
    }),
    ports,
    endpoints: eps,
    subjectAltNames: [...s.subjectAltNames],
    ...(s.waypoint === undefined ? {} : { waypoint: gateway(s.waypoint) }),
    ...(s.weightedWaypoints.length === 0
      ? {}
      : {
          weightedWaypoints: s.weightedWaypoints.map((w) => ({
            destination: gateway(w.destination),
            weight: w.weight,
          })),
        }),
    ...(s.loadBalancer === undefined
      ? {}
      : {
          loadBalancer: {
            mode: s.loadBalancer.mode,
            routingPreferences: [...s.loadBalancer.routingPreferences],
            healthPolicy: s.loadBalancer.healthPolicy,
          },
        }),
    ...(s.ipFamilies === undefined ? {} : { ipFamilies: s.ipFamilies }),
    canonical: s.canonical,
  };
}

function dumpStringMatch(m: StringMatch): ConfigDumpStringMatch {
  switch (m.kind) {
    case 'exact':
      return { Exact: m.value };
    case 'prefix':
      return { Prefix: m.value };
    case 'suffix':
      return { Suffix: m.value };
    case 'presence':
      return { Presence: [] };
  }
}

function dumpMatch(m: RbacMatch): ConfigDumpMatch {
  const out: Record<string, unknown> = {};
  const put = (name: keyof ConfigDumpMatch, list: readonly unknown[]) => {
    if (list.length > 0) out[name] = list;
  };
  put('namespaces', m.namespaces.map(dumpStringMatch));
  put('notNamespaces', m.notNamespaces.map(dumpStringMatch));
  put('principals', m.principals.map(dumpStringMatch));
  put('notPrincipals', m.notPrincipals.map(dumpStringMatch));
  put('sourceIps', m.sourceIps.map(formatCidr));
  put('notSourceIps', m.notSourceIps.map(formatCidr));
  put('destinationIps', m.destinationIps.map(formatCidr));
  put('notDestinationIps', m.notDestinationIps.map(formatCidr));
  put('destinationPorts', [...m.destinationPorts]);
  put('notDestinationPorts', [...m.notDestinationPorts]);
  put(
    'serviceAccounts',
    m.serviceAccounts.map((s) => ({ namespace: s.namespace, serviceAccount: s.serviceAccount })),
  );
  put(
    'notServiceAccounts',
    m.notServiceAccounts.map((s) => ({ namespace: s.namespace, serviceAccount: s.serviceAccount })),
  );
  return out as ConfigDumpMatch;
}

/** One policy in config_dump form. */
export function dumpPolicy(p: Authorization): ConfigDumpPolicy {
  return {
    name: p.name,
    namespace: p.namespace,
    scope: p.scope,
    action: p.action,
    rules: p.rules.map((rule) => rule.map((clause) => clause.map(dumpMatch))),
    dryRun: p.dryRun,
  };
}

/** The whole config_dump document for these stores. */
export function buildConfigDump(
  workloads: ReadonlyWorkloadStore,
  services: ReadonlyServiceStore,
  policies: ReadonlyPolicyStore,
  hooks: ConfigDumpHooks,
): ConfigDump {
  return {
    workloads: [...workloads.all()].sort(byString((w) => w.uid)).map(dumpWorkload),
    services: [...services.all()]
      .sort(byString((s) => `${s.hostname}\0${s.namespace}`))
      .map((s) => dumpService(s, services.endpoints(s.key))),
    policies: [...policies.all()].sort(byString((p) => p.key)).map(dumpPolicy),
    certificates: hooks.certificates?.() ?? [],
    workloadState: hooks.workloadState?.() ?? {},
  };
}

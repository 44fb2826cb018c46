import { AmbientctlError } from '../errors.ts';

/*
 * The parts of ztunnel's `/config_dump` that `zc` reads, with the field names of
 * istio:istioctl/pkg/writer/ztunnel/configdump/api.go (ours: common/src/model/config-dump.ts,
 * ztunnel/src/app.ts). Parsing is lenient on purpose: `zc` must also read an upstream ztunnel's
 * dump, so a missing optional field reads as empty instead of failing the whole table.
 */

export interface ZcGatewayAddress {
  readonly destination: string;
}

export interface ZcWorkload {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly workloadIps: readonly string[];
  readonly hostname: string;
  readonly node: string;
  readonly network: string;
  readonly protocol: string;
  readonly status: string;
  readonly serviceAccount: string;
  readonly waypoint?: ZcGatewayAddress;
  readonly raw: unknown;
}

export interface ZcEndpoint {
  readonly workloadUid: string;
}

export interface ZcService {
  readonly name: string;
  readonly namespace: string;
  readonly hostname: string;
  /** `network/ip` (or `network/ip/len`), as ztunnel prints VIPs. */
  readonly vips: readonly string[];
  readonly endpoints: readonly ZcEndpoint[];
  readonly waypoint?: ZcGatewayAddress;
  readonly raw: unknown;
}

export interface ZcPolicy {
  readonly name: string;
  readonly namespace: string;
  readonly action: string;
  readonly scope: string;
  readonly raw: unknown;
}

export interface ZcCert {
  readonly serialNumber: string;
  readonly validFrom: string;
  readonly expirationTime: string;
}

export interface ZcCertificate {
  readonly identity: string;
  readonly state: string;
  /** The leaf first, then intermediates. */
  readonly certChain: readonly ZcCert[];
  /**
   * The trust roots (`rootCerts`, as upstream ztunnel and istioctl name them; `caCert` in dumps of
   * older builds of ours); empty when the dump
   * has neither (istioctl then treats the last chain entry as the root).
   */
  readonly rootCerts: readonly ZcCert[];
  readonly hasRootField: boolean;
  readonly raw: unknown;
}

export interface ZcConnection {
  readonly src: string;
  readonly originalDst: string;
  readonly actualDst: string;
  readonly protocol: string;
}

export interface ZcWorkloadState {
  readonly uid: string;
  readonly state: string;
  readonly info: { readonly name: string; readonly namespace: string };
  readonly inbound: readonly ZcConnection[];
  readonly outbound: readonly ZcConnection[];
  readonly raw: unknown;
}

export interface ZcDump {
  readonly workloads: readonly ZcWorkload[];
  readonly services: readonly ZcService[];
  readonly policies: readonly ZcPolicy[];
  readonly certificates: readonly ZcCertificate[];
  readonly workloadState: readonly ZcWorkloadState[];
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(o: Obj, key: string): string {
  const v = o[key];
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '';
}

function strList(o: Obj, key: string): string[] {
  const v = o[key];
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** A list section: ours are arrays; older upstream dumps keyed them by address in an object. */
function entries(v: unknown): Obj[] {
  if (Array.isArray(v)) return v.filter(isObj);
  if (isObj(v)) return Object.values(v).filter(isObj);
  return [];
}

function gateway(v: unknown): ZcGatewayAddress | undefined {
  if (!isObj(v)) return undefined;
  return { destination: str(v, 'destination') };
}

function cert(v: Obj): ZcCert {
  return {
    serialNumber: str(v, 'serialNumber'),
    validFrom: str(v, 'validFrom'),
    expirationTime: str(v, 'expirationTime'),
  };
}

function connections(v: unknown): ZcConnection[] {
  return entries(v).map((c) => ({
    src: str(c, 'src'),
    // Older ztunnels had one `dst`; newer ones tell the original and the actual destination apart.
    originalDst: str(c, 'originalDst') || str(c, 'dst'),
    actualDst: str(c, 'actualDst') || str(c, 'dst'),
    protocol: str(c, 'protocol'),
  }));
}

/** Parses a `/config_dump` body; throws CONFIG_DUMP_INVALID when it is not a ztunnel dump at all. */
export function parseConfigDump(text: string): ZcDump {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new AmbientctlError('CONFIG_DUMP_INVALID', `ztunnel's /config_dump is not JSON`, { cause: err });
  }
  if (!isObj(doc) || !('workloads' in doc || 'services' in doc || 'certificates' in doc)) {
    throw new AmbientctlError(
      'CONFIG_DUMP_INVALID',
      `ztunnel's /config_dump has none of workloads, services, certificates: not a ztunnel config dump`,
    );
  }
  const workloads = entries(doc.workloads).map(
    (w): ZcWorkload => ({
      uid: str(w, 'uid'),
      name: str(w, 'name'),
      namespace: str(w, 'namespace'),
      workloadIps: strList(w, 'workloadIps'),
      hostname: str(w, 'hostname'),
      node: str(w, 'node'),
      network: str(w, 'network'),
      protocol: str(w, 'protocol'),
      status: str(w, 'status'),
      serviceAccount: str(w, 'serviceAccount'),
      ...(gateway(w.waypoint) ? { waypoint: gateway(w.waypoint) } : {}),
      raw: w,
    }),
  );
  const services = entries(doc.services).map(
    (s): ZcService => ({
      name: str(s, 'name'),
      namespace: str(s, 'namespace'),
      hostname: str(s, 'hostname'),
      vips: strList(s, 'vips'),
      endpoints: entries(s.endpoints).map((e) => ({ workloadUid: str(e, 'workloadUid') })),
      ...(gateway(s.waypoint) ? { waypoint: gateway(s.waypoint) } : {}),
      raw: s,
    }),
  );
  const policies = entries(doc.policies).map(
    (p): ZcPolicy => ({
      name: str(p, 'name'),
      namespace: str(p, 'namespace'),
      action: str(p, 'action'),
      scope: str(p, 'scope'),
      raw: p,
    }),
  );
  const certificates = entries(doc.certificates).map((c): ZcCertificate => {
    const roots = c.rootCerts ?? c.caCert;
    return {
      identity: str(c, 'identity'),
      state: str(c, 'state'),
      certChain: entries(c.certChain).map(cert),
      rootCerts: entries(roots).map(cert),
      hasRootField: roots !== undefined,
      raw: c,
    };
  });
  const workloadState = isObj(doc.workloadState)
    ? Object.entries(doc.workloadState)
        .filter((e): e is [string, Obj] => isObj(e[1]))
        .map(([uid, s]): ZcWorkloadState => {
          const info = isObj(s.info) ? s.info : {};
          const conns = isObj(s.connections) ? s.connections : {};
          return {
            uid,
            state: str(s, 'state'),
            info: { name: str(info, 'name'), namespace: str(info, 'namespace') },
            inbound: connections(conns.inbound),
            outbound: connections(conns.outbound),
            raw: s,
          };
        })
    : [];
  return { workloads, services, policies, certificates, workloadState };
}

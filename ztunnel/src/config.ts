import { isIP } from 'node:net';
import {
  deepFreeze,
  type Env,
  EnvReader,
  type EnvVarDoc,
  envVar,
  renderEnvTable as renderEnvDocs,
} from '@ambient/common/env';
import { errorMessage } from '@ambient/common/errors';
import { type LogFormat, parseLevelSpec } from '@ambient/common/log';
import type { JsonValue } from '@bufbuild/protobuf';
import { parse as parseYaml } from 'yaml';

/** One environment variable ztunnel reads: its default as an operator would write it, and what it does. */
/**
 * ztunnel's fixed ports (spec §2.1). The in-pod listeners are bound inside each pod's network
 * namespace, so they never collide across pods; 15001/15006/15008 are also the "illegal"
 * destination ports that prevent loops.
 */
export const PORTS = {
  OUTBOUND: 15001,
  INBOUND_PLAINTEXT: 15006,
  INBOUND: 15008,
  DNS: 15053,
  ADMIN: 15000,
  STATS: 15020,
  READINESS: 15021,
} as const;

/** The default in-pod socket mark (upstream `DEFAULT_INPOD_MARK`, 0x539). */
export const DEFAULT_INPOD_MARK = 1337;
/** Where the chart mounts istiod's root certificate (ConfigMap `istio-ca-root-cert`). */
export const DEFAULT_ROOT_CERT_PATH = '/var/run/secrets/istio/root-cert.pem';
/** Where the chart mounts the projected token with audience `istio-ca`. */
export const DEFAULT_TOKEN_PATH = '/var/run/secrets/tokens/istio-token';
/** The node agent's ZDS socket. */
export const DEFAULT_INPOD_UDS = '/var/run/ztunnel/ztunnel.sock';
/** Where the istio-cni agent pins each pod's eBPF objects (its `EBPF_PIN_ROOT` default). */
export const DEFAULT_EBPF_PIN_ROOT = '/sys/fs/bpf/ambient';

const HOUR_MS = 3_600_000;

/**
 * Every environment variable ztunnel reads, with its default and meaning. Names are upstream
 * ztunnel's (`ztunnel:src/config.rs`) wherever upstream has the setting; the few that are ours
 * (bind addresses and ports of the HTTP servers, which upstream takes from `PROXY_CONFIG` only)
 * say so. `ztunnel help` and the README render this table.
 */
export const ENV = {
  XDS_ADDRESS: envVar(
    'XDS_ADDRESS',
    'https://istiod.istio-system.svc:15012 in Kubernetes, else https://localhost:15012; unset with LOCAL_XDS_PATH',
    'istiod delta ADS endpoint; empty turns xDS off. `https://` is added when no scheme is given.',
  ),
  CA_ADDRESS: envVar(
    'CA_ADDRESS',
    'as XDS_ADDRESS',
    'istiod IstioCertificateService endpoint; empty turns certificate fetching off.',
  ),
  XDS_ROOT_CA: envVar(
    'XDS_ROOT_CA',
    DEFAULT_ROOT_CERT_PATH,
    "Verifies istiod's TLS for xDS: a file path, inline PEM, or `SYSTEM` for the system roots.",
  ),
  CA_ROOT_CA: envVar('CA_ROOT_CA', DEFAULT_ROOT_CERT_PATH, 'As XDS_ROOT_CA, for the CA connection.'),
  ALT_XDS_HOSTNAME: envVar(
    'ALT_XDS_HOSTNAME',
    '(none)',
    "Server name to verify in istiod's xDS certificate instead of the address host.",
  ),
  ALT_CA_HOSTNAME: envVar('ALT_CA_HOSTNAME', '(none)', 'As ALT_XDS_HOSTNAME, for the CA.'),
  AUTH_TOKEN: envVar(
    'AUTH_TOKEN',
    DEFAULT_TOKEN_PATH,
    'Bearer token for istiod: a path (starting with `/` or `.`) re-read on every call, or the token itself. The default path is optional.',
  ),
  XDS_ON_DEMAND: envVar('XDS_ON_DEMAND', 'false', 'Subscribe to addresses on demand instead of a wildcard.'),
  LOCAL_XDS_PATH: envVar(
    'LOCAL_XDS_PATH',
    '(none)',
    'Local-config mode: a YAML/JSON file of `workloads`, `services` and `policies` applied as if from xDS.',
  ),
  LOCAL_XDS: envVar('LOCAL_XDS', '(none)', 'The same document as LOCAL_XDS_PATH, inline.'),
  SECRET_TTL: envVar('SECRET_TTL', '24h', 'Requested lifetime of workload certificates.'),
  CLUSTER_ID: envVar(
    'CLUSTER_ID',
    'Kubernetes',
    'Cluster of this ztunnel (`clusterid` header); `ISTIO_META_CLUSTER_ID` wins when set.',
  ),
  CLUSTER_DOMAIN: envVar('CLUSTER_DOMAIN', 'cluster.local', 'Kubernetes DNS suffix.'),
  NETWORK: envVar('NETWORK', '(empty)', 'Network of this node.'),
  NODE_NAME: envVar('NODE_NAME', '(none)', 'This node; only workloads on it are local pods.'),
  POD_NAME: envVar('POD_NAME', '(empty)', "ztunnel's own pod name (xDS node id and metadata)."),
  POD_NAMESPACE: envVar('POD_NAMESPACE', '(empty)', "ztunnel's own namespace."),
  INSTANCE_IP: envVar('INSTANCE_IP', '1.1.1.1 in the node id', "ztunnel's own pod IP."),
  ISTIO_METAJSON_: envVar('ISTIO_METAJSON_*', '(none)', 'Node metadata parsed as JSON, prefix stripped.'),
  ISTIO_META_: envVar(
    'ISTIO_META_*',
    '(none)',
    'Each becomes xDS node metadata with the prefix stripped (e.g. `ISTIO_META_DNS_CAPTURE`).',
  ),
  XDS_HEADER_: envVar('XDS_HEADER_*', '(none)', 'Extra gRPC metadata on xDS calls, name after the prefix.'),
  CA_HEADER_: envVar('CA_HEADER_*', '(none)', 'Extra gRPC metadata on CA calls.'),
  PROXY_CONFIG: envVar(
    'PROXY_CONFIG',
    '(none)',
    'ProxyConfig as YAML/JSON: `discoveryAddress`, `proxyAdminPort`, `statsPort`, `proxyMetadata`.',
  ),
  PROXY_MODE: envVar('PROXY_MODE', 'shared', '`shared` (in-pod, one proxy per enrolled pod) or `dedicated`.'),
  PROXY_WORKLOAD_INFO: envVar(
    'PROXY_WORKLOAD_INFO',
    '(none)',
    'Dedicated mode: the one workload served, as `namespace/name/service-account`.',
  ),
  INPOD_UDS: envVar('INPOD_UDS', DEFAULT_INPOD_UDS, "The node agent's ZDS socket (SOCK_SEQPACKET)."),
  PACKET_MARK: envVar(
    'PACKET_MARK',
    `${DEFAULT_INPOD_MARK} in shared mode`,
    'SO_MARK on every in-pod socket; the pod rules let marked packets through.',
  ),
  EBPF_PIN_ROOT: envVar(
    'EBPF_PIN_ROOT',
    DEFAULT_EBPF_PIN_ROOT,
    "Ours: the istio-cni agent's bpffs directory in eBPF redirection mode. When a pod has an inbound listener map there (`<root>/<pod uid>/maps/inbound_listeners`), its 15006 listener is registered in it.",
  ),
  INPOD_PORT_REUSE: envVar(
    'INPOD_PORT_REUSE',
    'true',
    'SO_REUSEPORT on in-pod listeners, so an old and a new ztunnel overlap during an upgrade.',
  ),
  ENABLE_ORIG_SRC: envVar(
    'ENABLE_ORIG_SRC',
    '(detect)',
    'Force connecting to apps with the original source IP on (true) or off (false).',
  ),
  IPV6_ENABLED: envVar('IPV6_ENABLED', 'true', 'Bind the stats and readiness servers on `::`.'),
  HTTP2_STREAM_WINDOW_SIZE: envVar('HTTP2_STREAM_WINDOW_SIZE', '4194304', 'HBONE per-stream window.'),
  HTTP2_CONNECTION_WINDOW_SIZE: envVar(
    'HTTP2_CONNECTION_WINDOW_SIZE',
    '16777216',
    'HBONE per-connection window.',
  ),
  HTTP2_FRAME_SIZE: envVar('HTTP2_FRAME_SIZE', '1048576', 'HBONE maximum frame size.'),
  POOL_MAX_STREAMS_PER_CONNECTION: envVar(
    'POOL_MAX_STREAMS_PER_CONNECTION',
    '100',
    'Streams on one pooled HBONE connection before another is opened.',
  ),
  POOL_UNUSED_RELEASE_TIMEOUT: envVar(
    'POOL_UNUSED_RELEASE_TIMEOUT',
    '5m',
    'A pooled HBONE connection without streams for this long is closed.',
  ),
  CONNECTION_TERMINATION_DEADLINE: envVar(
    'CONNECTION_TERMINATION_DEADLINE',
    '5s',
    'On SIGTERM, how long connections may drain before they are closed.',
  ),
  TERMINATION_GRACE_PERIOD_SECONDS: envVar(
    'TERMINATION_GRACE_PERIOD_SECONDS',
    '(none)',
    "The pod's grace period; without CONNECTION_TERMINATION_DEADLINE the deadline is 5 s less (1 s less when 10 s or under).",
  ),
  LOG_LEVEL: envVar('LOG_LEVEL', 'info', 'Levels as `info,xds:debug` (default, then per scope).'),
  LOG_FORMAT: envVar('LOG_FORMAT', 'text', '`text` (also `plain`) or `json`.'),
  AUTHZ_POLICY_INFO_LOGGING: envVar(
    'AUTHZ_POLICY_INFO_LOGGING',
    'false',
    'Log authorization decisions at info instead of debug.',
  ),
  ADMIN_BIND_ADDRESS: envVar(
    'ADMIN_BIND_ADDRESS',
    '127.0.0.1',
    'Ours: admin server address (localhost only).',
  ),
  ADMIN_PORT: envVar('ADMIN_PORT', '15000 or PROXY_CONFIG proxyAdminPort', 'Ours: admin server port.'),
  STATS_BIND_ADDRESS: envVar('STATS_BIND_ADDRESS', ':: (0.0.0.0 without IPv6)', 'Ours: metrics address.'),
  STATS_PORT: envVar('STATS_PORT', '15020 or PROXY_CONFIG statsPort', 'Ours: metrics port.'),
  READINESS_BIND_ADDRESS: envVar(
    'READINESS_BIND_ADDRESS',
    'as STATS_BIND_ADDRESS',
    'Ours: readiness address.',
  ),
  READINESS_PORT: envVar('READINESS_PORT', '15021', 'Ours: readiness port (fixed upstream).'),
} as const satisfies Record<string, EnvVarDoc>;

/** Where a root certificate comes from. */
export type RootCertSource =
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'pem'; readonly pem: string }
  | { readonly kind: 'system' };

/** Where the bearer token for istiod comes from. */
export type AuthTokenSource =
  /** Re-read on every call (projected tokens rotate). `optional`: a missing file means no token. */
  | { readonly kind: 'file'; readonly path: string; readonly optional: boolean }
  | { readonly kind: 'static'; readonly token: string };

/** Where local-config mode reads its document. */
export type LocalXdsSource =
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'inline'; readonly text: string };

/** A control-plane endpoint: istiod's xDS or CA. */
export interface ControlPlaneConfig {
  /** `https://host:port` (or `http://` for plaintext). */
  readonly address: string;
  readonly rootCert: RootCertSource;
  readonly altHostname: string | undefined;
  /** Extra gRPC metadata (`XDS_HEADER_*` / `CA_HEADER_*`), names lower-cased. */
  readonly headers: Readonly<Record<string, string>>;
}

/** One listening socket of ztunnel's own HTTP servers. Port 0 binds a free port (tests). */
export interface ListenConfig {
  readonly bindAddress: string;
  readonly port: number;
}

/** A pod as ZDS and `PROXY_WORKLOAD_INFO` name it. */
export interface ProxyWorkloadInfo {
  readonly namespace: string;
  readonly name: string;
  readonly serviceAccount: string;
}

/** HBONE tuning, mapped onto node:http2 settings and the pool. */
export interface HboneConfig {
  readonly windowSize: number;
  readonly connectionWindowSize: number;
  readonly frameSize: number;
  readonly poolMaxStreamsPerConnection: number;
  readonly poolUnusedReleaseTimeoutMs: number;
}

/** ztunnel's whole configuration, read once at start (reference architecture §5.4). */
export interface Config {
  readonly proxyMode: 'shared' | 'dedicated';
  /** Dedicated mode only. */
  readonly proxyWorkloadInfo: ProxyWorkloadInfo | undefined;
  readonly nodeName: string | undefined;
  readonly podName: string;
  readonly podNamespace: string;
  readonly instanceIp: string | undefined;
  readonly clusterId: string;
  readonly clusterDomain: string;
  readonly network: string;
  /** Undefined when xDS is off (empty `XDS_ADDRESS`, or local-config mode without one). */
  readonly xds: (ControlPlaneConfig & { readonly onDemand: boolean }) | undefined;
  /** Undefined when `CA_ADDRESS` is empty: no workload certificates (plaintext only). */
  readonly ca: ControlPlaneConfig | undefined;
  /** Undefined when the default token path is absent at use: calls then carry no token. */
  readonly authToken: AuthTokenSource;
  readonly secretTtlMs: number;
  readonly localXds: LocalXdsSource | undefined;
  /** Node metadata from `ISTIO_META_*` and PROXY_CONFIG `proxyMetadata`, prefixes stripped. */
  readonly proxyMetadata: Readonly<Record<string, string>>;
  /** Node metadata from `ISTIO_METAJSON_*`, prefix stripped, parsed as JSON. */
  readonly proxyMetadataJson: Readonly<Record<string, JsonValue>>;
  readonly inpod: { readonly udsPath: string; readonly portReuse: boolean; readonly ebpfPinRoot: string };
  /** SO_MARK of in-pod sockets; undefined in dedicated mode unless set. */
  readonly packetMark: number | undefined;
  /** undefined: detect (best effort). */
  readonly enableOriginalSource: boolean | undefined;
  readonly hbone: HboneConfig;
  /** Drain deadline on SIGTERM and `/quitquitquit`. */
  readonly terminationDeadlineMs: number;
  readonly admin: ListenConfig;
  readonly stats: ListenConfig;
  readonly readiness: ListenConfig;
  readonly log: { readonly levels: string; readonly format: LogFormat };
  readonly authzPolicyInfoLogging: boolean;
  readonly ipv6Enabled: boolean;
}

/** The subset of upstream ProxyConfig ztunnel reads from `PROXY_CONFIG`. */
interface ProxyConfigDoc {
  readonly discoveryAddress?: string;
  readonly proxyAdminPort?: number;
  readonly statsPort?: number;
  readonly proxyMetadata: Readonly<Record<string, string>>;
}

const K8S_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
// gRPC metadata keys: lower-case letters, digits, '-', '_', '.'; values printable ASCII.
const HEADER_NAME = /^[A-Za-z0-9_.-]+$/;
const HEADER_VALUE = /^[\x20-\x7e]*$/;
const META_PREFIX = 'ISTIO_META_';
const META_JSON_PREFIX = 'ISTIO_METAJSON_';

/**
 * Reads ztunnel's configuration from an environment (the process's by default). Every problem is
 * collected, so one `ConfigError` (from `@ambient/common/env`) names each variable, its value and
 * what is wrong with it. Nothing is read from disk here: file sources are checked when used. The
 * result is frozen.
 */
export function loadConfig(env: Env = process.env): Config {
  const r = new EnvReader(env);
  const proxyConfig = readProxyConfig(r);

  const proxyMode = r.oneOf(ENV.PROXY_MODE.name, ['shared', 'dedicated'] as const, 'shared');
  const proxyWorkloadInfo = proxyMode === 'dedicated' ? readWorkloadInfo(r) : undefined;

  const metaFromEnv = r.withPrefix(META_PREFIX);
  const proxyMetadataJson: Record<string, JsonValue> = {};
  for (const [k, v] of Object.entries(r.withPrefix(META_JSON_PREFIX))) {
    try {
      proxyMetadataJson[k] = JSON.parse(v) as JsonValue;
    } catch (err) {
      r.problem(`${META_JSON_PREFIX}${k}`, v, `is not JSON: ${errorMessage(err)}`);
    }
  }
  const proxyMetadata = { ...proxyConfig.proxyMetadata, ...metaFromEnv };
  const clusterId = metaFromEnv.CLUSTER_ID || r.string(ENV.CLUSTER_ID.name, 'Kubernetes');

  const localXds = readLocalXds(r);
  const inKubernetes = r.raw('KUBERNETES_SERVICE_HOST') !== undefined;
  const defaultIstiod = inKubernetes ? 'https://istiod.istio-system.svc:15012' : 'https://localhost:15012';
  // Local-config mode runs without istiod unless an address is given explicitly.
  const xdsDefault = localXds === undefined ? (proxyConfig.discoveryAddress ?? defaultIstiod) : '';
  const xdsAddress = controlPlaneAddress(r, env, ENV.XDS_ADDRESS.name, xdsDefault);
  const caAddress = controlPlaneAddress(r, env, ENV.CA_ADDRESS.name, defaultIstiod);

  // Read even when the address is off or bad, so their problems are reported in the same round.
  const xdsHeaders = headers(r, 'XDS_HEADER_');
  const caHeaders = headers(r, 'CA_HEADER_');
  const xds =
    xdsAddress === undefined
      ? undefined
      : {
          address: xdsAddress,
          rootCert: rootCert(r, ENV.XDS_ROOT_CA.name),
          altHostname: r.string(ENV.ALT_XDS_HOSTNAME.name),
          headers: xdsHeaders,
          onDemand: r.bool(ENV.XDS_ON_DEMAND.name, false),
        };
  const ca =
    caAddress === undefined
      ? undefined
      : {
          address: caAddress,
          rootCert: rootCert(r, ENV.CA_ROOT_CA.name),
          altHostname: r.string(ENV.ALT_CA_HOSTNAME.name),
          headers: caHeaders,
        };

  const instanceIp = r.string(ENV.INSTANCE_IP.name);
  if (instanceIp !== undefined && isIP(instanceIp) === 0) {
    r.problem(ENV.INSTANCE_IP.name, instanceIp, 'is not an IP address');
  }
  const ipv6Enabled = r.bool(ENV.IPV6_ENABLED.name, true);
  const wildcard = ipv6Enabled ? '::' : '0.0.0.0';
  const admin = {
    bindAddress: address(r, ENV.ADMIN_BIND_ADDRESS.name, '127.0.0.1'),
    port: r.port(ENV.ADMIN_PORT.name, proxyConfig.proxyAdminPort ?? PORTS.ADMIN),
  };
  const stats = {
    bindAddress: address(r, ENV.STATS_BIND_ADDRESS.name, wildcard),
    port: r.port(ENV.STATS_PORT.name, proxyConfig.statsPort ?? PORTS.STATS),
  };
  const readiness = {
    bindAddress: address(r, ENV.READINESS_BIND_ADDRESS.name, stats.bindAddress),
    port: r.port(ENV.READINESS_PORT.name, PORTS.READINESS),
  };
  r.distinctPorts([
    [ENV.ADMIN_PORT.name, admin.port],
    [ENV.STATS_PORT.name, stats.port],
    [ENV.READINESS_PORT.name, readiness.port],
  ]);

  const levels = r.string(ENV.LOG_LEVEL.name, 'info');
  try {
    parseLevelSpec(levels);
  } catch (err) {
    r.problem(ENV.LOG_LEVEL.name, levels, errorMessage(err));
  }
  const format = r.oneOf(ENV.LOG_FORMAT.name, ['json', 'text', 'plain'] as const, 'text');

  const packetMark = r.raw(ENV.PACKET_MARK.name)
    ? r.int(ENV.PACKET_MARK.name, DEFAULT_INPOD_MARK, { min: 0, max: 0xffffffff })
    : proxyMode === 'shared'
      ? DEFAULT_INPOD_MARK
      : undefined;
  const origSrc = r.raw(ENV.ENABLE_ORIG_SRC.name);

  const config: Config = {
    proxyMode,
    proxyWorkloadInfo,
    nodeName: r.string(ENV.NODE_NAME.name),
    podName: r.string(ENV.POD_NAME.name, ''),
    podNamespace: r.string(ENV.POD_NAMESPACE.name, ''),
    instanceIp,
    clusterId,
    clusterDomain: dnsName(r, ENV.CLUSTER_DOMAIN.name, 'cluster.local'),
    network: r.string(ENV.NETWORK.name, ''),
    xds,
    ca,
    authToken: authToken(r),
    secretTtlMs: r.durationMs(ENV.SECRET_TTL.name, 24 * HOUR_MS, { minMs: 60_000, maxMs: 90 * 24 * HOUR_MS }),
    localXds,
    proxyMetadata,
    proxyMetadataJson,
    inpod: {
      udsPath: r.string(ENV.INPOD_UDS.name, DEFAULT_INPOD_UDS),
      portReuse: r.bool(ENV.INPOD_PORT_REUSE.name, true),
      ebpfPinRoot: r.string(ENV.EBPF_PIN_ROOT.name, DEFAULT_EBPF_PIN_ROOT),
    },
    packetMark,
    enableOriginalSource: origSrc === undefined ? undefined : r.bool(ENV.ENABLE_ORIG_SRC.name, false),
    hbone: {
      windowSize: r.int(ENV.HTTP2_STREAM_WINDOW_SIZE.name, 4 * 1024 * 1024, {
        min: 65_535,
        max: 2 ** 31 - 1,
      }),
      connectionWindowSize: r.int(ENV.HTTP2_CONNECTION_WINDOW_SIZE.name, 16 * 1024 * 1024, {
        min: 65_535,
        max: 2 ** 31 - 1,
      }),
      // RFC 9113 §6.5.2: SETTINGS_MAX_FRAME_SIZE is between 2^14 and 2^24-1.
      frameSize: r.int(ENV.HTTP2_FRAME_SIZE.name, 1024 * 1024, { min: 16_384, max: 16_777_215 }),
      poolMaxStreamsPerConnection: r.int(ENV.POOL_MAX_STREAMS_PER_CONNECTION.name, 100, {
        min: 1,
        max: 65_535,
      }),
      poolUnusedReleaseTimeoutMs: r.durationMs(ENV.POOL_UNUSED_RELEASE_TIMEOUT.name, 5 * 60_000, {
        minMs: 1,
        maxMs: 24 * HOUR_MS,
      }),
    },
    terminationDeadlineMs: terminationDeadline(r),
    admin,
    stats,
    readiness,
    log: { levels, format: format === 'plain' ? 'text' : format },
    authzPolicyInfoLogging: r.bool(ENV.AUTHZ_POLICY_INFO_LOGGING.name, false),
    ipv6Enabled,
  };
  if (config.proxyMode === 'shared' && config.packetMark === undefined) {
    r.problem(ENV.PACKET_MARK.name, '', 'is required in shared mode');
  }
  r.finish();
  return deepFreeze(config);
}

function readProxyConfig(r: EnvReader): ProxyConfigDoc {
  const text = r.string(ENV.PROXY_CONFIG.name);
  if (text === undefined) return { proxyMetadata: {} };
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    r.problem(ENV.PROXY_CONFIG.name, text, `is not YAML or JSON: ${errorMessage(err)}`);
    return { proxyMetadata: {} };
  }
  if (doc === null || doc === undefined) return { proxyMetadata: {} };
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    r.problem(ENV.PROXY_CONFIG.name, text, 'is not a ProxyConfig object');
    return { proxyMetadata: {} };
  }
  const o = doc as Record<string, unknown>;
  const port = (key: string): number | undefined => {
    const v = o[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) {
      r.problem(ENV.PROXY_CONFIG.name, text, `${key} ${JSON.stringify(v)} is not a port`);
      return undefined;
    }
    return v;
  };
  const proxyMetadata: Record<string, string> = {};
  const meta = o.proxyMetadata;
  if (meta !== undefined) {
    if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) {
      r.problem(ENV.PROXY_CONFIG.name, text, 'proxyMetadata is not a map of strings');
    } else {
      for (const [k, v] of Object.entries(meta)) {
        // Upstream strips the prefix from ProxyConfig metadata keys too.
        proxyMetadata[k.startsWith(META_PREFIX) ? k.slice(META_PREFIX.length) : k] = String(v);
      }
    }
  }
  const discovery = o.discoveryAddress;
  if (discovery !== undefined && typeof discovery !== 'string') {
    r.problem(ENV.PROXY_CONFIG.name, text, 'discoveryAddress is not a string');
  }
  return {
    ...(typeof discovery === 'string' && discovery !== '' ? { discoveryAddress: discovery } : {}),
    ...(port('proxyAdminPort') === undefined ? {} : { proxyAdminPort: port('proxyAdminPort') }),
    ...(port('statsPort') === undefined ? {} : { statsPort: port('statsPort') }),
    proxyMetadata,
  };
}

function readWorkloadInfo(r: EnvReader): ProxyWorkloadInfo | undefined {
  const name = ENV.PROXY_WORKLOAD_INFO.name;
  const raw = r.string(name);
  if (raw === undefined) {
    r.problem(name, '', 'is required with PROXY_MODE=dedicated');
    return undefined;
  }
  const parts = raw.split('/');
  const [namespace, podName, serviceAccount] = parts;
  if (parts.length !== 3 || !namespace || !podName || !serviceAccount) {
    r.problem(name, raw, "must be 'namespace/name/service-account'");
    return undefined;
  }
  return { namespace, name: podName, serviceAccount };
}

function readLocalXds(r: EnvReader): LocalXdsSource | undefined {
  const path = r.string(ENV.LOCAL_XDS_PATH.name);
  const inline = r.string(ENV.LOCAL_XDS.name);
  if (path !== undefined && inline !== undefined) {
    r.problem(ENV.LOCAL_XDS.name, inline, 'cannot be set together with LOCAL_XDS_PATH');
    return undefined;
  }
  if (path !== undefined) return { kind: 'file', path };
  if (inline !== undefined) return { kind: 'inline', text: inline };
  return undefined;
}

/**
 * An istiod address: undefined when explicitly empty (the feature is off); `https://` added when
 * no scheme is given, as upstream's `validate_uri`.
 */
function controlPlaneAddress(r: EnvReader, env: Env, name: string, fallback: string): string | undefined {
  // EnvReader treats "" as unset; for an address "" means "off", so the raw env decides.
  const value = env[name] === '' ? '' : (r.string(name) ?? fallback);
  if (value === '') return undefined;
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `https://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    r.problem(name, value, 'is not an address (host:port or https://host:port)');
    return undefined;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    r.problem(name, value, 'must use https:// (or http:// for plaintext)');
    return undefined;
  }
  if (url.hostname === '' || url.port === '') {
    r.problem(name, value, 'must name a host and a port, e.g. istiod.istio-system.svc:15012');
    return undefined;
  }
  return `${url.protocol}//${url.host}`;
}

function rootCert(r: EnvReader, name: string): RootCertSource {
  const v = r.string(name, DEFAULT_ROOT_CERT_PATH);
  if (v === 'SYSTEM') return { kind: 'system' };
  if (v.includes('-----BEGIN CERTIFICATE-----')) return { kind: 'pem', pem: v };
  return { kind: 'file', path: v };
}

function authToken(r: EnvReader): AuthTokenSource {
  const v = r.string(ENV.AUTH_TOKEN.name);
  if (v === undefined) return { kind: 'file', path: DEFAULT_TOKEN_PATH, optional: true };
  if (v.startsWith('/') || v.startsWith('.')) return { kind: 'file', path: v, optional: false };
  if (/\s/.test(v)) {
    r.problem(ENV.AUTH_TOKEN.name, '<redacted>', 'a literal token must not contain whitespace');
  }
  return { kind: 'static', token: v };
}

function headers(r: EnvReader, prefix: string): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(r.withPrefix(prefix))) {
    if (!HEADER_NAME.test(key)) {
      r.problem(`${prefix}${key}`, value, 'the header name may hold only letters, digits, "-", "_" and "."');
    } else if (!HEADER_VALUE.test(value)) {
      r.problem(`${prefix}${key}`, value, 'the header value must be printable ASCII');
    } else out[key.toLowerCase()] = value;
  }
  return out;
}

/**
 * Upstream's drain deadline: CONNECTION_TERMINATION_DEADLINE, else derived from the pod's grace
 * period so the last seconds before SIGKILL are left for closing cleanly, else 5 s.
 */
function terminationDeadline(r: EnvReader): number {
  if (r.raw(ENV.CONNECTION_TERMINATION_DEADLINE.name) !== undefined) {
    return r.durationMs(ENV.CONNECTION_TERMINATION_DEADLINE.name, 5000, { minMs: 0, maxMs: 24 * HOUR_MS });
  }
  if (r.raw(ENV.TERMINATION_GRACE_PERIOD_SECONDS.name) !== undefined) {
    const secs = r.int(ENV.TERMINATION_GRACE_PERIOD_SECONDS.name, 30, { min: 0, max: 86_400 });
    return Math.max(secs > 10 ? secs - 5 : secs - 1, 1) * 1000;
  }
  return 5000;
}

function address(r: EnvReader, name: string, fallback: string): string {
  const v = r.string(name, fallback);
  if (isIP(v) === 0) {
    r.problem(name, v, 'is not an IP address');
    return fallback;
  }
  return v;
}

function dnsName(r: EnvReader, name: string, fallback: string): string {
  const v = r.string(name, fallback);
  if (v.length > 253 || !K8S_NAME.test(v)) {
    r.problem(name, v, 'is not a DNS name (lower-case letters, digits, "-" and ".")');
    return fallback;
  }
  return v;
}

/** The configuration as logged at start and shown in `/config_dump`, without secrets. */
export function redactedConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    authToken:
      config.authToken.kind === 'static' ? { kind: 'static', token: '<redacted>' } : config.authToken,
    localXds: config.localXds?.kind === 'inline' ? { kind: 'inline' } : config.localXds,
  };
}

/** The environment variable table of the README and `ztunnel help`, as Markdown. */
export function renderEnvTable(): string {
  return renderEnvDocs(Object.values(ENV));
}

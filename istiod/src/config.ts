import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
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
import { type MeshSettings, meshSettings } from './ambient/settings.ts';
import { type CaConfig, readCaConfig } from './ca/config.ts';
import { DEFAULT_DEBOUNCE } from './xds/push-queue.ts';
import { XDS_PORT } from './xds/server.ts';

/**
 * The quiet period before a push. Upstream's `PILOT_DEBOUNCE_AFTER` is 100 ms, sized for sidecar
 * pushes that regenerate each proxy's whole Envoy configuration. A WDS push here sends only the
 * changed resources, encoded once and shared by every connection: one pod change costs about
 * 6 ms of istiod CPU in `bench/istiod.ts` (index, push to 50 ztunnels, their ACKs), so 100 ms
 * would be nearly all of a change's latency (p50 109 ms there, against 15 ms at 10 ms). 10 ms
 * still merges the events of one burst, and `PILOT_DEBOUNCE_MAX` bounds a long one.
 */
export const DEFAULT_DEBOUNCE_AFTER_MS = 10;

/** One environment variable istiod reads: its default as an operator would write it, and what it does. */
/**
 * Every environment variable istiod reads, with its default and meaning. The README's table and
 * `istiod --help` are rendered from this ({@link renderEnvTable}); a test keeps the README in step.
 * Names follow upstream istiod where upstream has the setting.
 */
export const ENV = {
  CONFIG_SOURCE: envVar(
    'CONFIG_SOURCE',
    'local',
    '`local` (a directory of manifests, no Kubernetes) or `kubernetes` (list/watch the API server).',
  ),
  LOCAL_DATA_DIR: envVar(
    'LOCAL_DATA_DIR',
    '/var/lib/istiod',
    'Local mode: the directory other local paths default under.',
  ),
  LOCAL_MANIFESTS_DIR: envVar(
    'LOCAL_MANIFESTS_DIR',
    '<LOCAL_DATA_DIR>/manifests',
    'Local mode: the manifests directory (YAML/JSON, read recursively, watched).',
  ),
  LOCAL_MANIFESTS_DEBOUNCE: envVar(
    'LOCAL_MANIFESTS_DEBOUNCE',
    '100ms',
    'Local mode: quiet time after a file change before the directory is rescanned.',
  ),
  LOCAL_MANIFESTS_RESCAN_INTERVAL: envVar(
    'LOCAL_MANIFESTS_RESCAN_INTERVAL',
    '10s',
    'Local mode: full rescan period, a safety net for file events the watch missed.',
  ),
  CA_ROOT_DIR: envVar(
    'CA_ROOT_DIR',
    '<LOCAL_DATA_DIR>/ca',
    'Local mode: where the self-signed root (`ca-cert.pem`, `ca-key.pem`) is kept across restarts.',
  ),
  ROOT_CERT_FILE: envVar(
    'ROOT_CERT_FILE',
    '<LOCAL_DATA_DIR>/root-cert.pem',
    'Local mode: where the mesh root is published for clients to verify istiod (the ConfigMap in Kubernetes mode).',
  ),
  LOCAL_TOKEN_FILE: envVar(
    'LOCAL_TOKEN_FILE',
    '(none)',
    'Local mode: bearer tokens mapped to workloads, standing in for TokenReview. Without it only mesh client certificates authenticate.',
  ),
  KUBECONFIG: envVar(
    'KUBECONFIG',
    '(in-cluster)',
    'Kubernetes mode: a kubeconfig file; the pod service account is used when unset.',
  ),
  POD_NAMESPACE: envVar('POD_NAMESPACE', 'istio-system', "istiod's namespace (its Secret, its DNS names)."),
  POD_NAME: envVar('POD_NAME', '(hostname)', 'Names this replica in `control_plane.identifier`.'),
  CLUSTER_ID: envVar('CLUSTER_ID', 'Kubernetes', 'Written into every Workload uid and `cluster_id`.'),
  TRUST_DOMAIN: envVar('TRUST_DOMAIN', 'cluster.local', 'The mesh trust domain of every identity.'),
  DOMAIN_SUFFIX: envVar('DOMAIN_SUFFIX', 'cluster.local', 'Kubernetes DNS suffix of Service hostnames.'),
  ROOT_NAMESPACE: envVar(
    'ROOT_NAMESPACE',
    '<POD_NAMESPACE>',
    'Mesh config rootNamespace: policies here apply mesh-wide.',
  ),
  NETWORK: envVar('NETWORK', '(empty)', 'The network of this cluster, written into Workloads and Services.'),
  AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY: envVar(
    'AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY',
    'false',
    'Send `istio.io/dry-run` AuthorizationPolicies to ztunnel.',
  ),
  XDS_BIND_ADDRESS: envVar('XDS_BIND_ADDRESS', '0.0.0.0', 'Address the xDS/CA listeners bind.'),
  XDS_PORT: envVar(
    'XDS_PORT',
    String(XDS_PORT.SECURE),
    'TLS port serving delta ADS and IstioCertificateService (0 picks a free port).',
  ),
  XDS_PLAINTEXT_PORT: envVar(
    'XDS_PLAINTEXT_PORT',
    '0',
    `Plaintext, unauthenticated xDS (upstream ${XDS_PORT.PLAINTEXT}); 0 turns it off.`,
  ),
  PILOT_ENABLE_XDS_IDENTITY_CHECK: envVar(
    'PILOT_ENABLE_XDS_IDENTITY_CHECK',
    'true',
    'A proxy may only claim the namespace (and service account) it authenticated as.',
  ),
  PILOT_DEBOUNCE_AFTER: envVar(
    'PILOT_DEBOUNCE_AFTER',
    `${DEFAULT_DEBOUNCE_AFTER_MS}ms`,
    'Quiet period after a change before pushing (upstream: 100ms; see DEFAULT_DEBOUNCE_AFTER_MS).',
  ),
  PILOT_DEBOUNCE_MAX: envVar(
    'PILOT_DEBOUNCE_MAX',
    `${DEFAULT_DEBOUNCE.maxDelayMs / 1000}s`,
    'Longest a change waits for a push while changes keep coming.',
  ),
  MONITORING_BIND_ADDRESS: envVar('MONITORING_BIND_ADDRESS', '0.0.0.0', 'Address the metrics server binds.'),
  MONITORING_PORT: envVar('MONITORING_PORT', '15014', 'Prometheus `/metrics` (0 picks a free port).'),
  DEBUG_BIND_ADDRESS: envVar('DEBUG_BIND_ADDRESS', '0.0.0.0', 'Address the readiness/debug server binds.'),
  DEBUG_PORT: envVar('DEBUG_PORT', '8080', '`/ready`, `/debug/*`, `/logging` (0 picks a free port).'),
  ENABLE_DEBUG_ON_HTTP: envVar(
    'ENABLE_DEBUG_ON_HTTP',
    'true',
    'Serve `/debug/*` and `/logging` on the debug port; `/ready` is always served.',
  ),
  TERMINATION_DRAIN_DURATION: envVar(
    'TERMINATION_DRAIN_DURATION',
    '10s',
    'On SIGTERM, how long connected proxies keep receiving pushes before their streams are ended.',
  ),
  LOG_LEVEL: envVar('LOG_LEVEL', 'info', 'Levels as `info,xds:debug` (default, then per scope).'),
  LOG_FORMAT: envVar('LOG_FORMAT', 'json', '`json`, or `text` (also accepted as `plain`).'),
  CA_TRUSTED_NODE_ACCOUNTS: envVar(
    'CA_TRUSTED_NODE_ACCOUNTS',
    'istio-system/ztunnel',
    'Accounts (`ns/sa`, comma-separated) that may request certificates for pods on their node; `,` turns impersonation off.',
  ),
  DEFAULT_WORKLOAD_CERT_TTL: envVar(
    'DEFAULT_WORKLOAD_CERT_TTL',
    '24h',
    'Lifetime of a workload certificate when the request asks for none.',
  ),
  MAX_WORKLOAD_CERT_TTL: envVar('MAX_WORKLOAD_CERT_TTL', '2160h', 'Longest workload certificate lifetime.'),
  TOKEN_AUDIENCES: envVar('TOKEN_AUDIENCES', 'istio-ca', 'Accepted audiences of Kubernetes tokens.'),
  ROOT_CA_DIR: envVar(
    'ROOT_CA_DIR',
    '/etc/cacerts',
    'A plugged-in CA (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`) used instead of the self-signed root when `ca-key.pem` exists.',
  ),
} as const satisfies Record<string, EnvVarDoc>;

export type ConfigSourceKind = 'local' | 'kubernetes';

/** Where configuration, the root and the tokens live in local mode. */
export interface LocalModeConfig {
  readonly dataDir: string;
  readonly manifestsDir: string;
  readonly manifestsDebounceMs: number;
  readonly manifestsRescanIntervalMs: number;
  /** The self-signed root's directory (DirectoryRootStore). */
  readonly caRootDir: string;
  /** Where the root certificate is published. */
  readonly rootCertFile: string;
  readonly tokenFile: string | undefined;
}

/** One listening socket. Port 0 binds a free port (tests, benchmarks). */
export interface ListenConfig {
  readonly bindAddress: string;
  readonly port: number;
}

export interface XdsConfig extends ListenConfig {
  /** The plaintext listener's port; undefined when off. 0 binds a free port. */
  readonly plaintextPort: number | undefined;
  readonly identityCheck: boolean;
  readonly debounce: { readonly quietMs: number; readonly maxDelayMs: number };
}

/** istiod's whole configuration, read once at start (reference architecture §5.4). */
export interface Config {
  readonly configSource: ConfigSourceKind;
  /** Local mode settings; read (and defaulted) in both modes, used only in local mode. */
  readonly local: LocalModeConfig;
  readonly kubeconfigPath: string | undefined;
  readonly podNamespace: string;
  readonly podName: string;
  readonly mesh: MeshSettings;
  readonly xds: XdsConfig;
  readonly monitoring: ListenConfig;
  readonly debug: ListenConfig & { readonly endpoints: boolean };
  readonly ca: CaConfig;
  readonly log: { readonly levels: string; readonly format: LogFormat };
  readonly drainDeadlineMs: number;
}

const K8S_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Reads istiod's configuration from an environment (the process's by default). Every problem is
 * collected, so one {@link ConfigError} (from `@ambient/common/env`) names each variable, its
 * value and what is wrong with it. The result is frozen.
 */
export function loadConfig(env: Env = process.env): Config {
  const r = new EnvReader(env);
  const configSource = r.oneOf(ENV.CONFIG_SOURCE.name, ['local', 'kubernetes'] as const, 'local');

  const dataDir = r.string(ENV.LOCAL_DATA_DIR.name, '/var/lib/istiod');
  const local: LocalModeConfig = {
    dataDir,
    manifestsDir: r.string(ENV.LOCAL_MANIFESTS_DIR.name, join(dataDir, 'manifests')),
    manifestsDebounceMs: r.durationMs(ENV.LOCAL_MANIFESTS_DEBOUNCE.name, 100, { minMs: 0, maxMs: 60_000 }),
    manifestsRescanIntervalMs: r.durationMs(ENV.LOCAL_MANIFESTS_RESCAN_INTERVAL.name, 10_000, {
      minMs: 100,
      maxMs: 86_400_000,
    }),
    caRootDir: r.string(ENV.CA_ROOT_DIR.name, join(dataDir, 'ca')),
    rootCertFile: r.string(ENV.ROOT_CERT_FILE.name, join(dataDir, 'root-cert.pem')),
    tokenFile: r.string(ENV.LOCAL_TOKEN_FILE.name),
  };

  const podNamespace = dnsLabel(r, ENV.POD_NAMESPACE.name, 'istio-system');
  const trustDomain = r.string(ENV.TRUST_DOMAIN.name, 'cluster.local');
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/i.test(trustDomain) || trustDomain.length > 255) {
    r.problem(ENV.TRUST_DOMAIN.name, trustDomain, 'is not a trust domain (letters, digits, "-" and ".")');
  }
  const domainSuffix = r.string(ENV.DOMAIN_SUFFIX.name, 'cluster.local');
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(domainSuffix)) {
    r.problem(ENV.DOMAIN_SUFFIX.name, domainSuffix, 'is not a DNS suffix');
  }
  const mesh = meshSettings({
    clusterId: r.string(ENV.CLUSTER_ID.name, 'Kubernetes'),
    network: r.string(ENV.NETWORK.name, ''),
    trustDomain,
    rootNamespace: dnsLabel(r, ENV.ROOT_NAMESPACE.name, podNamespace),
    domainSuffix,
    dryRunPolicies: r.bool(ENV.AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY.name, false),
  });

  const xdsBind = address(r, ENV.XDS_BIND_ADDRESS.name);
  const xdsPort = r.port(ENV.XDS_PORT.name, XDS_PORT.SECURE);
  const plaintext = r.port(ENV.XDS_PLAINTEXT_PORT.name, 0);
  const quietMs = r.durationMs(ENV.PILOT_DEBOUNCE_AFTER.name, DEFAULT_DEBOUNCE_AFTER_MS, {
    minMs: 0,
    maxMs: 60_000,
  });
  const maxDelayMs = r.durationMs(ENV.PILOT_DEBOUNCE_MAX.name, DEFAULT_DEBOUNCE.maxDelayMs, {
    minMs: 1,
    maxMs: 600_000,
  });
  if (maxDelayMs < quietMs) {
    r.problem(
      ENV.PILOT_DEBOUNCE_MAX.name,
      r.raw(ENV.PILOT_DEBOUNCE_MAX.name) ?? `${maxDelayMs}ms`,
      `must not be shorter than PILOT_DEBOUNCE_AFTER (${quietMs}ms)`,
    );
  }
  const xds: XdsConfig = {
    bindAddress: xdsBind,
    port: xdsPort,
    plaintextPort: plaintext === 0 ? undefined : plaintext,
    identityCheck: r.bool(ENV.PILOT_ENABLE_XDS_IDENTITY_CHECK.name, true),
    debounce: { quietMs, maxDelayMs },
  };
  const monitoring: ListenConfig = {
    bindAddress: address(r, ENV.MONITORING_BIND_ADDRESS.name),
    port: r.port(ENV.MONITORING_PORT.name, 15014),
  };
  const debug = {
    bindAddress: address(r, ENV.DEBUG_BIND_ADDRESS.name),
    port: r.port(ENV.DEBUG_PORT.name, 8080),
    endpoints: r.bool(ENV.ENABLE_DEBUG_ON_HTTP.name, true),
  };
  r.distinctPorts([
    [ENV.XDS_PORT.name, xds.port],
    [ENV.XDS_PLAINTEXT_PORT.name, xds.plaintextPort ?? 0],
    [ENV.MONITORING_PORT.name, monitoring.port],
    [ENV.DEBUG_PORT.name, debug.port],
  ]);

  const levels = r.string(ENV.LOG_LEVEL.name, 'info');
  try {
    parseLevelSpec(levels);
  } catch (err) {
    r.problem(ENV.LOG_LEVEL.name, levels, errorMessage(err));
  }
  const format = r.oneOf(ENV.LOG_FORMAT.name, ['json', 'text', 'plain'] as const, 'json');

  const config: Config = {
    configSource,
    local,
    kubeconfigPath: r.string(ENV.KUBECONFIG.name),
    podNamespace,
    podName: r.string(ENV.POD_NAME.name, hostname()),
    mesh,
    xds,
    monitoring,
    debug,
    ca: readCaConfig(r),
    log: { levels, format: format === 'plain' ? 'text' : format },
    drainDeadlineMs: r.durationMs(ENV.TERMINATION_DRAIN_DURATION.name, 10_000, {
      minMs: 0,
      maxMs: 3_600_000,
    }),
  };
  r.finish();
  return deepFreeze(config);
}

function dnsLabel(r: EnvReader, name: string, fallback: string): string {
  const v = r.string(name, fallback);
  if (v.length > 63 || !K8S_NAME.test(v)) {
    r.problem(name, v, 'is not a Kubernetes namespace name (lower-case letters, digits and "-")');
    return fallback;
  }
  return v;
}

function address(r: EnvReader, name: string): string {
  const v = r.string(name, '0.0.0.0');
  if (isIP(v) === 0) {
    r.problem(name, v, 'is not an IP address');
    return '0.0.0.0';
  }
  return v;
}

/** The environment variable table of the README and `--help`, as Markdown. */
export function renderEnvTable(): string {
  return renderEnvDocs(Object.values(ENV), { defaultAsCode: true });
}

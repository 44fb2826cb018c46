/**
 * The node agent's configuration, read once from the environment. Names follow the istio-cni
 * chart's env where one exists (`istio:manifests/charts/istio-cni/templates/daemonset.yaml`,
 * `istio:cni/pkg/cmd/root.go`); the rest are this implementation's (local config source,
 * health/metrics ports, eBPF mode inputs).
 */
import { type Env, EnvReader } from '@ambient/common/env';
import { ZDS_DEFAULT_SOCKET_PATH } from '@ambient/common/zds';
import { DEFAULT_CNI_AGENT_RUN_DIR } from '../plugin-protocol.ts';
import { DEFAULT_REDIRECT_CONFIG } from '../redirect/config.ts';
import { DEFAULT_PIN_ROOT } from '../redirect/ebpf.ts';
import type { RedirectMode } from '../redirect/redirector.ts';

/** Ports and paths whose defaults match upstream istio-cni (spec §6.4). */
export const AGENT_DEFAULTS = {
  cniBinDir: '/opt/cni/bin',
  cniConfDir: '/etc/cni/net.d',
  runDir: DEFAULT_CNI_AGENT_RUN_DIR,
  zdsSocketPath: ZDS_DEFAULT_SOCKET_PATH,
  healthPort: 8000,
  metricsPort: 15014,
  excludeNamespaces: ['kube-system'],
} as const;

export type ConfigSourceKind = 'local' | 'kubernetes';

export interface AgentConfig {
  /** `NODE_NAME`: only pods with this `spec.nodeName` are handled. */
  readonly nodeName: string;
  /** `POD_NAMESPACE`: the agent's own namespace (its own pod is never enrolled). */
  readonly podNamespace: string;
  /** `POD_NAME`: the agent's own pod name. */
  readonly podName: string | undefined;
  readonly cniBinDir: string;
  readonly cniConfDir: string;
  /** `CHAINED_CNI_PLUGIN`: chain into the primary conflist (default) or write a standalone config. */
  readonly chainedCniPlugin: boolean;
  /** `ISTIO_OWNED_CNI_CONFIG`: write `02-istio-cni.conflist` instead of editing the primary. */
  readonly istioOwnedCniConfig: boolean;
  /** `CNI_INSTALL` (default true): copy the plugin and chain it; off when the runtime is set up otherwise (tests). */
  readonly installCni: boolean;
  /** `CNI_PLUGIN_BINARY`: the compiled plugin to install. */
  readonly pluginBinary: string;
  readonly excludeNamespaces: readonly string[];
  /** `CNI_AGENT_RUN_DIR`: plugin socket, enrollment state file, pod cache. */
  readonly runDir: string;
  /** `ZTUNNEL_UDS`: the ZDS socket the agent listens on. */
  readonly zdsSocketPath: string;
  readonly redirectMode: RedirectMode;
  /** `EBPF_PROXY_CGROUP`: ztunnel's cgroup v2 directory (eBPF mode only). */
  readonly ebpfProxyCgroup: string | undefined;
  /** `EBPF_PIN_ROOT`: the bpffs directory holding one pin directory per pod (eBPF mode only). */
  readonly ebpfPinRoot: string;
  readonly dnsCapture: boolean;
  readonly ipv6: boolean;
  readonly reconcileOnStartup: boolean;
  readonly hostProbeSnatIp: string;
  readonly hostProbeSnatIpv6: string;
  /** `HOST_NETNS_PATH`: the node's netns, where the probe SNAT table lives (default: the agent's own). */
  readonly hostNetnsPath: string;
  /** `CONFIG_SOURCE`: `local` reads {@link localManifestsDir}, `kubernetes` watches the API server. */
  readonly configSource: ConfigSourceKind;
  readonly localManifestsDir: string | undefined;
  readonly kubeconfig: string | undefined;
  readonly healthBindAddress: string;
  readonly healthPort: number;
  readonly metricsBindAddress: string;
  readonly metricsPort: number;
  /** `PLUGIN_HANDLER_TIMEOUT`: how long one plugin ADD may take inside the agent. */
  readonly pluginHandlerTimeoutMs: number;
}

/** Reads the agent's configuration; throws ConfigError naming every bad variable at once. */
export function loadAgentConfig(env: Env = process.env): AgentConfig {
  const r = new EnvReader(env);
  const configSource = r.oneOf('CONFIG_SOURCE', ['local', 'kubernetes'] as const, 'kubernetes');
  const localManifestsDir = r.string('LOCAL_MANIFESTS_DIR');
  if (configSource === 'local' && localManifestsDir === undefined) {
    r.problem('LOCAL_MANIFESTS_DIR', '', 'is required when CONFIG_SOURCE=local');
  }
  const redirectMode = r.oneOf('REDIRECT_MODE', ['nftables', 'ebpf'] as const, 'nftables');
  const ebpfProxyCgroup = r.string('EBPF_PROXY_CGROUP');
  if (redirectMode === 'ebpf' && ebpfProxyCgroup === undefined) {
    r.problem('EBPF_PROXY_CGROUP', '', "is required when REDIRECT_MODE=ebpf (ztunnel's cgroup v2 directory)");
  }
  const healthPort = r.port('HEALTH_PORT', AGENT_DEFAULTS.healthPort);
  const metricsPort = r.port('METRICS_PORT', AGENT_DEFAULTS.metricsPort);
  r.distinctPorts([
    ['HEALTH_PORT', healthPort],
    ['METRICS_PORT', metricsPort],
  ]);
  const cfg: AgentConfig = {
    nodeName: r.required('NODE_NAME'),
    podNamespace: r.string('POD_NAMESPACE', 'istio-system'),
    podName: r.string('POD_NAME'),
    cniBinDir: r.string('CNI_BIN_DIR', AGENT_DEFAULTS.cniBinDir),
    cniConfDir: r.string('CNI_CONF_DIR', AGENT_DEFAULTS.cniConfDir),
    chainedCniPlugin: r.bool('CHAINED_CNI_PLUGIN', true),
    istioOwnedCniConfig: r.bool('ISTIO_OWNED_CNI_CONFIG', false),
    installCni: r.bool('CNI_INSTALL', true),
    pluginBinary: r.string('CNI_PLUGIN_BINARY', '/opt/istio-cni/bin/istio-cni'),
    excludeNamespaces: r.list('EXCLUDE_NAMESPACES', AGENT_DEFAULTS.excludeNamespaces),
    runDir: r.string('CNI_AGENT_RUN_DIR', AGENT_DEFAULTS.runDir),
    zdsSocketPath: r.string('ZTUNNEL_UDS', AGENT_DEFAULTS.zdsSocketPath),
    redirectMode,
    ebpfProxyCgroup,
    ebpfPinRoot: r.string('EBPF_PIN_ROOT', DEFAULT_PIN_ROOT),
    dnsCapture: r.bool('DNS_CAPTURE', DEFAULT_REDIRECT_CONFIG.captureDns),
    ipv6: r.bool('AMBIENT_IPV6', DEFAULT_REDIRECT_CONFIG.ipv6),
    reconcileOnStartup: r.bool('RECONCILE_ON_STARTUP', true),
    hostProbeSnatIp: r.string('HOST_PROBE_SNAT_IP', DEFAULT_REDIRECT_CONFIG.probeSnatIpv4),
    hostProbeSnatIpv6: r.string('HOST_PROBE_SNAT_IPV6', DEFAULT_REDIRECT_CONFIG.probeSnatIpv6),
    hostNetnsPath: r.string('HOST_NETNS_PATH', '/proc/self/ns/net'),
    configSource,
    localManifestsDir,
    kubeconfig: r.string('KUBECONFIG'),
    healthBindAddress: r.string('HEALTH_BIND_ADDRESS', '0.0.0.0'),
    healthPort,
    metricsBindAddress: r.string('METRICS_BIND_ADDRESS', '0.0.0.0'),
    metricsPort,
    pluginHandlerTimeoutMs: r.durationMs('PLUGIN_HANDLER_TIMEOUT', 4500, { minMs: 100, maxMs: 4900 }),
  };
  for (const [name, path] of [
    ['CNI_AGENT_RUN_DIR', cfg.runDir],
    ['ZTUNNEL_UDS', cfg.zdsSocketPath],
    ['HOST_NETNS_PATH', cfg.hostNetnsPath],
    ['EBPF_PIN_ROOT', cfg.ebpfPinRoot],
  ] as const) {
    if (!path.startsWith('/')) r.problem(name, path, 'must be an absolute path');
  }
  r.finish();
  return cfg;
}

/**
 * How each mesh component is run in the local mesh: its program, its environment (the variables
 * documented in istiod/README.md, ztunnel/README.md and cni/README.md) and its readiness probe.
 * istiod runs on its own `control-plane` node; every worker node runs a ztunnel and an istio-cni
 * agent in the node's netns, each in its own cgroup (eBPF mode attaches ztunnel's getsockopt
 * program to ztunnel's cgroup only).
 */
import { fileURLToPath } from 'node:url';
import type { ProcessHost } from '@ambient/test/harness';
import type { ComponentSpec } from './component.ts';
import type { MeshLayout } from './layout.ts';

export const ISTIOD_PROGRAM = fileURLToPath(new URL('../../../istiod/src/main.ts', import.meta.url));
export const ZTUNNEL_PROGRAM = fileURLToPath(new URL('../../../ztunnel/src/main.ts', import.meta.url));
export const CNI_AGENT_PROGRAM = fileURLToPath(new URL('../../../cni/src/agent/main.ts', import.meta.url));

/** The namespace of the mesh's own pods (ztunnel), and of the CNI agents' identity. */
export const SYSTEM_NAMESPACE = 'istio-system';
/** The name istiod's serving certificate carries; ztunnel dials istiod by IP and checks this name. */
export const ISTIOD_SAN = `istiod.${SYSTEM_NAMESPACE}.svc`;
export const ISTIOD_XDS_PORT = 15012;
export const ISTIOD_DEBUG_PORT = 8080;
export const ZTUNNEL_READINESS_PORT = 15021;
export const ZTUNNEL_ADMIN_PORT = 15000;
export const ZTUNNEL_STATS_PORT = 15020;
export const CNI_HEALTH_PORT = 8000;
export const CNI_METRICS_PORT = 15014;

export type RedirectMode = 'nftables' | 'ebpf';

/** ztunnel's pod in the manifests (istiod's node authorization ties a ztunnel to its node through it). */
export function ztunnelPodName(node: string): string {
  return `ztunnel-${node}`;
}

export function istiodSpec(p: {
  host: ProcessHost;
  ip: string;
  layout: MeshLayout;
  extraEnv?: Readonly<Record<string, string>>;
}): ComponentSpec {
  return {
    name: 'istiod',
    node: 'control-plane',
    program: ISTIOD_PROGRAM,
    args: ['discovery'],
    env: {
      CONFIG_SOURCE: 'local',
      LOCAL_DATA_DIR: p.layout.istiodDir,
      LOCAL_MANIFESTS_DIR: p.layout.manifestsDir,
      LOCAL_TOKEN_FILE: p.layout.tokenFile,
      // A directory that never exists: the self-signed root in LOCAL_DATA_DIR, never the
      // machine's /etc/cacerts.
      ROOT_CA_DIR: `${p.layout.istiodDir}/no-plugged-ca`,
      POD_NAMESPACE: SYSTEM_NAMESPACE,
      POD_NAME: 'istiod',
      PILOT_DEBOUNCE_AFTER: '10ms',
      LOCAL_MANIFESTS_DEBOUNCE: '20ms',
      TERMINATION_DRAIN_DURATION: '500ms',
      ...p.extraEnv,
    },
    host: p.host,
    logFile: p.layout.componentLog('istiod', undefined),
    readiness: { netnsPath: p.host.netnsPath, address: p.ip, port: ISTIOD_DEBUG_PORT, path: '/ready' },
  };
}

export function ztunnelSpec(p: {
  node: string;
  nodeIp: string;
  host: ProcessHost;
  istiodAddress: string;
  token: string;
  layout: MeshLayout;
  /** The CNI agent's pin root: in eBPF mode ztunnel registers each pod's 15006 listener there. */
  pinRoot: string;
  extraEnv?: Readonly<Record<string, string>>;
}): ComponentSpec {
  return {
    name: 'ztunnel',
    node: p.node,
    program: ZTUNNEL_PROGRAM,
    args: ['proxy'],
    env: {
      XDS_ADDRESS: p.istiodAddress,
      CA_ADDRESS: p.istiodAddress,
      XDS_ROOT_CA: p.layout.rootCertPath,
      CA_ROOT_CA: p.layout.rootCertPath,
      ALT_XDS_HOSTNAME: ISTIOD_SAN,
      ALT_CA_HOSTNAME: ISTIOD_SAN,
      AUTH_TOKEN: p.token,
      NODE_NAME: p.node,
      POD_NAME: ztunnelPodName(p.node),
      POD_NAMESPACE: SYSTEM_NAMESPACE,
      INSTANCE_IP: p.nodeIp,
      INPOD_UDS: p.layout.ztunnelSocket(p.node),
      IPV6_ENABLED: 'false',
      // JSON lines, like the other components: the access log is read by tools (the guided check).
      LOG_FORMAT: 'json',
      CONNECTION_TERMINATION_DEADLINE: '1s',
      EBPF_PIN_ROOT: p.pinRoot,
      ...p.extraEnv,
    },
    host: p.host,
    logFile: p.layout.componentLog('ztunnel', p.node),
    readiness: {
      netnsPath: p.host.netnsPath,
      address: '127.0.0.1',
      port: ZTUNNEL_READINESS_PORT,
      path: '/healthz/ready',
    },
  };
}

export function cniAgentSpec(p: {
  node: string;
  host: ProcessHost;
  layout: MeshLayout;
  redirectMode: RedirectMode;
  /** ztunnel's cgroup on this node (eBPF mode). */
  ztunnelCgroup: string;
  /** The bpffs directory for pod pins (eBPF mode), named after the run so a sweep finds it. */
  pinRoot: string;
  extraEnv?: Readonly<Record<string, string>>;
}): ComponentSpec {
  return {
    name: 'istio-cni',
    node: p.node,
    program: CNI_AGENT_PROGRAM,
    args: [],
    env: {
      NODE_NAME: p.node,
      POD_NAMESPACE: SYSTEM_NAMESPACE,
      POD_NAME: `istio-cni-node-${p.node}`,
      CONFIG_SOURCE: 'local',
      LOCAL_MANIFESTS_DIR: p.layout.manifestsDir,
      CNI_AGENT_RUN_DIR: p.layout.cniRunDir(p.node),
      ZTUNNEL_UDS: p.layout.ztunnelSocket(p.node),
      // The harness wires the chain itself (per-node conflist), as a runtime with a fixed config.
      CNI_INSTALL: 'false',
      REDIRECT_MODE: p.redirectMode,
      ...(p.redirectMode === 'ebpf' ? { EBPF_PROXY_CGROUP: p.ztunnelCgroup, EBPF_PIN_ROOT: p.pinRoot } : {}),
      HOST_NETNS_PATH: p.host.netnsPath,
      AMBIENT_IPV6: 'false',
      // ztunnel has no DNS proxy yet: capturing port 53 would only break name lookups in pods.
      DNS_CAPTURE: 'false',
      HEALTH_PORT: String(CNI_HEALTH_PORT),
      METRICS_PORT: String(CNI_METRICS_PORT),
      ...p.extraEnv,
    },
    host: p.host,
    logFile: p.layout.componentLog('istio-cni', p.node),
    readiness: { netnsPath: p.host.netnsPath, address: '127.0.0.1', port: CNI_HEALTH_PORT, path: '/readyz' },
  };
}

/**
 * What the e2e suites read from ztunnel to prove what happened rather than assume it: its
 * `/config_dump` (workloads, workloadState, policies), its Prometheus counters (15020) and its
 * access log (JSON lines, scope `access`, in the component's log file).
 */
import { readFileSync } from 'node:fs';
import type { ConfigDump, ConfigDumpWorkload } from '@ambient/common/model';
import { eventually } from '@ambient/common/testing/eventually';
import { counterSum } from '../../../ambientctl/src/check/prometheus.ts';
import type { LocalMesh, PodStatus } from '../../../ambientctl/src/local-mesh/index.ts';

export const OPENED = 'istio_tcp_connections_opened_total';
export const CLOSED = 'istio_tcp_connections_closed_total';

/** The root namespace: mesh-wide policies, and the static STRICT policy istiod converts PeerAuthentication into. */
export const ROOT_NAMESPACE = 'istio-system';
/** What a workload under STRICT mTLS references (istiod/src/ambient/policies.ts, as upstream). */
export const STATIC_STRICT_POLICY = `${ROOT_NAMESPACE}/istio_converted_static_strict`;

export function spiffe(namespace: string, serviceAccount: string): string {
  return `spiffe://cluster.local/ns/${namespace}/sa/${serviceAccount}`;
}

export async function configDump(mesh: LocalMesh, node: string): Promise<ConfigDump> {
  const r = await mesh.ztunnelAdmin(node, '/config_dump');
  if (r.status !== 200) throw new Error(`ztunnel ${node} /config_dump answered ${r.status}`);
  return JSON.parse(r.body) as ConfigDump;
}

/** The pod's workload as a ztunnel knows it (uid `Kubernetes//Pod/<ns>/<name>`). */
export function workloadOf(dump: ConfigDump, pod: PodStatus): ConfigDumpWorkload | undefined {
  return dump.workloads.find((w) => w.namespace === pod.namespace && w.name === pod.name);
}

/** The pod's entry in ztunnel's `workloadState` (its in-pod proxy), keyed by pod uid. */
export function workloadStateOf(dump: ConfigDump, pod: PodStatus): { state?: string } | undefined {
  return dump.workloadState[pod.uid] as { state?: string } | undefined;
}

/** Sum of `metric` samples carrying every label in `labels`, over the ztunnels of `nodes`. */
export async function counter(
  mesh: LocalMesh,
  nodes: readonly string[],
  labels: Readonly<Record<string, string>>,
  metric = OPENED,
): Promise<number> {
  let sum = 0;
  for (const n of nodes) sum += counterSum(await mesh.ztunnelMetrics(n), metric, labels);
  return sum;
}

/** A line of ztunnel's access log. */
export interface AccessLogLine {
  readonly msg: string;
  readonly direction?: string;
  readonly 'src.addr'?: string;
  readonly 'src.identity'?: string;
  readonly 'src.workload'?: string;
  readonly 'src.namespace'?: string;
  readonly 'dst.workload'?: string;
  readonly 'dst.identity'?: string;
  readonly 'dst.hbone_addr'?: string;
  readonly error?: string;
}

/** The access log lines ztunnel on `node` has written so far. */
export function accessLog(mesh: LocalMesh, node: string): AccessLogLine[] {
  const z = mesh.components().find((c) => c.name === 'ztunnel' && c.node === node);
  if (z === undefined) throw new Error(`no ztunnel on ${node}`);
  const out: AccessLogLine[] = [];
  for (const line of readFileSync(z.logFile, 'utf8').split('\n')) {
    if (!line.startsWith('{') || !line.includes('"scope":"access"')) continue;
    try {
      out.push(JSON.parse(line) as AccessLogLine);
    } catch {
      // A line being written right now.
    }
  }
  return out;
}

/**
 * Waits until the ztunnels of `nodes` hold (or no longer hold) the policy `namespace/name` and
 * attach it (or not) to each of `pods` on their node: only then does traffic show its effect.
 */
export async function waitPolicy(
  mesh: LocalMesh,
  pods: readonly PodStatus[],
  ref: { namespace: string; name: string },
  present: boolean,
  timeoutMs = 15_000,
): Promise<void> {
  const key = `${ref.namespace}/${ref.name}`;
  const nodes = [...new Set(pods.map((p) => p.node))];
  await eventually(
    `policy ${key} ${present ? 'on' : 'off'} ${pods.map((p) => p.name).join(', ')}`,
    async () => {
      for (const node of nodes) {
        const dump = await configDump(mesh, node);
        if (dump.policies.some((p) => p.namespace === ref.namespace && p.name === ref.name) !== present) {
          return false;
        }
        for (const pod of pods.filter((p) => p.node === node)) {
          const attached = workloadOf(dump, pod)?.authorizationPolicies.includes(key) ?? false;
          if (attached !== present) return false;
        }
      }
      return true;
    },
    timeoutMs,
  );
}

/** Waits until every ztunnel attaches (or detaches) `policyKey` to each of `pods` (e.g. the static STRICT policy). */
export async function waitAttached(
  mesh: LocalMesh,
  pods: readonly PodStatus[],
  policyKey: string,
  present: boolean,
  timeoutMs = 15_000,
): Promise<void> {
  await eventually(
    `${policyKey} ${present ? 'attached to' : 'detached from'} ${pods.map((p) => p.name).join(', ')}`,
    async () => {
      for (const n of mesh.nodes) {
        const dump = await configDump(mesh, n.name);
        for (const pod of pods) {
          if ((workloadOf(dump, pod)?.authorizationPolicies.includes(policyKey) ?? false) !== present) {
            return false;
          }
        }
      }
      return true;
    },
    timeoutMs,
  );
}

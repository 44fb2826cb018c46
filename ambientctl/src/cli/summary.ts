import type { ComponentStatus, MeshNodeInfo, PodStatus, RedirectMode } from '../host/hosted-mesh.ts';
import { formatTable } from '../zc/tabwriter.ts';

/** What `up` and `status` print about a mesh. */
export interface MeshView {
  readonly redirectMode: RedirectMode;
  readonly nodes: readonly MeshNodeInfo[];
  readonly controlPlane: MeshNodeInfo;
  readonly istiodAddress: string;
  readonly components: readonly ComponentStatus[];
  readonly pods: readonly PodStatus[];
}

/** kubectl separates columns by three spaces. */
const KUBECTL_PADDING = 3;

function netnsName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export function nodeTable(view: MeshView): string {
  return formatTable(
    [
      ['NODE', 'ROLE', 'IP', 'POD CIDR', 'NETNS'],
      [
        view.controlPlane.name,
        'control plane (istiod)',
        view.controlPlane.ip,
        '-',
        netnsName(view.controlPlane.netnsPath),
      ],
      ...view.nodes.map((n) => [n.name, 'worker', n.ip, n.podCidr, netnsName(n.netnsPath)]),
    ],
    KUBECTL_PADDING,
  );
}

export function componentTable(components: readonly ComponentStatus[]): string {
  return formatTable(
    [
      ['COMPONENT', 'NODE', 'PID', 'READY', 'RESTARTS', 'LOG'],
      ...components.map((c) => [
        c.name,
        c.node,
        c.pid === undefined ? '-' : String(c.pid),
        c.ready ? 'true' : 'false',
        String(c.restarts),
        c.logFile,
      ]),
    ],
    KUBECTL_PADDING,
  );
}

export function podTable(pods: readonly PodStatus[], options: { allNamespaces?: boolean } = {}): string {
  const all = options.allNamespaces ?? true;
  return formatTable(
    [
      [...(all ? ['NAMESPACE'] : []), 'NAME', 'READY', 'STATUS', 'RESTARTS', 'IP', 'NODE', 'AMBIENT', 'PID'],
      ...pods.map((p) => [
        ...(all ? [p.namespace] : []),
        p.name,
        p.ready ? '1/1' : '0/1',
        p.phase,
        String(p.restarts),
        p.ip ?? '<none>',
        p.node,
        p.ambient ? 'enabled' : '-',
        p.pid === undefined ? '-' : String(p.pid),
      ]),
    ],
    KUBECTL_PADDING,
  );
}

/** What runs where: nodes, components with pids, pods. */
export function meshSummary(view: MeshView): string {
  return [
    `istiod: ${view.istiodAddress} (on ${view.controlPlane.name}); redirection: ${view.redirectMode}`,
    '',
    nodeTable(view),
    componentTable(view.components),
    podTable(view.pods),
  ]
    .join('\n')
    .trimEnd();
}

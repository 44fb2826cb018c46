import { stringify } from 'yaml';
import { AmbientctlError } from '../errors.ts';
import { parseConfigDump } from '../zc/dump.ts';
import { formatTable } from '../zc/tabwriter.ts';
import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';
import { componentTable, nodeTable, podTable } from './summary.ts';

const RESOURCES: Readonly<Record<string, 'pods' | 'services' | 'nodes' | 'components'>> = {
  po: 'pods',
  pod: 'pods',
  pods: 'pods',
  svc: 'services',
  service: 'services',
  services: 'services',
  no: 'nodes',
  node: 'nodes',
  nodes: 'nodes',
  component: 'components',
  components: 'components',
};

export interface GetOptions {
  readonly resource: string;
  readonly namespace: string;
  readonly allNamespaces: boolean;
  readonly output: 'table' | 'json' | 'yaml';
}

/**
 * `ambientctl get pods|svc|nodes|components`: what the pod runner runs, the Services ztunnel
 * knows (from the first node's config dump), the nodes, the mesh components.
 */
export async function get(ctx: CliContext, o: GetOptions): Promise<number> {
  const kind = RESOURCES[o.resource.toLowerCase()];
  if (kind === undefined) {
    throw new AmbientctlError(
      'USAGE',
      `get: unknown resource ${JSON.stringify(o.resource)}; one of pods, svc, nodes, components`,
    );
  }
  const mesh = await connectMesh(ctx);
  const s = await mesh.status();
  const print = (rows: unknown, table: () => string): number => {
    if (o.output === 'json') ctx.out(JSON.stringify(rows, null, 2));
    else if (o.output === 'yaml') ctx.out(stringify(rows).trimEnd());
    else ctx.out(table().trimEnd());
    return 0;
  };
  switch (kind) {
    case 'pods': {
      const pods = s.pods.filter((p) => o.allNamespaces || p.namespace === o.namespace);
      if (pods.length === 0 && o.output === 'table') {
        ctx.err(`No resources found in ${o.allNamespaces ? 'any' : o.namespace} namespace.`);
        return 0;
      }
      return print(pods, () => podTable(pods, { allNamespaces: o.allNamespaces }));
    }
    case 'nodes':
      return print([s.controlPlane, ...s.nodes], () => nodeTable(s));
    case 'components':
      return print(s.components, () => componentTable(s.components));
    case 'services': {
      const node = s.nodes[0]?.name;
      if (node === undefined) throw new AmbientctlError('NOT_FOUND', 'the mesh has no nodes');
      const dump = parseConfigDump((await mesh.ztunnelAdmin(node, '/config_dump')).body);
      const svcs = dump.services.filter((x) => o.allNamespaces || x.namespace === o.namespace);
      return print(
        svcs.map((x) => x.raw),
        () =>
          formatTable(
            [
              [...(o.allNamespaces ? ['NAMESPACE'] : []), 'NAME', 'CLUSTER-IP', 'PORT(S)', 'ENDPOINTS'],
              ...svcs.map((x) => {
                const ports = Object.entries((x.raw as { ports?: Record<string, number> }).ports ?? {})
                  .map(([p, t]) => `${p}:${t}/TCP`)
                  .join(',');
                return [
                  ...(o.allNamespaces ? [x.namespace] : []),
                  x.name,
                  x.vips.map((v) => v.slice(v.indexOf('/') + 1)).join(',') || 'None',
                  ports || '<none>',
                  String(x.endpoints.length),
                ];
              }),
            ],
            3,
          ),
      );
    }
  }
}

import { AmbientctlError } from '../errors.ts';
import { renderZc, ZC_KINDS, ZC_OUTPUTS, type ZcFilter, type ZcKind, type ZcOutput } from '../zc/index.ts';
import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';

/** istioctl's names and short forms of the `ztunnel-config` views. */
const KIND_ALIASES: Readonly<Record<string, ZcKind>> = {
  workload: 'workloads',
  workloads: 'workloads',
  w: 'workloads',
  service: 'services',
  services: 'services',
  svc: 'services',
  s: 'services',
  policy: 'policies',
  policies: 'policies',
  p: 'policies',
  certificate: 'certificates',
  certificates: 'certificates',
  certs: 'certificates',
  secret: 'certificates',
  c: 'certificates',
  connection: 'connections',
  connections: 'connections',
  all: 'all',
};

export interface ZcOptions {
  readonly kind: string;
  readonly node?: string;
  readonly output: string;
  readonly filter: ZcFilter;
}

/**
 * `ambientctl zc <view>` (`ztunnel-config`): reads `/config_dump` from the ztunnel on `--node`
 * (the first node by default) and prints it as `istioctl ztunnel-config` does.
 */
export async function zc(ctx: CliContext, o: ZcOptions): Promise<number> {
  const kind = KIND_ALIASES[o.kind.toLowerCase()];
  if (kind === undefined) {
    throw new AmbientctlError(
      'USAGE',
      `zc: unknown view ${JSON.stringify(o.kind)}; one of ${ZC_KINDS.join(', ')}`,
    );
  }
  const output = (o.output === 'short' || o.output === '' ? 'table' : o.output) as ZcOutput;
  if (!ZC_OUTPUTS.includes(output)) {
    throw new AmbientctlError('USAGE', `zc: -o ${o.output}: one of ${ZC_OUTPUTS.join(', ')}`);
  }
  const mesh = await connectMesh(ctx);
  const node = o.node ?? mesh.nodes[0]?.name;
  if (node === undefined || !mesh.nodes.some((n) => n.name === node)) {
    throw new AmbientctlError(
      'NOT_FOUND',
      `no ztunnel on node ${JSON.stringify(node)}; nodes: ${mesh.nodes.map((n) => n.name).join(', ')}`,
    );
  }
  const r = await mesh.ztunnelAdmin(node, '/config_dump');
  if (r.status !== 200) {
    throw new AmbientctlError(
      'CONTROL_FAILED',
      `ztunnel on ${node} answered /config_dump with ${r.status}: ${r.body.slice(0, 200)}`,
    );
  }
  process.stdout.write(renderZc(kind, r.body, { output, filter: o.filter }));
  return 0;
}

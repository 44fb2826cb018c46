import { AmbientctlError } from '../errors.ts';
import type { ComponentName } from '../host/hosted-mesh.ts';
import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';

const NAMES: Readonly<Record<string, ComponentName>> = {
  istiod: 'istiod',
  ztunnel: 'ztunnel',
  'istio-cni': 'istio-cni',
  cni: 'istio-cni',
};

/** `ambientctl restart <component> [--node]`: as `kubectl rollout restart` of the DaemonSet or Deployment. */
export async function restart(
  ctx: CliContext,
  o: { readonly component: string; readonly node?: string },
): Promise<number> {
  const name = NAMES[o.component];
  if (name === undefined) {
    throw new AmbientctlError(
      'USAGE',
      `restart: unknown component ${JSON.stringify(o.component)}; one of istiod, ztunnel, istio-cni`,
    );
  }
  const mesh = await connectMesh(ctx);
  await mesh.restartComponent(name, o.node);
  ctx.out(`${name}${o.node === undefined ? '' : ` on ${o.node}`} restarted`);
  return 0;
}

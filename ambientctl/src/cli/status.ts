import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';
import { meshSummary } from './summary.ts';

/** `ambientctl status`: what runs where in the running mesh. */
export async function status(ctx: CliContext, o: { readonly json: boolean }): Promise<number> {
  const mesh = await connectMesh(ctx);
  const s = await mesh.status();
  if (o.json) {
    ctx.out(JSON.stringify(s, null, 2));
    return 0;
  }
  ctx.out(`Mesh ${ctx.name}: running (daemon pid ${s.pid}, state in ${s.stateDir})`);
  ctx.out(meshSummary(s));
  const notReady =
    s.components.filter((c) => !c.ready).length + s.pods.filter((p) => p.phase !== 'Running').length;
  return notReady === 0 ? 0 : 1;
}

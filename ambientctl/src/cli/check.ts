import { runGuidedCheck } from '../check/guided-check.ts';
import { AmbientctlError } from '../errors.ts';
import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';

/** `ambientctl check`: the guided check `up` runs, again, on the running mesh. */
export async function check(ctx: CliContext): Promise<number> {
  const mesh = await connectMesh(ctx);
  ctx.out('Guided check:');
  const result = await runGuidedCheck(mesh, { print: (line) => ctx.out(`  ${line}`) });
  if (!result.passed)
    throw new AmbientctlError('CHECK_FAILED', 'the guided check failed (see the ✗ lines above)');
  return 0;
}

import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage } from '@ambient/common/errors';
import { runGuidedCheck } from '../check/guided-check.ts';
import { AmbientctlError } from '../errors.ts';
import { LocalMesh, sweepLocalMeshes } from '../local-mesh/index.ts';
import type { CliContext } from './context.ts';
import { progressPrinter } from './progress-printer.ts';
import { meshSummary } from './summary.ts';
import { claimStateDir, type UpOptions } from './up.ts';

/**
 * `ambientctl up --once`, for scripts and CI: the mesh in this process, the guided check, then
 * down. Exit 0 when the check passed, 1 otherwise; nothing is left behind either way (the state
 * directory goes too, unless `keepLogs`, which keeps `logs/` to read after a failure). SIGINT and
 * SIGTERM take the mesh down before exiting.
 */
export async function upOnce(
  ctx: CliContext,
  o: UpOptions & { readonly keepLogs: boolean },
): Promise<number> {
  await claimStateDir(ctx);
  let mesh: LocalMesh | undefined;
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (s: NodeJS.Signals): void => {
    if (interrupted !== undefined) return;
    interrupted = s;
    ctx.err(`${s}: taking the mesh down`);
    // During `up` the mesh does not exist yet: it is taken down as soon as `up` returns.
    if (mesh !== undefined) void finish(1).then((code) => process.exit(code));
  };
  const finish = async (code: number): Promise<number> => {
    try {
      await mesh?.down();
    } catch (err) {
      ctx.err(`taking the mesh down: ${errorMessage(err)}`);
      code = code === 0 ? 1 : code;
    }
    await sweepLocalMeshes();
    if (o.keepLogs) {
      for (const f of ['manifests', 'istiod', 'nodes', 'control.sock', 'state.json', 'progress.jsonl']) {
        rmSync(join(ctx.stateDir, f), { recursive: true, force: true });
      }
      ctx.out(`Logs kept in ${join(ctx.stateDir, 'logs')}`);
    } else {
      rmSync(ctx.stateDir, { recursive: true, force: true });
    }
    if (interrupted !== undefined) return interrupted === 'SIGINT' ? 130 : 143;
    return code;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  ctx.out(`Local mesh ${ctx.name} (once): ${o.host.nodes} node(s), ${o.host.redirectMode} redirection`);
  try {
    mesh = await LocalMesh.up({
      stateDir: ctx.stateDir,
      nodes: o.host.nodes,
      redirectMode: o.host.redirectMode,
      samples: o.host.samples,
      componentEnv: o.host.componentEnv,
      onProgress: progressPrinter(ctx.out),
      startTimeoutMs: o.timeoutMs,
    });
  } catch (err) {
    // After a signal the harness has already torn the half-built mesh down: that is why up failed.
    if (interrupted === undefined) ctx.err(`the mesh did not come up: ${errorMessage(err)}`);
    return finish(1);
  }
  if (interrupted !== undefined) return finish(1);

  let passed = true;
  if (o.check) {
    ctx.out('');
    ctx.out('Guided check:');
    try {
      passed = (await runGuidedCheck(mesh, { print: (line) => ctx.out(`  ${line}`) })).passed;
    } catch (err) {
      ctx.out(`  ✗ the guided check could not run: ${errorMessage(err)}`);
      passed = false;
    }
  }
  if (interrupted !== undefined) return finish(1);
  ctx.out('');
  ctx.out('What ran where:');
  ctx.out(
    meshSummary({
      redirectMode: mesh.redirectMode,
      nodes: mesh.nodes,
      controlPlane: mesh.controlPlane,
      istiodAddress: mesh.istiodAddress,
      components: mesh.components(),
      pods: mesh.pods(),
    }),
  );
  ctx.out('Taking the mesh down');
  const code = await finish(passed ? 0 : 1);
  if (code === 0) ctx.out(`${o.check ? 'Guided check passed; ' : ''}the mesh is down, nothing left behind.`);
  else if (!passed && interrupted === undefined) {
    throw new AmbientctlError(
      'CHECK_FAILED',
      'the guided check failed (see the ✗ lines above); the mesh is down',
    );
  }
  return code;
}

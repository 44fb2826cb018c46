import { existsSync, rmSync } from 'node:fs';
import { errorMessage } from '@ambient/common/errors';
import { ControlClient } from '../host/control-client.ts';
import { HostFiles } from '../host/files.ts';
import { CONTROL_ROUTES } from '../host/protocol.ts';
import { isHostAlive, readHostState } from '../host/state-file.ts';
import { sweepLocalMeshes } from '../local-mesh/index.ts';
import type { CliContext } from './context.ts';

const POLL_MS = 100;

async function waitGone(pid: number, stateDir: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isHostAlive(pid, stateDir)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return true;
}

/**
 * `ambientctl down`: asks the daemon to take the mesh down and waits for it to exit (SIGTERM,
 * then SIGKILL, when it does not answer); then sweeps whatever a crashed run left (network
 * namespaces, processes, cgroups, BPF pins) and removes the state directory. Works, and leaves
 * nothing behind, even when the daemon is already dead.
 */
export async function down(ctx: CliContext, o: { readonly timeoutMs: number }): Promise<number> {
  const files = new HostFiles(ctx.stateDir);
  const state = readHostState(files.state);
  let stopped = false;
  if (state !== undefined && isHostAlive(state.pid, ctx.stateDir)) {
    ctx.out(`Stopping mesh ${ctx.name} (daemon pid ${state.pid})`);
    try {
      await new ControlClient(files.controlSocket).post(CONTROL_ROUTES.shutdown, {}, 10_000);
    } catch (err) {
      ctx.err(`the daemon did not take the shutdown request (${errorMessage(err)}); sending SIGTERM`);
      process.kill(state.pid, 'SIGTERM');
    }
    if (!(await waitGone(state.pid, ctx.stateDir, o.timeoutMs))) {
      ctx.err(`the daemon did not exit within ${Math.round(o.timeoutMs / 1000)} s; killing it`);
      process.kill(state.pid, 'SIGKILL');
      await waitGone(state.pid, ctx.stateDir, 10_000);
    }
    stopped = true;
  }
  // The daemon's teardown already removed its mesh; this catches a daemon that died or was killed.
  const swept = await sweepLocalMeshes();
  const hadDir = existsSync(ctx.stateDir);
  rmSync(ctx.stateDir, { recursive: true, force: true });
  if (!stopped && swept.length === 0 && !hadDir) {
    ctx.out(`No mesh named ${ctx.name} is running; nothing to remove.`);
    return 0;
  }
  if (swept.length > 0) ctx.out(`Removed leftovers of ${swept.length} crashed run(s): ${swept.join(', ')}`);
  ctx.out(
    `Mesh ${ctx.name} is down: network namespaces, links, nftables tables, BPF pins, processes and ${ctx.stateDir} removed.`,
  );
  return 0;
}

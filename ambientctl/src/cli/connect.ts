import { AmbientctlError } from '../errors.ts';
import { HostFiles } from '../host/files.ts';
import { RemoteMesh } from '../host/remote-mesh.ts';
import { readHostState } from '../host/state-file.ts';
import { type CliContext, suggest } from './context.ts';

/**
 * The running mesh called `name`, through its daemon's control socket. MESH_NOT_RUNNING, with
 * what to do about it, when there is none (or its daemon is still starting, or has failed).
 */
export async function connectMesh(ctx: CliContext): Promise<RemoteMesh> {
  const { name } = ctx;
  const files = new HostFiles(ctx.stateDir);
  const state = readHostState(files.state);
  if (state === undefined) {
    throw new AmbientctlError(
      'MESH_NOT_RUNNING',
      `no mesh named ${name} is running; start one with: ${suggest(ctx, 'up')}`,
    );
  }
  if (state.phase === 'starting') {
    throw new AmbientctlError(
      'MESH_NOT_RUNNING',
      `mesh ${name} is still starting (daemon pid ${state.pid}); see ${files.progress}`,
    );
  }
  if (state.phase === 'failed') {
    throw new AmbientctlError(
      'MESH_NOT_RUNNING',
      `mesh ${name} failed to start: ${state.error?.message ?? 'unknown error'}; logs in ${files.logsDir} and ${files.hostLog}; clean up with: ${suggest(ctx, 'down')}`,
    );
  }
  try {
    return await RemoteMesh.connect(files.controlSocket);
  } catch (err) {
    if (err instanceof AmbientctlError && err.code === 'MESH_NOT_RUNNING') {
      throw new AmbientctlError(
        'MESH_NOT_RUNNING',
        `mesh ${name} is not answering (state ${state.phase}, daemon pid ${state.pid}): ${err.message}; clean up with: ${suggest(ctx, 'down')}`,
        { cause: err },
      );
    }
    throw err;
  }
}

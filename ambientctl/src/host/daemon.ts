/**
 * `ambientctl host --state-dir <dir>` (hidden): the daemon `up` leaves behind. It owns the
 * LocalMesh — its processes are this process's children, supervised here — and serves the control
 * socket until `down` (or SIGTERM) takes the mesh down. Its progress goes to progress.jsonl for
 * the `up` that started it; its own log lines go to stdout, which `up` pointed at host.log.
 */
import { errorMessage, MeshError } from '@ambient/common/errors';
import type { Logger, Logging } from '@ambient/common/log';
import { LocalMesh } from '../local-mesh/mesh.ts';
import { ControlServer } from './control-server.ts';
import { HostFiles } from './files.ts';
import { readHostOptions } from './host-options.ts';
import type { HostedMesh } from './hosted-mesh.ts';
import { ProgressWriter } from './progress-log.ts';
import { type HostPhase, type HostState, writeHostState } from './state-file.ts';

/** Runs the daemon until the mesh is down again; resolves with the process exit code. */
export async function runHost(stateDir: string, logging: Logging): Promise<number> {
  const log = logging.logger('host');
  const files = new HostFiles(stateDir);
  const options = readHostOptions(files.options);
  const progress = new ProgressWriter(files.progress);
  const startedAt = new Date().toISOString();
  let state: HostState = {
    name: options.name,
    stateDir,
    pid: process.pid,
    phase: 'starting',
    startedAt,
    redirectMode: options.redirectMode,
    nodes: [],
  };
  const setState = (phase: HostPhase, extra: Partial<HostState> = {}): void => {
    state = { ...state, ...extra, phase };
    writeHostState(files.state, state);
  };
  setState('starting');

  let stopRequested: (() => void) | undefined;
  const stopWanted = new Promise<void>((resolve) => {
    stopRequested = resolve;
  });
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info({ signal }, 'signal received; taking the mesh down');
    signalled = true;
    stopRequested?.();
  };
  for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(s, onSignal);

  log.info({ stateDir, options }, 'bringing the local mesh up');
  let mesh: HostedMesh;
  try {
    mesh = await LocalMesh.up({
      stateDir,
      nodes: options.nodes,
      redirectMode: options.redirectMode,
      samples: options.samples,
      componentEnv: options.componentEnv,
      onProgress: (e) => {
        progress.step(e);
        log.info({ step: e.step, state: e.state, detail: e.detail }, 'progress');
      },
      log: logging.logger('local-mesh'),
    });
  } catch (err) {
    const code = err instanceof MeshError ? err.code : 'STEP_FAILED';
    log.error({ err: errorMessage(err), code }, 'the local mesh did not come up');
    progress.failed(code, errorMessage(err));
    setState('failed', { error: { code, message: errorMessage(err) } });
    return 1;
  }

  const server = new ControlServer({
    mesh,
    socketPath: files.controlSocket,
    onShutdown: () => {
      log.info('shutdown requested over the control socket');
      stopRequested?.();
    },
    log,
  });
  try {
    await server.start();
  } catch (err) {
    log.error({ err: errorMessage(err) }, 'cannot serve the control socket; taking the mesh down');
    progress.failed('CONTROL_FAILED', `cannot serve ${files.controlSocket}: ${errorMessage(err)}`);
    await downQuietly(mesh, log);
    setState('failed', { error: { code: 'CONTROL_FAILED', message: errorMessage(err) } });
    return 1;
  }
  setState('ready', { nodes: mesh.nodes, istiodAddress: mesh.istiodAddress });
  // A signal during `up` is honoured now that there is a mesh to take down.
  if (!signalled) progress.ready();
  log.info({ socket: files.controlSocket }, 'local mesh ready');

  await stopWanted;
  setState('stopping');
  await server.stop();
  const ok = await downQuietly(mesh, log);
  setState('stopped');
  log.info('local mesh down');
  return ok ? 0 : 1;
}

async function downQuietly(mesh: HostedMesh, log: Logger): Promise<boolean> {
  try {
    await mesh.down();
    return true;
  } catch (err) {
    log.error({ err: errorMessage(err) }, 'taking the mesh down failed; ambientctl down sweeps what is left');
    return false;
  }
}

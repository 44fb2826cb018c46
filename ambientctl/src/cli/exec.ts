import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { AmbientctlError } from '../errors.ts';
import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';
import { resolvePod } from './pod-ref.ts';

/**
 * Enters the pod's cgroup (eBPF redirection hooks it) from inside its netns, then execs the
 * command: the command's first instruction already runs where the pod's own processes do.
 */
const ENTER_CGROUP = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"';

/**
 * `ambientctl exec <pod> -n <ns> -- <cmd…>`: runs the command as if inside the pod — in its
 * network namespace and cgroup, so its connections are captured exactly as the pod's app's —
 * with this terminal's stdin, stdout and stderr. Exits with the command's status.
 */
export async function exec(
  ctx: CliContext,
  o: { readonly pod: string; readonly namespace: string; readonly command: readonly string[] },
): Promise<number> {
  if (o.command.length === 0) {
    throw new AmbientctlError(
      'USAGE',
      'exec needs a command after --, e.g. ambientctl exec deploy/client -n demo -- curl -s http://10.96.0.10/',
    );
  }
  const mesh = await connectMesh(ctx);
  const pod = resolvePod(await mesh.pods(), o.namespace, o.pod);
  if (pod.phase !== 'Running' || pod.netnsPath === undefined || pod.cgroupPath === undefined) {
    throw new AmbientctlError(
      'POD_NOT_FOUND',
      `pod ${pod.namespace}/${pod.name} is ${pod.phase}, not Running: nothing to exec into`,
    );
  }
  const child = spawn(
    'nsenter',
    [
      `--net=${pod.netnsPath}`,
      '--',
      '/bin/sh',
      '-c',
      ENTER_CGROUP,
      'ambientctl-exec',
      pod.cgroupPath,
      ...o.command,
    ],
    { stdio: 'inherit' },
  );
  // The terminal's Ctrl-C reaches the command (same process group); it decides, we wait. A
  // SIGTERM or SIGHUP sent to ambientctl alone is passed on, so the command does not outlive it.
  const ignore = (): void => {};
  const forward = (signal: NodeJS.Signals): void => {
    child.kill(signal);
  };
  process.on('SIGINT', ignore);
  process.on('SIGTERM', forward);
  process.on('SIGHUP', forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.on('error', (err) =>
        reject(new AmbientctlError('EXEC_FAILED', `cannot run nsenter: ${err.message}`, { cause: err })),
      );
      child.on('exit', (code, signal) => {
        if (signal !== null) resolve(128 + (constants.signals[signal] ?? 0));
        else resolve(code ?? 1);
      });
    });
  } finally {
    process.off('SIGINT', ignore);
    process.off('SIGTERM', forward);
    process.off('SIGHUP', forward);
  }
}

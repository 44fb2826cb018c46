import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AmbientctlError } from '../errors.ts';

const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));

/**
 * Starts `ambientctl host --state-dir <dir>` detached: its own session (a Ctrl-C on `up` does not
 * reach it), stdin closed, stdout and stderr appended to `logFile`. Returns its pid.
 */
export function launchHost(stateDir: string, logFile: string): number {
  const out = openSync(logFile, 'a', 0o600);
  try {
    const child = spawn(
      process.execPath,
      ['--conditions=@ambient/source', MAIN, 'host', '--state-dir', stateDir],
      { detached: true, stdio: ['ignore', out, out], cwd: '/' },
    );
    if (child.pid === undefined) {
      throw new AmbientctlError(
        'STEP_FAILED',
        `could not start the ambientctl daemon (${process.execPath} ${MAIN})`,
      );
    }
    child.unref();
    return child.pid;
  } finally {
    closeSync(out);
  }
}

/** Whether a process with this pid exists (any process: the caller checks it is ours). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

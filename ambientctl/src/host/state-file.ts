import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { AmbientctlError } from '../errors.ts';
import type { MeshNodeInfo, RedirectMode } from './hosted-mesh.ts';

/** Where the daemon is in its life; `up` and `status` read it. */
export type HostPhase = 'starting' | 'ready' | 'stopping' | 'stopped' | 'failed';

/** `<stateDir>/state.json`: what a CLI needs to find and describe the daemon without asking it. */
export interface HostState {
  readonly name: string;
  readonly stateDir: string;
  readonly pid: number;
  readonly phase: HostPhase;
  readonly startedAt: string;
  readonly redirectMode: RedirectMode;
  readonly nodes: readonly MeshNodeInfo[];
  readonly istiodAddress?: string;
  /** Set in phase `failed`: the error code and message. */
  readonly error?: { readonly code: string; readonly message: string };
}

/** Writes through a temporary file and a rename, so a reader never sees half a file. */
export function writeHostState(path: string, state: HostState): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
}

/** The state file, or undefined when there is none; throws CONTROL_FAILED when it is unreadable. */
export function readHostState(path: string): HostState | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new AmbientctlError('CONTROL_FAILED', `cannot read ${path}`, { cause: err });
  }
  try {
    return JSON.parse(text) as HostState;
  } catch (err) {
    throw new AmbientctlError(
      'CONTROL_FAILED',
      `${path} is not valid JSON; remove it or run ambientctl down`,
      {
        cause: err,
      },
    );
  }
}

/**
 * Whether `pid` is a live ambientctl daemon of this state directory: the process exists and its
 * command line is `… host --state-dir <stateDir>` (a recycled pid running something else is not).
 */
export function isHostAlive(pid: number, stateDir: string): boolean {
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return false;
  }
  const argv = cmdline.split('\0');
  const at = argv.indexOf('--state-dir');
  return argv.includes('host') && at >= 0 && argv[at + 1] === stateDir;
}

import { join } from 'node:path';

/**
 * The daemon's own files in a mesh's state directory, beside what LocalMesh keeps there
 * (manifests/, istiod/, nodes/, logs/):
 *
 * ```
 * <stateDir>/host-options.json  what `up` asked for (nodes, redirect mode, component env)
 * <stateDir>/state.json         the daemon's pid and phase, the nodes, istiod's address
 * <stateDir>/progress.jsonl     one line per step of `up`, then `ready` or `failed`; `up` tails it
 * <stateDir>/control.sock       HTTP over a unix socket: status, apply, delete, exec, zc, shutdown
 * <stateDir>/host.log           the daemon's own stdout/stderr (structured log lines)
 * ```
 */
export class HostFiles {
  readonly stateDir: string;
  readonly options: string;
  readonly state: string;
  readonly progress: string;
  readonly controlSocket: string;
  readonly hostLog: string;
  readonly logsDir: string;

  constructor(stateDir: string) {
    this.stateDir = stateDir;
    this.options = join(stateDir, 'host-options.json');
    this.state = join(stateDir, 'state.json');
    this.progress = join(stateDir, 'progress.jsonl');
    this.controlSocket = join(stateDir, 'control.sock');
    this.hostLog = join(stateDir, 'host.log');
    this.logsDir = join(stateDir, 'logs');
  }
}

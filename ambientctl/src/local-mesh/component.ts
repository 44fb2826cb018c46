/**
 * One mesh component process (istiod, a node's ztunnel, a node's istio-cni agent), supervised the
 * way a Deployment or DaemonSet keeps its pod running: started in its netns and cgroup with its
 * output appended to its log file, probed for readiness, and started again with a growing delay
 * when it exits without being asked to (each restart counted).
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import type { Logger } from '@ambient/common/log';
import type { HarnessProcess, ProcessHost } from '@ambient/test/harness';
import { AmbientctlError } from '../errors.ts';
import { httpGetInNetns } from './netns-http.ts';

export type ComponentName = 'istiod' | 'ztunnel' | 'istio-cni';

/** What `components()` reports for one process. */
export interface ComponentStatus {
  readonly name: string;
  readonly node: string;
  readonly pid: number | undefined;
  readonly ready: boolean;
  readonly restarts: number;
  readonly logFile: string;
}

export interface ComponentSpec {
  readonly name: ComponentName;
  /** The node it runs on (`control-plane` for istiod). */
  readonly node: string;
  /** The TypeScript entry point, run with the mesh's Node and the `@ambient/source` condition. */
  readonly program: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** Its netns and cgroup. */
  readonly host: ProcessHost;
  readonly logFile: string;
  /** An HTTP GET answering 200 once the component is ready, from inside `netnsPath`. */
  readonly readiness: {
    readonly netnsPath: string;
    readonly address: string;
    readonly port: number;
    readonly path: string;
  };
}

/** Restart delays: 1 s doubling to 10 s; back to 1 s after a run of at least 30 s. */
const RESTART_INITIAL_MS = 1000;
const RESTART_MAX_MS = 10_000;
const STABLE_RUN_MS = 30_000;
const READINESS_PERIOD_MS = 2000;
const STOP_GRACE_MS = 5000;

/** The last `n` lines of a log file, for error messages. */
export function logTail(file: string, n = 20): string {
  if (!existsSync(file)) return '(no log)';
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  return lines.slice(-n).join('\n');
}

export class SupervisedComponent {
  readonly spec: ComponentSpec;
  readonly #log: Logger;
  #proc: HarnessProcess | undefined;
  #startedAt = 0;
  #restarts = 0;
  #ready = false;
  #stopping = false;
  #crashStreak = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #probeTimer: NodeJS.Timeout | undefined;

  constructor(spec: ComponentSpec, log: Logger) {
    this.spec = spec;
    this.#log = log.child({ component: spec.name, node: spec.node });
  }

  /** `istiod`, `ztunnel node1`: for messages and progress steps. */
  get label(): string {
    return this.spec.name === 'istiod' ? 'istiod' : `${this.spec.name} ${this.spec.node}`;
  }

  status(): ComponentStatus {
    const running = this.#proc !== undefined && this.#proc.exit === undefined;
    return {
      name: this.spec.name,
      node: this.spec.node,
      pid: running ? this.#proc?.pid : undefined,
      ready: running && this.#ready,
      restarts: this.#restarts,
      logFile: this.spec.logFile,
    };
  }

  /** Starts the process and waits until its readiness endpoint answers 200. */
  async start(timeoutMs: number): Promise<void> {
    this.#stopping = false;
    this.#spawn();
    await this.waitReady(timeoutMs);
    this.#probeTimer ??= setInterval(() => void this.#probe(), READINESS_PERIOD_MS).unref();
  }

  /** Polls readiness; fails with the log's tail if the process exits or the time runs out. */
  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'not probed yet';
    for (;;) {
      const proc = this.#proc;
      if (proc === undefined || this.#stopping) {
        throw new AmbientctlError('STEP_FAILED', `${this.label} was stopped while starting`);
      }
      if (proc.exit !== undefined) {
        throw new AmbientctlError(
          'STEP_FAILED',
          `${this.label} exited while starting (${describeExit(proc.exit)}); last lines of ${this.spec.logFile}:\n${logTail(this.spec.logFile)}`,
        );
      }
      last = await this.#probe();
      if (this.#ready) return;
      if (Date.now() > deadline) {
        throw new AmbientctlError(
          'TIMEOUT',
          `${this.label} not ready after ${timeoutMs} ms (${last}); last lines of ${this.spec.logFile}:\n${logTail(this.spec.logFile)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 150));
    }
  }

  /** Stops the process (SIGTERM, SIGKILL after `graceMs`), counts a restart, starts it again. */
  async restart(timeoutMs: number): Promise<void> {
    await this.#terminate(STOP_GRACE_MS);
    this.#restarts++;
    this.#crashStreak = 0;
    this.#stopping = false;
    this.#spawn();
    await this.waitReady(timeoutMs);
  }

  /** Stops supervising and the process. */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#probeTimer);
    this.#probeTimer = undefined;
    await this.#terminate(graceMs);
  }

  async #terminate(graceMs: number): Promise<void> {
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    const proc = this.#proc;
    // Marks the exit as expected before it happens.
    this.#proc = undefined;
    this.#ready = false;
    if (proc !== undefined) await proc.stop(graceMs);
  }

  #spawn(): void {
    const s = this.spec;
    appendFileSync(
      s.logFile,
      `--- ambientctl ${new Date().toISOString()}: starting ${this.label}${this.#restarts > 0 ? ` (restart ${this.#restarts})` : ''} ---\n`,
    );
    // The shell appends the program's output to its log file and execs it: the pid is the program's.
    const proc = s.host.spawn(
      '/bin/sh',
      [
        '-c',
        'exec "$@" >>"$0" 2>&1',
        s.logFile,
        process.execPath,
        '--conditions=@ambient/source',
        s.program,
        ...s.args,
      ],
      { env: s.env },
    );
    this.#proc = proc;
    this.#startedAt = Date.now();
    this.#ready = false;
    void proc.exited.then((exit) => this.#onExit(proc, exit));
  }

  #onExit(proc: HarnessProcess, exit: { exitCode: number | null; signal: NodeJS.Signals | null }): void {
    if (this.#proc !== proc || this.#stopping) return;
    this.#ready = false;
    this.#restarts++;
    this.#crashStreak = Date.now() - this.#startedAt >= STABLE_RUN_MS ? 1 : this.#crashStreak + 1;
    const delay = Math.min(RESTART_MAX_MS, RESTART_INITIAL_MS * 2 ** (this.#crashStreak - 1));
    this.#log.warn(
      { exit: describeExit(exit), restarts: this.#restarts, delayMs: delay, logFile: this.spec.logFile },
      `${this.label} exited; restarting`,
    );
    appendFileSync(
      this.spec.logFile,
      `--- ambientctl ${new Date().toISOString()}: ${this.label} exited (${describeExit(exit)}); restarting in ${delay} ms ---\n`,
    );
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#stopping || this.#proc !== proc) return;
      try {
        this.#spawn();
      } catch (err) {
        this.#log.error({ err }, `${this.label} could not be restarted`);
      }
    }, delay);
    this.#restartTimer.unref();
  }

  /** One readiness probe; updates `ready` and says what it saw. */
  async #probe(): Promise<string> {
    const r = this.spec.readiness;
    const proc = this.#proc;
    if (proc === undefined || proc.exit !== undefined) {
      this.#ready = false;
      return 'not running';
    }
    try {
      const answer = await httpGetInNetns(r.netnsPath, r.address, r.port, r.path, 1500);
      if (this.#proc === proc) this.#ready = answer.status === 200;
      return `GET ${r.path}: ${answer.status} ${answer.body.trim().slice(0, 300)}`;
    } catch (err) {
      if (this.#proc === proc) this.#ready = false;
      return `GET ${r.path}: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
}

function describeExit(exit: { exitCode: number | null; signal: NodeJS.Signals | null }): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.exitCode}`;
}

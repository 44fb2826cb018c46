import { mkdirSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killCgroup } from './cgroup.ts';
import { childEnv } from './env.ts';
import { type ExecResult, HarnessError } from './errors.ts';
import { ENTERED_FD, entryArgv } from './netns.ts';
import { HarnessProcess, type RunOptions } from './process.ts';

/** Options for a process started in a pod or node. */
export interface SpawnOptions {
  /** Added to (and overriding) the inherited environment. */
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Written to stdin, which is then closed; without it stdin stays open (`proc.stdin`). */
  readonly input?: string | Buffer;
}

/** Options for a command run to completion: {@link SpawnOptions} plus `timeoutMs` and `check`. */
export interface ExecOptions extends SpawnOptions, RunOptions {}

/**
 * A Node script: a file path (relative paths resolve against the cwd) or file URL, or inline
 * code, which is written to the run's temp dir as an ES module with TypeScript syntax allowed
 * (`.mts`; it can import `node:` builtins, not workspace packages). Arguments arrive in
 * `process.argv.slice(2)` either way.
 */
export type NodeScript = string | URL | { readonly code: string };

/** Options for {@link ProcessHost.spawnNode}. */
export interface NodeSpawnOptions extends SpawnOptions {
  /** Flags for `node` before the script. Default `--conditions=@ambient/source`, so project packages load from source. */
  readonly nodeArgs?: readonly string[];
}

export interface NodeExecOptions extends NodeSpawnOptions, RunOptions {}

const DEFAULT_NODE_ARGS = ['--conditions=@ambient/source'] as const;

/** Where processes of a pod or node run, and where inline scripts are written. */
export interface ProcessHostTarget {
  /** For messages: `pod default/echo`, `node node1`. */
  readonly label: string;
  readonly netnsPath: string;
  readonly cgroupPath: string;
  readonly scriptDir: string;
  /** False once the pod or node is removed: nothing more can start there. */
  readonly isOpen: () => boolean;
}

let inlineSeq = 0;

/**
 * Runs processes in one network namespace and cgroup (a pod's or a node's). Every process it
 * starts is recorded; {@link ProcessHost.stopProcesses} ends them and anything they forked.
 */
export class ProcessHost {
  /** The netns path (`/var/run/netns/<name>`), as CNI_NETNS and ztunnel see it. */
  readonly netnsPath: string;
  /** The cgroup v2 directory every process started here joins (a target for eBPF cgroup hooks). */
  readonly cgroupPath: string;
  readonly #label: string;
  readonly #scriptDir: string;
  readonly #procs = new Set<HarnessProcess>();
  readonly #isOpen: () => boolean;

  constructor(target: ProcessHostTarget) {
    this.netnsPath = target.netnsPath;
    this.cgroupPath = target.cgroupPath;
    this.#label = target.label;
    this.#scriptDir = target.scriptDir;
    this.#isOpen = target.isOpen;
  }

  /** Processes started here that have not exited. */
  get processes(): readonly HarnessProcess[] {
    return [...this.#procs].filter((p) => p.exit === undefined);
  }

  /**
   * Starts `cmd args` in this netns and cgroup and returns at once: `await proc.started` to know
   * it has entered both, `proc.waitForLine(…)` for the command's own readiness. The process is
   * stopped when its pod, node or harness goes away.
   */
  spawn(cmd: string, args: readonly string[] = [], options: SpawnOptions = {}): HarnessProcess {
    if (!this.#isOpen()) {
      throw new HarnessError('HARNESS_DESTROYED', `${this.#label} is removed; cannot start ${cmd}`);
    }
    const proc = new HarnessProcess(
      entryArgv({ netnsPath: this.netnsPath, cgroupPath: this.cgroupPath }, cmd, args),
      { env: childEnv(options.env), cwd: options.cwd, input: options.input, enteredFd: ENTERED_FD },
      `${this.#label}: ${[cmd, ...args].join(' ')}`,
    );
    this.#procs.add(proc);
    void proc.exited.then(() => this.#procs.delete(proc));
    return proc;
  }

  /** Runs `cmd args` here to completion (stdin closed unless `input` is given). */
  exec(cmd: string, args: readonly string[] = [], options: ExecOptions = {}): Promise<ExecResult> {
    return this.spawn(cmd, args, { ...options, input: options.input ?? '' }).result(options);
  }

  /** Starts a Node script here with this process's Node (`process.execPath`, the pinned Node 24). */
  spawnNode(
    script: NodeScript,
    args: readonly string[] = [],
    options: NodeSpawnOptions = {},
  ): HarnessProcess {
    const nodeArgs = options.nodeArgs ?? DEFAULT_NODE_ARGS;
    return this.spawn(process.execPath, [...nodeArgs, this.#scriptPath(script), ...args], options);
  }

  /** Runs a Node script here to completion. */
  execNode(
    script: NodeScript,
    args: readonly string[] = [],
    options: NodeExecOptions = {},
  ): Promise<ExecResult> {
    return this.spawnNode(script, args, { ...options, input: options.input ?? '' }).result(options);
  }

  /**
   * Stops every recorded process: SIGTERM, then after `graceMs` SIGKILL to everything left in the
   * cgroup (including children they forked, which hold no record here).
   */
  async stopAll(graceMs = 1000): Promise<void> {
    const procs = [...this.#procs];
    for (const p of procs) p.kill('SIGTERM');
    const allExited = Promise.all(procs.map((p) => p.exited));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([allExited, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    killCgroup(this.cgroupPath);
    await allExited;
  }

  #scriptPath(script: NodeScript): string {
    if (script instanceof URL) return fileURLToPath(script);
    if (typeof script === 'string') return isAbsolute(script) ? script : resolve(script);
    mkdirSync(this.#scriptDir, { recursive: true });
    const file = join(this.#scriptDir, `inline-${process.pid}-${inlineSeq++}.mts`);
    writeFileSync(file, script.code);
    return file;
  }
}

import { type ChildProcess, spawn } from 'node:child_process';
import { CommandError, type ExecResult, HarnessError } from './errors.ts';

/** Output kept per stream; beyond it the oldest lines are dropped (tests read recent output). */
const MAX_KEPT_BYTES = 4 * 1024 * 1024;

/** How long after exit output may still arrive before the pipes are abandoned (see `exited`). */
const EXIT_DRAIN_MS = 100;

/** How a process ended. */
export interface ProcessExit {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Options for starting a process. */
export interface StartOptions {
  /** The child's whole environment (build it with `childEnv`). */
  readonly env: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Written to stdin, which is then closed; without it stdin is an open pipe (`proc.stdin`). */
  readonly input?: string | Buffer;
  /**
   * A descriptor on which the command (an entry wrapper) writes once it has entered its netns
   * and cgroup; {@link HarnessProcess.started} waits for it. Without it `started` resolves at spawn.
   */
  readonly enteredFd?: number;
}

/** Options for running a command to completion. */
export interface RunOptions {
  /** Killed (SIGKILL) and rejected with COMMAND_TIMEOUT after this long. Default 30 s. */
  readonly timeoutMs?: number;
  /** When false, a non-zero exit resolves instead of rejecting with COMMAND_FAILED. Default true. */
  readonly check?: boolean;
}

type LineMatcher = string | RegExp | ((line: string) => boolean);

/** Captured output of one stream, split into lines as it arrives. */
class LineBuffer {
  readonly lines: string[] = [];
  #partial = '';
  #bytes = 0;
  readonly #listeners = new Set<(line: string) => void>();

  push(chunk: string): void {
    const parts = (this.#partial + chunk).split('\n');
    this.#partial = parts.pop() ?? '';
    for (const line of parts) this.#add(line);
  }

  /** Flushes a last line that had no newline. */
  end(): void {
    if (this.#partial !== '') this.#add(this.#partial);
    this.#partial = '';
  }

  get text(): string {
    return this.lines.map((l) => `${l}\n`).join('') + this.#partial;
  }

  onLine(fn: (line: string) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #add(line: string): void {
    this.lines.push(line);
    this.#bytes += line.length + 1;
    while (this.#bytes > MAX_KEPT_BYTES && this.lines.length > 1)
      this.#bytes -= (this.lines.shift() ?? '').length + 1;
    for (const fn of this.#listeners) fn(line);
  }
}

/**
 * A process the harness started (in a pod, in a node, or a plain helper command). Output is
 * captured line by line so a test can wait for a readiness line; the exit is a promise.
 */
export class HarnessProcess {
  /** The command line, for messages. */
  readonly command: string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<ProcessExit>;
  /**
   * Resolves once the process runs in its netns and cgroup (just before it execs the command);
   * rejects with PROCESS_EXITED if it ended before getting there.
   */
  readonly started: Promise<void>;
  readonly #child: ChildProcess;
  readonly #stdout = new LineBuffer();
  readonly #stderr = new LineBuffer();
  readonly #startedAt = Date.now();
  #exit: ProcessExit | undefined;
  #spawnError: Error | undefined;

  constructor(argv: readonly [string, ...string[]], options: StartOptions, label = argv.join(' ')) {
    const [file, ...args] = argv;
    this.command = label;
    const fd = options.enteredFd;
    const stdio: ('pipe' | 'ignore')[] = ['pipe', 'pipe', 'pipe'];
    if (fd !== undefined) {
      while (stdio.length < fd) stdio.push('ignore');
      stdio[fd] = 'pipe';
    }
    this.#child = spawn(file, args, { env: options.env, cwd: options.cwd, stdio });
    this.#child.stdout?.setEncoding('utf8').on('data', (c: string) => this.#stdout.push(c));
    this.#child.stderr?.setEncoding('utf8').on('data', (c: string) => this.#stderr.push(c));
    // A child that exits before reading its stdin makes the write fail with EPIPE; its exit
    // status is what matters then.
    this.#child.stdin?.on('error', () => {});
    if (options.input !== undefined) this.#child.stdin?.end(options.input);
    this.exited = new Promise<ProcessExit>((resolve) => {
      this.#child.once('error', (err) => {
        this.#spawnError = err;
        this.#exit = { exitCode: null, signal: null };
        resolve(this.#exit);
      });
      const finish = (exit: ProcessExit): void => {
        if (this.#exit !== undefined) return;
        this.#stdout.end();
        this.#stderr.end();
        this.#exit = exit;
        resolve(exit);
      };
      // 'close' comes once the output pipes are drained, so every line has been read. A child it
      // forked can hold the pipes open long after it exited, though: then 'exit' plus a short
      // drain period ends it, and the pipes are let go.
      this.#child.once('close', (exitCode, signal) => finish({ exitCode, signal }));
      this.#child.once('exit', (exitCode, signal) => {
        setTimeout(() => {
          if (this.#exit !== undefined) return;
          finish({ exitCode, signal });
          for (const s of this.#child.stdio) s?.destroy();
        }, EXIT_DRAIN_MS).unref();
      });
    });
    const signal = fd === undefined ? undefined : (this.#child.stdio[fd] as NodeJS.ReadableStream | null);
    this.started =
      signal === undefined || signal === null
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            signal.once('data', () => resolve());
            void this.exited.then((exit) =>
              reject(
                new HarnessError(
                  'PROCESS_EXITED',
                  `${this.command}: exited (${describeExit(exit)}) before entering its namespace; stderr: ${tail(this.stderr)}`,
                ),
              ),
            );
          });
    // Nobody may await `started` (a fire-and-forget spawn); that is not an unhandled rejection.
    this.started.catch(() => {});
  }

  /** The process id; for a process in a pod or node this is the command itself (the entry wrappers exec). */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Writable stdin when no `input` was given. */
  get stdin(): NodeJS.WritableStream | null {
    return this.#child.stdin;
  }

  get stdout(): string {
    return this.#stdout.text;
  }

  get stderr(): string {
    return this.#stderr.text;
  }

  /** Undefined while running. */
  get exit(): ProcessExit | undefined {
    return this.#exit;
  }

  /** Sends a signal if the process is still running. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.#exit === undefined) this.#child.kill(signal);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  async stop(graceMs = 1000): Promise<ProcessExit> {
    if (this.#exit !== undefined) return this.#exit;
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Resolves with the first stdout line (or stderr with `stream: 'stderr'`) that matches: a
   * substring, a regular expression or a predicate. Lines printed before the call count too.
   * Rejects with OUTPUT_TIMEOUT or PROCESS_EXITED, quoting the process's stderr.
   */
  waitForLine(
    match: LineMatcher,
    options: { timeoutMs?: number; stream?: 'stdout' | 'stderr' } = {},
  ): Promise<string> {
    const buf = options.stream === 'stderr' ? this.#stderr : this.#stdout;
    const test =
      typeof match === 'string'
        ? (l: string) => l.includes(match)
        : match instanceof RegExp
          ? (l: string) => match.test(l)
          : match;
    const found = buf.lines.find(test);
    if (found !== undefined) return Promise.resolve(found);
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise<string>((resolve, reject) => {
      const done = (): void => {
        off();
        clearTimeout(timer);
      };
      const off = buf.onLine((line) => {
        if (!test(line)) return;
        done();
        resolve(line);
      });
      const timer = setTimeout(() => {
        done();
        reject(
          new HarnessError(
            'OUTPUT_TIMEOUT',
            `${this.command}: no output line matching ${String(match)} within ${timeoutMs} ms; stderr: ${tail(this.stderr)}`,
          ),
        );
      }, timeoutMs);
      void this.exited.then((exit) => {
        // Output is drained before `exited` resolves, so a match printed just before exit was seen.
        if (!buf.lines.some(test)) {
          done();
          reject(
            new HarnessError(
              'PROCESS_EXITED',
              `${this.command}: exited (${describeExit(exit)}) before printing a line matching ${String(match)}; stderr: ${tail(this.stderr)}`,
            ),
          );
        }
      });
    });
  }

  /** Waits for a stdout line that is a JSON object satisfying `predicate`, and returns it parsed. */
  async waitForJson<T = Record<string, unknown>>(
    predicate: (value: Record<string, unknown>) => boolean,
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    const line = await this.waitForLine((l) => {
      const v = parseJsonObject(l);
      return v !== undefined && predicate(v);
    }, options);
    return JSON.parse(line) as T;
  }

  /**
   * Waits for exit and returns the {@link ExecResult}; rejects with COMMAND_TIMEOUT (after
   * killing the process) or, unless `check` is false, with COMMAND_FAILED on a non-zero exit.
   */
  async result(options: RunOptions = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.kill('SIGKILL');
    }, timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    const result: ExecResult = {
      command: this.command,
      exitCode: exit.exitCode,
      signal: exit.signal,
      stdout: this.stdout,
      stderr: this.stderr,
      durationMs: Date.now() - this.#startedAt,
    };
    if (this.#spawnError !== undefined) {
      throw new CommandError(
        'COMMAND_SPAWN_FAILED',
        `${this.command}: could not start: ${this.#spawnError.message}`,
        result,
        { cause: this.#spawnError },
      );
    }
    if (timedOut) {
      throw new CommandError(
        'COMMAND_TIMEOUT',
        `${this.command}: still running after ${timeoutMs} ms, killed; stderr: ${tail(result.stderr)}`,
        result,
      );
    }
    if (options.check !== false && exit.exitCode !== 0) {
      throw new CommandError(
        'COMMAND_FAILED',
        `${this.command}: ${describeExit(exit)}; stderr: ${tail(result.stderr)}`,
        result,
      );
    }
    return result;
  }
}

/** Starts `argv` and runs it to completion (see {@link HarnessProcess.result}). */
export async function runCommand(
  argv: readonly [string, ...string[]],
  options: StartOptions & RunOptions,
  label?: string,
): Promise<ExecResult> {
  const proc = new HarnessProcess(argv, { ...options, input: options.input ?? '' }, label);
  return proc.result(options);
}

function describeExit(exit: ProcessExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.exitCode}`;
}

function tail(text: string): string {
  const t = text.trim();
  if (t === '') return '(empty)';
  return t.length > 2000 ? `…${t.slice(-2000)}` : t;
}

function parseJsonObject(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

import { spawn } from 'node:child_process';
import { RedirectError } from './errors.ts';

/** Output of a finished command. */
export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
}

export interface CommandOptions {
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  /** Killed and rejected with `COMMAND_TIMEOUT` after this long. Default 10 s. */
  readonly timeoutMs?: number;
  /** Extra descriptors for the child: `fds[i]` becomes the child's fd `3 + i`. */
  readonly fds?: readonly number[];
}

/**
 * Runs a command to completion. A non-zero exit rejects with RedirectError `COMMAND_FAILED`
 * quoting stderr; the error keeps `stderr` on `cause` for callers that tolerate some failures.
 */
export function runCommand(argv: readonly string[], options: CommandOptions = {}): Promise<CommandResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) return Promise.reject(new RedirectError('COMMAND_FAILED', 'empty command line'));
  const label = argv.join(' ');
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe', ...(options.fds ?? [])],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new RedirectError('COMMAND_FAILED', `${label}: could not start: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (timedOut) {
        reject(new RedirectError('COMMAND_TIMEOUT', `${label}: still running after ${timeoutMs} ms, killed`));
      } else if (code !== 0) {
        const why = signal !== null ? `killed by ${signal}` : `exit code ${code}`;
        const said = stderr.trim() || stdout.trim().slice(0, 500) || '(no output)';
        reject(
          new RedirectError('COMMAND_FAILED', `${label}: ${why}: ${said}`, {
            cause: new CommandFailure(stdout, stderr, code),
          }),
        );
      } else {
        resolve({ stdout, stderr });
      }
    });
    child.stdin?.on('error', () => {
      // The command may exit before reading its input; its exit status tells what happened.
    });
    child.stdin?.end(options.input ?? '');
  });
}

/** The `cause` of a `COMMAND_FAILED` RedirectError: what the command printed and its exit code. */
export class CommandFailure extends Error {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number | null;

  constructor(stdout: string, stderr: string, exitCode: number | null) {
    super(stderr.trim() || stdout.trim());
    this.stdout = stdout;
    this.stderr = stderr;
    this.exitCode = exitCode;
  }
}

/** What a failed command printed (stderr, then stdout), or '' when `err` is something else. */
export function failureStderr(err: unknown): string {
  return err instanceof RedirectError && err.cause instanceof CommandFailure
    ? `${err.cause.stderr}\n${err.cause.stdout}`
    : '';
}

/**
 * argv that runs `argv` in the network namespace at `netnsPath`. `nsenter --net` changes only the
 * network namespace (`ip netns exec` also remounts /sys, which would hide bpffs and cgroupfs).
 */
export function inNetns(netnsPath: string, argv: readonly string[]): string[] {
  return ['nsenter', `--net=${netnsPath}`, '--', ...argv];
}

/**
 * Test support for the suites that run `ambientctl` as a user does (bin/ambientctl in a child
 * process) against a real local mesh: running it, and proving a mesh left nothing behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { unifiedCgroupRoot } from '@ambient/test/harness';

export const LAUNCHER = fileURLToPath(new URL('../bin/ambientctl', import.meta.url));
export const isRoot = process.getuid?.() === 0;
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A running `ambientctl`: its output so far, and how it ended. */
export interface CliProcess {
  readonly child: ChildProcess;
  readonly done: Promise<CliResult>;
  output(): string;
  /** Resolves once the output matches (rejects when the process ends first). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
}

export function startCli(
  args: readonly string[],
  env: Readonly<Record<string, string>>,
  timeoutMs = 300_000,
): CliProcess {
  const child = spawn(LAUNCHER, [...args], {
    cwd: '/',
    // A user's sudo environment: the system PATH and what the test sets, nothing inherited.
    env: { PATH: SYSTEM_PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c.toString('utf8');
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return {
    child,
    done,
    output: () => stdout + stderr,
    waitFor: async (re, waitMs = 120_000) => {
      const deadline = Date.now() + waitMs;
      let ended = false;
      void done.then(() => {
        ended = true;
      });
      while (!re.test(stdout + stderr)) {
        if (ended)
          throw new Error(`ambientctl ${args.join(' ')} ended before printing ${re}:\n${stdout}${stderr}`);
        if (Date.now() > deadline) throw new Error(`no ${re} within ${waitMs} ms:\n${stdout}${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** Runs `ambientctl` to its end. */
export function runCli(
  args: readonly string[],
  env: Readonly<Record<string, string>>,
  timeoutMs?: number,
): Promise<CliResult> {
  return startCli(args, env, timeoutMs).done;
}

/** The harness run key of a mesh, read from the NETNS column `up` and `status` print. */
export function runKeyOf(output: string): string {
  const m = /\b(ambh-\d+-[a-z0-9]+-\d+)-(?:control-plane|node\d+)\b/.exec(output);
  if (!m?.[1]) throw new Error(`no network namespace of the mesh in the output:\n${output}`);
  return m[1];
}

/** Pids in the PID columns of the summary (components and pods). */
export function pidsOf(output: string): number[] {
  const pids: number[] = [];
  for (const line of output.split('\n')) {
    const m = /^(?:istiod|ztunnel|istio-cni)\s+\S+\s+(\d+)\s/.exec(line) ?? /\s(\d+)$/.exec(line.trimEnd());
    if (m?.[1] && /\b(Running|true|false)\b/.test(line)) pids.push(Number(m[1]));
  }
  return pids;
}

/** Whether `pid` is a live process (not a zombie waiting to be reaped) in one of the run's cgroups. */
function processOf(pid: number, runKey: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state …": the state follows the last parenthesis.
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') return false;
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8').includes(runKey);
  } catch {
    return false;
  }
}

/**
 * What a mesh left behind, by its run key: network namespaces (and with them their links and
 * nftables tables), BPF pins, cgroups, processes still in its cgroups, and the state directory.
 * Empty when nothing is left.
 */
export function leftoversNow(runKey: string, stateDir: string, pids: readonly number[] = []): string[] {
  const left: string[] = [];
  const list = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir) : []);
  for (const name of list('/var/run/netns').filter((n) => n.startsWith(runKey))) left.push(`netns ${name}`);
  for (const name of list('/sys/fs/bpf').filter((n) => n.startsWith(runKey))) left.push(`bpf pin ${name}`);
  if (existsSync(join(unifiedCgroupRoot(), runKey))) left.push(`cgroup ${join(unifiedCgroupRoot(), runKey)}`);
  for (const pid of pids) if (processOf(pid, runKey)) left.push(`process ${pid}`);
  if (existsSync(stateDir)) left.push(`state dir ${stateDir}`);
  return left;
}

/**
 * {@link leftoversNow}, allowing `settleMs` for processes sent SIGKILL to be gone (the kernel
 * finishes them asynchronously); empty when nothing is left.
 */
export async function leftovers(
  runKey: string,
  stateDir: string,
  pids: readonly number[] = [],
  settleMs = 3000,
): Promise<string[]> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const left = leftoversNow(runKey, stateDir, pids);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

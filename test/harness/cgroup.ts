import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HarnessError } from './errors.ts';

let cachedRoot: string | undefined;

/**
 * Where the cgroup v2 (unified) hierarchy is mounted: /sys/fs/cgroup on a pure v2 machine,
 * /sys/fs/cgroup/unified on a hybrid one. Read from /proc/self/mountinfo.
 */
export function unifiedCgroupRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  const mounts: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> <source> <superopts>"
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined || !right.startsWith('cgroup2 ')) continue;
    const mountPoint = left.split(' ')[4];
    if (mountPoint !== undefined) mounts.push(mountPoint);
  }
  const root =
    mounts.find((m) => m === '/sys/fs/cgroup') ??
    mounts.find((m) => m === '/sys/fs/cgroup/unified') ??
    mounts[0];
  if (root === undefined) {
    throw new HarnessError(
      'CGROUP_UNAVAILABLE',
      'no cgroup2 filesystem in /proc/self/mountinfo; pods need cgroup v2',
    );
  }
  cachedRoot = root;
  return root;
}

/** Pids in this cgroup and every descendant. */
export function cgroupPids(dir: string): number[] {
  const pids: number[] = [];
  const visit = (d: string): void => {
    let procs: string;
    try {
      procs = readFileSync(join(d, 'cgroup.procs'), 'utf8');
    } catch {
      return;
    }
    for (const l of procs.split('\n')) if (l !== '') pids.push(Number(l));
    for (const child of subdirs(d)) visit(join(d, child));
  };
  visit(dir);
  return pids;
}

/** SIGKILLs every process in the cgroup subtree (cgroup.kill where the kernel has it, 5.14+). */
export function killCgroup(dir: string): void {
  const killFile = join(dir, 'cgroup.kill');
  if (existsSync(killFile)) {
    try {
      writeFileSync(killFile, '1');
      return;
    } catch {
      // Fall through to killing one by one.
    }
  }
  for (const pid of cgroupPids(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

function populated(dir: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return [];
  }
}

/** Removes the directory and its descendants, deepest first; returns what could not be removed. */
function rmdirTree(dir: string): string[] {
  const left: string[] = [];
  for (const child of subdirs(dir)) left.push(...rmdirTree(join(dir, child)));
  try {
    rmdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') left.push(dir);
  }
  return left;
}

/**
 * Kills every process in the subtree, waits (up to `timeoutMs`) until the kernel reports it
 * unpopulated, and removes the directories. Returns the directories that could not be removed.
 */
export async function removeCgroupTree(dir: string, timeoutMs = 3000): Promise<string[]> {
  if (!existsSync(dir)) return [];
  killCgroup(dir);
  const deadline = Date.now() + timeoutMs;
  while (populated(dir) && Date.now() < deadline) await sleep(5);
  return rmdirTree(dir);
}

/** {@link removeCgroupTree} for exit hooks and sweeps, where nothing asynchronous can run. */
export function removeCgroupTreeSync(dir: string, timeoutMs = 3000): string[] {
  if (!existsSync(dir)) return [];
  killCgroup(dir);
  const deadline = Date.now() + timeoutMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (populated(dir) && Date.now() < deadline) Atomics.wait(pause, 0, 0, 5);
  return rmdirTree(dir);
}

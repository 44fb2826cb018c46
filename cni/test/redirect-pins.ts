// Pin roots of the redirection tests and bench: /sys/fs/bpf/<prefix><pid>. A run removes its own
// at the end; a killed run's root is removed by the next run once its pid is gone.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const BPFFS = '/sys/fs/bpf';
export const TEST_PIN_PREFIX = 'ambcni-test-';
export const BENCH_PIN_PREFIX = 'ambcni-bench-';

/** This process's pin root for `prefix`. */
export function pinRoot(prefix: string): string {
  return join(BPFFS, `${prefix}${process.pid}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the pin roots (unpinning, hence detaching, everything under them) of dead runs. */
export function sweepPinRoots(): string[] {
  const removed: string[] = [];
  if (!existsSync(BPFFS)) return removed;
  for (const name of readdirSync(BPFFS)) {
    const prefix = [TEST_PIN_PREFIX, BENCH_PIN_PREFIX].find((p) => name.startsWith(p));
    if (prefix === undefined) continue;
    const pid = Number(name.slice(prefix.length));
    if (!Number.isInteger(pid) || pid <= 0 || alive(pid)) continue;
    rmSync(join(BPFFS, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

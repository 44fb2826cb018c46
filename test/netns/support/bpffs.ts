import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { isRunOwnerAlive, parseRunKey } from '../../harness/index.ts';

/** Where bpffs is mounted for pinning. */
export const BPFFS_ROOT = '/sys/fs/bpf';
/** statfs f_type of bpffs (BPF_FS_MAGIC). */
const BPFFS_MAGIC = 0xcafe4a11;

/** Mounts bpffs at {@link BPFFS_ROOT} unless it is already there. */
export function ensureBpffs(): void {
  mkdirSync(BPFFS_ROOT, { recursive: true });
  if (statfsSync(BPFFS_ROOT).type !== BPFFS_MAGIC) {
    execFileSync('mount', ['-t', 'bpf', 'bpf', BPFFS_ROOT], { stdio: ['ignore', 'ignore', 'pipe'] });
  }
}

/**
 * Creates this run's pin directory, `/sys/fs/bpf/<harness run key>-bpf`. Named after the run key
 * so {@link sweepPinLeftovers} can tell whether the run that pinned there is still alive.
 */
export function createPinDir(runKey: string): string {
  const dir = join(BPFFS_ROOT, `${runKey}-bpf`);
  mkdirSync(dir);
  return dir;
}

/**
 * Removes pin directories of harness runs whose owning process is gone (a test killed between
 * pin and unpin). Removing a pinned link's file drops the pin's reference, which detaches it.
 * Returns the directories removed.
 */
export function sweepPinLeftovers(): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(BPFFS_ROOT)) {
    const run = parseRunKey(name);
    if (run === undefined || isRunOwnerAlive(run)) continue;
    rmSync(join(BPFFS_ROOT, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

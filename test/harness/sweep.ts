import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { unifiedCgroupRoot } from './cgroup.ts';
import { listNetns } from './netns.ts';
import { isRunOwnerAlive, parseRunKey, type RunId } from './run-id.ts';
import { BPFFS_DIR, type TeardownReport, teardownRunSync } from './teardown.ts';

/** What {@link sweepLeftovers} found. */
export interface SweepReport {
  /** Runs whose owner is gone, and what was removed for each. */
  readonly removed: readonly TeardownReport[];
  /** Keys of runs left alone because their owning process is still running. */
  readonly live: readonly string[];
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Removes what earlier harness runs left behind when their process died without cleaning up
 * (SIGKILL, a crash, a hung test killed by its runner). It finds harness names (prefix
 * `ambh-<pid>-<start>-<seq>`) among named netns, cgroup v2 directories, temp directories and bpffs
 * pin directories, and tears down each run whose owning process (pid plus start time) no longer
 * exists, so a concurrent run in another process is never touched. `Harness.create` calls it first.
 */
export function sweepLeftovers(): SweepReport {
  const runs = new Map<string, RunId>();
  const names = [
    ...listNetns(),
    ...readdirOrEmpty(unifiedCgroupRoot()),
    ...readdirOrEmpty(tmpdir()),
    ...readdirOrEmpty(BPFFS_DIR),
  ];
  for (const name of names) {
    const run = parseRunKey(name);
    if (run !== undefined) runs.set(run.key, run);
  }
  const removed: TeardownReport[] = [];
  const live: string[] = [];
  for (const run of runs.values()) {
    if (isRunOwnerAlive(run)) live.push(run.key);
    else removed.push(teardownRunSync(run.key));
  }
  return { removed, live };
}

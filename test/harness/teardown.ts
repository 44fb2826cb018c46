import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { killCgroup, removeCgroupTreeSync, unifiedCgroupRoot } from './cgroup.ts';
import { listNetns, pidsInNetns } from './netns.ts';
import { runTempDir } from './run-id.ts';

/**
 * Where eBPF objects are pinned. A run that pins anything (an istio-cni agent in eBPF mode) puts it
 * under `<this>/<run key>`, so the teardown can unpin it (which detaches pinned links).
 */
export const BPFFS_DIR = '/sys/fs/bpf';

/** What a teardown removed, and anything it could not. */
export interface TeardownReport {
  readonly key: string;
  readonly netns: readonly string[];
  readonly killedPids: readonly number[];
  /** The run's cgroup directory, when one existed. */
  readonly cgroup: string | undefined;
  /** The run's temp directory, when one existed. */
  readonly tempDir: string | undefined;
  /** The run's bpffs pin directories that existed (`/sys/fs/bpf/<key>…`). */
  readonly bpfPins: readonly string[];
  /** Names that still exist after the teardown (a netns still mounted, a busy cgroup). */
  readonly leftovers: readonly string[];
}

/**
 * Removes everything named after a run key, without asking the run: kills every process in the
 * run's namespaces and cgroups, deletes its namespaces (which deletes every link inside them), its
 * cgroup tree and its temp directory (host-local IPAM state lives there). Synchronous, so it can
 * run from a process 'exit' hook; it is also the sweep for runs whose owner has crashed.
 */
export function teardownRunSync(key: string): TeardownReport {
  const netns = listNetns().filter((n) => n === key || n.startsWith(`${key}-`));
  const cgroupDir = join(unifiedCgroupRoot(), key);
  const hasCgroup = existsSync(cgroupDir);
  if (hasCgroup) killCgroup(cgroupDir);
  // Processes entered into a namespace without joining a cgroup (CNI plugins mid-flight, a
  // helper started with nsenter by hand) would keep the namespace alive after its name is gone.
  const killedPids = pidsInNetns(netns);
  for (const pid of killedPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  if (netns.length > 0) {
    // One `ip` for all of them; -force keeps going past a namespace another sweeper just removed.
    spawnSync('ip', ['-force', '-batch', '-'], {
      input: netns.map((n) => `netns delete ${n}\n`).join(''),
      stdio: ['pipe', 'ignore', 'ignore'],
    });
  }
  const leftovers = listNetns().filter((n) => netns.includes(n));
  if (hasCgroup) leftovers.push(...removeCgroupTreeSync(cgroupDir));
  const bpfPins = readdirOrEmpty(BPFFS_DIR)
    .filter((n) => n === key || n.startsWith(`${key}-`))
    .map((n) => join(BPFFS_DIR, n));
  for (const dir of bpfPins) {
    // Unlinking a pinned link detaches its program; maps go with their last reference.
    rmSync(dir, { recursive: true, force: true });
    if (existsSync(dir)) leftovers.push(dir);
  }
  const tempDir = runTempDir(key);
  const hasTemp = existsSync(tempDir);
  if (hasTemp) rmSync(tempDir, { recursive: true, force: true });
  return {
    key,
    netns,
    killedPids,
    cgroup: hasCgroup ? cgroupDir : undefined,
    tempDir: hasTemp ? tempDir : undefined,
    bpfPins,
    leftovers,
  };
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

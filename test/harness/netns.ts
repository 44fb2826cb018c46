import { readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Where `ip netns add` bind-mounts named network namespaces. */
export const NETNS_DIR = '/var/run/netns';

/** The path a runtime passes as CNI_NETNS for a named netns. */
export function netnsPath(name: string): string {
  return join(NETNS_DIR, name);
}

/** Names of all named network namespaces (the entries `ip netns list` shows). */
export function listNetns(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

/** Where a command runs: a network namespace and, optionally, a cgroup v2 directory to join. */
export interface EntryTarget {
  readonly netnsPath: string;
  /** A cgroup v2 directory; the process joins it before exec, so even its first connect() is covered. */
  readonly cgroupPath?: string;
}

/** The extra descriptor on which an entry wrapper reports that the process has entered its target. */
export const ENTERED_FD = 3;

/**
 * The argv that runs `cmd args` inside `target`. `nsenter --net` switches only the network
 * namespace (unlike `ip netns exec`, which also remounts /sys and so hides /sys/fs/cgroup and
 * /sys/fs/bpf from the command). With a cgroup, a shell inside the netns writes its own pid to
 * `cgroup.procs`, writes one byte to fd {@link ENTERED_FD} (the caller's "entered" signal),
 * closes it and execs the command: the pid the caller sees is the command's, and the command's
 * first instruction already runs in the netns and the cgroup.
 */
export function entryArgv(target: EntryTarget, cmd: string, args: readonly string[]): [string, ...string[]] {
  const enter: [string, ...string[]] = ['nsenter', `--net=${target.netnsPath}`, '--'];
  if (target.cgroupPath === undefined) return [...enter, cmd, ...args];
  return [
    ...enter,
    '/bin/sh',
    '-c',
    `echo $$ > "$1" && shift && printf x >&${ENTERED_FD} && exec ${ENTERED_FD}>&- "$@"`,
    'ambh-enter',
    join(target.cgroupPath, 'cgroup.procs'),
    cmd,
    ...args,
  ];
}

/** The netns inode of a process, or undefined when it is gone. */
function processNetnsInode(pid: number): number | undefined {
  try {
    // e.g. "net:[4026532281]"
    const link = readlinkSync(`/proc/${pid}/ns/net`);
    const m = /\[(\d+)\]/.exec(link);
    return m?.[1] === undefined ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * Pids of processes whose network namespace is one of these named namespaces (what
 * `ip netns pids` reports, for several namespaces in one /proc scan). Never includes this process.
 */
export function pidsInNetns(names: readonly string[]): number[] {
  const inodes = new Set<number>();
  for (const name of names) {
    try {
      inodes.add(statSync(netnsPath(name)).ino);
    } catch {
      // Already deleted.
    }
  }
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const ino = processNetnsInode(pid);
    if (ino !== undefined && inodes.has(ino)) pids.push(pid);
  }
  return pids;
}

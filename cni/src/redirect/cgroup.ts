/**
 * Finding cgroup v2 directories for the eBPF mode: the pod's (its cgroup/connect, getpeername and
 * sockops programs attach there) and ztunnel's (the getsockopt program that answers
 * SO_ORIGINAL_DST attaches there, because a socket's cgroup is its creator's and ztunnel creates
 * the in-pod listeners).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RedirectError } from './errors.ts';

/** The cgroup2 mount point from /proc/self/mountinfo (`/sys/fs/cgroup` or, on hybrid hosts, `/sys/fs/cgroup/unified`). */
export function unifiedCgroupMount(mountinfo = readFileSync('/proc/self/mountinfo', 'utf8')): string {
  for (const line of mountinfo.split('\n')) {
    // "36 25 0:30 / /sys/fs/cgroup/unified rw,... - cgroup2 cgroup2 rw"
    const [left, right] = line.split(' - ');
    if (right?.startsWith('cgroup2 ')) {
      const mountPoint = left?.split(' ')[4];
      if (mountPoint) return mountPoint;
    }
  }
  throw new RedirectError('CGROUP_NOT_FOUND', 'no cgroup2 file system is mounted');
}

/** The cgroup v2 directory of a process (`0::/path` in /proc/<pid>/cgroup), e.g. ztunnel's. */
export function cgroupOfPid(pid: number, mount = unifiedCgroupMount()): string {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch (err) {
    throw new RedirectError('CGROUP_NOT_FOUND', `cannot read /proc/${pid}/cgroup`, { cause: err });
  }
  const line = text.split('\n').find((l) => l.startsWith('0::'));
  if (line === undefined)
    throw new RedirectError('CGROUP_NOT_FOUND', `process ${pid} has no cgroup v2 entry`);
  return join(mount, line.slice(3));
}

/**
 * The cgroup directory of a Kubernetes pod, found by UID under `root` (the cgroup2 mount): the
 * kubelet names it `pod<uid>` with the cgroupfs driver (`kubepods/burstable/pod<uid>`) and
 * `kubepods-<qos>-pod<uid with _ for ->.slice` with the systemd driver. Searches at most `maxDepth`
 * levels, breadth first.
 */
export function findPodCgroup(podUid: string, root = unifiedCgroupMount(), maxDepth = 5): string {
  const names = [`pod${podUid}`, `pod${podUid.replaceAll('-', '_')}`];
  const matches = (entry: string): boolean =>
    names.some((n) => entry === n || entry.endsWith(`-${n}.slice`) || entry === `${n}.slice`);
  let level = [root];
  for (let depth = 0; depth < maxDepth && level.length > 0; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      let entries: string[];
      try {
        entries = readdirSync(dir, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => e.name);
      } catch {
        continue;
      }
      for (const e of entries) {
        if (matches(e)) return join(dir, e);
        next.push(join(dir, e));
      }
    }
    level = next;
  }
  throw new RedirectError('CGROUP_NOT_FOUND', `no cgroup for pod ${podUid} under ${root}`);
}

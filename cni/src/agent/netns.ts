/**
 * Finding and opening a pod's network namespace. The plugin path knows it (`CNI_NETNS`); the
 * watch path uses the path the plugin reported earlier (kept in the pod cache across restarts)
 * and otherwise scans /proc for a process of the pod, as upstream's `podnetns` lookup does:
 * a process whose cgroup names `pod<uid>` (kubelet's cgroupfs and systemd drivers).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { errorMessage } from '@ambient/common/errors';
import { closeFd, openNetns } from '@ambient/native';
import { AgentError } from './errors.ts';

/** Opens `path` as a netns fd; `NETNS_NOT_FOUND` (retryable: the sandbox may be coming up). */
export function openPodNetns(uid: string, path: string): number {
  try {
    return openNetns(path);
  } catch (err) {
    throw new AgentError(
      'NETNS_NOT_FOUND',
      `netns ${path} of pod ${uid} cannot be opened: ${errorMessage(err)}`,
      {
        cause: err,
        retryable: true,
      },
    );
  }
}

/** Runs `fn` with the pod's netns open, closing it after. */
export async function withPodNetns<T>(uid: string, path: string, fn: (fd: number) => Promise<T>): Promise<T> {
  const fd = openPodNetns(uid, path);
  try {
    return await fn(fd);
  } finally {
    closeFd(fd);
  }
}

/**
 * `/proc/<pid>/ns/net` of a process whose cgroup path contains `pod<uid>` (with `-` or `_`), or
 * undefined. Reads `procRoot` (`/host/proc` in a DaemonSet).
 */
export function findPodNetnsInProc(uid: string, procRoot = '/proc'): string | undefined {
  const needles = [`pod${uid}`, `pod${uid.replaceAll('-', '_')}`];
  let pids: string[];
  try {
    pids = readdirSync(procRoot).filter((d) => /^\d+$/.test(d));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let cgroup: string;
    try {
      cgroup = readFileSync(`${procRoot}/${pid}/cgroup`, 'utf8');
    } catch {
      continue;
    }
    if (needles.some((n) => cgroup.includes(n))) return `${procRoot}/${pid}/ns/net`;
  }
  return undefined;
}

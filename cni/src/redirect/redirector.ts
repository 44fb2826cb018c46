/**
 * One interface over both modes, for the node agent: apply on enrollment, remove on
 * unenrollment, check/reconcile on startup. The mode is node-wide; per-pod differences
 * (addresses, ingress mode, DNS capture) travel in the {@link PodTarget}.
 */
import { existsSync } from 'node:fs';
import type { RedirectCheck, RedirectReconcile } from './check.ts';
import { type PodRedirectOptions, type RedirectConfig, resolveRedirectConfig } from './config.ts';
import {
  attachPodRedirection,
  checkEbpfRedirection,
  DEFAULT_PIN_ROOT,
  detachPodRedirection,
  podPinDir,
  reconcileEbpfRedirection,
} from './ebpf.ts';
import { RedirectError } from './errors.ts';
import {
  applyNftablesRedirection,
  checkNftablesRedirection,
  reconcileNftablesRedirection,
  removeNftablesRedirection,
} from './nftables.ts';

export type RedirectMode = 'nftables' | 'ebpf';

/** One enrolled pod, as the agent knows it. */
export interface PodTarget {
  readonly uid: string;
  readonly netnsPath: string;
  /** The pod's cgroup v2 directory; required in eBPF mode. */
  readonly cgroupPath?: string;
  readonly pod: PodRedirectOptions;
}

export interface Redirector {
  readonly mode: RedirectMode;
  apply(target: PodTarget): Promise<void>;
  /** Also succeeds when the pod's netns is already gone (then only pinned state is cleaned). */
  remove(target: PodTarget): Promise<void>;
  check(target: PodTarget): Promise<RedirectCheck>;
  reconcile(target: PodTarget): Promise<RedirectReconcile>;
}

export type RedirectorOptions =
  | { readonly mode: 'nftables'; readonly config?: Partial<RedirectConfig> }
  | {
      readonly mode: 'ebpf';
      readonly config?: Partial<RedirectConfig>;
      /** ztunnel's cgroup v2 directory ({@link cgroupOfPid} of the ZDS peer). */
      readonly proxyCgroupPath: string;
      readonly pinRoot?: string;
      readonly objectPath?: string;
    };

export function createRedirector(options: RedirectorOptions): Redirector {
  const config = resolveRedirectConfig(options.config);
  if (options.mode === 'nftables') {
    return {
      mode: 'nftables',
      apply: (t) => applyNftablesRedirection(t.netnsPath, t.pod, config),
      remove: async (t) => {
        if (existsSync(t.netnsPath)) await removeNftablesRedirection(t.netnsPath, config);
      },
      check: (t) => checkNftablesRedirection(t.netnsPath, t.pod, config),
      reconcile: (t) => reconcileNftablesRedirection(t.netnsPath, t.pod, config),
    };
  }
  const pinRoot = options.pinRoot ?? DEFAULT_PIN_ROOT;
  const attach = (t: PodTarget) => {
    if (t.cgroupPath === undefined) {
      throw new RedirectError('CGROUP_NOT_FOUND', `pod ${t.uid}: eBPF mode needs the pod's cgroup path`);
    }
    return {
      netnsPath: t.netnsPath,
      cgroupPath: t.cgroupPath,
      proxyCgroupPath: options.proxyCgroupPath,
      pinDir: podPinDir(t.uid, pinRoot),
      pod: t.pod,
      config,
      ...(options.objectPath === undefined ? {} : { objectPath: options.objectPath }),
    };
  };
  return {
    mode: 'ebpf',
    apply: (t) => attachPodRedirection(attach(t)),
    remove: (t) =>
      detachPodRedirection({ pinDir: podPinDir(t.uid, pinRoot), netnsPath: t.netnsPath, config }),
    check: (t) => checkEbpfRedirection(attach(t), config),
    reconcile: (t) => reconcileEbpfRedirection(attach(t)),
  };
}

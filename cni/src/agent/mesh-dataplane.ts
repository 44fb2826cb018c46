/**
 * The one place that defines how a pod enters and leaves the mesh (spec §6.4;
 * `istio:cni/pkg/nodeagent/meshdataplane_linux.go`). Both entry points, the plugin's ADD and the
 * pod/namespace watch, call {@link MeshDataplane.addPodToMesh}.
 */
import type { Pod } from '@ambient/common/config/objects';
import { errorMessage, MeshError } from '@ambient/common/errors';
import type { Logger } from '@ambient/common/log';
import type { ZdsWorkloadInfo } from '@ambient/common/zds';
import { closeFd } from '@ambient/native';
import { findPodCgroup } from '../redirect/cgroup.ts';
import type { RedirectConfig } from '../redirect/config.ts';
import { addPodToProbeSet, removePodFromProbeSet } from '../redirect/host-probe.ts';
import type { PodTarget, Redirector } from '../redirect/redirector.ts';
import { AgentError } from './errors.ts';
import { findPodNetnsInProc, openPodNetns } from './netns.ts';
import type { PodAnnotator } from './pod-annotator.ts';
import type { PodCache, PodCacheEntry } from './pod-cache.ts';

export const INGRESS_MODE_ANNOTATION = 'ambient.istio.io/bypass-inbound-capture';
export const DNS_CAPTURE_ANNOTATION = 'ambient.istio.io/dns-capture';

/** What the dataplane needs from the ZDS server (a ZdsServer in production). */
export interface ZdsPodSink {
  podAdded(uid: string, info: ZdsWorkloadInfo, netnsFd: number): Promise<void>;
  podDeleted(uid: string): Promise<void>;
}

export interface MeshDataplaneOptions {
  readonly redirector: Redirector;
  readonly redirectConfig: Partial<RedirectConfig>;
  readonly zds: ZdsPodSink;
  readonly cache: PodCache;
  readonly annotator: PodAnnotator;
  /** The node's netns, where the probe SNAT sets live. */
  readonly hostNetnsPath: string;
  /** `/proc` (or `/host/proc`) for netns lookups of pods the plugin never reported. */
  readonly procRoot?: string;
  readonly log: Logger;
  /** Called once per failed enrollment step, for the failures counter. */
  readonly onFailure?: (reason: string) => void;
}

/** Where the pod's sandbox and addresses come from when the plugin supplies them. */
export interface SandboxHint {
  readonly netnsPath?: string;
  readonly ips?: readonly string[];
}

function podUid(pod: Pod): string {
  const uid = pod.metadata.uid;
  if (uid === undefined || uid === '') {
    throw new AgentError(
      'POD_UNKNOWN',
      `pod ${pod.metadata.namespace}/${pod.metadata.name} has no metadata.uid`,
    );
  }
  return uid;
}

/** `WorkloadInfo` of a pod (spec §5.2): name, namespace, service account. */
export function workloadInfo(pod: Pod): ZdsWorkloadInfo {
  return {
    name: pod.metadata.name,
    namespace: pod.metadata.namespace ?? 'default',
    serviceAccount: pod.spec?.serviceAccountName ?? 'default',
  };
}

function boolAnnotation(pod: Pod, key: string): boolean | undefined {
  const v = pod.metadata.annotations?.[key];
  if (v === undefined) return undefined;
  return v === 'true' || v === 'enabled';
}

function wrap(
  code: 'REDIRECTION_FAILED' | 'PROBE_SET_FAILED' | 'ZDS_DEL_FAILED',
  what: string,
  err: unknown,
): AgentError {
  if (err instanceof AgentError) return err;
  return new AgentError(code, `${what}: ${errorMessage(err)}`, { cause: err, retryable: true });
}

export class MeshDataplane {
  readonly #o: MeshDataplaneOptions;

  constructor(options: MeshDataplaneOptions) {
    this.#o = options;
  }

  /** The redirect target of a cached pod: its netns, addresses and per-pod annotations. */
  target(pod: Pod, entry: PodCacheEntry): PodTarget {
    const netnsPath = entry.netnsPath;
    if (netnsPath === undefined) {
      throw new AgentError(
        'NETNS_NOT_FOUND',
        `pod ${entry.info.namespace}/${entry.info.name} has no known netns`,
        {
          retryable: true,
        },
      );
    }
    const ingressMode = boolAnnotation(pod, INGRESS_MODE_ANNOTATION);
    const captureDns = boolAnnotation(pod, DNS_CAPTURE_ANNOTATION);
    let cgroupPath: string | undefined;
    if (this.#o.redirector.mode === 'ebpf') cgroupPath = findPodCgroup(entry.uid);
    return {
      uid: entry.uid,
      netnsPath,
      ...(cgroupPath === undefined ? {} : { cgroupPath }),
      pod: {
        ips: entry.ips,
        ...(ingressMode === undefined ? {} : { ingressMode }),
        ...(captureDns === undefined ? {} : { captureDns }),
      },
    };
  }

  /**
   * Enrolls a pod. Idempotent: enrolling an enrolled pod re-applies its rules and re-sends the add.
   *
   * 1. Open the netns: the plugin's `CNI_NETNS` (`hint.netnsPath`); else the path the plugin
   *    reported earlier (pod cache, persisted across agent restarts); else a /proc scan for a
   *    process in the pod's cgroup. Not found: `NETNS_NOT_FOUND`, retryable.
   * 2. Install the in-pod redirection (nftables by default, or eBPF), recording the pod in the
   *    cache as enrolled first, so that from here on every ZDS snapshot names it and a restarted
   *    agent repairs it.
   * 3. Send ZDS Add with the netns fd and wait for ztunnel's ack. On failure (no ztunnel connected,
   *    NACK, timeout) the pod is annotated `pending` and the error (`ZDS_ADD_FAILED`, retryable)
   *    propagates: on the plugin path ADD fails and the runtime retries the sandbox, so the pod
   *    never runs outside the mesh; its rules stay, blocking its traffic until a ztunnel takes it
   *    (the pod is in the cache, so the next ztunnel gets it in its snapshot).
   * 4. Add the pod IPs to the host probe SNAT sets, so kubelet probes pass the in-pod rules.
   * 5. Annotate `ambient.istio.io/redirection: enabled`.
   */
  async addPodToMesh(pod: Pod, hint: SandboxHint = {}): Promise<void> {
    const uid = podUid(pod);
    const info = workloadInfo(pod);
    const log = this.#o.log.child({ uid, pod: `${info.namespace}/${info.name}` });
    const cached = this.#o.cache.get(uid);
    // 1.
    const netnsPath = hint.netnsPath ?? cached?.netnsPath ?? findPodNetnsInProc(uid, this.#o.procRoot);
    if (netnsPath === undefined) {
      this.#o.onFailure?.('netns');
      throw new AgentError(
        'NETNS_NOT_FOUND',
        `no netns found for pod ${info.namespace}/${info.name} (${uid})`,
        {
          retryable: true,
        },
      );
    }
    const ips = hint.ips ?? (cached?.ips.length ? cached.ips : podIps(pod));
    const fd = this.#step('netns', () => openPodNetns(uid, netnsPath));
    try {
      // 2.
      const entry: PodCacheEntry = { uid, info, netnsPath, ips, enrolled: true };
      await this.#o.cache.upsert(entry);
      await this.#stepAsync('redirection', async () => {
        try {
          await this.#o.redirector.apply(this.target(pod, entry));
        } catch (err) {
          throw wrap(
            'REDIRECTION_FAILED',
            `in-pod redirection for pod ${info.namespace}/${info.name} failed`,
            err,
          );
        }
      });
      // 3.
      try {
        await this.#o.zds.podAdded(uid, info, fd);
      } catch (err) {
        this.#o.onFailure?.('zds');
        await this.#o.annotator
          .setRedirection(info, 'pending')
          .catch((e: unknown) => log.warn({ err: errorMessage(e) }, 'annotating pending failed'));
        throw new AgentError(
          'ZDS_ADD_FAILED',
          `ztunnel did not accept pod ${info.namespace}/${info.name}: ${errorMessage(err)}`,
          { cause: err, retryable: true },
        );
      }
      // 4.
      await this.#stepAsync('probe-set', async () => {
        try {
          await addPodToProbeSet(this.#o.hostNetnsPath, uid, ips, this.#o.redirectConfig);
        } catch (err) {
          throw wrap(
            'PROBE_SET_FAILED',
            `adding pod ${uid} IPs ${ips.join(', ')} to the probe set failed`,
            err,
          );
        }
      });
      // 5.
      await this.#stepAsync('annotation', () => this.#o.annotator.setRedirection(info, 'enabled'));
      log.info({ netns: netnsPath, ips }, 'pod enrolled in the mesh');
    } finally {
      closeFd(fd);
    }
  }

  /**
   * Unenrolls a pod, the reverse of {@link addPodToMesh} (spec §6.4 remove order):
   * 1. drop its IPs from the host probe sets;
   * 2. delete the in-pod rules, unless the pod terminated (its netns is gone or going);
   * 3. send ZDS Del to every ztunnel;
   * 4. remove the annotation (when the pod still exists) and forget the pod as enrolled.
   * Pods the agent never enrolled are left alone. `podGone` means the Pod object was deleted.
   */
  async removePodFromMesh(
    uid: string,
    pod: Pod | undefined,
    options: { podGone?: boolean; terminated?: boolean } = {},
  ): Promise<void> {
    const entry = this.#o.cache.get(uid);
    if (entry === undefined || !entry.enrolled) {
      if (options.podGone && entry !== undefined) await this.#o.cache.delete(uid);
      return;
    }
    const log = this.#o.log.child({ uid, pod: `${entry.info.namespace}/${entry.info.name}` });
    // 1.
    await removePodFromProbeSet(this.#o.hostNetnsPath, uid).catch((err: unknown) => {
      throw wrap('PROBE_SET_FAILED', `removing pod ${uid} from the probe set failed`, err);
    });
    // 2.
    if (!options.terminated && !options.podGone && pod !== undefined && entry.netnsPath !== undefined) {
      await this.#o.redirector.remove(this.target(pod, entry)).catch((err: unknown) => {
        throw wrap('REDIRECTION_FAILED', `removing in-pod redirection of pod ${uid} failed`, err);
      });
    } else if (this.#o.redirector.mode === 'ebpf' && entry.netnsPath !== undefined) {
      // Pinned eBPF state outlives the netns; remove() cleans it even when the netns is gone.
      await this.#o.redirector
        .remove({ uid, netnsPath: entry.netnsPath, pod: { ips: entry.ips } })
        .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'cleaning eBPF state failed'));
    }
    // 3.
    await this.#o.zds.podDeleted(uid).catch((err: unknown) => {
      throw wrap('ZDS_DEL_FAILED', `ztunnel did not drop pod ${uid}`, err);
    });
    // 4.
    if (options.podGone) await this.#o.cache.delete(uid);
    else await this.#o.cache.upsert({ ...entry, enrolled: false });
    if (!options.podGone) await this.#o.annotator.setRedirection(entry.info, undefined);
    log.info('pod removed from the mesh');
  }

  #step<T>(reason: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      this.#o.onFailure?.(reason);
      throw err;
    }
  }

  async #stepAsync<T>(reason: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.#o.onFailure?.(reason);
      throw err instanceof MeshError
        ? err
        : new AgentError('REDIRECTION_FAILED', errorMessage(err), { cause: err });
    }
  }
}

/** The pod's IPs from its status (the watch path, when the plugin did not report them). */
export function podIps(pod: Pod): string[] {
  const ips = pod.status?.podIPs?.map((p) => p.ip) ?? [];
  if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips;
}

/**
 * Entry B of enrollment (reference architecture flow (c)): watches Pods on this node and all
 * Namespaces in the ConfigStore, decides with {@link ambientDecision} and converges each pod on a
 * per-pod queue: enroll running pods that became ambient (a namespace labelled later), unenroll
 * pods that stopped being ambient, and remove deleted or terminated ones. Retryable failures are
 * retried with backoff. It also keeps the enrollment state file the plugin reads while the agent
 * is down.
 */

import type { Namespace, Pod } from '@ambient/common/config/objects';
import type { ConfigChange, ConfigStore } from '@ambient/common/config/store';
import { errorMessage, MeshError } from '@ambient/common/errors';
import type { Logger } from '@ambient/common/log';
import { type EnrollmentState, writeEnrollmentState } from '../plugin-protocol.ts';
import {
  ambientDecision,
  DATAPLANE_MODE_AMBIENT,
  DATAPLANE_MODE_LABEL,
  DATAPLANE_MODE_NONE,
  type EnablementConfig,
  isAmbientNamespace,
  isTerminal,
} from './enablement.ts';
import type { MeshDataplane } from './mesh-dataplane.ts';
import type { PodCache } from './pod-cache.ts';

export interface PodWatchOptions {
  readonly store: ConfigStore;
  readonly nodeName: string;
  readonly enablement: EnablementConfig;
  readonly dataplane: MeshDataplane;
  readonly cache: PodCache;
  readonly runDir: string;
  readonly log: Logger;
  /** First retry delay; doubles up to {@link maxRetryMs}. Default 200. */
  readonly retryMs?: number;
  readonly maxRetryMs?: number;
  readonly onEnrolledCount?: (n: number) => void;
}

/** `namespace/name` of a pod. */
function keyOf(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export class PodWatch {
  readonly name = 'cni-pod-watch';
  readonly #o: PodWatchOptions;
  readonly #running = new Map<string, Promise<void>>();
  readonly #again = new Set<string>();
  readonly #retries = new Map<string, { timer: NodeJS.Timeout; delay: number }>();
  #stopped = true;
  #stateText = '';
  readonly #onChanges = (changes: readonly ConfigChange[]) => this.#changed(changes);

  constructor(options: PodWatchOptions) {
    this.#o = options;
  }

  start(): void {
    this.#stopped = false;
    this.#o.store.on('changes', this.#onChanges);
    for (const pod of this.#o.store.list('Pod')) this.#enqueuePod(pod);
    for (const e of this.#o.cache.entries()) this.enqueue(keyOf(e.info.namespace, e.info.name));
    void this.#writeState();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#o.store.off('changes', this.#onChanges);
    for (const r of this.#retries.values()) clearTimeout(r.timer);
    this.#retries.clear();
    await Promise.allSettled([...this.#running.values()]);
  }

  /** Resolves when no pod is being converged (tests, and the startup reconcile). */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running.values()]);
  }

  /** Converges one pod now (serialized per pod). */
  enqueue(key: string): void {
    if (this.#stopped) return;
    if (this.#running.has(key)) {
      this.#again.add(key);
      return;
    }
    const run = this.#converge(key)
      .then(
        () => {
          this.#retries.delete(key);
        },
        (err: unknown) => this.#failed(key, err),
      )
      .finally(() => {
        this.#running.delete(key);
        this.#o.onEnrolledCount?.(this.#o.cache.enrolled().length);
        if (this.#again.delete(key)) this.enqueue(key);
      });
    this.#running.set(key, run);
  }

  #failed(key: string, err: unknown): void {
    const retryable = err instanceof MeshError && err.retryable;
    this.#o.log.warn({ pod: key, err: errorMessage(err), retryable }, 'pod reconcile failed');
    if (!retryable || this.#stopped) return;
    const prev = this.#retries.get(key);
    const delay = Math.min(prev ? prev.delay * 2 : (this.#o.retryMs ?? 200), this.#o.maxRetryMs ?? 30_000);
    if (prev) clearTimeout(prev.timer);
    const timer = setTimeout(() => this.enqueue(key), delay);
    timer.unref();
    this.#retries.set(key, { timer, delay });
  }

  #changed(changes: readonly ConfigChange[]): void {
    let nsChanged = false;
    for (const c of changes) {
      if (c.kind === 'Pod') {
        const pod = (c.new ?? c.old) as Pod;
        if (
          pod.spec?.nodeName === this.#o.nodeName ||
          this.#o.cache.find(pod.metadata.namespace ?? '', pod.metadata.name)
        ) {
          this.#enqueuePod(pod);
        }
        if (relevantForState(c.old as Pod | undefined) || relevantForState(c.new as Pod | undefined))
          nsChanged = true;
      } else if (c.kind === 'Namespace') {
        nsChanged = true;
        const ns = ((c.new ?? c.old) as Namespace).metadata.name;
        for (const pod of this.#o.store.list('Pod', ns)) {
          if (pod.spec?.nodeName === this.#o.nodeName) this.#enqueuePod(pod);
        }
      }
    }
    if (nsChanged) void this.#writeState();
  }

  #enqueuePod(pod: Pod): void {
    if (
      pod.spec?.nodeName !== this.#o.nodeName &&
      !this.#o.cache.find(pod.metadata.namespace ?? '', pod.metadata.name)
    )
      return;
    this.enqueue(keyOf(pod.metadata.namespace ?? 'default', pod.metadata.name));
  }

  async #converge(key: string): Promise<void> {
    const [namespace = '', name = ''] = key.split('/');
    const pod = this.#o.store.get('Pod', namespace, name);
    const cached = this.#o.cache.find(namespace, name);
    // Deleted, or replaced by a new pod of the same name: let the old one go.
    if (
      cached &&
      (pod === undefined || (pod.metadata.uid !== undefined && pod.metadata.uid !== cached.uid))
    ) {
      await this.#o.dataplane.removePodFromMesh(cached.uid, undefined, { podGone: true });
      if (pod === undefined) return;
    }
    if (pod === undefined) return;
    const uid = pod.metadata.uid;
    if (uid === undefined) return;
    const ns = this.#o.store.get('Namespace', '', namespace);
    const decision = ambientDecision(pod, ns, this.#o.enablement);
    const entry = this.#o.cache.get(uid);
    if (decision.ambient) {
      if (entry?.enrolled) return;
      // Only pods whose sandbox exists: one the plugin reported, or one found running in /proc.
      // A pod not started yet is enrolled by its plugin ADD.
      if (entry === undefined && pod.status?.phase !== 'Running') return;
      this.#o.log.info({ pod: key, reason: decision.reason }, 'enrolling running pod');
      await this.#o.dataplane.addPodToMesh(pod);
      return;
    }
    if (entry?.enrolled) {
      this.#o.log.info({ pod: key, reason: decision.reason }, 'unenrolling pod');
      await this.#o.dataplane.removePodFromMesh(uid, pod, { terminated: isTerminal(pod) });
    }
  }

  /** The state the plugin falls back on while the agent is down (see EnrollmentState). */
  enrollmentState(): EnrollmentState {
    const namespaces = this.#o.store
      .list('Namespace')
      .filter((n) => isAmbientNamespace(n) && !this.#o.enablement.excludeNamespaces.includes(n.metadata.name))
      .map((n) => n.metadata.name);
    const pods = [];
    const exemptPods = [];
    for (const p of this.#o.store.list('Pod')) {
      const ref = { namespace: p.metadata.namespace ?? 'default', name: p.metadata.name };
      const mode = p.metadata.labels?.[DATAPLANE_MODE_LABEL];
      if (mode === DATAPLANE_MODE_AMBIENT) pods.push(ref);
      else if (mode === DATAPLANE_MODE_NONE && namespaces.includes(ref.namespace)) exemptPods.push(ref);
    }
    return { namespaces, pods, exemptPods };
  }

  async #writeState(): Promise<void> {
    try {
      const state = this.enrollmentState();
      const text = JSON.stringify(state);
      if (text === this.#stateText) return;
      await writeEnrollmentState(this.#o.runDir, state);
      this.#stateText = text;
    } catch (err) {
      this.#o.log.error({ err: errorMessage(err) }, 'writing the enrollment state file failed');
    }
  }

  /** Writes the enrollment state file now (before the agent reports ready). */
  writeState(): Promise<void> {
    return this.#writeState();
  }
}

function relevantForState(pod: Pod | undefined): boolean {
  return pod?.metadata.labels?.[DATAPLANE_MODE_LABEL] !== undefined;
}

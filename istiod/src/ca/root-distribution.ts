import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ConfigChange, ConfigStore } from '@ambient/common/config/store';
import { errorMessage } from '@ambient/common/errors';
import type { Component, StopContext } from '@ambient/common/lifecycle';
import { type Logger, logger } from '@ambient/common/log';
import type { CoreV1Api, V1ConfigMap } from '@kubernetes/client-node';
import { RootDistributionError } from './errors.ts';
import { httpStatus, writeAtomic } from './root-store.ts';

/** `PILOT_CA_CERT_CONFIGMAP` and its key (spec §4.4). */
export const ROOT_CONFIGMAP_NAME = 'istio-ca-root-cert';
export const ROOT_CONFIGMAP_KEY = 'root-cert.pem';
/** Upstream's label on the ConfigMap. */
const CONFIGMAP_LABELS = { 'istio.io/config': 'true' } as const;
/** Kubernetes' own namespaces, which upstream's namespace controller skips (`inject.IgnoredNamespaces`). */
export const SKIPPED_NAMESPACES: readonly string[] = [
  'kube-system',
  'kube-public',
  'kube-node-lease',
  'local-path-storage',
];

/** Publishes the mesh root where clients read it to verify istiod's TLS. */
export interface RootDistributor extends Component {
  /** Replaces the published root (a rotated or newly plugged-in CA). */
  setRoot(rootPem: string): Promise<void>;
}

/**
 * Local mode: the root in one file, written atomically (temporary file, then rename) so a reader
 * never sees a partial PEM.
 */
export class FileRootDistributor implements RootDistributor {
  readonly name = 'root-file';
  readonly #path: string;
  #rootPem: string;
  readonly #log: Logger;

  constructor(options: { path: string; rootPem: string; log?: Logger }) {
    this.#path = options.path;
    this.#rootPem = options.rootPem;
    this.#log = options.log ?? logger('ca');
  }

  async start(): Promise<void> {
    await this.#write();
  }

  stop(): void {}

  async setRoot(rootPem: string): Promise<void> {
    this.#rootPem = rootPem;
    await this.#write();
  }

  async #write(): Promise<void> {
    try {
      await mkdir(dirname(this.#path), { recursive: true });
      await writeAtomic(this.#path, this.#rootPem, 0o644);
    } catch (err) {
      throw new RootDistributionError(
        'ROOT_FILE_WRITE_FAILED',
        `writing root certificate to ${this.#path}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    this.#log.info({ path: this.#path }, 'root certificate written');
  }
}

/** The Kubernetes calls {@link ConfigMapRootDistributor} makes (a `CoreV1Api` satisfies it). */
export type ConfigMapApi = Pick<
  CoreV1Api,
  'readNamespacedConfigMap' | 'createNamespacedConfigMap' | 'replaceNamespacedConfigMap'
>;

export interface ConfigMapRootDistributorOptions {
  readonly api: ConfigMapApi;
  /** Namespaces come from here; a namespace added is written at once. */
  readonly store: ConfigStore;
  readonly rootPem: string;
  /** Every namespace is re-checked this often, repairing a ConfigMap someone edited or deleted. Default 5 min. */
  readonly resyncIntervalMs?: number;
  /** Namespaces written in parallel. Default 4. */
  readonly concurrency?: number;
  /** First retry delay after a failed write, doubled per failure up to 60 s. Default 1 s. */
  readonly retryBaseMs?: number;
  readonly log?: Logger;
}

/**
 * Kubernetes mode: ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in every namespace, like
 * istiod's namespace controller. A namespace is reconciled when it appears, when the root changes,
 * and on a periodic resync; a failed write is retried with backoff. Reconciling reads the
 * ConfigMap and writes only when it is missing or differs, keeping other keys and labels.
 */
export class ConfigMapRootDistributor implements RootDistributor {
  readonly name = 'root-configmaps';
  readonly #api: ConfigMapApi;
  readonly #store: ConfigStore;
  readonly #resyncMs: number;
  readonly #concurrency: number;
  readonly #retryBaseMs: number;
  readonly #log: Logger;
  #rootPem: string;
  readonly #queue = new Set<string>();
  readonly #running = new Set<string>();
  readonly #failures = new Map<string, number>();
  readonly #retryTimers = new Map<string, NodeJS.Timeout>();
  readonly #idleWaiters: (() => void)[] = [];
  #resyncTimer: NodeJS.Timeout | undefined;
  #stopped = false;
  readonly #onChanges = (changes: readonly ConfigChange[]): void => {
    for (const c of changes) {
      if (c.kind === 'Namespace' && c.new && !c.old) this.#enqueue(c.new.metadata.name);
    }
  };

  constructor(options: ConfigMapRootDistributorOptions) {
    this.#api = options.api;
    this.#store = options.store;
    this.#rootPem = options.rootPem;
    this.#resyncMs = options.resyncIntervalMs ?? 5 * 60_000;
    this.#concurrency = options.concurrency ?? 4;
    this.#retryBaseMs = options.retryBaseMs ?? 1000;
    this.#log = options.log ?? logger('ca');
  }

  start(): void {
    this.#stopped = false;
    this.#store.on('changes', this.#onChanges);
    this.#enqueueAll();
    this.#resyncTimer = setInterval(() => this.#enqueueAll(), this.#resyncMs);
    this.#resyncTimer.unref();
  }

  async stop(ctx?: StopContext): Promise<void> {
    this.#stopped = true;
    this.#store.off('changes', this.#onChanges);
    clearInterval(this.#resyncTimer);
    for (const t of this.#retryTimers.values()) clearTimeout(t);
    this.#retryTimers.clear();
    this.#queue.clear();
    // Writes in flight finish (each is one API call); the force signal stops waiting for them.
    if (this.#running.size > 0) {
      await new Promise<void>((resolve) => {
        this.#idleWaiters.push(resolve);
        ctx?.force.addEventListener('abort', () => resolve(), { once: true });
      });
    }
  }

  async setRoot(rootPem: string): Promise<void> {
    this.#rootPem = rootPem;
    this.#enqueueAll();
  }

  /** Resolves when nothing is queued or being written (retries waiting on a timer do not count). */
  whenIdle(): Promise<void> {
    if (this.#queue.size === 0 && this.#running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Namespaces whose last write failed and that wait for a retry. */
  failing(): string[] {
    return [...this.#failures.keys()].sort();
  }

  #enqueueAll(): void {
    for (const ns of this.#store.list('Namespace')) this.#enqueue(ns.metadata.name);
  }

  #enqueue(namespace: string): void {
    if (this.#stopped || SKIPPED_NAMESPACES.includes(namespace)) return;
    const retry = this.#retryTimers.get(namespace);
    if (retry) {
      clearTimeout(retry);
      this.#retryTimers.delete(namespace);
    }
    this.#queue.add(namespace);
    this.#pump();
  }

  #pump(): void {
    while (!this.#stopped && this.#running.size < this.#concurrency) {
      // A namespace already being written is picked up again after that write finishes.
      let next: string | undefined;
      for (const ns of this.#queue) {
        if (!this.#running.has(ns)) {
          next = ns;
          break;
        }
      }
      if (next === undefined) break;
      this.#queue.delete(next);
      this.#running.add(next);
      void this.#reconcile(next).finally(() => {
        this.#running.delete(next);
        this.#pump();
        if (this.#queue.size === 0 && this.#running.size === 0) {
          for (const w of this.#idleWaiters.splice(0)) w();
        }
      });
    }
  }

  async #reconcile(namespace: string): Promise<void> {
    const ns = this.#store.get('Namespace', '', namespace);
    if (!ns || ns.metadata.deletionTimestamp) return;
    const root = this.#rootPem;
    try {
      const outcome = await this.#write(namespace, root);
      this.#failures.delete(namespace);
      if (outcome !== 'unchanged') this.#log.info({ namespace, outcome }, 'root configmap written');
    } catch (err) {
      const failures = (this.#failures.get(namespace) ?? 0) + 1;
      this.#failures.set(namespace, failures);
      const delay = Math.min(60_000, this.#retryBaseMs * 2 ** (failures - 1));
      const e = new RootDistributionError(
        'CONFIGMAP_WRITE_FAILED',
        `writing configmap ${namespace}/${ROOT_CONFIGMAP_NAME}: ${errorMessage(err)}`,
        { cause: err, retryable: true },
      );
      this.#log.warn(
        { namespace, failures, retryInMs: delay, err: e.message },
        'root configmap write failed',
      );
      if (this.#stopped) return;
      const timer = setTimeout(() => {
        this.#retryTimers.delete(namespace);
        this.#enqueue(namespace);
      }, delay);
      timer.unref();
      this.#retryTimers.set(namespace, timer);
    }
  }

  async #write(namespace: string, root: string): Promise<'created' | 'updated' | 'unchanged'> {
    let existing: V1ConfigMap | undefined;
    try {
      existing = await this.#api.readNamespacedConfigMap({ name: ROOT_CONFIGMAP_NAME, namespace });
    } catch (err) {
      if (httpStatus(err) !== 404) throw err;
    }
    if (!existing) {
      await this.#api.createNamespacedConfigMap({
        namespace,
        body: {
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: { name: ROOT_CONFIGMAP_NAME, namespace, labels: { ...CONFIGMAP_LABELS } },
          data: { [ROOT_CONFIGMAP_KEY]: root },
        },
      });
      return 'created';
    }
    if (existing.data?.[ROOT_CONFIGMAP_KEY] === root) return 'unchanged';
    // Replace carries the resourceVersion read above, so a concurrent writer makes this fail with
    // 409 and the retry reads again rather than overwriting blindly.
    await this.#api.replaceNamespacedConfigMap({
      name: ROOT_CONFIGMAP_NAME,
      namespace,
      body: {
        ...existing,
        metadata: { ...existing.metadata, labels: { ...existing.metadata?.labels, ...CONFIGMAP_LABELS } },
        data: { ...existing.data, [ROOT_CONFIGMAP_KEY]: root },
      },
    });
    return 'updated';
  }
}

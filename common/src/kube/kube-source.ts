import type { KubeConfig } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import type { BackoffOptions } from '../backoff.ts';
import { KIND_NAMES, type Kind } from '../config/kinds.ts';
import { configMetrics } from '../config/metrics.ts';
import type { ConfigSource } from '../config/source.ts';
import type { ConfigStore } from '../config/store.ts';
import type { StopContext } from '../lifecycle.ts';
import { type Logger, logger as processLogger } from '../log.ts';
import { KubeClient, loadKubeConfig } from './client.ts';
import { KubeError } from './errors.ts';
import { kubeMetrics } from './metrics.ts';
import { Reflector, type ReflectorSettings, type ReflectorStatus } from './reflector.ts';

export interface KubeSourceOptions {
  readonly store: ConfigStore;
  /** Where the source's metrics are registered (never the global registry). */
  readonly registry: Registry;
  /** A ready KubeConfig; otherwise `kubeconfigPath`, otherwise the in-cluster service account. */
  readonly kubeConfig?: KubeConfig;
  readonly kubeconfigPath?: string;
  readonly context?: string;
  /** The kinds to watch, synced in {@link KINDS} order; all of them by default. */
  readonly kinds?: readonly Kind[];
  readonly log?: Logger;
  /** Defaults: 500 items a page, 300 s watches (randomised up to 600 s), 3 min silence, 60 s list timeout. */
  readonly pageSize?: number;
  readonly watchTimeoutSeconds?: number;
  readonly silenceMs?: number;
  readonly listTimeoutMs?: number;
  /** Retry delays after errors; 100 ms doubling to 30 s, ±20% jitter by default. */
  readonly backoff?: BackoffOptions;
  /** How often a kind whose CRD is not installed is looked for again; 60 s by default. */
  readonly absentRetryMs?: number;
  /** How long a watch must last (if it delivered nothing) to reset the backoff; 5 s by default. */
  readonly healthyWatchMs?: number;
}

/**
 * The Kubernetes API as a configuration source: one {@link Reflector} (list/watch supervisor) per
 * kind, all writing into one ConfigStore. Every object is validated; a malformed one is rejected
 * alone, logged and counted in `istiod_config_rejected_total`.
 */
export class KubeSource implements ConfigSource {
  readonly name = 'kube-source';
  readonly #options: KubeSourceOptions;
  readonly #log: Logger;
  readonly #kinds: readonly Kind[];
  #reflectors: Reflector[] = [];
  #stopped = false;
  readonly #synced: Promise<void>;
  #resolveSynced!: () => void;
  #rejectSynced!: (err: Error) => void;

  constructor(options: KubeSourceOptions) {
    this.#options = options;
    this.#log = options.log ?? processLogger('kube');
    const wanted = new Set(options.kinds ?? KIND_NAMES);
    this.#kinds = KIND_NAMES.filter((k) => wanted.has(k));
    this.#synced = new Promise<void>((resolve, reject) => {
      this.#resolveSynced = resolve;
      this.#rejectSynced = reject;
    });
    // Callers need not await synced(); a stop before sync must not become an unhandled rejection.
    this.#synced.catch(() => {});
  }

  /** Loads the kubeconfig (throwing KubeError KUBECONFIG_INVALID when it cannot) and starts every kind. */
  start(): void {
    if (this.#reflectors.length > 0 || this.#stopped) return;
    const o = this.#options;
    const client = new KubeClient(loadKubeConfig(o));
    const settings: ReflectorSettings = {
      pageSize: o.pageSize ?? 500,
      watchTimeoutSeconds: o.watchTimeoutSeconds ?? 300,
      silenceMs: o.silenceMs ?? 180_000,
      listTimeoutMs: o.listTimeoutMs ?? 60_000,
      backoff: o.backoff ?? { initialMs: 100, maxMs: 30_000 },
      absentRetryMs: o.absentRetryMs ?? 60_000,
      healthyWatchMs: o.healthyWatchMs ?? 5_000,
    };
    const metrics = kubeMetrics(o.registry);
    const shared = configMetrics(o.registry);
    let after: Promise<void> | undefined;
    for (const kind of this.#kinds) {
      metrics.synced.set({ kind }, 0);
      metrics.absent.set({ kind }, 0);
      const r = new Reflector({
        kind,
        client,
        store: o.store,
        log: this.#log,
        metrics,
        configMetrics: shared,
        settings,
        after,
      });
      after = after ? Promise.all([after, r.whenSynced()]).then(() => {}) : r.whenSynced();
      this.#reflectors.push(r);
    }
    this.#log.info({ server: client.server, kinds: this.#kinds }, 'starting list/watch');
    for (const r of this.#reflectors) r.start();
    void Promise.all(this.#reflectors.map((r) => r.whenSynced())).then(() => {
      if (this.#stopped) return;
      this.#log.info({ kinds: this.#kinds.length }, 'all kinds synced');
      this.#resolveSynced();
    });
  }

  /** Stops every watch at once: nothing needs draining, a restart relists. */
  async stop(_ctx?: StopContext): Promise<void> {
    this.#stopped = true;
    this.#rejectSynced(new KubeError('STOPPED', 'the Kubernetes source stopped before every kind synced'));
    await Promise.all(this.#reflectors.map((r) => r.stop()));
  }

  synced(): Promise<void> {
    return this.#synced;
  }

  get healthy(): boolean {
    return this.#reflectors.length > 0 && this.#reflectors.every((r) => r.healthy);
  }

  /** Per kind: phase, synced, absent, resourceVersion, last error. */
  status(): ReflectorStatus[] {
    return this.#reflectors.map((r) => r.status());
  }
}

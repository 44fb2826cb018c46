import { formatIdentity, type Identity } from '@ambient/common/identity';
import type { Logger } from '@ambient/common/log';
import type { ProxyState, ProxyStateUpdater, Workload } from '@ambient/common/model';

/** The part of the cert manager the prefetcher drives. */
export interface PrefetchTarget {
  prefetch(identity: Identity): void;
  forget(identity: Identity): void;
}

export interface CertPrefetcherOptions {
  readonly state: ProxyState;
  readonly updater: ProxyStateUpdater;
  readonly certificates: PrefetchTarget;
  /** Shared (in-pod) mode fetches certificates on behalf of the node's pods; dedicated does not. */
  readonly proxyMode: 'shared' | 'dedicated';
  readonly log: Logger;
}

/**
 * ztunnel's `cert_fetcher` (`ztunnel:src/state.rs`): when a workload appears on this node, its
 * identity's certificate is fetched at warm-up priority so the first connection does not wait
 * for the CA; when the last local workload of an identity leaves, the certificate is forgotten.
 * Only HBONE-capable workloads get one (a plaintext-only workload never terminates mTLS).
 */
export class CertPrefetcher {
  readonly #o: CertPrefetcherOptions;
  #unsubscribe: (() => void) | undefined;

  constructor(options: CertPrefetcherOptions) {
    this.#o = options;
  }

  /** Subscribes to workload changes and prefetches for the local workloads already known. */
  attach(): void {
    if (this.#unsubscribe) return;
    this.#unsubscribe = this.#o.updater.on('workloadsChanged', ({ upserted, removed }) => {
      for (const w of upserted) this.#prefetch(w);
      for (const w of removed) this.#maybeForget(w);
    });
    for (const w of this.#o.state.workloads.all()) this.#prefetch(w);
  }

  detach(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
  }

  #isLocal(w: Workload): boolean {
    const node = this.#o.state.localNode;
    return node === undefined || w.node === node;
  }

  #prefetch(w: Workload): void {
    if (this.#o.proxyMode !== 'shared' || !this.#isLocal(w)) return;
    if (w.protocol !== 'HBONE' && !w.nativeTunnel) return;
    this.#o.log.debug({ identity: formatIdentity(w.identity), workload: w.uid }, 'prefetching certificate');
    this.#o.certificates.prefetch(w.identity);
  }

  #maybeForget(w: Workload): void {
    if (!this.#isLocal(w)) return;
    if (this.#o.state.workloads.hasNodeLocalIdentity(w.namespace, w.serviceAccount)) return;
    this.#o.log.debug(
      { identity: formatIdentity(w.identity) },
      'last local workload gone; forgetting certificate',
    );
    this.#o.certificates.forget(w.identity);
  }
}

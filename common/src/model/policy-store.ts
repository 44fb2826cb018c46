import type { Authorization } from './authorization.ts';
import { addToSet, removeFromSet } from './workload-store.ts';

/** Read access to the policies; what ProxyState hands to anything but the updater. */
export interface ReadonlyPolicyStore {
  readonly size: number;
  get(key: string): Authorization | undefined;
  keysByNamespace(namespace: string): ReadonlySet<string>;
  all(): IterableIterator<Authorization>;
}

const NONE: ReadonlySet<string> = new Set();

/** The namespace a policy is indexed under: `""` for GLOBAL, none for WORKLOAD_SELECTOR (spec §3.5). */
function indexNamespace(p: Authorization): string | undefined {
  switch (p.scope) {
    case 'Global':
      return '';
    case 'Namespace':
      return p.namespace;
    case 'WorkloadSelector':
      return undefined;
  }
}

/**
 * All L4 policies by `ns/name`, plus the keys of NAMESPACE-scope policies per namespace and of
 * GLOBAL-scope ones under `""` (ztunnel `PolicyStore`). Selector policies are reached through
 * `Workload.authorizationPolicies`. Mutated only through ProxyStateUpdater.
 */
export class PolicyStore implements ReadonlyPolicyStore {
  readonly #byKey = new Map<string, Authorization>();
  readonly #byNamespace = new Map<string, Set<string>>();

  get size(): number {
    return this.#byKey.size;
  }

  /** Inserts or replaces; a replaced policy is unindexed first, so a scope change cannot leave a stale entry. */
  insert(p: Authorization): Authorization | undefined {
    const previous = this.remove(p.key);
    this.#byKey.set(p.key, p);
    const ns = indexNamespace(p);
    if (ns !== undefined) addToSet(this.#byNamespace, ns, p.key);
    return previous;
  }

  remove(key: string): Authorization | undefined {
    const prev = this.#byKey.get(key);
    if (prev === undefined) return undefined;
    this.#byKey.delete(key);
    const ns = indexNamespace(prev);
    if (ns !== undefined) removeFromSet(this.#byNamespace, ns, key);
    return prev;
  }

  get(key: string): Authorization | undefined {
    return this.#byKey.get(key);
  }

  /** Keys of NAMESPACE-scope policies in `namespace`, or of GLOBAL ones for `""`. */
  keysByNamespace(namespace: string): ReadonlySet<string> {
    return this.#byNamespace.get(namespace) ?? NONE;
  }

  all(): IterableIterator<Authorization> {
    return this.#byKey.values();
  }
}

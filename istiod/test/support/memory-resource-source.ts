import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { ResourceSource, ResourcesUpdated, XdsResource } from '../../src/xds/resources.ts';

/** One batch of edits to a type: resources to add or replace (name → encoded bytes) and names to delete. */
export interface MemoryEdit {
  readonly set?: Readonly<Record<string, Uint8Array>>;
  readonly remove?: readonly string[];
  readonly aliases?: Readonly<Record<string, readonly string[]>>;
}

/**
 * A ResourceSource held in memory for the xDS server's tests: the same contract as the ambient
 * index (state updated first, then one `updated` event naming what changed), without Kubernetes.
 * Versions are content hashes, so setting identical bytes is not a change.
 */
export class MemoryResourceSource
  extends EventEmitter<{ updated: [update: ResourcesUpdated] }>
  implements ResourceSource
{
  readonly #types = new Map<string, Map<string, XdsResource>>();

  constructor(typeUrls: readonly string[]) {
    super();
    for (const t of typeUrls) this.#types.set(t, new Map());
  }

  typeUrls(): readonly string[] {
    return [...this.#types.keys()];
  }

  get(typeUrl: string, name: string): XdsResource | undefined {
    return this.#types.get(typeUrl)?.get(name);
  }

  names(typeUrl: string): Iterable<string> {
    return this.#types.get(typeUrl)?.keys() ?? [];
  }

  /** Applies the edit, then emits one ResourcesUpdated with the names that really changed. */
  apply(typeUrl: string, edit: MemoryEdit): ReadonlySet<string> {
    const store = this.#types.get(typeUrl);
    if (!store) throw new Error(`type ${typeUrl} is not served by this source`);
    const changed = new Set<string>();
    for (const [name, value] of Object.entries(edit.set ?? {})) {
      const version = createHash('sha256').update(value).digest('hex').slice(0, 16);
      if (store.get(name)?.version === version) continue;
      const aliases = edit.aliases?.[name];
      store.set(name, { name, version, value, ...(aliases && { aliases }) });
      changed.add(name);
    }
    for (const name of edit.remove ?? []) {
      if (store.delete(name)) changed.add(name);
    }
    if (changed.size > 0) this.emit('updated', { typeUrl, names: changed });
    return changed;
  }

  size(typeUrl: string): number {
    return this.#types.get(typeUrl)?.size ?? 0;
  }
}

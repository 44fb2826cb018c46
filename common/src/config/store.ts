import { EventEmitter } from 'node:events';
import type { Kind } from './kinds.ts';
import type { AnyObject, ObjectsByKind } from './objects.ts';

/** Names one object: its kind, namespace ('' for cluster-scoped kinds) and name. */
export interface ObjectRef {
  readonly kind: Kind | string;
  readonly namespace: string;
  readonly name: string;
}

export function formatRef(ref: ObjectRef): string {
  return ref.namespace === '' ? `${ref.kind}/${ref.name}` : `${ref.kind}/${ref.namespace}/${ref.name}`;
}

/** One object's change; `old` is absent on add, `new` on delete. */
export interface ConfigChange<K extends Kind = Kind> {
  readonly kind: K;
  readonly key: string;
  readonly old?: ObjectsByKind[K];
  readonly new?: ObjectsByKind[K];
}

/** A malformed object that was refused, and why. Kept until the object is fixed or deleted. */
export interface Rejection {
  readonly ref: ObjectRef;
  readonly reason: string;
  readonly source: string;
  readonly at: string;
}

interface StoreEvents {
  changes: [changes: readonly ConfigChange[]];
  rejected: [rejection: Rejection];
}

/** `namespace/name`, or `name` for cluster-scoped objects. */
export function objectKey(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

/**
 * The validated Kubernetes objects istiod knows, by kind. Sources are its only writers; the
 * ambient index and the CA read it. Changes are emitted in batches (one per watch event, one per
 * relist), so a relist of 10,000 pods is one notification, not 10,000.
 */
export class ConfigStore extends EventEmitter<StoreEvents> {
  readonly #byKind = new Map<Kind, Map<string, AnyObject>>();
  readonly #rejections = new Map<string, Rejection>();

  #collection<K extends Kind>(kind: K): Map<string, ObjectsByKind[K]> {
    let c = this.#byKind.get(kind);
    if (!c) {
      c = new Map();
      this.#byKind.set(kind, c);
    }
    return c as Map<string, ObjectsByKind[K]>;
  }

  get<K extends Kind>(kind: K, namespace: string, name: string): ObjectsByKind[K] | undefined {
    return this.#collection(kind).get(objectKey(namespace, name));
  }

  /** All objects of a kind, or of a kind in one namespace. */
  list<K extends Kind>(kind: K, namespace?: string): ObjectsByKind[K][] {
    const all = [...this.#collection(kind).values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  size(kind: Kind): number {
    return this.#collection(kind).size;
  }

  /**
   * Applies a batch of upserts and deletes from one source event. Objects equal to what is
   * stored (same resourceVersion, or same content when there is none) produce no change.
   */
  apply(batch: { upsert?: readonly AnyObject[]; delete?: readonly ObjectRef[] }): readonly ConfigChange[] {
    const changes: ConfigChange[] = [];
    for (const obj of batch.upsert ?? []) {
      const kind = obj.kind as Kind;
      const key = objectKey(obj.metadata.namespace, obj.metadata.name);
      const coll = this.#collection(kind);
      const old = coll.get(key);
      this.#rejections.delete(
        formatRef({ kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name }),
      );
      if (old && sameObject(old, obj)) continue;
      coll.set(key, obj);
      changes.push(old ? { kind, key, old, new: obj } : { kind, key, new: obj });
    }
    for (const ref of batch.delete ?? []) {
      const kind = ref.kind as Kind;
      const key = objectKey(ref.namespace, ref.name);
      this.#rejections.delete(formatRef(ref));
      const coll = this.#collection(kind);
      const old = coll.get(key);
      if (!old) continue;
      coll.delete(key);
      changes.push({ kind, key, old });
    }
    if (changes.length > 0) this.emit('changes', changes);
    return changes;
  }

  /**
   * Replaces everything of one kind that came from a full list (a relist after 410 Gone, or a
   * rescan of the manifests directory): what the list lacks is deleted.
   *
   * `keep` names objects (by {@link objectKey}) the list saw but refused as malformed: their
   * stored version stays as it is (last known good) and their rejection stays recorded.
   */
  replaceKind(
    kind: Kind,
    objects: readonly AnyObject[],
    options: { readonly keep?: ReadonlySet<string> } = {},
  ): readonly ConfigChange[] {
    const listed = new Set(objects.map((o) => objectKey(o.metadata.namespace, o.metadata.name)));
    const deletes: ObjectRef[] = [];
    for (const [key, obj] of this.#collection(kind)) {
      if (!listed.has(key) && !options.keep?.has(key))
        deletes.push({ kind, namespace: obj.metadata.namespace ?? '', name: obj.metadata.name });
    }
    return this.apply({ upsert: objects, delete: deletes });
  }

  /**
   * Records a malformed object. The rest of the configuration is unaffected; an earlier valid
   * version of the same object is kept (last known good), as istiod keeps serving it.
   */
  reject(ref: ObjectRef, reason: string, source: string): void {
    const r: Rejection = { ref, reason, source, at: new Date().toISOString() };
    this.#rejections.set(formatRef(ref), r);
    this.emit('rejected', r);
  }

  /**
   * Forgets a rejection whose object is gone from its source without ever having been valid (so
   * no apply will clear it). Returns whether there was one.
   */
  clearRejection(ref: ObjectRef): boolean {
    return this.#rejections.delete(formatRef(ref));
  }

  rejections(): Rejection[] {
    return [...this.#rejections.values()];
  }
}

function sameObject(a: AnyObject, b: AnyObject): boolean {
  if (a === b) return true;
  const ra = a.metadata.resourceVersion;
  const rb = b.metadata.resourceVersion;
  if (ra !== undefined && rb !== undefined) return ra === rb;
  return JSON.stringify(a) === JSON.stringify(b);
}

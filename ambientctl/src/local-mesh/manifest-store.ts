/**
 * The manifests directory as the local mesh's API server: one YAML file per object
 * (`<plural>/<namespace>/<name>.yaml`, cluster-scoped kinds without the namespace level), written
 * atomically (a hidden temporary file renamed over the target, so a reader sees the old or the new
 * file, never half of one; readers skip hidden files).
 *
 * Pods have a second writer: each node's istio-cni agent sets `ambient.istio.io/redirection` in
 * the pod's document. Pod documents are therefore edited, never rewritten: read, change the fields
 * this side owns through the yaml Document API, write back; the agent's annotation survives.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { type Document, isMap, parseDocument, stringify } from 'yaml';

/** The directory name of each kind the store writes. */
const PLURALS: Readonly<Record<string, string>> = {
  Namespace: 'namespaces',
  Pod: 'pods',
  Service: 'services',
  AuthorizationPolicy: 'authorizationpolicies',
  PeerAuthentication: 'peerauthentications',
};

/** A Kubernetes object as the store writes it. */
export interface StoredObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string } & Record<string, unknown>;
  readonly [field: string]: unknown;
}

let tmpSeq = 0;

export class ManifestStore {
  readonly dir: string;
  /** Writes to one file happen one at a time (a pod's creation, status and deletion race otherwise). */
  readonly #queues = new Map<string, Promise<unknown>>();

  constructor(dir: string) {
    this.dir = dir;
  }

  pathOf(kind: string, namespace: string | undefined, name: string): string {
    const plural = PLURALS[kind];
    if (plural === undefined) throw new Error(`the manifest store does not hold kind ${kind}`);
    return namespace === undefined || kind === 'Namespace'
      ? join(this.dir, plural, `${name}.yaml`)
      : join(this.dir, plural, namespace, `${name}.yaml`);
  }

  /** Writes (creates or replaces) an object's file. */
  write(object: StoredObject, header?: string): Promise<void> {
    const path = this.pathOf(object.kind, object.metadata.namespace, object.metadata.name);
    const text = `${header === undefined ? '' : `# ${header}\n`}${stringify(object)}`;
    return this.#serial(path, () => writeAtomic(path, text));
  }

  /** Removes an object's file; true when it existed. */
  remove(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    const path = this.pathOf(kind, namespace, name);
    return this.#serial(path, async () => {
      const existed = existsSync(path);
      await rm(path, { force: true });
      return existed;
    });
  }

  /**
   * Read-modify-write of a Pod document: `edit` changes the parsed Document in place (only the
   * fields the pod runner owns). False when the file is gone or holds no such pod.
   */
  updatePod(namespace: string, name: string, edit: (doc: Document) => void): Promise<boolean> {
    const path = this.pathOf('Pod', namespace, name);
    return this.#serial(path, async () => {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch {
        return false;
      }
      const doc = parseDocument(text);
      if (doc.errors.length > 0 || !isMap(doc.contents) || doc.get('kind') !== 'Pod') return false;
      edit(doc);
      await writeAtomic(path, String(doc));
      return true;
    });
  }

  /** A pod's document as plain data (what the agent and istiod see), or undefined. */
  readPod(namespace: string, name: string): Record<string, unknown> | undefined {
    const path = this.pathOf('Pod', namespace, name);
    try {
      const doc = parseDocument(readFileSync(path, 'utf8'));
      const value: unknown = doc.toJS();
      return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }

  #serial<T>(path: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(path) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const settled = run.catch(() => {});
    this.#queues.set(path, settled);
    void settled.then(() => {
      if (this.#queues.get(path) === settled) this.#queues.delete(path);
    });
    return run;
  }
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${tmpSeq++}.tmp`);
  await writeFile(tmp, text, { mode: 0o644 });
  await rename(tmp, path);
}

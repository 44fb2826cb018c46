/**
 * What the agent knows about pods on this node: every sandbox the plugin reported (its netns path
 * and IPs, also for pods that were not ambient then, so a namespace labelled later can enroll
 * them), and which of them are enrolled. Persisted to `<runDir>/pod-cache.json` after each change,
 * so a restarted agent can hand ztunnel the same snapshot and repair the same pods' rules without
 * the plugin telling it again. It is also the ZDS snapshot provider.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ZdsSnapshotEntry, ZdsWorkloadInfo } from '@ambient/common/zds';
import { AgentError } from './errors.ts';
import { writeFileAtomic } from './install/atomic-file.ts';

export const POD_CACHE_FILE_NAME = 'pod-cache.json';
const CACHE_VERSION = 1;

export interface PodCacheEntry {
  readonly uid: string;
  readonly info: ZdsWorkloadInfo;
  /** The sandbox netns path the plugin reported (or one found by scanning /proc). */
  readonly netnsPath: string | undefined;
  readonly ips: readonly string[];
  /** Rules applied and ZDS add attempted: the pod belongs in every ZDS snapshot. */
  readonly enrolled: boolean;
}

export class PodCache {
  readonly #path: string | undefined;
  readonly #byUid = new Map<string, PodCacheEntry>();
  #writing: Promise<void> = Promise.resolve();

  /** `runDir` undefined keeps the cache in memory only. */
  constructor(runDir: string | undefined) {
    this.#path = runDir === undefined ? undefined : join(runDir, POD_CACHE_FILE_NAME);
  }

  /** Reads the persisted cache, if any. Throws `POD_CACHE_INVALID` for a file that does not parse. */
  load(): number {
    if (this.#path === undefined || !existsSync(this.#path)) return 0;
    let doc: { version?: unknown; pods?: unknown };
    try {
      doc = JSON.parse(readFileSync(this.#path, 'utf8')) as typeof doc;
    } catch (err) {
      throw new AgentError('POD_CACHE_INVALID', `pod cache ${this.#path} is not valid JSON`, { cause: err });
    }
    if (doc.version !== CACHE_VERSION || !Array.isArray(doc.pods)) {
      throw new AgentError(
        'POD_CACHE_INVALID',
        `pod cache ${this.#path} has version ${String(doc.version)}, not ${CACHE_VERSION}`,
      );
    }
    for (const p of doc.pods as PodCacheEntry[]) {
      if (typeof p?.uid === 'string' && typeof p.info?.name === 'string') this.#byUid.set(p.uid, p);
    }
    return this.#byUid.size;
  }

  get(uid: string): PodCacheEntry | undefined {
    return this.#byUid.get(uid);
  }

  /** The entry of a pod by namespace and name (the plugin may not know the UID). */
  find(namespace: string, name: string): PodCacheEntry | undefined {
    for (const e of this.#byUid.values()) {
      if (e.info.namespace === namespace && e.info.name === name) return e;
    }
    return undefined;
  }

  entries(): PodCacheEntry[] {
    return [...this.#byUid.values()];
  }

  enrolled(): PodCacheEntry[] {
    return this.entries().filter((e) => e.enrolled);
  }

  /** Records or updates a pod, then persists. */
  async upsert(entry: PodCacheEntry): Promise<void> {
    // A sandbox recreated under the same name gets a new UID: forget the old one's netns.
    for (const [uid, e] of this.#byUid) {
      if (
        uid !== entry.uid &&
        e.info.namespace === entry.info.namespace &&
        e.info.name === entry.info.name &&
        !e.enrolled
      ) {
        this.#byUid.delete(uid);
      }
    }
    this.#byUid.set(entry.uid, entry);
    await this.#persist();
  }

  async delete(uid: string): Promise<void> {
    if (this.#byUid.delete(uid)) await this.#persist();
  }

  /** The ZDS snapshot: every enrolled pod, its netns as a path the server opens (Keep when gone). */
  snapshot(): ZdsSnapshotEntry[] {
    return this.enrolled().map((e) => ({ uid: e.uid, info: e.info, netns: e.netnsPath }));
  }

  /** Writes are serialized so the file always holds the latest state. */
  #persist(): Promise<void> {
    const path = this.#path;
    if (path === undefined) return Promise.resolve();
    const text = `${JSON.stringify({ version: CACHE_VERSION, pods: this.entries() }, null, 1)}\n`;
    this.#writing = this.#writing
      .catch(() => {})
      .then(async () => {
        await writeFileAtomic(path, text, { mode: 0o600 });
      });
    return this.#writing;
  }
}

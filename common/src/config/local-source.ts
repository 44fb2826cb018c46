import { type Dirent, type FSWatcher, watch } from 'node:fs';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { extname, join, relative } from 'node:path';
import type { Registry } from 'prom-client';
import { errorMessage, MeshError } from '../errors.ts';
import type { StopContext } from '../lifecycle.ts';
import { type Logger, logger as processLogger } from '../log.ts';
import { isKind, KIND_NAMES, type Kind } from './kinds.ts';
import { type ParsedManifest, parseManifest } from './manifests.ts';
import { type ConfigMetrics, configMetrics } from './metrics.ts';
import type { AnyObject } from './objects.ts';
import type { ConfigSource } from './source.ts';
import { type ConfigStore, formatRef, type ObjectRef, objectKey } from './store.ts';
import { validateObject } from './validate.ts';

export type LocalSourceErrorCode = 'MANIFEST_DIR_UNREADABLE';
export class LocalSourceError extends MeshError<LocalSourceErrorCode> {}

/** The `kind` rejections of unparseable documents are filed under (their real kind is unknown). */
export const MANIFEST_REF_KIND = 'Manifest';

const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

export interface LocalSourceOptions {
  /** The manifests directory, read recursively. */
  readonly dir: string;
  readonly store: ConfigStore;
  /** Where `istiod_config_rejected_total` is registered (never the global registry). */
  readonly registry: Registry;
  readonly log?: Logger;
  /** The kinds this source owns: each is replaced by what the directory holds. All by default. */
  readonly kinds?: readonly Kind[];
  /** For namespaced objects that name none, as `kubectl apply` does; `default` by default. */
  readonly defaultNamespace?: string;
  /** Quiet time after a change before rescanning (editors write in several steps); 100 ms by default. */
  readonly debounceMs?: number;
  /** Rescan this often even without change events, in case fs.watch missed one; 10 s by default. */
  readonly rescanIntervalMs?: number;
}

export interface LocalSourceStatus {
  readonly files: number;
  readonly objects: number;
  readonly rejected: number;
  readonly scans: number;
  readonly lastScanAt: string | undefined;
  readonly lastError: string | undefined;
}

interface Pending {
  readonly ref: ObjectRef;
  readonly reason: string;
  readonly code: string;
}

interface Located {
  readonly object: AnyObject;
  readonly file: string;
  readonly line: number;
}

/**
 * A directory of manifests as a configuration source (istiod's file-based config, for a mesh
 * without Kubernetes and for tests). The whole directory is the desired state of each kind it
 * owns: a rescan replaces the kind in the store, so a deleted file deletes its objects.
 *
 * A malformed document is rejected alone, with its file and line. A file that does not parse
 * keeps its objects as they were (last known good) rather than deleting them: a half-saved edit
 * must not drop a namespace's policies. An object defined in two files is rejected naming both,
 * and its earlier version, if any, is kept.
 *
 * Changes are noticed through fs.watch (recursive), debounced, with a periodic rescan as a safety
 * net; hidden files and directories (editor swap files, a ConfigMap volume's `..data` internals)
 * are skipped, so editor write-and-rename saves and ConfigMap updates both land as one rescan.
 */
export class LocalSource implements ConfigSource {
  readonly name = 'local-source';
  readonly #o: LocalSourceOptions;
  readonly #log: Logger;
  readonly #metrics: ConfigMetrics;
  readonly #kinds: readonly Kind[];
  // Per file: its text, what it parsed to and each document's validation. An unchanged file
  // yields the same object instances on every scan, so the store sees them as unchanged at once
  // instead of comparing 10,000 objects field by field.
  readonly #parsed = new Map<
    string,
    { text: string; parsed: ParsedManifest; validated: Map<number, ReturnType<typeof validateObject>> }
  >();
  /** `kind|namespace/name` → file, for the objects applied by the last scan. */
  #provenance = new Map<string, string>();
  #rejections = new Map<string, Pending>();
  /** One non-recursive watcher per directory of the tree (see {@link LocalSource.#syncWatches}). */
  readonly #watchers = new Map<string, FSWatcher>();
  #debounce: NodeJS.Timeout | undefined;
  #interval: NodeJS.Timeout | undefined;
  #scanning: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #synced = false;
  #scans = 0;
  #files = 0;
  #objects = 0;
  #lastScanAt: string | undefined;
  #lastError: string | undefined;
  #resolveSynced!: () => void;
  readonly #syncedPromise: Promise<void>;

  constructor(options: LocalSourceOptions) {
    this.#o = options;
    this.#log = options.log ?? processLogger('config');
    this.#metrics = configMetrics(options.registry);
    const wanted = new Set(options.kinds ?? KIND_NAMES);
    this.#kinds = KIND_NAMES.filter((k) => wanted.has(k));
    this.#syncedPromise = new Promise((resolve) => {
      this.#resolveSynced = resolve;
    });
  }

  /** Reads the directory once (failing if it is not a readable directory), then watches it. */
  async start(): Promise<void> {
    try {
      const s = await stat(this.#o.dir);
      if (!s.isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new LocalSourceError(
        'MANIFEST_DIR_UNREADABLE',
        `manifests directory ${this.#o.dir} cannot be read: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    await this.rescan();
    if (this.#stopped) return;
    this.#interval = setInterval(() => void this.rescan(), this.#o.rescanIntervalMs ?? 10_000);
    this.#interval.unref();
  }

  stop(_ctx?: StopContext): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#debounce);
    clearInterval(this.#interval);
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
    return this.#scanning ?? Promise.resolve();
  }

  synced(): Promise<void> {
    return this.#syncedPromise;
  }

  /** Synced, running, and the last scan could read the directory. */
  get healthy(): boolean {
    return this.#synced && !this.#stopped && this.#lastError === undefined;
  }

  status(): LocalSourceStatus {
    return {
      files: this.#files,
      objects: this.#objects,
      rejected: this.#rejections.size,
      scans: this.#scans,
      lastScanAt: this.#lastScanAt,
      lastError: this.#lastError,
    };
  }

  /** Scans now; a call during a scan runs one more scan after it. Resolves when the store is updated. */
  rescan(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (this.#scanning) {
      this.#again = true;
      return this.#scanning;
    }
    this.#scanning = (async () => {
      try {
        do {
          this.#again = false;
          await this.#scan();
        } while (this.#again && !this.#stopped);
      } finally {
        this.#scanning = undefined;
      }
    })();
    return this.#scanning;
  }

  /**
   * Watches each directory of the tree (as the last scan found it) without `recursive`. Node's
   * recursive watch on Linux puts an inotify watch on every file, and loses a file for good once
   * it is replaced by a rename (an editor's save, a ConfigMap update): later saves of it raise no
   * event. A directory's own watch reports its entries being written, created, renamed or removed.
   */
  #syncWatches(dirs: readonly string[]): void {
    if (this.#stopped) return;
    const wanted = new Set(dirs);
    for (const [d, w] of this.#watchers) {
      if (wanted.has(d)) continue;
      w.close();
      this.#watchers.delete(d);
    }
    for (const d of wanted) {
      if (this.#watchers.has(d)) continue;
      try {
        const w = watch(d, { persistent: false }, () => this.#changed());
        w.on('error', (err) => {
          // The directory went away or was replaced: the next scan notices and re-watches.
          this.#log.warn(
            { dir: d, err: errorMessage(err) },
            'manifests watch failed; relying on the periodic rescan',
          );
          w.close();
          if (this.#watchers.get(d) === w) this.#watchers.delete(d);
          this.#changed();
        });
        this.#watchers.set(d, w);
      } catch (err) {
        this.#log.warn(
          { dir: d, err: errorMessage(err) },
          'cannot watch a manifests directory; relying on the periodic rescan',
        );
      }
    }
  }

  #changed(): void {
    if (this.#stopped) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.rescan(), this.#o.debounceMs ?? 100);
  }

  async #scan(): Promise<void> {
    const dir = this.#o.dir;
    let files: string[];
    const dirs: string[] = [];
    try {
      files = await listManifestFiles(dir, dirs);
    } catch (err) {
      // A vanished or unreadable directory is more likely a remount than an intent to delete
      // everything: keep serving what was loaded.
      const msg = `manifests directory ${dir} cannot be read: ${errorMessage(err)}`;
      if (this.#lastError !== msg)
        this.#log.error(
          { dir, err: errorMessage(err) },
          'cannot scan the manifests directory; keeping the loaded configuration',
        );
      this.#lastError = msg;
      return;
    }
    const desired = new Map<Kind, Map<string, Located>>(this.#kinds.map((k) => [k, new Map()]));
    const keep = new Map<Kind, Set<string>>(this.#kinds.map((k) => [k, new Set()]));
    const rejections = new Map<string, Pending>();
    const duplicates = new Map<string, { kind: Kind; key: string; places: string[] }>();
    const unparseableFiles = new Set<string>();
    const reject = (ref: ObjectRef, reason: string, code: string) =>
      rejections.set(formatRef(ref), { ref, reason, code });
    const keepKey = (kind: string, key: string) => {
      if (isKind(kind)) keep.get(kind)?.add(key);
    };

    for (const path of files) {
      const file = relative(dir, path);
      const parsed = await this.#read(path);
      if (typeof parsed === 'string') {
        unparseableFiles.add(file);
        reject({ kind: MANIFEST_REF_KIND, namespace: '', name: file }, `${file}: ${parsed}`, 'unreadable');
        continue;
      }
      for (const p of parsed.problems) {
        unparseableFiles.add(file);
        reject(
          { kind: MANIFEST_REF_KIND, namespace: '', name: `${file}:${p.line}` },
          `${file}:${p.line}: ${p.reason}`,
          'yaml_syntax',
        );
      }
      const validated = this.#parsed.get(path)?.validated;
      for (const [index, { line, object }] of parsed.objects.entries()) {
        let r = validated?.get(index);
        if (r === undefined) {
          r = validateObject(object, { defaultNamespace: this.#o.defaultNamespace ?? 'default' });
          validated?.set(index, r);
        }
        if (!r.ok) {
          const ref =
            r.ref.name === '' || r.ref.kind === ''
              ? { kind: MANIFEST_REF_KIND, namespace: '', name: `${file}:${line}` }
              : r.ref;
          reject(ref, `${file}:${line}: ${r.reason}`, r.code);
          keepKey(r.ref.kind, objectKey(r.ref.namespace, r.ref.name));
          continue;
        }
        const kind = r.object.kind as Kind;
        const coll = desired.get(kind);
        if (!coll) continue; // a kind another source owns
        const key = objectKey(r.object.metadata.namespace, r.object.metadata.name);
        const dupKey = `${kind}|${key}`;
        const first = coll.get(key);
        const dup = duplicates.get(dupKey);
        if (first || dup) {
          const d = dup ?? { kind, key, places: [`${first?.file}:${first?.line}`] };
          d.places.push(`${file}:${line}`);
          duplicates.set(dupKey, d);
          coll.delete(key);
          continue;
        }
        coll.set(key, { object: r.object, file, line });
      }
    }

    for (const d of duplicates.values()) {
      const [namespace, name] = d.key.includes('/') ? (d.key.split('/') as [string, string]) : ['', d.key];
      const ref = { kind: d.kind, namespace, name };
      reject(ref, `${formatRef(ref)} is defined more than once: in ${d.places.join(' and ')}`, 'duplicate');
      keepKey(d.kind, d.key);
    }
    // An object with a malformed definition anywhere keeps its last good version, even if another
    // file defines it well: which one is meant is as unclear as for a duplicate.
    for (const [kind, keys] of keep) {
      for (const key of keys) desired.get(kind)?.delete(key);
    }
    // A file that does not parse keeps the objects it last provided, unless defined elsewhere now.
    const provenance = new Map<string, string>();
    for (const [pk, file] of this.#provenance) {
      if (!unparseableFiles.has(file)) continue;
      const [kind, key] = pk.split('|') as [Kind, string];
      if (desired.get(kind)?.has(key)) continue;
      keepKey(kind, key);
      provenance.set(pk, file);
    }
    if (this.#stopped) return;

    let objects = 0;
    let changes = 0;
    for (const kind of this.#kinds) {
      const located = [...(desired.get(kind) as Map<string, Located>).values()];
      for (const l of located)
        provenance.set(`${kind}|${objectKey(l.object.metadata.namespace, l.object.metadata.name)}`, l.file);
      changes += this.#o.store.replaceKind(
        kind,
        located.map((l) => l.object),
        { keep: keep.get(kind) },
      ).length;
      objects += this.#o.store.size(kind);
    }
    this.#provenance = provenance;
    this.#syncWatches(dirs);
    this.#report(rejections);
    this.#scans++;
    this.#files = files.length;
    this.#objects = objects;
    this.#lastScanAt = new Date().toISOString();
    if (this.#lastError !== undefined) this.#log.info({ dir }, 'manifests directory readable again');
    this.#lastError = undefined;
    if (changes > 0 || !this.#synced) {
      this.#log.info(
        { dir, files: files.length, objects, changes, rejected: rejections.size },
        'manifests applied',
      );
    }
    if (!this.#synced) {
      this.#synced = true;
      this.#resolveSynced();
    }
  }

  /** Records new rejections (logged and counted once each) and forgets those that went away. */
  #report(next: Map<string, Pending>): void {
    const { store } = this.#o;
    for (const [k, p] of this.#rejections) {
      if (!next.has(k)) store.clearRejection(p.ref);
    }
    for (const [k, p] of next) {
      const prev = this.#rejections.get(k);
      if (prev && prev.reason === p.reason) continue;
      store.reject(p.ref, p.reason, `file:${this.#o.dir}`);
      this.#metrics.rejected.inc({ kind: p.ref.kind, reason_code: p.code });
      this.#log.warn(
        { object: formatRef(p.ref), reason: p.reason, code: p.code },
        'rejected malformed manifest',
      );
    }
    this.#rejections = next;
  }

  /** A file's parsed documents (cached while its text is unchanged), or why it could not be read. */
  async #read(path: string): Promise<ParsedManifest | string> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      this.#parsed.delete(path);
      return `cannot be read: ${errorMessage(err)}`;
    }
    const cached = this.#parsed.get(path);
    if (cached?.text === text) return cached.parsed;
    const parsed = parseManifest(text);
    this.#parsed.set(path, { text, parsed, validated: new Map() });
    return parsed;
  }
}

/**
 * The manifest files under `dir`, recursively and sorted (so which of two duplicates is named
 * first is stable). Hidden entries are skipped; symbolic links are followed, each directory once.
 * The directories walked (`dir` first) are appended to `dirs` when given.
 */
export async function listManifestFiles(dir: string, dirs?: string[]): Promise<string[]> {
  const out: string[] = [];
  const seen = new Set<string>();
  const walk = async (d: string, top: boolean): Promise<void> => {
    const real = await realpath(d);
    if (seen.has(real)) return;
    seen.add(real);
    let entries: Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch (err) {
      if (top) throw err;
      return; // a subdirectory removed mid-scan
    }
    dirs?.push(d);
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      let isDir = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        const s = await stat(p).catch(() => undefined);
        isDir = s?.isDirectory() ?? false;
        isFile = s?.isFile() ?? false;
      }
      if (isDir) await walk(p, false);
      else if (isFile && MANIFEST_EXTENSIONS.has(extname(e.name).toLowerCase())) out.push(p);
    }
  };
  await walk(dir, true);
  return out.sort();
}

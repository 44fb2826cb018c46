/**
 * Keeps one kind of the ConfigStore equal to the API server's: LIST (paginated), then WATCH from
 * the list's resourceVersion, under a supervisor that never gives up and never spins:
 *
 * - a watch the server closes (its `timeoutSeconds`, a restart, a dropped connection) is opened
 *   again from the last resourceVersion seen, so no event is lost and nothing is relisted;
 * - 410 Gone (an HTTP status or an ERROR event) means that resourceVersion was compacted: relist
 *   at once and replace the kind, which deletes whatever was deleted while disconnected;
 * - any other error relists after an exponential backoff with jitter;
 * - a watch with no event or bookmark for `silenceMs` is torn down and opened again (the
 *   half-open connections behind kubernetes-client/javascript #958);
 * - a 404 on the list means the kind is not served (a CRD not installed): the kind counts as
 *   synced and empty, is logged once, and is listed again every `absentRetryMs`.
 *
 * A watch that ends quickly without delivering anything counts as a failure for the backoff, so a
 * server that accepts and closes watches at once is not hammered (#1933).
 */

import { type BackoffOptions, ExponentialBackoff } from '../backoff.ts';
import { apiVersionOf, type Kind } from '../config/kinds.ts';
import type { ConfigMetrics } from '../config/metrics.ts';
import type { AnyObject } from '../config/objects.ts';
import { type ConfigStore, formatRef, type ObjectRef, objectKey } from '../config/store.ts';
import { validateObject } from '../config/validate.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';
import { errorForStatus, type KubeClient, type WatchEvent } from './client.ts';
import { KubeError } from './errors.ts';
import type { KubeMetrics, RelistReason, WatchEndReason } from './metrics.ts';

/** The `source` recorded on rejections from the API server. */
export const KUBE_REJECTION_SOURCE = 'kubernetes';

export interface ReflectorSettings {
  /** Items per LIST page (`limit`). */
  readonly pageSize: number;
  /** The watch's `timeoutSeconds`; each watch asks for a random value in [t, 2t) so they do not end together. */
  readonly watchTimeoutSeconds: number;
  /** Tear a watch down after this long without any event or bookmark. */
  readonly silenceMs: number;
  /** Give up on a LIST request (all pages) after this long. */
  readonly listTimeoutMs: number;
  readonly backoff: BackoffOptions;
  /** How often a kind the server does not serve is looked for again. */
  readonly absentRetryMs: number;
  /** A watch that lasted at least this long (or delivered an event) proves the connection healthy. */
  readonly healthyWatchMs: number;
}

export interface ReflectorDeps {
  readonly kind: Kind;
  readonly client: KubeClient;
  readonly store: ConfigStore;
  readonly log: Logger;
  readonly metrics: KubeMetrics;
  readonly configMetrics: ConfigMetrics;
  readonly settings: ReflectorSettings;
  /**
   * Resolves when the kinds before this one have applied their first list: kinds are first
   * applied in {@link KINDS} order (namespaces before pods), though all are listed at once.
   */
  readonly after?: Promise<void>;
}

export type ReflectorPhase = 'idle' | 'listing' | 'watching' | 'backoff' | 'absent' | 'stopped';

/** What `/debug` and tests see of one kind. */
export interface ReflectorStatus {
  readonly kind: Kind;
  readonly phase: ReflectorPhase;
  readonly synced: boolean;
  readonly absent: boolean;
  /** The last resourceVersion seen (list, event or bookmark). */
  readonly resourceVersion: string;
  readonly lastError: string | undefined;
}

interface Tracked {
  readonly ref: ObjectRef;
  /** resourceVersion and reason: the same bad version is reported once, not on every relist. */
  readonly signature: string;
}

/** A watch ended without an error: why. */
type WatchOutcome = {
  readonly reason: 'closed' | 'silence';
  readonly delivered: number;
  readonly ms: number;
};

export class Reflector {
  readonly #d: ReflectorDeps;
  readonly #backoff: ExponentialBackoff;
  readonly #stop = new AbortController();
  readonly #rejected = new Map<string, Tracked>();
  #phase: ReflectorPhase = 'idle';
  #rv = '';
  #synced = false;
  #absent = false;
  #lastError: string | undefined;
  /** A 410 was answered with an immediate relist and no watch has been healthy since. */
  #goneSinceHealthy = false;
  #running: Promise<void> | undefined;
  #resolveSynced!: () => void;
  readonly #syncedPromise: Promise<void>;

  constructor(deps: ReflectorDeps) {
    this.#d = deps;
    this.#backoff = new ExponentialBackoff(deps.settings.backoff);
    this.#syncedPromise = new Promise((resolve) => {
      this.#resolveSynced = resolve;
    });
  }

  get kind(): Kind {
    return this.#d.kind;
  }

  /** Listed (or found absent) at least once. */
  get synced(): boolean {
    return this.#synced;
  }

  /** Synced and currently watching, or the kind is absent. */
  get healthy(): boolean {
    return this.#synced && (this.#phase === 'watching' || this.#phase === 'absent');
  }

  whenSynced(): Promise<void> {
    return this.#syncedPromise;
  }

  status(): ReflectorStatus {
    return {
      kind: this.#d.kind,
      phase: this.#phase,
      synced: this.#synced,
      absent: this.#absent,
      resourceVersion: this.#rv,
      lastError: this.#lastError,
    };
  }

  start(): void {
    this.#running ??= this.#run().catch((err: unknown) => {
      // The loop handles every error itself; reaching here is a bug, and it must be loud.
      this.#d.log.error({ kind: this.#d.kind, err }, 'list/watch loop crashed');
      this.#phase = 'stopped';
    });
  }

  /** Ends the loop: aborts the request in flight and resolves when the loop has returned. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#running;
    this.#phase = 'stopped';
  }

  get #stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  async #run(): Promise<void> {
    const { kind, metrics, log } = this.#d;
    let needList = true;
    let relistReason: RelistReason = 'initial';
    while (!this.#stopped) {
      let stage: 'list' | 'watch' = 'list';
      try {
        if (needList) {
          this.#phase = 'listing';
          metrics.relists.inc({ kind, reason: relistReason });
          await this.#listAndReplace();
          needList = false;
        }
        stage = 'watch';
        const outcome = await this.#watch();
        if (this.#stopped) break;
        metrics.watchRestarts.inc({ kind, reason: outcome.reason });
        if (outcome.reason === 'silence') {
          log.warn(
            { kind, silenceMs: this.#d.settings.silenceMs, resourceVersion: this.#rv },
            'watch went silent; re-watching',
          );
        } else {
          log.debug(
            { kind, resourceVersion: this.#rv, events: outcome.delivered },
            'watch closed by the server; re-watching',
          );
        }
        if (outcome.delivered > 0 || outcome.ms >= this.#d.settings.healthyWatchMs) this.#provedHealthy();
        else await this.#sleepBackoff('watch ended without delivering anything');
      } catch (err) {
        if (this.#stopped) break;
        this.#lastError = errorMessage(err);
        const gone = err instanceof KubeError && err.code === 'RESOURCE_GONE';
        const notServed = err instanceof KubeError && err.code === 'KIND_NOT_SERVED';
        if (stage === 'watch') {
          const reason: WatchEndReason = gone ? 'gone' : 'error';
          metrics.watchRestarts.inc({ kind, reason });
        }
        if (notServed && stage === 'list') {
          this.#markAbsent(err);
          await this.#sleep(jittered(this.#d.settings.absentRetryMs));
          relistReason = 'absent';
          needList = true;
          continue;
        }
        needList = true;
        relistReason = gone ? 'gone' : 'error';
        if (gone && !this.#goneSinceHealthy) {
          // The expected way a long disconnection ends: relist right away, once. Another 410
          // before a watch proved healthy goes through the backoff like any error.
          log.info({ kind, resourceVersion: this.#rv }, 'resourceVersion expired (410 Gone); relisting');
          this.#goneSinceHealthy = true;
          continue;
        }
        log.warn(
          { kind, err: this.#lastError, attempt: this.#backoff.attempts + 1 },
          'list/watch failed; relisting after backoff',
        );
        await this.#sleepBackoff(this.#lastError);
      }
    }
    this.#phase = 'stopped';
  }

  /** The connection delivered: failures before this one no longer count toward the backoff. */
  #provedHealthy(): void {
    this.#backoff.reset();
    this.#goneSinceHealthy = false;
  }

  async #sleepBackoff(why: string): Promise<void> {
    const ms = this.#backoff.next();
    this.#phase = 'backoff';
    this.#d.log.debug({ kind: this.#d.kind, delayMs: ms, why }, 'backing off');
    await this.#sleep(ms);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.#stopped) return resolve();
      const onAbort = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#stop.signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      this.#stop.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  #markAbsent(err: unknown): void {
    const { kind, log, metrics, store } = this.#d;
    if (!this.#absent) {
      log.warn(
        { kind, err: errorMessage(err), retryMs: this.#d.settings.absentRetryMs },
        'kind not served by the API server (CRD not installed?); treating it as empty',
      );
    }
    this.#absent = true;
    this.#phase = 'absent';
    metrics.absent.set({ kind }, 1);
    // The CRD went away (or never was): its objects are gone with it.
    store.replaceKind(kind, []);
    for (const t of this.#rejected.values()) store.clearRejection(t.ref);
    this.#rejected.clear();
    this.#markSynced();
  }

  #markSynced(): void {
    if (this.#synced) return;
    this.#synced = true;
    this.#d.metrics.synced.set({ kind: this.#d.kind }, 1);
    this.#resolveSynced();
  }

  async #listAndReplace(): Promise<void> {
    const { kind, store, log } = this.#d;
    const listed = await this.#listAll();
    if (this.#d.after) await this.#untilStopped(this.#d.after);
    if (this.#stopped) return;
    if (this.#absent) {
      log.info({ kind }, 'kind is served again');
      this.#absent = false;
      this.#d.metrics.absent.set({ kind }, 0);
    }
    const keep = new Set(listed.rejected.keys());
    const changes = store.replaceKind(kind, listed.valid, { keep });
    // Rejected before and now gone without ever having been valid: nothing else clears those.
    for (const [key, t] of this.#rejected) {
      if (!listed.rejected.has(key)) store.clearRejection(t.ref);
    }
    this.#rejected.clear();
    for (const [key, t] of listed.rejected) this.#rejected.set(key, t);
    this.#rv = listed.resourceVersion;
    log.info(
      {
        kind,
        objects: listed.valid.length,
        rejected: listed.rejected.size,
        changes: changes.length,
        pages: listed.pages,
        resourceVersion: listed.resourceVersion,
      },
      'listed',
    );
    this.#markSynced();
  }

  /** Every page of a list, validated; bounded by `listTimeoutMs`. */
  async #listAll(): Promise<{
    valid: AnyObject[];
    rejected: Map<string, Tracked>;
    resourceVersion: string;
    pages: number;
  }> {
    const { kind, client, settings } = this.#d;
    const request = this.#linkedController();
    const signal = request.controller.signal;
    const timer = setTimeout(() => {
      const err = new KubeError(
        'TRANSPORT',
        `list ${kind}: no complete answer within ${settings.listTimeoutMs}ms`,
        {
          retryable: true,
        },
      );
      request.controller.abort(err);
    }, settings.listTimeoutMs);
    const valid: AnyObject[] = [];
    const rejected = new Map<string, Tracked>();
    let cont: string | undefined;
    let resourceVersion = '';
    let pages = 0;
    try {
      do {
        const page = await client.list(kind, { limit: settings.pageSize, continue: cont, signal });
        pages++;
        resourceVersion = page.resourceVersion;
        cont = page.continue;
        for (const item of page.items) {
          const r = this.#validate(item, page.apiVersion);
          if (r.ok) valid.push(r.object);
          else {
            rejected.set(
              objectKey(r.ref.namespace, r.ref.name),
              this.#reject(r.ref, r.reason, r.code, r.resourceVersion),
            );
          }
        }
      } while (cont !== undefined);
    } catch (err) {
      // A timeout surfaces as an abort of the request; report the timeout instead.
      throw signal.aborted && !this.#stopped ? signal.reason : err;
    } finally {
      clearTimeout(timer);
      request.dispose();
    }
    return { valid, rejected, resourceVersion, pages };
  }

  /**
   * Watches from the current resourceVersion until the server closes the stream (resolves), the
   * watch goes silent (resolves), or something fails (throws).
   */
  async #watch(): Promise<WatchOutcome> {
    const { kind, client, settings } = this.#d;
    const request = this.#linkedController();
    const local = request.controller;
    const signal = local.signal;
    let silent = false;
    let timer: NodeJS.Timeout | undefined;
    const armSilence = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        silent = true;
        local.abort(new KubeError('API_STATUS', `watch ${kind}: no event for ${settings.silenceMs}ms`));
      }, settings.silenceMs);
    };
    const started = Date.now();
    let delivered = 0;
    armSilence();
    try {
      const timeoutSeconds =
        settings.watchTimeoutSeconds + Math.floor(Math.random() * settings.watchTimeoutSeconds);
      const events = await client.watch(kind, { resourceVersion: this.#rv, timeoutSeconds, signal });
      this.#phase = 'watching';
      for await (const ev of events) {
        armSilence();
        if (++delivered === 1) this.#provedHealthy();
        this.#handle(ev);
      }
      return { reason: 'closed', delivered, ms: Date.now() - started };
    } catch (err) {
      if (silent && !this.#stopped) return { reason: 'silence', delivered, ms: Date.now() - started };
      throw err;
    } finally {
      clearTimeout(timer);
      local.abort();
      request.dispose();
    }
  }

  /** A controller aborted with the reflector; `dispose` unlinks it so listeners do not pile up. */
  #linkedController(): { controller: AbortController; dispose: () => void } {
    const controller = new AbortController();
    const parent = this.#stop.signal;
    const onAbort = () => controller.abort(parent.reason);
    if (parent.aborted) controller.abort(parent.reason);
    else parent.addEventListener('abort', onAbort, { once: true });
    return { controller, dispose: () => parent.removeEventListener('abort', onAbort) };
  }

  /** Waits for `p`, or less if the reflector stops first. */
  async #untilStopped(p: Promise<void>): Promise<void> {
    const link = this.#linkedController();
    try {
      await Promise.race([
        p,
        new Promise<void>((resolve) =>
          link.controller.signal.addEventListener('abort', () => resolve(), { once: true }),
        ),
      ]);
    } finally {
      link.dispose();
    }
  }

  #handle(ev: WatchEvent): void {
    const { kind, store, metrics } = this.#d;
    metrics.events.inc({ kind, type: ev.type });
    if (ev.type === 'ERROR') {
      const st = ev.object;
      const code = typeof st.code === 'number' ? st.code : 0;
      throw errorForStatus(
        kind,
        'watch',
        code,
        typeof st.reason === 'string' ? st.reason : '',
        typeof st.message === 'string' ? st.message : 'ERROR event',
      );
    }
    const meta = ev.object.metadata;
    const rv =
      typeof meta === 'object' && meta !== null
        ? (meta as { resourceVersion?: unknown }).resourceVersion
        : undefined;
    if (ev.type === 'BOOKMARK') {
      if (typeof rv === 'string' && rv !== '') this.#rv = rv;
      return;
    }
    if (ev.type === 'DELETED') {
      const r = validateObject(this.#withKind(ev.object, undefined));
      const ref = r.ok ? refOf(r.object) : r.ref;
      if (ref.name !== '') {
        store.apply({ delete: [{ kind, namespace: ref.namespace, name: ref.name }] });
        this.#rejected.delete(objectKey(ref.namespace, ref.name));
      }
    } else {
      const r = this.#validate(ev.object, undefined);
      if (r.ok) {
        store.apply({ upsert: [r.object] });
        this.#rejected.delete(objectKey(r.object.metadata.namespace, r.object.metadata.name));
      } else {
        this.#rejected.set(
          objectKey(r.ref.namespace, r.ref.name),
          this.#reject(r.ref, r.reason, r.code, r.resourceVersion),
        );
      }
    }
    // Only after the event is applied: a relist from here must not skip it.
    if (typeof rv === 'string' && rv !== '') this.#rv = rv;
  }

  /** List items of built-in kinds come without kind and apiVersion; fill them from the list. */
  #withKind(raw: Record<string, unknown>, listApiVersion: string | undefined): Record<string, unknown> {
    if (raw.kind !== undefined && raw.apiVersion !== undefined) return raw;
    return {
      ...raw,
      kind: raw.kind ?? this.#d.kind,
      apiVersion: raw.apiVersion ?? listApiVersion ?? apiVersionOf(this.#d.kind),
    };
  }

  #validate(
    item: unknown,
    listApiVersion: string | undefined,
  ):
    | { ok: true; object: AnyObject }
    | { ok: false; ref: ObjectRef; reason: string; code: string; resourceVersion: string } {
    const { kind } = this.#d;
    const raw =
      typeof item === 'object' && item !== null && !Array.isArray(item)
        ? this.#withKind(item as Record<string, unknown>, listApiVersion)
        : item;
    const r = validateObject(raw);
    const meta = (raw as { metadata?: { resourceVersion?: unknown } } | null)?.metadata;
    const resourceVersion = typeof meta?.resourceVersion === 'string' ? meta.resourceVersion : '';
    if (!r.ok)
      return { ...r, ref: { ...r.ref, kind: r.ref.kind === '' ? kind : r.ref.kind }, resourceVersion };
    if (r.object.kind !== kind) {
      return {
        ok: false,
        ref: refOf(r.object),
        reason: `kind: ${JSON.stringify(r.object.kind)} in a ${kind} collection`,
        code: 'invalid_value',
        resourceVersion,
      };
    }
    return r;
  }

  #reject(ref: ObjectRef, reason: string, code: string, resourceVersion: string): Tracked {
    const { kind, store, log, configMetrics } = this.#d;
    const key = objectKey(ref.namespace, ref.name);
    const signature = `${resourceVersion}|${reason}`;
    const t: Tracked = { ref: { ...ref, kind }, signature };
    if (this.#rejected.get(key)?.signature === signature) return t;
    store.reject(t.ref, reason, KUBE_REJECTION_SOURCE);
    configMetrics.rejected.inc({ kind, reason_code: code });
    log.warn({ kind, object: formatRef(t.ref), resourceVersion, reason, code }, 'rejected malformed object');
    return t;
  }
}

function refOf(o: AnyObject): ObjectRef {
  return { kind: o.kind, namespace: o.metadata.namespace ?? '', name: o.metadata.name };
}

function jittered(ms: number): number {
  return Math.round(ms * (0.9 + Math.random() * 0.2));
}

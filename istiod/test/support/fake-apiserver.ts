/**
 * A list/watch API server for the kinds istiod reads: a real HTTP server on 127.0.0.1 that answers
 * the way kube-apiserver does for cluster-wide collections, with knobs to break it.
 *
 * - one resourceVersion counter shared by all kinds (etcd's revision); every write bumps it;
 * - LIST with `limit`/`continue` pagination over a snapshot taken at the first page; list items
 *   of built-in kinds carry no kind/apiVersion, custom resources do (as the real server);
 * - WATCH from a resourceVersion (`watch=true`), replaying history after it, then live events,
 *   one JSON object a line, ending after `timeoutSeconds`; BOOKMARK events on demand when the
 *   client allowed them;
 * - compaction: a watch or continue token older than the compacted revision gets 410 Gone, as an
 *   ERROR event (the real server's usual form) or an HTTP 410 status;
 * - faults: dropped watches (clean end or a reset socket), frozen watches (open but silent),
 *   injected error statuses, kinds not served (404, a CRD not installed), bearer token checks.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { apiVersionOf, KIND_NAMES, KINDS, type Kind } from '@ambient/common/config/kinds';
import { KubeClient } from '@ambient/common/kube/client';
import { KubeConfig } from '@kubernetes/client-node';

type Obj = Record<string, unknown> & { metadata: Record<string, unknown> };
type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface LoggedEvent {
  readonly rv: number;
  readonly type: EventType;
  readonly object: Obj;
}

interface Watcher {
  readonly kind: Kind;
  readonly res: ServerResponse;
  readonly bookmarks: boolean;
  frozen: boolean;
  timer: NodeJS.Timeout | undefined;
}

export interface RecordedRequest {
  readonly kind: Kind | undefined;
  readonly verb: 'list' | 'watch' | 'other';
  readonly query: Readonly<Record<string, string>>;
  readonly status: number;
  readonly at: number;
}

export interface FakeApiServerOptions {
  /** When set, requests must carry `Authorization: Bearer <token>`. */
  readonly token?: string;
  /** How a watch from a compacted resourceVersion is refused; `event` by default. */
  readonly goneAs?: 'event' | 'status';
  /** Kinds whose collection answers 404 (CRDs not installed). */
  readonly notServed?: readonly Kind[];
}

interface Failure {
  readonly kind: Kind | undefined;
  readonly verb: 'list' | 'watch' | undefined;
  readonly status: number;
  remaining: number;
}

const BUILT_IN_GROUPS = new Set(['', 'discovery.k8s.io']);

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function keyOf(o: Obj): string {
  const ns = typeof o.metadata.namespace === 'string' ? o.metadata.namespace : '';
  return `${ns}/${String(o.metadata.name)}`;
}

export class FakeApiServer {
  readonly #server: Server;
  readonly #options: FakeApiServerOptions;
  readonly #objects = new Map<Kind, Map<string, Obj>>();
  readonly #history = new Map<Kind, LoggedEvent[]>();
  readonly #watchers = new Set<Watcher>();
  readonly #snapshots = new Map<string, { rv: number; items: Obj[] }>();
  readonly #notServed: Set<Kind>;
  readonly #failures: Failure[] = [];
  #rv = 100;
  #compacted = 0;
  /** Every request, in arrival order. */
  readonly requests: RecordedRequest[] = [];

  private constructor(options: FakeApiServerOptions) {
    this.#options = options;
    this.#notServed = new Set(options.notServed ?? []);
    for (const k of KIND_NAMES) {
      this.#objects.set(k, new Map());
      this.#history.set(k, []);
    }
    this.#server = createServer((req, res) => this.#serve(req, res));
  }

  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const s = new FakeApiServer(options);
    await new Promise<void>((resolve) => s.#server.listen(0, '127.0.0.1', resolve));
    return s;
  }

  get url(): string {
    const a = this.#server.address() as AddressInfo;
    return `http://127.0.0.1:${a.port}`;
  }

  /** The current resourceVersion (the last write's). */
  get resourceVersion(): string {
    return String(this.#rv);
  }

  /** A KubeConfig for this server (plain HTTP, so TLS verification is off). */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'istiod', token: this.#options.token ?? 'unused' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'istiod' }],
      currentContext: 'fake',
    });
    return kc;
  }

  /** Writes a kubeconfig file for this server, as an operator would hand istiod. */
  writeKubeconfig(path: string): void {
    writeFileSync(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: fake',
        '  cluster:',
        `    server: ${this.url}`,
        '    insecure-skip-tls-verify: true',
        'users:',
        '- name: istiod',
        '  user:',
        `    token: ${this.#options.token ?? 'unused'}`,
        'contexts:',
        '- name: fake',
        '  context: {cluster: fake, user: istiod}',
        'current-context: fake',
        '',
      ].join('\n'),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Objects

  /**
   * Creates or replaces an object (no validation: malformed objects are the point). Sets
   * resourceVersion, and uid and creationTimestamp on create; returns the stored copy.
   */
  upsert(kind: Kind, object: Record<string, unknown>): Obj {
    const o = structuredClone(object) as Obj;
    o.metadata = { ...(o.metadata ?? {}) };
    const coll = this.#objects.get(kind) as Map<string, Obj>;
    const key = keyOf(o);
    const old = coll.get(key);
    this.#rv++;
    o.metadata.resourceVersion = String(this.#rv);
    o.metadata.uid = old?.metadata.uid ?? randomUUID();
    o.metadata.creationTimestamp = old?.metadata.creationTimestamp ?? new Date().toISOString();
    coll.set(key, o);
    this.#record(kind, old ? 'MODIFIED' : 'ADDED', o);
    return o;
  }

  delete(kind: Kind, namespace: string, name: string): boolean {
    const coll = this.#objects.get(kind) as Map<string, Obj>;
    const key = `${KINDS[kind].namespaced ? namespace : ''}/${name}`;
    const old = coll.get(key);
    if (!old) return false;
    coll.delete(key);
    this.#rv++;
    const gone = structuredClone(old);
    gone.metadata.resourceVersion = String(this.#rv);
    this.#record(kind, 'DELETED', gone);
    return true;
  }

  get(kind: Kind, namespace: string, name: string): Obj | undefined {
    return this.#objects.get(kind)?.get(`${KINDS[kind].namespaced ? namespace : ''}/${name}`);
  }

  #record(kind: Kind, type: EventType, object: Obj): void {
    const ev: LoggedEvent = { rv: this.#rv, type, object };
    (this.#history.get(kind) as LoggedEvent[]).push(ev);
    for (const w of this.#watchers) {
      if (w.kind === kind && !w.frozen) this.#send(w, type, this.#withTypeMeta(kind, object));
    }
  }

  /** Forgets history up to now, as etcd compaction does: older watches and tokens get 410. */
  compact(): void {
    this.#compacted = this.#rv;
    for (const h of this.#history.values()) h.length = 0;
  }

  /** Writes an object to another kind to move the shared resourceVersion on (as unrelated writes do). */
  bumpResourceVersion(by = 1): void {
    this.#rv += by;
  }

  // ------------------------------------------------------------------------------------------
  // Watches

  /** Open watches of a kind (or of all kinds). */
  watchCount(kind?: Kind): number {
    return [...this.#watchers].filter((w) => kind === undefined || w.kind === kind).length;
  }

  /** Sends a BOOKMARK with the current resourceVersion to the open, unfrozen watches that allow them. */
  bookmark(kind?: Kind): number {
    let n = 0;
    for (const w of this.#watchers) {
      if ((kind === undefined || w.kind === kind) && w.bookmarks && !w.frozen) {
        this.#send(w, 'BOOKMARK', {
          kind: w.kind,
          apiVersion: apiVersionOf(w.kind),
          metadata: { resourceVersion: String(this.#rv) },
        });
        n++;
      }
    }
    return n;
  }

  /** Ends open watches: `end` closes the stream cleanly, `reset` destroys the connection. */
  dropWatches(kind?: Kind, how: 'end' | 'reset' = 'end'): number {
    let n = 0;
    for (const w of [...this.#watchers]) {
      if (kind !== undefined && w.kind !== kind) continue;
      this.#closeWatch(w, how);
      n++;
    }
    return n;
  }

  /** Open watches stop receiving anything (a half-open connection); new watches are unaffected. */
  freezeWatches(kind?: Kind): number {
    let n = 0;
    for (const w of this.#watchers) {
      if (kind === undefined || w.kind === kind) {
        w.frozen = true;
        n++;
      }
    }
    return n;
  }

  // ------------------------------------------------------------------------------------------
  // Faults

  /** Answers the next `times` matching requests with `status`. */
  failRequests(
    filter: { kind?: Kind; verb?: 'list' | 'watch' },
    code: number,
    times = Number.POSITIVE_INFINITY,
  ): void {
    this.#failures.push({ kind: filter.kind, verb: filter.verb, status: code, remaining: times });
  }

  clearFailures(): void {
    this.#failures.length = 0;
  }

  /** Whether a kind's collection exists (a CRD installed); an unserved kind answers 404. */
  setServed(kind: Kind, served: boolean): void {
    if (served) this.#notServed.delete(kind);
    else this.#notServed.add(kind);
  }

  /** Requests of one kind and verb. */
  requestsFor(kind: Kind, verb?: 'list' | 'watch'): RecordedRequest[] {
    return this.requests.filter((r) => r.kind === kind && (verb === undefined || r.verb === verb));
  }

  async close(): Promise<void> {
    for (const w of [...this.#watchers]) this.#closeWatch(w, 'end');
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  // ------------------------------------------------------------------------------------------

  #withTypeMeta(kind: Kind, o: Obj): Obj {
    return { apiVersion: apiVersionOf(kind), kind, ...o };
  }

  #send(w: Watcher, type: string, object: Record<string, unknown>): void {
    w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  #closeWatch(w: Watcher, how: 'end' | 'reset'): void {
    clearTimeout(w.timer);
    this.#watchers.delete(w);
    if (how === 'reset') w.res.socket?.destroy();
    else w.res.end();
  }

  #json(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  #serve(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams);
    const kind = KIND_NAMES.find((k) => KubeClient.collectionPath(k) === url.pathname);
    const verb = req.method !== 'GET' || !kind ? 'other' : query.watch === 'true' ? 'watch' : 'list';
    const reply = (code: number) => this.requests.push({ kind, verb, query, status: code, at: Date.now() });

    if (this.#options.token !== undefined && req.headers.authorization !== `Bearer ${this.#options.token}`) {
      reply(401);
      this.#json(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    if (!kind || verb === 'other' || this.#notServed.has(kind)) {
      reply(404);
      this.#json(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
      return;
    }
    const failure = this.#failures.find(
      (f) =>
        f.remaining > 0 &&
        (f.kind === undefined || f.kind === kind) &&
        (f.verb === undefined || f.verb === verb),
    );
    if (failure) {
      failure.remaining--;
      reply(failure.status);
      this.#json(res, failure.status, status(failure.status, 'InternalError', 'injected failure'));
      return;
    }
    if (verb === 'list') this.#list(kind, query, res, reply);
    else this.#watch(kind, query, res, reply);
  }

  #list(kind: Kind, query: Record<string, string>, res: ServerResponse, reply: (code: number) => void): void {
    let snapshot: { rv: number; items: Obj[] };
    let offset = 0;
    let id: string;
    if (query.continue) {
      const [sid, off] = query.continue.split(':');
      const s = this.#snapshots.get(sid ?? '');
      if (!s || s.rv < this.#compacted) {
        reply(410);
        this.#json(
          res,
          410,
          status(
            410,
            'Expired',
            'The provided continue parameter is too old to display a consistent list result.',
          ),
        );
        return;
      }
      snapshot = s;
      id = sid as string;
      offset = Number(off);
    } else {
      const items = [...(this.#objects.get(kind) as Map<string, Obj>).values()]
        .sort((a, b) => keyOf(a).localeCompare(keyOf(b)))
        .map((o) => structuredClone(o));
      snapshot = { rv: this.#rv, items };
      id = randomUUID();
      this.#snapshots.set(id, snapshot);
    }
    const limit = query.limit ? Number(query.limit) : Number.POSITIVE_INFINITY;
    const page = snapshot.items.slice(offset, offset + limit);
    const next = offset + page.length;
    const more = next < snapshot.items.length;
    if (!more) this.#snapshots.delete(id);
    const builtIn = BUILT_IN_GROUPS.has(KINDS[kind].group);
    reply(200);
    this.#json(res, 200, {
      kind: `${kind}List`,
      apiVersion: apiVersionOf(kind),
      metadata: {
        resourceVersion: String(snapshot.rv),
        ...(more ? { continue: `${id}:${next}`, remainingItemCount: snapshot.items.length - next } : {}),
      },
      items: builtIn ? page : page.map((o) => this.#withTypeMeta(kind, o)),
    });
  }

  #watch(
    kind: Kind,
    query: Record<string, string>,
    res: ServerResponse,
    reply: (code: number) => void,
  ): void {
    const from = query.resourceVersion ?? '';
    const fromRv = from === '' || from === '0' ? undefined : Number(from);
    if (fromRv !== undefined && (!Number.isInteger(fromRv) || fromRv < this.#compacted)) {
      const msg = `too old resource version: ${from} (${this.#compacted})`;
      if (this.#options.goneAs === 'status') {
        reply(410);
        this.#json(res, 410, status(410, 'Expired', msg));
        return;
      }
      reply(200);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify({ type: 'ERROR', object: status(410, 'Expired', msg) })}\n`);
      return;
    }
    reply(200);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.flushHeaders();
    const w: Watcher = {
      kind,
      res,
      bookmarks: query.allowWatchBookmarks === 'true',
      frozen: false,
      timer: undefined,
    };
    if (fromRv === undefined) {
      for (const o of (this.#objects.get(kind) as Map<string, Obj>).values()) {
        this.#send(w, 'ADDED', this.#withTypeMeta(kind, o));
      }
    } else {
      for (const ev of this.#history.get(kind) as LoggedEvent[]) {
        if (ev.rv > fromRv) this.#send(w, ev.type, this.#withTypeMeta(kind, ev.object));
      }
    }
    this.#watchers.add(w);
    const timeout = Number(query.timeoutSeconds ?? '0');
    if (timeout > 0) w.timer = setTimeout(() => this.#closeWatch(w, 'end'), timeout * 1000);
    res.on('close', () => {
      clearTimeout(w.timer);
      this.#watchers.delete(w);
    });
  }
}

/**
 * The two Kubernetes API calls istiod's informers make, LIST and WATCH of a collection, on
 * `@kubernetes/client-node` for everything the library does well (kubeconfig and in-cluster
 * loading, TLS, bearer tokens, exec and OIDC auth, proxies, the undici transport), and none of its
 * informer or `Watch` machinery: those swallow errors, drop unparseable lines and carry a fixed
 * inactivity timeout (kubernetes-client/javascript #958, #1933, #2222, #795, #447). The loop that
 * keeps a kind in sync lives in `reflector.ts`.
 */

import {
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  KubeConfig,
  RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';
import { KINDS, type Kind } from '../config/kinds.ts';
import { errorMessage } from '../errors.ts';
import { KubeError, type KubeErrorCode } from './errors.ts';

export interface KubeConfigOptions {
  /** A ready KubeConfig; wins over the other fields. */
  readonly kubeConfig?: KubeConfig;
  /** Path of a kubeconfig file; without it the in-cluster service account is used. */
  readonly kubeconfigPath?: string;
  /** The kubeconfig context to use instead of its current-context. */
  readonly context?: string;
}

/** Loads the KubeConfig: a given one, a kubeconfig file, or the pod's service account. */
export function loadKubeConfig(options: KubeConfigOptions): KubeConfig {
  if (options.kubeConfig) return options.kubeConfig;
  const kc = new KubeConfig();
  const where =
    options.kubeconfigPath === undefined ? 'the in-cluster service account' : options.kubeconfigPath;
  try {
    if (options.kubeconfigPath === undefined) kc.loadFromCluster();
    else kc.loadFromFile(options.kubeconfigPath);
    if (options.context !== undefined) kc.setCurrentContext(options.context);
  } catch (err) {
    throw new KubeError(
      'KUBECONFIG_INVALID',
      `cannot load a kubeconfig from ${where}: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) {
    throw new KubeError('KUBECONFIG_INVALID', `the kubeconfig from ${where} names no cluster server`);
  }
  return kc;
}

/** A watch event as the API server streams it, one JSON object a line. */
export interface WatchEvent {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  readonly object: Record<string, unknown>;
}

/** One page of a LIST. */
export interface ListPage {
  readonly apiVersion: string | undefined;
  readonly resourceVersion: string;
  /** The token for the next page; absent on the last one. */
  readonly continue: string | undefined;
  readonly items: readonly unknown[];
}

export interface ListOptions {
  readonly limit?: number;
  readonly continue?: string;
  readonly signal?: AbortSignal;
}

export interface WatchOptions {
  readonly resourceVersion: string;
  readonly timeoutSeconds: number;
  readonly signal: AbortSignal;
}

const WATCH_EVENT_TYPES = new Set(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'ERROR']);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The error for a non-2xx answer, from the Status body when the server sent one. */
export function statusError(kind: Kind, verb: string, httpStatus: number, body: string): KubeError {
  let message = body.slice(0, 300);
  let reason = '';
  try {
    const status = JSON.parse(body) as unknown;
    if (isRecord(status)) {
      if (typeof status.message === 'string') message = status.message;
      if (typeof status.reason === 'string') reason = status.reason;
    }
  } catch {
    // Not a Status object (a proxy's HTML page): keep the start of the body.
  }
  return errorForStatus(kind, verb, httpStatus, reason, message);
}

export function errorForStatus(
  kind: Kind,
  verb: string,
  code: number,
  reason: string,
  message: string,
): KubeError {
  const errCode: KubeErrorCode =
    code === 410 ? 'RESOURCE_GONE' : code === 404 ? 'KIND_NOT_SERVED' : 'API_STATUS';
  const what = `${verb} ${kind}: ${code}${reason ? ` ${reason}` : ''}${message ? `: ${message}` : ''}`;
  return new KubeError(errCode, what, { status: code, retryable: code !== 404 });
}

/** LIST and WATCH of the collections in {@link KINDS}, across all namespaces. */
export class KubeClient {
  readonly #kc: KubeConfig;
  readonly #http = new IsomorphicFetchHttpLibrary();

  constructor(kc: KubeConfig) {
    this.#kc = kc;
  }

  /** The API server URL, for logs. */
  get server(): string {
    return this.#kc.getCurrentCluster()?.server ?? '';
  }

  /** `/api/v1/pods`, `/apis/security.istio.io/v1/authorizationpolicies`. */
  static collectionPath(kind: Kind): string {
    const k = KINDS[kind];
    return k.group === '' ? `/api/${k.version}/${k.plural}` : `/apis/${k.group}/${k.version}/${k.plural}`;
  }

  async #get(kind: Kind, verb: string, query: Record<string, string>, signal: AbortSignal | undefined) {
    const url = new URL(this.server.replace(/\/+$/, '') + KubeClient.collectionPath(kind));
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const ctx = new RequestContext(url.toString(), HttpMethod.GET);
    ctx.setHeaderParam('Accept', 'application/json');
    if (signal) ctx.setSignal(signal);
    let resp: ResponseContext;
    try {
      await this.#kc.applySecurityAuthentication(ctx);
      resp = await this.#http.send(ctx).toPromise();
    } catch (err) {
      if (signal?.aborted) throw err;
      const cause = err instanceof Error && err.cause !== undefined ? `: ${errorMessage(err.cause)}` : '';
      throw new KubeError('TRANSPORT', `${verb} ${kind} at ${this.server}: ${errorMessage(err)}${cause}`, {
        cause: err,
        retryable: true,
      });
    }
    if (resp.httpStatusCode < 200 || resp.httpStatusCode > 299) {
      const body = await resp.body.text().catch(() => '');
      throw statusError(kind, verb, resp.httpStatusCode, body);
    }
    return resp;
  }

  /** One page of a list of `kind` in all namespaces, read from etcd (no resourceVersion). */
  async list(kind: Kind, options: ListOptions = {}): Promise<ListPage> {
    const query: Record<string, string> = {};
    if (options.limit !== undefined) query.limit = String(options.limit);
    if (options.continue !== undefined) query.continue = options.continue;
    const resp = await this.#get(kind, 'list', query, options.signal);
    const text = await resp.body.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new KubeError('DECODE', `list ${kind}: the response is not JSON: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    const meta = isRecord(parsed) && isRecord(parsed.metadata) ? parsed.metadata : undefined;
    if (!isRecord(parsed) || !meta || typeof meta.resourceVersion !== 'string') {
      throw new KubeError('DECODE', `list ${kind}: the response has no metadata.resourceVersion`);
    }
    const items = parsed.items ?? [];
    if (!Array.isArray(items)) throw new KubeError('DECODE', `list ${kind}: items is not a list`);
    return {
      apiVersion: typeof parsed.apiVersion === 'string' ? parsed.apiVersion : undefined,
      resourceVersion: meta.resourceVersion,
      continue: typeof meta.continue === 'string' && meta.continue !== '' ? meta.continue : undefined,
      items,
    };
  }

  /**
   * Opens a watch of `kind` from `resourceVersion` with bookmarks, and resolves once the server
   * answered 200. The events come out of the returned iterable until the server closes the
   * stream; a line that is not a watch event ends it with a DECODE error, because a stream that
   * lost a line can no longer be trusted to be complete.
   */
  async watch(kind: Kind, options: WatchOptions): Promise<AsyncIterable<WatchEvent>> {
    const resp = await this.#get(
      kind,
      'watch',
      {
        watch: 'true',
        resourceVersion: options.resourceVersion,
        allowWatchBookmarks: 'true',
        timeoutSeconds: String(options.timeoutSeconds),
      },
      options.signal,
    );
    const stream = resp.body.stream();
    if (!stream) throw new KubeError('DECODE', `watch ${kind}: the response has no body`);
    return readEvents(kind, stream);
  }
}

async function* readEvents(kind: Kind, stream: ReadableStream<Uint8Array>): AsyncGenerator<WatchEvent> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let nl = buffered.indexOf('\n');
      while (nl !== -1) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (line !== '') yield parseEvent(kind, line);
        nl = buffered.indexOf('\n');
      }
    }
    const rest = (buffered + decoder.decode()).trim();
    if (rest !== '') yield parseEvent(kind, rest);
  } finally {
    await reader.cancel().catch(() => {});
  }
}

function parseEvent(kind: Kind, line: string): WatchEvent {
  let ev: unknown;
  try {
    ev = JSON.parse(line);
  } catch (err) {
    throw new KubeError('DECODE', `watch ${kind}: a line is not JSON: ${errorMessage(err)}`, { cause: err });
  }
  if (
    !isRecord(ev) ||
    typeof ev.type !== 'string' ||
    !WATCH_EVENT_TYPES.has(ev.type) ||
    !isRecord(ev.object)
  ) {
    throw new KubeError('DECODE', `watch ${kind}: a line is not a watch event: ${line.slice(0, 200)}`);
  }
  return ev as unknown as WatchEvent;
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { errorMessage } from '@ambient/common/errors';
import { HttpEndpoint, readBody, sendJson } from '@ambient/common/http-endpoint';
import type { Readiness } from '@ambient/common/lifecycle';
import { LogError, type Logger, type Logging } from '@ambient/common/log';
import type { ListenConfig } from './config.ts';

/** What the debug endpoints show, each computed when asked for. */
export interface DebugViews {
  /** `/debug/connections`: XdsServer.debugState(). */
  connections(): unknown;
  /** `/debug/ambient`: AmbientIndex.toJSON(), diagnostics included. */
  ambient(): unknown;
  /** `/debug/config/rejected`: the malformed objects the ConfigStore refused. */
  rejected(): unknown;
  /** `/debug/config/sources`: the config source's status (kinds synced, files scanned). */
  sources(): unknown;
  /** `/debug/ca`: the CA's mode, trust domain and root. */
  ca(): unknown;
}

export interface AdminServerOptions {
  readonly listen: ListenConfig;
  /** `ENABLE_DEBUG_ON_HTTP`: without it only `/ready` is served. */
  readonly debugEndpoints: boolean;
  readonly readiness: Readiness;
  readonly logging: Logging;
  readonly views: DebugViews;
  readonly log: Logger;
}

const DEBUG_ROUTES: Readonly<Record<string, keyof DebugViews>> = {
  '/debug/connections': 'connections',
  '/debug/ambient': 'ambient',
  '/debug/config/rejected': 'rejected',
  '/debug/config/sources': 'sources',
  '/debug/ca': 'ca',
};

/**
 * istiod's debug port (8080): `/ready` for the readiness probe (200 once every named start task
 * finished, 503 listing those still pending), the `/debug/*` views, and `/logging` to read and
 * change log levels at runtime (ztunnel's `/logging`, istiod's ControlZ).
 *
 * The port must be reachable by the kubelet for `/ready`, so it binds the pod address; changing
 * levels is therefore accepted only from loopback (`kubectl port-forward`, `kubectl exec`).
 */
export class AdminServer extends HttpEndpoint {
  constructor(options: AdminServerOptions) {
    super({
      name: 'admin-http',
      listen: options.listen,
      log: options.log,
      handler: (req, res) => handle(options, req, res),
    });
  }
}

async function handle(o: AdminServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://istiod');
  const path = url.pathname.replace(/\/+$/, '') || '/';
  if (path === '/ready') {
    if (!isRead(req)) return methodNotAllowed(res, 'GET, HEAD');
    const pending = o.readiness.pending();
    sendJson(res, pending.length === 0 ? 200 : 503, { ready: pending.length === 0, pending });
    return;
  }
  if (!o.debugEndpoints) {
    sendJson(res, 404, { error: `${path} is not served (ENABLE_DEBUG_ON_HTTP=false)` });
    return;
  }
  if (path === '/debug') {
    if (!isRead(req)) return methodNotAllowed(res, 'GET, HEAD');
    sendJson(res, 200, { endpoints: ['/ready', '/logging', ...Object.keys(DEBUG_ROUTES)].sort() });
    return;
  }
  const view = DEBUG_ROUTES[path];
  if (view !== undefined) {
    if (!isRead(req)) return methodNotAllowed(res, 'GET, HEAD');
    sendJson(res, 200, o.views[view]());
    return;
  }
  if (path === '/logging') return logging(o, req, res, url);
  sendJson(res, 404, { error: `no such endpoint ${path}; see /debug` });
}

/**
 * `GET /logging`: the level spec and each active scope's level. `POST` or `PUT` with
 * `?level=info,xds:debug` (or that text as the body) applies a spec on top of the current one;
 * `&reset=true` first returns every scope to the default.
 */
async function logging(o: AdminServerOptions, req: IncomingMessage, res: ServerResponse, url: URL) {
  if (isRead(req)) {
    sendJson(res, 200, o.logging.levels());
    return;
  }
  if (req.method !== 'POST' && req.method !== 'PUT') return methodNotAllowed(res, 'GET, HEAD, POST, PUT');
  if (!isLoopback(req.socket.remoteAddress)) {
    sendJson(res, 403, { error: 'log levels can only be changed from loopback' });
    return;
  }
  let spec = url.searchParams.get('level') ?? '';
  if (spec === '') {
    try {
      spec = (await readBody(req, 4096)).trim();
    } catch (err) {
      sendJson(res, 413, { error: errorMessage(err) });
      return;
    }
  }
  if (spec === '') {
    sendJson(res, 400, { error: 'give a level spec as ?level=info,xds:debug or as the body' });
    return;
  }
  try {
    o.logging.setLevels(spec, { reset: url.searchParams.get('reset') === 'true' });
  } catch (err) {
    if (!(err instanceof LogError)) throw err;
    sendJson(res, 400, { error: err.message });
    return;
  }
  o.log.info({ levels: spec, peer: req.socket.remoteAddress }, 'log levels changed');
  sendJson(res, 200, o.logging.levels());
}

function isRead(req: IncomingMessage): boolean {
  return req.method === 'GET' || req.method === 'HEAD';
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  res.setHeader('allow', allow);
  sendJson(res, 405, { error: `method not allowed; use ${allow}` });
}

function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const a = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  if (isIP(a) === 4) return a.startsWith('127.');
  return a === '::1';
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpEndpoint, type HttpEndpointOptions, sendJson, sendText } from '@ambient/common/http-endpoint';
import { formatLevelSpec, LogError, type Logger, type Logging } from '@ambient/common/log';
import { sendMetrics } from '@ambient/common/metrics';
import type { Registry } from 'prom-client';
import type { ListenConfig } from './config.ts';

/**
 * One of ztunnel's own small HTTP servers: errors name it as `the <name> server`, as upstream's
 * messages do.
 */
export class ZtunnelHttpEndpoint extends HttpEndpoint {
  constructor(options: Omit<HttpEndpointOptions, 'label'>) {
    super({ ...options, label: `the ${options.name} server` });
  }
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  res.setHeader('allow', allow);
  sendText(res, 405, `method not allowed; use ${allow}\n`);
}

function isRead(req: IncomingMessage): boolean {
  return req.method === 'GET' || req.method === 'HEAD';
}

/** What the admin server shows and controls. */
export interface AdminServerOptions {
  readonly listen: ListenConfig;
  readonly logging: Logging;
  /** The `/config_dump` document: ProxyState.toJSON() plus version and config. */
  readonly configDump: () => unknown;
  /** `/workloadmanager`: the in-pod proxies (upstream's workload manager admin handler). */
  readonly workloadState?: () => unknown;
  /** `POST /quitquitquit`: begin a graceful shutdown. */
  readonly quit: () => void;
  readonly log: Logger;
}

const ADMIN_ENDPOINTS: readonly (readonly [string, string])[] = [
  ['/config_dump', 'dump the current ztunnel configuration (istioctl ztunnel-config)'],
  ['/logging', 'GET: current levels; POST ?level=info,xds:debug[&reset]: change them'],
  ['/quitquitquit', 'POST: shut down gracefully'],
  ['/workloadmanager', 'state of the in-pod proxies'],
];

const LOGGING_HELP = `usage: GET or POST /logging                       (list current levels)
usage: POST /logging?level=<level>                   (change the default level)
usage: POST /logging?level=<scope>:<level>,...       (change scopes' levels)
usage: POST /logging?reset[&level=...]               (return every scope to the default first)
hint: levels: trace|debug|info|warn|error|fatal|off
`;

/**
 * ztunnel's admin server on localhost:15000 (`ztunnel:src/admin.rs`): `/config_dump` in the shape
 * `istioctl ztunnel-config` reads, `/logging` to read and change levels at runtime,
 * `/quitquitquit`, and `/workloadmanager`. It binds loopback only, so it needs no authorization
 * of its own.
 */
export class AdminServer extends ZtunnelHttpEndpoint {
  constructor(options: AdminServerOptions) {
    super({
      name: 'admin',
      listen: options.listen,
      log: options.log,
      handler: (req, res, url) => handleAdmin(options, req, res, url),
    });
  }
}

function handleAdmin(o: AdminServerOptions, req: IncomingMessage, res: ServerResponse, url: URL): void {
  const path = url.pathname.replace(/\/+$/, '') || '/';
  switch (path) {
    case '/':
      if (!isRead(req)) {
        methodNotAllowed(res, 'GET, HEAD');
        return;
      }
      sendText(res, 200, `${ADMIN_ENDPOINTS.map(([p, d]) => `${p}\t${d}`).join('\n')}\n`);
      return;
    case '/config_dump':
      if (!isRead(req)) {
        methodNotAllowed(res, 'GET, HEAD');
        return;
      }
      sendJson(res, 200, o.configDump());
      return;
    case '/workloadmanager':
      if (!isRead(req)) {
        methodNotAllowed(res, 'GET, HEAD');
        return;
      }
      sendJson(res, 200, o.workloadState?.() ?? {});
      return;
    case '/logging':
      handleLogging(o, req, res, url);
      return;
    case '/quitquitquit':
      if (req.method !== 'POST') {
        methodNotAllowed(res, 'POST');
        return;
      }
      o.log.info('shutdown requested through /quitquitquit');
      sendText(res, 200, 'shutdown now\n');
      o.quit();
      return;
    default:
      sendText(res, 404, `no such endpoint ${path}; see /\n`);
  }
}

/**
 * `/logging` as upstream (which follows Envoy): without `level` it lists the levels; `POST` with
 * `?level=` applies a spec on top of the current one (`xds:debug` one scope, `debug` the default);
 * `reset` first returns every scope to the default. A bad spec is a 400 and changes nothing.
 */
function handleLogging(o: AdminServerOptions, req: IncomingMessage, res: ServerResponse, url: URL): void {
  const level = url.searchParams.get('level');
  const reset = url.searchParams.has('reset');
  const current = (): string => {
    const l = o.logging.levels();
    const active = Object.entries(l.active)
      .map(([scope, lvl]) => `${scope}: ${lvl}`)
      .join('\n');
    return `current log level is ${formatLevelSpec(l)}\n${active === '' ? '' : `\nactive scopes:\n${active}\n`}`;
  };
  if (level === null && !reset) {
    if (!isRead(req) && req.method !== 'POST') {
      methodNotAllowed(res, 'GET, HEAD, POST');
      return;
    }
    sendText(res, 200, current());
    return;
  }
  if (req.method !== 'POST') {
    sendText(res, 405, `levels are changed with POST\n${LOGGING_HELP}`);
    return;
  }
  try {
    const spec = o.logging.setLevels(level ?? '', { reset });
    o.log.info({ levels: formatLevelSpec(spec), reset }, 'log levels changed through /logging');
  } catch (err) {
    if (!(err instanceof LogError)) throw err;
    sendText(res, 400, `failed to set new level: ${err.message}\n${LOGGING_HELP}`);
    return;
  }
  sendText(res, 200, current());
}

/** The stats server on :15020: `/metrics` and `/stats/prometheus` in the Prometheus text format. */
export class StatsServer extends ZtunnelHttpEndpoint {
  constructor(options: { readonly listen: ListenConfig; readonly registry: Registry; readonly log: Logger }) {
    const { registry } = options;
    super({
      name: 'stats',
      listen: options.listen,
      log: options.log,
      handler: async (req, res, url) => {
        if (url.pathname !== '/metrics' && url.pathname !== '/stats/prometheus') {
          sendText(res, 404, 'not found; metrics are at /metrics and /stats/prometheus\n');
          return;
        }
        if (!isRead(req)) {
          methodNotAllowed(res, 'GET, HEAD');
          return;
        }
        await sendMetrics(req, res, registry);
      },
    });
  }
}

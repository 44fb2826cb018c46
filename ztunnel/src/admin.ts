import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorMessage } from '@ambient/common/errors';
import type { Component, StopContext } from '@ambient/common/lifecycle';
import { formatLevelSpec, LogError, type Logger, type Logging } from '@ambient/common/log';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { ListenConfig } from './config.ts';
import { ZtunnelError } from './errors.ts';

/** Answers one request; a throw or rejection becomes a 500. */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => void | Promise<void>;

export interface HttpEndpointOptions {
  /** The component name (`admin`, `stats`, `readiness`). */
  readonly name: string;
  readonly listen: ListenConfig;
  readonly handler: HttpHandler;
  readonly log: Logger;
}

/**
 * One of ztunnel's own small HTTP servers as a lifecycle component. Stopping closes the listener,
 * closes idle keep-alive connections at once, lets requests in flight finish, and closes what is
 * left when the drain deadline passes.
 */
export class HttpEndpoint implements Component {
  readonly name: string;
  readonly #o: HttpEndpointOptions;
  readonly #server: Server;
  #port: number | undefined;

  constructor(options: HttpEndpointOptions) {
    this.name = options.name;
    this.#o = options;
    this.#server = createServer((req, res) => void this.#serve(req, res));
    // Probes and scrapes are short; a client holding a socket open must not hold up a stop.
    this.#server.keepAliveTimeout = 5_000;
    this.#server.headersTimeout = 10_000;
    this.#server.requestTimeout = 30_000;
  }

  /** The bound port (the real one when 0 was asked for). */
  get port(): number {
    if (this.#port === undefined) {
      throw new ZtunnelError('NOT_STARTED', `the ${this.name} server has not started listening yet`);
    }
    return this.#port;
  }

  async start(): Promise<void> {
    const { bindAddress, port } = this.#o.listen;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(
          new ZtunnelError(
            'HTTP_LISTEN_FAILED',
            `the ${this.name} server cannot listen on ${formatHostPort(bindAddress, port)}: ${errorMessage(err)}`,
            { cause: err },
          ),
        );
      };
      this.#server.once('error', onError);
      this.#server.listen(port, bindAddress, () => {
        this.#server.off('error', onError);
        resolve();
      });
    });
    this.#port = (this.#server.address() as AddressInfo).port;
    this.#o.log.info({ server: this.name, address: formatHostPort(bindAddress, this.#port) }, 'listening');
  }

  async stop(ctx: StopContext): Promise<void> {
    if (!this.#server.listening) return;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();
    const force = (): void => this.#server.closeAllConnections();
    if (ctx.force.aborted) force();
    else ctx.force.addEventListener('abort', force, { once: true });
    await closed;
    ctx.force.removeEventListener('abort', force);
  }

  async #serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://ztunnel');
      await this.#o.handler(req, res, url);
    } catch (err) {
      this.#o.log.error({ server: this.name, url: req.url, err: errorMessage(err) }, 'http handler failed');
      if (!res.headersSent) sendText(res, 500, 'internal error\n');
      else res.destroy();
    }
  }
}

function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Writes a pretty JSON body (admin output is read by people and by istioctl). */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, jsonReplacer, 2)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** Writes a plain-text body. */
export function sendText(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Map) return Object.fromEntries(value);
  if (value instanceof Set) return [...value];
  return value;
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
export class AdminServer extends HttpEndpoint {
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

/**
 * The one Prometheus registry of a ztunnel: every component registers its metrics here (xDS
 * client, proxies, workload manager), never in prom-client's global registry, so two ztunnels in
 * one test process stay apart. It carries process metrics and `istio_build`.
 */
export function createMetricsRegistry(options: { readonly version: string }): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const build = new Gauge({
    name: 'istio_build',
    help: 'Istio component build info',
    labelNames: ['component', 'tag'] as const,
    registers: [registry],
  });
  build.set({ component: 'ztunnel', tag: options.version }, 1);
  return registry;
}

/** The stats server on :15020: `/metrics` and `/stats/prometheus` in the Prometheus text format. */
export class StatsServer extends HttpEndpoint {
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
        const body = await registry.metrics();
        res.writeHead(200, {
          'content-type': registry.contentType,
          'content-length': Buffer.byteLength(body),
        });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
    });
  }
}

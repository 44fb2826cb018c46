import { chmodSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { errorMessage, MeshError } from '@ambient/common/errors';
import type { Logger } from '@ambient/common/log';
import { AmbientctlError } from '../errors.ts';
import type { ApplyResult, ComponentName, HostedMesh } from './hosted-mesh.ts';
import {
  type ApplyBody,
  CONTROL_ROUTES,
  type DeleteBody,
  type DeleteRequest,
  type ErrorBody,
  type ExecBody,
  type ExecRequest,
  type PodsBody,
  type RestartRequest,
  type StatusBody,
  statusOfCode,
  type WaitPodsRequest,
  type ZtunnelAdminBody,
  type ZtunnelMetricsBody,
} from './protocol.ts';

/** The largest request body accepted (a manifest directory applied at once). */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

const COMPONENTS: readonly ComponentName[] = ['istiod', 'ztunnel', 'istio-cni'];

export interface ControlServerOptions {
  readonly mesh: HostedMesh;
  readonly socketPath: string;
  /** Called once after `/v1/shutdown` has been answered; the daemon takes the mesh down. */
  readonly onShutdown: () => void;
  readonly log: Logger;
}

/**
 * The daemon's control socket: HTTP over a unix socket only root can open (mode 0600 in a 0700
 * directory), so it needs no authentication of its own. Each route maps to one mesh operation.
 */
export class ControlServer {
  readonly #o: ControlServerOptions;
  readonly #server: Server;
  #shuttingDown = false;

  constructor(options: ControlServerOptions) {
    this.#o = options;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => sendError(res, err));
    });
    // exec and wait-pods may run for minutes; their own timeouts bound them.
    this.#server.requestTimeout = 0;
    this.#server.headersTimeout = 10_000;
  }

  async start(): Promise<void> {
    // A socket file left by a daemon that died would make listen fail with EADDRINUSE.
    rmSync(this.#o.socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#o.socketPath, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    chmodSync(this.#o.socketPath, 0o600);
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    rmSync(this.#o.socketPath, { force: true });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://control');
    const path = url.pathname;
    const { mesh } = this.#o;
    const method = req.method ?? 'GET';
    this.#o.log.debug({ method, path }, 'control request');

    if (path === CONTROL_ROUTES.status && method === 'GET') {
      const body: StatusBody = {
        pid: process.pid,
        stateDir: mesh.stateDir,
        redirectMode: mesh.redirectMode,
        nodes: mesh.nodes,
        controlPlane: mesh.controlPlane,
        istiodAddress: mesh.istiodAddress,
        components: await mesh.components(),
        pods: await mesh.pods(),
      };
      sendJson(res, 200, body);
      return;
    }
    if (path === CONTROL_ROUTES.apply && method === 'POST') {
      const text = await readBody(req);
      const body: ApplyBody = { results: await mesh.apply(text) };
      sendJson(res, 200, body);
      return;
    }
    if (path === CONTROL_ROUTES.delete && method === 'POST') {
      const r = parseJson<DeleteRequest>(await readBody(req));
      requireString(r.kind, 'kind');
      requireString(r.name, 'name');
      const body: DeleteBody = { deleted: await mesh.delete(r.kind, r.namespace, r.name) };
      sendJson(res, 200, body);
      return;
    }
    if (path === CONTROL_ROUTES.waitPods && method === 'POST') {
      const r = parseJson<WaitPodsRequest>(await readBody(req));
      requireString(r.namespace, 'namespace');
      const body: PodsBody = { pods: await mesh.waitPodsRunning(r.namespace, r.selector, r.timeoutMs) };
      sendJson(res, 200, body);
      return;
    }
    if (path === CONTROL_ROUTES.exec && method === 'POST') {
      const r = parseJson<ExecRequest>(await readBody(req));
      requireString(r.namespace, 'namespace');
      requireString(r.pod, 'pod');
      if (!Array.isArray(r.argv) || r.argv.length === 0 || !r.argv.every((a) => typeof a === 'string')) {
        throw new AmbientctlError('USAGE', 'exec needs argv: a non-empty list of strings');
      }
      const body: ExecBody = await mesh.exec(r.namespace, r.pod, r.argv, {
        ...(r.timeoutMs === undefined ? {} : { timeoutMs: r.timeoutMs }),
        check: r.check ?? false,
      });
      sendJson(res, 200, body);
      return;
    }
    if (path === CONTROL_ROUTES.restart && method === 'POST') {
      const r = parseJson<RestartRequest>(await readBody(req));
      if (!COMPONENTS.includes(r.component)) {
        throw new AmbientctlError('USAGE', `restart: component must be one of ${COMPONENTS.join(', ')}`);
      }
      await mesh.restartComponent(r.component, r.node);
      sendJson(res, 200, {});
      return;
    }
    if (path === CONTROL_ROUTES.shutdown && method === 'POST') {
      sendJson(res, 202, { stopping: true });
      if (!this.#shuttingDown) {
        this.#shuttingDown = true;
        // After the answer is on its way: the handler must not wait for the mesh to go down.
        res.on('finish', () => this.#o.onShutdown());
      }
      return;
    }
    if (path.startsWith(CONTROL_ROUTES.ztunnelPrefix) && method === 'GET') {
      const [node, what] = path.slice(CONTROL_ROUTES.ztunnelPrefix.length).split('/');
      if (node === undefined || node === '')
        throw new AmbientctlError('USAGE', 'ztunnel: no node in the path');
      if (!mesh.nodes.some((n) => n.name === node)) {
        throw new AmbientctlError(
          'NOT_FOUND',
          `no node ${JSON.stringify(node)}; nodes: ${mesh.nodes.map((n) => n.name).join(', ')}`,
        );
      }
      if (what === 'admin') {
        const adminPath = url.searchParams.get('path') ?? '/config_dump';
        if (!adminPath.startsWith('/'))
          throw new AmbientctlError('USAGE', 'ztunnel admin path must start with /');
        const body: ZtunnelAdminBody = await mesh.ztunnelAdmin(node, adminPath);
        sendJson(res, 200, body);
        return;
      }
      if (what === 'metrics') {
        const body: ZtunnelMetricsBody = { text: await mesh.ztunnelMetrics(node) };
        sendJson(res, 200, body);
        return;
      }
    }
    throw new AmbientctlError('NOT_FOUND', `no control route ${method} ${path}`);
  }
}

function requireString(v: unknown, name: string): void {
  if (typeof v !== 'string' || v === '')
    throw new AmbientctlError('USAGE', `${name} must be a non-empty string`);
}

function parseJson<T>(text: string): T {
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as T;
  } catch (err) {
    throw new AmbientctlError('USAGE', `request body is not a JSON object: ${errorMessage(err)}`);
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) {
      throw new AmbientctlError('USAGE', `request body over ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown): void {
  const code = err instanceof MeshError ? err.code : 'CONTROL_FAILED';
  const applied = (err as { applied?: unknown }).applied;
  const body: ErrorBody = {
    error: {
      code,
      message: errorMessage(err),
      ...(Array.isArray(applied) ? { applied: applied as ApplyResult[] } : {}),
    },
  };
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, statusOfCode(code), body);
}

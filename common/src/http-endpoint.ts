import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorMessage, MeshError } from './errors.ts';
import type { Component, StopContext } from './lifecycle.ts';
import type { Logger } from './log.ts';

export type HttpEndpointErrorCode =
  /** The server could not listen on its address (in use, not local, no permission). */
  | 'HTTP_LISTEN_FAILED'
  /** The port was asked for before the server started listening. */
  | 'NOT_STARTED';

export class HttpEndpointError extends MeshError<HttpEndpointErrorCode> {}

/** Answers one request; a throw or rejection becomes a 500. `url` is the parsed request target. */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => void | Promise<void>;

/** Where an endpoint listens. */
export interface HttpListen {
  readonly bindAddress: string;
  readonly port: number;
}

export interface HttpEndpointOptions {
  /** The component name (`admin`, `stats`, `monitoring-http`), also the log field `server`. */
  readonly name: string;
  /** How error messages name the server (`the admin server`); the name by default. */
  readonly label?: string;
  readonly listen: HttpListen;
  readonly handler: HttpHandler;
  readonly log: Logger;
}

/**
 * A binary's own small HTTP server (admin, debug, metrics, readiness) as a lifecycle component.
 * Stopping closes the listener, closes idle keep-alive connections at once, lets requests in
 * flight finish, and closes what is left when the drain deadline passes.
 */
export class HttpEndpoint implements Component {
  readonly name: string;
  readonly #o: HttpEndpointOptions;
  readonly #label: string;
  readonly #server: Server;
  #port: number | undefined;

  constructor(options: HttpEndpointOptions) {
    this.name = options.name;
    this.#o = options;
    this.#label = options.label ?? options.name;
    this.#server = createServer((req, res) => void this.#serve(req, res));
    // Probes and scrapes are short; a client holding a socket open must not hold up a stop.
    this.#server.keepAliveTimeout = 5_000;
    this.#server.headersTimeout = 10_000;
    this.#server.requestTimeout = 30_000;
  }

  /** The bound port (the real one when 0 was asked for). */
  get port(): number {
    if (this.#port === undefined) {
      throw new HttpEndpointError('NOT_STARTED', `${this.#label} has not started listening yet`);
    }
    return this.#port;
  }

  async start(): Promise<void> {
    const { bindAddress, port } = this.#o.listen;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(
          new HttpEndpointError(
            'HTTP_LISTEN_FAILED',
            `${this.#label} cannot listen on ${formatHostPort(bindAddress, port)}: ${errorMessage(err)}`,
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
    this.#o.log.info(
      { server: this.name, address: formatHostPort(bindAddress, this.#port) },
      'http listening',
    );
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
      const url = new URL(req.url ?? '/', 'http://localhost');
      await this.#o.handler(req, res, url);
    } catch (err) {
      this.#o.log.error({ server: this.name, url: req.url, err: errorMessage(err) }, 'http handler failed');
      if (!res.headersSent) sendText(res, 500, 'internal error\n');
      else res.destroy();
    }
  }
}

/** `host:port`, with an IPv6 host in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Writes a pretty JSON body (admin and debug output is read by people). */
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

// Debug views hold bigints (protobuf int64), Maps and Sets; render them instead of throwing.
function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Map) return Object.fromEntries(value);
  if (value instanceof Set) return [...value];
  return value;
}

/** Reads a request body up to `limit` bytes; throws a RangeError past it. */
export async function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new RangeError(`request body is over ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

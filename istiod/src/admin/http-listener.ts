import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorMessage } from '@ambient/common/errors';
import type { Component, StopContext } from '@ambient/common/lifecycle';
import type { Logger } from '@ambient/common/log';
import type { ListenConfig } from '../config.ts';
import { IstiodError } from '../errors.ts';

/** Answers one request; a throw or rejection becomes a 500. */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

export interface HttpListenerOptions {
  /** The component name (`admin-http`, `monitoring-http`). */
  readonly name: string;
  readonly listen: ListenConfig;
  readonly handler: HttpHandler;
  readonly log: Logger;
}

/**
 * A small HTTP server as a lifecycle component, for istiod's debug (8080) and monitoring (15014)
 * ports. Stopping closes the listener, closes idle keep-alive connections at once, lets requests
 * in flight finish, and closes what is left when the drain deadline passes.
 */
export class HttpListener implements Component {
  readonly name: string;
  readonly #o: HttpListenerOptions;
  readonly #server: Server;
  #port: number | undefined;

  constructor(options: HttpListenerOptions) {
    this.name = options.name;
    this.#o = options;
    this.#server = createServer((req, res) => this.#serve(req, res));
    // Probes and scrapes are short; a client that holds a socket open must not hold up a stop.
    this.#server.keepAliveTimeout = 5_000;
    this.#server.headersTimeout = 10_000;
    this.#server.requestTimeout = 30_000;
  }

  /** The bound port (the real one when 0 was asked for). */
  get port(): number {
    if (this.#port === undefined) {
      throw new IstiodError('NOT_STARTED', `${this.name} has not started listening yet`);
    }
    return this.#port;
  }

  async start(): Promise<void> {
    const { bindAddress, port } = this.#o.listen;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(
          new IstiodError(
            'HTTP_LISTEN_FAILED',
            `${this.name} cannot listen on ${bindAddress}:${port}: ${errorMessage(err)}`,
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
    this.#o.log.info({ listener: this.name, address: bindAddress, port: this.#port }, 'http listening');
  }

  async stop(ctx: StopContext): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();
    const force = (): void => {
      this.#server.closeAllConnections();
    };
    if (ctx.force.aborted) force();
    else ctx.force.addEventListener('abort', force, { once: true });
    await closed;
    ctx.force.removeEventListener('abort', force);
  }

  async #serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      await this.#o.handler(req, res);
    } catch (err) {
      this.#o.log.error({ listener: this.name, url: req.url, err: errorMessage(err) }, 'http handler failed');
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('internal error\n');
      } else {
        res.destroy();
      }
    }
  }
}

/** Writes a JSON body (pretty, as the debug endpoints are read by people). */
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

// Debug views hold bigints (protobuf int64) and Maps in places; render them instead of throwing.
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

import type * as net from 'node:net';
import { formatSocketAddr } from '@ambient/common/model';
import type { ProxyContext } from './inputs.ts';
import type { ProxyListener } from './socket-factory.ts';

/**
 * Binds one of a pod's capture listeners (15001 outbound, 15006 inbound plaintext) through the
 * pod's socket factory and hands each accepted socket to `handle`. A handler that throws is a bug,
 * not a connection failure: it is logged and the socket destroyed so the client is not left hanging.
 */
export async function listenCapture(
  ctx: ProxyContext,
  port: number,
  component: string,
  handle: (socket: net.Socket) => Promise<void>,
): Promise<ProxyListener> {
  const listener = await ctx.inputs.socketFactory.listen(port);
  listener.server.on('connection', (socket: net.Socket) => {
    handle(socket).catch((err: unknown) => {
      ctx.log.error({ err }, `${component} connection handling failed`);
      socket.destroy();
    });
  });
  ctx.log.info(
    { address: formatSocketAddr(listener.address), component, transparent: listener.transparent },
    'listener established',
  );
  return listener;
}

/**
 * What the outbound and the inbound plaintext proxies share: one capture listener on `port`,
 * bound by {@link listen}, closed by {@link close}; each accepted socket goes to {@link handle}.
 */
export abstract class CaptureProxy {
  protected readonly ctx: ProxyContext;
  readonly #port: number;
  readonly #component: string;
  #listener: ProxyListener | undefined;

  constructor(ctx: ProxyContext, port: number, component: string) {
    this.ctx = ctx;
    this.#port = port;
    this.#component = component;
  }

  get listener(): ProxyListener | undefined {
    return this.#listener;
  }

  async listen(): Promise<ProxyListener> {
    this.#listener = await listenCapture(this.ctx, this.#port, this.#component, (socket) =>
      this.handle(socket),
    );
    return this.#listener;
  }

  /** Stops accepting; connections in flight carry on. */
  close(): void {
    this.#listener?.server.close();
  }

  /** Proxies one accepted connection; rejects only on a bug (see {@link listenCapture}). */
  protected abstract handle(socket: net.Socket): Promise<void>;
}

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

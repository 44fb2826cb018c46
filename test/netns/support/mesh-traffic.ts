/** Apps and clients for mesh tests: sockets made inside pod netns by the native addon, used here. */
import { createHash } from 'node:crypto';
import { createServer, type Server, Socket } from 'node:net';
import { closeFd, connectFd, listenInNetns, openNetns } from '@ambient/native';
import type { Pod } from '../../harness/index.ts';

/** An echo server inside a pod (bound on 0.0.0.0 as a container app), recording each peer address. */
export interface EchoApp {
  readonly server: Server;
  readonly peers: string[];
  readonly sockets: Set<Socket>;
}

export async function startEchoApp(pod: Pod, port: number): Promise<EchoApp> {
  const peers: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    peers.push(s.remoteAddress ?? '');
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    s.pipe(s);
  });
  const fd = openNetns(pod.netnsPath);
  try {
    await listenInNetns(server, { netnsFd: fd, address: '0.0.0.0', port, transparent: 'off' });
  } finally {
    closeFd(fd);
  }
  return { server, peers, sockets };
}

/** Connects from inside `pod` as its app would (captured unless `mark` is ztunnel's). */
export async function connectFrom(
  pod: Pod,
  address: string,
  port: number,
  options: { mark?: number; timeoutMs?: number; source?: string } = {},
): Promise<Socket> {
  const netnsFd = openNetns(pod.netnsPath);
  try {
    const fd = await connectFd({
      netnsFd,
      address,
      port,
      timeoutMs: options.timeoutMs ?? 5000,
      ...(options.mark === undefined ? {} : { mark: options.mark }),
      ...(options.source === undefined ? {} : { source: { address: options.source, transparent: true } }),
    });
    const s = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    s.on('error', () => {});
    return s;
  } finally {
    closeFd(netnsFd);
  }
}

/** Reads a socket until it ends or closes; resolves with what arrived (never rejects). */
export function readAll(socket: Socket, timeoutMs = 20_000): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
    }, timeoutMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * Sends `message` from `pod` to `address:port` and half-closes: 'ok' when the echo came back
 * whole, 'denied' when the connection failed or closed without it.
 */
export async function tryEcho(
  pod: Pod,
  address: string,
  port: number,
  options: { mark?: number; message?: string; timeoutMs?: number } = {},
): Promise<'ok' | 'denied'> {
  const message = options.message ?? `hello-${Date.now()}`;
  let s: Socket;
  try {
    s = await connectFrom(pod, address, port, { ...options, timeoutMs: options.timeoutMs ?? 5000 });
  } catch {
    return 'denied';
  }
  const reply = readAll(s, options.timeoutMs ?? 5000);
  s.end(message);
  return (await reply).toString() === message ? 'ok' : 'denied';
}

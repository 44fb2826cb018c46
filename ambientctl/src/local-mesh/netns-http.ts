/**
 * Plain HTTP and TCP probes from inside a network namespace, with the socket created there by the
 * addon (no `nsenter curl` per probe): component readiness, ztunnel's admin and metrics ports,
 * and pod readiness probes from the node (as kubelet probes from the host).
 */
import { request } from 'node:http';
import { closeFd, connectInNetns, openNetns } from '@ambient/native';

export interface HttpAnswer {
  readonly status: number;
  readonly body: string;
}

async function connectIn(netnsPath: string, address: string, port: number, timeoutMs: number) {
  const fd = openNetns(netnsPath);
  try {
    return await connectInNetns({ netnsFd: fd, address, port, timeoutMs });
  } finally {
    closeFd(fd);
  }
}

/** GET `http://<address>:<port><path>` from inside the netns. Rejects on connect errors and timeouts. */
export async function httpGetInNetns(
  netnsPath: string,
  address: string,
  port: number,
  path: string,
  timeoutMs = 3000,
): Promise<HttpAnswer> {
  const deadline = Date.now() + timeoutMs;
  const socket = await connectIn(netnsPath, address, port, timeoutMs);
  return new Promise<HttpAnswer>((resolve, reject) => {
    const req = request(
      {
        host: address,
        port,
        path,
        method: 'GET',
        // No agent: with one, Node would dial through the agent instead of using this socket.
        createConnection: () => socket,
        headers: { connection: 'close' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      },
    );
    const timer = setTimeout(
      () => req.destroy(new Error(`GET ${address}:${port}${path}: no answer within ${timeoutMs} ms`)),
      Math.max(1, deadline - Date.now()),
    );
    req.on('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
    req.end();
  });
}

/** Whether a TCP connection to `address:port` opens from inside the netns (a tcpSocket probe). */
export async function tcpOpensInNetns(
  netnsPath: string,
  address: string,
  port: number,
  timeoutMs = 1000,
): Promise<boolean> {
  try {
    const socket = await connectIn(netnsPath, address, port, timeoutMs);
    socket.destroy();
    return true;
  } catch {
    return false;
  }
}

/**
 * The `ambient/echo` sample image: an HTTP server that answers every request with the pod that
 * served it and what it received (method, path, headers, the peer address as the app sees it),
 * as JSON. `GET /healthz` answers `ok` for readiness probes. It imports nothing from the
 * workspace, so it starts fast and runs on any Node.
 *
 *   node echo.ts [--port 8080]
 *
 * The port defaults to PORT (8080). The pod runner sets POD_NAME, POD_NAMESPACE, POD_IP and NODE_NAME (the downward API's usual
 * names). One log line per request goes to stdout, which is the pod's log file.
 */
import { createServer } from 'node:http';
import { readSampleEnv } from './config.ts';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : (process.argv[i + 1] ?? fallback);
}

const env = readSampleEnv();
const port = Number(flag('port', String(env.port)));
const identity = { pod: env.podName, namespace: env.namespace, node: env.node, podIp: env.podIp };

const server = createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  // Read the body so a POST is answered after it arrived; its size is part of the echo.
  let bytes = 0;
  req.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  req.on('end', () => {
    const answer = {
      ...identity,
      method: req.method,
      path: req.url,
      headers: req.headers,
      bodyBytes: bytes,
      peer: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
    };
    res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(answer)}\n`);
    process.stdout.write(`${new Date().toISOString()} ${req.method} ${req.url} from ${answer.peer} -> 200\n`);
  });
});

server.listen(port, () => {
  process.stdout.write(
    `${new Date().toISOString()} echo ${identity.namespace}/${identity.pod} listening on :${port}\n`,
  );
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    // Keep-alive connections would hold close() open; the pod is going away anyway.
    server.closeAllConnections();
  });
}

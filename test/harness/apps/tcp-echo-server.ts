// A TCP echo server for pods: echoes every byte back and prints one JSON line per event on
// stdout, so a test can wait for `listening` and see each peer's address as the server saw it.
//
//   node tcp-echo-server.ts [--port 7000] [--host 0.0.0.0]
//
// stdout: {"event":"listening","address":"0.0.0.0","port":7000}
//         {"event":"connection","remoteAddress":"10.1.2.3","remotePort":40000,"localAddress":…,"localPort":7000}
//         {"event":"closed","remoteAddress":…,"remotePort":…,"bytes":5}
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '7000' }, host: { type: 'string', default: '0.0.0.0' } },
});
const emit = (event: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(event)}\n`);
};

const server = createServer((socket) => {
  const peer = { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
  emit({ event: 'connection', ...peer, localAddress: socket.localAddress, localPort: socket.localPort });
  let bytes = 0;
  socket.on('data', (chunk) => {
    bytes += chunk.length;
  });
  socket.pipe(socket);
  socket.on('error', (err) => emit({ event: 'error', ...peer, message: err.message }));
  socket.on('close', () => emit({ event: 'closed', ...peer, bytes }));
});
server.on('error', (err) => {
  process.stderr.write(`tcp-echo-server: ${err.message}\n`);
  process.exit(1);
});
server.listen(Number(values.port), values.host, () => {
  const addr = server.address();
  if (addr !== null && typeof addr === 'object')
    emit({ event: 'listening', address: addr.address, port: addr.port });
});
process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});

// A TCP server for pods that tells each client who it is and who it saw: it reads until the client
// half-closes, then answers one JSON line and closes. A test that gets this line back knows the
// bytes reached this real server (not some listener in between) and which source address arrived.
//
//   node peer-report-server.ts --port 8080 --marker pod-b
//
// reply and stdout: {"event":"served","marker":"pod-b","localAddress":"10.1.2.3","localPort":8080,
//                    "remoteAddress":"10.1.1.2","remotePort":40000,"received":"hello"}
// stdout at start:  {"event":"listening","address":"0.0.0.0","port":8080}
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    host: { type: 'string', default: '0.0.0.0' },
    marker: { type: 'string', default: 'peer-report-server' },
  },
});
const emit = (event: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(event)}\n`);
};

// allowHalfOpen: the client's FIN must not close our side before the answer is written.
const server = createServer({ allowHalfOpen: true }, (socket) => {
  const seen = {
    localAddress: socket.localAddress,
    localPort: socket.localPort,
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort,
  };
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('end', () => {
    const report = {
      event: 'served',
      marker: values.marker,
      ...seen,
      received: Buffer.concat(chunks).toString('utf8'),
    };
    emit(report);
    socket.end(`${JSON.stringify(report)}\n`);
  });
  socket.on('error', (err) => emit({ event: 'error', ...seen, message: err.message }));
});
server.on('error', (err) => {
  process.stderr.write(`peer-report-server: ${err.message}\n`);
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

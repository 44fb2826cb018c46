// A one-shot TCP client for pods: connects, sends a message, half-closes, reads until the peer
// closes, and prints one JSON line with what it received and the addresses it used.
//
//   node tcp-client.ts --host 10.1.2.3 [--port 7000] [--message hello] [--timeout-ms 5000]
//
// stdout: {"localAddress":"10.1.1.2","localPort":40000,"remoteAddress":"10.1.2.3","remotePort":7000,"received":"hello"}
// Exit 1 with the reason on stderr when the connection fails or times out.
import { connect } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string', default: '7000' },
    message: { type: 'string', default: 'hello' },
    'timeout-ms': { type: 'string', default: '5000' },
  },
});
if (values.host === undefined) {
  process.stderr.write('tcp-client: --host is required\n');
  process.exit(2);
}
const fail = (why: string): never => {
  process.stderr.write(`tcp-client: ${why}\n`);
  process.exit(1);
};
const socket = connect({ host: values.host, port: Number(values.port) });
const chunks: Buffer[] = [];
const timer = setTimeout(
  () => fail(`no complete exchange with ${values.host}:${values.port} within ${values['timeout-ms']} ms`),
  Number(values['timeout-ms']),
);
// Read at connect: once both sides have closed, the socket no longer reports its addresses.
let addresses: Record<string, unknown> = {};
socket.on('connect', () => {
  addresses = {
    localAddress: socket.localAddress,
    localPort: socket.localPort,
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort,
  };
  socket.end(values.message);
});
socket.on('data', (c) => chunks.push(c));
socket.on('error', (err) => fail(`${values.host}:${values.port}: ${err.message}`));
socket.on('end', () => {
  clearTimeout(timer);
  process.stdout.write(
    `${JSON.stringify({ ...addresses, received: Buffer.concat(chunks).toString('utf8') })}\n`,
  );
});

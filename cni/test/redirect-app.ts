// The "application" of the redirection tests and bench, run inside pods (pod.spawnNode /
// pod.execNode) so that its sockets belong to the pod's cgroup, as a real app's do.
//
//   serve  --port P [--host H] [--greet]   echo server; --greet sends one byte first; prints
//                                           {"event":"listening"} and {"event":"connection",remoteAddress,remotePort}
//   client --host H --port P [--message M] [--mark N] [--timeout-ms T]
//                                           connect, send, half-close, read to the end; prints
//                                           {localAddress,localPort,remoteAddress,remotePort,received}
//                                           (remote* from getpeername, as the app sees it)
//   dns-responder --port P                  UDP and TCP on 127.0.0.1:P answering `answer:<query>`
//                                           (a stand-in for ztunnel's DNS proxy)
//   dns    --host H --port P --message M    one UDP query; prints {received, from:{address,port}}
//                                           (from = the source recvmsg reports)
//   bench  --host H --port P --connections N --requests N [--size B]
//                                           N sequential connects to a --greet server timed to the
//                                           first byte, then N request/responses of B bytes on one
//                                           connection; prints {"connect_us":[…],"rr_us":[…]}
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect, createServer, isIPv6, Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { connectFd } from '@ambient/native';

const [mode = '', ...rest] = process.argv.slice(2);
const { values } = parseArgs({
  args: rest,
  options: {
    host: { type: 'string', default: '0.0.0.0' },
    port: { type: 'string', default: '8080' },
    greet: { type: 'boolean', default: false },
    message: { type: 'string', default: 'hello' },
    mark: { type: 'string' },
    'timeout-ms': { type: 'string', default: '5000' },
    connections: { type: 'string', default: '100' },
    requests: { type: 'string', default: '100' },
    size: { type: 'string', default: '1024' },
  },
});
const port = Number(values.port);
const host = values.host;
const print = (v: unknown): void => {
  process.stdout.write(`${JSON.stringify(v)}\n`);
};
const fail = (why: string): never => {
  process.stderr.write(`redirect-app ${mode}: ${why}\n`);
  process.exit(1);
};

async function serve(): Promise<void> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.setNoDelay(true);
    print({ event: 'connection', remoteAddress: socket.remoteAddress, remotePort: socket.remotePort });
    socket.on('error', () => socket.destroy());
    if (values.greet) socket.write('g');
    socket.pipe(socket);
  });
  server.listen(port, host);
  await once(server, 'listening');
  print({ event: 'listening', port });
  process.on('SIGTERM', () => process.exit(0));
}

async function open(): Promise<Socket> {
  if (values.mark !== undefined) {
    const fd = await connectFd({ address: host, port, mark: Number(values.mark), timeoutMs: 5000 });
    return new Socket({ fd, readable: true, writable: true });
  }
  const socket = connect({ host, port });
  await once(socket, 'connect');
  return socket;
}

async function client(): Promise<void> {
  const timer = setTimeout(
    () => fail(`no complete exchange with ${host}:${port}`),
    Number(values['timeout-ms']),
  );
  const socket = await open();
  const addresses = {
    localAddress: socket.localAddress,
    localPort: socket.localPort,
    remoteAddress: socket.remoteAddress,
    remotePort: socket.remotePort,
  };
  socket.end(values.message);
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    received += d;
  });
  await once(socket, 'end');
  clearTimeout(timer);
  socket.destroy();
  print({ ...addresses, received });
}

async function dnsResponder(): Promise<void> {
  const udp = createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    udp.send(`answer:${msg.toString()}`, rinfo.port, rinfo.address);
  });
  udp.bind(port, '127.0.0.1');
  await once(udp, 'listening');
  const tcp = createServer({ allowHalfOpen: true }, (socket) => {
    let query = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      query += d;
    });
    socket.on('end', () => socket.end(`answer:${query}`));
    socket.on('error', () => socket.destroy());
  });
  tcp.listen(port, '127.0.0.1');
  await once(tcp, 'listening');
  print({ event: 'listening', port });
  process.on('SIGTERM', () => process.exit(0));
}

async function dns(): Promise<void> {
  const timer = setTimeout(() => fail(`no answer from ${host}:${port}`), Number(values['timeout-ms']));
  const socket = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
  const answer = once(socket, 'message');
  socket.send(values.message, port, host);
  const [msg, rinfo] = (await answer) as [Buffer, { address: string; port: number }];
  clearTimeout(timer);
  socket.close();
  print({ received: msg.toString(), from: { address: rinfo.address, port: rinfo.port } });
}

/** Resolves once `n` more bytes have arrived on `socket`. */
function readBytes(socket: Socket, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (chunk: Buffer): void => {
      got += chunk.length;
      if (got >= n) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

async function bench(): Promise<void> {
  const connections = Number(values.connections);
  const requests = Number(values.requests);
  const size = Number(values.size);
  const connectUs: number[] = [];
  for (let i = 0; i < connections; i++) {
    const t0 = process.hrtime.bigint();
    const socket = connect({ host, port });
    socket.setNoDelay(true);
    await readBytes(socket, 1);
    connectUs.push(Number(process.hrtime.bigint() - t0) / 1000);
    socket.destroy();
  }
  const socket = connect({ host, port });
  socket.setNoDelay(true);
  await readBytes(socket, 1);
  const payload = Buffer.alloc(size, 'x');
  const rrUs: number[] = [];
  for (let i = 0; i < requests; i++) {
    const t0 = process.hrtime.bigint();
    const done = readBytes(socket, size);
    socket.write(payload);
    await done;
    rrUs.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  socket.destroy();
  print({ connect_us: connectUs, rr_us: rrUs });
}

const modes: Record<string, () => Promise<void>> = {
  serve,
  client,
  bench,
  dns,
  'dns-responder': dnsResponder,
};
const run = modes[mode];
if (!run) fail(`unknown mode ${JSON.stringify(mode)}; use serve, client or bench`);
else run().catch((err: unknown) => fail((err as Error).message));

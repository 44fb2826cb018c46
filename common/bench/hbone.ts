/**
 * `npm run bench:hbone`: one tuned HBONE CONNECT stream against raw Node TLS, both TLS 1.3 with the
 * same certificates and cipher, over the same loopback path, in the same run. The server side runs
 * in a child process for both variants. Each round moves the same number of bytes through each
 * variant, alternating which goes first; the clock stops when the last byte has arrived (an
 * upload is confirmed by the server's byte count).
 *
 * Options: --mib <n> per round and variant (default 1024), --rounds <n> (default 5),
 * --chunk <KiB> write size (default 1024), --direction up|down|both (default both: each round
 * does an upload and a download per variant; throughput is the median over all of them),
 * --only tls|hbone (for profiling). Prints one JSON line last.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as tls from 'node:tls';
import { parseArgs } from 'node:util';
import { connectHbone, openTunnel } from '../src/hbone/client.ts';
import { resolveHboneSettings } from '../src/hbone/settings.ts';
import { makeIdentity } from '../src/identity/identity.ts';
import { TestCa, tlsCredentials } from '../src/testing/pki.ts';
import { hboneClientTlsOptions } from '../src/tls/secure-context.ts';
import { REQUEST_BYTES } from './hbone-server.ts';

type Direction = 'up' | 'down';
type Variant = 'tls' | 'hbone';

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '5' },
    chunk: { type: 'string', default: '1024' },
    direction: { type: 'string', default: 'both' },
    only: { type: 'string' },
  },
});
const TOTAL = Number(values.mib) * 1024 * 1024;
const ROUNDS = Number(values.rounds);
const CHUNK = Number(values.chunk) * 1024;
const DIRECTIONS: Direction[] =
  values.direction === 'both' ? ['up', 'down'] : [values.direction as Direction];
const VARIANTS: Variant[] = values.only === undefined ? ['tls', 'hbone'] : [values.only as Variant];

const serverId = makeIdentity('cluster.local', 'bench', 'server');
const clientId = makeIdentity('cluster.local', 'bench', 'client');
const ca = await TestCa.create();
const serverCreds = tlsCredentials(await ca.issue({ identity: serverId }));
const clientCreds = tlsCredentials(await ca.issue({ identity: clientId }));
const settings = resolveHboneSettings();
// Larger than every buffer on the path, so no write is a replay of a cached page.
const BLOCK = 64 * 1024 * 1024 + 4096;

const child = fork(new URL('./hbone-server.ts', import.meta.url), [], {
  execArgv: ['--conditions=@ambient/source'],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
});
child.send({ credentials: serverCreds, settings, chunk: CHUNK, block: BLOCK });
const [{ tlsPort, hbonePort }] = (await once(child, 'message')) as [{ tlsPort: number; hbonePort: number }];

async function serverCpu(): Promise<number> {
  child.send({ cpu: true });
  const [{ cpu }] = (await once(child, 'message')) as [{ cpu: NodeJS.CpuUsage }];
  return (cpu.user + cpu.system) / 1e6;
}

const block = randomBytes(BLOCK);
const request = (direction: Direction): Buffer =>
  Buffer.from(
    direction === 'up'
      ? 'U'.padEnd(REQUEST_BYTES, ' ')
      : `D${String(TOTAL).padStart(REQUEST_BYTES - 1, '0')}`,
  );

interface RunResult {
  readonly seconds: number;
  /** CPU seconds per wall second of the client (this process) and the server (the child). */
  readonly clientCores: number;
  readonly serverCores: number;
  /** Mean size of the reads the receiving side saw. */
  readonly readSize: number;
}

async function run(
  stream: NodeJS.ReadableStream & NodeJS.WritableStream,
  direction: Direction,
): Promise<RunResult> {
  const cpuServer = await serverCpu();
  const cpuClient = process.cpuUsage();
  const started = performance.now();
  let received = 0;
  let reads = 0;
  let reply = '';
  stream.on('data', (d: Buffer) => {
    received += d.length;
    reads++;
    if (direction === 'up') reply += d.toString('latin1');
  });
  const ended = once(stream, 'end');
  stream.write(request(direction));
  if (direction === 'up') {
    let sent = 0;
    while (sent < TOTAL) {
      const off = sent % block.length;
      const n = Math.min(CHUNK, TOTAL - sent, block.length - off);
      sent += n;
      if (!stream.write(block.subarray(off, off + n))) await once(stream, 'drain');
    }
    stream.end();
  }
  await ended;
  const seconds = (performance.now() - started) / 1000;
  const client = process.cpuUsage(cpuClient);
  const server = (await serverCpu()) - cpuServer;
  let readSize = received / Math.max(reads, 1);
  if (direction === 'up') {
    const [bytes, serverReadSize] = reply.trim().split(' ').map(Number);
    if (bytes !== TOTAL) throw new Error(`server received ${reply.trim()} bytes, expected ${TOTAL}`);
    readSize = serverReadSize ?? 0;
  } else if (received !== TOTAL) {
    throw new Error(`client received ${received} bytes, expected ${TOTAL}`);
  }
  return {
    seconds,
    clientCores: (client.user + client.system) / 1e6 / seconds,
    serverCores: server / seconds,
    readSize,
  };
}

const negotiated = new Set<string>();

async function runTls(direction: Direction): Promise<RunResult> {
  const socket = tls.connect({
    ...hboneClientTlsOptions(clientCreds, [serverId]),
    // The same TLS settings as HBONE; the plain server negotiates no application protocol.
    ALPNProtocols: undefined,
    host: '127.0.0.1',
    port: tlsPort,
  });
  await once(socket, 'secureConnect');
  socket.setNoDelay(true);
  negotiated.add(`tls ${socket.getProtocol()} ${socket.getCipher().name}`);
  const result = await run(socket, direction);
  socket.destroy();
  return result;
}

async function runHbone(direction: Direction): Promise<RunResult> {
  const conn = await connectHbone({
    address: '127.0.0.1',
    port: hbonePort,
    credentials: clientCreds,
    expectedIdentities: [serverId],
    settings,
  });
  negotiated.add(
    `hbone ${conn.socket.getProtocol()} ${conn.socket.getCipher().name} alpn ${conn.socket.alpnProtocol}`,
  );
  const tunnel = await openTunnel(conn.session, { target: '10.0.0.1:8080' });
  const result = await run(tunnel, direction);
  conn.session.destroy();
  return result;
}

const mbps = (r: RunResult): number => TOTAL / 1e6 / r.seconds;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

console.log(
  `bench:hbone: ${TOTAL / 1024 / 1024} MiB per run, ${ROUNDS} rounds × ${DIRECTIONS.join('+')}, ` +
    `${CHUNK / 1024} KiB writes, server in a child process (pid ${child.pid})`,
);
const results: Record<Variant, number[]> = { tls: [], hbone: [] };
const pairRatios: number[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const direction of DIRECTIONS) {
    // Alternate which variant goes first so neither always meets a warmer or busier machine.
    const order = round % 2 ? VARIANTS : [...VARIANTS].reverse();
    const pair: Partial<Record<Variant, number>> = {};
    for (const variant of order) {
      const r = await (variant === 'tls' ? runTls : runHbone)(direction);
      results[variant].push(mbps(r));
      pair[variant] = mbps(r);
      console.log(
        `round ${round} ${direction.padEnd(4)} ${variant.padEnd(5)} ${mbps(r).toFixed(0).padStart(5)} MB/s ` +
          `(${r.seconds.toFixed(2)} s; client ${r.clientCores.toFixed(2)} cores, server ${r.serverCores.toFixed(2)} cores; ` +
          `receiver reads ${(r.readSize / 1024).toFixed(1)} KiB)`,
      );
    }
    if (pair.tls !== undefined && pair.hbone !== undefined) pairRatios.push(pair.hbone / pair.tls);
  }
}
child.disconnect();

const tlsMBps = results.tls.length > 0 ? median(results.tls) : Number.NaN;
const tunnelMBps = results.hbone.length > 0 ? median(results.hbone) : Number.NaN;
const ratio = tunnelMBps / tlsMBps;
console.log(`negotiated: ${[...negotiated].join('; ')}`);
console.log(`raw TLS      median ${tlsMBps.toFixed(0)} MB/s`);
console.log(`HBONE tunnel median ${tunnelMBps.toFixed(0)} MB/s`);
console.log(
  `ratio ${ratio.toFixed(3)} (target >= 0.7); per-run ratios ${pairRatios.map((x) => x.toFixed(2)).join(' ')}, ` +
    `median ${pairRatios.length > 0 ? median(pairRatios).toFixed(3) : 'n/a'}`,
);
console.log(
  JSON.stringify({
    bench: 'hbone',
    tunnel_MBps: Math.round(tunnelMBps),
    tls_MBps: Math.round(tlsMBps),
    ratio: Math.round(ratio * 1000) / 1000,
  }),
);

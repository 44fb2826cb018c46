import assert from 'node:assert/strict';
import type * as net from 'node:net';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { payload, readToEnd, sha256, TestMesh } from './proxy-harness.ts';

// Garbage would hide what is really retained: collect before measuring.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const KiB = 1024;
const MiB = 1024 * KiB;

/** Writes `chunk` as long as the socket takes it; resolves when no drain came for `quietMs`. */
async function writeUntilStalled(
  socket: net.Socket,
  chunk: Buffer,
  quietMs: number,
  maxBytes: number,
): Promise<number> {
  let written = 0;
  for (;;) {
    while (written < maxBytes && socket.write(chunk)) written += chunk.length;
    if (written >= maxBytes) return written;
    written += chunk.length;
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        socket.off('drain', onDrain);
        resolve(false);
      }, quietMs);
      const onDrain = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      socket.once('drain', onDrain);
    });
    if (!drained) return written;
  }
}

// Checklist 38, scaled down: 256 KiB stream / 1 MiB connection windows instead of 4 / 16 MiB.
test('a stalled reader stalls its sender with bounded proxy memory; another stream on the same HBONE connection still flows', async () => {
  await using mesh = await TestMesh.create({
    subnet: 63,
    config: { hbone: { streamWindowSize: 256 * KiB, connectionWindowSize: 1 * MiB } },
  });
  const client = mesh.addPod({ name: 'client', namespace: 'ns', serviceAccount: 'client', host: 1 });
  const server = mesh.addPod({ name: 'server', namespace: 'ns', serviceAccount: 'server', host: 2 });
  const clientProxy = await mesh.startProxy(client);
  await mesh.startProxy(server);

  let slowSocket: net.Socket | undefined;
  let slowReceived = 0;
  const slow = await mesh.startApp(server.ip, 7000, (socket) => {
    socket.on('error', () => {});
    slowSocket = socket;
    socket.pause(); // reads nothing until released
  });
  const fast = await mesh.startApp(server.ip, 7001);

  // Warm the pool so both streams share one HBONE connection.
  const warm = await mesh.connect(client.ip, fast.address);
  const warmReply = readToEnd(warm);
  warm.end('warm');
  assert.equal((await warmReply).toString(), 'warm');
  const connections = clientProxy.inputs.pool.stats.connectionsCreated;

  gc();
  const baseline = process.memoryUsage().external;

  const sender = await mesh.connect(client.ip, slow.address);
  sender.on('error', () => {});
  const chunk = Buffer.alloc(64 * KiB, 7);
  const attempted = 256 * MiB;
  const written = await writeUntilStalled(sender, chunk, 500, attempted);
  assert.ok(written < 64 * MiB, `the sender must be held back, but ${written} bytes went out`);
  gc();
  const grown = process.memoryUsage().external - baseline;
  // Node itself keeps a few MiB of native read/write state per stalled TCP relay (a bare
  // socket.pipe relay shows ~4 MiB); the HTTP/2 part is held to the stream window. What matters
  // is that it is a fixed amount, far below what the sender tried to push, and stops growing.
  assert.ok(grown < 32 * MiB, `proxy memory grew by ${(grown / MiB).toFixed(1)} MiB while stalled`);
  const more = await writeUntilStalled(sender, chunk, 300, attempted);
  gc();
  const grownLater = process.memoryUsage().external - baseline;
  assert.ok(more <= 2 * chunk.length, `a stalled sender stays stalled, but ${more} more bytes went out`);
  assert.ok(
    grownLater - grown < 1 * MiB,
    `memory kept growing while stalled: ${(grown / MiB).toFixed(1)} then ${(grownLater / MiB).toFixed(1)} MiB`,
  );

  // A second stream over the same HBONE connection is not starved by the stalled one.
  const { data, sha256: sent } = payload(2 * MiB);
  const second = await mesh.connect(client.ip, fast.address);
  const reply = readToEnd(second);
  second.end(data);
  const echoed = await reply;
  assert.equal(sha256(echoed), sent);
  assert.equal(
    clientProxy.inputs.pool.stats.connectionsCreated,
    connections,
    'both streams shared the connection',
  );

  // Releasing the reader lets everything through, in order and complete.
  assert.ok(slowSocket !== undefined);
  const drainedAll = new Promise<void>((resolve) => {
    (slowSocket as net.Socket).on('data', (c: Buffer) => {
      slowReceived += c.length;
    });
    (slowSocket as net.Socket).on('end', () => resolve());
  });
  slowSocket.resume();
  sender.end();
  await drainedAll;
  assert.equal(slowReceived, written + more);
});

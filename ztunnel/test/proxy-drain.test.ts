import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as net from 'node:net';
import { test } from 'node:test';
import { ProxyError } from '../src/proxy/errors.ts';
import { LocalSocketFactory } from '../src/proxy/socket-factory.ts';
import { closed, readToEnd, TestMesh } from './proxy-harness.ts';

async function refused(host: string, port: number): Promise<string | undefined> {
  const socket = net.connect({ host, port });
  try {
    await once(socket, 'connect');
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  } finally {
    socket.destroy();
  }
}

async function echoOnce(socket: net.Socket, text: string): Promise<string> {
  const got = once(socket, 'data') as Promise<[Buffer]>;
  socket.write(text);
  return (await got)[0].toString();
}

// Checklist 31, for one pod's proxy: listeners close at once; open connections may finish until
// the deadline, and are closed then.
test('graceful stop: listeners close at once, a connection that ends in time ends cleanly', async () => {
  await using mesh = await TestMesh.create({ subnet: 64 });
  const a = mesh.addPod({ name: 'a', namespace: 'ns', serviceAccount: 'a', host: 1 });
  const b = mesh.addPod({ name: 'b', namespace: 'ns', serviceAccount: 'b', host: 2 });
  const proxyA = await mesh.startProxy(a);
  const proxyB = await mesh.startProxy(b);
  await mesh.startApp(b.ip, 8080);

  const client = await mesh.connect(a.ip, { ip: b.ip, port: 8080 });
  assert.equal(await echoOnce(client, 'one'), 'one');
  const stopping = proxyB.stop({ deadline: Date.now() + 5000 });
  for (const port of [15001, 15006, 15008]) {
    await waitUntil(async () => (await refused(b.ip, port)) === 'ECONNREFUSED');
  }
  // The open connection still carries data, then closes on its own.
  assert.equal(await echoOnce(client, 'two'), 'two');
  const reply = readToEnd(client);
  client.end();
  await reply;
  const t0 = Date.now();
  await stopping;
  assert.ok(Date.now() - t0 < 2000, 'the stop ends once the last connection ended, not at the deadline');
  const line = await mesh.waitForLine((l) => l.msg === 'connection complete' && l.direction === 'inbound');
  assert.equal(line.error, undefined);
  assert.equal(proxyA.activeConnections, 0);
});

test('graceful stop past the deadline closes what is left with DRAINING', async () => {
  await using mesh = await TestMesh.create({ subnet: 65 });
  const a = mesh.addPod({ name: 'a', namespace: 'ns', serviceAccount: 'a', host: 1 });
  const b = mesh.addPod({ name: 'b', namespace: 'ns', serviceAccount: 'b', host: 2 });
  await mesh.startProxy(a);
  const proxyB = await mesh.startProxy(b);
  await mesh.startApp(b.ip, 8080);
  const client = await mesh.connect(a.ip, { ip: b.ip, port: 8080 });
  assert.equal(await echoOnce(client, 'hi'), 'hi');
  assert.equal(proxyB.activeConnections, 1);

  const t0 = Date.now();
  await proxyB.stop({ deadline: Date.now() + 300 });
  const took = Date.now() - t0;
  assert.ok(took >= 250 && took < 3000, `stopped after ${took} ms`);
  await closed(client);
  const line = await mesh.waitForLine(
    (l) => l.msg === 'connection complete' && l.direction === 'inbound' && l.error_code === 'DRAINING',
  );
  assert.equal(line.level, 'error');
  assert.equal(proxyB.activeConnections, 0);
  assert.equal(mesh.connectionManager.size, 0);
});

test('immediate stop (pod deleted) closes connections at once; a force signal does the same', async () => {
  await using mesh = await TestMesh.create({ subnet: 66 });
  const a = mesh.addPod({ name: 'a', namespace: 'ns', serviceAccount: 'a', host: 1 });
  const b = mesh.addPod({ name: 'b', namespace: 'ns', serviceAccount: 'b', host: 2 });
  const proxyA = await mesh.startProxy(a);
  await mesh.startProxy(b);
  await mesh.startApp(b.ip, 8080);
  const c1 = await mesh.connect(a.ip, { ip: b.ip, port: 8080 });
  assert.equal(await echoOnce(c1, 'x'), 'x');
  const force = new AbortController();
  const t0 = Date.now();
  const stopping = proxyA.stop({ deadline: Date.now() + 30_000, force: force.signal });
  setTimeout(() => force.abort(), 50);
  await stopping;
  assert.ok(Date.now() - t0 < 2000);
  await closed(c1);
  await mesh.waitForLine(
    (l) => l.msg === 'connection complete' && l.direction === 'outbound' && l.error_code === 'DRAINING',
  );
});

test('a listener that cannot bind fails the start with BIND_FAILED and leaves nothing bound', async () => {
  await using mesh = await TestMesh.create({ subnet: 67 });
  const a = mesh.addPod({ name: 'a', namespace: 'ns', serviceAccount: 'a', host: 1 });
  const squatter = await new LocalSocketFactory({ address: a.ip, reusePort: false }).listen(15008);
  try {
    await assert.rejects(
      mesh.startProxy(a),
      (err: unknown) => err instanceof ProxyError && err.code === 'BIND_FAILED',
    );
    await waitUntil(async () => (await refused(a.ip, 15001)) === 'ECONNREFUSED');
    await waitUntil(async () => (await refused(a.ip, 15006)) === 'ECONNREFUSED');
  } finally {
    squatter.server.close();
  }
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

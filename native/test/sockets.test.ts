import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  closeFd,
  connectInNetns,
  createListenerFd,
  currentNetnsInode,
  getMark,
  listenInNetns,
  NativeError,
  openNetns,
  setMark,
  setSendBufferSize,
  socketCookie,
} from '../lib/index.ts';
import { type Netns, sweepLeftovers, Topology } from './topology.ts';

const isRoot = process.getuid?.() === 0;

/** A server that answers each connection with one line describing the accepted socket, then ends it. */
function describingServer(): { server: Server; accepted: Socket[] } {
  const accepted: Socket[] = [];
  const server = createServer((socket) => {
    accepted.push(socket);
    socket.end(`${socket.localAddress} ${socket.localPort} ${socket.remoteAddress}\n`);
  });
  return { server, accepted };
}

async function readAll(socket: Socket): Promise<string> {
  socket.setEncoding('utf8');
  let data = '';
  socket.on('data', (chunk: string) => {
    data += chunk;
  });
  await once(socket, 'end');
  socket.destroy();
  return data;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

describe('sockets in other network namespaces', { skip: !isRoot && 'needs root for ip netns' }, () => {
  const topo = new Topology();
  let a: Netns;
  let b: Netns;
  let aFd = -1;
  let bFd = -1;

  before(() => {
    sweepLeftovers();
    a = topo.netns('a');
    b = topo.netns('b');
    topo.veth(
      { ns: a, dev: 'va', addrs: ['10.77.1.1/24', 'fd77:1::1/64'] },
      { ns: b, dev: 'vb', addrs: ['10.77.1.2/24', 'fd77:1::2/64'] },
    );
    // 10.77.9.0/24 leads to B, which does not forward: packets vanish without an ICMP error.
    b.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
    a.ip('route', 'add', '10.77.9.0/24', 'via', '10.77.1.2');
    // Spoofed sources: 10.77.8.0/24 is not a local address of A, but replies to it are delivered
    // locally (the table-100 local route ztunnel's in-pod rules also use), and B routes it back to A.
    a.ip('route', 'add', 'local', '10.77.8.0/24', 'dev', 'lo', 'table', '100');
    a.ip('rule', 'add', 'to', '10.77.8.0/24', 'lookup', '100', 'pref', '100');
    b.ip('route', 'add', '10.77.8.0/24', 'via', '10.77.1.1');
    aFd = openNetns(a.path);
    bFd = openNetns(b.path);
  });

  after(() => {
    if (aFd >= 0) closeFd(aFd);
    if (bFd >= 0) closeFd(bFd);
    topo.dispose();
  });

  test('a listener made in netns A accepts a connection from netns B on A’s address', async (t) => {
    const home = currentNetnsInode();
    const { fd, transparent } = createListenerFd({
      netnsFd: aFd,
      address: '10.77.1.1',
      port: 0,
      mark: 0x539,
    });
    assert.equal(currentNetnsInode(), home, 'the thread is back in its own namespace');
    assert.equal(transparent, true, 'root may set IP_TRANSPARENT');
    assert.equal(getMark(fd), 0x539);

    const { server, accepted } = describingServer();
    t.after(() => closeServer(server));
    server.listen({ fd });
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;

    // The client is a plain bash inside B: nothing of the addon on that side.
    const line = await b.execAsync('bash', ['-c', `exec 3<>/dev/tcp/10.77.1.1/${port}; cat <&3`]);
    assert.equal(line.trim(), `10.77.1.1 ${port} 10.77.1.2`);
    assert.equal(accepted.length, 1);
  });

  test('A’s address cannot be bound in the root namespace (without IP_TRANSPARENT)', () => {
    assert.throws(
      () => createListenerFd({ address: '10.77.1.1', port: 0, transparent: 'off' }),
      (err: unknown) =>
        err instanceof NativeError &&
        err.code === 'EADDRNOTAVAIL' &&
        err.syscall === 'bind' &&
        err.message.includes('10.77.1.1'),
    );
  });

  test('IPv6: listenInNetns in A, connectInNetns from B', async (t) => {
    const { server, accepted } = describingServer();
    t.after(() => closeServer(server));
    const bound = await listenInNetns(server, { netnsFd: aFd, address: '::', port: 0, ipv6Only: true });
    assert.equal(bound.address, '::');

    const client = await connectInNetns({
      netnsFd: bFd,
      address: 'fd77:1::1',
      port: bound.port,
      timeoutMs: 5000,
    });
    assert.equal(client.localAddress, 'fd77:1::2');
    assert.equal(client.remoteAddress, 'fd77:1::1');
    assert.equal((await readAll(client)).trim(), `fd77:1::1 ${bound.port} fd77:1::2`);
    assert.equal(accepted.length, 1);
  });

  test('outbound connect carries its mark and socket cookie', async (t) => {
    const { server } = describingServer();
    t.after(() => closeServer(server));
    const { port } = await listenInNetns(server, { netnsFd: aFd, address: '10.77.1.1', port: 0 });
    const client = await connectInNetns({
      netnsFd: bFd,
      address: '10.77.1.1',
      port,
      mark: 0x539,
      timeoutMs: 5000,
    });
    assert.equal(getMark(client), 0x539);
    setMark(client, 0x111);
    assert.equal(getMark(client), 0x111);
    const cookie = socketCookie(client);
    assert.equal(typeof cookie, 'bigint');
    assert.ok(cookie > 0n);
    assert.equal(socketCookie(client), cookie, 'the cookie is stable');
    assert.equal((await readAll(client)).trim(), `10.77.1.1 ${port} 10.77.1.2`);
  });

  test('the send buffer can be sized past net.core.wmem_max with CAP_NET_ADMIN', async (t) => {
    const { server } = describingServer();
    t.after(() => closeServer(server));
    const { port } = await listenInNetns(server, { netnsFd: aFd, address: '10.77.1.1', port: 0 });
    const client = await connectInNetns({ netnsFd: bFd, address: '10.77.1.1', port, timeoutMs: 5000 });
    const wmemMax = Number(readFileSync('/proc/sys/net/core/wmem_max', 'utf8'));
    const want = Math.max(wmemMax * 4, 8 * 1024 * 1024);
    // The kernel doubles what it grants for its own bookkeeping.
    assert.equal(setSendBufferSize(client, want), 2 * want);
    assert.throws(() => setSendBufferSize(client, 0), RangeError);
    assert.throws(() => setSendBufferSize(client, 2 ** 31), RangeError);
    await readAll(client);
  });

  test('a connect to a blackholed address times out without blocking the event loop', async () => {
    const home = currentNetnsInode();
    let ticks = 0;
    const timer = setInterval(() => {
      ticks += 1;
    }, 10);
    const started = performance.now();
    try {
      await assert.rejects(
        connectInNetns({ netnsFd: aFd, address: '10.77.9.9', port: 80, timeoutMs: 400 }),
        (err: unknown) =>
          err instanceof NativeError &&
          err.code === 'ETIMEDOUT' &&
          err.syscall === 'connect' &&
          err.retryable &&
          err.message.includes('10.77.9.9:80'),
      );
    } finally {
      clearInterval(timer);
    }
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 350 && elapsed < 3000, `timed out after ${elapsed} ms`);
    assert.ok(ticks >= 10, `the event loop ticked ${ticks} times while connecting`);
    assert.equal(currentNetnsInode(), home);
  });

  test('a refused connect reports ECONNREFUSED from SO_ERROR', async () => {
    // Port 9 in A has no listener: A answers with a RST.
    await assert.rejects(
      connectInNetns({ netnsFd: bFd, address: '10.77.1.1', port: 9, timeoutMs: 5000 }),
      (err: unknown) =>
        err instanceof NativeError && err.code === 'ECONNREFUSED' && err.syscall === 'connect',
    );
  });

  test('aborting a pending connect rejects with ECANCELED', async () => {
    const controller = new AbortController();
    const pending = connectInNetns({
      netnsFd: aFd,
      address: '10.77.9.9',
      port: 80,
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(pending, (err: unknown) => err instanceof NativeError && err.code === 'ECANCELED');
  });

  test('IP_TRANSPARENT + IP_FREEBIND connect from A uses a non-local source address', async (t) => {
    await assert.rejects(
      connectInNetns({ netnsFd: aFd, address: '10.77.1.2', port: 9, source: { address: '10.77.8.8' } }),
      (err: unknown) => err instanceof NativeError && err.code === 'EADDRNOTAVAIL' && err.syscall === 'bind',
      'without IP_TRANSPARENT the spoofed source cannot be bound',
    );

    const { server, accepted } = describingServer();
    t.after(() => closeServer(server));
    const { port } = await listenInNetns(server, { netnsFd: bFd, address: '10.77.1.2', port: 0 });
    const client = await connectInNetns({
      netnsFd: aFd,
      address: '10.77.1.2',
      port,
      source: { address: '10.77.8.8', transparent: true },
      timeoutMs: 5000,
    });
    assert.equal(client.localAddress, '10.77.8.8');
    assert.equal(
      (await readAll(client)).trim(),
      `10.77.1.2 ${port} 10.77.8.8`,
      'the server saw the spoofed source',
    );
    assert.equal(accepted[0]?.remoteAddress, '10.77.8.8');
  });

  test('mismatched families and bad addresses are typed errors', async () => {
    await assert.rejects(
      connectInNetns({ address: '10.77.1.1', port: 80, source: { address: '::1' } }),
      (err: unknown) => err instanceof NativeError && err.code === 'EAFNOSUPPORT',
    );
    assert.throws(
      () => createListenerFd({ address: 'not-an-ip', port: 0 }),
      (err: unknown) =>
        err instanceof NativeError && err.code === 'EINVAL' && err.message.includes('not-an-ip'),
    );
    assert.throws(
      () => createListenerFd({ netnsFd: 999_999, address: '0.0.0.0', port: 0 }),
      (err: unknown) => err instanceof NativeError && err.code === 'EBADF' && err.syscall === 'setns',
    );
  });
});

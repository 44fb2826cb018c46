import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  closeFd,
  currentNetnsInode,
  isNetns,
  NativeError,
  netnsInode,
  openNetns,
  openNetnsOfPid,
  SeqpacketServer,
  SeqpacketSocket,
} from '../lib/index.ts';
import { type Netns, prefix, sweepLeftovers, Topology } from './topology.ts';

const isRoot = process.getuid?.() === 0;
const dir = mkdtempSync(join(tmpdir(), `${prefix}${process.pid}-sp-`));
let sockets = 0;

after(() => rmSync(dir, { recursive: true, force: true }));

/** A listening server at a fresh path plus one connected client and its accepted peer. */
async function pair(
  t: { after(fn: () => void): void },
  serverOptions: ConstructorParameters<typeof SeqpacketServer>[0] = {},
): Promise<{ server: SeqpacketServer; client: SeqpacketSocket; peer: SeqpacketSocket; path: string }> {
  sockets += 1;
  const path = join(dir, `s${sockets}.sock`);
  const server = new SeqpacketServer(serverOptions).listen(path);
  const accepted = once(server, 'connection') as Promise<[SeqpacketSocket]>;
  const client = SeqpacketSocket.connect(path);
  const [peer] = await accepted;
  t.after(() => {
    client.close();
    peer.close();
    server.close();
  });
  return { server, client, peer, path };
}

/** Collects `count` messages from a socket, then stops listening. */
function collect(socket: SeqpacketSocket, count: number): Promise<{ data: Buffer; fds: number[] }[]> {
  return new Promise((resolve, reject) => {
    const got: { data: Buffer; fds: number[] }[] = [];
    const onMessage = (data: Buffer, fds: number[]) => {
      got.push({ data, fds });
      if (got.length === count) {
        socket.off('message', onMessage);
        socket.off('error', reject);
        resolve(got);
      }
    };
    socket.on('message', onMessage);
    socket.on('error', reject);
  });
}

function message(size: number, seed: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (seed + i * 31) & 0xff;
  return buf;
}

test('message boundaries are preserved in both directions', async (t) => {
  const { client, peer } = await pair(t);
  const sizes = [1, 2, 1000, 4096, 5000, 60_000, 3];
  const received = collect(peer, sizes.length);
  await Promise.all(sizes.map((size, i) => client.send(message(size, i))));
  const got = await received;
  assert.deepEqual(
    got.map((m) => m.data.length),
    sizes,
  );
  got.forEach((m, i) => {
    assert.ok(m.data.equals(message(sizes[i] ?? 0, i)), `message ${i} intact`);
    assert.deepEqual(m.fds, []);
  });

  const reply = collect(client, 1);
  await peer.send(Buffer.from('ack'));
  assert.equal((await reply)[0]?.data.toString(), 'ack');
});

test('sends queue without blocking while the peer does not read, in order', async (t) => {
  const { client, peer } = await pair(t);
  const count = 200;
  let done = 0;
  const sends = Array.from({ length: count }, (_, i) =>
    client.send(message(2048, i)).then(() => {
      done += 1;
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(done < count, `the kernel queue filled up (${done} of ${count} sent)`);

  const got = await collect(peer, count);
  await Promise.all(sends);
  assert.equal(done, count);
  got.forEach((m, i) => {
    assert.ok(m.data.equals(message(2048, i)), `message ${i} in order`);
  });
});

test('closing with queued sends rejects them with ECANCELED', async (t) => {
  const { client } = await pair(t);
  const sends = Array.from({ length: 100 }, (_, i) => client.send(message(1024, i)));
  const settled = Promise.allSettled(sends);
  client.close();
  const results = await settled;
  const rejected = results.filter((r) => r.status === 'rejected');
  assert.ok(rejected.length > 0, 'some sends were still queued');
  for (const r of rejected) {
    assert.ok(r.reason instanceof NativeError && r.reason.code === 'ECANCELED');
  }
  await assert.rejects(
    client.send(Buffer.from('x')),
    (err: unknown) => err instanceof NativeError && err.code === 'EBADF',
  );
});

test('an oversized message is an EMSGSIZE error (MSG_TRUNC) and closes the socket', async (t) => {
  const { client, peer } = await pair(t, { maxMessageSize: 1024 });
  // Not events.once: that would also reject with the error this test expects.
  const closed = new Promise<void>((resolve) => peer.on('close', () => resolve()));
  const failed = once(peer, 'message');
  await client.send(Buffer.alloc(2000, 1));
  await assert.rejects(
    failed,
    (err: unknown) =>
      err instanceof NativeError &&
      err.code === 'EMSGSIZE' &&
      err.syscall === 'recvmsg' &&
      /MSG_TRUNC/.test(err.message),
  );
  await closed;
  assert.equal(peer.closed, true);
});

test('too many fds is an EMSGSIZE error (MSG_CTRUNC)', async (t) => {
  const { client, peer } = await pair(t, { maxFds: 1 });
  const fd1 = openNetnsOfPid(process.pid);
  const fd2 = openNetnsOfPid(process.pid);
  t.after(() => {
    closeFd(fd1);
    closeFd(fd2);
  });
  const failed = once(peer, 'message');
  await client.send(Buffer.from('two'), [fd1, fd2]);
  await assert.rejects(
    failed,
    (err: unknown) => err instanceof NativeError && err.code === 'EMSGSIZE' && /MSG_CTRUNC/.test(err.message),
  );
});

test('an fd sent with a message arrives as an fd for the same namespace', async (t) => {
  const { client, peer } = await pair(t);
  const fd = openNetnsOfPid(process.pid);
  const received = collect(peer, 1);
  await client.send(Buffer.from('add'), [fd]);
  closeFd(fd);
  const [m] = await received;
  assert.ok(m);
  assert.equal(m.data.toString(), 'add');
  assert.equal(m.fds.length, 1);
  const [got] = m.fds;
  assert.ok(got !== undefined);
  assert.equal(isNetns(got), true);
  assert.equal(netnsInode(got), currentNetnsInode());
  closeFd(got);
});

test('the peer closing ends the stream with close', async (t) => {
  const { client, peer } = await pair(t);
  const closed = once(peer, 'close');
  peer.on('message', () => assert.fail('no message expected'));
  client.close();
  await closed;
  assert.equal(peer.closed, true);
});

test('empty messages and bad paths are typed errors', async (t) => {
  const { client, path } = await pair(t);
  await assert.rejects(
    client.send(Buffer.alloc(0)),
    (err: unknown) => err instanceof NativeError && err.code === 'EINVAL' && err.syscall === 'sendmsg',
  );
  assert.throws(
    () => SeqpacketSocket.connect(join(dir, 'nobody.sock')),
    (err: unknown) => err instanceof NativeError && err.code === 'ENOENT' && err.syscall === 'connect',
  );
  assert.throws(
    () => new SeqpacketServer().listen(path),
    (err: unknown) => err instanceof NativeError && err.code === 'EADDRINUSE' && err.syscall === 'bind',
  );
});

describe('netns fd passed to another process', { skip: !isRoot && 'needs root for ip netns' }, () => {
  const topo = new Topology();
  let pod: Netns;

  before(() => {
    sweepLeftovers();
    pod = topo.netns('sp');
    // An address that exists only in the pod's namespace: binding it proves where the socket lives.
    pod.ip('addr', 'add', '10.77.3.1/32', 'dev', 'lo');
  });
  after(() => topo.dispose());

  test('a child process opens sockets in the namespace it received over SEQPACKET', async (t) => {
    const path = join(dir, 'zds.sock');
    const server = new SeqpacketServer({ maxMessageSize: 1024, maxFds: 1 }).listen(path);
    t.after(() => server.close());
    const accepted = once(server, 'connection') as Promise<[SeqpacketSocket]>;

    const child = spawn(
      process.execPath,
      [
        '--conditions=@ambient/source',
        join(import.meta.dirname, 'fixtures', 'seqpacket-child.ts'),
        path,
        '10.77.3.1',
      ],
      { stdio: ['ignore', 'inherit', 'inherit'], timeout: 15_000 },
    );
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;

    const [conn] = await accepted;
    t.after(() => conn.close());
    const netnsFd = openNetns(pod.path);
    const reply = collect(conn, 1);
    await conn.send(Buffer.from('AddWorkload'), [netnsFd]);
    const podInode = netnsInode(netnsFd);
    closeFd(netnsFd);

    const [m] = await reply;
    assert.ok(m);
    const report = JSON.parse(m.data.toString()) as {
      request: string;
      isNetns: boolean;
      inode: number;
      home: number;
      bound: { address: string; port: number };
      peer: { local: string; remote: string; remotePort: number };
    };
    assert.equal(report.request, 'AddWorkload');
    assert.equal(report.isNetns, true);
    assert.equal(report.inode, podInode, 'the child holds the pod namespace');
    assert.equal(report.home, currentNetnsInode(), 'the child itself stayed in the root namespace');
    assert.equal(report.bound.address, '10.77.3.1');
    assert.deepEqual(report.peer, { local: '10.77.3.1', remote: '10.77.3.1', remotePort: report.bound.port });

    const [code, signal] = await exited;
    assert.equal(signal, null, 'the child exited by itself once its handles were closed');
    assert.equal(code, 0);
  });
});

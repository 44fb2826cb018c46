import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  BpfObject,
  closeFd,
  connectInNetns,
  createListenerFd,
  NativeError,
  openCgroup,
  openNetns,
  setPinnedSockmapSocket,
} from '../lib/index.ts';
import {
  bpffsRoot,
  cgroup2Root,
  ensureBpffs,
  type Netns,
  prefix,
  sweepLeftovers,
  Topology,
} from './topology.ts';

const isRoot = process.getuid?.() === 0;
const objects = join(import.meta.dirname, '..', 'build', 'bpf');
const built = existsSync(join(objects, 'connect_count.bpf.o'));

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

async function drain(socket: Socket): Promise<string> {
  socket.setEncoding('utf8');
  let data = '';
  socket.on('data', (chunk: string) => {
    data += chunk;
  });
  await once(socket, 'end');
  socket.destroy();
  return data;
}

describe('libbpf', {
  skip: (!isRoot && 'needs root for bpf()') || (!built && 'run npm run build first'),
}, () => {
  const topo = new Topology();
  const pinDir = join(bpffsRoot, `${prefix}${process.pid}`);

  before(() => {
    sweepLeftovers();
    ensureBpffs();
    mkdirSync(pinDir, { recursive: true });
  });

  after(() => {
    topo.dispose();
    rmdirSync(pinDir);
  });

  test('a missing object file and unknown names are typed errors', () => {
    assert.throws(
      () => BpfObject.open(join(objects, 'missing.bpf.o')),
      (err: unknown) =>
        err instanceof NativeError && err.code === 'ENOENT' && err.syscall === 'bpf_object__open_file',
    );
    const obj = BpfObject.open(join(objects, 'connect_count.bpf.o'));
    try {
      assert.deepEqual(obj.programs(), [{ name: 'count_connect4', section: 'cgroup/connect4' }]);
      assert.deepEqual(obj.maps(), [
        { name: 'connects_by_port', type: 1, keySize: 4, valueSize: 8, maxEntries: 64 },
      ]);
      assert.throws(
        () => obj.program('nope'),
        (err: unknown) => err instanceof NativeError && err.code === 'ENOENT',
      );
      assert.throws(
        () => obj.map('nope'),
        (err: unknown) => err instanceof NativeError && err.code === 'ENOENT',
      );
    } finally {
      obj.close();
    }
    assert.throws(
      () => obj.programs(),
      (err: unknown) => err instanceof NativeError && err.code === 'EBADF',
    );
  });

  test('cgroup/connect4 counts the connects of a process moved into a child cgroup', async (t) => {
    const root = cgroup2Root();
    if (!root) {
      t.skip('no cgroup v2 hierarchy mounted');
      return;
    }
    const cgroup = join(root, `${prefix}${process.pid}-cg`);
    mkdirSync(cgroup);
    t.after(() => rmdirSync(cgroup));

    const server = createServer((s) => s.destroy());
    t.after(() => closeServer(server));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;

    const obj = BpfObject.load(join(objects, 'connect_count.bpf.o'));
    t.after(() => obj.close());
    const counts = obj.map('connects_by_port');
    const cgroupFd = openCgroup(cgroup);
    t.after(() => closeFd(cgroupFd));
    const link = obj.program('count_connect4').attachCgroup(cgroupFd);
    t.after(() => link.close());
    link.pin(join(pinDir, 'connect4_link'));
    counts.pin(join(pinDir, 'connects_by_port'));
    assert.deepEqual(readdirSync(pinDir).sort(), ['connect4_link', 'connects_by_port']);

    /** bash in the cgroup connecting `n` times; it waits on stdin until it has been moved. */
    const connectFromCgroup = async (n: number) => {
      const child = spawn(
        'bash',
        ['-c', `read; for i in $(seq ${n}); do exec 3<>/dev/tcp/127.0.0.1/${port}; exec 3>&-; done`],
        { stdio: ['pipe', 'ignore', 'inherit'], timeout: 10_000 },
      );
      const exited = once(child, 'exit');
      writeFileSync(join(cgroup, 'cgroup.procs'), `${child.pid}\n`);
      child.stdin.end('go\n');
      assert.deepEqual(await exited, [0, null]);
    };

    // This process is not in the cgroup: its connect is not counted.
    const outside = await connectInNetns({ address: '127.0.0.1', port, timeoutMs: 5000 });
    outside.destroy();
    assert.equal(counts.lookup(u32(port)), undefined);

    await connectFromCgroup(3);
    assert.equal(counts.lookup(u32(port))?.readBigUInt64LE(), 3n);

    // Unpinned and closed, the link detaches: more connects are not counted.
    link.unpin();
    link.close();
    await connectFromCgroup(2);
    assert.equal(counts.lookup(u32(port))?.readBigUInt64LE(), 3n);

    assert.equal(counts.delete(u32(port)), true);
    assert.equal(counts.delete(u32(port)), false);
    counts.unpin(join(pinDir, 'connects_by_port'));
    assert.deepEqual(readdirSync(pinDir), [], 'nothing left pinned');
  });

  describe('in a network namespace', () => {
    let a: Netns;
    let b: Netns;
    let aFd = -1;
    let bFd = -1;

    before(() => {
      a = topo.netns('bpfa');
      b = topo.netns('bpfb');
      topo.veth({ ns: a, dev: 'va', addrs: ['10.77.4.1/24'] }, { ns: b, dev: 'vb', addrs: ['10.77.4.2/24'] });
      aFd = openNetns(a.path);
      bFd = openNetns(b.path);
    });

    after(() => {
      closeFd(aFd);
      closeFd(bFd);
    });

    test('sk_lookup steers a port to a SOCKMAP listener: the accepted socket keeps the original address', async (t) => {
      const { fd } = createListenerFd({ netnsFd: aFd, address: '0.0.0.0', port: 15006 });
      const server = createServer((s) => s.end(`${s.localAddress}:${s.localPort}\n`));
      t.after(() => closeServer(server));
      server.listen({ fd });
      await once(server, 'listening');

      const obj = BpfObject.load(join(objects, 'sk_lookup.bpf.o'));
      t.after(() => obj.close());
      obj.map('steer_port').update(u32(0), u32(9999));
      obj.map('steer_socket').setSocket(u32(0), fd);
      assert.throws(
        () => obj.map('steered').setSocket(u32(0), fd),
        (err: unknown) => err instanceof NativeError && err.code === 'EINVAL',
      );
      const link = obj.program('steer').attachNetns(aFd);
      t.after(() => link.close());
      link.pin(join(pinDir, 'sk_lookup_link'));

      const client = await connectInNetns({
        netnsFd: bFd,
        address: '10.77.4.1',
        port: 9999,
        timeoutMs: 5000,
      });
      assert.equal((await drain(client)).trim(), '10.77.4.1:9999');
      assert.equal(obj.map('steered').lookup(u32(0))?.readBigUInt64LE(), 1n);

      link.unpin();
      link.close();
      assert.deepEqual(readdirSync(pinDir), [], 'nothing left pinned');
      await assert.rejects(
        connectInNetns({ netnsFd: bFd, address: '10.77.4.1', port: 9999, timeoutMs: 5000 }),
        (err: unknown) => err instanceof NativeError && err.code === 'ECONNREFUSED',
        'detached: nothing listens on 9999',
      );
    });

    test('another process fills a pinned SOCKMAP by path (setPinnedSockmapSocket)', async (t) => {
      const { fd } = createListenerFd({ netnsFd: aFd, address: '0.0.0.0', port: 15006 });
      const server = createServer((s) => s.end(`${s.localAddress}:${s.localPort}\n`));
      t.after(() => closeServer(server));
      server.listen({ fd });
      await once(server, 'listening');

      const obj = BpfObject.load(join(objects, 'sk_lookup.bpf.o'));
      t.after(() => obj.close());
      obj.map('steer_port').update(u32(0), u32(9998));
      const mapPath = join(pinDir, 'steer_socket');
      const portPath = join(pinDir, 'steer_port');
      obj.map('steer_socket').pin(mapPath);
      obj.map('steer_port').pin(portPath);
      // Unpinning is unlinking the bpffs file; it works after the object closed too.
      t.after(() => {
        rmSync(mapPath, { force: true });
        rmSync(portPath, { force: true });
      });
      // What ztunnel does with the map the CNI agent pinned: nothing but the path is shared.
      setPinnedSockmapSocket(mapPath, 0, fd);
      assert.throws(
        () => setPinnedSockmapSocket(portPath, 0, fd),
        (err: unknown) => err instanceof NativeError && err.code === 'EINVAL',
        'an ARRAY map is refused',
      );
      assert.throws(
        () => setPinnedSockmapSocket(join(pinDir, 'missing'), 0, fd),
        (err: unknown) => err instanceof NativeError && err.code === 'ENOENT',
      );
      const link = obj.program('steer').attachNetns(aFd);
      t.after(() => link.close());
      const client = await connectInNetns({
        netnsFd: bFd,
        address: '10.77.4.1',
        port: 9998,
        timeoutMs: 5000,
      });
      assert.equal((await drain(client)).trim(), '10.77.4.1:9998');
    });

    test('a tc ingress program on an interface inside a namespace counts packets until closed', async (t) => {
      const server = createServer((s) => s.end('hello\n'));
      t.after(() => closeServer(server));
      const { fd } = createListenerFd({ netnsFd: aFd, address: '10.77.4.1', port: 0 });
      server.listen({ fd });
      await once(server, 'listening');
      const { port } = server.address() as AddressInfo;

      const obj = BpfObject.load(join(objects, 'tc_count.bpf.o'));
      t.after(() => obj.close());
      const packets = obj.map('packets');
      const tc = obj
        .program('count_packets')
        .attachTc({ ifindex: a.ifindex('va'), direction: 'ingress', netnsFd: aFd });
      assert.ok(tc.handle > 0 && tc.priority > 0);
      assert.match(a.exec('tc', ['filter', 'show', 'dev', 'va', 'ingress']), /count_packets/);

      const client = await connectInNetns({ netnsFd: bFd, address: '10.77.4.1', port, timeoutMs: 5000 });
      assert.equal((await drain(client)).trim(), 'hello');
      const seen = packets.lookup(u32(0))?.readBigUInt64LE() ?? 0n;
      assert.ok(seen >= 3n, `saw ${seen} packets of a TCP exchange`);

      tc.close();
      assert.doesNotMatch(a.exec('tc', ['filter', 'show', 'dev', 'va', 'ingress']), /count_packets/);
    });
  });
});

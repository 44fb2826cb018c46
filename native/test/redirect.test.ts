import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server, Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { closeFd, connectInNetns, listenInNetns, NativeError, openNetns, originalDst } from '../lib/index.ts';
import { type Netns, sweepLeftovers, Topology } from './topology.ts';

const isRoot = process.getuid?.() === 0;
const inpodMark = 0x539;
const redirectPort = 15001;
const appPort = 8080;

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

describe('nftables REDIRECT and SO_ORIGINAL_DST', {
  skip: !isRoot && 'needs root for ip netns and nft',
}, () => {
  const topo = new Topology();
  let pod: Netns;
  let peer: Netns;
  let podFd = -1;
  let peerFd = -1;
  const realServer = createServer((socket) => socket.end(`real ${socket.remoteAddress}\n`));
  const realErrors: string[] = [];
  // The in-pod capture listener answers with what SO_ORIGINAL_DST says.
  const captureServer = createServer((socket) => {
    try {
      socket.end(`${JSON.stringify(originalDst(socket))}\n`);
    } catch (err) {
      socket.end(`${JSON.stringify({ error: (err as NativeError).code })}\n`);
    }
  });

  before(async () => {
    sweepLeftovers();
    pod = topo.netns('pod');
    peer = topo.netns('peer');
    topo.veth(
      { ns: pod, dev: 'eth0', addrs: ['10.77.2.1/24', 'fd77:2::1/64'] },
      { ns: peer, dev: 'eth0', addrs: ['10.77.2.2/24', 'fd77:2::2/64'] },
    );
    // The in-pod rule shape of istio-cni: ztunnel's own (marked) sockets pass, app traffic is redirected.
    pod.nft(`table inet ambnat {
  chain output {
    type nat hook output priority -100;
    meta mark ${inpodMark} return
    tcp dport ${appPort} redirect to :${redirectPort}
  }
}
`);
    podFd = openNetns(pod.path);
    peerFd = openNetns(peer.path);
    realServer.on('connection', (s) => {
      try {
        originalDst(s);
        realErrors.push('none');
      } catch (err) {
        realErrors.push((err as NativeError).code);
      }
    });
    await listenInNetns(realServer, { netnsFd: peerFd, address: '::', port: appPort });
    await listenInNetns(captureServer, {
      netnsFd: podFd,
      address: '::',
      port: redirectPort,
      mark: inpodMark,
    });
  });

  after(async () => {
    await closeServer(realServer);
    await closeServer(captureServer);
    if (podFd >= 0) closeFd(podFd);
    if (peerFd >= 0) closeFd(peerFd);
    topo.dispose();
  });

  test('an app in the pod is redirected and originalDst gives the IPv4 ip:port it dialled', async () => {
    const out = await pod.execAsync('bash', ['-c', `exec 3<>/dev/tcp/10.77.2.2/${appPort}; cat <&3`]);
    assert.deepEqual(JSON.parse(out), { address: '10.77.2.2', port: appPort, family: 'IPv4' });
  });

  test('IPv6 traffic is redirected too and originalDst uses IP6T_SO_ORIGINAL_DST', async () => {
    const client = await connectInNetns({
      netnsFd: podFd,
      address: 'fd77:2::2',
      port: appPort,
      timeoutMs: 5000,
    });
    assert.deepEqual(JSON.parse(await readAll(client)), {
      address: 'fd77:2::2',
      port: appPort,
      family: 'IPv6',
    });
  });

  test('a socket marked 0x539 is not redirected and reaches the real destination', async () => {
    const client = await connectInNetns({
      netnsFd: podFd,
      address: '10.77.2.2',
      port: appPort,
      mark: inpodMark,
      timeoutMs: 5000,
    });
    assert.equal((await readAll(client)).trim(), 'real ::ffff:10.77.2.1');
    assert.deepEqual(realErrors, ['ENOENT'], 'SO_ORIGINAL_DST of a connection that was not NATed is ENOENT');
  });

  test('originalDst on a socket without a file descriptor is EBADF', () => {
    assert.throws(
      () => originalDst(new Socket()),
      (err: unknown) => err instanceof NativeError && err.code === 'EBADF',
    );
  });
});

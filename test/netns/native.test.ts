// The native addon against real pods: two harness nodes, a pod on each, wired by the CNI reference
// plugins, so every byte below crosses veths, the node bridges and the fabric, never loopback
// (except the REDIRECT hop inside pod A, which is the point of that test).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  BpfObject,
  closeFd,
  connectInNetns,
  createListenerFd,
  currentNetnsInode,
  getMark,
  listenInNetns,
  openCgroup,
  openNetns,
  originalDst,
  SeqpacketServer,
  type SeqpacketSocket,
} from '@ambient/native';
import { Harness, type HarnessProcess, type Pod, TCP_CLIENT } from '../harness/index.ts';
import { AcceptQueue } from './support/accept-queue.ts';
import { createPinDir, ensureBpffs, sweepPinLeftovers } from './support/bpffs.ts';
import { spawnRootNode } from './support/root-node.ts';

const skip = process.getuid?.() === 0 ? false : 'needs root: creates network namespaces, cgroups, bpf';

const PEER_REPORT_SERVER = fileURLToPath(new URL('./support/peer-report-server.ts', import.meta.url));
const NETNS_FD_CHILD = fileURLToPath(new URL('./support/netns-fd-child.ts', import.meta.url));
const BPF_OBJECTS = fileURLToPath(new URL('../../native/build/bpf/', import.meta.url));

/** ztunnel's in-pod socket mark (DEFAULT_INPOD_MARK). */
const INPOD_MARK = 0x539;
const OUTBOUND_CAPTURE_PORT = 15001;
/** Pod B's real application port. */
const APP_PORT = 8080;
const POD_B_MARKER = 'pod-b-real-server';

/** What TCP_CLIENT prints. */
interface ClientOutput {
  localAddress: string;
  remoteAddress: string;
  received: string;
}

/** What peer-report-server answers and prints. */
interface PeerReport {
  marker: string;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  received: string;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

async function readToEnd(socket: Socket): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  await once(socket, 'end');
  return Buffer.concat(chunks).toString('utf8');
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

async function runClient(from: Pod, host: string, port: number, message: string): Promise<ClientOutput> {
  const r = await from.execNode(
    TCP_CLIENT,
    ['--host', host, '--port', String(port), '--message', message, '--timeout-ms', '5000'],
    { timeoutMs: 10_000 },
  );
  return JSON.parse(r.stdout) as ClientOutput;
}

/** Programs bpftool reports attached to a cgroup directory (effective for it, not inherited). */
function cgroupPrograms(path: string): { name?: string; attach_type?: string }[] {
  const out = execFileSync('bpftool', ['-j', 'cgroup', 'show', path], { encoding: 'utf8', timeout: 5000 });
  return out.trim() === '' ? [] : (JSON.parse(out) as { name?: string; attach_type?: string }[]);
}

describe('native addon in harness pods', { skip, timeout: 120_000 }, () => {
  let mesh: Harness;
  let podA: Pod;
  let podB: Pod;
  let nsA = -1;
  let peerServer: HarnessProcess;

  before(async () => {
    mesh = await Harness.create({ nodes: 2 });
    [podA, podB] = await Promise.all([
      mesh.node('node1').addPod({ name: 'pod-a', namespace: 'native' }),
      mesh.node('node2').addPod({ name: 'pod-b', namespace: 'native' }),
    ]);
    nsA = openNetns(podA.netnsPath);
    peerServer = podB.spawnNode(PEER_REPORT_SERVER, ['--port', String(APP_PORT), '--marker', POD_B_MARKER]);
    await peerServer.waitForLine('"listening"');
  });

  after(async () => {
    if (nsA >= 0) closeFd(nsA);
    await mesh?.destroy();
  });

  it("a listener the addon creates inside pod A's netns accepts a connection from pod B", {
    timeout: 30_000,
  }, async (t) => {
    const server = createServer({ allowHalfOpen: true });
    const accepted = new AcceptQueue(server);
    t.after(() => {
      accepted.destroyQueued();
      return closeServer(server);
    });
    // transparent 'off': nothing here may depend on IP_TRANSPARENT, only on the namespace.
    const bound = await listenInNetns(server, {
      netnsFd: nsA,
      address: '0.0.0.0',
      port: 0,
      transparent: 'off',
    });
    assert.equal(bound.transparent, false);

    // The socket this process serves is listed by `ss` inside pod A's netns.
    const ss = await podA.exec('ss', ['-Htln', `sport = :${bound.port}`]);
    assert.match(ss.stdout, new RegExp(`0\\.0\\.0\\.0:${bound.port}\\b`), 'pod A lists the listener');

    const client = runClient(podB, podA.ip, bound.port, 'hello from pod B');
    const conn = await accepted.next('pod B connecting to pod A');
    const seen = { local: conn.localAddress, localPort: conn.localPort, remote: conn.remoteAddress };
    const data = await readToEnd(conn);
    conn.end(`pod A got ${data.length} bytes`);
    const out = await client;

    assert.equal(data, 'hello from pod B');
    assert.deepEqual(seen, { local: podA.ip, localPort: bound.port, remote: podB.ip });
    assert.equal(out.received, `pod A got ${'hello from pod B'.length} bytes`);
    assert.equal(out.localAddress, podB.ip);
    assert.equal(out.remoteAddress, podA.ip);
    assert.equal(accepted.count, 1);
  });

  it("after an nftables REDIRECT rule in pod A's netns, SO_ORIGINAL_DST returns the original destination, and a socket marked 0x539 is not redirected", {
    timeout: 30_000,
  }, async (t) => {
    const table = 'ambnetns_redirect';
    // istio-cni's in-pod shape: ztunnel's own (marked) sockets pass, other outbound TCP is captured.
    await podA.exec('nft', ['-f', '-'], {
      input: `table ip ${table} {
  chain output {
    type nat hook output priority -100;
    meta mark ${INPOD_MARK} return
    ip daddr != 127.0.0.1 meta l4proto tcp redirect to :${OUTBOUND_CAPTURE_PORT}
  }
}
`,
    });
    // Later tests connect out of pod A: the capture must not outlive this test.
    t.after(() => podA.exec('nft', ['delete', 'table', 'ip', table]));

    const capture = createServer({ allowHalfOpen: true });
    const accepted = new AcceptQueue(capture);
    const upstreams: Socket[] = [];
    t.after(() => {
      for (const s of upstreams) s.destroy();
      accepted.destroyQueued();
      return closeServer(capture);
    });
    await listenInNetns(capture, {
      netnsFd: nsA,
      address: '0.0.0.0',
      port: OUTBOUND_CAPTURE_PORT,
      mark: INPOD_MARK,
      transparent: 'off',
    });

    // The app in pod A believes it connects to pod B's server.
    const app = runClient(podA, podB.ip, APP_PORT, 'ping from the app');
    const conn = await accepted.next('the app connection redirected to 15001');
    assert.equal(conn.localPort, OUTBOUND_CAPTURE_PORT);
    const dst = originalDst(conn);
    assert.deepEqual({ address: dst.address, port: dst.port }, { address: podB.ip, port: APP_PORT });

    // The proxy's upstream, from pod A's netns, marked like ztunnel's in-pod sockets.
    const upstream = await connectInNetns({
      netnsFd: nsA,
      address: dst.address,
      port: dst.port,
      mark: INPOD_MARK,
      timeoutMs: 5000,
    });
    upstreams.push(upstream);
    assert.equal(getMark(upstream), INPOD_MARK);
    assert.equal(upstream.localAddress, podA.ip);
    upstream.on('error', () => {});
    conn.pipe(upstream);
    upstream.pipe(conn);

    const out = await app;
    assert.equal(out.remoteAddress, podB.ip, 'the app sees the address it dialled, not the capture port');
    const report = JSON.parse(out.received) as PeerReport;
    assert.equal(report.marker, POD_B_MARKER, "pod B's real server answered");
    assert.equal(report.received, 'ping from the app');
    assert.equal(report.remoteAddress, podA.ip, 'pod B saw pod A as the source: no NAT on the way');
    assert.equal(report.localAddress, podB.ip);
    assert.equal(accepted.count, 1, 'the marked upstream was not captured by 15001');

    // Control: the same connect without the mark IS captured, so the mark is what let it through.
    const unmarked = await connectInNetns({
      netnsFd: nsA,
      address: podB.ip,
      port: APP_PORT,
      timeoutMs: 5000,
    });
    upstreams.push(unmarked);
    const captured = await accepted.next('the unmarked control connection');
    const controlDst = originalDst(captured);
    assert.deepEqual(
      { address: controlDst.address, port: controlDst.port },
      { address: podB.ip, port: APP_PORT },
    );
    assert.equal(accepted.count, 2);
    captured.destroy();
  });

  it('a netns fd passed over SEQPACKET to another process opens sockets that are provably in that namespace', {
    timeout: 30_000,
  }, async (t) => {
    const rootAddresses = Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address));
    assert.ok(!rootAddresses.includes(podA.ip), `${podA.ip} is not an address of the root netns`);

    const path = join(mesh.tempDir, 'netns-fd.sock');
    const control = new SeqpacketServer({ maxMessageSize: 1024 });
    const peers: SeqpacketSocket[] = [];
    const sent: Promise<void>[] = [];
    control.on('connection', (peer) => {
      peers.push(peer);
      sent.push(peer.send(Buffer.from(podA.key), [nsA]));
    });
    control.listen(path);
    t.after(() => {
      for (const p of peers) p.close();
      control.close();
    });

    const child = spawnRootNode(NETNS_FD_CHILD, [path, podA.ip, podB.ip, String(APP_PORT)]);
    t.after(() => child.stop(500));
    const received = await child.waitForJson<{
      fds: number;
      isNetns: boolean;
      inode: number;
      home: number;
      rootBind: string;
    }>((e) => e.event === 'received');
    await Promise.all(sent);
    assert.equal(received.fds, 1);
    assert.equal(received.isNetns, true);
    assert.equal(received.inode, statSync(podA.netnsPath).ino, "the fd names pod A's namespace");
    assert.equal(received.home, currentNetnsInode(), 'the child itself runs in the root netns');
    assert.notEqual(received.home, received.inode);
    assert.equal(received.rootBind, 'EADDRNOTAVAIL', "pod A's IP cannot be bound in the root netns");

    const listening = await child.waitForJson<{ address: string; port: number }>(
      (e) => e.event === 'listening',
    );
    assert.equal(listening.address, podA.ip);
    assert.ok(listening.port > 0);

    const upstream = await child.waitForJson<{ localAddress: string; reply: string }>(
      (e) => e.event === 'upstream',
    );
    assert.equal(upstream.localAddress, podA.ip);
    const report = JSON.parse(upstream.reply) as PeerReport;
    assert.equal(report.marker, POD_B_MARKER);
    assert.equal(report.remoteAddress, podA.ip, "pod B's server saw pod A's IP as the source");
    assert.equal(report.received, 'from the root-netns child');

    // And the child's listener is reachable from pod B at pod A's IP.
    const out = await runClient(podB, podA.ip, listening.port, 'knock');
    const answer = JSON.parse(out.received) as { marker: string; pid: number; remoteAddress: string };
    assert.deepEqual(answer, { marker: 'root-netns-child', pid: child.pid, remoteAddress: podB.ip });
    const acceptedBy = await child.waitForJson<{ remoteAddress: string }>((e) => e.event === 'accepted');
    assert.equal(acceptedBy.remoteAddress, podB.ip);

    // Every socket and the fd closed, the child exits by itself.
    const exit = await child.exited;
    assert.deepEqual(exit, { exitCode: 0, signal: null }, child.stderr);
  });

  it('a BPF program loaded through the addon attaches, its map can be read back, and detaching leaves nothing pinned', {
    timeout: 30_000,
  }, async (t) => {
    const object = join(BPF_OBJECTS, 'connect_count.bpf.o');
    if (!existsSync(object)) {
      t.skip(`${object} is missing: run npm run build -w @ambient/native`);
      return;
    }
    ensureBpffs();
    sweepPinLeftovers();
    const pinDir = createPinDir(`${mesh.key}-connect4`);
    t.after(() => rmSync(pinDir, { recursive: true, force: true }));

    const obj = BpfObject.load(object);
    t.after(() => obj.close());
    const counts = obj.map('connects_by_port');
    const cgroupFd = openCgroup(podA.cgroupPath);
    t.after(() => closeFd(cgroupFd));
    const link = obj.program('count_connect4').attachCgroup(cgroupFd);
    t.after(() => link.close());
    link.pin(join(pinDir, 'link'));
    counts.pin(join(pinDir, 'connects_by_port'));
    assert.deepEqual(readdirSync(pinDir).sort(), ['connects_by_port', 'link']);
    assert.ok(
      cgroupPrograms(podA.cgroupPath).some((p) => p.name === 'count_connect4'),
      "bpftool lists the program on pod A's cgroup",
    );

    /** `n` connects to pod B's server from a process in pod A (its cgroup and netns). */
    const connectFromPodA = (n: number) =>
      podA.exec(
        'bash',
        ['-c', `for i in $(seq ${n}); do exec 3<>/dev/tcp/${podB.ip}/${APP_PORT} && exec 3>&-; done`],
        { timeoutMs: 10_000 },
      );
    const count = () => counts.lookup(u32(APP_PORT))?.readBigUInt64LE();

    const n = 5;
    await connectFromPodA(n);
    assert.equal(count(), BigInt(n));

    // A socket in pod A's netns made by a process outside pod A's cgroup is not counted: the hook
    // is the cgroup's, not the namespace's.
    const outsider = await connectInNetns({
      netnsFd: nsA,
      address: podB.ip,
      port: APP_PORT,
      timeoutMs: 5000,
    });
    outsider.destroy();
    assert.equal(count(), BigInt(n));

    link.detach();
    assert.ok(
      !cgroupPrograms(podA.cgroupPath).some((p) => p.name === 'count_connect4'),
      "nothing is left on pod A's cgroup",
    );
    await connectFromPodA(2);
    assert.equal(count(), BigInt(n), 'connects after detach are not counted');

    link.unpin();
    link.close();
    counts.unpin(join(pinDir, 'connects_by_port'));
    obj.close();
    assert.deepEqual(readdirSync(pinDir), [], 'nothing left pinned');
    rmdirSync(pinDir);
    assert.equal(existsSync(pinDir), false);
  });

  it("an sk_lookup program attached to pod A's netns steers a connection from pod B to an addon listener", {
    timeout: 30_000,
  }, async (t) => {
    const object = join(BPF_OBJECTS, 'sk_lookup.bpf.o');
    if (!existsSync(object)) {
      t.skip(`${object} is missing: run npm run build -w @ambient/native`);
      return;
    }
    ensureBpffs();
    const pinDir = createPinDir(`${mesh.key}-sk-lookup`);
    t.after(() => rmSync(pinDir, { recursive: true, force: true }));

    const steeredPort = 9999;
    const { fd } = createListenerFd({ netnsFd: nsA, address: '0.0.0.0', port: 15006, transparent: 'off' });
    const server = createServer((s) => {
      const seen = { localAddress: s.localAddress, localPort: s.localPort, remoteAddress: s.remoteAddress };
      // Drain what the client sent: an unread stream never sees the FIN, so it would never close.
      s.resume();
      s.end(`${JSON.stringify({ marker: 'steered', ...seen })}\n`);
    });
    t.after(() => closeServer(server));
    server.listen({ fd });
    await once(server, 'listening');

    const obj = BpfObject.load(object);
    t.after(() => obj.close());
    obj.map('steer_port').update(u32(0), u32(steeredPort));
    obj.map('steer_socket').setSocket(u32(0), fd);
    const link = obj.program('steer').attachNetns(nsA);
    t.after(() => link.close());
    link.pin(join(pinDir, 'link'));

    const out = await runClient(podB, podA.ip, steeredPort, 'steer me');
    const seen = JSON.parse(out.received) as Record<string, unknown>;
    assert.deepEqual(seen, {
      marker: 'steered',
      localAddress: podA.ip,
      localPort: steeredPort,
      remoteAddress: podB.ip,
    });
    assert.equal(obj.map('steered').lookup(u32(0))?.readBigUInt64LE(), 1n);

    link.unpin();
    link.close();
    assert.deepEqual(readdirSync(pinDir), [], 'nothing left pinned');
    const refused = await podB.execNode(
      TCP_CLIENT,
      ['--host', podA.ip, '--port', String(steeredPort), '--timeout-ms', '3000'],
      { timeoutMs: 10_000, check: false },
    );
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /ECONNREFUSED/, 'detached: nothing listens on the steered port');
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { closeFd, connectFd, isSupported, listenInNetns, openNetns } from '@ambient/native';
import { DEFAULT_INPOD_MARK, InpodSocketFactory } from '../src/proxy/socket-factory.ts';
import { type Pod, payload, readToEnd, sha256, TestMesh } from './proxy-harness.ts';

/*
 * The in-pod socket factory against real network namespaces: two "pods" joined by a veth pair,
 * each with a minimal version of istio-cni's rules (outbound NAT to 15001 unless marked 0x539,
 * inbound NAT to 15006 except 15008, and in B the connmark + table 100 routing that returns
 * replies of spoofed-source connections to ztunnel). The full rule set, probes and DNS belong to
 * the netns suite.
 */

const PREFIX = 'zpxi-';
const ns = (side: 'a' | 'b') => `${PREFIX}${process.pid}-${side}`;
const octet = process.pid % 250;
const IP = { a: `10.213.${octet}.1`, b: `10.213.${octet}.2` } as const;

function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(input === undefined ? {} : { input }),
  }).toString();
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

/** Deletes namespaces left by crashed runs of this file. */
function sweep(): void {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = new RegExp(`^${PREFIX}(\\d+)-[ab]$`).exec(name);
    if (m !== null && (Number(m[1]) === process.pid || !pidAlive(Number(m[1])))) {
      sh('ip', ['netns', 'del', name]);
    }
  }
}

function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  if (!isSupported()) return 'the native addon is not supported on this platform';
  try {
    sh('ip', ['netns', 'list']);
    sh('nft', ['--version']);
  } catch {
    return 'needs iproute2 and nftables';
  }
  return undefined;
}

describe('in-pod sockets in real network namespaces', { skip: skipReason() }, () => {
  let mesh: TestMesh;
  let fds: { a: number; b: number };
  let clientPod: Pod;
  let serverPod: Pod;
  let app: net.Server;
  const appPeers: string[] = [];

  before(async () => {
    sweep();
    sh('ip', ['netns', 'add', ns('a')]);
    sh('ip', ['netns', 'add', ns('b')]);
    sh('ip', [
      '-n',
      ns('a'),
      'link',
      'add',
      'eth0',
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      ns('b'),
    ]);
    for (const side of ['a', 'b'] as const) {
      sh('ip', ['-n', ns(side), 'link', 'set', 'lo', 'up']);
      sh('ip', ['-n', ns(side), 'addr', 'add', `${IP[side]}/24`, 'dev', 'eth0']);
      sh('ip', ['-n', ns(side), 'link', 'set', 'eth0', 'up']);
    }
    const mark = `0x${DEFAULT_INPOD_MARK.toString(16)}`;
    // Outbound capture in A, inbound plaintext capture in B (15008 is reached directly).
    sh(
      'ip',
      ['netns', 'exec', ns('a'), 'nft', '-f', '-'],
      `table ip zpx {\nchain output {\ntype nat hook output priority -100;\nmeta mark ${mark} return\nip daddr 127.0.0.0/8 return\nmeta l4proto tcp redirect to :15001\n}\n}\n`,
    );
    sh(
      'ip',
      ['netns', 'exec', ns('b'), 'nft', '-f', '-'],
      `table ip zpx {\nchain prerouting {\ntype nat hook prerouting priority -100;\ntcp dport 15008 return\nmeta l4proto tcp redirect to :15006\n}\n}\n`,
    );
    // B also gets the in-pod policy routing that brings replies to a spoofed-source connection
    // back to ztunnel: ztunnel's packets (mark 0x539) tag their connection 0x111, replies carry
    // it as a packet mark, and table 100 delivers them locally (spec §2.4, §6.3).
    sh(
      'ip',
      ['netns', 'exec', ns('b'), 'nft', '-f', '-'],
      `table ip zpxm {\nchain prerouting {\ntype filter hook prerouting priority mangle;\nmeta mark & 0xfff == ${mark} ct mark set ct mark & 0xfffff000 | 0x111\n}\nchain output {\ntype route hook output priority mangle;\nct mark & 0xfff == 0x111 meta mark set ct mark\n}\n}\n`,
    );
    sh('ip', ['-n', ns('b'), 'rule', 'add', 'fwmark', '0x111/0xfff', 'pref', '32764', 'lookup', '100']);
    sh('ip', ['-n', ns('b'), 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100']);
    fds = { a: openNetns(`/var/run/netns/${ns('a')}`), b: openNetns(`/var/run/netns/${ns('b')}`) };

    mesh = await TestMesh.create({ subnet: 69 });
    clientPod = mesh.addPod({ name: 'client', namespace: 'ns', serviceAccount: 'client', host: 1, ip: IP.a });
    serverPod = mesh.addPod({ name: 'server', namespace: 'ns', serviceAccount: 'server', host: 2, ip: IP.b });
    await mesh.startProxyWith(clientPod, new InpodSocketFactory(fds.a));
    await mesh.startProxyWith(serverPod, new InpodSocketFactory(fds.b));
    // The app inside B, listening on all addresses like a container would.
    app = net.createServer({ allowHalfOpen: true }, (socket) => {
      appPeers.push(socket.remoteAddress ?? '');
      socket.on('error', () => {});
      socket.pipe(socket);
    });
    await listenInNetns(app, { netnsFd: fds.b, address: '0.0.0.0', port: 8080, transparent: 'off' });
  });

  after(async () => {
    app?.close();
    await mesh?.[Symbol.asyncDispose]();
    if (fds !== undefined) {
      closeFd(fds.a);
      closeFd(fds.b);
    }
    sweep();
  });

  /** Connects from inside A as the app would (unmarked, so the NAT rules apply unless `mark`). */
  async function connectFromA(port: number, mark?: number): Promise<net.Socket> {
    const fd = await connectFd({
      netnsFd: fds.a,
      address: IP.b,
      port,
      timeoutMs: 3000,
      ...(mark === undefined ? {} : { mark }),
    });
    return new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
  }

  test('captured outbound goes over HBONE through sockets made inside each pod', async () => {
    const { data, sha256: sent } = payload(256 * 1024);
    const socket = await connectFromA(8080);
    const reply = readToEnd(socket);
    socket.end(data);
    assert.equal(sha256(await reply), sent);
    assert.equal(appPeers.at(-1), IP.a, 'the app sees the client pod IP (spoofed source, IP_TRANSPARENT)');
    const inbound = await mesh.waitForLine(
      (l) => l.msg === 'connection complete' && l.direction === 'inbound',
    );
    assert.equal(inbound['dst.hbone_addr'], `${IP.b}:8080`, 'SO_ORIGINAL_DST recovered the destination');
    assert.equal(inbound['dst.addr'], `${IP.b}:15008`);
    assert.equal(
      inbound['src.workload'],
      'client',
      'the HBONE connection came from A, marked, not re-captured',
    );
    const outbound = await mesh.waitForLine(
      (l) => l.msg === 'connection complete' && l.direction === 'outbound',
    );
    assert.equal(outbound['dst.addr'], `${IP.b}:15008`);
  });

  test('plaintext reaching B is captured on 15006 and delivered with its original destination', async () => {
    // Marked like ztunnel's own traffic so A does not capture it: plaintext from "outside the mesh".
    const socket = await connectFromA(8080, DEFAULT_INPOD_MARK);
    const reply = readToEnd(socket);
    socket.end('plain');
    assert.equal((await reply).toString(), 'plain');
    const line = await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' && l.direction === 'inbound' && l['dst.hbone_addr'] === undefined,
    );
    assert.equal(line['dst.addr'], `${IP.b}:8080`);
    assert.equal(String(line['src.addr']).split(':')[0], IP.a);
    assert.equal(appPeers.at(-1), IP.a);
  });

  test('a connection to the pod on 15006 itself is a self-call', async () => {
    const socket = await connectFromA(15006, DEFAULT_INPOD_MARK);
    socket.on('error', () => {});
    socket.resume();
    socket.once('end', () => socket.end());
    await once(socket, 'close');
    await mesh.waitForLine((l) => l.msg === 'connection failed' && l.error_code === 'SELF_CALL');
  });
});

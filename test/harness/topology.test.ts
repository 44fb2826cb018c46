import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CommandError,
  Harness,
  HarnessError,
  type MeshNode,
  POD_BRIDGE,
  type Pod,
  TCP_CLIENT,
  TCP_ECHO_SERVER,
  unifiedCgroupRoot,
} from './index.ts';

const skip = process.getuid?.() === 0 ? false : 'needs root: creates network namespaces and cgroups';

interface ClientOutput {
  localAddress: string;
  remoteAddress: string;
  received: string;
}

async function echo(from: Pod, to: Pod, port: number, message: string): Promise<ClientOutput> {
  const r = await from.execNode(TCP_CLIENT, ['--host', to.ip, '--port', String(port), '--message', message], {
    timeoutMs: 10_000,
  });
  return JSON.parse(r.stdout) as ClientOutput;
}

describe('harness topology', { skip, timeout: 60_000 }, () => {
  let mesh: Harness;
  let node1: MeshNode;
  let node2: MeshNode;
  let a: Pod;
  let b: Pod;
  let buildMs = 0;

  before(async () => {
    const t0 = performance.now();
    mesh = await Harness.create({ nodes: 2 });
    node1 = mesh.node('node1');
    node2 = mesh.node('node2');
    [a, b] = await Promise.all([
      node1.addPod({ name: 'client', namespace: 'app', labels: { app: 'client' } }),
      node2.addPod({ name: 'server', namespace: 'app' }),
    ]);
    buildMs = performance.now() - t0;
  });

  after(() => mesh?.destroy());

  it('builds two nodes and two pods well within a few seconds', (t) => {
    t.diagnostic(`2 nodes + 2 pods built in ${buildMs.toFixed(0)} ms`);
    assert.ok(buildMs < 3000, `2 nodes + 2 pods took ${buildMs.toFixed(0)} ms`);
  });

  it('gives each pod an address from its node pod CIDR, as the CNI result says', async () => {
    for (const [pod, node] of [
      [a, node1],
      [b, node2],
    ] as const) {
      const cidrPrefix = node.podCidr.replace(/\.0\/24$/, '.');
      assert.ok(pod.ip.startsWith(cidrPrefix), `${pod.ip} in ${node.podCidr}`);
      assert.equal(pod.cni.ips[0]?.ip, pod.ip);
      assert.equal(pod.cni.ips[0]?.address, `${pod.ip}/24`);
      assert.equal(pod.gateway, `${cidrPrefix}1`);
      const eth0 = pod.cni.interfaces.find((i) => i.name === 'eth0');
      assert.equal(eth0?.sandbox, pod.netnsPath);
      const addr = await pod.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      assert.match(addr.stdout, new RegExp(`inet ${pod.ip.replaceAll('.', '\\.')}/24`));
      const lo = await pod.exec('ip', ['-o', 'link', 'show', 'lo']);
      assert.match(lo.stdout, /state UNKNOWN|LOWER_UP/, 'the loopback plugin brought lo up');
    }
    assert.deepEqual(a.labels, { app: 'client' });
    assert.match(a.uid, /^[0-9a-f-]{36}$/);
  });

  it('wires the node netns: cni0 there, forwarding on, a route to the other node', async () => {
    const fwd = await node1.exec('cat', ['/proc/sys/net/ipv4/ip_forward']);
    assert.equal(fwd.stdout.trim(), '1');
    const links = await node1.exec('ip', ['-o', 'link', 'show', POD_BRIDGE]);
    assert.match(links.stdout, new RegExp(`: ${POD_BRIDGE}:`));
    const routes = await node1.exec('ip', ['route', 'show', node2.podCidr]);
    assert.match(routes.stdout, new RegExp(`via ${node2.ip.replaceAll('.', '\\.')}`));
    // Never in the host's own netns.
    const hostLinks = readFileSync('/proc/net/dev', 'utf8');
    assert.doesNotMatch(hostLinks, /ambh-/);
  });

  it('carries TCP from a pod on node1 to a pod on node2 with the pod IP as source', async () => {
    const server = b.spawnNode(TCP_ECHO_SERVER, ['--port', '7000']);
    await server.waitForLine('"listening"');
    const out = await echo(a, b, 7000, 'across nodes');
    assert.equal(out.received, 'across nodes');
    assert.equal(out.localAddress, a.ip);
    assert.equal(out.remoteAddress, b.ip);
    const seen = await server.waitForJson<{ remoteAddress: string }>((e) => e.event === 'connection');
    assert.equal(seen.remoteAddress, a.ip, 'no NAT on the way: the server sees the client pod IP');
    await server.stop();
  });

  it('carries TCP between two pods on the same node', async () => {
    const c = await node1.addPod({ name: 'neighbour', namespace: 'app' });
    const server = c.spawnNode(TCP_ECHO_SERVER, ['--port', '7001']);
    await server.waitForLine('"listening"');
    const out = await echo(a, c, 7001, 'same node');
    assert.equal(out.received, 'same node');
    const seen = await server.waitForJson<{ remoteAddress: string }>((e) => e.event === 'connection');
    assert.equal(seen.remoteAddress, a.ip);
    await node1.removePod(c);
    assert.equal(server.exit?.signal ?? server.exit?.exitCode, 0, 'SIGTERM let the server exit cleanly');
  });

  it('puts processes started in a pod into the pod cgroup', async () => {
    const proc = a.spawn('sleep', ['30']);
    const pid = proc.pid;
    assert.ok(pid !== undefined);
    await proc.started;
    const self = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    const want = `/${relative(unifiedCgroupRoot(), a.cgroupPath)}`;
    assert.match(self, new RegExp(`^0::${want.replaceAll('.', '\\.')}$`, 'm'));
    const procs = readFileSync(`${a.cgroupPath}/cgroup.procs`, 'utf8').split('\n');
    assert.ok(procs.includes(String(pid)));
    const netns = readFileSync(`/proc/${pid}/net/dev`, 'utf8');
    assert.match(netns, /eth0:/, 'the process is in the pod netns');
    await proc.stop(200);
  });

  it('runs inline Node scripts with the pinned Node, arguments in argv.slice(2)', async () => {
    const r = await a.execNode(
      {
        code: 'const n: number = 1; console.log(JSON.stringify({ v: process.version, args: process.argv.slice(2), n }));',
      },
      ['x', 'y'],
    );
    const out = JSON.parse(r.stdout) as { v: string; args: string[] };
    assert.equal(out.v, process.version);
    assert.deepEqual(out.args, ['x', 'y']);
  });

  it('reports exit codes and timeouts of exec as typed errors', async () => {
    await assert.rejects(a.exec('sh', ['-c', 'echo oops >&2; exit 3']), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.code, 'COMMAND_FAILED');
      assert.equal(err.result.exitCode, 3);
      assert.match(err.message, /oops/);
      return true;
    });
    const soft = await a.exec('sh', ['-c', 'exit 4'], { check: false });
    assert.equal(soft.exitCode, 4);
    const t0 = Date.now();
    await assert.rejects(a.exec('sleep', ['10'], { timeoutMs: 200 }), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.code, 'COMMAND_TIMEOUT');
      return true;
    });
    assert.ok(Date.now() - t0 < 5000);
  });

  it('fails waitForLine with PROCESS_EXITED when the process ends first', async () => {
    const p = a.spawn('sh', ['-c', 'echo nope; exit 0']);
    await assert.rejects(p.waitForLine('ready', { timeoutMs: 5000 }), (err: unknown) => {
      assert.ok(err instanceof HarnessError);
      assert.equal(err.code, 'PROCESS_EXITED');
      return true;
    });
  });

  it('rejects duplicate pods, bad names and unknown nodes', async () => {
    await assert.rejects(node2.addPod({ name: 'client', namespace: 'app' }), { code: 'POD_EXISTS' });
    await assert.rejects(node1.addPod({ name: 'Bad_Name' }), { code: 'NAME_INVALID' });
    assert.throws(() => mesh.node('node9'), { code: 'NODE_UNKNOWN' });
  });

  it('stops a removed pod and its processes, and refuses to start more there', async () => {
    const d = await node2.addPod({ name: 'short-lived' });
    const proc = d.spawn('sleep', ['30']);
    await d.remove();
    assert.ok(proc.exit !== undefined, 'the pod process was stopped');
    assert.throws(() => d.spawn('true'), { code: 'HARNESS_DESTROYED' });
    assert.equal(mesh.pod('default', 'short-lived'), undefined);
  });
});

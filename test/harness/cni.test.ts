import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  type ChainedPlugin,
  CniError,
  Harness,
  type MeshNode,
  POD_NETWORK_NAME,
  type Pod,
  REFERENCE_PLUGIN_DIR,
} from './index.ts';

const skip = process.getuid?.() === 0 ? false : 'needs root: creates network namespaces and cgroups';
const RECORD_PLUGIN = fileURLToPath(new URL('./fixtures/record-plugin.ts', import.meta.url));

interface Call {
  command: string;
  env: Record<string, string>;
  config: Record<string, unknown> & { prevResult?: Record<string, unknown>; tag?: string };
  netns: string;
}

/** Installs the record plugin under `type` in `binDir`, as an installer copies a plugin binary. */
function installRecordPlugin(binDir: string, type: string): void {
  mkdirSync(binDir, { recursive: true });
  const file = join(binDir, type);
  writeFileSync(file, `#!/bin/sh\nexec '${process.execPath}' '${RECORD_PLUGIN}' "$@"\n`);
  chmodSync(file, 0o755);
}

function readCalls(recordDir: string): Call[] {
  const file = join(recordDir, 'calls.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Call);
}

function cniArgs(call: Call): Map<string, string> {
  return new Map(
    (call.env.CNI_ARGS ?? '').split(';').map((kv) => {
      const i = kv.indexOf('=');
      return [kv.slice(0, i), kv.slice(i + 1)] as [string, string];
    }),
  );
}

function ipFile(node: MeshNode, ip: string): string {
  return join(node.ipamDataDir, POD_NETWORK_NAME, ip);
}

describe('harness CNI chain', { skip, timeout: 60_000 }, () => {
  let mesh: Harness;
  let node: MeshNode;
  let binDir: string;
  let recordDir: string;
  let chain: ChainedPlugin[];

  before(async () => {
    mesh = await Harness.create({ nodes: 1 });
    node = mesh.node('node1');
    binDir = join(mesh.tempDir, 'extra-cni-bin');
    recordDir = join(mesh.tempDir, 'records');
    mkdirSync(recordDir);
    installRecordPlugin(binDir, 'ambh-record');
    chain = [
      { type: 'ambh-record', binDir, config: { recordDir, tag: 'first' } },
      { type: 'ambh-record', binDir, config: { recordDir, tag: 'second' } },
    ];
  });

  after(() => mesh?.destroy());

  it('runs chained plugins with prevResult, K8S_ args, and in the node netns', async () => {
    const before = readCalls(recordDir).length;
    const pod = await node.addPod({ name: 'chained', namespace: 'ns1', uid: 'uid-1234', chain });
    const calls = readCalls(recordDir).slice(before);
    assert.deepEqual(
      calls.map((c) => [c.command, c.config.tag]),
      [
        ['ADD', 'first'],
        ['ADD', 'second'],
      ],
    );
    const [first, second] = calls;
    assert.ok(first !== undefined && second !== undefined);
    // The first chained plugin gets the bridge result; the second what the first returned.
    const prev = first.config.prevResult as { ips: { address: string }[]; interfaces: { name: string }[] };
    assert.equal(prev.ips[0]?.address, `${pod.ip}/24`);
    assert.ok(prev.interfaces.some((i) => i.name === 'cni0'));
    assert.deepEqual(second.config.prevResult, first.config.prevResult);
    assert.deepEqual(
      pod.cni.raw,
      first.config.prevResult,
      'the chain result is what the last plugin returned',
    );
    assert.equal(first.config.name, POD_NETWORK_NAME);
    assert.equal(first.config.cniVersion, '1.0.0');
    assert.equal(first.config.type, 'ambh-record');
    const args = cniArgs(first);
    assert.equal(args.get('IgnoreUnknown'), '1');
    assert.equal(args.get('K8S_POD_NAME'), 'chained');
    assert.equal(args.get('K8S_POD_NAMESPACE'), 'ns1');
    assert.equal(args.get('K8S_POD_UID'), 'uid-1234');
    assert.equal(args.get('K8S_POD_INFRA_CONTAINER_ID'), pod.sandbox.containerId);
    assert.equal(first.env.CNI_CONTAINERID, pod.sandbox.containerId);
    assert.equal(first.env.CNI_NETNS, pod.netnsPath);
    assert.equal(first.env.CNI_IFNAME, 'eth0');
    assert.equal(first.env.CNI_PATH, `${binDir}:${REFERENCE_PLUGIN_DIR}`);
    assert.equal(first.netns, `net:[${statSync(node.netnsPath).ino}]`, 'plugins run in the node netns');
    assert.notEqual(first.netns, readlinkSync('/proc/self/ns/net'));
  });

  it('runs CHECK in order and DEL in reverse order, both with the cached result', async () => {
    const pod = await node.addPod({ name: 'checked', chain });
    let before = readCalls(recordDir).length;
    await pod.check();
    const checks = readCalls(recordDir).slice(before);
    assert.deepEqual(
      checks.map((c) => [c.command, c.config.tag]),
      [
        ['CHECK', 'first'],
        ['CHECK', 'second'],
      ],
    );
    assert.deepEqual(checks[0]?.config.prevResult, pod.cni.raw);
    before = readCalls(recordDir).length;
    await node.removePod(pod);
    const dels = readCalls(recordDir).slice(before);
    assert.deepEqual(
      dels.map((c) => [c.command, c.config.tag]),
      [
        ['DEL', 'second'],
        ['DEL', 'first'],
      ],
    );
    assert.deepEqual(dels[0]?.config.prevResult, pod.cni.raw);
  });

  it('releases the host-local address on DEL', async () => {
    const pod = await node.addPod({ name: 'released' });
    assert.ok(existsSync(ipFile(node, pod.ip)), 'host-local recorded the address');
    assert.ok((await node.allocatedPodIps()).includes(pod.ip));
    assert.match(readFileSync(ipFile(node, pod.ip), 'utf8'), new RegExp(pod.sandbox.containerId));
    await node.removePod(pod);
    assert.ok(!existsSync(ipFile(node, pod.ip)), 'the address file is gone after DEL');
    assert.ok(!(await node.allocatedPodIps()).includes(pod.ip));
    assert.ok(!existsSync('/var/lib/cni/networks/ambh-pods'), 'no IPAM state outside the harness temp dir');
  });

  it('asks host-local for a given IP, and names the pod cgroup as asked', async () => {
    const ip = mesh.addresses.podCidr(1).replace(/0\/24$/, '200');
    const pod = await node.addPod({ name: 'pinned', uid: 'uid-5678', ip, cgroupName: 'poduid-5678', chain });
    assert.equal(pod.ip, ip);
    assert.equal(cniArgs(readCalls(recordDir).at(-1) as Call).get('IP'), ip);
    assert.equal(pod.cgroupPath, join(mesh.cgroupPath, 'node1', 'kubepods', 'poduid-5678'));
    assert.ok(existsSync(pod.cgroupPath));
    await pod.remove();
    assert.ok(!existsSync(pod.cgroupPath));
    await assert.rejects(node.addPod({ name: 'bad-cgroup', cgroupName: '../escape' }), {
      code: 'NAME_INVALID',
    });
    await assert.rejects(node.addPod({ name: 'bad-ip', ip: '10.1.2' }), { code: 'NAME_INVALID' });
  });

  it('turns a plugin error result into a typed CniError and rolls the pod back', async () => {
    const failing: ChainedPlugin = {
      type: 'ambh-record',
      binDir,
      config: {
        recordDir,
        failOn: { command: 'ADD', code: 142, msg: 'deliberate failure', details: 'from the test' },
      },
    };
    const allocated = await node.allocatedPodIps();
    await assert.rejects(node.addPod({ name: 'doomed', chain: [failing] }), (err: unknown) => {
      assert.ok(err instanceof CniError, String(err));
      assert.equal(err.code, 'CNI_PLUGIN_FAILED');
      assert.equal(err.plugin, 'ambh-record');
      assert.equal(err.command, 'ADD');
      assert.equal(err.cniCode, 142);
      assert.equal(err.msg, 'deliberate failure');
      assert.equal(err.details, 'from the test');
      assert.match(err.message, /deliberate failure/);
      return true;
    });
    // The runtime's rollback ran DEL, so bridge released the address it had assigned.
    assert.deepEqual(await node.allocatedPodIps(), allocated);
    assert.equal(mesh.pod('default', 'doomed'), undefined);
    assert.ok(!existsSync(join(mesh.cgroupPath, 'node1', 'kubepods', 'default_doomed')));
    const again = await node.addPod({ name: 'doomed' });
    await again.remove();
  });

  it('reports a failure of a real reference plugin with its own message', async () => {
    const tuning: ChainedPlugin = {
      type: 'tuning',
      config: { sysctl: { 'net.ipv4.conf.eth0.no_such_knob': '1' } },
    };
    await assert.rejects(node.addPod({ name: 'tuned', chain: [tuning] }), (err: unknown) => {
      assert.ok(err instanceof CniError, String(err));
      assert.equal(err.plugin, 'tuning');
      assert.equal(typeof err.cniCode, 'number');
      assert.match(err.msg, /no_such_knob/);
      return true;
    });
  });

  it('reports a plugin missing from CNI_PATH as CNI_PLUGIN_NOT_FOUND', async () => {
    await assert.rejects(node.addPod({ name: 'missing', chain: [{ type: 'ambh-no-such-plugin' }] }), {
      code: 'CNI_PLUGIN_NOT_FOUND',
      plugin: 'ambh-no-such-plugin',
    });
  });

  it('applies a node-level chain to pods added after it is set, as an installer would', async () => {
    const before = readCalls(recordDir).length;
    const plain = await node.addPod({ name: 'before-install' });
    node.setChainedPlugins([{ type: 'ambh-record', binDir, config: { recordDir, tag: 'node' } }]);
    const chained = await node.addPod({ name: 'after-install' });
    node.setChainedPlugins([]);
    const adds = readCalls(recordDir)
      .slice(before)
      .filter((c) => c.command === 'ADD');
    assert.deepEqual(
      adds.map((c) => cniArgs(c).get('K8S_POD_NAME')),
      ['after-install'],
    );
    assert.equal(plain.sandbox.network.list.plugins.length, 1);
    assert.equal(chained.sandbox.network.list.plugins.at(-1)?.type, 'ambh-record');
    await Promise.all([plain.remove(), chained.remove()]);
  });
});

describe('harness CNI with cniVersion 0.3.1', { skip, timeout: 60_000 }, () => {
  let mesh: Harness;
  let pod: Pod;
  let recordDir: string;

  before(async () => {
    mesh = await Harness.create({ nodes: 1, cniVersion: '0.3.1' });
    const binDir = join(mesh.tempDir, 'bin');
    recordDir = join(mesh.tempDir, 'records');
    mkdirSync(recordDir);
    installRecordPlugin(binDir, 'ambh-record');
    pod = await mesh.node('node1').addPod({
      name: 'old',
      chain: [{ type: 'ambh-record', binDir, config: { recordDir } }],
    });
  });

  after(() => mesh?.destroy());

  it('parses a 0.3.1 result and refuses CHECK, which 0.3.1 does not define', async () => {
    assert.equal(pod.cni.cniVersion, '0.3.1');
    assert.ok(pod.ip.startsWith(mesh.addresses.podCidr(1).replace(/0\/24$/, '')));
    await assert.rejects(pod.check(), { code: 'CNI_COMMAND_UNSUPPORTED' });
  });

  it('sends DEL without prevResult before 0.4.0, as libcni does', async () => {
    await pod.remove();
    const del = readCalls(recordDir).find((c) => c.command === 'DEL');
    assert.ok(del !== undefined);
    assert.equal(del.config.prevResult, undefined);
    assert.equal(del.config.cniVersion, '0.3.1');
  });
});

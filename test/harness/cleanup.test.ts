import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  Harness,
  isRunOwnerAlive,
  NODE_UNDERLAY_LINK,
  parseRunKey,
  sweepLeftovers,
  TCP_ECHO_SERVER,
  UNDERLAY_BRIDGE,
  unifiedCgroupRoot,
} from './index.ts';

const skip = process.getuid?.() === 0 ? false : 'needs root: creates network namespaces and cgroups';
const BUILT_RUN = fileURLToPath(new URL('./fixtures/built-run.ts', import.meta.url));
const BPFFS = '/sys/fs/bpf';

interface RunState {
  key: string;
  netns: string[];
  cgroupPath: string;
  tempDir: string;
  pids: number[];
  podIps: string[];
}

/** A process is gone when /proc has no entry or only a zombie waiting for its parent. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Everything on the host that carries the run key, looked up the way an operator would. */
function traces(key: string): string[] {
  const found: string[] = [];
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const line of netns.split('\n')) if (line.startsWith(key)) found.push(`netns ${line}`);
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  for (const name of [UNDERLAY_BRIDGE, NODE_UNDERLAY_LINK, 'ambh-n']) {
    if (links.includes(` ${name}`)) found.push(`root netns link ${name}`);
  }
  for (const e of readdirSync(unifiedCgroupRoot())) if (e.startsWith(key)) found.push(`cgroup ${e}`);
  for (const e of readdirSync(tmpdir())) if (e.startsWith(key)) found.push(`temp dir ${e}`);
  if (existsSync(BPFFS)) for (const e of readdirSync(BPFFS)) if (e.startsWith(key)) found.push(`bpffs ${e}`);
  if (existsSync('/var/lib/cni/networks/ambh-pods')) found.push('host-local state in /var/lib/cni');
  return found;
}

async function startBuiltRun(mode: 'wait' | 'exit'): Promise<{ child: ChildProcess; state: RunState }> {
  const child = spawn(process.execPath, ['--conditions=@ambient/source', BUILT_RUN, mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => {
    out += c;
  });
  child.stderr?.setEncoding('utf8').on('data', (c: string) => {
    err += c;
  });
  const state = await new Promise<RunState>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no state line within 20 s; stderr: ${err}`)), 20_000);
    const onData = (): void => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line === undefined) return;
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      resolve(JSON.parse(line) as RunState);
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code, signal) => {
      onData();
      clearTimeout(timer);
      reject(new Error(`built-run exited (${code ?? signal}) before its state line; stderr: ${err}`));
    });
  });
  return { child, state };
}

describe('harness cleanup', { skip, timeout: 90_000 }, () => {
  it('leaves nothing behind after destroy', async () => {
    const mesh = await Harness.create({ nodes: 2 });
    const key = mesh.key;
    let cgroupPids: number[] = [];
    try {
      const [a, b] = await Promise.all([
        mesh.node('node1').addPod({ name: 'a' }),
        mesh.node('node2').addPod({ name: 'b' }),
      ]);
      const server = b.spawnNode(TCP_ECHO_SERVER, ['--port', '7000']);
      await server.waitForLine('"listening"');
      // A grandchild the harness never tracked itself: only the pod cgroup knows about it.
      const forker = a.spawn('/bin/sh', ['-c', 'sleep 300 & echo started; wait']);
      await forker.waitForLine('started');
      const nodeProc = mesh.node('node1').spawn('sleep', ['300']);
      await nodeProc.started;
      cgroupPids = [a, b, mesh.node('node1')].flatMap((h) =>
        readFileSync(join(h.cgroupPath, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number),
      );
      assert.equal(cgroupPids.length, 4, `server, shell, its sleep, node sleep: ${cgroupPids.join(',')}`);
      // What an eBPF-mode CNI agent of this run would pin: a directory per pod under /sys/fs/bpf/<key>.
      if (existsSync(BPFFS)) mkdirSync(join(BPFFS, key, 'pod-uid', 'links'), { recursive: true });
      assert.ok(traces(key).length > 0, 'the run is visible before destroy');
      const fabricLinks = execFileSync('ip', ['-n', mesh.fabricNetns, '-o', 'link', 'show'], {
        encoding: 'utf8',
      });
      assert.match(fabricLinks, new RegExp(`${UNDERLAY_BRIDGE}:`));
      assert.match(fabricLinks, /ambh-n1@/);
    } finally {
      const report = await mesh.destroy();
      assert.deepEqual(report.leftovers, []);
      if (existsSync(BPFFS)) assert.deepEqual(report.bpfPins, [join(BPFFS, key)]);
    }

    assert.deepEqual(traces(key), []);
    assert.ok(!existsSync(join(mesh.tempDir, 'nodes', 'node1', 'ipam')), 'host-local state removed');
    assert.throws(
      () => execFileSync('ip', ['-n', mesh.fabricNetns, 'link', 'show'], { stdio: 'pipe' }),
      'the fabric netns (and every link in it) is gone',
    );
    for (const pid of cgroupPids) assert.ok(!alive(pid), `pid ${pid} still running`);
    // Idempotent.
    await mesh.destroy();
  });

  it('never sweeps a run whose owner is alive, and sweeps it once the owner is SIGKILLed', async () => {
    const { child, state } = await startBuiltRun('wait');
    try {
      assert.equal(parseRunKey(state.netns[0] ?? '')?.key, state.key);
      assert.equal(state.netns.length, 5, `fabric, 2 nodes, 2 pods: ${state.netns.join(', ')}`);
      const concurrent = sweepLeftovers();
      assert.ok(concurrent.live.includes(state.key), 'the live run is reported as live');
      assert.ok(!concurrent.removed.some((r) => r.key === state.key));
      assert.ok(traces(state.key).length > 0, 'a concurrent sweep left the live run alone');

      child.kill('SIGKILL');
      await once(child, 'exit');
      const run = parseRunKey(state.key);
      assert.ok(run !== undefined && !isRunOwnerAlive(run));
      // The crash left everything behind, including the processes the run had started.
      assert.ok(existsSync(state.cgroupPath) && existsSync(state.tempDir));
      assert.ok(state.pids.every(alive), 'orphaned pod and node processes keep running after the crash');

      // The next harness sweeps on creation (another test process may have swept first; the
      // outcome is the same, so the check is on the host, not on who did it).
      const next = await Harness.create({ nodes: 1 });
      const sweptHere = next.sweepReport?.removed.find((r) => r.key === state.key);
      await next.destroy();
      if (sweptHere !== undefined) assert.deepEqual(sweptHere.leftovers, []);
      assert.deepEqual(traces(state.key), []);
      for (const pid of state.pids) assert.ok(!alive(pid), `orphan ${pid} was not killed by the sweep`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it('tears the run down from the exit hook when the process exits without destroy()', async () => {
    const { child, state } = await startBuiltRun('exit');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
    assert.deepEqual(traces(state.key), []);
    for (const pid of state.pids) assert.ok(!alive(pid), `pid ${pid} survived the exit hook`);
  });

  it('tears the run down on SIGTERM and still dies of the signal', async () => {
    const { child, state } = await startBuiltRun('wait');
    child.kill('SIGTERM');
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    assert.equal(signal, 'SIGTERM', `exit code ${code}`);
    assert.deepEqual(traces(state.key), []);
    for (const pid of state.pids) assert.ok(!alive(pid), `pid ${pid} survived the signal hook`);
  });
});

/**
 * The daemon's control protocol, both ends: ControlServer on a unix socket in a temp dir and the
 * CLI's RemoteMesh/ControlClient. The mesh behind the server is a small recording stand-in — this
 * tests the protocol (routes, bodies, error codes, shutdown), not a mesh; the daemon with a real
 * LocalMesh is tested in host-daemon.test.ts. Also the progress log and the state file.
 */
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MeshError } from '@ambient/common/errors';
import { Logging } from '@ambient/common/log';
import { AmbientctlError } from '../src/errors.ts';
import { ControlClient } from '../src/host/control-client.ts';
import { ControlServer } from '../src/host/control-server.ts';
import type {
  ApplyResult,
  ComponentName,
  ComponentStatus,
  HostedMesh,
  MeshNodeInfo,
  PodStatus,
} from '../src/host/hosted-mesh.ts';
import { ProgressReader, ProgressWriter } from '../src/host/progress-log.ts';
import { RemoteMesh } from '../src/host/remote-mesh.ts';
import { isHostAlive, readHostState, writeHostState } from '../src/host/state-file.ts';
import { ApplyRejectedError } from '../src/local-mesh/index.ts';

const node = (name: string, i: number): MeshNodeInfo => ({
  name,
  ip: `172.31.9.${i}`,
  netnsPath: `/var/run/netns/test-${name}`,
  podCidr: `10.9.${i}.0/24`,
});

const POD: PodStatus = {
  namespace: 'demo',
  name: 'echo-1',
  uid: 'uid-1',
  node: 'node1',
  ip: '10.9.1.2',
  phase: 'Running',
  ready: true,
  restarts: 0,
  ambient: true,
  netnsPath: '/var/run/netns/pod',
  cgroupPath: '/sys/fs/cgroup/pod',
  pid: 42,
  logFile: '/tmp/echo.log',
  owner: 'echo',
  message: undefined,
};

/** Records each call and answers from canned values; `fail` makes the next call throw. */
class RecordingMesh implements HostedMesh {
  readonly stateDir = '/run/ambientctl/test';
  readonly redirectMode = 'nftables' as const;
  readonly nodes = [node('node1', 1), node('node2', 2)];
  readonly controlPlane = node('control-plane', 3);
  readonly istiodAddress = 'https://172.31.9.3:15012';
  readonly calls: unknown[][] = [];
  fail: Error | undefined;
  downs = 0;

  #maybeFail(): void {
    const f = this.fail;
    this.fail = undefined;
    if (f) throw f;
  }
  components(): ComponentStatus[] {
    return [{ name: 'ztunnel', node: 'node1', pid: 7, ready: true, restarts: 1, logFile: '/tmp/z.log' }];
  }
  pods(): PodStatus[] {
    return [POD];
  }
  async apply(yamlText: string): Promise<ApplyResult[]> {
    this.calls.push(['apply', yamlText]);
    this.#maybeFail();
    return [{ kind: 'Service', namespace: 'demo', name: 'echo', action: 'created' }];
  }
  async delete(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    this.calls.push(['delete', kind, namespace, name]);
    this.#maybeFail();
    return name === 'echo';
  }
  async waitPodsRunning(
    namespace: string,
    selector?: Record<string, string>,
    timeoutMs?: number,
  ): Promise<PodStatus[]> {
    this.calls.push(['waitPodsRunning', namespace, selector, timeoutMs]);
    return [POD];
  }
  async ztunnelAdmin(n: string, path: string): Promise<{ status: number; body: string }> {
    this.calls.push(['ztunnelAdmin', n, path]);
    return { status: 200, body: `{"node":"${n}","path":"${path}"}` };
  }
  async ztunnelMetrics(n: string): Promise<string> {
    this.calls.push(['ztunnelMetrics', n]);
    return `istio_build{component="ztunnel",node="${n}"} 1\n`;
  }
  async exec(
    namespace: string,
    pod: string,
    argv: readonly string[],
    opts?: { timeoutMs?: number; check?: boolean },
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    this.calls.push(['exec', namespace, pod, argv, opts]);
    this.#maybeFail();
    return { code: 3, stdout: 'out\n', stderr: 'err\n' };
  }
  async restartComponent(name: ComponentName, n?: string): Promise<void> {
    this.calls.push(['restartComponent', name, n]);
  }
  async down(): Promise<void> {
    this.downs++;
  }
}

describe('control protocol over the unix socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ambientctl-host-'));
  const socketPath = join(dir, 'control.sock');
  const mesh = new RecordingMesh();
  let shutdowns = 0;
  let server: ControlServer;
  let remote: RemoteMesh;

  before(async () => {
    // A socket file left by a dead daemon must not stop a new one.
    writeFileSync(socketPath, 'stale');
    server = new ControlServer({
      mesh,
      socketPath,
      onShutdown: () => {
        shutdowns++;
      },
      log: new Logging({ levels: 'off' }).logger('host'),
    });
    await server.start();
    remote = await RemoteMesh.connect(socketPath);
  });

  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves only root: the socket is mode 0600', () => {
    assert.equal(statSync(socketPath).mode & 0o777, 0o600);
  });

  it('status carries the mesh shape, components and pods', async () => {
    assert.deepEqual(remote.nodes, mesh.nodes);
    assert.deepEqual(remote.controlPlane, mesh.controlPlane);
    assert.equal(remote.istiodAddress, mesh.istiodAddress);
    assert.equal(remote.redirectMode, 'nftables');
    assert.equal(remote.pid, process.pid);
    assert.deepEqual(await remote.components(), mesh.components());
    // JSON drops undefined fields, as the wire does.
    assert.deepEqual(await remote.pods(), JSON.parse(JSON.stringify([POD])));
  });

  it('apply sends the YAML text as is and returns the results', async () => {
    const yaml = 'apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\n  namespace: demo\n# ünïcode\n';
    assert.deepEqual(await remote.apply(yaml), [
      { kind: 'Service', namespace: 'demo', name: 'echo', action: 'created' },
    ]);
    assert.deepEqual(mesh.calls.at(-1), ['apply', yaml]);
  });

  it('a rejected document comes back as MANIFEST_INVALID with what was applied', async () => {
    mesh.fail = new ApplyRejectedError(
      [{ kind: 'Namespace', namespace: undefined, name: 'demo', action: 'unchanged' }],
      [{ line: 7, ref: 'Pod default/broken', reason: 'spec: required' }],
    );
    const err = await remote.apply('x').then(
      () => assert.fail('must reject'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof AmbientctlError, String(err));
    assert.equal(err.code, 'MANIFEST_INVALID');
    assert.match(err.message, /line 7: Pod default\/broken: spec: required/);
    assert.deepEqual((err as AmbientctlError & { details: { applied: unknown } }).details.applied, [
      { kind: 'Namespace', name: 'demo', action: 'unchanged' },
    ]);
  });

  it('delete, waitPodsRunning, exec and restart pass their arguments through', async () => {
    assert.equal(await remote.delete('AuthorizationPolicy', 'demo', 'echo'), true);
    assert.equal(await remote.delete('Namespace', undefined, 'other'), false);
    assert.deepEqual(mesh.calls.at(-1), ['delete', 'Namespace', undefined, 'other']);
    assert.deepEqual(await remote.waitPodsRunning('demo', { app: 'echo' }, 1234), [
      JSON.parse(JSON.stringify(POD)),
    ]);
    assert.deepEqual(mesh.calls.at(-1), ['waitPodsRunning', 'demo', { app: 'echo' }, 1234]);
    assert.deepEqual(await remote.exec('demo', 'echo-1', ['curl', '-s', 'http://x/'], { timeoutMs: 500 }), {
      code: 3,
      stdout: 'out\n',
      stderr: 'err\n',
    });
    assert.deepEqual(mesh.calls.at(-1), [
      'exec',
      'demo',
      'echo-1',
      ['curl', '-s', 'http://x/'],
      { timeoutMs: 500, check: false },
    ]);
    await remote.restartComponent('ztunnel', 'node2');
    assert.deepEqual(mesh.calls.at(-1), ['restartComponent', 'ztunnel', 'node2']);
  });

  it('ztunnel admin and metrics of a node, passed through', async () => {
    assert.deepEqual(await remote.ztunnelAdmin('node2', '/config_dump'), {
      status: 200,
      body: '{"node":"node2","path":"/config_dump"}',
    });
    assert.match(await remote.ztunnelMetrics('node1'), /node="node1"/);
    await assert.rejects(remote.ztunnelAdmin('node9', '/config_dump'), {
      code: 'NOT_FOUND',
      message: /no node "node9"/,
    });
  });

  it("keeps the mesh's error codes, and maps foreign ones to CONTROL_FAILED", async () => {
    mesh.fail = new AmbientctlError('POD_NOT_FOUND', 'no pod demo/x');
    await assert.rejects(remote.exec('demo', 'x', ['true']), {
      code: 'POD_NOT_FOUND',
      message: 'no pod demo/x',
    });
    mesh.fail = new MeshError('COMMAND_FAILED', 'nsenter died');
    await assert.rejects(remote.exec('demo', 'x', ['true']), {
      code: 'CONTROL_FAILED',
      message: 'COMMAND_FAILED: nsenter died',
    });
    mesh.fail = new Error('plain');
    await assert.rejects(remote.exec('demo', 'x', ['true']), { code: 'CONTROL_FAILED', message: 'plain' });
  });

  it('rejects malformed requests as USAGE and unknown routes as NOT_FOUND', async () => {
    const client = new ControlClient(socketPath);
    await assert.rejects(client.post('/v1/exec', { namespace: 'demo', pod: 'x', argv: [] }), {
      code: 'USAGE',
    });
    await assert.rejects(client.post('/v1/delete', 'not json'), { code: 'USAGE' });
    await assert.rejects(client.post('/v1/restart', { component: 'kube-proxy' }), { code: 'USAGE' });
    await assert.rejects(client.get('/v1/nothing'), { code: 'NOT_FOUND' });
  });

  it('shutdown answers first, then calls back once', async () => {
    await (await RemoteMesh.connect(socketPath)).shutdown();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(shutdowns, 1);
    await new ControlClient(socketPath).post('/v1/shutdown', {});
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(shutdowns, 1, 'a second request does not start a second shutdown');
  });

  it('no daemon on the socket is MESH_NOT_RUNNING', async () => {
    await assert.rejects(RemoteMesh.connect(join(dir, 'absent.sock')), { code: 'MESH_NOT_RUNNING' });
  });
});

describe('progress log', () => {
  it('reads records as they are appended, waiting for a line to be complete', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ambientctl-progress-'));
    try {
      const file = join(dir, 'progress.jsonl');
      const reader = new ProgressReader(file);
      assert.deepEqual(reader.read(), [], 'no file yet');
      const w = new ProgressWriter(file);
      w.step({ step: 'nodes', state: 'start' });
      w.step({ step: 'nodes', state: 'done', detail: 'node1' });
      assert.deepEqual(
        reader.read().map((r) => (r.type === 'step' ? [r.step, r.state, r.detail] : [r.type])),
        [
          ['nodes', 'start', undefined],
          ['nodes', 'done', 'node1'],
        ],
      );
      appendFileSync(file, '{"type":"ready","at":"2026');
      assert.deepEqual(reader.read(), [], 'half a line waits');
      appendFileSync(file, '-01-01T00:00:00Z"}\n');
      assert.deepEqual(reader.read(), [{ type: 'ready', at: '2026-01-01T00:00:00Z' }]);
      w.failed('BUILD_MISSING', 'run npm run build');
      assert.deepEqual(
        reader.read().map((r) => (r.type === 'failed' ? [r.code, r.message] : [])),
        [['BUILD_MISSING', 'run npm run build']],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('state file', () => {
  it('round-trips, and only a live daemon of this state dir counts as alive', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ambientctl-state-'));
    try {
      const file = join(dir, 'state.json');
      assert.equal(readHostState(file), undefined);
      const state = {
        name: 'x',
        stateDir: dir,
        pid: process.pid,
        phase: 'ready' as const,
        startedAt: new Date().toISOString(),
        redirectMode: 'ebpf' as const,
        nodes: [node('node1', 1)],
        istiodAddress: 'https://172.31.9.3:15012',
      };
      writeHostState(file, state);
      assert.deepEqual(readHostState(file), state);
      assert.equal(existsSync(`${file}.tmp-${process.pid}`), false, 'written through a rename');
      // This test process is alive, but it is not `ambientctl host --state-dir <dir>`.
      assert.equal(isHostAlive(process.pid, dir), false);
      assert.equal(isHostAlive(2 ** 22 + 1, dir), false);
      writeFileSync(file, '{');
      assert.throws(() => readHostState(file), { code: 'CONTROL_FAILED' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

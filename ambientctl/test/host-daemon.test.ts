/**
 * `ambientctl up` with its daemon, run as a user runs it: the daemon detaches and owns a real
 * local mesh; the verbs reach it over the control socket (status, zc — with a live connection in
 * `zc connections` —, exec, apply, delete, logs); `up` again is MESH_RUNNING; `down` leaves
 * nothing. Then a daemon killed with SIGKILL (its mesh orphaned): `down` still removes everything.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually } from '@ambient/common/testing/eventually';
import { isRoot, leftovers, pidsOf, runCli, runKeyOf, startCli } from './cli-process.ts';

const NODE = process.execPath;
const stateRoot = mkdtempSync(join(tmpdir(), 'actl-host-'));
const env = { AMBIENTCTL_STATE_ROOT: stateRoot };

after(() => rmSync(stateRoot, { recursive: true, force: true }));

describe('ambientctl up with its daemon, then down', {
  skip: !isRoot && 'needs root (network namespaces, nftables, cgroups)',
}, () => {
  const name = ['--name', 'd1'];
  let upOutput = '';

  before(async () => {
    const r = await runCli(['up', ...name], env);
    upOutput = r.stdout + r.stderr;
    assert.equal(r.code, 0, upOutput);
  });

  after(async () => {
    // Whatever happened above, the mesh goes.
    await runCli(['down', ...name], env);
  });

  it('up printed the progress, the guided check, what runs where and the next steps', () => {
    for (const line of [
      /✓ istiod \(/,
      /✓ ztunnel node2 \(/,
      /✓ samples \(/,
      /✓ traffic flowing: /,
      /✓ non-mesh path: /,
    ]) {
      assert.match(upOutput, line);
    }
    assert.match(upOutput, /\nztunnel +node1 +\d+ +true +0 +\S+ztunnel-node1\.log/);
    assert.match(upOutput, /\ndemo +echo-\S+ +1\/1 +Running +0 +10\.\S+ +node\d +enabled +\d+/);
    assert.match(upOutput, /exec --name d1 deploy\/client -n demo -- curl -s http:\/\/10\.96\.\d+\.\d+\//);
  });

  it('up again is MESH_RUNNING', async () => {
    const r = await runCli(['up', ...name], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /MESH_RUNNING: mesh d1 is already running \(daemon pid \d+, ready\)/);
  });

  it('status: what runs where, exit 0 when all is ready', async () => {
    const r = await runCli(['status', ...name], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Mesh d1: running \(daemon pid \d+/);
    assert.equal(runKeyOf(r.stdout), runKeyOf(upOutput));
  });

  it('zc connections shows a connection while it is open', async () => {
    const svc = JSON.parse((await runCli(['zc', 'services', ...name, '-o', 'json'], env)).stdout) as {
      name: string;
      vips: string[];
    }[];
    const vip = svc.find((s) => s.name === 'echo')?.vips[0]?.split('/')[1] ?? assert.fail('echo VIP');
    const hold = startCli(
      [
        'exec',
        ...name,
        'deploy/client',
        '-n',
        'demo',
        '--',
        NODE,
        '-e',
        `const s=require('net').connect(80,'${vip}',()=>console.log('open'));setTimeout(()=>s.end(),8000)`,
      ],
      env,
    );
    try {
      await hold.waitFor(/open/, 10_000);
      const find = (direction: string) =>
        eventually(`an ${direction} connection in zc connections`, async () => {
          for (const node of ['node1', 'node2']) {
            const r = await runCli(['zc', 'connections', ...name, '--node', node], env);
            const line = r.stdout.split('\n').find((l) => new RegExp(` ${direction} `).test(l));
            if (line !== undefined) return line;
          }
          return undefined;
        });
      const row = await find('Inbound');
      assert.match(
        row,
        /^echo-\S+\.demo +Inbound +echo-\S+\.demo:8080 +client-\S+\.demo:\d+ +10\.\S+:8080 +HBONE$/,
      );
      // The client's side: from its own socket, to the VIP it dialled (shown as the Service),
      // through the echo pod's HBONE port.
      const out = await find('Outbound');
      assert.match(
        out,
        /^client-\S+\.demo +Outbound +client-\S+\.demo:\d+ +echo-\S+\.demo:15008 +echo\.demo\.svc\.cluster\.local:80 +HBONE$/,
      );
    } finally {
      hold.child.kill('SIGTERM');
      await hold.done;
    }
  });

  it("exec runs in the pod and exits with the command's status", async () => {
    const r = await runCli(
      ['exec', ...name, 'deploy/client', '-n', 'demo', '--', 'sh', '-c', 'cat /proc/self/cgroup; exit 7'],
      env,
    );
    assert.equal(r.code, 7, r.stderr);
    assert.match(r.stdout, /^0::\/ambh-[^/]+\/node\d\/kubepods\/pod[0-9a-f-]+$/m, 'in the pod cgroup');
    const miss = await runCli(['exec', ...name, 'nope', '-n', 'demo', '--', 'true'], env);
    assert.equal(miss.code, 1);
    assert.match(miss.stderr, /POD_NOT_FOUND: no pod nope in namespace demo; pods there: /);
  });

  it('apply applies the good documents and names the bad one; delete removes by kind and name', async () => {
    const file = join(stateRoot, 'policy.yaml');
    writeFileSync(
      file,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-8080
  namespace: demo
spec:
  action: DENY
  rules:
  - to:
    - operation:
        ports: ["8080"]
---
apiVersion: v1
kind: Pod
metadata:
  name: no-spec
  namespace: demo
`,
    );
    const r = await runCli(['apply', ...name, '-f', file], env);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^authorizationpolicy\.security\.istio\.io\/deny-8080 created$/m);
    assert.match(
      r.stderr,
      /MANIFEST_INVALID: 1 document\(s\) rejected \(1 applied\):\n {2}line \d+: Pod demo\/no-spec: spec/,
    );
    const pol = await eventually('the policy at ztunnel', async () => {
      const t = (await runCli(['zc', 'policies', ...name, '--node', 'node2'], env)).stdout;
      return t.includes('deny-8080') ? t : undefined;
    });
    assert.match(pol, /\ndemo +deny-8080 +Deny +Namespace\n/);
    const d = await runCli(['delete', ...name, 'authorizationpolicy', 'deny-8080', '-n', 'demo'], env);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(d.stdout, 'authorizationpolicy.security.istio.io/deny-8080 deleted\n');
    const again = await runCli(['delete', ...name, 'authorizationpolicy', 'deny-8080', '-n', 'demo'], env);
    assert.equal(again.code, 1);
  });

  it('logs of a component and of a pod', async () => {
    const z = await runCli(['logs', ...name, 'ztunnel', '--node', 'node1', '--tail', '5'], env);
    assert.equal(z.code, 0, z.stderr);
    assert.equal(z.stdout.trimEnd().split('\n').length, 5);
    const echo = await runCli(['logs', ...name, 'deploy/echo', '-n', 'demo'], env);
    assert.match(echo.stdout, /GET \/ from /);
  });

  it('down stops the daemon and leaves nothing', async () => {
    const runKey = runKeyOf(upOutput);
    const pids = pidsOf(upOutput);
    const r = await runCli(['down', ...name], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Mesh d1 is down/);
    assert.deepEqual(await leftovers(runKey, join(stateRoot, 'd1'), pids), []);
  });
});

describe('down after the daemon was killed', {
  skip: !isRoot && 'needs root (network namespaces, nftables, cgroups)',
}, () => {
  it('removes the orphaned mesh all the same', async () => {
    const name = ['--name', 'd2'];
    const up = await runCli(['up', ...name, '--nodes', '1', '--no-check'], env);
    assert.equal(up.code, 0, up.stdout + up.stderr);
    const state = JSON.parse(readFileSync(join(stateRoot, 'd2', 'state.json'), 'utf8')) as { pid: number };
    process.kill(state.pid, 'SIGKILL');
    await eventually('the daemon gone', async () => {
      try {
        process.kill(state.pid, 0);
        return undefined;
      } catch {
        return true;
      }
    });
    const status = await runCli(['status', ...name], env);
    assert.equal(status.code, 1);
    assert.match(status.stderr, /MESH_NOT_RUNNING: mesh d2 is not answering/);
    const down = await runCli(['down', ...name], env);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /Removed leftovers of 1 crashed run\(s\): ambh-/);
    assert.deepEqual(await leftovers(runKeyOf(up.stdout), join(stateRoot, 'd2'), pidsOf(up.stdout)), []);
  });
});

describe('up when a component cannot start', {
  skip: !isRoot && 'needs root (network namespaces, nftables, cgroups)',
}, () => {
  it('names the failed step and why, removes the mesh, keeps the logs until down', async () => {
    const name = ['--name', 'd3'];
    const up = await runCli(['up', ...name, '--component-env', 'ztunnel:LOG_LEVEL=bogus'], env);
    assert.equal(up.code, 1, up.stdout + up.stderr);
    assert.match(
      up.stdout,
      /✗ ztunnel node\d \(\d+\.\ds\): ztunnel node\d exited while starting \(exit code 2\)/,
    );
    assert.match(up.stderr, /^ambientctl: STEP_FAILED: step ztunnel node\d failed: /);
    assert.match(up.stderr, /invalid environment variable LOG_LEVEL="bogus"/, "the component's own words");
    assert.match(up.stderr, /Everything it created was removed; logs stay in \S+\/d3\/logs/);
    const runKey = `ambh-${JSON.parse(readFileSync(join(stateRoot, 'd3', 'state.json'), 'utf8')).pid}-`;
    assert.ok(existsSync(join(stateRoot, 'd3', 'logs', 'istiod.log')), 'the logs stay');
    const status = await runCli(['status', ...name], env);
    assert.equal(status.code, 1);
    assert.match(status.stderr, /MESH_NOT_RUNNING: mesh d3 failed to start: step ztunnel/);
    assert.equal((await runCli(['down', ...name], env)).code, 0);
    assert.deepEqual(await leftovers(runKey, join(stateRoot, 'd3')), []);
  });
});

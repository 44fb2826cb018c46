/**
 * The local mesh end to end, once per redirection mode: `LocalMesh.up` with the samples (two
 * nodes, istiod, a real istio-cni agent and a ztunnel per node, pods through the real CNI chain),
 * then traffic, identities, the pod runner (apply, delete, scale, restarts), supervision of the
 * components, and `down` leaving nothing behind. A last suite kills a mesh's owner with SIGKILL
 * and checks that `sweepLocalMeshes` removes what it left. Needs root.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { REDIRECT_OBJECT_PATH } from '@ambient/cni/redirect';
import { eventually } from '@ambient/common/testing/eventually';
import { listNetns, unifiedCgroupRoot } from '@ambient/test/harness';
import { AmbientctlError } from '../src/errors.ts';
import {
  ApplyRejectedError,
  LocalMesh,
  type PodStatus,
  type ProgressEvent,
  type RedirectMode,
  sweepLocalMeshes,
} from '../src/local-mesh/index.ts';
import { CLIENT_PROGRAM, SAMPLE_MANIFESTS } from '../src/samples/index.ts';

const isRoot = process.getuid?.() === 0;
const MESH_MODULE = fileURLToPath(new URL('../src/local-mesh/index.ts', import.meta.url));
const CLIENT_PRINCIPAL = 'spiffe://cluster.local/ns/demo/sa/client';
const ECHO_PRINCIPAL = 'spiffe://cluster.local/ns/demo/sa/echo';

function skipReason(mode: RedirectMode): string | false {
  if (!isRoot) return 'needs root (network namespaces, nftables, eBPF)';
  if (mode === 'ebpf' && !existsSync(REDIRECT_OBJECT_PATH)) {
    return `eBPF object not built (${REDIRECT_OBJECT_PATH}); npm run build -w @ambient/cni`;
  }
  if (mode === 'ebpf' && !existsSync('/sys/fs/bpf')) return 'no bpffs at /sys/fs/bpf';
  return false;
}

/** Sum of a Prometheus counter's samples whose labels include every pair in `labels`. */
function counterSum(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** A running process (a zombie waiting for a parent that no longer exists to reap it is gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** What a run key left anywhere on the machine. */
function leftovers(runKey: string): string[] {
  const out = listNetns().filter((n) => n.startsWith(runKey));
  if (existsSync(join(unifiedCgroupRoot(), runKey))) out.push(`cgroup ${runKey}`);
  if (existsSync(join('/sys/fs/bpf', runKey))) out.push(`bpffs ${runKey}`);
  if (existsSync(join(tmpdir(), runKey))) out.push(`temp dir ${runKey}`);
  return out;
}

for (const mode of ['nftables', 'ebpf'] as const) {
  describe(`local mesh (${mode})`, { skip: skipReason(mode), timeout: 120_000 }, () => {
    let stateDir: string;
    let mesh: LocalMesh;
    const events: ProgressEvent[] = [];
    let startedAt = 0;

    const demoPods = (app: string): PodStatus[] =>
      mesh.pods().filter((p) => p.namespace === 'demo' && p.owner === app);
    const firstPod = (namespace: string, app: string): PodStatus => {
      const p = mesh.pods().find((x) => x.namespace === namespace && x.owner === app);
      assert.ok(p, `a ${namespace}/${app} pod`);
      return p;
    };
    const echoVip = (): string => {
      const vip = mesh.serviceAddress('demo', 'echo');
      assert.ok(vip, 'the echo Service has a ClusterIP');
      return vip;
    };
    /** Requests from the demo client to the echo Service with the built-in client; the pods that answered. */
    const requestEcho = async (count: number): Promise<string[]> => {
      const client = firstPod('demo', 'client');
      const r = await mesh.exec(
        'demo',
        client.name,
        [process.execPath, CLIENT_PROGRAM, '--url', `http://${echoVip()}/check`, '--count', String(count)],
        { timeoutMs: 20_000 },
      );
      const lines = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { ok: boolean; pod?: string; error?: string });
      assert.equal(r.code, 0, `every request answered: ${r.stdout}${r.stderr}`);
      return lines.map((l) => l.pod ?? '?');
    };

    before(async () => {
      stateDir = mkdtempSync(join(tmpdir(), 'ambientctl-lm-'));
      startedAt = Date.now();
      mesh = await LocalMesh.up({
        stateDir,
        redirectMode: mode,
        nodes: 2,
        onProgress: (e) => events.push(e),
      });
    });

    after(async () => {
      await mesh?.down();
      if (stateDir) rmSync(stateDir, { recursive: true, force: true });
    });

    test('comes up step by step, with every component ready', () => {
      const steps = [
        'preflight',
        'nodes',
        'istiod',
        'istio-cni node1',
        'ztunnel node1',
        'istio-cni node2',
        'ztunnel node2',
        'samples',
      ];
      for (const step of steps) {
        assert.ok(
          events.some((e) => e.step === step && e.state === 'start'),
          `${step} started`,
        );
        assert.ok(
          events.some((e) => e.step === step && e.state === 'done'),
          `${step} done`,
        );
      }
      assert.ok(!events.some((e) => e.state === 'fail'), 'no step failed');
      assert.equal(mesh.redirectMode, mode);
      assert.deepEqual(
        mesh.nodes.map((n) => n.name),
        ['node1', 'node2'],
      );
      assert.match(mesh.istiodAddress, /^https:\/\/172\.31\.\d+\.\d+:15012$/);
      const components = mesh.components();
      assert.deepEqual(components.map((c) => `${c.name}/${c.node}`).sort(), [
        'istio-cni/node1',
        'istio-cni/node2',
        'istiod/control-plane',
        'ztunnel/node1',
        'ztunnel/node2',
      ]);
      for (const c of components) {
        assert.ok(c.ready && c.pid !== undefined && c.restarts === 0, `${c.name} ${c.node} ready`);
        assert.ok(existsSync(c.logFile), `${c.logFile} written`);
      }
      console.log(`# ${mode}: up in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
    });

    test('samples run: echo on both nodes, ambient in demo, not in legacy', () => {
      const pods = mesh.pods();
      const echo = demoPods('echo');
      assert.equal(echo.length, 2);
      assert.deepEqual(echo.map((p) => p.node).sort(), ['node1', 'node2'], 'one echo per node');
      assert.equal(demoPods('client').length, 1);
      assert.equal(pods.filter((p) => p.namespace === 'legacy').length, 1);
      for (const p of pods) {
        assert.equal(p.phase, 'Running', `${p.name} Running`);
        assert.equal(p.ambient, p.namespace === 'demo', `${p.namespace}/${p.name} ambient iff in demo`);
        assert.ok(p.ip && p.netnsPath && p.cgroupPath && p.pid, `${p.name} has ip, netns, cgroup, pid`);
        assert.ok(p.cgroupPath.endsWith(`/kubepods/pod${p.uid}`), 'kubelet-style pod cgroup');
        assert.ok(existsSync(p.logFile));
      }
      const manifest = readFileSync(
        join(stateDir, 'manifests', 'pods', 'demo', `${echo[0]?.name}.yaml`),
        'utf8',
      );
      assert.match(
        manifest,
        /ambient\.istio\.io\/redirection: enabled/,
        "the agent's annotation is in the document",
      );
      assert.match(manifest, /podIP: /);
      assert.match(manifest, /kind: ReplicaSet/, 'owned by the ReplicaSet');
    });

    test('exec runs in the pod netns and cgroup', async () => {
      const client = firstPod('demo', 'client');
      const ns = await mesh.exec('demo', client.name, ['readlink', '/proc/self/ns/net'], { check: true });
      assert.equal(ns.stdout.trim(), `net:[${statSync(client.netnsPath as string).ino}]`);
      const cg = await mesh.exec('demo', client.name, ['cat', '/proc/self/cgroup'], { check: true });
      assert.ok(cg.stdout.trim().endsWith(`/kubepods/pod${client.uid}`), cg.stdout);
      const fail = await mesh.exec('demo', client.name, ['false']);
      assert.equal(fail.code, 1);
      await assert.rejects(mesh.exec('demo', client.name, ['false'], { check: true }), {
        code: 'EXEC_FAILED',
      });
      await assert.rejects(mesh.exec('demo', 'nope', ['true']), { code: 'POD_NOT_FOUND' });
    });

    test('demo client reaches the echo Service VIP over mTLS, spread over both pods', async () => {
      const client = firstPod('demo', 'client');
      const curl = await mesh.exec(
        'demo',
        client.name,
        ['curl', '-s', '--max-time', '5', `http://${echoVip()}/hello`],
        {
          check: true,
        },
      );
      const answer = JSON.parse(curl.stdout) as {
        pod: string;
        namespace: string;
        path: string;
        peer: string;
      };
      assert.equal(answer.namespace, 'demo');
      assert.equal(answer.path, '/hello');
      // ztunnel connects to the app with the client's own address.
      assert.ok(answer.peer.includes(client.ip as string), `the echo sees the client's IP: ${answer.peer}`);
      const served = await requestEcho(16);
      assert.deepEqual(
        [...new Set(served)].sort(),
        demoPods('echo')
          .map((p) => p.name)
          .sort(),
        'both echo pods answered',
      );
    });

    test("the destination ztunnel sees the client's SPIFFE identity", async () => {
      await requestEcho(1);
      let seen = 0;
      for (const n of mesh.nodes) {
        seen += counterSum(await mesh.ztunnelMetrics(n.name), 'istio_tcp_connections_opened_total', {
          reporter: 'destination',
          source_principal: CLIENT_PRINCIPAL,
          destination_principal: ECHO_PRINCIPAL,
          connection_security_policy: 'mutual_tls',
          // Workloads are named after their Deployment (istiod reads the ReplicaSet owner).
          source_workload: 'client',
          destination_workload: 'echo',
        });
      }
      assert.ok(seen >= 1, 'destination metrics carry the source principal and the Deployment names');
      const accessLog = mesh
        .components()
        .filter((c) => c.name === 'ztunnel')
        .flatMap((c) => readFileSync(c.logFile, 'utf8').split('\n'))
        .filter((l) => l.includes('"connection complete"') && l.includes('"direction":"inbound"'));
      assert.ok(
        accessLog.some((l) => l.includes(`"src.identity":"${CLIENT_PRINCIPAL}"`)),
        'the inbound access log names the source identity',
      );
      const dump = JSON.parse((await mesh.ztunnelAdmin('node1', '/config_dump')).body) as {
        workloads: { name: string; protocol: string }[];
      };
      assert.ok(
        dump.workloads.some((w) => w.name === firstPod('demo', 'client').name && w.protocol === 'HBONE'),
      );
    });

    test('a legacy (non-mesh) client reaches a demo echo pod in plain text (PERMISSIVE)', async () => {
      // In eBPF mode this needs ztunnel's 15006 listener in the pod's SOCKMAP (ztunnel/src/inpod/ebpf-inbound.ts).
      const legacy = firstPod('legacy', 'client');
      const echo = firstPod('demo', 'echo');
      const r = await mesh.exec(
        'legacy',
        legacy.name,
        ['curl', '-s', '--max-time', '5', `http://${echo.ip}:8080/from-legacy`],
        { timeoutMs: 10_000 },
      );
      assert.equal(r.code, 0, `curl from legacy: ${r.stderr}`);
      assert.equal((JSON.parse(r.stdout) as { pod: string }).pod, echo.name);
      const metrics = await mesh.ztunnelMetrics(echo.node);
      assert.ok(
        counterSum(metrics, 'istio_tcp_connections_opened_total', {
          reporter: 'destination',
          source_workload_namespace: 'legacy',
          source_principal: 'unknown',
        }) >= 1,
        'inbound plaintext recorded without a principal',
      );
    });

    if (mode === 'ebpf') {
      test('after an agent restart rebuilt a pod eBPF set, ztunnel registers its inbound listener again', async () => {
        const legacy = firstPod('legacy', 'client');
        const echo = firstPod('demo', 'echo');
        const plaintext = async () =>
          (
            await mesh.exec(
              'legacy',
              legacy.name,
              ['curl', '-s', '--max-time', '3', `http://${echo.ip}:8080/after-rebuild`],
              { timeoutMs: 8000, check: false },
            )
          ).code === 0;
        const agent = mesh.components().find((c) => c.name === 'istio-cni' && c.node === echo.node);
        assert.ok(agent?.pid);
        process.kill(agent.pid, 'SIGKILL');
        // Lost while the agent is down: its startup reconcile must redo the set, with a new,
        // empty inbound SOCKMAP, and only ztunnel can fill it.
        rmSync(join('/sys/fs/bpf', mesh.runKey, echo.uid, 'links', 'sk_lookup'));
        await eventually('the agent restarted and ready', () => {
          const c = mesh.components().find((x) => x.name === 'istio-cni' && x.node === echo.node);
          return c?.ready === true && c.pid !== agent.pid;
        });
        await eventually('plaintext to the rebuilt pod', plaintext, 20_000);
      });
    }

    test('apply: unchanged on re-apply, a malformed document is rejected alone', async () => {
      const again = await mesh.apply(SAMPLE_MANIFESTS);
      assert.ok(again.length >= 6 && again.every((r) => r.action === 'unchanged'), JSON.stringify(again));
      const text = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: demo
spec:
  mtls:
    mode: PERMISSIVE
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
  namespace: demo
spec:
  selector:
    matchLabels: { app: broken }
  template:
    metadata:
      labels: { app: broken }
    spec:
      containers:
      - name: app
        image: nginx
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
`;
      const err = await mesh.apply(text).then(
        () => assert.fail('apply accepted malformed documents'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof ApplyRejectedError && err instanceof AmbientctlError);
      assert.equal(err.code, 'MANIFEST_INVALID');
      assert.deepEqual(
        err.rejected.map((r) => r.ref),
        ['Deployment demo/broken', 'ConfigMap demo/settings'],
      );
      assert.match(
        err.message,
        /line 10: Deployment demo\/broken: spec\.template\.spec\.containers\[0\]\.command: required/,
      );
      assert.match(err.message, /ConfigMap.*not supported/);
      assert.deepEqual(err.applied, [
        { kind: 'PeerAuthentication', namespace: 'demo', name: 'default', action: 'created' },
      ]);
      assert.ok(existsSync(join(stateDir, 'manifests', 'peerauthentications', 'demo', 'default.yaml')));
      assert.ok(!mesh.pods().some((p) => p.name.startsWith('broken')));
      assert.equal(await mesh.delete('peerauthentication', 'demo', 'default'), true);
    });

    test('standalone pods, commands, and deleting a Deployment and a Namespace', async () => {
      const sleeper = (command: string) => `apiVersion: v1
kind: Pod
metadata:
  name: sleeper
  namespace: scratch
  labels: { app: sleeper }
spec:
  nodeName: node2
  containers:
  - name: main
    image: busybox
    command: [sleep, "${command}"]
`;
      const text = `apiVersion: v1
kind: Namespace
metadata:
  name: scratch
---
${sleeper('3600')}---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
  namespace: scratch
spec:
  replicas: 2
  selector:
    matchLabels: { app: worker }
  template:
    metadata:
      labels: { app: worker }
    spec:
      containers:
      - name: main
        image: busybox
        command: [/bin/sh, -c, 'echo "worker $POD_NAME on $NODE_NAME"; exec sleep 3600']
---
apiVersion: v1
kind: Service
metadata:
  name: worker
  namespace: scratch
spec:
  selector: { app: worker }
  ports:
  - port: 9000
`;
      const results = await mesh.apply(text);
      assert.deepEqual(
        results.map((r) => `${r.kind}/${r.name}:${r.action}`),
        [
          'Namespace/scratch:created',
          'Service/worker:created',
          'Pod/sleeper:created',
          'Deployment/worker:created',
        ],
      );
      const pods = await mesh.waitPodsRunning('scratch', {}, 30_000);
      assert.equal(pods.length, 3);
      assert.equal(pods.find((p) => p.name === 'sleeper')?.node, 'node2', 'spec.nodeName honoured');
      assert.ok(pods.every((p) => !p.ambient));
      assert.match(mesh.serviceAddress('scratch', 'worker') ?? '', /^10\.96\.\d+\.\d+$/);
      const worker = pods.find((p) => p.owner === 'worker');
      assert.ok(worker);
      await eventually('the worker wrote its log', () =>
        readFileSync(worker.logFile, 'utf8').includes(`worker ${worker.name} on ${worker.node}`),
      );
      // Labels may change on a running pod, the spec may not.
      const relabelled = sleeper('3600').replace('{ app: sleeper }', '{ app: sleeper, tier: x }');
      assert.deepEqual(
        (await mesh.apply(relabelled)).map((r) => r.action),
        ['configured'],
      );
      const doc = readFileSync(join(stateDir, 'manifests', 'pods', 'scratch', 'sleeper.yaml'), 'utf8');
      assert.match(doc, /tier: x/);
      await assert.rejects(mesh.apply(sleeper('60')), /a pod may not change other than its labels/);
      assert.equal(await mesh.delete('deployment', 'scratch', 'worker'), true);
      assert.deepEqual(
        mesh
          .pods()
          .filter((p) => p.namespace === 'scratch')
          .map((p) => p.name),
        ['sleeper'],
      );
      assert.equal(await mesh.delete('namespace', undefined, 'scratch'), true);
      assert.equal(mesh.pods().filter((p) => p.namespace === 'scratch').length, 0);
      assert.equal(mesh.serviceAddress('scratch', 'worker'), undefined);
      const files = readdirSync(join(stateDir, 'manifests'), { recursive: true }).map(String);
      assert.deepEqual(
        files.filter((f) => f.includes('scratch')),
        ['pods/scratch', 'services/scratch'].filter((d) => files.includes(d)),
        'only empty directories of the namespace remain',
      );
      await assert.rejects(mesh.delete('configmap', 'demo', 'x'), { code: 'USAGE' });
    });

    test('components are supervised: a killed agent is restarted; restartComponent restarts ztunnel', async () => {
      const agent = mesh.components().find((c) => c.name === 'istio-cni' && c.node === 'node1');
      assert.ok(agent?.pid);
      process.kill(agent.pid, 'SIGKILL');
      await eventually('the agent restarted and ready', () => {
        const c = mesh.components().find((x) => x.name === 'istio-cni' && x.node === 'node1');
        return c !== undefined && c.restarts === agent.restarts + 1 && c.ready && c.pid !== agent.pid;
      });
      await mesh.restartComponent('ztunnel', 'node2');
      const zt = mesh.components().find((c) => c.name === 'ztunnel' && c.node === 'node2');
      assert.ok(zt?.ready && zt.restarts === 1);
      // Pods on node2 get their proxies back from the agent's snapshot.
      await eventually(
        'traffic through the restarted ztunnel',
        async () => (await requestEcho(4)).length === 4,
      );
    });

    test('a crashed container is restarted in place', async () => {
      const client = firstPod('demo', 'client');
      process.kill(client.pid as number, 'SIGKILL');
      const again = await eventually('the client container running again', () => {
        const p = mesh.pods().find((x) => x.name === client.name);
        return p !== undefined && p.restarts === 1 && p.ready && p.pid !== client.pid ? p : undefined;
      });
      assert.equal(again.uid, client.uid, 'same pod');
    });

    test('pod delete: the Deployment replaces it, the old sandbox is gone', async () => {
      const [victim] = demoPods('echo');
      assert.ok(victim);
      assert.equal(await mesh.delete('pod', 'demo', victim.name), true);
      assert.ok(!existsSync(victim.netnsPath as string), 'netns removed');
      assert.ok(!existsSync(victim.cgroupPath as string), 'cgroup removed');
      assert.ok(
        !existsSync(join(stateDir, 'manifests', 'pods', 'demo', `${victim.name}.yaml`)),
        'document removed',
      );
      const echo = await mesh.waitPodsRunning('demo', { app: 'echo' }, 30_000);
      assert.equal(echo.length, 2);
      assert.ok(!echo.some((p) => p.name === victim.name));
      assert.equal(await mesh.delete('pod', 'demo', victim.name), false);
      assert.ok(!(await requestEcho(8)).includes(victim.name), 'no request reaches the deleted pod');
    });

    test('deployment scale up and down', async () => {
      const scaled = (n: number) =>
        SAMPLE_MANIFESTS.replace(
          /name: echo\n {2}namespace: demo\n {2}labels:\n {4}app: echo\nspec:\n {2}replicas: 2/,
          (m) => m.replace('replicas: 2', `replicas: ${n}`),
        );
      assert.notEqual(scaled(3), SAMPLE_MANIFESTS);
      const up = await mesh.apply(scaled(3));
      assert.ok(up.some((r) => r.kind === 'Deployment' && r.name === 'echo' && r.action === 'configured'));
      assert.equal((await mesh.waitPodsRunning('demo', { app: 'echo' }, 30_000)).length, 3);
      await mesh.apply(scaled(1));
      await eventually('one echo pod left', () => demoPods('echo').length === 1, 20_000);
      const [left] = await mesh.waitPodsRunning('demo', { app: 'echo' }, 30_000);
      assert.ok(left);
      assert.deepEqual([...new Set(await requestEcho(4))], [left.name]);
    });

    test('a live mesh survives a sweep', async () => {
      const removed = await sweepLocalMeshes();
      assert.ok(!removed.includes(mesh.runKey));
      assert.ok(listNetns().some((n) => n.startsWith(mesh.runKey)));
      assert.equal((await requestEcho(1)).length, 1);
    });

    test('down leaves nothing behind', async () => {
      const pids = [...mesh.components().map((c) => c.pid), ...mesh.pods().map((p) => p.pid)].filter(
        (p): p is number => p !== undefined,
      );
      const netns = mesh.pods().map((p) => p.netnsPath as string);
      const started = Date.now();
      await mesh.down();
      console.log(`# ${mode}: down in ${Date.now() - started} ms`);
      await mesh.down();
      assert.deepEqual(leftovers(mesh.runKey), []);
      assert.deepEqual(
        pids.filter((p) => alive(p)),
        [],
        'no process left',
      );
      assert.ok(netns.every((p) => !existsSync(p)));
      assert.deepEqual(readdirSync(stateDir).sort(), ['logs']);
      await assert.rejects(mesh.apply(SAMPLE_MANIFESTS), { code: 'MESH_STOPPED' });
    });
  });
}

describe('a local mesh that cannot come up, or whose owner crashed', {
  skip: skipReason('nftables'),
  timeout: 90_000,
}, () => {
  test('a broken component fails up, naming the step and the reason, and leaves nothing', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'ambientctl-broken-'));
    const mine = () => listNetns().filter((n) => n.startsWith(`ambh-${process.pid}-`));
    const before = mine();
    const events: ProgressEvent[] = [];
    try {
      const err = await LocalMesh.up({
        stateDir,
        nodes: 1,
        componentEnv: { ztunnel: { LOG_LEVEL: 'nonsense' } },
        onProgress: (e) => events.push(e),
      }).then(
        async (m) => {
          await m.down();
          return assert.fail('up succeeded with a broken ztunnel');
        },
        (e: unknown) => e,
      );
      assert.ok(err instanceof AmbientctlError);
      assert.equal(err.code, 'STEP_FAILED');
      assert.match(err.message, /ztunnel node1/);
      assert.match(err.message, /LOG_LEVEL="nonsense"/, 'the log tail says why');
      assert.ok(events.some((e) => e.step === 'ztunnel node1' && e.state === 'fail'));
      assert.ok(events.some((e) => e.step === 'down' && e.state === 'done'));
      assert.deepEqual(mine(), before, 'no namespace left');
      assert.deepEqual(readdirSync(stateDir), ['logs'], 'runtime files removed, logs kept');
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  test('sweepLocalMeshes removes what a SIGKILLed owner left', async () => {
    const mode: RedirectMode = skipReason('ebpf') === false ? 'ebpf' : 'nftables';
    const stateDir = mkdtempSync(join(tmpdir(), 'ambientctl-crash-'));
    try {
      const code = `
        import { LocalMesh } from ${JSON.stringify(MESH_MODULE)};
        const mesh = await LocalMesh.up({ stateDir: ${JSON.stringify(stateDir)}, nodes: 1, redirectMode: '${mode}' });
        const pids = [...mesh.components().map((c) => c.pid), ...mesh.pods().map((p) => p.pid)];
        console.log(JSON.stringify({ runKey: mesh.runKey, pids }));
        setInterval(() => {}, 1000);
      `;
      const child = spawn(
        process.execPath,
        ['--conditions=@ambient/source', '--input-type=module', '-e', code],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => {
        stderr += c.toString();
      });
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          const nl = out.indexOf('\n');
          if (nl !== -1) resolve(out.slice(0, nl));
        });
        child.on('exit', (c) => reject(new Error(`mesh owner exited (${c}) before it was up: ${stderr}`)));
      });
      const { runKey, pids } = JSON.parse(line) as { runKey: string; pids: number[] };
      assert.ok(pids.length >= 3);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const left = leftovers(runKey);
      assert.ok(left.length > 0, 'a killed owner leaves its mesh behind');
      if (mode === 'ebpf') assert.ok(left.includes(`bpffs ${runKey}`), 'eBPF pins left behind');
      const removed = await sweepLocalMeshes();
      assert.ok(removed.includes(runKey), `swept ${runKey}`);
      assert.deepEqual(leftovers(runKey), []);
      assert.deepEqual(
        pids.filter((p) => alive(p)),
        [],
        'every component and pod process killed',
      );
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});

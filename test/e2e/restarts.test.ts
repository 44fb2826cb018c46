/**
 * Restarts of the mesh's components while traffic runs, end to end on the local mesh, in both
 * redirection modes:
 * - istiod: the data plane keeps its configuration and certificates, so existing and new
 *   connections keep working through the restart; a pod created after it is back is enrolled
 *   and gets its identity from the new istiod;
 * - ztunnel: its in-pod listeners go with it, so requests fail until the new one has the agent's
 *   snapshot; the failure rate is measured and printed, and traffic must recover within a bound;
 * - the istio-cni agent: it is not on the data path, so traffic of existing pods is untouched;
 *   a pod created while it is down must not start outside the mesh, and starts in it once the
 *   agent is back.
 * Needs root.
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually } from '@ambient/common/testing/eventually';
import type { PodStatus } from '../../ambientctl/src/local-mesh/index.ts';
import { describeEachRedirectMode } from './support/mesh-suite.ts';
import {
  failureRate,
  type LoopRecord,
  sendRequests,
  startRequestLoop,
  summarize,
} from './support/traffic.ts';
import { podYaml } from './support/workloads.ts';
import { configDump, counter, spiffe, workloadStateOf } from './support/ztunnel-view.ts';

const NS = 'demo';
/**
 * From the moment ztunnel is told to stop until requests succeed again. The restart is stop (up
 * to 1 s of connection drain, CONNECTION_TERMINATION_DEADLINE), start (Node start-up, xDS from
 * istiod, certificates, the agent's ZDS snapshot, a proxy per pod): a few seconds here, more on a
 * loaded 2-core CI machine. 20 s is several times what it takes and still catches a ztunnel that
 * never gets its pods back.
 */
const ZTUNNEL_RECOVERY_BOUND_MS = 20_000;
/** Once the restarted ztunnel reports ready it has every pod's proxy: requests after that must not fail. */
const AFTER_READY_GRACE_MS = 1000;

describeEachRedirectMode('e2e restarts', { timeoutMs: 180_000 }, (suite) => {
  let vip = '';
  const pod = (name: string): PodStatus => {
    const p = suite.mesh.pods().find((x) => x.namespace === NS && x.name === name);
    assert.ok(p, `pod ${NS}/${name}`);
    return p;
  };
  const echoes = (): PodStatus[] => suite.mesh.pods().filter((p) => p.namespace === NS && p.owner === 'echo');
  const component = (name: string, node: string) => {
    const c = suite.mesh.components().find((x) => x.name === name && x.node === node);
    assert.ok(c, `${name} on ${node}`);
    return c;
  };

  before(async () => {
    const mesh = suite.mesh;
    // The load generator on a known node: node1's ztunnel carries all of its outbound traffic.
    await mesh.apply(
      podYaml({ namespace: NS, name: 'loader', serviceAccount: 'loader', node: 'node1' }, 'client'),
    );
    await mesh.waitPodsRunning(NS, {}, 30_000);
    const address = mesh.serviceAddress(NS, 'echo');
    assert.ok(address);
    vip = address;
    assert.deepEqual(
      echoes()
        .map((e) => e.node)
        .sort(),
      ['node1', 'node2'],
      'an echo pod on each node',
    );
  });

  test('istiod restart: existing and new connections keep working; new pods enroll once it is back', async () => {
    const mesh = suite.mesh;
    const loader = pod('loader');
    const existing = startRequestLoop(mesh, loader, `http://${vip}/existing`, {
      keepAlive: true,
      intervalMs: 50,
    });
    const fresh = startRequestLoop(mesh, loader, `http://${vip}/new`, { intervalMs: 20 });
    let kept: LoopRecord[];
    let opened: LoopRecord[];
    const before = component('istiod', 'control-plane');
    try {
      await sleep(500);
      await mesh.restartComponent('istiod');
      await sleep(1000);
    } finally {
      kept = await existing.stop();
      opened = await fresh.stop();
    }
    const after = component('istiod', 'control-plane');
    assert.ok(
      after.ready && after.pid !== before.pid && after.restarts === before.restarts + 1,
      'istiod restarted',
    );
    const keptRate = failureRate(kept);
    const openedRate = failureRate(opened);
    console.log(
      `# istiod restart: existing connection ${keptRate.failed}/${keptRate.total} failed, new connections ${openedRate.failed}/${openedRate.total} failed`,
    );
    assert.equal(keptRate.failed, 0, 'requests on the existing connection all answered');
    assert.ok(
      kept.slice(1).every((r) => r.reused === true),
      'one connection throughout: it survived the restart',
    );
    assert.equal(openedRate.failed, 0, 'new connections all answered');

    // A pod with a service account no ztunnel had a certificate for: enrolled by the agent, known
    // to every ztunnel through the new istiod, and reachable over mTLS with a certificate it signed.
    await mesh.apply(
      podYaml({ namespace: NS, name: 'after-istiod', serviceAccount: 'after-istiod', node: 'node2' }, 'echo'),
    );
    const [newPod] = await mesh.waitPodsRunning(NS, { app: 'after-istiod' }, 30_000);
    assert.ok(newPod?.ambient, 'annotated by istio-cni');
    assert.equal(workloadStateOf(await configDump(mesh, 'node2'), newPod)?.state, 'Up');
    const principal = spiffe(NS, 'loader');
    const labels = {
      reporter: 'destination',
      destination_principal: spiffe(NS, 'after-istiod'),
      source_principal: principal,
      connection_security_policy: 'mutual_tls',
    };
    const count = await counter(mesh, ['node2'], labels);
    const answers = summarize(await sendRequests(mesh, loader, `http://${newPod.ip}:8080/`, 3));
    assert.deepEqual(answers, { ok: 3, failed: 0, pods: ['after-istiod'] });
    await eventually('mTLS connections to the new pod counted', async () => {
      return (await counter(mesh, ['node2'], labels)) - count >= 3;
    });
  });

  test('ztunnel restart while traffic runs: failure rate measured, traffic recovers in bounded time', async () => {
    const mesh = suite.mesh;
    const loader = pod('loader');
    const node = loader.node;
    const before = component('ztunnel', node);
    const loop = startRequestLoop(mesh, loader, `http://${vip}/`, { intervalMs: 20, timeoutMs: 2000 });
    let records: LoopRecord[];
    let restartAt = 0;
    let readyAt = 0;
    try {
      await sleep(1000);
      restartAt = Date.now();
      await mesh.restartComponent('ztunnel', node);
      readyAt = Date.now();
      // Recovered means answered again: wait (bounded) for a run of successes, then some more traffic.
      await sleep(3000);
    } finally {
      records = await loop.stop();
    }
    const after = component('ztunnel', node);
    assert.ok(after.ready && after.pid !== before.pid, 'ztunnel restarted');
    const rate = failureRate(records);
    const failed = records.filter((r) => !r.ok);
    const lastFailure = failed.reduce((t, r) => Math.max(t, r.end), restartAt);
    const recoveryMs = lastFailure - restartAt;
    const errors = [...new Set(failed.map((r) => r.error ?? '?'))];
    console.log(
      `# ztunnel restart: ${rate.failed}/${rate.total} requests failed (${rate.pct.toFixed(1)}%, ${suite.mode}); ready after ${readyAt - restartAt} ms, last failure ${recoveryMs} ms after the restart began${errors.length > 0 ? `; errors: ${errors.join('; ')}` : ''}`,
    );
    assert.ok(
      records.filter((r) => r.end < restartAt).every((r) => r.ok),
      'all answered before the restart',
    );
    assert.ok(recoveryMs <= ZTUNNEL_RECOVERY_BOUND_MS, `traffic back within ${ZTUNNEL_RECOVERY_BOUND_MS} ms`);
    const afterReady = records.filter((r) => r.start >= readyAt + AFTER_READY_GRACE_MS);
    assert.ok(afterReady.length >= 50, `traffic after the restart: ${afterReady.length} requests`);
    assert.deepEqual(
      afterReady.filter((r) => !r.ok).map((r) => `request ${r.i} at +${r.start - readyAt} ms: ${r.error}`),
      [],
      'every request answered once the new ztunnel is ready',
    );
    assert.deepEqual(
      summarize(afterReady).pods,
      echoes()
        .map((e) => e.name)
        .sort(),
      'both echo pods reachable again',
    );
  });

  test('istio-cni agent restart: existing pods keep working; a pod created meanwhile starts only in the mesh', async () => {
    const mesh = suite.mesh;
    const node = 'node2';
    const loader = pod('loader');
    const agent = component('istio-cni', node);
    assert.ok(agent.pid !== undefined && agent.ready);
    const enrolledBefore = mesh.pods().filter((p) => p.node === node && p.ambient);
    assert.ok(enrolledBefore.length > 0);
    const loop = startRequestLoop(mesh, loader, `http://${vip}/`, { intervalMs: 20 });
    let records: LoopRecord[];
    let outside: string[] = [];
    let sandboxFailure: string | undefined;
    try {
      // Down: the agent stops answering (SIGSTOP; it still holds its sockets, as a hung agent
      // would), so the plugin's ADD gets no answer and fails; the runtime retries the sandbox.
      process.kill(agent.pid, 'SIGSTOP');
      await mesh.apply(
        podYaml({ namespace: NS, name: 'during-cni-down', serviceAccount: 'during', node }, 'echo'),
      );
      const downUntil = Date.now() + 8000;
      while (Date.now() < downUntil) {
        const p = mesh.pods().find((x) => x.namespace === NS && x.name === 'during-cni-down');
        if (p?.phase === 'Running' && !p.ambient) outside.push(`${p.phase} pid ${p.pid} not ambient`);
        if (p?.message?.includes('sandbox')) sandboxFailure ??= p.message;
        await sleep(100);
      }
      const p = mesh.pods().find((x) => x.namespace === NS && x.name === 'during-cni-down');
      assert.ok(
        p !== undefined && p.phase === 'Pending' && p.pid === undefined,
        `not started: ${JSON.stringify(p)}`,
      );
    } finally {
      // Back: killed, the mesh's supervisor starts a new agent, as a DaemonSet would.
      process.kill(agent.pid, 'SIGKILL');
    }
    try {
      await eventually(
        'a new istio-cni agent ready',
        () => {
          const c = component('istio-cni', node);
          return c.ready && c.pid !== agent.pid && c.restarts === agent.restarts + 1;
        },
        30_000,
      );
      const [started] = await mesh.waitPodsRunning(NS, { app: 'during-cni-down' }, 40_000);
      assert.ok(started?.ambient, 'the pod started in the mesh');
      assert.equal(workloadStateOf(await configDump(mesh, node), started)?.state, 'Up');
      const answers = summarize(await sendRequests(mesh, loader, `http://${started.ip}:8080/`, 3));
      assert.deepEqual(answers, { ok: 3, failed: 0, pods: ['during-cni-down'] });
    } finally {
      records = await loop.stop();
    }
    outside = [...new Set(outside)];
    assert.deepEqual(outside, [], 'the pod never ran outside the mesh');
    assert.ok(sandboxFailure, 'its sandbox failed while the agent was down (the plugin refused ADD)');
    console.log(`# istio-cni down (${suite.mode}): ${sandboxFailure.slice(0, 300)}`);
    // Existing pods: untouched by the agent going away and coming back.
    const rate = failureRate(records);
    console.log(
      `# istio-cni restart: ${rate.failed}/${rate.total} requests of existing pods failed (${suite.mode})`,
    );
    assert.equal(rate.failed, 0, 'traffic of existing pods unaffected');
    const dump = await configDump(mesh, node);
    for (const p of enrolledBefore) {
      const now = mesh.pods().find((x) => x.uid === p.uid);
      assert.ok(now?.ambient && now.pid === p.pid, `${p.name} still running, still in the mesh`);
      assert.equal(workloadStateOf(dump, p)?.state, 'Up', `${p.name} still has its proxy`);
    }
  });
});

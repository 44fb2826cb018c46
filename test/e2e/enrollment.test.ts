/**
 * Enrollment, end to end on the local mesh, in both redirection modes: istio-cni annotates and
 * enrolls ambient pods in their own node's ztunnel (at ADD, and later when their namespace is
 * labelled), and traffic between enrolled pods, on one node and across nodes, goes through HBONE
 * with the client's mTLS identity seen at the destination. Needs root.
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { eventually } from '@ambient/common/testing/eventually';
import type { PodStatus } from '../../ambientctl/src/local-mesh/index.ts';
import { namespaceYaml } from '../netns/support/mesh-manifests.ts';
import { describeEachRedirectMode } from './support/mesh-suite.ts';
import { sendRequests, summarize } from './support/traffic.ts';
import { podYaml } from './support/workloads.ts';
import {
  accessLog,
  configDump,
  counter,
  spiffe,
  workloadOf,
  workloadStateOf,
} from './support/ztunnel-view.ts';

const NS = 'enroll';
const LATE_NS = 'late';
const CLIENT_SA = 'e2e-client';
const SERVER_SA = 'e2e-server';
const REQUESTS = 5;

describeEachRedirectMode('e2e enrollment', { timeoutMs: 150_000 }, (suite) => {
  const pod = (namespace: string, name: string): PodStatus => {
    const p = suite.mesh.pods().find((x) => x.namespace === namespace && x.name === name);
    assert.ok(p, `pod ${namespace}/${name}`);
    return p;
  };
  /** Connections the ztunnel of `node` accepted for `namespace` from `principal` over HBONE. */
  const inboundMtls = (node: string, namespace: string, principal: string): Promise<number> =>
    counter(suite.mesh, [node], {
      reporter: 'destination',
      destination_workload_namespace: namespace,
      source_principal: principal,
      connection_security_policy: 'mutual_tls',
    });

  before(async () => {
    const mesh = suite.mesh;
    await mesh.apply(
      [
        namespaceYaml(NS, true),
        podYaml({ namespace: NS, name: 'client-1', serviceAccount: CLIENT_SA, node: 'node1' }, 'client'),
        podYaml({ namespace: NS, name: 'server-1', serviceAccount: SERVER_SA, node: 'node1' }, 'echo'),
        podYaml({ namespace: NS, name: 'server-2', serviceAccount: SERVER_SA, node: 'node2' }, 'echo'),
      ].join('---\n'),
    );
    await mesh.waitPodsRunning(NS, {}, 30_000);
  });

  test('a pod in an ambient namespace is annotated and enrolled in its own node’s ztunnel', async () => {
    const mesh = suite.mesh;
    const pods = mesh.pods().filter((p) => p.namespace === NS);
    assert.equal(pods.length, 3);
    const dumps = new Map<string, Awaited<ReturnType<typeof configDump>>>();
    for (const n of mesh.nodes) dumps.set(n.name, await configDump(mesh, n.name));
    for (const p of pods) {
      assert.ok(p.ambient, `${p.name} annotated ambient.istio.io/redirection: enabled`);
      for (const [node, dump] of dumps) {
        assert.equal(workloadOf(dump, p)?.protocol, 'HBONE', `ztunnel ${node} reaches ${p.name} over HBONE`);
        const state = workloadStateOf(dump, p);
        if (node === p.node) assert.equal(state?.state, 'Up', `${p.name} has an in-pod proxy on ${node}`);
        else assert.equal(state, undefined, `${p.name} is not enrolled in ztunnel ${node}`);
      }
    }
  });

  test('a namespace labelled ambient later gets its running pods enrolled', async () => {
    const mesh = suite.mesh;
    await mesh.apply(
      [
        namespaceYaml(LATE_NS, false),
        podYaml({ namespace: LATE_NS, name: 'late-a', serviceAccount: CLIENT_SA, node: 'node1' }, 'client'),
        podYaml({ namespace: LATE_NS, name: 'late-b', serviceAccount: SERVER_SA, node: 'node2' }, 'echo'),
      ].join('---\n'),
    );
    const before = await mesh.waitPodsRunning(LATE_NS, {}, 30_000);
    for (const p of before) {
      assert.ok(!p.ambient, `${p.name} not annotated while its namespace is not ambient`);
      const dump = await configDump(mesh, p.node);
      assert.equal(workloadOf(dump, p)?.protocol, 'TCP');
      assert.equal(workloadStateOf(dump, p), undefined, `${p.name} not enrolled yet`);
    }
    const b = pod(LATE_NS, 'late-b');
    const plain = summarize(await sendRequests(mesh, pod(LATE_NS, 'late-a'), `http://${b.ip}:8080/`, 2));
    assert.equal(plain.ok, 2, 'plain traffic flows before enrollment');

    await mesh.apply(namespaceYaml(LATE_NS, true));
    await eventually(
      'the running pods of the labelled namespace enrolled',
      async () => {
        for (const p of before) {
          const now = pod(LATE_NS, p.name);
          if (!now.ambient) return false;
          if (workloadStateOf(await configDump(mesh, p.node), now)?.state !== 'Up') return false;
          for (const n of mesh.nodes) {
            if (workloadOf(await configDump(mesh, n.name), now)?.protocol !== 'HBONE') return false;
          }
        }
        return true;
      },
      20_000,
    );
    for (const p of before) {
      const now = pod(LATE_NS, p.name);
      assert.equal(now.uid, p.uid, `${p.name} enrolled in place`);
      assert.equal(now.pid, p.pid, `${p.name} not restarted`);
    }
    const principal = spiffe(LATE_NS, CLIENT_SA);
    const opened = await inboundMtls(b.node, LATE_NS, principal);
    const answers = summarize(
      await sendRequests(mesh, pod(LATE_NS, 'late-a'), `http://${b.ip}:8080/`, REQUESTS),
    );
    assert.deepEqual(answers, { ok: REQUESTS, failed: 0, pods: ['late-b'] });
    await eventually('late-b’s ztunnel counting the requests over mTLS', async () => {
      return (await inboundMtls(b.node, LATE_NS, principal)) - opened >= REQUESTS;
    });
  });

  test('the destination sees the client’s mTLS identity (access log src.identity)', async () => {
    const mesh = suite.mesh;
    const client = pod(NS, 'client-1');
    const server = pod(NS, 'server-2');
    const seen = accessLog(mesh, server.node).length;
    const answers = summarize(await sendRequests(mesh, client, `http://${server.ip}:8080/identity`, 1));
    assert.equal(answers.ok, 1);
    const line = await eventually('the inbound access log line of the request', () =>
      accessLog(mesh, server.node)
        .slice(seen)
        .find(
          (l) =>
            l.direction === 'inbound' &&
            l['dst.workload'] === server.name &&
            l['src.workload'] === client.name,
        ),
    );
    assert.equal(line['src.identity'], spiffe(NS, CLIENT_SA), 'the client’s SPIFFE identity, proven by mTLS');
    assert.equal(line['dst.identity'], spiffe(NS, SERVER_SA));
    assert.equal(line['dst.hbone_addr'], `${server.ip}:8080`, 'arrived over HBONE');
    assert.equal(line.error, undefined);
  });

  for (const [title, serverName] of [
    ['same-node traffic (node1 → node1) goes through HBONE', 'server-1'],
    ['cross-node traffic (node1 → node2) goes through HBONE', 'server-2'],
  ] as const) {
    test(title, async () => {
      const mesh = suite.mesh;
      const client = pod(NS, 'client-1');
      const server = pod(NS, serverName);
      assert.equal(client.node, 'node1');
      assert.equal(server.node, serverName === 'server-1' ? 'node1' : 'node2');
      const principal = spiffe(NS, CLIENT_SA);
      const opened = await inboundMtls(server.node, NS, principal);
      const answers = summarize(await sendRequests(mesh, client, `http://${server.ip}:8080/`, REQUESTS));
      assert.deepEqual(answers, { ok: REQUESTS, failed: 0, pods: [server.name] });
      // Each request is its own connection: the destination ztunnel accepted exactly that many
      // HBONE tunnels from the client's identity, no more (nothing bypassed it, nothing retried).
      const delta = await eventually('the destination counters', async () => {
        const d = (await inboundMtls(server.node, NS, principal)) - opened;
        return d >= REQUESTS ? d : false;
      });
      assert.equal(delta, REQUESTS);
    });
  }
});

/**
 * Service load balancing and L4 security policy, end to end on the local mesh, in both
 * redirection modes: a Service VIP spreads connections over its endpoints on both nodes; L4
 * AuthorizationPolicy ALLOW and DENY by principal, by namespace and by port allow and deny what
 * they say (and stop when deleted); PeerAuthentication STRICT refuses plain text from outside the
 * mesh while mesh traffic passes. Each policy is applied with `mesh.apply`, awaited in every
 * ztunnel concerned, observed from real clients, then deleted. Needs root.
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { eventually } from '@ambient/common/testing/eventually';
import type { PodStatus } from '../../ambientctl/src/local-mesh/index.ts';
import {
  authorizationPolicyYaml,
  namespaceYaml,
  type PolicyRule,
  peerAuthenticationYaml,
} from '../netns/support/mesh-manifests.ts';
import { describeEachRedirectMode } from './support/mesh-suite.ts';
import { type Answer, sendRequests, summarize } from './support/traffic.ts';
import { deploymentYaml, podYaml, serviceYaml } from './support/workloads.ts';
import {
  CLOSED,
  counter,
  STATIC_STRICT_POLICY,
  spiffe,
  waitAttached,
  waitPolicy,
} from './support/ztunnel-view.ts';

const NS = 'pol';
const OTHER_NS = 'other';
const BACKEND = 'backend';
/** The backend's two container ports, behind Service ports 80 and 81. */
const HTTP_PORT = 8080;
const ALT_PORT = 9090;
const REPLICAS = 3;
/**
 * Requests to see every endpoint: with a uniform random pick among 3, one is missed by all 45
 * with probability 3·(2/3)^45 ≈ 4·10⁻⁸.
 */
const LB_REQUESTS = 45;
const PROBES = 3;

/** client-a: pol/sa/client-a on node1; client-b: other/sa/client-b on node2; legacy/client outside the mesh. */
type Client = 'a' | 'b' | 'legacy';
type Outcome = 'allowed' | 'denied';

describeEachRedirectMode('e2e policy', { timeoutMs: 180_000 }, (suite) => {
  let backends: PodStatus[] = [];
  let vip = '';
  const pod = (namespace: string, name: string): PodStatus => {
    const p = suite.mesh.pods().find((x) => x.namespace === namespace && x.name === name);
    assert.ok(p, `pod ${namespace}/${name}`);
    return p;
  };
  const client = (c: Client): PodStatus => {
    if (c === 'a') return pod(NS, 'client-a');
    if (c === 'b') return pod(OTHER_NS, 'client-b');
    const legacy = suite.mesh.pods().find((p) => p.namespace === 'legacy' && p.owner === 'client');
    assert.ok(legacy, 'the legacy sample client');
    return legacy;
  };
  const backendNodes = (): string[] => [...new Set(backends.map((b) => b.node))];
  const deniedCount = (): Promise<number> =>
    counter(
      suite.mesh,
      backendNodes(),
      { reporter: 'destination', destination_workload_namespace: NS, response_flags: 'DENY' },
      CLOSED,
    );

  /**
   * Requests from `c` to the backend Service port: PROBES to the VIP from a mesh client; one to
   * each backend pod (its target port) from legacy, which has no kube-proxy to resolve a VIP.
   * Every one answered, or every one refused.
   */
  const probe = async (c: Client, servicePort: 80 | 81): Promise<Outcome> => {
    const answers: Answer[] = [];
    if (c === 'legacy') {
      const port = servicePort === 80 ? HTTP_PORT : ALT_PORT;
      for (const b of backends) {
        answers.push(...(await sendRequests(suite.mesh, client(c), `http://${b.ip}:${port}/`, 1)));
      }
    } else {
      answers.push(...(await sendRequests(suite.mesh, client(c), `http://${vip}:${servicePort}/`, PROBES)));
    }
    return outcomeOf(answers, `client-${c} → :${servicePort}`);
  };
  const outcomeOf = (answers: readonly Answer[], what: string): Outcome => {
    const s = summarize(answers);
    if (s.failed === 0) {
      assert.ok(
        s.pods.every((p) => backends.some((b) => b.name === p)),
        `${what}: answered by backends only: ${s.pods.join(', ')}`,
      );
      return 'allowed';
    }
    assert.equal(s.ok, 0, `${what}: all answered or all refused, not ${s.ok}/${answers.length}`);
    return 'denied';
  };

  /**
   * Applies `policy` to the backends, checks every expectation (and that each denial was
   * ztunnel's: its DENY counter grew), deletes it, and checks that everything is allowed again.
   */
  const withPolicy = async (
    name: string,
    action: 'ALLOW' | 'DENY',
    rules: readonly PolicyRule[],
    expect: readonly { client: Client; port: 80 | 81; outcome: Outcome }[],
  ): Promise<void> => {
    const mesh = suite.mesh;
    await mesh.apply(authorizationPolicyYaml({ namespace: NS, name, action, app: BACKEND, rules }));
    try {
      await waitPolicy(mesh, backends, { namespace: NS, name }, true);
      for (const e of expect) {
        const denials = await deniedCount();
        assert.equal(
          await probe(e.client, e.port),
          e.outcome,
          `${action} ${name}: client-${e.client} → :${e.port}`,
        );
        if (e.outcome === 'denied') {
          // Counted when the refused connection closes, which may trail the client's error a little.
          const expected = e.client === 'legacy' ? backends.length : PROBES;
          await eventually(
            `ztunnel counting ${expected} denials of client-${e.client} (response_flags=DENY)`,
            async () => (await deniedCount()) - denials >= expected,
            5000,
          );
        }
      }
    } finally {
      await mesh.delete('AuthorizationPolicy', NS, name);
    }
    await waitPolicy(mesh, backends, { namespace: NS, name }, false);
    for (const e of expect) {
      assert.equal(
        await probe(e.client, e.port),
        'allowed',
        `without ${name}: client-${e.client} → :${e.port}`,
      );
    }
  };

  before(async () => {
    const mesh = suite.mesh;
    await mesh.apply(
      [
        namespaceYaml(NS, true),
        namespaceYaml(OTHER_NS, true),
        deploymentYaml(
          {
            namespace: NS,
            name: BACKEND,
            serviceAccount: BACKEND,
            replicas: REPLICAS,
            ports: [HTTP_PORT, ALT_PORT],
          },
          'echo',
        ),
        serviceYaml({
          namespace: NS,
          name: BACKEND,
          app: BACKEND,
          ports: [
            { port: 80, targetPort: HTTP_PORT },
            { port: 81, targetPort: ALT_PORT },
          ],
        }),
        podYaml({ namespace: NS, name: 'client-a', serviceAccount: 'client-a', node: 'node1' }, 'client'),
        podYaml(
          { namespace: OTHER_NS, name: 'client-b', serviceAccount: 'client-b', node: 'node2' },
          'client',
        ),
      ].join('---\n'),
    );
    backends = await mesh.waitPodsRunning(NS, { app: BACKEND }, 40_000);
    await mesh.waitPodsRunning(NS, {}, 30_000);
    await mesh.waitPodsRunning(OTHER_NS, {}, 30_000);
    const address = mesh.serviceAddress(NS, BACKEND);
    assert.ok(address, 'the backend Service has a ClusterIP');
    vip = address;
  });

  test(`Service VIP load balancing: every one of ${REPLICAS} endpoints on 2 nodes answers`, async () => {
    assert.equal(backends.length, REPLICAS);
    assert.equal(
      backendNodes().length,
      2,
      `endpoints spread over both nodes: ${backends.map((b) => b.node)}`,
    );
    const answers = await sendRequests(suite.mesh, client('a'), `http://${vip}/`, LB_REQUESTS);
    const s = summarize(answers);
    assert.equal(s.failed, 0);
    assert.deepEqual(
      s.pods,
      backends.map((b) => b.name).sort(),
      `each endpoint answered within ${LB_REQUESTS}`,
    );
    const share = backends.map((b) => answers.filter((a) => a.pod === b.name).length);
    console.log(`# ${suite.mode}: ${LB_REQUESTS} requests over ${REPLICAS} endpoints: ${share.join('/')}`);
  });

  test('AuthorizationPolicy ALLOW by principal', async () => {
    // Plain text from outside the mesh carries no principal: an ALLOW by principal refuses it too.
    await withPolicy(
      'allow-principal',
      'ALLOW',
      [{ principals: [principal(NS, 'client-a')] }],
      [
        { client: 'a', port: 80, outcome: 'allowed' },
        { client: 'b', port: 80, outcome: 'denied' },
        { client: 'legacy', port: 80, outcome: 'denied' },
      ],
    );
  });

  test('AuthorizationPolicy DENY by principal', async () => {
    await withPolicy(
      'deny-principal',
      'DENY',
      [{ principals: [principal(NS, 'client-a')] }],
      [
        { client: 'a', port: 80, outcome: 'denied' },
        { client: 'b', port: 80, outcome: 'allowed' },
      ],
    );
  });

  test('AuthorizationPolicy ALLOW by namespace', async () => {
    await withPolicy(
      'allow-namespace',
      'ALLOW',
      [{ namespaces: [OTHER_NS] }],
      [
        { client: 'a', port: 80, outcome: 'denied' },
        { client: 'b', port: 80, outcome: 'allowed' },
      ],
    );
  });

  test('AuthorizationPolicy DENY by namespace', async () => {
    await withPolicy(
      'deny-namespace',
      'DENY',
      [{ namespaces: [OTHER_NS] }],
      [
        { client: 'a', port: 80, outcome: 'allowed' },
        { client: 'b', port: 80, outcome: 'denied' },
      ],
    );
  });

  test('AuthorizationPolicy ALLOW by port', async () => {
    // Ports are the workload's (the target port), not the Service's.
    await withPolicy(
      'allow-port',
      'ALLOW',
      [{ ports: [ALT_PORT] }],
      [
        { client: 'a', port: 80, outcome: 'denied' },
        { client: 'a', port: 81, outcome: 'allowed' },
        { client: 'b', port: 81, outcome: 'allowed' },
      ],
    );
  });

  test('AuthorizationPolicy DENY by port', async () => {
    await withPolicy(
      'deny-port',
      'DENY',
      [{ ports: [ALT_PORT] }],
      [
        { client: 'a', port: 80, outcome: 'allowed' },
        { client: 'a', port: 81, outcome: 'denied' },
        { client: 'b', port: 81, outcome: 'denied' },
      ],
    );
  });

  test('PeerAuthentication STRICT refuses plain text from outside the mesh; mesh traffic passes', async () => {
    const mesh = suite.mesh;
    const plainText = (): Promise<Outcome> => probe('legacy', 80);
    assert.equal(await plainText(), 'allowed', 'PERMISSIVE before');
    await mesh.apply(peerAuthenticationYaml(NS, 'STRICT'));
    try {
      await waitAttached(mesh, backends, STATIC_STRICT_POLICY, true);
      const denials = await deniedCount();
      assert.equal(await plainText(), 'denied', 'plain text refused under STRICT');
      await eventually(
        'ztunnel counting the plain-text connections as DENY',
        async () => (await deniedCount()) - denials >= backends.length,
        5000,
      );
      assert.equal(await probe('a', 80), 'allowed', 'mTLS from the same namespace passes');
      assert.equal(await probe('b', 80), 'allowed', 'mTLS from another namespace passes');
    } finally {
      await mesh.delete('PeerAuthentication', NS, 'default');
    }
    await waitAttached(mesh, backends, STATIC_STRICT_POLICY, false);
    assert.equal(await plainText(), 'allowed', 'plain text accepted again once STRICT is gone');
  });
});

/** A principal as AuthorizationPolicy writes it: the SPIFFE ID without its scheme. */
function principal(namespace: string, serviceAccount: string): string {
  return spiffe(namespace, serviceAccount).replace(/^spiffe:\/\//, '');
}

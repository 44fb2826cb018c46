import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Namespace, Pod } from '@ambient/common/config/objects';
import { loadAgentConfig } from '../src/agent/config.ts';
import { ambientDecision, type EnablementConfig, isAmbientEnabled } from '../src/agent/enablement.ts';

const cfg: EnablementConfig = {
  excludeNamespaces: ['kube-system'],
  agentPod: { namespace: 'istio-system', name: 'istio-cni-node-abcde' },
};

function pod(
  extra: {
    ns?: string;
    name?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  } = {},
  spec: Pod['spec'] = {},
  status: Pod['status'] = { phase: 'Running' },
): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: extra.name ?? 'web-0',
      namespace: extra.ns ?? 'app',
      uid: 'u1',
      ...(extra.labels ? { labels: extra.labels } : {}),
      ...(extra.annotations ? { annotations: extra.annotations } : {}),
    },
    spec,
    status,
  };
}

function ns(name: string, labels?: Record<string, string>): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(labels ? { labels } : {}) } };
}

const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };
const NONE = { 'istio.io/dataplane-mode': 'none' };

test('pod or namespace label ambient enrolls; pod label none opts out (spec §6.2)', () => {
  assert.deepEqual(ambientDecision(pod({ labels: AMBIENT }), ns('app'), cfg), {
    ambient: true,
    reason: 'pod-label',
  });
  assert.deepEqual(ambientDecision(pod(), ns('app', AMBIENT), cfg), {
    ambient: true,
    reason: 'namespace-label',
  });
  assert.deepEqual(ambientDecision(pod({ labels: NONE }), ns('app', AMBIENT), cfg), {
    ambient: false,
    reason: 'pod-opted-out',
  });
  assert.equal(isAmbientEnabled(pod(), ns('app'), cfg), false);
  assert.equal(isAmbientEnabled(pod(), undefined, cfg), false);
  // Pod label ambient wins even without the namespace being known.
  assert.equal(isAmbientEnabled(pod({ labels: AMBIENT }), undefined, cfg), true);
  // Other values of the label are not "ambient".
  assert.equal(
    isAmbientEnabled(pod({ labels: { 'istio.io/dataplane-mode': 'Ambient' } }), ns('app'), cfg),
    false,
  );
});

test('exclusions win over labels: host network, sidecar, excluded namespace, the agent, terminal pods', () => {
  const nsAmbient = ns('app', AMBIENT);
  assert.equal(
    ambientDecision(pod({ labels: AMBIENT }, { hostNetwork: true }), nsAmbient, cfg).reason,
    'host-network',
  );
  assert.equal(
    ambientDecision(
      pod({ labels: AMBIENT, annotations: { 'sidecar.istio.io/status': '{}' } }),
      nsAmbient,
      cfg,
    ).reason,
    'sidecar',
  );
  assert.equal(
    ambientDecision(pod({ ns: 'kube-system', labels: AMBIENT }), ns('kube-system', AMBIENT), cfg).reason,
    'excluded-namespace',
  );
  assert.equal(
    ambientDecision(
      pod({ ns: 'istio-system', name: 'istio-cni-node-abcde', labels: AMBIENT }),
      undefined,
      cfg,
    ).reason,
    'agent-pod',
  );
  // Another pod in the agent's namespace is not excluded.
  assert.equal(
    isAmbientEnabled(pod({ ns: 'istio-system', name: 'other', labels: AMBIENT }), undefined, cfg),
    true,
  );
  for (const phase of ['Succeeded', 'Failed'] as const) {
    assert.equal(ambientDecision(pod({ labels: AMBIENT }, {}, { phase }), nsAmbient, cfg).reason, 'terminal');
  }
  assert.equal(isAmbientEnabled(pod({}, {}, { phase: 'Pending' }), nsAmbient, cfg), true);
});

test('agent config: chart names and defaults, every bad variable reported at once', () => {
  const c = loadAgentConfig({ NODE_NAME: 'node1', CONFIG_SOURCE: 'local', LOCAL_MANIFESTS_DIR: '/tmp/m' });
  assert.equal(c.cniBinDir, '/opt/cni/bin');
  assert.equal(c.cniConfDir, '/etc/cni/net.d');
  assert.equal(c.runDir, '/var/run/istio-cni');
  assert.equal(c.zdsSocketPath, '/var/run/ztunnel/ztunnel.sock');
  assert.deepEqual(c.excludeNamespaces, ['kube-system']);
  assert.equal(c.redirectMode, 'nftables');
  assert.equal(c.healthPort, 8000);
  assert.equal(c.metricsPort, 15014);
  assert.equal(c.hostProbeSnatIp, '169.254.7.127');
  assert.equal(c.reconcileOnStartup, true);
  assert.equal(c.ebpfPinRoot, '/sys/fs/bpf/ambient');
  assert.equal(
    loadAgentConfig({
      NODE_NAME: 'node1',
      CONFIG_SOURCE: 'local',
      LOCAL_MANIFESTS_DIR: '/tmp/m',
      EBPF_PIN_ROOT: '/sys/fs/bpf/mesh-1',
    }).ebpfPinRoot,
    '/sys/fs/bpf/mesh-1',
  );
  assert.throws(
    () =>
      loadAgentConfig({
        CONFIG_SOURCE: 'local',
        REDIRECT_MODE: 'iptables',
        HEALTH_PORT: '15014',
        CNI_AGENT_RUN_DIR: 'rel',
      }),
    (err: Error) =>
      ['NODE_NAME', 'LOCAL_MANIFESTS_DIR', 'REDIRECT_MODE', 'METRICS_PORT', 'CNI_AGENT_RUN_DIR'].every((v) =>
        err.message.includes(v),
      ),
  );
});

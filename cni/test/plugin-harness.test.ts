/**
 * End to end: pods created through the harness's real CNI chain (loopback, then bridge +
 * host-local, then the compiled istio-cni with bridge's result as prevResult), with the agent's
 * PluginServer deciding. Needs root (network namespaces).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MeshError } from '@ambient/common/errors';
import { Logging } from '@ambient/common/log';
import { CniError, Harness, listNetns } from '@ambient/test/harness';
import { buildPlugin, PLUGIN_BUILD_DIR } from '../scripts/build-plugin.ts';
import { PluginServer } from '../src/agent/plugin-server.ts';
import { type CmdAddRequest, CNI_ERROR_CODE, writeEnrollmentState } from '../src/plugin-protocol.ts';
import { tempRunDir } from './plugin-fixture.ts';

class EnrollError extends MeshError<'REDIRECTION_FAILED'> {}

test('pods go through bridge then istio-cni; the agent decides, failures roll the pod back', async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root to create network namespaces');
    return;
  }
  buildPlugin({ quiet: true });
  const run = await tempRunDir();
  const requests: CmdAddRequest[] = [];
  const refuse = new Set<string>();
  const server = new PluginServer({
    runDir: run.dir,
    log: new Logging({ levels: 'off' }).logger('cni-agent'),
    onCmdAdd: async (req) => {
      requests.push(req);
      const key = `${req.podNamespace}/${req.podName}`;
      if (refuse.has(key)) {
        throw new EnrollError('REDIRECTION_FAILED', `in-pod redirection for ${key} could not be installed`, {
          retryable: true,
        });
      }
    },
  });
  await server.start();
  const mesh = await Harness.create({
    nodes: 1,
    chain: [
      {
        type: 'istio-cni',
        binDir: PLUGIN_BUILD_DIR,
        config: {
          cni_agent_run_dir: run.dir,
          ambient_enabled: true,
          exclude_namespaces: ['kube-system'],
          pod_namespace: 'istio-system',
          plugin_log_level: 'info',
        },
      },
    ],
  });
  try {
    const node = mesh.node('node1');
    const uid = '0b9f3c2e-7a41-4c55-9d1e-5f6a7b8c9d0e';
    const pod = await node.addPod({ name: 'web-0', namespace: 'ambient-app', uid });

    assert.equal(requests.length, 1);
    const req = requests[0] as CmdAddRequest;
    assert.equal(req.podName, 'web-0');
    assert.equal(req.podNamespace, 'ambient-app');
    assert.equal(req.podUid, uid);
    assert.equal(req.netns, pod.sandbox.attachment.netnsPath);
    assert.equal(req.containerId, pod.sandbox.containerId);
    assert.equal(req.infraContainerId, pod.sandbox.containerId);
    assert.equal(req.ifName, 'eth0');
    assert.equal(req.cniVersion, mesh.cniVersion);
    assert.deepEqual(
      req.ips.filter((i) => i.inSandbox).map((i) => i.ip),
      [pod.ip],
    );
    assert.equal(req.ips[0]?.gateway, pod.gateway);
    // istio-cni printed bridge's result unchanged: what the runtime ended with is what it received.
    assert.deepEqual(pod.cni.raw, req.prevResult);
    await pod.check();

    // An excluded namespace never reaches the agent.
    await node.addPod({ name: 'coredns-0', namespace: 'kube-system' });
    assert.equal(requests.length, 1);

    // The agent refuses: ADD fails with its message, and the sandbox is rolled back.
    refuse.add('ambient-app/web-1');
    const err = await node.addPod({ name: 'web-1', namespace: 'ambient-app' }).then(
      () => assert.fail('ADD should have failed'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof CniError, String(err));
    assert.equal(err.code, 'CNI_PLUGIN_FAILED');
    assert.equal(err.plugin, 'istio-cni');
    assert.equal(err.cniCode, CNI_ERROR_CODE.tryAgainLater);
    assert.equal(err.msg, 'in-pod redirection for ambient-app/web-1 could not be installed');
    assert.equal(mesh.pod('ambient-app', 'web-1'), undefined);
    assert.ok(!listNetns().some((n) => n.startsWith(mesh.key) && n.endsWith('ambient-app_web-1')));
    assert.deepEqual(
      (await node.allocatedPodIps()).sort(),
      [pod.ip, mesh.pod('kube-system', 'coredns-0')?.ip].sort(),
    );

    // The runtime retries the sandbox; once the agent succeeds the pod starts.
    refuse.clear();
    const retried = await node.addPod({ name: 'web-1', namespace: 'ambient-app' });
    assert.ok(retried.ip);

    // Agent down: the state file decides. Ambient namespace fails, anything else starts.
    await server.stop();
    await writeEnrollmentState(run.dir, { namespaces: ['ambient-app'], pods: [], exemptPods: [] });
    const down = await node.addPod({ name: 'web-2', namespace: 'ambient-app' }).then(
      () => assert.fail('ADD of an ambient pod should fail while the agent is down'),
      (e: unknown) => e,
    );
    assert.ok(down instanceof CniError);
    assert.equal(down.cniCode, CNI_ERROR_CODE.tryAgainLater);
    assert.match(down.msg, /agent unreachable/);
    const plain = await node.addPod({ name: 'batch-0', namespace: 'plain' });
    assert.ok(plain.ip);
    // DEL needs no agent.
    await plain.remove();
    await retried.remove();
  } finally {
    await mesh.destroy();
    await server.stop();
    await run.remove();
  }
});

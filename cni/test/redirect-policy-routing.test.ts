/**
 * The in-pod policy routing check on a pod netns that has none: a fresh sandbox of a pod whose
 * eBPF pins survived a failed ADD is checked before it is set up (attachPodRedirection), so the
 * check must report what is missing, not fail because the kernel has no routing table 100 yet
 * (`ip route show table 100` exits 2 with "FIB table does not exist"; the e2e restarts suite saw
 * every retried ADD of such a pod fail this way). Needs root.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Harness, type Pod } from '@ambient/test/harness';
import { resolveRedirectConfig } from '../src/redirect/index.ts';
import {
  applyPolicyRouting,
  checkPolicyRouting,
  removePolicyRouting,
} from '../src/redirect/policy-routing.ts';

const isRoot = process.getuid?.() === 0;
const MISSING = [
  'ip -4 rule fwmark 0x111 lookup 100 missing',
  'ip -4 route local default dev lo table 100 missing',
];

describe('policy routing check', {
  skip: isRoot ? false : 'needs root for network namespaces',
  timeout: 60_000,
}, () => {
  let harness: Harness;
  let pod: Pod;
  const cfg = resolveRedirectConfig({ ipv6: false });

  before(async () => {
    harness = await Harness.create({ nodes: 1 });
    pod = await harness.node('node1').addPod({ name: 'routing', namespace: 'redirect-test' });
  });

  after(async () => {
    await harness?.destroy();
  });

  test('a netns without table 100 reports the rule and route missing', async () => {
    assert.deepEqual(await checkPolicyRouting(pod.netnsPath, cfg), MISSING);
    await applyPolicyRouting(pod.netnsPath, cfg);
    assert.deepEqual(await checkPolicyRouting(pod.netnsPath, cfg), []);
    await removePolicyRouting(pod.netnsPath, cfg);
    assert.deepEqual(await checkPolicyRouting(pod.netnsPath, cfg), MISSING);
  });
});

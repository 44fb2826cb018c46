/**
 * Dedicated mode (`PROXY_MODE=dedicated`): the binary runs inside one pod's network namespace
 * (started with `ip netns exec`, as a sidecar-like deployment would be) and serves only
 * `PROXY_WORKLOAD_INFO`, binding its listeners in its own namespace, with no ZDS. Needs root.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { eventually, isRoot, PodNetns, sweepLeftoverNetns, tempDir } from './app-fixtures.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

describe('ztunnel in dedicated mode', { skip: !isRoot && 'needs root' }, () => {
  const tmp = tempDir('dedicated');
  let pod: PodNetns;

  before(() => {
    sweepLeftoverNetns();
    pod = new PodNetns('10.81.0.10');
  });
  after(() => {
    pod?.delete();
    tmp.remove();
  });

  it('serves its one workload from its own network namespace and stops on SIGTERM', async () => {
    writeFileSync(
      tmp.path('local.yaml'),
      `workloads:
  - uid: Kubernetes//Pod/demo/solo-1
    name: solo-1
    namespace: demo
    serviceAccount: solo
    addresses: ["${pod.ip}"]
    tunnelProtocol: HBONE
`,
    );
    const child = spawn(
      'ip',
      ['netns', 'exec', pod.name, process.execPath, '--conditions=@ambient/source', MAIN, 'proxy'],
      {
        env: {
          PATH: process.env.PATH ?? '',
          PROXY_MODE: 'dedicated',
          PROXY_WORKLOAD_INFO: 'demo/solo-1/solo',
          LOCAL_XDS_PATH: tmp.path('local.yaml'),
          CA_ADDRESS: '',
          ADMIN_PORT: '0',
          STATS_PORT: '0',
          READINESS_PORT: '0',
          IPV6_ENABLED: 'false',
          LOG_FORMAT: 'json',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const output: string[] = [];
    child.stdout.on('data', (c: Buffer) => output.push(c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => output.push(c.toString('utf8')));
    const exited = once(child, 'exit');
    try {
      await eventually(
        'proxy started for the dedicated workload',
        () => output.join('').includes('"msg":"proxy started for pod"'),
        10_000,
      );
      for (const port of [15001, 15006, 15008]) {
        assert.equal(await pod.listening(port), true, `port ${port} listens in its own netns`);
      }
      child.kill('SIGTERM');
      const [code] = await exited;
      assert.equal(code, 0, output.join(''));
      assert.equal(await pod.listening(15008), false);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

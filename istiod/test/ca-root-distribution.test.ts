import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Namespace } from '@ambient/common/config/objects';
import { ConfigStore } from '@ambient/common/config/store';
import { RootDistributionError } from '../src/ca/errors.ts';
import {
  ConfigMapRootDistributor,
  FileRootDistributor,
  ROOT_CONFIGMAP_KEY,
  ROOT_CONFIGMAP_NAME,
} from '../src/ca/root-distribution.ts';
import { captureLog, FakeKubeApi } from './ca-fixtures.ts';

const ROOT_1 = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
const ROOT_2 = '-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n';

function namespace(name: string, terminating = false): Namespace {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, ...(terminating ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}) },
  };
}

/** The root the ConfigMap of `ns` holds, if any. */
function rootIn(ns: string): string | undefined {
  return kube.data('configmaps', ns, ROOT_CONFIGMAP_NAME)?.[ROOT_CONFIGMAP_KEY];
}

async function eventually(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(20);
  }
}

let dir: string;
let kube: FakeKubeApi;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ca-rootdist-'));
  kube = new FakeKubeApi();
  await kube.start();
});
after(async () => {
  await kube.close();
  await rm(dir, { recursive: true, force: true });
});

describe('istio-ca-root-cert ConfigMaps', () => {
  test('written into every namespace, on namespace add, on root change, and repaired on resync', async () => {
    const store = new ConfigStore();
    store.apply({
      upsert: [namespace('default'), namespace('apps'), namespace('kube-system'), namespace('leaving', true)],
    });
    // A pre-existing ConfigMap with an old root and extra content: updated, extras kept.
    kube.put('configmaps', 'apps', {
      metadata: { name: ROOT_CONFIGMAP_NAME, labels: { team: 'apps' } },
      data: { [ROOT_CONFIGMAP_KEY]: 'stale', other: 'kept' },
    });
    const dist = new ConfigMapRootDistributor({
      api: kube.core(),
      store,
      rootPem: ROOT_1,
      resyncIntervalMs: 150,
      log: captureLog().log,
    });
    dist.start();
    try {
      await dist.whenIdle();
      const dflt = kube.get('configmaps', 'default', ROOT_CONFIGMAP_NAME);
      assert.deepEqual(dflt?.data, { [ROOT_CONFIGMAP_KEY]: ROOT_1 });
      assert.deepEqual(dflt?.metadata.labels, { 'istio.io/config': 'true' });
      const apps = kube.get('configmaps', 'apps', ROOT_CONFIGMAP_NAME);
      assert.deepEqual(apps?.data, { [ROOT_CONFIGMAP_KEY]: ROOT_1, other: 'kept' });
      assert.deepEqual(apps?.metadata.labels, {
        team: 'apps',
        'istio.io/config': 'true',
      });
      assert.equal(
        kube.get('configmaps', 'kube-system', ROOT_CONFIGMAP_NAME),
        undefined,
        'kube-system is skipped',
      );
      assert.equal(
        kube.get('configmaps', 'leaving', ROOT_CONFIGMAP_NAME),
        undefined,
        'terminating namespaces are skipped',
      );

      // An unchanged ConfigMap is not written again.
      const writes = () => kube.requests.filter((r) => r.method !== 'GET').length;
      const before = writes();
      await sleep(200);
      assert.equal(writes(), before, 'resync of unchanged ConfigMaps only reads');

      store.apply({ upsert: [namespace('new-team')] });
      await dist.whenIdle();
      assert.equal(rootIn('new-team'), ROOT_1);

      // Someone deletes one, someone edits another: the resync puts them back.
      kube.delete('configmaps', 'default', ROOT_CONFIGMAP_NAME);
      kube.put('configmaps', 'new-team', {
        metadata: { name: ROOT_CONFIGMAP_NAME },
        data: { [ROOT_CONFIGMAP_KEY]: 'tampered' },
      });
      await eventually(
        'the resync repairs both ConfigMaps',
        () => rootIn('default') === ROOT_1 && rootIn('new-team') === ROOT_1,
      );

      await dist.setRoot(ROOT_2);
      await dist.whenIdle();
      for (const ns of ['default', 'apps', 'new-team']) {
        assert.equal(rootIn(ns), ROOT_2, ns);
      }
    } finally {
      await dist.stop();
    }
    // Stopped: nothing is written any more.
    const count = kube.requests.length;
    store.apply({ upsert: [namespace('after-stop')] });
    await sleep(250);
    assert.equal(kube.requests.length, count);
  });

  test('a failed write is retried with backoff until it succeeds', async () => {
    const store = new ConfigStore();
    store.apply({ upsert: [namespace('flaky')] });
    kube.fail('POST', /^\/api\/v1\/namespaces\/flaky\/configmaps$/, 500, 3);
    const { log, lines } = captureLog();
    const dist = new ConfigMapRootDistributor({
      api: kube.core(),
      store,
      rootPem: ROOT_1,
      retryBaseMs: 20,
      log,
    });
    dist.start();
    try {
      await dist.whenIdle();
      assert.deepEqual(dist.failing(), ['flaky']);
      await eventually(
        'the retries succeed',
        () => kube.get('configmaps', 'flaky', ROOT_CONFIGMAP_NAME) !== undefined,
      );
      await dist.whenIdle();
      assert.deepEqual(dist.failing(), []);
      const failures = lines.filter((l) => l.msg === 'root configmap write failed');
      assert.equal(failures.length, 3);
      assert.deepEqual(
        failures.map((l) => l.retryInMs),
        [20, 40, 80],
      );
    } finally {
      await dist.stop();
    }
  });
});

describe('root file (local mode)', () => {
  test('is written atomically, into a created directory, and replaced on root change', async () => {
    const path = join(dir, 'var', 'run', 'istio', 'root-cert.pem');
    const dist = new FileRootDistributor({ path, rootPem: ROOT_1, log: captureLog().log });
    await dist.start();
    assert.equal(await readFile(path, 'utf8'), ROOT_1);
    await dist.setRoot(ROOT_2);
    assert.equal(await readFile(path, 'utf8'), ROOT_2);
    assert.deepEqual(
      await readdir(join(dir, 'var', 'run', 'istio')),
      ['root-cert.pem'],
      'no temporary file is left',
    );
    dist.stop();
  });

  test('an unwritable path is a ROOT_FILE_WRITE_FAILED error', async () => {
    const dist = new FileRootDistributor({
      path: '/proc/version/root-cert.pem',
      rootPem: ROOT_1,
      log: captureLog().log,
    });
    await assert.rejects(
      dist.start(),
      (err: unknown) => err instanceof RootDistributionError && err.code === 'ROOT_FILE_WRITE_FAILED',
    );
  });
});

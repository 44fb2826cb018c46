/**
 * KubeSource against a list/watch server on 127.0.0.1 (test/support/fake-apiserver.ts).
 *
 * Covered here, with the fake server: LIST pagination (`limit`/`continue`) and list
 * resourceVersions; list items of built-in kinds without kind/apiVersion; WATCH from a
 * resourceVersion with history replay; ADDED/MODIFIED/DELETED; BOOKMARK advancing the
 * resourceVersion; 410 Gone for a compacted resourceVersion, both as an ERROR event and as an HTTP
 * status; watches the server ends cleanly or by resetting the connection; half-open (silent)
 * watches; `timeoutSeconds`; 5xx errors and backoff; a kind that is not served (404, CRD not
 * installed) and later appears; bearer-token auth from a kubeconfig file; kinds applied in order.
 *
 * Needs the real kube-apiserver (a later issue runs one): TLS with the cluster CA and in-cluster
 * service-account tokens (rotation included); the watch cache's own bookmark timing and
 * `resourceVersionMatch` semantics; expired continue tokens mid-list under real compaction;
 * HTTP/2 stream limits and GOAWAY on apiserver restart; priority-and-fairness 429s with
 * Retry-After; CRDs installed or removed while watched (the 404/410 mix the real server produces);
 * the exact bytes of list items and watch events for every kind (the fake serializes what tests
 * put in).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Kind } from '@ambient/common/config/kinds';
import { type ConfigChange, ConfigStore } from '@ambient/common/config/store';
import { KubeError } from '@ambient/common/kube/errors';
import { KubeSource, type KubeSourceOptions } from '@ambient/common/kube/kube-source';
import { Registry } from 'prom-client';
import { eventually } from './support/eventually.ts';
import { FakeApiServer, type FakeApiServerOptions } from './support/fake-apiserver.ts';
import { LogCapture } from './support/log-capture.ts';
import { metricValue } from './support/metrics.ts';

const tmp = mkdtempSync(join(tmpdir(), 'kube-source-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ns = (name: string, labels: Record<string, string> = {}) => ({
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: { name, labels },
});
const pod = (name: string, ip: string, namespace = 'demo') => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace, labels: { app: name } },
  spec: { nodeName: 'node-1', serviceAccountName: 'default' },
  status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
});
const svc = (name: string, port = 80, namespace = 'demo') => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace },
  spec: {
    clusterIP: '10.96.0.10',
    selector: { app: name },
    ports: [{ name: 'http', port, targetPort: 8080 }],
  },
});
const policy = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: 'security.istio.io/v1',
  kind: 'AuthorizationPolicy',
  metadata: { name, namespace: 'demo' },
  spec,
});
const gateway = (name: string) => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name, namespace: 'demo' },
  spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
});

interface Harness {
  readonly server: FakeApiServer;
  readonly store: ConfigStore;
  readonly registry: Registry;
  readonly logs: LogCapture;
  readonly source: KubeSource;
  readonly changes: ConfigChange[][];
}

const running: Harness[] = [];
afterEach(async () => {
  for (const h of running.splice(0)) {
    await h.source.stop();
    await h.server.close();
  }
});

async function harness(
  options: Partial<KubeSourceOptions> & {
    server?: FakeApiServerOptions;
    seed?: (s: FakeApiServer) => void;
  } = {},
): Promise<Harness> {
  const server = await FakeApiServer.start(options.server);
  options.seed?.(server);
  const store = new ConfigStore();
  const changes: ConfigChange[][] = [];
  store.on('changes', (c) => changes.push([...c]));
  const registry = new Registry();
  const logs = new LogCapture();
  const source = new KubeSource({
    kubeConfig: server.kubeConfig(),
    kinds: ['Namespace', 'Pod', 'Service'],
    watchTimeoutSeconds: 30,
    ...options,
    store,
    registry,
    log: logs.logger('kube'),
  });
  const h = { server, store, registry, logs, source, changes };
  running.push(h);
  return h;
}

async function started(h: Harness): Promise<Harness> {
  h.source.start();
  await h.source.synced();
  await eventually('every watch open', () => h.source.healthy);
  return h;
}

const names = (store: ConfigStore, kind: Kind) =>
  store
    .list(kind)
    .map((o) => o.metadata.name)
    .sort();

const status = (h: Harness, kind: Kind) => {
  const s = h.source.status().find((x) => x.kind === kind);
  assert.ok(s, `no status for ${kind}`);
  return s;
};

describe('KubeSource', () => {
  it('lists every kind page by page from a kubeconfig file with a bearer token, applying kinds in order', async () => {
    const kubeconfigPath = join(tmp, 'kubeconfig');
    const h = await harness({
      kubeConfig: undefined,
      kubeconfigPath,
      pageSize: 2,
      server: { token: 's3cret' },
      seed: (s) => {
        s.upsert('Namespace', ns('demo', { 'istio.io/dataplane-mode': 'ambient' }));
        for (let i = 0; i < 5; i++) s.upsert('Pod', pod(`p${i}`, `10.0.0.${i + 1}`));
        s.upsert('Service', svc('web'));
      },
    });
    h.server.writeKubeconfig(kubeconfigPath);
    await started(h);

    assert.deepEqual(names(h.store, 'Pod'), ['p0', 'p1', 'p2', 'p3', 'p4']);
    assert.deepEqual(names(h.store, 'Namespace'), ['demo']);
    assert.deepEqual(names(h.store, 'Service'), ['web']);
    // The fake omits kind/apiVersion on built-in list items, as the real server does.
    assert.equal(h.store.get('Pod', 'demo', 'p0')?.kind, 'Pod');
    assert.equal(h.store.get('Pod', 'demo', 'p0')?.apiVersion, 'v1');

    const podLists = h.server.requestsFor('Pod', 'list');
    assert.equal(podLists.length, 3, 'five pods in pages of two');
    assert.deepEqual(
      podLists.map((r) => r.query.limit),
      ['2', '2', '2'],
    );
    assert.equal(podLists[0]?.query.continue, undefined);
    assert.ok(podLists[1]?.query.continue && podLists[2]?.query.continue);
    assert.ok(
      h.server.requests.every((r) => r.status === 200),
      'the bearer token reached the server',
    );

    const watch = h.server.requestsFor('Pod', 'watch')[0];
    assert.equal(watch?.query.resourceVersion, status(h, 'Pod').resourceVersion);
    assert.equal(watch?.query.allowWatchBookmarks, 'true');
    const timeout = Number(watch?.query.timeoutSeconds);
    assert.ok(timeout >= 30 && timeout < 60, `timeoutSeconds ${timeout} within [30, 60)`);

    const order = h.changes.map((batch) => batch[0]?.kind);
    assert.deepEqual(order, ['Namespace', 'Pod', 'Service'], 'namespaces are applied before pods');
    assert.equal(await metricValue(h.registry, 'istiod_kube_synced'), 3);
    assert.equal(await metricValue(h.registry, 'istiod_kube_relists_total', { reason: 'initial' }), 3);
  });

  it('applies ADDED, MODIFIED and DELETED events', async () => {
    const h = await started(await harness({ seed: (s) => s.upsert('Pod', pod('a', '10.0.0.1')) }));
    h.server.upsert('Pod', pod('b', '10.0.0.2'));
    await eventually('b added', () => h.store.get('Pod', 'demo', 'b') !== undefined);
    h.server.upsert('Pod', pod('a', '10.0.0.9'));
    await eventually('a modified', () => h.store.get('Pod', 'demo', 'a')?.status?.podIP === '10.0.0.9');
    h.server.delete('Pod', 'demo', 'b');
    await eventually('b deleted', () => h.store.get('Pod', 'demo', 'b') === undefined);
    assert.equal(status(h, 'Pod').resourceVersion, h.server.resourceVersion);
    assert.equal(h.server.requestsFor('Pod', 'list').length, 1, 'no relist');
    assert.equal(await metricValue(h.registry, 'istiod_kube_watch_events_total', { kind: 'Pod' }), 3);
  });

  it('advances the resourceVersion on a bookmark and re-watches from it', async () => {
    const h = await started(await harness({ seed: (s) => s.upsert('Pod', pod('a', '10.0.0.1')) }));
    const listed = status(h, 'Pod').resourceVersion;
    h.server.bumpResourceVersion(40);
    assert.equal(h.server.bookmark('Pod'), 1);
    await eventually('bookmark applied', () => status(h, 'Pod').resourceVersion === h.server.resourceVersion);
    assert.notEqual(listed, h.server.resourceVersion);

    h.server.dropWatches('Pod');
    await eventually('re-watch', () => h.server.requestsFor('Pod', 'watch').length === 2);
    assert.equal(h.server.requestsFor('Pod', 'watch')[1]?.query.resourceVersion, h.server.resourceVersion);
    assert.equal(h.server.requestsFor('Pod', 'list').length, 1, 'a closed watch does not relist');
  });

  for (const goneAs of ['event', 'status'] as const) {
    it(`relists on 410 Gone (${goneAs === 'event' ? 'ERROR event' : 'HTTP status'}) and deletes what was missed`, async () => {
      const h = await started(
        await harness({
          server: { goneAs },
          seed: (s) => {
            s.upsert('Pod', pod('stays', '10.0.0.1'));
            s.upsert('Pod', pod('deleted-while-away', '10.0.0.2'));
          },
        }),
      );
      // Disconnected: the open watch hears nothing while the cluster moves on and compacts.
      h.server.freezeWatches('Pod');
      h.server.delete('Pod', 'demo', 'deleted-while-away');
      h.server.upsert('Pod', pod('added-while-away', '10.0.0.3'));
      h.server.compact();
      h.server.dropWatches('Pod');

      await eventually('relisted', () => h.store.get('Pod', 'demo', 'added-while-away') !== undefined);
      assert.deepEqual(names(h.store, 'Pod'), ['added-while-away', 'stays']);
      assert.equal(
        await metricValue(h.registry, 'istiod_kube_relists_total', { kind: 'Pod', reason: 'gone' }),
        1,
      );
      assert.equal(
        await metricValue(h.registry, 'istiod_kube_watch_restarts_total', { kind: 'Pod', reason: 'gone' }),
        1,
      );
      await eventually('watching again', () => h.source.healthy);
      assert.equal(h.server.requestsFor('Pod', 'list').length, 2);
      assert.equal(h.logs.find('resourceVersion expired (410 Gone); relisting', { kind: 'Pod' }).length, 1);
    });
  }

  it('re-watches a watch the server closed without losing the events in between', async () => {
    const h = await started(await harness({ seed: (s) => s.upsert('Service', svc('old')) }));
    h.server.dropWatches('Service');
    // Written before the source can reconnect: they must come from the replayed history.
    h.server.delete('Service', 'demo', 'old');
    h.server.upsert('Service', svc('new'));
    await eventually('events replayed', () => names(h.store, 'Service').join() === 'new');
    assert.equal(h.server.requestsFor('Service', 'list').length, 1, 'replayed, not relisted');
    assert.equal(
      await metricValue(h.registry, 'istiod_kube_watch_restarts_total', {
        kind: 'Service',
        reason: 'closed',
      }),
      1,
    );
  });

  it('recovers from a reset watch connection by relisting', async () => {
    const h = await started(await harness({ seed: (s) => s.upsert('Service', svc('old')) }));
    h.server.dropWatches('Service', 'reset');
    h.server.upsert('Service', svc('new'));
    await eventually('caught up', () => names(h.store, 'Service').join() === 'new,old');
    assert.equal(
      await metricValue(h.registry, 'istiod_kube_watch_restarts_total', { kind: 'Service', reason: 'error' }),
      1,
    );
    await eventually('watching again', () => h.source.healthy);
  });

  it('tears down a silent watch and catches up', async () => {
    const h = await started(await harness({ silenceMs: 300 }));
    h.server.freezeWatches('Namespace');
    const t0 = Date.now();
    h.server.upsert('Namespace', ns('late'));
    await eventually(
      'namespace seen after the silent watch was replaced',
      () => h.store.get('Namespace', '', 'late') !== undefined,
    );
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 2000, `caught up after ${took}ms, about one silence period`);
    assert.ok(
      (await metricValue(h.registry, 'istiod_kube_watch_restarts_total', {
        kind: 'Namespace',
        reason: 'silence',
      })) >= 1,
    );
    assert.equal(
      h.server.requestsFor('Namespace', 'list').length,
      1,
      'a silent watch re-watches, it does not relist',
    );
    assert.ok(h.logs.find('watch went silent; re-watching', { kind: 'Namespace' }).length >= 1);
  });

  it('keeps a quiet kind alive with bookmarks instead of silence restarts', async () => {
    const h = await started(await harness({ silenceMs: 400, kinds: ['Namespace'] }));
    for (let i = 0; i < 4; i++) {
      await sleep(150);
      h.server.bookmark('Namespace');
    }
    assert.equal(await metricValue(h.registry, 'istiod_kube_watch_restarts_total', { kind: 'Namespace' }), 0);
    assert.equal(h.server.requestsFor('Namespace', 'watch').length, 1);
  });

  it('backs off exponentially on 500s instead of hammering the server', async () => {
    const h = await harness({ kinds: ['Service'], seed: (s) => s.upsert('Service', svc('web')) });
    h.server.failRequests({ kind: 'Service', verb: 'list' }, 500);
    h.source.start();
    await sleep(1600);
    const lists = h.server.requestsFor('Service', 'list');
    assert.ok(lists.length >= 3 && lists.length <= 6, `${lists.length} lists in 1.6 s (100 ms doubling)`);
    const gaps = lists.slice(1).map((r, i) => r.at - (lists[i] as { at: number }).at);
    for (let i = 1; i < gaps.length; i++) {
      assert.ok((gaps[i] as number) > (gaps[i - 1] as number), `gaps grow: ${gaps.join(', ')} ms`);
    }
    assert.ok((gaps[0] as number) >= 70, `first retry after ${gaps[0]}ms`);
    assert.equal(status(h, 'Service').synced, false);
    assert.match(status(h, 'Service').lastError ?? '', /list Service: 500 InternalError: injected failure/);

    h.server.clearFailures();
    await h.source.synced();
    assert.deepEqual(names(h.store, 'Service'), ['web']);
    assert.ok(
      (await metricValue(h.registry, 'istiod_kube_relists_total', { kind: 'Service', reason: 'error' })) >= 3,
    );
  });

  it('backs off when watches fail right after each list', async () => {
    const h = await harness({ kinds: ['Service'] });
    h.server.failRequests({ kind: 'Service', verb: 'watch' }, 503);
    h.source.start();
    await h.source.synced();
    await sleep(1000);
    const watches = h.server.requestsFor('Service', 'watch').length;
    assert.ok(watches >= 3 && watches <= 6, `${watches} watches in 1 s`);
    h.server.clearFailures();
    await eventually('watching', () => h.source.healthy, 4000);
  });

  it('rejects a malformed object alone and keeps the last good version of one that turns bad', async () => {
    const h = await started(
      await harness({
        kinds: ['Service', 'AuthorizationPolicy'],
        seed: (s) => {
          s.upsert('Service', svc('good-a'));
          s.upsert('Service', svc('bad-port', 70000));
          s.upsert('Service', svc('good-b'));
          s.upsert(
            'AuthorizationPolicy',
            policy('typo', { rules: [{ fromm: [{ source: { namespaces: ['x'] } }] }] }),
          );
          s.upsert(
            'AuthorizationPolicy',
            policy('ok', { action: 'DENY', rules: [{ from: [{ source: { namespaces: ['x'] } }] }] }),
          );
        },
      }),
    );
    assert.deepEqual(names(h.store, 'Service'), ['good-a', 'good-b']);
    assert.deepEqual(names(h.store, 'AuthorizationPolicy'), ['ok']);
    const reasons = Object.fromEntries(
      h.store.rejections().map((r) => [`${r.ref.kind}/${r.ref.name}`, r.reason]),
    );
    assert.deepEqual(reasons, {
      'Service/bad-port': 'spec.ports[0].port: 70000 is out of range 1..65535',
      'AuthorizationPolicy/typo': 'spec.rules[0].fromm: unknown field',
    });
    assert.equal(
      await metricValue(h.registry, 'istiod_config_rejected_total', {
        kind: 'Service',
        reason_code: 'invalid_value',
      }),
      1,
    );
    assert.equal(
      await metricValue(h.registry, 'istiod_config_rejected_total', {
        kind: 'AuthorizationPolicy',
        reason_code: 'unknown_field',
      }),
      1,
    );
    assert.equal(h.logs.find('rejected malformed object', { object: 'Service/demo/bad-port' }).length, 1);

    // A good object turns bad through a watch event: the last good version keeps serving.
    h.server.upsert('Service', svc('good-a', 0));
    await eventually('rejection recorded', () => h.store.rejections().some((r) => r.ref.name === 'good-a'));
    assert.equal(h.store.get('Service', 'demo', 'good-a')?.spec?.ports?.[0]?.port, 80);

    // A relist keeps it too, and does not report the same bad version again.
    h.server.freezeWatches('Service');
    h.server.bumpResourceVersion();
    h.server.compact();
    h.server.dropWatches('Service');
    await eventually('relisted', () => h.server.requestsFor('Service', 'list').length === 2);
    await eventually('watching again', () => h.source.healthy);
    assert.equal(h.store.get('Service', 'demo', 'good-a')?.spec?.ports?.[0]?.port, 80);
    assert.equal(h.logs.find('rejected malformed object', { object: 'Service/demo/good-a' }).length, 1);

    // Fixed: applied, and the rejection is gone. Deleted while bad: the rejection goes too.
    h.server.upsert('Service', svc('good-a', 81));
    h.server.delete('Service', 'demo', 'bad-port');
    await eventually('fixed', () => h.store.get('Service', 'demo', 'good-a')?.spec?.ports?.[0]?.port === 81);
    await eventually('rejections cleared', () => h.store.rejections().every((r) => r.ref.kind !== 'Service'));
  });

  it('treats a kind that is not served as synced and empty, logs it once, and picks it up when it appears', async () => {
    const h = await harness({
      kinds: ['Namespace', 'Gateway'],
      absentRetryMs: 150,
      server: { notServed: ['Gateway'] },
      seed: (s) => s.upsert('Namespace', ns('demo')),
    });
    await started(h);
    assert.equal(status(h, 'Gateway').absent, true);
    assert.equal(await metricValue(h.registry, 'istiod_kube_kind_absent', { kind: 'Gateway' }), 1);
    await eventually('retried a few times', () => h.server.requestsFor('Gateway', 'list').length >= 3);
    assert.equal(
      h.logs.find('kind not served by the API server (CRD not installed?); treating it as empty').length,
      1,
    );

    h.server.setServed('Gateway', true);
    h.server.upsert('Gateway', gateway('waypoint'));
    await eventually('gateway listed', () => h.store.get('Gateway', 'demo', 'waypoint') !== undefined);
    assert.equal(status(h, 'Gateway').absent, false);
    assert.equal(await metricValue(h.registry, 'istiod_kube_kind_absent', { kind: 'Gateway' }), 0);
    assert.equal(h.logs.find('kind is served again', { kind: 'Gateway' }).length, 1);
    h.server.upsert('Gateway', { ...gateway('second') });
    await eventually('gateway watched', () => h.store.get('Gateway', 'demo', 'second') !== undefined);
  });

  it('stops promptly, closing its watches, and rejects synced() when stopped first', async () => {
    const h = await started(await harness());
    assert.equal(h.server.watchCount(), 3);
    const t0 = Date.now();
    await h.source.stop();
    assert.ok(Date.now() - t0 < 500, 'stop does not wait for the watches to time out');
    await eventually('server sees the watches closed', () => h.server.watchCount() === 0);

    const never = await harness({ kinds: ['Service'] });
    never.server.failRequests({}, 500);
    never.source.start();
    await never.source.stop();
    await assert.rejects(
      never.source.synced(),
      (err: unknown) => err instanceof KubeError && err.code === 'STOPPED',
    );
  });

  it('refuses to start without a usable kubeconfig', async () => {
    const h = await harness({ kubeConfig: undefined, kubeconfigPath: join(tmp, 'missing-kubeconfig') });
    assert.throws(
      () => h.source.start(),
      (err: unknown) =>
        err instanceof KubeError &&
        err.code === 'KUBECONFIG_INVALID' &&
        err.message.includes('missing-kubeconfig'),
    );
  });
});

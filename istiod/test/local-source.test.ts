import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Kind } from '@ambient/common/config/kinds';
import { LocalSource, LocalSourceError, type LocalSourceOptions } from '@ambient/common/config/local-source';
import { type ConfigChange, ConfigStore } from '@ambient/common/config/store';
import { Registry } from 'prom-client';
import { eventually } from './support/eventually.ts';
import { LogCapture } from './support/log-capture.ts';
import { metricValue } from './support/metrics.ts';

interface Harness {
  readonly dir: string;
  readonly store: ConfigStore;
  readonly registry: Registry;
  readonly logs: LogCapture;
  readonly source: LocalSource;
  readonly changes: ConfigChange[];
  write(rel: string, text: string): void;
}

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

function harness(options: Partial<LocalSourceOptions> = {}): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'local-source-test-'));
  const store = new ConfigStore();
  const changes: ConfigChange[] = [];
  store.on('changes', (c) => changes.push(...c));
  const registry = new Registry();
  const logs = new LogCapture();
  const source = new LocalSource({
    dir,
    store,
    registry,
    log: logs.logger('config'),
    debounceMs: 30,
    ...options,
  });
  cleanup.push(async () => {
    await source.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const write = (rel: string, text: string) => {
    const path = join(dir, rel);
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, text);
  };
  return { dir, store, registry, logs, source, changes, write };
}

const names = (store: ConfigStore, kind: Kind) =>
  store
    .list(kind)
    .map((o) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`)
    .sort();

const NAMESPACE = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
`;

const policy = (name: string, action = 'ALLOW') => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
  namespace: demo
spec:
  action: ${action}
  rules:
  - from:
    - source:
        namespaces: [demo]
`;

const service = (name: string, port = 80) => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
spec:
  selector: {app: ${name}}
  ports:
  - name: http
    port: ${port}
`;

describe('LocalSource', () => {
  it('loads every manifest file, recursively, with multi-document YAML, JSON and Lists', async () => {
    const h = harness();
    h.write('namespace.yaml', `# the namespace\n${NAMESPACE}`);
    h.write(
      'policies/deny.yml',
      `${policy('deny-a', 'DENY')}---\n# an empty document between separators\n---\n${policy('deny-b', 'DENY')}`,
    );
    h.write(
      'services.json',
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'a', namespace: 'demo' },
            spec: { ports: [{ port: 1 }] },
          },
          {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'b', namespace: 'demo' },
            spec: { ports: [{ port: 2 }] },
          },
        ],
      }),
    );
    h.write(
      'pods.yaml',
      'apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: p1}\n  status: {podIP: 10.0.0.1}\n',
    );
    h.write('.hidden.yaml', service('hidden'));
    h.write('README.md', '# not a manifest');
    h.write('nested/deeper/svc.yaml', service('web'));

    await h.source.start();
    await h.source.synced();
    assert.deepEqual(names(h.store, 'Namespace'), ['/demo']);
    assert.deepEqual(names(h.store, 'AuthorizationPolicy'), ['demo/deny-a', 'demo/deny-b']);
    assert.deepEqual(names(h.store, 'Service'), ['default/web', 'demo/a', 'demo/b']);
    assert.deepEqual(
      names(h.store, 'Pod'),
      ['default/p1'],
      'PodList items take kind and apiVersion from the list',
    );
    assert.equal(h.store.get('Pod', 'default', 'p1')?.status?.podIP, '10.0.0.1');
    assert.deepEqual(h.store.rejections(), []);
    assert.equal(h.source.status().files, 5);
    assert.ok(h.source.healthy);
  });

  it('applies an edit', async () => {
    const h = harness();
    h.write('svc.yaml', service('web', 80));
    await h.source.start();
    h.write('svc.yaml', service('web', 8080));
    await eventually(
      'edit applied',
      () => h.store.get('Service', 'default', 'web')?.spec?.ports?.[0]?.port === 8080,
    );
    assert.equal(h.changes.filter((c) => c.old && c.new).length, 1, 'one modification');
  });

  it('deletes the objects of a deleted file', async () => {
    const h = harness();
    h.write('a.yaml', `${service('a')}---\n${service('b')}`);
    h.write('c.yaml', service('c'));
    await h.source.start();
    assert.deepEqual(names(h.store, 'Service'), ['default/a', 'default/b', 'default/c']);
    unlinkSync(join(h.dir, 'a.yaml'));
    await eventually('a and b deleted', () => names(h.store, 'Service').join() === 'default/c');
  });

  it('rejects a malformed document alone, naming file, line and field', async () => {
    const h = harness();
    h.write('ns.yaml', NAMESPACE);
    h.write(
      'policies.yaml',
      `${policy('first')}---\n${policy('typo').replace('- from:', '- fromm:')}---\n${policy('third')}`,
    );
    await h.source.start();
    assert.deepEqual(names(h.store, 'AuthorizationPolicy'), ['demo/first', 'demo/third']);
    assert.deepEqual(
      h.store.rejections().map((r) => [r.ref.name, r.reason]),
      [['typo', 'policies.yaml:13: spec.rules[0].fromm: unknown field']],
    );
    assert.equal(
      await metricValue(h.registry, 'istiod_config_rejected_total', {
        kind: 'AuthorizationPolicy',
        reason_code: 'unknown_field',
      }),
      1,
    );
    assert.equal(
      h.logs.find('rejected malformed manifest', { object: 'AuthorizationPolicy/demo/typo' }).length,
      1,
    );

    // Rescans do not report the same rejection again; fixing the document applies it and clears it.
    await h.source.rescan();
    assert.equal(h.logs.find('rejected malformed manifest').length, 1);
    h.write('policies.yaml', `${policy('first')}---\n${policy('typo')}---\n${policy('third')}`);
    await eventually('fixed', () => h.store.get('AuthorizationPolicy', 'demo', 'typo') !== undefined);
    assert.deepEqual(h.store.rejections(), []);
  });

  it('reads YAML as kubectl does: an unquoted `on` is a boolean, not a label value', async () => {
    const h = harness();
    h.write(
      'ns.yaml',
      'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels:\n    enabled: on\n',
    );
    await h.source.start();
    assert.deepEqual(
      h.store.rejections().map((r) => r.reason),
      ['ns.yaml:1: metadata.labels.enabled: must be a string, not boolean'],
    );
    assert.deepEqual(names(h.store, 'Namespace'), []);
  });

  it('rejects unparseable YAML with file and line, applies the rest, and keeps what a broken file held', async () => {
    const h = harness();
    h.write('good.yaml', service('good'));
    h.write('svc.yaml', `${service('kept')}---\n${service('second')}`);
    await h.source.start();
    assert.deepEqual(names(h.store, 'Service'), ['default/good', 'default/kept', 'default/second']);

    // A half-saved edit: the second document no longer parses; the first changed and still does.
    h.write(
      'svc.yaml',
      `${service('kept', 81)}---\napiVersion: v1\nkind: Service\nmetadata: {name: second\nspec: {}\n`,
    );
    h.write('other.yaml', service('other'));
    await eventually('other applied', () => h.store.get('Service', 'default', 'other') !== undefined);
    assert.equal(
      h.store.get('Service', 'default', 'kept')?.spec?.ports?.[0]?.port,
      81,
      'parseable documents apply',
    );
    assert.ok(
      h.store.get('Service', 'default', 'second'),
      'the unparseable document keeps its last good object',
    );
    const rejection = h.store.rejections().find((r) => r.ref.kind === 'Manifest');
    assert.match(rejection?.reason ?? '', /^svc\.yaml:1[0-9]: YAML syntax error: /);
    assert.equal(
      await metricValue(h.registry, 'istiod_config_rejected_total', {
        kind: 'Manifest',
        reason_code: 'yaml_syntax',
      }),
      1,
    );

    // Fixed without `second`: now it really is gone, and so is the rejection.
    h.write('svc.yaml', service('kept', 81));
    await eventually('second deleted', () => h.store.get('Service', 'default', 'second') === undefined);
    assert.deepEqual(h.store.rejections(), []);
  });

  it('rejects an object defined in two files, naming both, and keeps its earlier version', async () => {
    const h = harness();
    h.write('a.yaml', service('web', 80));
    await h.source.start();
    h.write('b.yaml', service('web', 90));
    await eventually('duplicate rejected', () => h.store.rejections().length === 1);
    const [r] = h.store.rejections();
    assert.equal(r?.reason, 'Service/default/web is defined more than once: in a.yaml:1 and b.yaml:1');
    assert.equal(
      h.store.get('Service', 'default', 'web')?.spec?.ports?.[0]?.port,
      80,
      'earlier version kept',
    );
    assert.equal(
      await metricValue(h.registry, 'istiod_config_rejected_total', {
        kind: 'Service',
        reason_code: 'duplicate',
      }),
      1,
    );

    unlinkSync(join(h.dir, 'a.yaml'));
    await eventually(
      'b wins alone',
      () => h.store.get('Service', 'default', 'web')?.spec?.ports?.[0]?.port === 90,
    );
    assert.deepEqual(h.store.rejections(), []);
  });

  it('follows renames: same content under a new name changes nothing; a non-manifest name deletes', async () => {
    const h = harness();
    h.write('a.yaml', service('web'));
    await h.source.start();
    const before = h.changes.length;
    renameSync(join(h.dir, 'a.yaml'), join(h.dir, 'b.yaml'));
    await eventually('rescanned', () => h.source.status().scans >= 2);
    await sleep(100);
    assert.equal(h.changes.length, before, 'no delete and re-add');
    assert.ok(h.store.get('Service', 'default', 'web'));

    // An editor's save: write a hidden temporary file, then rename it over the original.
    writeFileSync(join(h.dir, '.b.yaml.swp'), service('web', 8080));
    renameSync(join(h.dir, '.b.yaml.swp'), join(h.dir, 'b.yaml'));
    await eventually(
      'saved content',
      () => h.store.get('Service', 'default', 'web')?.spec?.ports?.[0]?.port === 8080,
    );

    renameSync(join(h.dir, 'b.yaml'), join(h.dir, 'b.yaml.bak'));
    await eventually('deleted', () => h.store.get('Service', 'default', 'web') === undefined);
  });

  it('catches changes through the periodic rescan when no watch event triggers one', async () => {
    // A debounce longer than the test: only the periodic rescan can apply the edit.
    const h = harness({ debounceMs: 60_000, rescanIntervalMs: 150 });
    h.write('svc.yaml', service('web', 80));
    await h.source.start();
    h.write('svc.yaml', service('web', 81));
    await eventually(
      'rescanned',
      () => h.store.get('Service', 'default', 'web')?.spec?.ports?.[0]?.port === 81,
      2000,
    );
  });

  it('applies only the kinds it owns', async () => {
    const h = harness({ kinds: ['Service'] });
    h.write('all.yaml', `${NAMESPACE}---\n${service('web')}`);
    await h.source.start();
    assert.deepEqual(names(h.store, 'Service'), ['default/web']);
    assert.deepEqual(names(h.store, 'Namespace'), []);
  });

  it('refuses to start on a missing directory', async () => {
    const h = harness();
    const source = new LocalSource({ dir: join(h.dir, 'missing'), store: h.store, registry: new Registry() });
    await assert.rejects(
      source.start(),
      (err: unknown) => err instanceof LocalSourceError && err.code === 'MANIFEST_DIR_UNREADABLE',
    );
  });

  it('keeps the loaded configuration when the directory disappears', async () => {
    const h = harness({ rescanIntervalMs: 100 });
    h.write('svc.yaml', service('web'));
    await h.source.start();
    rmSync(h.dir, { recursive: true, force: true });
    await eventually('unhealthy', () => !h.source.healthy, 2000);
    assert.ok(h.store.get('Service', 'default', 'web'), 'still served');
    assert.match(h.source.status().lastError ?? '', /cannot be read/);
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigStore } from '@ambient/common/config/store';
import { EnvReader } from '@ambient/common/env';
import { formatIdentity } from '@ambient/common/identity';
import { readCaConfig } from '../src/ca/config.ts';
import { ImpersonationError } from '../src/ca/errors.ts';
import {
  DEFAULT_TRUSTED_NODE_ACCOUNTS,
  NodeAuthorizer,
  parseTrustedNodeAccounts,
} from '../src/ca/node-authorizer.ts';
import type { Caller } from '../src/security/authenticate.ts';
import { pod } from './ca-fixtures.ts';

function ztunnelCaller(name: string, uid: string, sa = 'ztunnel', namespace = 'istio-system'): Caller {
  return {
    identity: `spiffe://cluster.local/ns/${namespace}/sa/${sa}`,
    namespace,
    serviceAccount: sa,
    podName: name,
    podUid: uid,
    via: 'token',
  };
}

function refusedWith(code: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ImpersonationError, `expected ImpersonationError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

function cluster(): { store: ConfigStore; authorizer: NodeAuthorizer } {
  const store = new ConfigStore();
  store.apply({
    upsert: [
      pod('istio-system', 'ztunnel-a', { sa: 'ztunnel', node: 'node-a', uid: 'zt-a' }),
      pod('istio-system', 'ztunnel-b', { sa: 'ztunnel', node: 'node-b', uid: 'zt-b' }),
      pod('default', 'web-1', { sa: 'web', node: 'node-a' }),
      pod('default', 'db-1', { sa: 'db', node: 'node-b' }),
      pod('default', 'plain', { node: 'node-a' }),
    ],
  });
  const authorizer = new NodeAuthorizer({
    store,
    trustDomain: 'cluster.local',
    trustedNodeAccounts: DEFAULT_TRUSTED_NODE_ACCOUNTS,
  });
  return { store, authorizer };
}

describe('node authorization', () => {
  test('ztunnel gets identities running on its own node, including the default service account', () => {
    const { authorizer } = cluster();
    const id = authorizer.authorize(
      ztunnelCaller('ztunnel-a', 'zt-a'),
      'spiffe://cluster.local/ns/default/sa/web',
    );
    assert.equal(formatIdentity(id), 'spiffe://cluster.local/ns/default/sa/web');
    assert.equal(
      formatIdentity(
        authorizer.authorize(
          ztunnelCaller('ztunnel-a', 'zt-a'),
          'spiffe://cluster.local/ns/default/sa/default',
        ),
      ),
      'spiffe://cluster.local/ns/default/sa/default',
    );
  });

  test('checklist 1: an SA that runs only on another node is refused', () => {
    const { authorizer } = cluster();
    assert.throws(
      () =>
        authorizer.authorize(ztunnelCaller('ztunnel-a', 'zt-a'), 'spiffe://cluster.local/ns/default/sa/db'),
      refusedWith('IDENTITY_NOT_ON_NODE'),
    );
    assert.throws(
      () =>
        authorizer.authorize(
          ztunnelCaller('ztunnel-a', 'zt-a'),
          'spiffe://cluster.local/ns/kube-system/sa/nothing',
        ),
      refusedWith('IDENTITY_NOT_ON_NODE'),
    );
  });

  test('checklist 2: a caller that is not a trusted node account may not impersonate', () => {
    const { authorizer } = cluster();
    const web: Caller = {
      identity: 'spiffe://cluster.local/ns/default/sa/web',
      namespace: 'default',
      serviceAccount: 'web',
      podName: 'web-1',
      podUid: 'uid-default-web-1',
      via: 'token',
    };
    assert.throws(
      () => authorizer.authorize(web, 'spiffe://cluster.local/ns/default/sa/default'),
      refusedWith('CALLER_NOT_TRUSTED'),
    );
    // A "ztunnel" service account in another namespace is not istio-system/ztunnel.
    assert.throws(
      () =>
        authorizer.authorize(
          ztunnelCaller('ztunnel-a', 'zt-a', 'ztunnel', 'default'),
          'spiffe://cluster.local/ns/default/sa/web',
        ),
      refusedWith('CALLER_NOT_TRUSTED'),
    );
  });

  test('checklist 3: a token for a recreated pod (stale UID) is refused', () => {
    const { store, authorizer } = cluster();
    store.apply({
      upsert: [pod('istio-system', 'ztunnel-a', { sa: 'ztunnel', node: 'node-a', uid: 'zt-a-new' })],
    });
    assert.throws(
      () =>
        authorizer.authorize(ztunnelCaller('ztunnel-a', 'zt-a'), 'spiffe://cluster.local/ns/default/sa/web'),
      refusedWith('CALLER_POD_UID_MISMATCH'),
    );
    assert.ok(
      authorizer.authorize(
        ztunnelCaller('ztunnel-a', 'zt-a-new'),
        'spiffe://cluster.local/ns/default/sa/web',
      ),
    );
  });

  test("the caller pod must exist, run as the token's account, and be on a node; the credential must name a pod", () => {
    const { store, authorizer } = cluster();
    const web = 'spiffe://cluster.local/ns/default/sa/web';
    assert.throws(
      () => authorizer.authorize(ztunnelCaller('ztunnel-gone', 'x'), web),
      refusedWith('CALLER_POD_UNKNOWN'),
    );
    const { podName: _n, podUid: _u, ...noPod } = ztunnelCaller('ztunnel-a', 'zt-a');
    assert.throws(
      () => authorizer.authorize({ ...noPod, via: 'certificate' }, web),
      refusedWith('CALLER_POD_UNKNOWN'),
    );
    store.apply({ upsert: [pod('istio-system', 'ztunnel-c', { sa: 'other', node: 'node-a', uid: 'zt-c' })] });
    assert.throws(
      () => authorizer.authorize(ztunnelCaller('ztunnel-c', 'zt-c'), web),
      refusedWith('CALLER_POD_ACCOUNT_MISMATCH'),
    );
    store.apply({ upsert: [pod('istio-system', 'ztunnel-d', { sa: 'ztunnel', uid: 'zt-d' })] });
    assert.throws(
      () => authorizer.authorize(ztunnelCaller('ztunnel-d', 'zt-d'), web),
      refusedWith('CALLER_POD_NO_NODE'),
    );
  });

  test('Failed pods do not authorize; the index follows pod phase, moves and deletes', () => {
    const { store, authorizer } = cluster();
    const caller = ztunnelCaller('ztunnel-a', 'zt-a');
    const batch = 'spiffe://cluster.local/ns/jobs/sa/batch';
    store.apply({ upsert: [pod('jobs', 'job-1', { sa: 'batch', node: 'node-a', phase: 'Failed' })] });
    assert.equal(authorizer.podCount('node-a', 'jobs', 'batch'), 0);
    assert.throws(() => authorizer.authorize(caller, batch), refusedWith('IDENTITY_NOT_ON_NODE'));

    store.apply({ upsert: [pod('jobs', 'job-2', { sa: 'batch', node: 'node-a', phase: 'Pending' })] });
    assert.equal(authorizer.podCount('node-a', 'jobs', 'batch'), 1);
    assert.ok(authorizer.authorize(caller, batch));

    // The pending pod fails: nothing of jobs/batch runs on node-a any more.
    store.apply({ upsert: [pod('jobs', 'job-2', { sa: 'batch', node: 'node-a', phase: 'Failed' })] });
    assert.equal(authorizer.podCount('node-a', 'jobs', 'batch'), 0);
    assert.throws(() => authorizer.authorize(caller, batch), refusedWith('IDENTITY_NOT_ON_NODE'));

    // A pod is indexed once scheduled, under the node it was scheduled to.
    store.apply({ upsert: [pod('jobs', 'late', { sa: 'late', phase: 'Pending' })] });
    assert.equal(authorizer.podCount('node-a', 'jobs', 'late'), 0);
    store.apply({ upsert: [pod('jobs', 'late', { sa: 'late', node: 'node-b', phase: 'Running' })] });
    assert.equal(authorizer.podCount('node-b', 'jobs', 'late'), 1);
    assert.throws(
      () => authorizer.authorize(caller, 'spiffe://cluster.local/ns/jobs/sa/late'),
      refusedWith('IDENTITY_NOT_ON_NODE'),
    );

    // web-1 deleted: web is gone from node-a.
    store.apply({ delete: [{ kind: 'Pod', namespace: 'default', name: 'web-1' }] });
    assert.throws(
      () => authorizer.authorize(caller, 'spiffe://cluster.local/ns/default/sa/web'),
      refusedWith('IDENTITY_NOT_ON_NODE'),
    );
    // Two db pods on node-a; deleting one keeps db authorized there.
    store.apply({
      upsert: [
        pod('default', 'db-2', { sa: 'db', node: 'node-a' }),
        pod('default', 'db-3', { sa: 'db', node: 'node-a' }),
      ],
    });
    store.apply({ delete: [{ kind: 'Pod', namespace: 'default', name: 'db-2' }] });
    assert.equal(authorizer.podCount('node-a', 'default', 'db'), 1);
    assert.ok(authorizer.authorize(caller, 'spiffe://cluster.local/ns/default/sa/db'));
    // A relist (replaceKind) that lacks db-3 removes it from the index too.
    store.replaceKind(
      'Pod',
      store.list('Pod').filter((p) => p.metadata.name !== 'db-3'),
    );
    assert.equal(authorizer.podCount('node-a', 'default', 'db'), 0);
  });

  test('pods present before the authorizer was created are indexed; close() stops following the store', () => {
    const { store, authorizer } = cluster();
    assert.equal(authorizer.podCount('node-a', 'default', 'web'), 1);
    authorizer.close();
    store.apply({ upsert: [pod('default', 'web-2', { sa: 'web', node: 'node-a' })] });
    assert.equal(authorizer.podCount('node-a', 'default', 'web'), 1);
  });

  test('the requested identity must be a SPIFFE ID in the mesh trust domain', () => {
    const { authorizer } = cluster();
    const caller = ztunnelCaller('ztunnel-a', 'zt-a');
    for (const bad of [
      'web',
      'spiffe://cluster.local/ns/default',
      'spiffe://cluster.local/ns//sa/web',
      'spiffe://cluster.local/ns/default/sa/web\0',
    ]) {
      assert.throws(() => authorizer.authorize(caller, bad), refusedWith('REQUESTED_IDENTITY_INVALID'));
    }
    assert.throws(
      () => authorizer.authorize(caller, 'spiffe://other.domain/ns/default/sa/web'),
      refusedWith('REQUESTED_TRUST_DOMAIN'),
    );
  });

  test('an empty trusted list refuses every impersonation', () => {
    const { store } = cluster();
    const authorizer = new NodeAuthorizer({ store, trustDomain: 'cluster.local', trustedNodeAccounts: [] });
    assert.throws(
      () =>
        authorizer.authorize(ztunnelCaller('ztunnel-a', 'zt-a'), 'spiffe://cluster.local/ns/default/sa/web'),
      refusedWith('IMPERSONATION_DISABLED'),
    );
  });
});

describe('CA configuration', () => {
  test('CA_TRUSTED_NODE_ACCOUNTS parses namespace/sa lists; "," alone means none', () => {
    assert.deepEqual(parseTrustedNodeAccounts('istio-system/ztunnel, other/zt2'), [
      { namespace: 'istio-system', serviceAccount: 'ztunnel' },
      { namespace: 'other', serviceAccount: 'zt2' },
    ]);
    assert.deepEqual(parseTrustedNodeAccounts(','), []);
    assert.throws(() => parseTrustedNodeAccounts('ztunnel'), /not <namespace>\/<serviceaccount>/);
    assert.throws(() => parseTrustedNodeAccounts('a/b/c'), /not <namespace>\/<serviceaccount>/);
  });

  test('readCaConfig applies upstream defaults and reports bad values together', () => {
    const defaults = readCaConfig(new EnvReader({}));
    assert.deepEqual(defaults.trustedNodeAccounts, DEFAULT_TRUSTED_NODE_ACCOUNTS);
    assert.equal(defaults.defaultTtlSeconds, 86_400);
    assert.equal(defaults.maxTtlSeconds, 90 * 86_400);
    assert.deepEqual(defaults.tokenAudiences, ['istio-ca']);
    assert.equal(defaults.pluggedCertsDir, '/etc/cacerts');

    const set = readCaConfig(
      new EnvReader({
        CA_TRUSTED_NODE_ACCOUNTS: ',',
        DEFAULT_WORKLOAD_CERT_TTL: '1h',
        MAX_WORKLOAD_CERT_TTL: '48h',
      }),
    );
    assert.deepEqual(set.trustedNodeAccounts, []);
    assert.equal(set.defaultTtlSeconds, 3600);
    assert.equal(set.maxTtlSeconds, 48 * 3600);

    const env = new EnvReader({
      CA_TRUSTED_NODE_ACCOUNTS: 'ztunnel',
      DEFAULT_WORKLOAD_CERT_TTL: '100h',
      MAX_WORKLOAD_CERT_TTL: '10h',
    });
    readCaConfig(env);
    assert.throws(
      () => env.finish(),
      (err: Error) => {
        assert.match(err.message, /CA_TRUSTED_NODE_ACCOUNTS/);
        assert.match(err.message, /DEFAULT_WORKLOAD_CERT_TTL/);
        return true;
      },
    );
  });
});

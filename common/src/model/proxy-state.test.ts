import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as sec from '@ambient/common/gen/istio/security/authorization_pb';
import * as wl from '@ambient/common/gen/istio/workload/workload_pb';
import {
  addressUpdate,
  authorizationUpdate,
  ipBytes,
  loadState,
  pbAuthorization,
  pbService,
  pbWorkload,
} from './fixtures/wds.ts';

describe('workload lookups', () => {
  const { state } = loadState(
    {
      addresses: [
        pbWorkload({
          name: 'a',
          namespace: 'ns',
          serviceAccount: 'sa-a',
          ips: ['10.0.0.1', 'fd00::a'],
          node: 'node-a',
        }),
        pbWorkload({
          name: 'a',
          namespace: 'ns',
          serviceAccount: 'sa-a',
          uid: 'c//Pod/ns/a-on-b',
          ips: ['10.0.0.2'],
          node: 'node-b',
        }),
        pbWorkload({ name: 'b', namespace: 'ns', network: 'net2', ips: ['10.0.0.1'] }),
        pbWorkload({ name: 'c', namespace: 'ns', serviceAccount: 'sa-c', ips: ['10.0.0.3'], node: 'node-b' }),
        pbWorkload({
          name: 'host',
          namespace: 'ns',
          ips: ['192.168.1.5'],
          networkMode: wl.NetworkMode.HOST_NETWORK,
        }),
        pbWorkload({
          name: 'dns',
          namespace: 'ns',
          uid: 'c/networking.istio.io/ServiceEntry/ns/dns/x',
          hostname: 'x.example.com',
        }),
        // Two claims on one IP: the Pod wins over the WorkloadEntry.
        pbWorkload({
          name: 'we',
          namespace: 'ns',
          uid: 'c/networking.istio.io/WorkloadEntry/ns/we',
          ips: ['10.0.0.9'],
        }),
        pbWorkload({
          name: 'pod9',
          namespace: 'ns',
          ips: ['10.0.0.9'],
          tunnelProtocol: wl.TunnelProtocol.NONE,
        }),
      ],
    },
    { localNode: 'node-a' },
  );

  test('by uid, and by network/ip in any textual form', () => {
    assert.equal(state.findWorkloadByUid('cluster1//Pod/ns/a')?.name, 'a');
    assert.equal(state.findWorkloadByAddress('', '10.0.0.1')?.uid, 'cluster1//Pod/ns/a');
    assert.equal(
      state.findWorkloadByAddress('net2', '10.0.0.1')?.name,
      'b',
      'the network is part of the key',
    );
    assert.equal(state.findWorkloadByAddress('', 'FD00:0::A')?.name, 'a');
    assert.equal(state.findWorkloadByAddress('', '::ffff:10.0.0.1')?.name, 'a');
    assert.equal(state.findWorkloadByAddress('', '10.0.0.4'), undefined);
    assert.equal(state.findWorkloadByAddress('', 'not-an-ip'), undefined);
  });

  test('host-network workloads are not found by IP', () => {
    assert.equal(state.findWorkloadByAddress('', '192.168.1.5'), undefined);
    assert.equal(state.findWorkloadByUid('cluster1//Pod/ns/host')?.name, 'host');
  });

  test('a Pod wins an address over a WorkloadEntry', () => {
    assert.equal(state.findWorkloadByAddress('', '10.0.0.9')?.name, 'pod9');
  });

  test('local-pod matching by (namespace, service account, name) on this node only', () => {
    assert.equal(
      state.findWorkloadByInfo({ name: 'a', namespace: 'ns', serviceAccount: 'sa-a' })?.uid,
      'cluster1//Pod/ns/a',
    );
    assert.equal(
      state.findWorkloadByInfo({ name: 'a', namespace: 'ns', serviceAccount: 'default' }),
      undefined,
    );
    assert.equal(
      state.findWorkloadByInfo({ name: 'c', namespace: 'ns', serviceAccount: 'sa-c' }),
      undefined,
      'c runs on node-b',
    );
    assert.equal(state.findWorkloadByUid('cluster1//Pod/ns/c')?.node, 'node-b');
    assert.equal(state.workloads.hasNodeLocalIdentity('ns', 'sa-a'), true);
  });

  test('by hostname, and findAddress/findHostname prefer workloads then services as ztunnel does', () => {
    assert.deepEqual(
      state.findWorkloadsByHostname('x.example.com').map((w) => w.name),
      ['dns'],
    );
    assert.equal(state.findHostname('ns', 'x.example.com')?.kind, 'workload');
    assert.equal(state.findHostname('other', 'x.example.com'), undefined);
    assert.equal(state.findAddress('', '10.0.0.1')?.kind, 'workload');
  });
});

describe('service lookups and endpoints', () => {
  test('by key, VIP, CIDR VIP, hostname; best-by-hostname prefers namespace, then canonical', () => {
    const { state } = loadState({
      addresses: [
        pbService({ name: 'web', namespace: 'ns', vips: ['10.96.0.1'], portPairs: [[80, 8080]] }),
        pbService({ name: 'se', namespace: 'a', hostname: 'www.example.com', vips: ['240.0.0.1'] }),
        pbService({ name: 'se', namespace: 'b', hostname: 'www.example.com', canonical: true }),
        pbService({ name: 'se', namespace: 'c', hostname: 'www.example.com' }),
        pbService({
          name: 'range',
          namespace: 'ns',
          addresses: [
            { network: '', address: ipBytes('10.200.0.0'), length: 16 },
            { network: '', address: ipBytes('10.200.5.0'), length: 24 },
          ],
        }),
        pbService({
          name: 'range5',
          namespace: 'ns',
          addresses: [{ network: '', address: ipBytes('10.200.5.128'), length: 25 }],
        }),
      ],
    });
    assert.equal(state.findServiceByKey('ns/web.ns.svc.cluster.local')?.name, 'web');
    assert.equal(state.findService('ns', 'web.ns.svc.cluster.local')?.name, 'web');
    assert.equal(state.findServiceByVip('', '10.96.0.1')?.name, 'web');
    assert.equal(state.findServiceByVip('other-net', '10.96.0.1'), undefined);
    assert.equal(state.findAddress('', '10.96.0.1')?.kind, 'service');
    assert.equal(state.findServiceByVip('', '10.200.9.9')?.name, 'range');
    assert.equal(state.findServiceByVip('', '10.200.5.1')?.name, 'range');
    assert.equal(state.findServiceByVip('', '10.200.5.200')?.name, 'range5', 'longest prefix wins');
    assert.equal(state.findServiceByVip('', '10.201.0.1'), undefined);
    assert.deepEqual(
      state.findServicesByHostname('www.example.com').map((s) => s.namespace),
      ['a', 'b', 'c'],
    );
    assert.equal(state.findBestServiceByHostname('www.example.com', 'c')?.namespace, 'c');
    assert.equal(state.findBestServiceByHostname('www.example.com', 'z')?.namespace, 'b');
    assert.equal(state.findBestServiceByHostname('www.example.com')?.namespace, 'b');
  });

  test('endpoints come from Workload.services, whichever arrives first, and survive service updates', () => {
    const { state, updater } = loadState({
      addresses: [
        pbWorkload({
          name: 'p1',
          namespace: 'ns',
          ips: ['10.0.0.1'],
          svc: { 'ns/web.ns.svc.cluster.local': [[80, 9090]] },
        }),
      ],
    });
    assert.equal(state.findServiceByKey('ns/web.ns.svc.cluster.local'), undefined);
    updater.handleAddresses(
      [
        addressUpdate(
          pbService({ name: 'web', namespace: 'ns', vips: ['10.96.0.1'], portPairs: [[80, 8080]] }),
        ),
      ],
      [],
    );
    const web = state.findServiceByKey('ns/web.ns.svc.cluster.local');
    assert.ok(web);
    assert.deepEqual(
      [...state.serviceEndpoints(web)].map(([uid, ep]) => [uid, [...ep.port], ep.status]),
      [['cluster1//Pod/ns/p1', [[80, 9090]], 'Healthy']],
    );
    updater.handleAddresses(
      [
        addressUpdate(
          pbService({ name: 'web', namespace: 'ns', vips: ['10.96.0.2'], portPairs: [[80, 8080]] }),
        ),
        addressUpdate(
          pbWorkload({
            name: 'p2',
            namespace: 'ns',
            ips: ['10.0.0.2'],
            status: wl.WorkloadStatus.UNHEALTHY,
            svc: { 'ns/web.ns.svc.cluster.local': [[80, 8080]] },
          }),
        ),
      ],
      [],
    );
    const web2 = state.findServiceByVip('', '10.96.0.2');
    assert.ok(web2);
    assert.equal(state.findServiceByVip('', '10.96.0.1'), undefined, 'the old VIP is gone');
    assert.deepEqual(
      [...state.serviceEndpoints(web2).keys()],
      ['cluster1//Pod/ns/p1', 'cluster1//Pod/ns/p2'],
    );
    assert.equal(state.serviceEndpoints(web2).get('cluster1//Pod/ns/p2')?.status, 'Unhealthy');
    assert.deepEqual(
      state
        .servicesOfWorkload(state.findWorkloadByUid('cluster1//Pod/ns/p1') ?? assert.fail())
        .map((s) => s.name),
      ['web'],
    );
    // The workload moves off the service, then goes away.
    updater.handleAddresses(
      [addressUpdate(pbWorkload({ name: 'p1', namespace: 'ns', ips: ['10.0.0.1'] }))],
      [],
    );
    assert.deepEqual([...state.serviceEndpoints(web2).keys()], ['cluster1//Pod/ns/p2']);
    updater.handleAddresses([], ['cluster1//Pod/ns/p2']);
    assert.equal(state.serviceEndpoints(web2).size, 0);
  });
});

describe('policy lookups', () => {
  test('namespace and global indexes; selector policies via the workload; scope changes reindex', () => {
    const { state, updater } = loadState({
      addresses: [
        pbWorkload({ name: 'a', namespace: 'ns', authorizationPolicies: ['ns/sel', 'istio-system/global'] }),
      ],
      policies: [
        pbAuthorization({ name: 'sel', namespace: 'ns', scope: sec.Scope.WORKLOAD_SELECTOR }),
        pbAuthorization({ name: 'nsp', namespace: 'ns', scope: sec.Scope.NAMESPACE }),
        pbAuthorization({ name: 'other', namespace: 'other', scope: sec.Scope.NAMESPACE }),
        pbAuthorization({ name: 'global', namespace: 'istio-system', scope: sec.Scope.GLOBAL }),
      ],
    });
    assert.deepEqual([...state.policies.keysByNamespace('ns')], ['ns/nsp']);
    assert.deepEqual([...state.policies.keysByNamespace('')], ['istio-system/global']);
    const a = state.findWorkloadByUid('cluster1//Pod/ns/a');
    assert.ok(a);
    assert.deepEqual(
      state.policiesForWorkload(a).policies.map((p) => p.key),
      ['ns/nsp', 'istio-system/global', 'ns/sel'],
      'each policy once, even when named twice',
    );
    updater.handleAuthorizations(
      [authorizationUpdate(pbAuthorization({ name: 'nsp', namespace: 'ns', scope: sec.Scope.GLOBAL }))],
      [],
    );
    assert.deepEqual([...state.policies.keysByNamespace('ns')], []);
    assert.deepEqual([...state.policies.keysByNamespace('')].sort(), ['istio-system/global', 'ns/nsp']);
  });
});

describe('waitForWorkload', () => {
  const info = { name: 'late', namespace: 'ns', serviceAccount: 'sa' };
  const late = pbWorkload({ name: 'late', namespace: 'ns', serviceAccount: 'sa', ips: ['10.0.0.7'] });

  test('resolves at once when present, or when the updater applies it', async () => {
    const { state, updater } = loadState({});
    const pending = state.waitForWorkload(info, { timeoutMs: 5_000 });
    updater.handleAddresses(
      [addressUpdate(pbWorkload({ name: 'other', namespace: 'ns', serviceAccount: 'sa' }))],
      [],
    );
    updater.handleAddresses([addressUpdate(late)], []);
    assert.equal((await pending)?.name, 'late');
    assert.equal((await state.waitForWorkload(info, { timeoutMs: 1 }))?.name, 'late');
  });

  test('resolves undefined at the deadline or on abort', async () => {
    const { state } = loadState({});
    assert.equal(await state.waitForWorkload(info, { timeoutMs: 20 }), undefined);
    const ac = new AbortController();
    const pending = state.waitForWorkload(info, { timeoutMs: 60_000, signal: ac.signal });
    ac.abort();
    assert.equal(await pending, undefined);
  });

  test('only workloads on the local node satisfy it', async () => {
    const { state, updater } = loadState({}, { localNode: 'node-z' });
    const pending = state.waitForWorkload(info, { timeoutMs: 50 });
    updater.handleAddresses([addressUpdate(late)], []);
    assert.equal(await pending, undefined, 'late is on node-a');
  });
});

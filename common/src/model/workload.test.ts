import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as wl from '@ambient/common/gen/istio/workload/workload_pb';
import { formatIdentity } from '../identity/identity.ts';
import { ModelError } from './errors.ts';
import { addressGateway, hostnameGateway, ipBytes, pbWorkload } from './fixtures/wds.ts';
import { workloadFromProto } from './workload.ts';

function rejects(pb: wl.Workload, code: ModelError['code'], message?: RegExp): void {
  assert.throws(
    () => workloadFromProto(pb),
    (err: unknown) => {
      assert.ok(err instanceof ModelError, `expected ModelError, got ${String(err)}`);
      assert.equal(err.code, code);
      if (message) assert.match(err.message, message);
      return true;
    },
  );
}

describe('workloadFromProto', () => {
  test('applies the WDS defaults: trust domain, service account, cluster, capacity', () => {
    const w = workloadFromProto(pbWorkload({ name: 'a', namespace: 'ns1', ips: ['10.0.0.1'] }));
    assert.equal(w.trustDomain, 'cluster.local');
    assert.equal(w.serviceAccount, 'default');
    assert.equal(w.clusterId, 'Kubernetes');
    assert.equal(w.capacity, 1);
    assert.equal(formatIdentity(w.identity), 'spiffe://cluster.local/ns/ns1/sa/default');
    assert.deepEqual(w.locality, { region: '', zone: '', subzone: '' });
    assert.equal(w.status, 'Healthy');
    assert.equal(w.workloadType, 'deployment');
    assert.equal(w.networkMode, 'Standard');
    assert.ok(Object.isFrozen(w));
  });

  test('keeps explicit values and converts every field', () => {
    const w = workloadFromProto(
      pbWorkload({
        uid: 'c2//Pod/ns/p',
        name: 'p',
        namespace: 'ns',
        ips: ['10.0.0.1', 'fd00::1'],
        network: 'net1',
        trustDomain: 'td.example',
        serviceAccount: 'sa1',
        clusterId: 'c2',
        capacity: 0,
        node: 'n1',
        canonicalName: 'app',
        canonicalRevision: 'v1',
        workloadType: wl.WorkloadType.CRONJOB,
        workloadName: 'job-x',
        status: wl.WorkloadStatus.UNHEALTHY,
        locality: { region: 'r', zone: 'z', subzone: 's' },
        networkMode: wl.NetworkMode.HOST_NETWORK,
        tunnelProtocol: wl.TunnelProtocol.NONE,
        waypoint: hostnameGateway('ns', 'wp.ns.svc.cluster.local'),
        networkGateway: addressGateway('192.0.2.1', 'net1'),
        applicationTunnel: { protocol: wl.ApplicationTunnel_Protocol.PROXY, port: 15088 },
        authorizationPolicies: ['ns/p1'],
        nativeTunnel: true,
        svc: { 'ns/s.ns.svc.cluster.local': [[80, 8080]] },
      }),
    );
    assert.deepEqual(w.workloadIps, ['10.0.0.1', 'fd00::1']);
    assert.equal(w.protocol, 'TCP');
    assert.equal(w.capacity, 0, 'an explicit 0 is kept (never chosen)');
    assert.equal(formatIdentity(w.identity), 'spiffe://td.example/ns/ns/sa/sa1');
    assert.equal(w.workloadType, 'cronjob');
    assert.equal(w.status, 'Unhealthy');
    assert.equal(w.networkMode, 'HostNetwork');
    assert.deepEqual(w.waypoint, {
      destination: { kind: 'hostname', namespace: 'ns', hostname: 'wp.ns.svc.cluster.local' },
      hboneMtlsPort: 15008,
    });
    assert.deepEqual(w.networkGateway, {
      destination: { kind: 'address', address: { network: 'net1', ip: '192.0.2.1' } },
      hboneMtlsPort: 15008,
    });
    assert.deepEqual(w.applicationTunnel, { protocol: 'PROXY', port: 15088 });
    assert.deepEqual([...w.services], [['ns/s.ns.svc.cluster.local', new Map([[80, 8080]])]]);
    assert.deepEqual(w.authorizationPolicies, ['ns/p1']);
    assert.equal(w.nativeTunnel, true);
    assert.deepEqual(w.locality, { region: 'r', zone: 'z', subzone: 's' });
  });

  test('an application tunnel port of 0 means unset', () => {
    const w = workloadFromProto(
      pbWorkload({ applicationTunnel: { protocol: wl.ApplicationTunnel_Protocol.NONE } }),
    );
    assert.deepEqual(w.applicationTunnel, { protocol: 'NONE' });
  });

  test('rejects, naming the problem', () => {
    rejects(pbWorkload({ uid: '' }), 'MISSING_UID');
    rejects(
      pbWorkload({ tunnelProtocol: wl.TunnelProtocol.LEGACY_ISTIO_MTLS }),
      'LEGACY_ISTIO_MTLS',
      /LEGACY_ISTIO_MTLS/,
    );
    rejects(
      pbWorkload({ addresses: [new Uint8Array([10, 0, 0])] }),
      'ADDRESS_LENGTH',
      /addresses\[0\] has 3 bytes/,
    );
    rejects(
      pbWorkload({ addresses: [ipBytes('10.0.0.1'), new Uint8Array(0)] }),
      'ADDRESS_LENGTH',
      /addresses\[1\]/,
    );
    rejects(pbWorkload({ namespace: '', uid: 'x' }), 'INVALID_IDENTITY');
    rejects(pbWorkload({ serviceAccount: 'a/b' }), 'INVALID_IDENTITY');
    rejects(pbWorkload({ trustDomain: 'UPPER' }), 'INVALID_IDENTITY');
    rejects(
      pbWorkload({ tunnelProtocol: 7 as wl.TunnelProtocol }),
      'UNKNOWN_ENUM',
      /tunnel_protocol value 7/,
    );
    rejects(pbWorkload({ status: 9 as wl.WorkloadStatus }), 'UNKNOWN_ENUM');
    rejects(pbWorkload({ workloadType: 9 as wl.WorkloadType }), 'UNKNOWN_ENUM');
    rejects(pbWorkload({ networkMode: 9 as wl.NetworkMode }), 'UNKNOWN_ENUM');
    rejects(pbWorkload({ waypoint: { hboneMtlsPort: 15008 } }), 'GATEWAY_DESTINATION_MISSING');
    rejects(pbWorkload({ waypoint: { ...addressGateway('10.0.0.1'), hboneMtlsPort: 70_000 } }), 'PORT_RANGE');
    rejects(
      pbWorkload({
        networkGateway: { destination: { case: 'address', value: { address: new Uint8Array(2) } } },
      }),
      'ADDRESS_LENGTH',
    );
    rejects(pbWorkload({ svc: { 'no-slash': [[80, 80]] } }), 'NAMESPACED_HOSTNAME');
    rejects(pbWorkload({ svc: { 'ns/': [[80, 80]] } }), 'NAMESPACED_HOSTNAME');
    rejects(pbWorkload({ svc: { 'ns/h': [[80, 65_536]] } }), 'PORT_RANGE');
  });
});

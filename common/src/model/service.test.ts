import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as wl from '@ambient/common/gen/istio/workload/workload_pb';
import { ModelError } from './errors.ts';
import { hostnameGateway, ipBytes, pbService } from './fixtures/wds.ts';
import { serviceFromProto } from './service.ts';

function rejects(pb: wl.Service, code: ModelError['code']): void {
  assert.throws(
    () => serviceFromProto(pb),
    (err: unknown) => err instanceof ModelError && err.code === code,
  );
}

describe('serviceFromProto', () => {
  test('converts ports, VIPs, waypoints and load balancing', () => {
    const s = serviceFromProto(
      pbService({
        name: 'web',
        namespace: 'ns',
        vips: ['10.96.0.10', 'fd00:10::a'],
        ports: [{ servicePort: 80, targetPort: 8080, appProtocol: wl.AppProtocol.HTTP2 }],
        subjectAltNames: ['spiffe://cluster.local/ns/ns/sa/web'],
        waypoint: hostnameGateway('ns', 'waypoint.ns.svc.cluster.local'),
        weightedWaypoints: [{ destination: hostnameGateway('ns', 'w2.ns.svc.cluster.local'), weight: 3 }],
        loadBalancing: {
          routingPreference: [wl.LoadBalancing_Scope.NETWORK, wl.LoadBalancing_Scope.REGION],
          mode: wl.LoadBalancing_Mode.FAILOVER,
          healthPolicy: wl.LoadBalancing_HealthPolicy.ALLOW_ALL,
        },
        ipFamilies: wl.IPFamilies.DUAL,
        canonical: true,
        visibility: wl.Service_Visibility.NAMESPACE,
      }),
    );
    assert.equal(s.key, 'ns/web.ns.svc.cluster.local');
    assert.deepEqual(s.vips, [
      { network: '', ip: '10.96.0.10' },
      { network: '', ip: 'fd00:10::a' },
    ]);
    assert.deepEqual(s.ports.get(80), { servicePort: 80, targetPort: 8080, appProtocol: 'HTTP2' });
    assert.deepEqual(s.loadBalancer, {
      routingPreferences: ['Network', 'Region'],
      mode: 'Failover',
      healthPolicy: 'AllowAll',
    });
    assert.equal(s.weightedWaypoints[0]?.weight, 3);
    assert.equal(s.ipFamilies, 'Dual');
    assert.equal(s.canonical, true);
    assert.equal(s.visibility, 'Namespace');
  });

  test('AUTOMATIC ip families and an absent LB are left out; UNSPECIFIED mode is Standard', () => {
    const plain = serviceFromProto(pbService({}));
    assert.equal(plain.ipFamilies, undefined);
    assert.equal(plain.loadBalancer, undefined);
    const lb = serviceFromProto(pbService({ loadBalancing: {} }));
    assert.deepEqual(lb.loadBalancer, {
      routingPreferences: [],
      mode: 'Standard',
      healthPolicy: 'OnlyHealthy',
    });
  });

  test('CIDR VIPs keep their prefix; a full-length prefix is a host VIP', () => {
    const s = serviceFromProto(
      pbService({
        addresses: [
          { network: 'n', address: ipBytes('10.10.0.0'), length: 16 },
          { network: 'n', address: ipBytes('10.20.0.1'), length: 32 },
        ],
      }),
    );
    assert.deepEqual(s.vips, [
      { network: 'n', ip: '10.10.0.0', prefixLength: 16 },
      { network: 'n', ip: '10.20.0.1' },
    ]);
  });

  test('rejects bad services', () => {
    rejects(pbService({ hostname: '' }), 'MISSING_HOSTNAME');
    rejects(pbService({ namespace: '' }), 'MISSING_NAMESPACE');
    rejects(pbService({ addresses: [{ address: new Uint8Array(5) }] }), 'ADDRESS_LENGTH');
    rejects(pbService({ addresses: [{ address: ipBytes('10.0.0.0'), length: 33 }] }), 'INVALID_CIDR');
    rejects(pbService({ portPairs: [[80, 70_000]] }), 'PORT_RANGE');
    rejects(
      pbService({ loadBalancing: { routingPreference: [wl.LoadBalancing_Scope.UNSPECIFIED_SCOPE] } }),
      'UNKNOWN_ENUM',
    );
    rejects(pbService({ loadBalancing: { mode: 42 as wl.LoadBalancing_Mode } }), 'UNKNOWN_ENUM');
    rejects(pbService({ weightedWaypoints: [{ weight: 1 }] }), 'GATEWAY_DESTINATION_MISSING');
    rejects(pbService({ waypoint: {} }), 'GATEWAY_DESTINATION_MISSING');
    rejects(pbService({ ipFamilies: 8 as wl.IPFamilies }), 'UNKNOWN_ENUM');
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  formatBaggage,
  formatForwarded,
  forwardedHost,
  newTraceparent,
  parseBaggage,
  traceIdOf,
} from './request-headers.ts';

describe('baggage', () => {
  it('formats in ztunnel key order and omits empty values', () => {
    assert.equal(
      formatBaggage({
        clusterId: 'Kubernetes',
        namespace: 'default',
        workloadType: 'Deployment',
        workloadName: 'productpage-v1',
        canonicalName: 'productpage',
        canonicalRevision: 'v1',
        region: 'eu-west-1',
        zone: 'eu-west-1a',
      }),
      'k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=productpage-v1,' +
        'service.name=productpage,service.version=v1,cloud.region=eu-west-1,cloud.availability_zone=eu-west-1a',
    );
    assert.equal(
      formatBaggage({ namespace: 'ns', workloadType: 'pod', workloadName: 'p', canonicalName: '' }),
      'k8s.namespace.name=ns,k8s.pod.name=p',
    );
    assert.equal(formatBaggage({}), '');
  });

  it('parses the way ztunnel does, across values and all four workload keys', () => {
    assert.deepEqual(
      parseBaggage(['k8s.cluster.name=K1', 'k8s.namespace.name=NS1,k8s.cronjob.name=N1,service.name=,x=y']),
      {
        clusterId: 'K1',
        namespace: 'NS1',
        workloadName: 'N1',
        workloadType: 'cronjob',
      },
    );
    const round = {
      clusterId: 'c',
      namespace: 'n',
      workloadType: 'job',
      workloadName: 'w',
      canonicalName: 's',
      canonicalRevision: 'v',
    };
    assert.deepEqual(parseBaggage(formatBaggage(round)), round);
  });
});

describe('forwarded', () => {
  it('writes for="ip:port" with an optional host and brackets IPv6', () => {
    assert.equal(formatForwarded({ address: '10.1.2.3', port: 41234 }), 'for="10.1.2.3:41234"');
    assert.equal(
      formatForwarded({ address: '10.1.2.3', port: 41234 }, 'reviews.default.svc.cluster.local'),
      'for="10.1.2.3:41234";host=reviews.default.svc.cluster.local',
    );
    assert.equal(formatForwarded({ address: 'fd00::1', port: 5 }), 'for="[fd00::1]:5"');
  });

  it('reads back only the host parameter', () => {
    assert.equal(
      forwardedHost('for="10.1.2.3:41234";host=reviews.default.svc.cluster.local'),
      'reviews.default.svc.cluster.local',
    );
    assert.equal(forwardedHost('for="10.1.2.3:41234";Host="a.b"'), 'a.b');
    assert.equal(forwardedHost('for="10.1.2.3:41234"'), undefined);
    assert.equal(forwardedHost(undefined), undefined);
  });
});

describe('traceparent', () => {
  it('is version 00, random per call, with non-zero ids', () => {
    const a = newTraceparent();
    const b = newTraceparent();
    assert.match(a, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    assert.notEqual(a, b);
    assert.equal(traceIdOf(a), a.slice(3, 35));
    assert.equal(traceIdOf('01-zz'), undefined);
  });
});

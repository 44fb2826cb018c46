import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AddressSchema } from '@ambient/common/gen/istio/workload/workload_pb';
import { fromBinary } from '@bufbuild/protobuf';
import { status } from '@grpc/grpc-js';
import { MemoryResourceSource } from './support/memory-resource-source.ts';
import { metricValue } from './support/metrics.ts';
import { SotwXdsClient } from './support/sotw-xds-client.ts';
import { ADDRESS_TYPE, podAddress } from './support/wds-fixtures.ts';
import { type Harness, startHarness, waitFor, ztunnelNode } from './support/xds-harness.ts';

function workloadNames(res: { resources: { value: Uint8Array }[] }): string[] {
  return res.resources
    .map((any) => {
      const a = fromBinary(AddressSchema, any.value);
      return a.type.case === 'workload' ? a.type.value.name : '?';
    })
    .sort();
}

describe('state-of-the-world ADS', () => {
  let source: MemoryResourceSource;
  let h: Harness;
  const clients: SotwXdsClient[] = [];
  const { nodeId, metadata } = ztunnelNode();

  function client(): SotwXdsClient {
    const c = new SotwXdsClient(h.address, nodeId, metadata);
    clients.push(c);
    return c;
  }

  beforeEach(async () => {
    source = new MemoryResourceSource([ADDRESS_TYPE]);
    for (const [i, p] of ['a', 'b'].entries()) {
      const x = podAddress('default', p, `10.1.0.${i + 1}`);
      source.apply(ADDRESS_TYPE, { set: { [x.uid]: x.value } });
    }
    h = await startHarness(source);
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await h.close();
  });

  it('sends the whole set on subscribe and on every change, and survives a NACK', async () => {
    const c = client();
    c.send({ typeUrl: ADDRESS_TYPE });
    const full = await c.next();
    assert.deepEqual(workloadNames(full), ['a', 'b']);
    assert.equal(full.resources[0]?.typeUrl, ADDRESS_TYPE);
    c.ack(full);

    const d = podAddress('default', 'd', '10.1.0.4');
    source.apply(ADDRESS_TYPE, { set: { [d.uid]: d.value } });
    const second = await c.next();
    assert.deepEqual(workloadNames(second), ['a', 'b', 'd']);
    assert.notEqual(second.versionInfo, full.versionInfo);
    c.nack(second, 'd: bad');
    await waitFor('the NACK', () => h.server.debugState().connections[0]?.types[0]?.nacks === 1);
    assert.equal(h.server.debugState().connections[0]?.types[0]?.lastNack?.message, 'd: bad');
    assert.equal(h.server.debugState().connections[0]?.types[0]?.ackedVersion, full.versionInfo);

    source.apply(ADDRESS_TYPE, { remove: [d.uid] });
    const third = await c.next();
    assert.deepEqual(workloadNames(third), ['a', 'b']);
    c.ack(third);
    await waitFor(
      'the ACK',
      () => h.server.debugState().connections[0]?.types[0]?.ackedVersion === third.versionInfo,
    );
    assert.equal(h.server.debugState().connections[0]?.variant, 'sotw');
    assert.equal(await metricValue(h.registry, 'istiod_xds_nacks_total'), 1);
  });

  it('serves named subscriptions and ignores stale nonces', async () => {
    const a = podAddress('default', 'a', '10.1.0.1');
    const b = podAddress('default', 'b', '10.1.0.2');
    const c = client();
    c.send({ typeUrl: ADDRESS_TYPE, resourceNames: [a.uid] });
    const first = await c.next();
    assert.deepEqual(workloadNames(first), ['a']);
    c.ack(first, [a.uid]);

    const b2 = podAddress('default', 'b', '10.1.9.2');
    source.apply(ADDRESS_TYPE, { set: { [b2.uid]: b2.value } });
    await sleep(100);
    const a2 = podAddress('default', 'a', '10.1.9.1');
    source.apply(ADDRESS_TYPE, { set: { [a2.uid]: a2.value } });
    const push = await c.next();
    assert.deepEqual(workloadNames(push), ['a'], 'only the change of a subscribed name pushes');

    // A request carrying the previous nonce is stale: its names are ignored.
    c.send({ typeUrl: ADDRESS_TYPE, responseNonce: first.nonce, resourceNames: [a.uid, b.uid] });
    await assert.rejects(c.next(150), /no response/);
    // The same change with the latest nonce is answered with the new set.
    c.ack(push, [a.uid, b.uid]);
    assert.deepEqual(workloadNames(await c.next()), ['a', 'b']);
  });
});

describe('state-of-the-world ADS disabled', () => {
  it('answers UNIMPLEMENTED', async () => {
    const source = new MemoryResourceSource([ADDRESS_TYPE]);
    const h = await startHarness(source, { stateOfTheWorld: false });
    const { nodeId, metadata } = ztunnelNode();
    const c = new SotwXdsClient(h.address, nodeId, metadata);
    try {
      c.send({ typeUrl: ADDRESS_TYPE });
      const s = await c.status;
      assert.equal(s.code, status.UNIMPLEMENTED);
      assert.match(s.details, /DeltaAggregatedResources/);
    } finally {
      c.close();
      await h.close();
    }
  });
});

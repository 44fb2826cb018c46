import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ControlPlaneSchema } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import {
  DeltaDiscoveryResponseSchema,
  ResourceSchema,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { create, equals, fromBinary, toBinary } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import { encodeDeltaResponse } from './response-encoding.ts';

const TYPE = 'type.googleapis.com/istio.workload.Address';

function resource(name: string, valueBytes: number, aliases: string[] = []) {
  return create(ResourceSchema, {
    name,
    version: `v-${name}`,
    aliases,
    resource: create(AnySchema, { typeUrl: TYPE, value: new Uint8Array(valueBytes).fill(7) }),
  });
}

describe('encodeDeltaResponse', () => {
  const cases = {
    'an empty response': create(DeltaDiscoveryResponseSchema, { typeUrl: TYPE, nonce: 'n0' }),
    'removals only': create(DeltaDiscoveryResponseSchema, {
      systemVersionInfo: '2026-01-01T00:00:00Z/3',
      typeUrl: TYPE,
      nonce: 'n1',
      removedResources: ['a', 'b'],
    }),
    'resources of 1-, 2- and 3-byte lengths with every other field set': create(
      DeltaDiscoveryResponseSchema,
      {
        systemVersionInfo: '2026-01-01T00:00:00Z/4',
        typeUrl: TYPE,
        nonce: 'n2',
        resources: [
          resource('small', 3),
          resource('medium', 300, ['net/10.0.0.1']),
          resource('large', 20_000),
        ],
        removedResources: ['gone'],
        controlPlane: create(ControlPlaneSchema, { identifier: '{"Component":"istiod"}' }),
      },
    ),
  };
  for (const [what, res] of Object.entries(cases)) {
    it(`gives the bytes toBinary gives for ${what}`, () => {
      const fast = encodeDeltaResponse(res);
      assert.deepEqual(new Uint8Array(fast), toBinary(DeltaDiscoveryResponseSchema, res));
      assert.ok(equals(DeltaDiscoveryResponseSchema, fromBinary(DeltaDiscoveryResponseSchema, fast), res));
    });
  }

  it('reuses a shared envelope without changing the output', () => {
    const shared = resource('shared', 50);
    const a = create(DeltaDiscoveryResponseSchema, { typeUrl: TYPE, nonce: 'a', resources: [shared] });
    const b = create(DeltaDiscoveryResponseSchema, {
      typeUrl: TYPE,
      nonce: 'b',
      resources: [shared, resource('x', 1)],
    });
    encodeDeltaResponse(a);
    assert.deepEqual(new Uint8Array(encodeDeltaResponse(b)), toBinary(DeltaDiscoveryResponseSchema, b));
  });
});

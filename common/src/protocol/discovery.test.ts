import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { envoySuite } from './fixtures/envoy-golden.ts';
import { GEN_DIR, loadGenerated } from './fixtures/generated.ts';
import { hex, toHex } from './fixtures/hex.ts';
import { describeGolden } from './fixtures/register-golden.ts';

const gen = await loadGenerated(GEN_DIR);
const pb = gen.discovery;

describeGolden(
  'envoy.service.discovery.v3 golden (discovery.proto, ads.proto, base.proto, status.proto)',
  envoySuite(gen),
);

describe('delta xDS hand-computed bytes', () => {
  const delta = (init: Parameters<typeof create<typeof pb.DeltaDiscoveryRequestSchema>>[1]) =>
    toHex(toBinary(pb.DeltaDiscoveryRequestSchema, create(pb.DeltaDiscoveryRequestSchema, init)));

  test('the first request carries node(1) and type_url(2)', () => {
    assert.equal(delta({ node: { id: 'z' }, typeUrl: 'a' }), toHex(hex('0a 03 0a 01 7a 12 01 61')));
  });

  test('an ACK is type_url(2) plus response_nonce(6)', () => {
    assert.equal(delta({ typeUrl: 'a', responseNonce: 'n' }), toHex(hex('12 01 61 32 01 6e')));
  });

  test('a NACK adds error_detail(7) with google.rpc.Status.message(2)', () => {
    assert.equal(
      delta({ typeUrl: 'a', responseNonce: 'n', errorDetail: { message: 'e' } }),
      toHex(hex('12 01 61 32 01 6e 3a 03 12 01 65')),
    );
  });

  test('on-demand: subscribe(3) and unsubscribe(4) "*"', () => {
    assert.equal(
      delta({ resourceNamesSubscribe: ['*'], resourceNamesUnsubscribe: ['*'] }),
      toHex(hex('1a 01 2a 22 01 2a')),
    );
  });

  test('a response resource is Resource{name(3), version(1), resource(2) Any}', () => {
    const response = create(pb.DeltaDiscoveryResponseSchema, {
      resources: [{ name: 'n', version: 'v', resource: { typeUrl: 't', value: new Uint8Array([1]) } }],
      nonce: 'x',
      removedResources: ['r'],
    });
    assert.equal(
      toHex(toBinary(pb.DeltaDiscoveryResponseSchema, response)),
      toHex(hex('12 0e 0a 01 76 12 06 0a 01 74 12 01 01 1a 01 6e 2a 01 78 32 01 72')),
    );
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { GEN_DIR, loadGenerated } from './fixtures/generated.ts';
import { hex, toHex } from './fixtures/hex.ts';
import { describeGolden } from './fixtures/register-golden.ts';
import { workloadSuite } from './fixtures/workload-golden.ts';

const gen = await loadGenerated(GEN_DIR);
const pb = gen.workload;

describeGolden('istio.workload golden (workload.proto)', workloadSuite(gen));

describe('istio.workload hand-computed bytes', () => {
  test('Workload.uid is field 20 (tag a2 01)', () => {
    assert.equal(
      toHex(toBinary(pb.WorkloadSchema, create(pb.WorkloadSchema, { uid: 'u' }))),
      toHex(hex('a2 01 01 75')),
    );
  });

  test('Address{service{name}} nests the Service under field 2', () => {
    const address = create(pb.AddressSchema, { type: { case: 'service', value: { name: 'a' } } });
    assert.equal(toHex(toBinary(pb.AddressSchema, address)), toHex(hex('12 03 0a 01 61')));
  });

  test('GatewayAddress{hostname, hbone_mtls_port 15008}', () => {
    const gateway = create(pb.GatewayAddressSchema, {
      destination: { case: 'hostname', value: { namespace: 'n', hostname: 'h' } },
      hboneMtlsPort: 15008,
    });
    assert.equal(
      toHex(toBinary(pb.GatewayAddressSchema, gateway)),
      toHex(hex('0a 06 0a 01 6e 12 01 68 18 a0 75')),
    );
  });

  test('NetworkAddress.length has explicit presence: 0 is written, unset is not', () => {
    const zero = create(pb.NetworkAddressSchema, { address: new Uint8Array([10, 0, 0, 1]), length: 0 });
    const unset = create(pb.NetworkAddressSchema, { address: new Uint8Array([10, 0, 0, 1]) });
    assert.equal(toHex(toBinary(pb.NetworkAddressSchema, zero)), toHex(hex('12 04 0a 00 00 01 18 00')));
    assert.equal(toHex(toBinary(pb.NetworkAddressSchema, unset)), toHex(hex('12 04 0a 00 00 01')));
  });

  test('Workload.capacity is a UInt32Value: 0 is written as an empty wrapper, unset is not', () => {
    const zero = create(pb.WorkloadSchema, { capacity: 0 });
    assert.equal(toHex(toBinary(pb.WorkloadSchema, zero)), toHex(hex('da 01 00')));
    assert.equal(toBinary(pb.WorkloadSchema, create(pb.WorkloadSchema, {})).length, 0);
  });

  test('Workload.services map entry is {1: key, 2: PortList}', () => {
    const workload = create(pb.WorkloadSchema, { services: { k: { ports: [{ servicePort: 80 }] } } });
    assert.equal(
      toHex(toBinary(pb.WorkloadSchema, workload)),
      toHex(hex('b2 01 09 0a 01 6b 12 04 0a 02 08 50')),
    );
  });
});

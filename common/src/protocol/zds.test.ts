import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { GEN_DIR, loadGenerated } from './fixtures/generated.ts';
import { hex, toHex } from './fixtures/hex.ts';
import { describeGolden } from './fixtures/register-golden.ts';
import { zdsSuite } from './fixtures/zds-golden.ts';

const gen = await loadGenerated(GEN_DIR);
const pb = gen.zds;

describeGolden('istio.workload.zds golden (zds.proto)', zdsSuite(gen));

describe('istio.workload.zds hand-computed datagrams', () => {
  const request = (payload: Parameters<typeof create<typeof pb.WorkloadRequestSchema>>[1]) =>
    toHex(toBinary(pb.WorkloadRequestSchema, create(pb.WorkloadRequestSchema, payload)));

  test('ZdsHello{V1} is 08 01', () => {
    assert.equal(
      toHex(toBinary(pb.ZdsHelloSchema, create(pb.ZdsHelloSchema, { version: pb.Version.V1 }))),
      '08 01',
    );
  });

  test('Add{uid, workload_info} sits in field 1', () => {
    const bytes = request({
      payload: {
        case: 'add',
        value: { uid: 'u', workloadInfo: { name: 'a', namespace: 'b', serviceAccount: 'c' } },
      },
    });
    assert.equal(bytes, toHex(hex('0a 0e 0a 01 75 12 09 0a 01 61 12 01 62 1a 01 63')));
  });

  test('Del carries its uid in field 2, not 1', () => {
    assert.equal(request({ payload: { case: 'del', value: { uid: 'u' } } }), toHex(hex('12 03 12 01 75')));
  });

  test('SnapshotSent is an empty field 3; Keep is field 5', () => {
    assert.equal(request({ payload: { case: 'snapshotSent', value: {} } }), '1a 00');
    assert.equal(request({ payload: { case: 'keep', value: { uid: 'u' } } }), toHex(hex('2a 03 0a 01 75')));
  });

  test('an ACK is an empty Ack in field 1; a NACK carries the error text', () => {
    const response = (error: string) =>
      toHex(
        toBinary(
          pb.WorkloadResponseSchema,
          create(pb.WorkloadResponseSchema, { payload: { case: 'ack', value: { error } } }),
        ),
      );
    assert.equal(response(''), '0a 00');
    assert.equal(response('x'), toHex(hex('0a 03 0a 01 78')));
  });
});

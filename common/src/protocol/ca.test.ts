import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { caSuite } from './fixtures/ca-golden.ts';
import { GEN_DIR, loadGenerated } from './fixtures/generated.ts';
import { hex, toHex } from './fixtures/hex.ts';
import { describeGolden } from './fixtures/register-golden.ts';

const gen = await loadGenerated(GEN_DIR);
const pb = gen.ca;

describeGolden('istio.v1.auth golden (ca.proto)', caSuite(gen));

describe('istio.v1.auth hand-computed bytes', () => {
  test('validity_duration is an int64 varint in field 3 (86400 s)', () => {
    const request = create(pb.IstioCertificateRequestSchema, { validityDuration: 86400n });
    assert.equal(toHex(toBinary(pb.IstioCertificateRequestSchema, request)), toHex(hex('18 80 a3 05')));
  });

  test('metadata ImpersonatedIdentity is a Struct string value in field 4', () => {
    const request = create(pb.IstioCertificateRequestSchema, { metadata: { k: 'v' } });
    // Struct.fields(1) entry {key(1) "k", value(2) Value{string_value(3) "v"}}
    assert.equal(
      toHex(toBinary(pb.IstioCertificateRequestSchema, request)),
      toHex(hex('22 0a 0a 08 0a 01 6b 12 03 1a 01 76')),
    );
  });
});

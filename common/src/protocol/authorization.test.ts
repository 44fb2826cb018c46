import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { create, toBinary } from '@bufbuild/protobuf';
import { GEN_DIR, loadGenerated } from './fixtures/generated.ts';
import { hex, toHex } from './fixtures/hex.ts';
import { describeGolden } from './fixtures/register-golden.ts';
import { securitySuite } from './fixtures/security-golden.ts';

const gen = await loadGenerated(GEN_DIR);
const pb = gen.security;

describeGolden('istio.security golden (authorization.proto)', securitySuite(gen));

describe('istio.security hand-computed bytes', () => {
  test('the converted STRICT policy: DENY when not_principals has presence', () => {
    const strict = create(pb.AuthorizationSchema, {
      name: 'p',
      scope: pb.Scope.WORKLOAD_SELECTOR,
      action: pb.Action.DENY,
      rules: [
        { clauses: [{ matches: [{ notPrincipals: [{ matchType: { case: 'presence', value: {} } }] }] }] },
      ],
    });
    // rules(5) > clauses(1) > matches(2) > not_principals(4) > presence(4, empty)
    assert.equal(
      toHex(toBinary(pb.AuthorizationSchema, strict)),
      toHex(hex('0a 01 70 18 02 20 01 2a 08 0a 06 12 04 22 02 22 00')),
    );
  });

  test('Match destination ports are packed under field 9', () => {
    const match = create(pb.MatchSchema, { destinationPorts: [80, 15008] });
    assert.equal(toHex(toBinary(pb.MatchSchema, match)), toHex(hex('4a 03 50 a0 75')));
  });

  test('ServiceAccountMatch keeps the camelCase field name serviceAccount', () => {
    const field = pb.ServiceAccountMatchSchema.fields.find((f) => f.number === 2);
    assert.equal(field?.name, 'serviceAccount');
  });
});

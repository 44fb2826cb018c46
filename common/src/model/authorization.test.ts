import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as sec from '@ambient/common/gen/istio/security/authorization_pb';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { authorizationFromProto } from './authorization.ts';
import { ModelError } from './errors.ts';
import { ipBytes, pbAuthorization } from './fixtures/wds.ts';

function withMatch(match: MessageInitShape<typeof sec.MatchSchema>): sec.Authorization {
  return pbAuthorization({ name: 'p', rules: [{ clauses: [{ matches: [match] }] }] });
}

function rejects(pb: sec.Authorization, code: ModelError['code'], message?: RegExp): void {
  assert.throws(
    () => authorizationFromProto(pb),
    (err: unknown) => {
      assert.ok(err instanceof ModelError);
      assert.equal(err.code, code);
      if (message) assert.match(err.message, message);
      return true;
    },
  );
}

describe('authorizationFromProto', () => {
  test('converts scope, action, dry run and every match field', () => {
    const p = authorizationFromProto(
      pbAuthorization({
        name: 'allow-web',
        namespace: 'ns',
        scope: sec.Scope.WORKLOAD_SELECTOR,
        action: sec.Action.DENY,
        dryRun: true,
        rules: [
          {
            clauses: [
              {
                matches: [
                  {
                    namespaces: [{ matchType: { case: 'exact', value: 'a' } }],
                    notPrincipals: [{ matchType: { case: 'presence', value: {} } }],
                    sourceIps: [{ address: ipBytes('10.0.0.0'), length: 8 }],
                    notDestinationIps: [{ address: ipBytes('fd00::1'), length: 128 }],
                    destinationPorts: [80],
                    serviceAccounts: [{ namespace: 'a', serviceAccount: 'sa' }],
                  },
                ],
              },
            ],
          },
        ],
      }),
    );
    assert.equal(p.key, 'ns/allow-web');
    assert.equal(p.scope, 'WorkloadSelector');
    assert.equal(p.action, 'Deny');
    assert.equal(p.dryRun, true);
    const m = p.rules[0]?.[0]?.[0];
    assert.ok(m);
    assert.deepEqual(m.namespaces, [{ kind: 'exact', value: 'a' }]);
    assert.deepEqual(m.notPrincipals, [{ kind: 'presence' }]);
    assert.deepEqual(
      m.sourceIps.map((c) => `${c.ip}/${c.prefixLength}`),
      ['10.0.0.0/8'],
    );
    assert.deepEqual(
      m.notDestinationIps.map((c) => `${c.ip}/${c.prefixLength}`),
      ['fd00::1/128'],
    );
    assert.deepEqual(m.destinationPorts, [80]);
    assert.deepEqual(m.serviceAccounts, [{ namespace: 'a', serviceAccount: 'sa' }]);
  });

  test('an invalid address or prefix rejects the whole policy (checklist 20)', () => {
    rejects(
      withMatch({ sourceIps: [{ address: new Uint8Array([10, 0, 0]), length: 24 }] }),
      'ADDRESS_LENGTH',
      /source_ips\[0\]/,
    );
    rejects(
      withMatch({ notSourceIps: [{ address: ipBytes('10.0.0.0'), length: 33 }] }),
      'INVALID_CIDR',
      /not_source_ips\[0\]/,
    );
    rejects(withMatch({ destinationIps: [{ address: ipBytes('fd00::'), length: 129 }] }), 'INVALID_CIDR');
    rejects(withMatch({ notDestinationIps: [{ address: new Uint8Array(0), length: 0 }] }), 'ADDRESS_LENGTH');
  });

  test('other malformed policies are rejected', () => {
    rejects(withMatch({ principals: [{}] }), 'EMPTY_STRING_MATCH');
    rejects(withMatch({ destinationPorts: [65_536] }), 'PORT_RANGE');
    rejects(pbAuthorization({ name: '' }), 'MISSING_NAME');
    rejects(pbAuthorization({ name: 'x', namespace: '' }), 'MISSING_NAMESPACE');
    rejects(pbAuthorization({ name: 'x', scope: 5 as sec.Scope }), 'UNKNOWN_ENUM');
    rejects(pbAuthorization({ name: 'x', action: 2 as sec.Action }), 'UNKNOWN_ENUM');
  });
});

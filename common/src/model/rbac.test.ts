import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as sec from '@ambient/common/gen/istio/security/authorization_pb';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { type Identity, parseIdentity } from '../identity/identity.ts';
import { type Authorization, authorizationFromProto } from './authorization.ts';
import { ipBytes, loadState, pbAuthorization, pbWorkload } from './fixtures/wds.ts';
import { assertRbac, type Connection, evaluateRbac, policyMatches } from './rbac.ts';

type MatchInit = MessageInitShape<typeof sec.MatchSchema>;

const CLIENT = parseIdentity('spiffe://cluster.local/ns/client/sa/client-sa');
const OTHER = parseIdentity('spiffe://other.td/ns/elsewhere/sa/x');

interface Conn {
  srcIdentity?: Identity;
  srcIp: string;
  dstIp: string;
  dstPort: number;
}
const MTLS: Conn = { srcIdentity: CLIENT, srcIp: '10.0.0.1', dstIp: '10.0.1.1', dstPort: 8080 };
const PLAINTEXT: Conn = { srcIp: '10.0.0.1', dstIp: '10.0.1.1', dstPort: 8080 };

const exact = (value: string) => ({ matchType: { case: 'exact' as const, value } });
const prefix = (value: string) => ({ matchType: { case: 'prefix' as const, value } });
const suffix = (value: string) => ({ matchType: { case: 'suffix' as const, value } });
const presence = { matchType: { case: 'presence' as const, value: {} } };
const cidr = (ip: string, length: number) => ({ address: ipBytes(ip), length });

function policy(
  name: string,
  action: 'ALLOW' | 'DENY',
  rules: MessageInitShape<typeof sec.RuleSchema>[],
  extra: MessageInitShape<typeof sec.AuthorizationSchema> = {},
): Authorization {
  return authorizationFromProto(
    pbAuthorization({
      name,
      namespace: 'dst',
      action: sec.Action[action],
      scope: sec.Scope.NAMESPACE,
      rules,
      ...extra,
    }),
  );
}

/** A policy whose single rule has a single clause with these matches. */
function matching(name: string, action: 'ALLOW' | 'DENY', ...matches: MatchInit[]): Authorization {
  return policy(name, action, [{ clauses: [{ matches }] }]);
}

describe('rbac match semantics (spec §3.4)', () => {
  const table: [string, MatchInit, Conn, boolean][] = [
    ['namespaces exact hit', { namespaces: [exact('client')] }, MTLS, true],
    ['namespaces exact miss', { namespaces: [exact('other')] }, MTLS, false],
    ['namespaces values are OR-ed', { namespaces: [exact('other'), exact('client')] }, MTLS, true],
    ['namespaces prefix', { namespaces: [prefix('cli')] }, MTLS, true],
    ['namespaces suffix', { namespaces: [suffix('ent')] }, MTLS, true],
    ['namespaces presence with identity', { namespaces: [presence] }, MTLS, true],
    ['namespaces presence without identity', { namespaces: [presence] }, PLAINTEXT, false],
    ['not_namespaces excludes', { notNamespaces: [exact('client')] }, MTLS, false],
    ['not_namespaces lets others in', { notNamespaces: [exact('other')] }, MTLS, true],
    [
      'principals exact (no spiffe://)',
      { principals: [exact('cluster.local/ns/client/sa/client-sa')] },
      MTLS,
      true,
    ],
    [
      'principals with spiffe:// never match',
      { principals: [exact('spiffe://cluster.local/ns/client/sa/client-sa')] },
      MTLS,
      false,
    ],
    ['principals prefix', { principals: [prefix('cluster.local/ns/client/')] }, MTLS, true],
    ['principals suffix', { principals: [suffix('/sa/client-sa')] }, MTLS, true],
    ['principals suffix miss', { principals: [suffix('/sa/other')] }, MTLS, false],
    ['principals presence with identity', { principals: [presence] }, MTLS, true],
    ['principals presence without identity', { principals: [presence] }, PLAINTEXT, false],
    ['principals prefix "" without identity', { principals: [prefix('')] }, PLAINTEXT, false],
    ['not_principals presence = plaintext only (STRICT)', { notPrincipals: [presence] }, PLAINTEXT, true],
    ['not_principals presence with identity', { notPrincipals: [presence] }, MTLS, false],
    ['not_principals other identity', { notPrincipals: [exact('other.td/ns/elsewhere/sa/x')] }, MTLS, true],
    ['source_ips CIDR hit', { sourceIps: [cidr('10.0.0.0', 24)] }, MTLS, true],
    ['source_ips CIDR miss', { sourceIps: [cidr('10.9.0.0', 16)] }, MTLS, false],
    ['source_ips /32', { sourceIps: [cidr('10.0.0.1', 32)] }, MTLS, true],
    ['source_ips IPv6 never matches IPv4', { sourceIps: [cidr('::', 0)] }, MTLS, false],
    ['not_source_ips excludes', { notSourceIps: [cidr('10.0.0.0', 8)] }, MTLS, false],
    ['not_source_ips lets others in', { notSourceIps: [cidr('192.168.0.0', 16)] }, MTLS, true],
    ['destination_ips hit', { destinationIps: [cidr('10.0.1.0', 24)] }, MTLS, true],
    ['destination_ips miss', { destinationIps: [cidr('10.0.2.0', 24)] }, MTLS, false],
    ['not_destination_ips excludes', { notDestinationIps: [cidr('10.0.1.1', 32)] }, MTLS, false],
    ['destination_ports hit', { destinationPorts: [80, 8080] }, MTLS, true],
    ['destination_ports miss', { destinationPorts: [80] }, MTLS, false],
    ['not_destination_ports excludes', { notDestinationPorts: [8080] }, MTLS, false],
    ['not_destination_ports lets others in', { notDestinationPorts: [80] }, MTLS, true],
    [
      'service_accounts hit',
      { serviceAccounts: [{ namespace: 'client', serviceAccount: 'client-sa' }] },
      MTLS,
      true,
    ],
    [
      'service_accounts ignore trust domain',
      { serviceAccounts: [{ namespace: 'elsewhere', serviceAccount: 'x' }] },
      { ...MTLS, srcIdentity: OTHER },
      true,
    ],
    [
      'service_accounts wrong sa',
      { serviceAccounts: [{ namespace: 'client', serviceAccount: 'other' }] },
      MTLS,
      false,
    ],
    [
      'service_accounts without identity',
      { serviceAccounts: [{ namespace: 'client', serviceAccount: 'client-sa' }] },
      PLAINTEXT,
      false,
    ],
    [
      'not_service_accounts excludes',
      { notServiceAccounts: [{ namespace: 'client', serviceAccount: 'client-sa' }] },
      MTLS,
      false,
    ],
    [
      'not_service_accounts without identity',
      { notServiceAccounts: [{ namespace: 'client', serviceAccount: 'client-sa' }] },
      PLAINTEXT,
      true,
    ],
    ['fields are AND-ed: both hit', { namespaces: [exact('client')], destinationPorts: [8080] }, MTLS, true],
    ['fields are AND-ed: one misses', { namespaces: [exact('client')], destinationPorts: [80] }, MTLS, false],
    [
      'positive and not_ in one field',
      { sourceIps: [cidr('10.0.0.0', 8)], notSourceIps: [cidr('10.0.0.1', 32)] },
      MTLS,
      false,
    ],
    ['an empty match never matches', {}, MTLS, false],
  ];
  for (const [name, match, conn, want] of table) {
    test(name, () => assert.equal(policyMatches(matching('p', 'ALLOW', match), conn), want));
  }

  test('matches within a clause are OR-ed; an empty match in a clause does not help', () => {
    const p = matching('p', 'ALLOW', {}, { destinationPorts: [9] }, { destinationPorts: [8080] });
    assert.equal(policyMatches(p, MTLS), true);
    assert.equal(policyMatches(matching('p', 'ALLOW', {}, { destinationPorts: [9] }), MTLS), false);
  });

  test('clauses of a rule are AND-ed', () => {
    const both = policy('p', 'ALLOW', [
      {
        clauses: [
          { matches: [{ namespaces: [exact('client')] }] },
          { matches: [{ destinationPorts: [8080] }] },
        ],
      },
    ]);
    assert.equal(policyMatches(both, MTLS), true);
    const one = policy('p', 'ALLOW', [
      {
        clauses: [
          { matches: [{ namespaces: [exact('client')] }] },
          { matches: [{ destinationPorts: [80] }] },
        ],
      },
    ]);
    assert.equal(policyMatches(one, MTLS), false);
  });

  test('rules are OR-ed', () => {
    const p = policy('p', 'ALLOW', [
      { clauses: [{ matches: [{ destinationPorts: [80] }] }] },
      { clauses: [{ matches: [{ destinationPorts: [8080] }] }] },
    ]);
    assert.equal(policyMatches(p, MTLS), true);
  });

  test('no rules never matches; a rule with no clauses matches everything (allow-all)', () => {
    assert.equal(policyMatches(policy('none', 'ALLOW', []), MTLS), false);
    assert.equal(policyMatches(policy('all', 'ALLOW', [{ clauses: [] }]), PLAINTEXT), true);
  });

  test('a clause with no matches is satisfied (ztunnel), one with only an empty match is not', () => {
    const noMatches = policy('p', 'ALLOW', [
      { clauses: [{ matches: [] }, { matches: [{ destinationPorts: [8080] }] }] },
    ]);
    assert.equal(policyMatches(noMatches, MTLS), true);
    const emptyMatch = policy('p', 'ALLOW', [
      { clauses: [{ matches: [{}] }, { matches: [{ destinationPorts: [8080] }] }] },
    ]);
    assert.equal(policyMatches(emptyMatch, MTLS), false);
  });
});

describe('rbac evaluation order (spec §3.6)', () => {
  const allowClient = matching('allow-client', 'ALLOW', { namespaces: [exact('client')] });
  const allowWaypoint = matching('allow-waypoint', 'ALLOW', {
    principals: [exact('cluster.local/ns/dst/sa/waypoint')],
  });
  const denyPort = matching('deny-8080', 'DENY', { destinationPorts: [8080] });

  test('no policies: allow', () => {
    const d = evaluateRbac([], MTLS);
    assert.equal(d.allowed, true);
    assert.equal(d.reason, 'no-allow-policies');
  });

  test('only a non-matching DENY: allow (no ALLOW policies exist)', () => {
    const d = evaluateRbac([matching('deny-80', 'DENY', { destinationPorts: [80] })], MTLS);
    assert.equal(d.allowed, true);
    assert.equal(d.reason, 'no-allow-policies');
  });

  test('DENY takes precedence over a matching ALLOW (checklist 16)', () => {
    const d = evaluateRbac([allowClient, denyPort], MTLS);
    assert.equal(d.allowed, false);
    assert.equal(d.reason, 'explicitly-denied');
    assert.equal(d.policy, 'dst/deny-8080');
    assert.equal(d.message, 'explicitly denied by: dst/deny-8080');
  });

  test('a matching ALLOW allows', () => {
    const d = evaluateRbac([allowWaypoint, allowClient], MTLS);
    assert.equal(d.allowed, true);
    assert.equal(d.reason, 'allow-matched');
    assert.equal(d.policy, 'dst/allow-client');
  });

  test('ALLOW policies exist but none match: deny (checklist 15)', () => {
    const d = evaluateRbac([allowWaypoint], MTLS);
    assert.equal(d.allowed, false);
    assert.equal(d.reason, 'none-allowed');
    assert.equal(d.message, 'allow policies exist, but none allowed');
  });

  test('dry-run policies are reported and never enforced (checklist 16)', () => {
    const dryDeny = policy('dry-deny', 'DENY', [{ clauses: [{ matches: [{ destinationPorts: [8080] }] }] }], {
      dryRun: true,
    });
    const dryAllow = policy('dry-allow', 'ALLOW', [{ clauses: [{ matches: [{ destinationPorts: [1] }] }] }], {
      dryRun: true,
    });
    const d = evaluateRbac([dryDeny, dryAllow], MTLS);
    assert.equal(d.allowed, true, 'a matching dry-run DENY does not deny');
    assert.equal(d.reason, 'no-allow-policies', 'a dry-run ALLOW does not count as an ALLOW policy');
    assert.deepEqual(d.dryRunMatches, [{ policy: 'dst/dry-deny', action: 'Deny' }]);
    const withAllow = evaluateRbac([dryDeny, allowClient], MTLS);
    assert.equal(withAllow.allowed, true);
    assert.deepEqual(withAllow.dryRunMatches, [{ policy: 'dst/dry-deny', action: 'Deny' }]);
  });

  test('STRICT PeerAuthentication (DENY not_principals presence) refuses plaintext only', () => {
    const strict = authorizationFromProto(
      pbAuthorization({
        name: 'istio_converted_static_strict',
        namespace: 'istio-system',
        scope: sec.Scope.GLOBAL,
        action: sec.Action.DENY,
        rules: [{ clauses: [{ matches: [{ notPrincipals: [presence] }] }] }],
      }),
    );
    assert.equal(evaluateRbac([strict], PLAINTEXT).allowed, false);
    assert.equal(evaluateRbac([strict], MTLS).allowed, true);
  });
});

describe('assertRbac policy association (spec §3.5)', () => {
  const denyAll = (name: string, namespace: string, scope: sec.Scope) =>
    pbAuthorization({ name, namespace, scope, action: sec.Action.DENY, rules: [{ clauses: [] }] });
  const { state } = loadState({
    addresses: [
      pbWorkload({
        name: 'a',
        namespace: 'dst',
        ips: ['10.0.1.1'],
        authorizationPolicies: ['dst/selected', 'dst/not-sent'],
      }),
      pbWorkload({ name: 'b', namespace: 'dst', ips: ['10.0.1.2'] }),
      pbWorkload({ name: 'c', namespace: 'other', ips: ['10.0.2.1'] }),
    ],
    policies: [
      denyAll('selected', 'dst', sec.Scope.WORKLOAD_SELECTOR),
      denyAll('ns-wide', 'other', sec.Scope.NAMESPACE),
      pbAuthorization({
        name: 'mesh-wide',
        namespace: 'istio-system',
        scope: sec.Scope.GLOBAL,
        action: sec.Action.DENY,
        rules: [{ clauses: [{ matches: [{ destinationPorts: [9999] }] }] }],
      }),
    ],
  });
  const conn = (dst: string, port = 8080): Connection => {
    const w = state.findWorkloadByAddress('', dst);
    assert.ok(w);
    return { ...MTLS, dstIp: dst, dstPort: port, dstWorkload: w };
  };

  test('a selector policy applies only to the workloads that name it', () => {
    const a = assertRbac(state, conn('10.0.1.1'));
    assert.equal(a.allowed, false);
    assert.equal(a.policy, 'dst/selected');
    assert.deepEqual(
      a.missingPolicies,
      ['dst/not-sent'],
      'unknown selector policies are skipped and reported',
    );
    assert.equal(assertRbac(state, conn('10.0.1.2')).allowed, true, 'same namespace, not selected');
  });

  test('a namespace policy applies to every workload of its namespace only', () => {
    assert.equal(assertRbac(state, conn('10.0.2.1')).policy, 'other/ns-wide');
    assert.equal(assertRbac(state, conn('10.0.1.2')).allowed, true);
  });

  test('a global policy applies everywhere', () => {
    const d = assertRbac(state, conn('10.0.1.2', 9999));
    assert.equal(d.allowed, false);
    assert.equal(d.policy, 'istio-system/mesh-wide');
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type {
  AnyObject,
  AuthorizationPolicy,
  MtlsMode,
  PeerAuthentication,
} from '@ambient/common/config/objects';
import {
  Action,
  type Authorization,
  AuthorizationSchema,
  type Clause,
  ClauseSchema,
  type MatchSchema,
  RuleSchema,
  Scope,
  StringMatchSchema,
} from '@ambient/common/gen/istio/security/authorization_pb';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { create, toBinary, toJson } from '@bufbuild/protobuf';
import {
  convertAuthorizationPolicy,
  convertPeerAuthentication,
  hasEffectiveRules,
  peerAuthenticationPolicyNames,
  STATIC_STRICT_POLICY_NAME,
  staticStrictPolicy,
  workloadPolicyNames,
} from './policies.ts';
import { meshSettings } from './settings.ts';
import { AmbientState } from './state.ts';

const settings = meshSettings();
const presence = () => create(StringMatchSchema, { matchType: { case: 'presence', value: {} } });
const exact = (v: string) => create(StringMatchSchema, { matchType: { case: 'exact', value: v } });
const prefix = (v: string) => create(StringMatchSchema, { matchType: { case: 'prefix', value: v } });
const suffix = (v: string) => create(StringMatchSchema, { matchType: { case: 'suffix', value: v } });
const clause = (...matches: MessageInitShape<typeof MatchSchema>[]): Clause =>
  create(ClauseSchema, { matches });
const rule = (...clauses: Clause[]) => create(RuleSchema, { clauses });
const ip = (...b: number[]) => new Uint8Array(b);

function ap(
  name: string,
  ns: string,
  spec: AuthorizationPolicy['spec'],
  annotations?: Record<string, string>,
): AuthorizationPolicy {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace: ns, ...(annotations ? { annotations } : {}) },
    spec,
  };
}

function assertAuth(got: Authorization | undefined, want: Authorization): void {
  assert.ok(got, 'expected an authorization');
  assert.deepEqual(toJson(AuthorizationSchema, got), toJson(AuthorizationSchema, want));
  assert.deepEqual(toBinary(AuthorizationSchema, got), toBinary(AuthorizationSchema, want));
}

describe('convertAuthorizationPolicy', () => {
  it('converts every L4 field (golden)', () => {
    const got = convertAuthorizationPolicy(
      ap('allow', 'cfg', {
        rules: [
          {
            from: [
              {
                source: {
                  principals: ['principal', 'principal-prefix-*', '*-suffix-principal', '*'],
                  notPrincipals: ['not-principal', 'not-principal-prefix-*', '*-suffix-not-principal', '*'],
                },
              },
            ],
          },
          {
            from: [
              {
                source: {
                  serviceAccounts: ['ns/sa', 'sa-only'],
                  notServiceAccounts: ['ns/sa-not', 'sa-not-only'],
                },
              },
            ],
          },
          {
            from: [
              { source: { namespaces: ['ns', 'ns-prefix-*'], notNamespaces: ['*-not-ns-suffix', '*'] } },
            ],
          },
          {
            from: [
              { source: { ipBlocks: ['1.2.3.4', '5.6.0.0/16'], notIpBlocks: ['2.2.3.4', '6.6.0.0/16'] } },
            ],
          },
          { to: [{ operation: { ports: ['80', '90'], notPorts: ['800', '900'] } }] },
          {
            when: [
              { key: 'source.ip', values: ['10.10.10.10', '192.168.10.0/24'], notValues: ['90.10.10.10'] },
              { key: 'destination.port', values: ['91'], notValues: ['9001'] },
              { key: 'source.principal', values: ['p'] },
              { key: 'destination.ip', notValues: ['10.0.0.1'] },
              { key: 'source.namespace', values: ['n'] },
            ],
          },
        ],
      }),
      settings,
    );
    assert.deepEqual(got.diagnostics, []);
    assertAuth(
      got.authorization,
      create(AuthorizationSchema, {
        name: 'allow',
        namespace: 'cfg',
        scope: Scope.NAMESPACE,
        action: Action.ALLOW,
        rules: [
          rule(
            clause({
              principals: [
                exact('principal'),
                prefix('principal-prefix-'),
                suffix('-suffix-principal'),
                presence(),
              ],
              notPrincipals: [
                exact('not-principal'),
                prefix('not-principal-prefix-'),
                suffix('-suffix-not-principal'),
                presence(),
              ],
            }),
          ),
          rule(
            clause({
              serviceAccounts: [
                { namespace: 'ns', serviceAccount: 'sa' },
                { namespace: 'cfg', serviceAccount: 'sa-only' },
              ],
              notServiceAccounts: [
                { namespace: 'ns', serviceAccount: 'sa-not' },
                { namespace: 'cfg', serviceAccount: 'sa-not-only' },
              ],
            }),
          ),
          rule(
            clause({
              namespaces: [exact('ns'), prefix('ns-prefix-')],
              notNamespaces: [suffix('-not-ns-suffix'), presence()],
            }),
          ),
          rule(
            clause({
              sourceIps: [
                { address: ip(1, 2, 3, 4), length: 32 },
                { address: ip(5, 6, 0, 0), length: 16 },
              ],
              notSourceIps: [
                { address: ip(2, 2, 3, 4), length: 32 },
                { address: ip(6, 6, 0, 0), length: 16 },
              ],
            }),
          ),
          rule(clause({ destinationPorts: [80, 90], notDestinationPorts: [800, 900] })),
          rule(
            clause({
              sourceIps: [
                { address: ip(10, 10, 10, 10), length: 32 },
                { address: ip(192, 168, 10, 0), length: 24 },
              ],
              notSourceIps: [{ address: ip(90, 10, 10, 10), length: 32 }],
            }),
            clause({ destinationPorts: [91], notDestinationPorts: [9001] }),
            clause({ principals: [exact('p')] }),
            clause({ notDestinationIps: [{ address: ip(10, 0, 0, 1), length: 32 }] }),
            clause({ namespaces: [exact('n')] }),
          ),
        ],
      }),
    );
  });

  it('orders a rule as to, from, when clauses', () => {
    const got = convertAuthorizationPolicy(
      ap('p', 'ns1', {
        action: 'DENY',
        rules: [
          {
            from: [{ source: { namespaces: ['a'] } }],
            to: [{ operation: { ports: ['80'] } }],
            when: [{ key: 'source.ip', values: ['1.1.1.1'] }],
          },
        ],
      }),
      settings,
    ).authorization;
    assert.equal(got?.rules[0]?.clauses.length, 3);
    assert.deepEqual(got?.rules[0]?.clauses[0]?.matches[0]?.destinationPorts, [80]);
    assert.equal(got?.rules[0]?.clauses[1]?.matches[0]?.namespaces[0]?.matchType.value, 'a');
    assert.equal(got?.rules[0]?.clauses[2]?.matches[0]?.sourceIps.length, 1);
    assert.equal(got?.action, Action.DENY);
  });

  it('scopes by root namespace and selector', () => {
    assert.equal(
      convertAuthorizationPolicy(ap('p', 'istio-system', {}), settings).authorization?.scope,
      Scope.GLOBAL,
    );
    assert.equal(
      convertAuthorizationPolicy(ap('p', 'ns1', {}), settings).authorization?.scope,
      Scope.NAMESPACE,
    );
    assert.equal(
      convertAuthorizationPolicy(
        ap('p', 'istio-system', { selector: { matchLabels: { app: 'a' } } }),
        settings,
      ).authorization?.scope,
      Scope.WORKLOAD_SELECTOR,
    );
    assert.equal(
      convertAuthorizationPolicy(ap('p', 'gw', {}), meshSettings({ rootNamespace: 'gw' })).authorization
        ?.scope,
      Scope.GLOBAL,
    );
  });

  it('sends an empty ALLOW (allow nothing) as a policy without rules', () => {
    const got = convertAuthorizationPolicy(ap('allow-nothing', 'ns1', {}), settings);
    assertAuth(
      got.authorization,
      create(AuthorizationSchema, { name: 'allow-nothing', namespace: 'ns1', scope: Scope.NAMESPACE }),
    );
  });

  it('leaves targetRef policies to waypoints', () => {
    const got = convertAuthorizationPolicy(
      ap('p', 'ns1', { targetRefs: [{ kind: 'Service', name: 's' }], rules: [{}] }),
      settings,
    );
    assert.deepEqual(got, { diagnostics: [] });
    assert.deepEqual(
      convertAuthorizationPolicy(ap('p', 'ns1', { targetRef: { kind: 'Gateway', name: 'w' } }), settings),
      {
        diagnostics: [],
      },
    );
  });

  it('rejects AUDIT and CUSTOM with istiod status', () => {
    for (const action of ['AUDIT', 'CUSTOM'] as const) {
      const got = convertAuthorizationPolicy(ap('p', 'ns1', { action, rules: [{}] }), settings);
      assert.equal(got.authorization, undefined);
      assert.deepEqual(got.diagnostics, [
        {
          kind: 'AuthorizationPolicy',
          namespace: 'ns1',
          name: 'p',
          reason: 'UnsupportedValue',
          message: `ztunnel does not support the ${action} action`,
        },
      ]);
    }
  });

  it('drops an ALLOW rule that needs HTTP attributes (fails closed) and says so', () => {
    const got = convertAuthorizationPolicy(
      ap('p', 'ns1', {
        selector: { matchLabels: { app: 'a' } },
        rules: [
          {
            from: [{ source: { requestPrincipals: ['example.com/sub-1'] } }],
            to: [{ operation: { methods: ['GET'] } }],
            when: [{ key: 'request.auth.presenter', values: ['presenter.example.com'] }],
          },
        ],
      }),
      settings,
    );
    assertAuth(
      got.authorization,
      create(AuthorizationSchema, {
        name: 'p',
        namespace: 'ns1',
        scope: Scope.WORKLOAD_SELECTOR,
        action: Action.ALLOW,
      }),
    );
    assert.equal(
      got.diagnostics[0]?.message,
      'ztunnel does not support HTTP attributes (found: methods, request.auth.presenter, requestPrincipals). ' +
        'In ambient mode you must use a waypoint proxy to enforce HTTP rules. ' +
        'Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.',
    );
    assert.equal(got.diagnostics[0]?.reason, 'UnsupportedValue');
  });

  it('keeps the L4 rules of an ALLOW beside a dropped HTTP rule', () => {
    const got = convertAuthorizationPolicy(
      ap('p', 'ns1', {
        rules: [
          { to: [{ operation: { paths: ['/x'] } }] },
          { from: [{ source: { principals: ['cluster.local/ns/a/sa/b'] } }] },
        ],
      }),
      settings,
    );
    assert.equal(got.authorization?.rules.length, 1);
    assert.equal(
      got.authorization?.rules[0]?.clauses[0]?.matches[0]?.principals[0]?.matchType.value,
      'cluster.local/ns/a/sa/b',
    );
  });

  it('treats remoteIpBlocks and trustDomains as HTTP-only', () => {
    const got = convertAuthorizationPolicy(
      ap('p', 'ns1', {
        rules: [
          {
            from: [
              { source: { remoteIpBlocks: ['1.2.3.4'], namespaces: ['x'], trustDomains: ['td'] } as never },
            ],
          },
        ],
      }),
      settings,
    );
    assert.equal(got.authorization?.rules.length, 0);
    assert.match(got.diagnostics[0]?.message ?? '', /found: remoteIpBlocks, trustDomains\)/);
  });

  it('strips HTTP parts from a DENY and reports whether it still fires', () => {
    const mixed = convertAuthorizationPolicy(
      ap('p', 'ns1', {
        action: 'DENY',
        rules: [
          {
            from: [
              {
                source: {
                  principals: ['cluster.local/ns/foo/sa/bar'],
                  notRequestPrincipals: ['example.com/sub-1'],
                },
              },
            ],
          },
        ],
      }),
      settings,
    );
    assert.equal(mixed.authorization?.rules.length, 1);
    assert.equal(hasEffectiveRules(mixed.authorization?.rules ?? []), true);
    assert.match(
      mixed.diagnostics[0]?.message ?? '',
      /DENY policy with HTTP attributes is enforced without the HTTP rules\. This will be more restrictive than requested\.$/,
    );

    for (const r of [
      { from: [{ source: { notRequestPrincipals: ['example.com/sub-1'] } }] },
      {
        from: [{ source: { principals: ['cluster.local/ns/foo/sa/bar'] } }],
        to: [{ operation: { methods: ['GET'] } }],
      },
      {
        from: [{ source: { principals: ['cluster.local/ns/foo/sa/bar'] } }],
        when: [{ key: 'request.headers[x-token]', values: ['secret'] }],
      },
    ]) {
      const noop = convertAuthorizationPolicy(ap('p', 'ns1', { action: 'DENY', rules: [r] }), settings);
      assert.equal(hasEffectiveRules(noop.authorization?.rules ?? []), false);
      assert.match(
        noop.diagnostics[0]?.message ?? '',
        /After omitting unsupported HTTP attributes, this DENY policy has no enforceable rules at ztunnel and will have no effect\. Deploy a waypoint proxy and use a targetRef to enforce this policy\.$/,
      );
    }

    const withCatchAll = convertAuthorizationPolicy(
      ap('p', 'ns1', {
        action: 'DENY',
        rules: [{}, { from: [{ source: { notRequestPrincipals: ['x'] } }] }],
      }),
      settings,
    );
    assert.equal(hasEffectiveRules(withCatchAll.authorization?.rules ?? []), true);
  });

  it('reports values that are not ports or IPs (dropped, as istiod does)', () => {
    const got = convertAuthorizationPolicy(
      ap('p', 'ns1', {
        rules: [
          {
            to: [{ operation: { ports: ['http', '70000'] } }],
            from: [{ source: { ipBlocks: ['1.2.3.999'] } }],
          },
        ],
      }),
      settings,
    );
    const match = got.authorization?.rules[0]?.clauses[0]?.matches[0];
    assert.deepEqual(match?.destinationPorts, []);
    assert.equal(hasEffectiveRules(got.authorization?.rules ?? []), false);
    assert.equal(got.diagnostics[0]?.reason, 'InvalidValue');
    assert.match(got.diagnostics[0]?.message ?? '', /"http", "70000", "1\.2\.3\.999"/);
  });

  it('honours istio.io/dry-run only when enabled', () => {
    const p = ap('p', 'ns1', { action: 'DENY', rules: [{}] }, { 'istio.io/dry-run': 'true' });
    const off = convertAuthorizationPolicy(p, settings);
    assert.equal(off.authorization, undefined);
    assert.equal(off.diagnostics[0]?.reason, 'UnsupportedValue');
    const on = convertAuthorizationPolicy(p, meshSettings({ dryRunPolicies: true }));
    assert.equal(on.authorization?.dryRun, true);
  });
});

function pa(
  name: string,
  ns: string,
  mode: MtlsMode | undefined,
  opts: { selector?: Record<string, string>; ports?: Record<string, MtlsMode>; created?: string } = {},
): PeerAuthentication {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name, namespace: ns, ...(opts.created ? { creationTimestamp: opts.created } : {}) },
    spec: {
      ...(opts.selector ? { selector: { matchLabels: opts.selector } } : {}),
      ...(mode ? { mtls: { mode } } : {}),
      ...(opts.ports
        ? { portLevelMtls: Object.fromEntries(Object.entries(opts.ports).map(([k, m]) => [k, { mode: m }])) }
        : {}),
    },
  };
}

const denyPlaintext = { notPrincipals: [presence()] };

function converted(name: string, ns: string, ...rules: ReturnType<typeof rule>[]): Authorization {
  return create(AuthorizationSchema, {
    name: `converted_peer_authentication_${name}`,
    namespace: ns,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules,
  });
}

describe('PeerAuthentication conversion', () => {
  it('builds the static STRICT policy', () => {
    assertAuth(
      staticStrictPolicy('istio-system'),
      create(AuthorizationSchema, {
        name: STATIC_STRICT_POLICY_NAME,
        namespace: 'istio-system',
        scope: Scope.WORKLOAD_SELECTOR,
        action: Action.DENY,
        rules: [rule(clause(denyPlaintext))],
      }),
    );
  });

  it('STRICT with a PERMISSIVE port exempts that port (istiod golden peer-authn-strict-port-mtls-strict-and-permissive)', () => {
    const p = pa('permissive-strict-mtls', 'ns1', 'STRICT', {
      selector: { app: 'a' },
      ports: { '9090': 'STRICT', '8080': 'PERMISSIVE' },
    });
    assertAuth(
      convertPeerAuthentication(p, undefined, undefined, 'istio-system'),
      converted(
        'permissive-strict-mtls',
        'ns1',
        rule(clause(denyPlaintext), clause({ notDestinationPorts: [8080] })),
      ),
    );
  });

  it('ORs several STRICT ports of a PERMISSIVE policy, one rule each (istio#54146)', () => {
    const p = pa('w', 'ns1', 'PERMISSIVE', {
      selector: { app: 'a' },
      ports: { '9090': 'STRICT', '8080': 'STRICT' },
    });
    assertAuth(
      convertPeerAuthentication(p, undefined, undefined, 'istio-system'),
      converted(
        'w',
        'ns1',
        rule(clause({ ...denyPlaintext, destinationPorts: [8080] })),
        rule(clause({ ...denyPlaintext, destinationPorts: [9090] })),
      ),
    );
  });

  it('UNSET with a STRICT port and no parent policy enforces that port only', () => {
    const p = pa('strict-mtls', 'ns1', 'UNSET', { selector: { app: 'a' }, ports: { '8080': 'STRICT' } });
    assertAuth(
      convertPeerAuthentication(p, undefined, undefined, 'istio-system'),
      converted('strict-mtls', 'ns1', rule(clause({ ...denyPlaintext, destinationPorts: [8080] }))),
    );
  });

  it('merges a STRICT mesh policy into an UNSET workload policy with a PERMISSIVE port', () => {
    const p = pa('w', 'ns1', undefined, {
      selector: { app: 'a' },
      ports: { '9090': 'STRICT', '8080': 'PERMISSIVE' },
    });
    const root = pa('mesh', 'istio-system', 'STRICT');
    assertAuth(
      convertPeerAuthentication(p, undefined, root, 'istio-system'),
      converted('w', 'ns1', rule(clause({ notDestinationPorts: [8080] }), clause(denyPlaintext))),
    );
    // A PERMISSIVE namespace policy overrides the mesh: nothing to exempt, STRICT port enforced.
    assertAuth(
      convertPeerAuthentication(p, pa('ns', 'ns1', 'PERMISSIVE'), root, 'istio-system'),
      converted('w', 'ns1', rule(clause({ ...denyPlaintext, destinationPorts: [9090] }))),
    );
  });

  it('closes the two cases istiod leaves open', () => {
    const root = pa('mesh', 'istio-system', 'STRICT');
    // A PERMISSIVE workload's STRICT port under a STRICT mesh is still enforced.
    const permissive = pa('w', 'ns1', 'PERMISSIVE', { selector: { app: 'a' }, ports: { '9090': 'STRICT' } });
    assertAuth(
      convertPeerAuthentication(permissive, undefined, root, 'istio-system'),
      converted('w', 'ns1', rule(clause({ ...denyPlaintext, destinationPorts: [9090] }))),
    );
    // An UNSET namespace defers to the STRICT mesh, so the PERMISSIVE port is an exception to STRICT.
    const unset = pa('w', 'ns1', 'UNSET', { selector: { app: 'a' }, ports: { '8080': 'PERMISSIVE' } });
    assertAuth(
      convertPeerAuthentication(unset, pa('ns', 'ns1', 'UNSET'), root, 'istio-system'),
      converted('w', 'ns1', rule(clause({ notDestinationPorts: [8080] }), clause(denyPlaintext))),
    );
  });

  it('converts nothing when the static policy or nothing applies', () => {
    const root = 'istio-system';
    assert.equal(
      convertPeerAuthentication(
        pa('w', 'ns1', 'STRICT', { selector: { app: 'a' }, ports: { '80': 'STRICT' } }),
        undefined,
        undefined,
        root,
      ),
      undefined,
    );
    assert.equal(
      convertPeerAuthentication(
        pa('w', 'ns1', 'STRICT', { selector: { app: 'a' } }),
        undefined,
        undefined,
        root,
      ),
      undefined,
    );
    assert.equal(
      convertPeerAuthentication(
        pa('w', 'ns1', 'STRICT', { ports: { '80': 'PERMISSIVE' } }),
        undefined,
        undefined,
        root,
      ),
      undefined,
    );
    assert.equal(
      convertPeerAuthentication(
        pa('w', root, 'STRICT', { selector: { app: 'a' }, ports: { '80': 'PERMISSIVE' } }),
        undefined,
        undefined,
        root,
      ),
      undefined,
    );
    assert.equal(
      convertPeerAuthentication(
        pa('w', 'ns1', 'PERMISSIVE', { selector: { app: 'a' }, ports: { '80': 'PERMISSIVE' } }),
        undefined,
        undefined,
        root,
      ),
      undefined,
    );
  });
});

function stateWith(...objs: AnyObject[]): AmbientState {
  const s = new AmbientState(settings);
  s.upsert(objs);
  return s;
}

const STATIC = `istio-system/${STATIC_STRICT_POLICY_NAME}`;

describe('peerAuthenticationPolicyNames', () => {
  const labels = { app: 'a' };
  it('references the static STRICT policy for the effective mode', () => {
    assert.deepEqual(peerAuthenticationPolicyNames('ns1', labels, stateWith()), []);
    assert.deepEqual(
      peerAuthenticationPolicyNames('ns1', labels, stateWith(pa('m', 'istio-system', 'STRICT'))),
      [STATIC],
    );
    assert.deepEqual(
      peerAuthenticationPolicyNames(
        'ns1',
        labels,
        stateWith(pa('m', 'istio-system', 'STRICT'), pa('n', 'ns1', 'PERMISSIVE')),
      ),
      [],
    );
    assert.deepEqual(
      peerAuthenticationPolicyNames(
        'ns1',
        labels,
        stateWith(pa('m', 'istio-system', 'STRICT'), pa('n', 'ns1', 'UNSET')),
      ),
      [STATIC],
    );
    assert.deepEqual(peerAuthenticationPolicyNames('ns1', labels, stateWith(pa('n', 'ns1', 'STRICT'))), [
      STATIC,
    ]);
    assert.deepEqual(peerAuthenticationPolicyNames('ns2', labels, stateWith(pa('n', 'ns1', 'STRICT'))), []);
  });

  it('lets a selecting workload policy override, the oldest one winning', () => {
    const st = stateWith(
      pa('n', 'ns1', 'STRICT'),
      pa('old', 'ns1', 'PERMISSIVE', { selector: { app: 'a' }, created: '2024-01-01T00:00:00Z' }),
      pa('new', 'ns1', 'STRICT', { selector: { app: 'a' }, created: '2025-01-01T00:00:00Z' }),
    );
    assert.deepEqual(peerAuthenticationPolicyNames('ns1', { app: 'a' }, st), []);
    assert.deepEqual(peerAuthenticationPolicyNames('ns1', { app: 'b' }, st), [STATIC]);
  });

  it('references the converted policy instead of the static one for port exceptions', () => {
    assert.deepEqual(
      peerAuthenticationPolicyNames(
        'ns1',
        labels,
        stateWith(pa('w', 'ns1', 'STRICT', { selector: labels, ports: { '8080': 'PERMISSIVE' } })),
      ),
      ['ns1/converted_peer_authentication_w'],
    );
    assert.deepEqual(
      peerAuthenticationPolicyNames(
        'ns1',
        labels,
        stateWith(pa('w', 'ns1', 'PERMISSIVE', { selector: labels, ports: { '8080': 'STRICT' } })),
      ),
      ['ns1/converted_peer_authentication_w'],
    );
    assert.deepEqual(
      peerAuthenticationPolicyNames(
        'ns1',
        labels,
        stateWith(
          pa('m', 'istio-system', 'STRICT'),
          pa('w', 'ns1', undefined, { selector: labels, ports: { '8080': 'PERMISSIVE' } }),
        ),
      ),
      ['ns1/converted_peer_authentication_w'],
    );
    assert.deepEqual(
      peerAuthenticationPolicyNames(
        'ns1',
        labels,
        stateWith(pa('w', 'ns1', 'STRICT', { selector: labels, ports: { '8080': 'STRICT' } })),
      ),
      [STATIC],
    );
  });
});

describe('workloadPolicyNames', () => {
  it('lists selector policies of the namespace and root namespace that select the workload, then PeerAuthentication names', () => {
    const sel = { selector: { matchLabels: { app: 'a' } } };
    const st = stateWith(
      ap('z-local', 'ns1', sel),
      ap('a-local', 'ns1', { selector: { matchLabels: { app: 'a', tier: 'web' } } }),
      ap('global', 'istio-system', sel),
      ap('other-ns', 'ns2', sel),
      ap('ns-wide', 'ns1', {}),
      ap('not-me', 'ns1', { selector: { matchLabels: { app: 'b' } } }),
      ap('waypoint', 'ns1', { ...sel, targetRefs: [{ kind: 'Service', name: 's' }] }),
      ap('audit', 'ns1', { ...sel, action: 'AUDIT' }),
      ap('dry', 'ns1', sel, { 'istio.io/dry-run': 'true' }),
      ap('empty-selector', 'ns1', { selector: {} }),
      pa('m', 'istio-system', 'STRICT'),
    );
    assert.deepEqual(workloadPolicyNames('ns1', { app: 'a', tier: 'web' }, st), [
      'istio-system/global',
      'ns1/a-local',
      'ns1/z-local',
      STATIC,
    ]);
    assert.deepEqual(workloadPolicyNames('ns1', { app: 'c' }, st), [STATIC]);
  });
});

import type {
  AuthorizationOperation,
  AuthorizationPolicy,
  AuthorizationRule,
  AuthorizationSource,
  MtlsMode,
  PeerAuthentication,
  PolicyTargetReference,
} from '@ambient/common/config/objects';
import {
  Action,
  type Address,
  AddressSchema,
  type Authorization,
  AuthorizationSchema,
  type Clause,
  ClauseSchema,
  type Match,
  MatchSchema,
  type Rule,
  RuleSchema,
  Scope,
  type ServiceAccountMatch,
  ServiceAccountMatchSchema,
  type StringMatch,
  StringMatchSchema,
} from '@ambient/common/gen/istio/security/authorization_pb';
import { create } from '@bufbuild/protobuf';
import type { Diagnostic } from './diagnostics.ts';
import { parseCidr } from './ip.ts';
import { ANNOTATIONS, hasEntries, selectsNonEmpty } from './labels.ts';
import type { MeshSettings } from './settings.ts';
import type { AmbientInputs } from './state.ts';

/** The DENY-plaintext policy every STRICT workload references (`_` keeps it clear of k8s names). */
export const STATIC_STRICT_POLICY_NAME = 'istio_converted_static_strict';
/** Prefix of PeerAuthentications converted for port-level mTLS. */
export const CONVERTED_PEER_AUTHENTICATION_PREFIX = 'converted_peer_authentication_';

/** Source fields newer than the typed shape in config/objects.ts. */
interface SourceExtras {
  trustDomains?: string[];
  notTrustDomains?: string[];
}

/** The xDS name of an Authorization: `<namespace>/<name>`. */
export function authorizationResourceName(a: { namespace: string; name: string }): string {
  return `${a.namespace}/${a.name}`;
}

/** The result of converting an AuthorizationPolicy: the resource (if any) and its status. */
export interface ConvertedPolicy {
  readonly authorization?: Authorization;
  readonly diagnostics: Diagnostic[];
}

const L4_WHEN_KEYS = new Set([
  'source.ip',
  'source.namespace',
  'source.principal',
  'destination.ip',
  'destination.port',
]);

const HTTP_RULE_FMT = (found: string, boilerplate: string) =>
  `ztunnel does not support HTTP attributes (found: ${found}). In ambient mode you must use a waypoint proxy to enforce HTTP rules. ${boilerplate}`;
const HTTP_DENY_NO_EFFECT =
  'After omitting unsupported HTTP attributes, this DENY policy has no enforceable rules at ztunnel and will have no effect. Deploy a waypoint proxy and use a targetRef to enforce this policy.';
const HTTP_DENY_MIXED =
  'DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested.';
const HTTP_ALLOW =
  'Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.';

/** `targetRef` and `targetRefs` together (istiod's `GetTargetRefs`). */
function targetRefs(ap: AuthorizationPolicy): PolicyTargetReference[] {
  const spec = ap.spec;
  if (!spec) return [];
  if (spec.targetRefs?.length) return spec.targetRefs;
  return spec.targetRef ? [spec.targetRef] : [];
}

/** Go's `strconv.ParseBool`. */
function parseBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

function dryRunOf(ap: AuthorizationPolicy): boolean {
  const v = ap.metadata.annotations?.[ANNOTATIONS.dryRun];
  return v ? parseBool(v) === true : false;
}

/**
 * Whether an AuthorizationPolicy becomes an Authorization at all: not a waypoint (targetRef)
 * policy, an L4 action, and not dry-run unless dry-run support is on. Cheap, so workload builds
 * can ask it per policy.
 */
export function isZtunnelPolicy(ap: AuthorizationPolicy, settings: MeshSettings): boolean {
  if (dryRunOf(ap) && !settings.dryRunPolicies) return false;
  if (targetRefs(ap).length > 0) return false;
  const action = ap.spec?.action ?? 'ALLOW';
  return action === 'ALLOW' || action === 'DENY';
}

/** Values that could not be parsed, for the diagnostic; istiod drops them silently. */
interface Dropped {
  values: string[];
}

function stringMatches(values: readonly string[] | undefined): StringMatch[] {
  return (values ?? []).map((v) => {
    if (v === '*') return create(StringMatchSchema, { matchType: { case: 'presence', value: {} } });
    if (v.startsWith('*'))
      return create(StringMatchSchema, { matchType: { case: 'suffix', value: v.slice(1) } });
    if (v.endsWith('*'))
      return create(StringMatchSchema, { matchType: { case: 'prefix', value: v.slice(0, -1) } });
    return create(StringMatchSchema, { matchType: { case: 'exact', value: v } });
  });
}

function serviceAccountMatches(
  values: readonly string[] | undefined,
  ruleNamespace: string,
): ServiceAccountMatch[] {
  return (values ?? []).map((v) => {
    const slash = v.indexOf('/');
    return slash === -1
      ? create(ServiceAccountMatchSchema, { namespace: ruleNamespace, serviceAccount: v })
      : create(ServiceAccountMatchSchema, {
          namespace: v.slice(0, slash),
          serviceAccount: v.slice(slash + 1),
        });
  });
}

function ports(values: readonly string[] | undefined, dropped: Dropped): number[] {
  const out: number[] = [];
  for (const v of values ?? []) {
    const n = /^[0-9]+$/.test(v) ? Number(v) : Number.NaN;
    if (!(n <= 65535)) {
      dropped.values.push(v);
      continue;
    }
    out.push(n);
  }
  return out;
}

function addresses(values: readonly string[] | undefined, dropped: Dropped): Address[] {
  const out: Address[] = [];
  for (const v of values ?? []) {
    if (v === '') continue;
    const p = v.includes('/') && v.includes('%') ? undefined : parseCidr(v);
    if (!p) {
      dropped.values.push(v);
      continue;
    }
    out.push(create(AddressSchema, { address: p.address, length: p.length }));
  }
  return out;
}

function httpOperations(op: AuthorizationOperation): string[] {
  const found: string[] = [];
  if (op.hosts?.length) found.push('hosts');
  if (op.notHosts?.length) found.push('notHosts');
  if (op.methods?.length) found.push('methods');
  if (op.notMethods?.length) found.push('notMethods');
  if (op.paths?.length) found.push('paths');
  if (op.notPaths?.length) found.push('notPaths');
  return found;
}

function httpSources(s: AuthorizationSource & SourceExtras): string[] {
  const found: string[] = [];
  if (s.remoteIpBlocks?.length) found.push('remoteIpBlocks');
  if (s.notRemoteIpBlocks?.length) found.push('notRemoteIpBlocks');
  if (s.requestPrincipals?.length) found.push('requestPrincipals');
  if (s.notRequestPrincipals?.length) found.push('notRequestPrincipals');
  // A Match has no trust-domain field and folding it into principals would widen the source.
  if (s.trustDomains?.length) found.push('trustDomains');
  if (s.notTrustDomains?.length) found.push('notTrustDomains');
  return found;
}

function whenValues(
  key: string,
  when: { key: string; values?: string[]; notValues?: string[] },
  invert: boolean,
): string[] | undefined {
  if (when.key !== key) return undefined;
  return invert ? when.notValues : when.values;
}

/** istiod's `handleRule`: one AuthorizationPolicy rule → the clauses of one Rule. */
function convertRule(
  action: Action,
  rule: AuthorizationRule,
  ruleNamespace: string,
  dropped: Dropped,
): { clauses: Clause[] | undefined; l7: string[] } {
  const l7 = new Set<string>();
  const toMatches: Match[] = [];
  for (const to of rule.to ?? []) {
    const op = to.operation ?? {};
    for (const f of httpOperations(op)) l7.add(f);
    toMatches.push(
      create(MatchSchema, {
        destinationPorts: ports(op.ports, dropped),
        notDestinationPorts: ports(op.notPorts, dropped),
      }),
    );
  }
  const fromMatches: Match[] = [];
  for (const from of rule.from ?? []) {
    const src = (from.source ?? {}) as AuthorizationSource & SourceExtras;
    for (const f of httpSources(src)) l7.add(f);
    fromMatches.push(
      create(MatchSchema, {
        sourceIps: addresses(src.ipBlocks, dropped),
        notSourceIps: addresses(src.notIpBlocks, dropped),
        namespaces: stringMatches(src.namespaces),
        notNamespaces: stringMatches(src.notNamespaces),
        serviceAccounts: serviceAccountMatches(src.serviceAccounts, ruleNamespace),
        notServiceAccounts: serviceAccountMatches(src.notServiceAccounts, ruleNamespace),
        principals: stringMatches(src.principals),
        notPrincipals: stringMatches(src.notPrincipals),
      }),
    );
  }
  const clauses: Clause[] = [];
  if (toMatches.length > 0) clauses.push(create(ClauseSchema, { matches: toMatches }));
  if (fromMatches.length > 0) clauses.push(create(ClauseSchema, { matches: fromMatches }));
  for (const when of rule.when ?? []) {
    if (!L4_WHEN_KEYS.has(when.key)) l7.add(when.key);
    clauses.push(
      create(ClauseSchema, {
        matches: [
          create(MatchSchema, {
            namespaces: stringMatches(whenValues('source.namespace', when, false)),
            principals: stringMatches(whenValues('source.principal', when, false)),
            sourceIps: addresses(whenValues('source.ip', when, false), dropped),
            destinationPorts: ports(whenValues('destination.port', when, false), dropped),
            destinationIps: addresses(whenValues('destination.ip', when, false), dropped),
            notNamespaces: stringMatches(whenValues('source.namespace', when, true)),
            notPrincipals: stringMatches(whenValues('source.principal', when, true)),
            notSourceIps: addresses(whenValues('source.ip', when, true), dropped),
            notDestinationPorts: ports(whenValues('destination.port', when, true), dropped),
            notDestinationIps: addresses(whenValues('destination.ip', when, true), dropped),
          }),
        ],
      }),
    );
  }
  // An ALLOW rule that needs HTTP attributes can never be satisfied at L4: drop it so the policy
  // allows less, never more. A DENY keeps its L4 parts (empty matches are skipped by ztunnel).
  if (action === Action.ALLOW && l7.size > 0) return { clauses: undefined, l7: [...l7] };
  return { clauses, l7: [...l7] };
}

function isMatchEmpty(m: Match): boolean {
  return (
    m.namespaces.length === 0 &&
    m.notNamespaces.length === 0 &&
    m.principals.length === 0 &&
    m.notPrincipals.length === 0 &&
    m.sourceIps.length === 0 &&
    m.notSourceIps.length === 0 &&
    m.destinationIps.length === 0 &&
    m.notDestinationIps.length === 0 &&
    m.destinationPorts.length === 0 &&
    m.notDestinationPorts.length === 0 &&
    m.serviceAccounts.length === 0 &&
    m.notServiceAccounts.length === 0 &&
    m.extensions.length === 0
  );
}

/**
 * Whether at least one rule can fire at ztunnel: a rule with no clauses matches everything; a rule
 * with a clause whose matches are all empty never matches (ztunnel skips empty matches).
 */
export function hasEffectiveRules(rules: readonly Rule[]): boolean {
  for (const r of rules) {
    if (r.clauses.length === 0) return true;
    if (r.clauses.every((c) => c.matches.some((m) => !isMatchEmpty(m)))) return true;
  }
  return false;
}

/**
 * AuthorizationPolicy → Authorization (istiod's `convertAuthorizationPolicy`). targetRef policies
 * belong to waypoints and produce nothing; AUDIT/CUSTOM and unsupported dry-run produce only a
 * diagnostic. HTTP-only attributes are stripped as described on {@link convertRule}, with the
 * same status messages istiod writes.
 */
export function convertAuthorizationPolicy(ap: AuthorizationPolicy, settings: MeshSettings): ConvertedPolicy {
  const ns = ap.metadata.namespace ?? '';
  const name = ap.metadata.name;
  const diag = (reason: string, message: string): Diagnostic => ({
    kind: 'AuthorizationPolicy',
    namespace: ns,
    name,
    reason,
    message,
  });
  const dryRun = dryRunOf(ap);
  if (dryRun && !settings.dryRunPolicies) {
    return {
      diagnostics: [
        diag(
          'UnsupportedValue',
          `found policy "${ns}/${name}" using dry-run annotation, but support for ambient dry-run authorizationPolicies isn't enabled`,
        ),
      ],
    };
  }
  if (targetRefs(ap).length > 0) return { diagnostics: [] };
  const spec = ap.spec ?? {};
  const scope = spec.selector
    ? Scope.WORKLOAD_SELECTOR
    : ns === settings.rootNamespace
      ? Scope.GLOBAL
      : Scope.NAMESPACE;
  const actionName = spec.action ?? 'ALLOW';
  if (actionName !== 'ALLOW' && actionName !== 'DENY') {
    return { diagnostics: [diag('UnsupportedValue', `ztunnel does not support the ${actionName} action`)] };
  }
  const action = actionName === 'DENY' ? Action.DENY : Action.ALLOW;
  const rules: Rule[] = [];
  const l7 = new Set<string>();
  const dropped: Dropped = { values: [] };
  for (const rule of spec.rules ?? []) {
    const r = convertRule(action, rule, ns, dropped);
    if (r.clauses) rules.push(create(RuleSchema, { clauses: r.clauses }));
    for (const f of r.l7) l7.add(f);
  }
  const authorization = create(AuthorizationSchema, { name, namespace: ns, scope, action, rules, dryRun });
  const diagnostics: Diagnostic[] = [];
  if (l7.size > 0) {
    const boilerplate =
      action === Action.DENY
        ? hasEffectiveRules(rules)
          ? HTTP_DENY_MIXED
          : HTTP_DENY_NO_EFFECT
        : HTTP_ALLOW;
    diagnostics.push(diag('UnsupportedValue', HTTP_RULE_FMT([...l7].sort().join(', '), boilerplate)));
  }
  if (dropped.values.length > 0) {
    const effect =
      action === Action.DENY
        ? 'a DENY rule left with only empty matches never fires'
        : 'an ALLOW rule left with only empty matches allows nothing';
    diagnostics.push(
      diag(
        'InvalidValue',
        `ignored values that are not valid ports or IP addresses: ${dropped.values.map((v) => JSON.stringify(v)).join(', ')} (${effect})`,
      ),
    );
  }
  return { authorization, diagnostics };
}

function modeOf(m: { mode?: MtlsMode } | undefined): MtlsMode {
  return m?.mode ?? 'UNSET';
}

function isSelectorless(pa: PeerAuthentication): boolean {
  return pa.spec?.selector === undefined;
}

function older(a: PeerAuthentication, b: PeerAuthentication): boolean {
  const ca = a.metadata.creationTimestamp ?? '';
  const cb = b.metadata.creationTimestamp ?? '';
  if (ca !== cb) {
    if (ca === '') return false;
    if (cb === '') return true;
    return ca < cb;
  }
  return a.metadata.name < b.metadata.name;
}

/** The oldest PeerAuthentication without a selector in a namespace (the effective namespace policy). */
export function namespacePeerAuthentication(
  namespace: string,
  inputs: AmbientInputs,
): PeerAuthentication | undefined {
  let best: PeerAuthentication | undefined;
  for (const pa of inputs.peerAuthentications(namespace)) {
    if (isSelectorless(pa) && (!best || older(pa, best))) best = pa;
  }
  return best;
}

const denyPlaintext = (): Match =>
  create(MatchSchema, {
    notPrincipals: [create(StringMatchSchema, { matchType: { case: 'presence', value: {} } })],
  });

/**
 * The static policy STRICT workloads reference: deny any connection without a peer identity.
 * istiod sends it whenever at least one PeerAuthentication exists.
 */
export function staticStrictPolicy(rootNamespace: string): Authorization {
  return create(AuthorizationSchema, {
    name: STATIC_STRICT_POLICY_NAME,
    namespace: rootNamespace,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules: [create(RuleSchema, { clauses: [create(ClauseSchema, { matches: [denyPlaintext()] })] })],
  });
}

function portLevelModes(pa: PeerAuthentication): [number, MtlsMode][] {
  const out: [number, MtlsMode][] = [];
  for (const [k, v] of Object.entries(pa.spec?.portLevelMtls ?? {})) {
    const n = /^[0-9]+$/.test(k) ? Number(k) : Number.NaN;
    if (!(n <= 0xffffffff)) continue;
    out.push([n, modeOf(v)]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/**
 * A workload-selector PeerAuthentication with port-level mTLS → a DENY Authorization
 * (`converted_peer_authentication_<name>`), merged with the namespace (`nsPol`) and mesh
 * (`rootPol`) policies it overrides (istiod's `convertPeerAuthentication`). Each STRICT port gets a
 * Rule of its own, so several STRICT ports are ORed (istio#54146; ANDing them failed open).
 * Returns undefined when no conversion is needed (then the static STRICT policy or nothing applies).
 */
export function convertPeerAuthentication(
  pa: PeerAuthentication,
  nsPol: PeerAuthentication | undefined,
  rootPol: PeerAuthentication | undefined,
  rootNamespace: string,
): Authorization | undefined {
  const ns = pa.metadata.namespace ?? '';
  const portModes = portLevelModes(pa);
  if (
    ns === rootNamespace ||
    pa.spec?.selector === undefined ||
    Object.keys(pa.spec.portLevelMtls ?? {}).length === 0
  ) {
    return undefined;
  }
  const mode = modeOf(pa.spec.mtls);
  const nsMode = nsPol ? modeOf(nsPol.spec?.mtls) : 'UNSET';
  const rootMode = rootPol ? modeOf(rootPol.spec?.mtls) : 'UNSET';
  // What the workload inherits: the namespace policy unless it is absent or UNSET, then the mesh's.
  // istiod spells these cases out one by one and misses two: a PERMISSIVE/DISABLE workload's STRICT
  // port under a STRICT mesh, and an UNSET workload's PERMISSIVE port under an UNSET namespace and a
  // STRICT mesh. In both it references a converted policy it then does not generate, which leaves
  // the port (or the workload) open; the inherited mode closes both.
  const parentStrict = (nsMode !== 'UNSET' ? nsMode : rootMode) === 'STRICT';
  const effectiveStrict = mode === 'STRICT' || (mode === 'UNSET' && parentStrict);

  const clauses: Clause[] = [];
  const rules: Rule[] = [];
  if (mode === 'STRICT') clauses.push(create(ClauseSchema, { matches: [denyPlaintext()] }));

  let foundNonStrictPort = false;
  for (const [port, portMode] of portModes) {
    if (portMode === 'STRICT') {
      // Already enforced by the workload's own or inherited STRICT mode.
      if (effectiveStrict) continue;
      rules.push(
        create(RuleSchema, {
          clauses: [
            create(ClauseSchema, {
              matches: [
                create(MatchSchema, {
                  notPrincipals: [create(StringMatchSchema, { matchType: { case: 'presence', value: {} } })],
                  destinationPorts: [port],
                }),
              ],
            }),
          ],
        }),
      );
    } else if (portMode === 'PERMISSIVE' || portMode === 'DISABLE') {
      // Only an exception to an effective STRICT mode needs a rule.
      if (!effectiveStrict) continue;
      foundNonStrictPort = true;
      // Deny unless the connection is to this port: ANDed with the STRICT clause, it exempts the port.
      clauses.push(create(ClauseSchema, { matches: [create(MatchSchema, { notDestinationPorts: [port] })] }));
    }
  }

  // STRICT everywhere is the static STRICT policy's job.
  if (mode === 'STRICT' && !foundNonStrictPort) return undefined;
  if (clauses.length === 0 && rules.length === 0) return undefined;

  // A STRICT mesh or namespace policy must be folded in, because the workload then drops the
  // static STRICT policy: two DENYs cannot express "STRICT except this port".
  if (parentStrict && foundNonStrictPort) clauses.push(create(ClauseSchema, { matches: [denyPlaintext()] }));
  if (clauses.length > 0) rules.push(create(RuleSchema, { clauses }));

  return create(AuthorizationSchema, {
    name: CONVERTED_PEER_AUTHENTICATION_PREFIX + pa.metadata.name,
    namespace: ns,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules,
  });
}

/** {@link convertPeerAuthentication} with the namespace and mesh policies looked up. */
export function buildPeerAuthenticationPolicy(
  pa: PeerAuthentication,
  inputs: AmbientInputs,
): Authorization | undefined {
  const root = inputs.settings.rootNamespace;
  return convertPeerAuthentication(
    pa,
    namespacePeerAuthentication(pa.metadata.namespace ?? '', inputs),
    namespacePeerAuthentication(root, inputs),
    root,
  );
}

/**
 * Which PeerAuthentication-derived policies a workload references (istiod's
 * `convertedSelectorPeerAuthentications`): the static STRICT policy when the effective mode is
 * STRICT, and/or the converted port-level policy of the oldest selecting workload policy.
 */
export function peerAuthenticationPolicyNames(
  namespace: string,
  labels: Readonly<Record<string, string>> | undefined,
  inputs: AmbientInputs,
): string[] {
  const root = inputs.settings.rootNamespace;
  let meshCfg: PeerAuthentication | undefined;
  let nsCfg: PeerAuthentication | undefined;
  let workloadCfg: PeerAuthentication | undefined;
  const consider = (pa: PeerAuthentication) => {
    if (!hasEntries(pa.spec?.selector?.matchLabels)) {
      if (pa.metadata.namespace === root) {
        if (!meshCfg || older(pa, meshCfg)) meshCfg = pa;
      } else if (!nsCfg || older(pa, nsCfg)) {
        nsCfg = pa;
      }
    } else if (pa.metadata.namespace !== root) {
      if (!workloadCfg || older(pa, workloadCfg)) workloadCfg = pa;
    }
  };
  if (namespace !== root) {
    for (const pa of inputs.peerAuthentications(root)) if (isSelectorless(pa)) consider(pa);
  }
  for (const pa of inputs.peerAuthentications(namespace)) {
    if (namespace === root && isSelectorless(pa)) {
      consider(pa);
      continue;
    }
    const sel = pa.spec?.selector;
    // No selector, or an empty one, selects every workload of the namespace.
    if (!sel || !hasEntries(sel.matchLabels) || selectsNonEmpty(sel.matchLabels, labels)) consider(pa);
  }

  let strict = false;
  let portPolicy: string | undefined;
  if (meshCfg) strict = modeOf(meshCfg.spec?.mtls) === 'STRICT';
  if (nsCfg && modeOf(nsCfg.spec?.mtls) !== 'UNSET') strict = modeOf(nsCfg.spec?.mtls) === 'STRICT';
  if (workloadCfg) {
    const w: PeerAuthentication = workloadCfg;
    const mode = modeOf(w.spec?.mtls);
    if (mode === 'STRICT') strict = true;
    if (mode === 'PERMISSIVE' || mode === 'DISABLE') strict = false;
    const portModes = Object.values(w.spec?.portLevelMtls ?? {}).map(modeOf);
    const converted = `${w.metadata.namespace}/${CONVERTED_PEER_AUTHENTICATION_PREFIX}${w.metadata.name}`;
    if (w.spec?.portLevelMtls) {
      if (mode === 'STRICT') {
        if (portModes.some((m) => m === 'PERMISSIVE' || m === 'DISABLE')) {
          portPolicy = converted;
          strict = false;
        }
      } else if (mode === 'PERMISSIVE' || mode === 'DISABLE') {
        if (portModes.includes('STRICT')) portPolicy = converted;
      } else if (strict) {
        if (portModes.includes('PERMISSIVE')) {
          portPolicy = converted;
          strict = false;
        }
      } else if (portModes.includes('STRICT')) {
        portPolicy = converted;
      }
    }
  }
  const out = new Set<string>();
  if (strict) out.add(`${root}/${STATIC_STRICT_POLICY_NAME}`);
  if (portPolicy) out.add(portPolicy);
  return [...out].sort();
}

/**
 * The `authorization_policies` of a workload: selector-scoped AuthorizationPolicies of its own
 * namespace and the root namespace whose (non-empty) selector matches its labels, sorted, then the
 * PeerAuthentication-derived names. Namespace- and mesh-scoped policies are not listed: ztunnel
 * applies those by scope.
 */
export function workloadPolicyNames(
  namespace: string,
  labels: Readonly<Record<string, string>> | undefined,
  inputs: AmbientInputs,
): string[] {
  const names: string[] = [];
  const root = inputs.settings.rootNamespace;
  const scan = (ns: string) => {
    for (const ap of inputs.selecting('AuthorizationPolicy', ns, labels ?? {})) {
      if (!isZtunnelPolicy(ap, inputs.settings)) continue;
      names.push(`${ns}/${ap.metadata.name}`);
    }
  };
  scan(namespace);
  if (namespace !== root) scan(root);
  names.sort();
  return names.concat(peerAuthenticationPolicyNames(namespace, labels, inputs));
}

import { formatPrincipal, type Identity } from '../identity/identity.ts';
import type { Authorization, RbacMatch, ServiceAccountMatch, StringMatch } from './authorization.ts';
import { cidrContains, parseIp } from './ip-address.ts';
import type { ProxyState } from './proxy-state.ts';
import type { Workload } from './workload.ts';

/** What L4 authorization sees of a connection (ztunnel `rbac::Connection` plus the destination). */
export interface Connection {
  /** The peer's verified SPIFFE identity; absent for plaintext (inbound passthrough). */
  readonly srcIdentity?: Identity;
  readonly srcIp: string;
  readonly dstIp: string;
  readonly dstPort: number;
  /** The workload being connected to; its namespace and selector policies decide the set. */
  readonly dstWorkload: Workload;
}

/** Why a connection was allowed or denied. */
export type RbacReason = 'explicitly-denied' | 'no-allow-policies' | 'allow-matched' | 'none-allowed';

export interface RbacDryRunMatch {
  readonly policy: string;
  readonly action: Authorization['action'];
}

/** The outcome of {@link assertRbac}, for the access log and the policy-change re-check. */
export interface RbacDecision {
  readonly allowed: boolean;
  readonly reason: RbacReason;
  /** The deciding policy (`ns/name`) for `explicitly-denied` and `allow-matched`. */
  readonly policy?: string;
  /** Upstream's wording: "explicitly denied by: ns/name", "allow policies exist, but none allowed". */
  readonly message: string;
  /** Dry-run policies that matched; logged, never enforced. */
  readonly dryRunMatches: readonly RbacDryRunMatch[];
  /** Selector policies the workload names but the store lacks (skipped, as ztunnel does). */
  readonly missingPolicies: readonly string[];
}

/** A connection prepared for matching: identity strings and IP bytes computed once. */
interface PreparedConnection {
  readonly identity: Identity | undefined;
  /** Principal without `spiffe://`; undefined without identity, so nothing but `not_*` matches. */
  readonly principal: string | undefined;
  /** The source namespace, `""` without identity (ztunnel matches namespaces against `""`). */
  readonly namespace: string;
  readonly srcIp: Uint8Array | undefined;
  readonly dstIp: Uint8Array | undefined;
  readonly dstPort: number;
}

function prepare(conn: Omit<Connection, 'dstWorkload'>): PreparedConnection {
  return {
    identity: conn.srcIdentity,
    principal: conn.srcIdentity === undefined ? undefined : formatPrincipal(conn.srcIdentity),
    namespace: conn.srcIdentity?.namespace ?? '',
    srcIp: parseIp(conn.srcIp),
    dstIp: parseIp(conn.dstIp),
    dstPort: conn.dstPort,
  };
}

/** StringMatch semantics; `presence` means any non-empty value. */
export function stringMatches(m: StringMatch, value: string): boolean {
  switch (m.kind) {
    case 'exact':
      return value === m.value;
    case 'prefix':
      return value.startsWith(m.value);
    case 'suffix':
      return value.endsWith(m.value);
    case 'presence':
      return value !== '';
  }
}

function serviceAccountMatches(m: ServiceAccountMatch, identity: Identity | undefined): boolean {
  return (
    identity !== undefined &&
    identity.namespace === m.namespace &&
    identity.serviceAccount === m.serviceAccount
  );
}

// A field with values matches when any does; a `not_` field matches when none does; an absent
// field does not constrain.
function field<T>(positive: readonly T[], negative: readonly T[], test: (t: T) => boolean): boolean {
  if (positive.length > 0 && !positive.some(test)) return false;
  return negative.length === 0 || !negative.some(test);
}

function isEmptyMatch(m: RbacMatch): boolean {
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
    m.notServiceAccounts.length === 0
  );
}

function matchMatches(m: RbacMatch, c: PreparedConnection): boolean {
  // An empty match never matches (ztunnel `rbac.rs`): istiod leaves one behind when it strips
  // L7-only attributes, and such a clause must not turn into "match everything".
  if (isEmptyMatch(m)) return false;
  const src = c.srcIp;
  const dst = c.dstIp;
  return (
    field(m.destinationIps, m.notDestinationIps, (cidr) => dst !== undefined && cidrContains(cidr, dst)) &&
    field(m.sourceIps, m.notSourceIps, (cidr) => src !== undefined && cidrContains(cidr, src)) &&
    field(m.destinationPorts, m.notDestinationPorts, (p) => p === c.dstPort) &&
    field(m.serviceAccounts, m.notServiceAccounts, (sa) => serviceAccountMatches(sa, c.identity)) &&
    field(m.principals, m.notPrincipals, (s) => c.principal !== undefined && stringMatches(s, c.principal)) &&
    field(m.namespaces, m.notNamespaces, (s) => stringMatches(s, c.namespace))
  );
}

function policyMatchesPrepared(policy: Authorization, c: PreparedConnection): boolean {
  // Rules are OR-ed; a rule's clauses are AND-ed (a clause with no matches is satisfied, as in
  // ztunnel); a clause's matches are OR-ed. A policy without rules never matches.
  return policy.rules.some((rule) =>
    rule.every((clause) => clause.length === 0 || clause.some((m) => matchMatches(m, c))),
  );
}

/** Whether one policy's rules match the connection, ignoring its action and dry-run flag. */
export function policyMatches(policy: Authorization, conn: Omit<Connection, 'dstWorkload'>): boolean {
  return policyMatchesPrepared(policy, prepare(conn));
}

/**
 * Evaluates a set of policies in ztunnel's order (spec §3.6): dry-run policies are matched and
 * reported only; then any matching DENY denies; with no ALLOW policy the connection is allowed;
 * a matching ALLOW allows; otherwise it is denied.
 */
export function evaluateRbac(
  policies: readonly Authorization[],
  conn: Omit<Connection, 'dstWorkload'>,
  missingPolicies: readonly string[] = [],
): RbacDecision {
  const c = prepare(conn);
  const dryRunMatches: RbacDryRunMatch[] = [];
  const allow: Authorization[] = [];
  const deny: Authorization[] = [];
  for (const p of policies) {
    if (p.dryRun) {
      if (policyMatchesPrepared(p, c)) dryRunMatches.push({ policy: p.key, action: p.action });
    } else if (p.action === 'Deny') deny.push(p);
    else allow.push(p);
  }
  const base = { dryRunMatches, missingPolicies };
  for (const p of deny) {
    if (policyMatchesPrepared(p, c)) {
      return {
        ...base,
        allowed: false,
        reason: 'explicitly-denied',
        policy: p.key,
        message: `explicitly denied by: ${p.key}`,
      };
    }
  }
  if (allow.length === 0) {
    return { ...base, allowed: true, reason: 'no-allow-policies', message: 'no allow policies, allow' };
  }
  for (const p of allow) {
    if (policyMatchesPrepared(p, c)) {
      return {
        ...base,
        allowed: true,
        reason: 'allow-matched',
        policy: p.key,
        message: `allowed by: ${p.key}`,
      };
    }
  }
  return {
    ...base,
    allowed: false,
    reason: 'none-allowed',
    message: 'allow policies exist, but none allowed',
  };
}

/**
 * L4 authorization of a connection to `conn.dstWorkload` (ztunnel `assert_rbac`): collects the
 * workload's namespace, global and selector policies from the state and evaluates them.
 */
export function assertRbac(state: ProxyState, conn: Connection): RbacDecision {
  const { policies, missing } = state.policiesForWorkload(conn.dstWorkload);
  return evaluateRbac(policies, conn, missing);
}

import {
  Action,
  type Authorization as PbAuthorization,
  type Match as PbMatch,
  type Address as PbSecurityAddress,
  type ServiceAccountMatch as PbServiceAccountMatch,
  type StringMatch as PbStringMatch,
  Scope,
} from '@ambient/common/gen/istio/security/authorization_pb';
import { ModelError } from './errors.ts';
import { type Cidr, makeCidr } from './ip-address.ts';
import { checkPort, ipFromBytes, unknownEnum } from './workload.ts';

/** `Scope`, in ztunnel's spelling; decides how a policy is associated with workloads (spec §3.5). */
export type AuthorizationScope = 'Global' | 'Namespace' | 'WorkloadSelector';
export type AuthorizationAction = 'Allow' | 'Deny';

/** `StringMatch`; `presence` matches any non-empty value. */
export type StringMatch =
  | { readonly kind: 'exact'; readonly value: string }
  | { readonly kind: 'prefix'; readonly value: string }
  | { readonly kind: 'suffix'; readonly value: string }
  | { readonly kind: 'presence' };

export interface ServiceAccountMatch {
  readonly namespace: string;
  readonly serviceAccount: string;
}

/**
 * One `Match`: within a field the values are OR-ed, the fields present are AND-ed, and a
 * `not*` field matches when none of its values do. A match with no field set never matches.
 */
export interface RbacMatch {
  readonly namespaces: readonly StringMatch[];
  readonly notNamespaces: readonly StringMatch[];
  readonly principals: readonly StringMatch[];
  readonly notPrincipals: readonly StringMatch[];
  readonly sourceIps: readonly Cidr[];
  readonly notSourceIps: readonly Cidr[];
  readonly destinationIps: readonly Cidr[];
  readonly notDestinationIps: readonly Cidr[];
  readonly destinationPorts: readonly number[];
  readonly notDestinationPorts: readonly number[];
  readonly serviceAccounts: readonly ServiceAccountMatch[];
  readonly notServiceAccounts: readonly ServiceAccountMatch[];
}

/** A clause: its matches are OR-ed. */
export type RbacClause = readonly RbacMatch[];
/** A rule: its clauses are AND-ed. */
export type RbacRule = readonly RbacClause[];

/** An L4 authorization policy (spec §3.4). Rules are OR-ed; no rules means it never matches. */
export interface Authorization {
  readonly name: string;
  readonly namespace: string;
  /** `namespace/name`: the xDS resource name and store key. */
  readonly key: string;
  readonly scope: AuthorizationScope;
  readonly action: AuthorizationAction;
  readonly rules: readonly RbacRule[];
  /** Evaluated and reported, never enforced. */
  readonly dryRun: boolean;
}

/** `namespace/name`. */
export function policyKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

function scopeFromProto(v: Scope, owner: string): AuthorizationScope {
  switch (v) {
    case Scope.GLOBAL:
      return 'Global';
    case Scope.NAMESPACE:
      return 'Namespace';
    case Scope.WORKLOAD_SELECTOR:
      return 'WorkloadSelector';
    default:
      throw unknownEnum('scope', v, owner);
  }
}

function actionFromProto(v: Action, owner: string): AuthorizationAction {
  switch (v) {
    case Action.ALLOW:
      return 'Allow';
    case Action.DENY:
      return 'Deny';
    default:
      throw unknownEnum('action', v, owner);
  }
}

function stringMatchFromProto(pb: PbStringMatch, field: string): StringMatch {
  switch (pb.matchType.case) {
    case 'exact':
    case 'prefix':
    case 'suffix':
      return Object.freeze({ kind: pb.matchType.case, value: pb.matchType.value });
    case 'presence':
      return Object.freeze({ kind: 'presence' });
    default:
      // ztunnel drops these, which silently widens the match (an emptied `principals` matches
      // everyone); refusing the policy is the safer reading.
      throw new ModelError('EMPTY_STRING_MATCH', `${field} has a StringMatch with no match type`);
  }
}

function cidrFromProto(pb: PbSecurityAddress, field: string): Cidr {
  const ip = ipFromBytes(pb.address, field);
  const cidr = makeCidr(pb.address, pb.length);
  if (cidr === undefined) {
    throw new ModelError(
      'INVALID_CIDR',
      `${field} has prefix length ${pb.length}, longer than ${pb.address.length * 8} for ${ip}`,
    );
  }
  return cidr;
}

function serviceAccountFromProto(pb: PbServiceAccountMatch): ServiceAccountMatch {
  return Object.freeze({ namespace: pb.namespace, serviceAccount: pb.serviceAccount });
}

function matchFromProto(pb: PbMatch, field: string): RbacMatch {
  const strings = (list: readonly PbStringMatch[], name: string) =>
    Object.freeze(list.map((m, i) => stringMatchFromProto(m, `${field}.${name}[${i}]`)));
  const cidrs = (list: readonly PbSecurityAddress[], name: string) =>
    Object.freeze(list.map((a, i) => cidrFromProto(a, `${field}.${name}[${i}]`)));
  const ports = (list: readonly number[], name: string) =>
    Object.freeze(list.map((p, i) => checkPort(p, `${field}.${name}[${i}]`)));
  return Object.freeze({
    namespaces: strings(pb.namespaces, 'namespaces'),
    notNamespaces: strings(pb.notNamespaces, 'not_namespaces'),
    principals: strings(pb.principals, 'principals'),
    notPrincipals: strings(pb.notPrincipals, 'not_principals'),
    sourceIps: cidrs(pb.sourceIps, 'source_ips'),
    notSourceIps: cidrs(pb.notSourceIps, 'not_source_ips'),
    destinationIps: cidrs(pb.destinationIps, 'destination_ips'),
    notDestinationIps: cidrs(pb.notDestinationIps, 'not_destination_ips'),
    destinationPorts: ports(pb.destinationPorts, 'destination_ports'),
    notDestinationPorts: ports(pb.notDestinationPorts, 'not_destination_ports'),
    serviceAccounts: Object.freeze(pb.serviceAccounts.map(serviceAccountFromProto)),
    notServiceAccounts: Object.freeze(pb.notServiceAccounts.map(serviceAccountFromProto)),
  });
}

/**
 * Converts a WDS Authorization (ztunnel `TryFrom<XdsRbac> for Authorization`). Unlike ztunnel,
 * an invalid address or prefix anywhere rejects the whole policy instead of dropping the entry
 * (reliability-and-security checklist 20): a dropped entry would change what the policy means.
 */
export function authorizationFromProto(pb: PbAuthorization): Authorization {
  if (pb.name === '') {
    throw new ModelError(
      'MISSING_NAME',
      `authorization policy in namespace ${JSON.stringify(pb.namespace)} has no name`,
    );
  }
  if (pb.namespace === '') {
    throw new ModelError(
      'MISSING_NAMESPACE',
      `authorization policy ${JSON.stringify(pb.name)} has no namespace`,
    );
  }
  const key = policyKey(pb.namespace, pb.name);
  const owner = `authorization policy ${key}`;
  const rules = pb.rules.map((rule, r) =>
    Object.freeze(
      rule.clauses.map((clause, c) =>
        Object.freeze(
          clause.matches.map((m, i) => matchFromProto(m, `${owner} rules[${r}].clauses[${c}].matches[${i}]`)),
        ),
      ),
    ),
  );
  return Object.freeze({
    name: pb.name,
    namespace: pb.namespace,
    key,
    scope: scopeFromProto(pb.scope, owner),
    action: actionFromProto(pb.action, owner),
    rules: Object.freeze(rules),
    dryRun: pb.dryRun,
  });
}

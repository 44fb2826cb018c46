import { byKeys, matchesFold } from './compare.ts';
import type { ZcDump, ZcPolicy } from './dump.ts';
import { formatTable } from './tabwriter.ts';

export interface PolicyFilter {
  readonly namespace?: string;
}

/** The policies that pass the filter, sorted by namespace and name (the `-o json|yaml` view). */
export function selectPolicies(dump: ZcDump, filter: PolicyFilter = {}): ZcPolicy[] {
  return dump.policies
    .filter((p) => matchesFold(p.namespace, filter.namespace))
    .sort(
      byKeys(
        (p) => p.namespace,
        (p) => p.name,
      ),
    );
}

/**
 * istioctl's policy summary: NAMESPACE POLICY NAME ACTION SCOPE. (Recent istioctl adds HITS and
 * MISSES when ztunnel reports per-policy stats; ztunnel here reports none, so they are left out.)
 */
export function policyTable(dump: ZcDump, filter: PolicyFilter = {}): string {
  return formatTable([
    ['NAMESPACE', 'POLICY NAME', 'ACTION', 'SCOPE'],
    ...selectPolicies(dump, filter).map((p) => [p.namespace, p.name, p.action, p.scope]),
  ]);
}

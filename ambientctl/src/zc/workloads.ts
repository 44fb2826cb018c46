import { byKeys, matchesFold } from './compare.ts';
import type { ZcDump, ZcWorkload } from './dump.ts';
import { formatTable } from './tabwriter.ts';
import { waypointName } from './waypoints.ts';

/** `zc workloads` filters (istioctl's `--workload-namespace`, `--workload-node`, `--address`). */
export interface WorkloadFilter {
  readonly namespace?: string;
  readonly node?: string;
  readonly address?: string;
}

function matches(w: ZcWorkload, f: WorkloadFilter): boolean {
  if (!matchesFold(w.namespace, f.namespace)) return false;
  if (f.address && !w.workloadIps.some((ip) => ip.toLowerCase() === f.address?.toLowerCase())) return false;
  return matchesFold(w.node, f.node);
}

/** The workloads that pass the filter, in the dump's order (the `-o json|yaml` view). */
export function selectWorkloads(dump: ZcDump, filter: WorkloadFilter = {}): ZcWorkload[] {
  return dump.workloads.filter((w) => matches(w, filter));
}

/** istioctl's workload summary: NAMESPACE POD NAME ADDRESS NODE WAYPOINT PROTOCOL. */
export function workloadTable(dump: ZcDump, filter: WorkloadFilter = {}): string {
  const rows = selectWorkloads(dump, filter).sort(
    byKeys(
      (w) => `${w.namespace}.${w.name}`,
      (w) => w.node,
    ),
  );
  return formatTable([
    ['NAMESPACE', 'POD NAME', 'ADDRESS', 'NODE', 'WAYPOINT', 'PROTOCOL'],
    ...rows.map((w) => [
      w.namespace,
      w.name,
      w.workloadIps.length > 0 ? w.workloadIps.join(',') : w.hostname,
      w.node,
      waypointName(w.waypoint, dump.services),
      w.protocol,
    ]),
  ]);
}

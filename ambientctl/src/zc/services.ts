import { byKeys, matchesFold } from './compare.ts';
import type { ZcDump, ZcService } from './dump.ts';
import { formatTable } from './tabwriter.ts';
import { waypointName } from './waypoints.ts';

export interface ServiceFilter {
  readonly namespace?: string;
}

const order = byKeys<ZcService>(
  (s) => s.namespace,
  (s) => s.name,
  (s) => s.hostname,
);

/** The services that pass the filter, sorted as istioctl sorts them (the `-o json|yaml` view). */
export function selectServices(dump: ZcDump, filter: ServiceFilter = {}): ZcService[] {
  return dump.services.filter((s) => matchesFold(s.namespace, filter.namespace)).sort(order);
}

/** The VIP without its network: `/10.96.0.10` → `10.96.0.10`, `net/10.0.0.0/16` → `10.0.0.0/16`. */
function vipAddress(vip: string): string {
  const cut = vip.indexOf('/');
  return cut < 0 ? '' : vip.slice(cut + 1);
}

/**
 * istioctl's service summary: NAMESPACE SERVICE NAME SERVICE VIP WAYPOINT ENDPOINTS, where
 * ENDPOINTS is `healthy/all` and an endpoint is healthy when its workload is in the dump with
 * status Healthy.
 */
export function serviceTable(dump: ZcDump, filter: ServiceFilter = {}): string {
  const status = new Map(dump.workloads.map((w) => [w.uid, w.status]));
  return formatTable([
    ['NAMESPACE', 'SERVICE NAME', 'SERVICE VIP', 'WAYPOINT', 'ENDPOINTS'],
    ...selectServices(dump, filter).map((s) => {
      const healthy = s.endpoints.filter((e) => status.get(e.workloadUid) === 'Healthy').length;
      return [
        s.namespace,
        s.name,
        s.vips.map(vipAddress).join(','),
        waypointName(s.waypoint, dump.services),
        `${healthy}/${s.endpoints.length}`,
      ];
    }),
  ]);
}

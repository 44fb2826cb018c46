import type { ZcGatewayAddress, ZcService } from './dump.ts';

/**
 * The WAYPOINT column: `None` without a waypoint; the name of the Service whose
 * `namespace/hostname` or one of whose VIPs is the waypoint's destination; `NA` when no Service
 * in the dump matches (istioctl's `waypointName`).
 */
export function waypointName(waypoint: ZcGatewayAddress | undefined, services: readonly ZcService[]): string {
  if (waypoint === undefined) return 'None';
  for (const svc of services) {
    if (`${svc.namespace}/${svc.hostname}` === waypoint.destination) return svc.name;
    if (svc.vips.includes(waypoint.destination)) return svc.name;
  }
  return 'NA';
}

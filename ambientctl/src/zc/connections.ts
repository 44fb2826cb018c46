import { byKeys } from './compare.ts';
import type { ZcDump, ZcWorkloadState } from './dump.ts';
import { formatTable } from './tabwriter.ts';

export interface ConnectionFilter {
  readonly namespace?: string;
  /** Only `inbound` or only `outbound` connections. */
  readonly direction?: 'inbound' | 'outbound';
  /** Print addresses as they are instead of `<workload>.<namespace>:port` / `<service host>:port`. */
  readonly raw?: boolean;
}

const order = byKeys<ZcWorkloadState>(
  (w) => w.info.namespace,
  (w) => w.info.name,
);

/** The in-pod proxies (with their connections) that pass the filter (the `-o json|yaml` view). */
export function selectConnections(dump: ZcDump, filter: ConnectionFilter = {}): ZcWorkloadState[] {
  return dump.workloadState
    .filter((w) => !filter.namespace || w.info.namespace === filter.namespace)
    .sort(order);
}

/** `ip:port` or `[v6]:port` split at the last colon. */
function splitHostPort(addr: string): [string, string] | undefined {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(addr);
  return m ? [m[1] ?? '', m[2] ?? ''] : undefined;
}

function joinHostPort(host: string, port: string): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * istioctl's connection summary: WORKLOAD DIRECTION LOCAL REMOTE REMOTE TARGET PROTOCOL. Addresses
 * are shown as the service hostname (by first VIP) or `pod.namespace` (by first workload IP) they
 * belong to, unless `raw`. Inbound rows show the REMOTE TARGET as ztunnel reports it.
 */
export function connectionTable(dump: ZcDump, filter: ConnectionFilter = {}): string {
  const serviceNames = new Map<string, string>();
  for (const s of dump.services) {
    const vip = s.vips[0] ?? '';
    const ip = vip.includes('/') ? vip.slice(vip.indexOf('/') + 1) : '';
    serviceNames.set(ip === '' ? 'None' : ip, s.hostname);
  }
  const workloadNames = new Map<string, string>();
  for (const w of dump.workloads) workloadNames.set(w.workloadIps[0] || 'None', `${w.name}.${w.namespace}`);
  const lookup = (addr: string): string => {
    if (filter.raw) return addr;
    const hp = splitHostPort(addr);
    if (hp === undefined) return addr;
    const name = serviceNames.get(hp[0]) ?? workloadNames.get(hp[0]);
    return name === undefined ? addr : joinHostPort(name, hp[1]);
  };
  const rows: string[][] = [['WORKLOAD', 'DIRECTION', 'LOCAL', 'REMOTE', 'REMOTE TARGET', 'PROTOCOL']];
  for (const w of selectConnections(dump, filter)) {
    const name = `${w.info.name}.${w.info.namespace}`;
    if (filter.direction !== 'outbound') {
      for (const c of w.inbound) {
        rows.push([name, 'Inbound', lookup(c.actualDst), lookup(c.src), c.originalDst, c.protocol]);
      }
    }
    if (filter.direction !== 'inbound') {
      for (const c of w.outbound) {
        rows.push([name, 'Outbound', lookup(c.src), lookup(c.actualDst), lookup(c.originalDst), c.protocol]);
      }
    }
  }
  return formatTable(rows);
}

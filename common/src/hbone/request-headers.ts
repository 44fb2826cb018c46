import { randomBytes } from 'node:crypto';
import { formatAuthority } from './authority.ts';

/** Header names HBONE peers send and read (spec §1.2). */
export const HBONE_HEADER = {
  BAGGAGE: 'baggage',
  FORWARDED: 'forwarded',
  TRACEPARENT: 'traceparent',
  FORWARDED_NETWORK: 'x-forwarded-network',
} as const;

/** The workload fields the `baggage` header describes (ztunnel `baggage.rs`). */
export interface BaggageSource {
  /** `Workload.cluster_id` → `k8s.cluster.name`. */
  readonly clusterId?: string;
  readonly namespace?: string;
  /** Lower-cased `WorkloadType`: `deployment`, `cronjob`, `pod` or `job`. */
  readonly workloadType?: string;
  /** `Workload.workload_name` → `k8s.<type>.name`. */
  readonly workloadName?: string;
  /** `canonical_name` → `service.name`. */
  readonly canonicalName?: string;
  /** `canonical_revision` → `service.version`. */
  readonly canonicalRevision?: string;
  readonly region?: string;
  readonly zone?: string;
}

const WORKLOAD_NAME_KEYS = ['k8s.deployment.name', 'k8s.cronjob.name', 'k8s.pod.name', 'k8s.job.name'];

/**
 * `k8s.cluster.name=…,k8s.namespace.name=…,k8s.<type>.name=…,service.name=…,service.version=…,
 * cloud.region=…,cloud.availability_zone=…` in ztunnel's order, empty values omitted.
 */
export function formatBaggage(b: BaggageSource): string {
  const workloadType = (b.workloadType || 'deployment').toLowerCase();
  const pairs: [string, string | undefined][] = [
    ['k8s.cluster.name', b.clusterId],
    ['k8s.namespace.name', b.namespace],
    [`k8s.${workloadType}.name`, b.workloadName],
    ['service.name', b.canonicalName],
    ['service.version', b.canonicalRevision],
    ['cloud.region', b.region],
    ['cloud.availability_zone', b.zone],
  ];
  return pairs
    .filter((p): p is [string, string] => p[1] !== undefined && p[1] !== '')
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

/**
 * Reads a `baggage` value the way ztunnel's parser does: comma-separated `key=value`, unknown keys
 * and empty values ignored, any of the four `k8s.*.name` spellings accepted as the workload name.
 */
export function parseBaggage(value: string | readonly string[] | undefined): BaggageSource {
  const out: { -readonly [K in keyof BaggageSource]: string } = {};
  const values = value === undefined ? [] : typeof value === 'string' ? [value] : value;
  for (const v of values) {
    for (const item of v.split(',')) {
      const eq = item.indexOf('=');
      if (eq < 0) continue;
      const key = item.slice(0, eq).trim();
      const val = item.slice(eq + 1).trim();
      if (val === '') continue;
      if (key === 'k8s.cluster.name') out.clusterId = val;
      else if (key === 'k8s.namespace.name') out.namespace = val;
      else if (WORKLOAD_NAME_KEYS.includes(key)) {
        out.workloadName = val;
        out.workloadType = key.split('.')[1] as string;
      } else if (key === 'service.name') out.canonicalName = val;
      else if (key === 'service.version') out.canonicalRevision = val;
      else if (key === 'cloud.region') out.region = val;
      else if (key === 'cloud.availability_zone') out.zone = val;
    }
  }
  return out;
}

/**
 * `for="<client ip:port>"`, plus `;host=<service FQDN>` when the connection was addressed to a
 * Service (IPv6 clients in brackets, as RFC 7239 requires inside the quotes).
 */
export function formatForwarded(
  client: { readonly address: string; readonly port: number },
  host?: string,
): string {
  const base = `for="${formatAuthority(client)}"`;
  return host ? `${base};host=${host}` : base;
}

/** The `host=` parameter of a `forwarded` value: the only part the server uses (spec §1.3). */
export function forwardedHost(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  // The first forwarded-element is the one the sending ztunnel wrote.
  const first = value.split(',')[0] ?? '';
  for (const pair of first.split(';')) {
    const eq = pair.indexOf('=');
    if (eq < 0) continue;
    if (pair.slice(0, eq).trim().toLowerCase() !== 'host') continue;
    const v = pair.slice(eq + 1).trim();
    const unquoted = v.startsWith('"') && v.endsWith('"') && v.length >= 2 ? v.slice(1, -1) : v;
    return unquoted === '' ? undefined : unquoted;
  }
  return undefined;
}

/** A fresh W3C `traceparent`, `00-<32 hex trace id>-<16 hex parent id>-00`, one per connection. */
export function newTraceparent(): string {
  const bytes = randomBytes(24);
  // All-zero ids are invalid per W3C Trace Context; the odds are 2^-64, but cost nothing to rule out.
  if (bytes.subarray(0, 16).every((b) => b === 0)) bytes[0] = 1;
  if (bytes.subarray(16).every((b) => b === 0)) bytes[16] = 1;
  return `00-${bytes.subarray(0, 16).toString('hex')}-${bytes.subarray(16).toString('hex')}-00`;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

/** The trace id of a valid version-00 `traceparent`, or undefined. */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  const m = traceparent === undefined ? null : TRACEPARENT.exec(traceparent);
  return m?.[1];
}

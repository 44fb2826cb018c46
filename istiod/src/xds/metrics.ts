import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/**
 * The xDS server's Prometheus metrics. The `type` label is the resource type's message name
 * (`istio.workload.Address`) for types the source serves and `other` for anything else, so a
 * client cannot grow the label set by subscribing to made-up type URLs.
 */
export class XdsMetrics {
  /** Streams that passed node parsing and authorization, by proxy type. */
  readonly connectedProxies: Gauge<'proxy_type'>;
  /** Responses written, initial ones included. */
  readonly pushes: Counter<'type'>;
  /** From the first change of a debounced batch to the response carrying it being written. */
  readonly pushTime: Histogram<'type'>;
  readonly nacks: Counter<'type'>;
  /** Resources (not removals) carried by the responses written. */
  readonly resourcesSent: Counter<'type'>;
  /** Names carried in `removed_resources`. */
  readonly resourcesRemoved: Counter<'type'>;
  /** Streams refused before serving: `unauthenticated`, `permission_denied`, `invalid_argument`, `unavailable`. */
  readonly rejectedStreams: Counter<'reason'>;

  constructor(registry: Registry) {
    // Get-or-create: two servers (or a restarted one in tests) may share one registry.
    const get = <M>(name: string, make: () => M): M =>
      (registry.getSingleMetric(name) as M | undefined) ?? make();
    this.connectedProxies = get(
      'istiod_xds_connected_proxies',
      () =>
        new Gauge({
          name: 'istiod_xds_connected_proxies',
          help: 'xDS streams from authorized proxies currently open',
          labelNames: ['proxy_type'],
          registers: [registry],
        }),
    );
    this.pushes = get(
      'istiod_xds_pushes_total',
      () =>
        new Counter({
          name: 'istiod_xds_pushes_total',
          help: 'xDS responses written, by resource type',
          labelNames: ['type'],
          registers: [registry],
        }),
    );
    this.pushTime = get(
      'istiod_xds_push_time_seconds',
      () =>
        new Histogram({
          name: 'istiod_xds_push_time_seconds',
          help: 'Time from the first change of a debounced batch to the response carrying it being written',
          labelNames: ['type'],
          buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30],
          registers: [registry],
        }),
    );
    this.nacks = get(
      'istiod_xds_nacks_total',
      () =>
        new Counter({
          name: 'istiod_xds_nacks_total',
          help: 'xDS responses rejected by proxies (requests carrying error_detail), by resource type',
          labelNames: ['type'],
          registers: [registry],
        }),
    );
    this.resourcesSent = get(
      'istiod_xds_resources_sent_total',
      () =>
        new Counter({
          name: 'istiod_xds_resources_sent_total',
          help: 'Resources carried by xDS responses, by resource type',
          labelNames: ['type'],
          registers: [registry],
        }),
    );
    this.resourcesRemoved = get(
      'istiod_xds_resources_removed_total',
      () =>
        new Counter({
          name: 'istiod_xds_resources_removed_total',
          help: 'Resource names carried in removed_resources, by resource type',
          labelNames: ['type'],
          registers: [registry],
        }),
    );
    this.rejectedStreams = get(
      'istiod_xds_rejected_streams_total',
      () =>
        new Counter({
          name: 'istiod_xds_rejected_streams_total',
          help: 'xDS streams refused before being served, by reason',
          labelNames: ['reason'],
          registers: [registry],
        }),
    );
  }
}

const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** The `type` label of a type URL: its message name when served, `other` otherwise. */
export function typeLabel(typeUrl: string, served: boolean): string {
  if (!served) return 'other';
  return typeUrl.startsWith(TYPE_URL_PREFIX) ? typeUrl.slice(TYPE_URL_PREFIX.length) : typeUrl;
}

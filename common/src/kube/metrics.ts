import { Counter, Gauge, type Registry } from 'prom-client';

/** Why a kind was listed again: its first list, 410 Gone, an error, or a retry of an absent kind. */
export type RelistReason = 'initial' | 'gone' | 'error' | 'absent';

/** Why a watch ended: the server closed it, it went silent, it failed, or its resourceVersion expired. */
export type WatchEndReason = 'closed' | 'silence' | 'error' | 'gone';

/** The list/watch metrics of the Kubernetes source. */
export interface KubeMetrics {
  readonly relists: Counter<'kind' | 'reason'>;
  readonly watchRestarts: Counter<'kind' | 'reason'>;
  readonly events: Counter<'kind' | 'type'>;
  readonly synced: Gauge<'kind'>;
  readonly absent: Gauge<'kind'>;
}

export function kubeMetrics(registry: Registry): KubeMetrics {
  return {
    relists: new Counter({
      name: 'istiod_kube_relists_total',
      help: 'Full lists of a kind: the first, and each after 410 Gone, an error, or an absent kind retry',
      labelNames: ['kind', 'reason'] as const,
      registers: [registry],
    }),
    watchRestarts: new Counter({
      name: 'istiod_kube_watch_restarts_total',
      help: 'Watches that ended and were re-established, by kind and why they ended',
      labelNames: ['kind', 'reason'] as const,
      registers: [registry],
    }),
    events: new Counter({
      name: 'istiod_kube_watch_events_total',
      help: 'Watch events received, by kind and event type',
      labelNames: ['kind', 'type'] as const,
      registers: [registry],
    }),
    synced: new Gauge({
      name: 'istiod_kube_synced',
      help: '1 once a kind has been listed (or found absent) at least once',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    absent: new Gauge({
      name: 'istiod_kube_kind_absent',
      help: '1 while the API server does not serve a kind (its CRD is not installed)',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
  };
}

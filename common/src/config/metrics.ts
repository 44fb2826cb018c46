import { Counter, type Registry } from 'prom-client';

/** The metrics every configuration source shares. */
export interface ConfigMetrics {
  /** Malformed objects refused, by kind and {@link RejectionCode} (plus the sources' own codes). */
  readonly rejected: Counter<'kind' | 'reason_code'>;
}

const byRegistry = new WeakMap<Registry, ConfigMetrics>();

/**
 * The shared config metrics registered in `registry`. Both sources may run in one process against
 * one registry, so the metrics are created once per registry and shared.
 */
export function configMetrics(registry: Registry): ConfigMetrics {
  let m = byRegistry.get(registry);
  if (!m) {
    m = {
      rejected: new Counter({
        name: 'istiod_config_rejected_total',
        help: 'Configuration objects refused as malformed, by kind and reason code',
        labelNames: ['kind', 'reason_code'] as const,
        registers: [registry],
      }),
    };
    byRegistry.set(registry, m);
  }
  return m;
}

/** The node agent's Prometheus metrics (port 15014), registered in the binary's own registry. */
import { Counter, Gauge, type Registry } from 'prom-client';

export interface AgentMetrics {
  readonly enrolledPods: Gauge;
  readonly enrollmentFailures: Counter<'reason'>;
  readonly zdsConnections: Gauge;
}

export function agentMetrics(registry: Registry): AgentMetrics {
  return {
    enrolledPods: new Gauge({
      name: 'istio_cni_enrolled_pods',
      help: 'Pods on this node enrolled in the ambient mesh',
      registers: [registry],
    }),
    enrollmentFailures: new Counter({
      name: 'istio_cni_enrollment_failures_total',
      help: 'Failed pod enrollment steps, by step (netns, redirection, zds, probe-set, annotation, lookup)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    zdsConnections: new Gauge({
      name: 'istio_cni_zds_connections',
      help: 'ztunnel connections to the ZDS socket',
      registers: [registry],
    }),
  };
}

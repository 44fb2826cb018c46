import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * The workload manager's metrics (`ztunnel:src/inpod/metrics.rs`). Upstream registers them
 * outside the `istio` sub-registry, so unlike the traffic metrics they carry no `istio_` prefix.
 */
export class WorkloadManagerMetrics {
  /** Pods whose proxy is running. */
  readonly activeProxyCount: Gauge;
  /** Pods whose proxy failed to start and is being retried. */
  readonly pendingProxyCount: Gauge;
  readonly proxiesStarted: Counter;
  readonly proxiesStopped: Counter;

  constructor(registry?: Registry) {
    const registers = registry ? [registry] : [];
    this.activeProxyCount = new Gauge({
      name: 'workload_manager_active_proxy_count',
      help: 'The total number current workloads with active proxies',
      registers,
    });
    this.pendingProxyCount = new Gauge({
      name: 'workload_manager_pending_proxy_count',
      help: 'The total number current workloads with pending proxies',
      registers,
    });
    this.proxiesStarted = new Counter({
      name: 'workload_manager_proxies_started_total',
      help: 'The total number of proxies that were started',
      registers,
    });
    this.proxiesStopped = new Counter({
      name: 'workload_manager_proxies_stopped_total',
      help: 'The total number of proxies that were stopped',
      registers,
    });
  }
}

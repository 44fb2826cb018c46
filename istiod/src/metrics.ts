import type { Logger } from '@ambient/common/log';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { HttpListener, sendText } from './admin/http-listener.ts';
import type { ListenConfig } from './config.ts';

/**
 * The one Prometheus registry of an istiod: every component registers its metrics here (config
 * sources, xDS, CA), never in prom-client's global registry, so two istiods in one test process
 * stay apart. It carries the process metrics (CPU, heap, event-loop lag, GC) and `istio_build`
 * (upstream's build-info gauge: component and tag).
 */
export function createMetricsRegistry(options: { readonly version: string }): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const build = new Gauge({
    name: 'istio_build',
    help: 'Istio component build info',
    labelNames: ['component', 'tag'] as const,
    registers: [registry],
  });
  build.set({ component: 'pilot', tag: options.version }, 1);
  return registry;
}

/** istiod's monitoring port (15014): `GET /metrics` in the Prometheus text format. */
export class MonitoringServer extends HttpListener {
  constructor(options: { readonly listen: ListenConfig; readonly registry: Registry; readonly log: Logger }) {
    const { registry } = options;
    super({
      name: 'monitoring-http',
      listen: options.listen,
      log: options.log,
      handler: async (req, res) => {
        const path = new URL(req.url ?? '/', 'http://istiod').pathname;
        if (path !== '/metrics' && path !== '/stats/prometheus') {
          sendText(res, 404, 'not found; metrics are at /metrics\n');
          return;
        }
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          res.setHeader('allow', 'GET, HEAD');
          sendText(res, 405, 'method not allowed\n');
          return;
        }
        const body = await registry.metrics();
        res.writeHead(200, {
          'content-type': registry.contentType,
          'content-length': Buffer.byteLength(body),
        });
        res.end(body);
      },
    });
  }
}

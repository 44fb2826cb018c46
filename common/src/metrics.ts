import type { IncomingMessage, ServerResponse } from 'node:http';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/**
 * The one Prometheus registry of a binary: every component registers its metrics here, never in
 * prom-client's global registry, so two binaries in one test process stay apart. It carries the
 * process metrics (CPU, heap, event-loop lag, GC) and `istio_build` (upstream's build-info gauge:
 * `component` as upstream names it, `pilot` or `ztunnel`, and the version as `tag`).
 */
export function createMetricsRegistry(options: {
  readonly component: string;
  readonly version: string;
}): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const build = new Gauge({
    name: 'istio_build',
    help: 'Istio component build info',
    labelNames: ['component', 'tag'] as const,
    registers: [registry],
  });
  build.set({ component: options.component, tag: options.version }, 1);
  return registry;
}

/** Answers a scrape with the registry in the Prometheus text format (headers only for HEAD). */
export async function sendMetrics(
  req: IncomingMessage,
  res: ServerResponse,
  registry: Registry,
): Promise<void> {
  const body = await registry.metrics();
  res.writeHead(200, {
    'content-type': registry.contentType,
    'content-length': Buffer.byteLength(body),
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

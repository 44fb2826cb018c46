import { HttpEndpoint, sendText } from '@ambient/common/http-endpoint';
import type { Logger } from '@ambient/common/log';
import { sendMetrics } from '@ambient/common/metrics';
import type { Registry } from 'prom-client';
import type { ListenConfig } from './config.ts';

/** istiod's monitoring port (15014): `GET /metrics` in the Prometheus text format. */
export class MonitoringServer extends HttpEndpoint {
  constructor(options: { readonly listen: ListenConfig; readonly registry: Registry; readonly log: Logger }) {
    const { registry } = options;
    super({
      name: 'monitoring-http',
      listen: options.listen,
      log: options.log,
      handler: async (req, res, url) => {
        if (url.pathname !== '/metrics' && url.pathname !== '/stats/prometheus') {
          sendText(res, 404, 'not found; metrics are at /metrics\n');
          return;
        }
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          res.setHeader('allow', 'GET, HEAD');
          sendText(res, 405, 'method not allowed\n');
          return;
        }
        await sendMetrics(req, res, registry);
      },
    });
  }
}

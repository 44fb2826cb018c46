import { sendText } from '@ambient/common/http-endpoint';
import type { Readiness } from '@ambient/common/lifecycle';
import type { Logger } from '@ambient/common/log';
import { ZtunnelHttpEndpoint } from './admin.ts';
import type { ListenConfig } from './config.ts';

/**
 * The named tasks ztunnel's readiness waits for (`ztunnel:src/readiness.rs`). The xDS client adds
 * one per subscribed type (`xds Address`, `xds Authorization`), the ZDS client `workload proxy
 * manager` while disconnected or before the snapshot, and the workload manager one per pod whose
 * proxy is pending.
 */
export const READINESS_TASKS = {
  /** The first local-config document is applied (local-config mode). */
  localConfig: 'local config',
  /** Registered when a stop begins, so the probe fails while draining. */
  shuttingDown: 'shutting down',
} as const;

/**
 * The readiness server on :15021 (`ztunnel:src/readiness/server.rs`): `GET /healthz/ready` is 200
 * once no task is pending, else 503 naming what is pending. The chart's readiness probe reads it.
 */
export class ReadinessServer extends ZtunnelHttpEndpoint {
  constructor(options: {
    readonly listen: ListenConfig;
    readonly readiness: Readiness;
    readonly log: Logger;
  }) {
    const { readiness } = options;
    super({
      name: 'readiness',
      listen: options.listen,
      log: options.log,
      handler: (req, res, url) => {
        if (url.pathname !== '/healthz/ready') {
          sendText(res, 404, 'not found; readiness is at /healthz/ready\n');
          return;
        }
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          res.setHeader('allow', 'GET, HEAD');
          sendText(res, 405, 'method not allowed\n');
          return;
        }
        const pending = readiness.pending();
        if (pending.length === 0) sendText(res, 200, 'ready\n');
        else sendText(res, 503, `not ready, pending: ${pending.join(', ')}\n`);
      },
    });
  }
}

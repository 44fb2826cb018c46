/**
 * `/healthz` and `/readyz` on port 8000 (spec §6.4). Live while the process serves; ready once the
 * plugin is installed, the config source synced, the startup reconcile done and the plugin and ZDS
 * sockets are listening. The body names what is still pending.
 */
import { HttpEndpoint, sendText } from '@ambient/common/http-endpoint';
import type { Readiness } from '@ambient/common/lifecycle';
import type { Logger } from '@ambient/common/log';

export function healthEndpoint(options: {
  readonly bindAddress: string;
  readonly port: number;
  readonly readiness: Readiness;
  readonly log: Logger;
}): HttpEndpoint {
  return new HttpEndpoint({
    name: 'cni-health',
    label: 'the istio-cni health server',
    listen: { bindAddress: options.bindAddress, port: options.port },
    log: options.log,
    handler: (_req, res, url) => {
      if (url.pathname === '/healthz') return sendText(res, 200, 'ok\n');
      if (url.pathname === '/readyz') {
        const pending = options.readiness.pending();
        return pending.length === 0
          ? sendText(res, 200, 'ready\n')
          : sendText(res, 503, `not ready: ${pending.join(', ')}\n`);
      }
      sendText(res, 404, 'not found\n');
    },
  });
}

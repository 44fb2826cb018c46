import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { HttpEndpoint } from './http-endpoint.ts';
import { Logging } from './log.ts';
import { createMetricsRegistry, sendMetrics } from './metrics.ts';

describe('createMetricsRegistry', () => {
  it('carries istio_build and the process metrics, apart from other registries', async () => {
    const a = createMetricsRegistry({ component: 'pilot', version: '1.2.3' });
    const b = createMetricsRegistry({ component: 'ztunnel', version: '4.5.6' });
    const text = await a.metrics();
    assert.match(text, /^istio_build\{component="pilot",tag="1\.2\.3"\} 1$/m);
    assert.match(text, /^process_cpu_user_seconds_total /m);
    assert.doesNotMatch(text, /ztunnel/);
    assert.match(await b.metrics(), /^istio_build\{component="ztunnel",tag="4\.5\.6"\} 1$/m);
  });
});

describe('sendMetrics', () => {
  it('answers GET with the Prometheus text and HEAD with headers only', async () => {
    const registry = createMetricsRegistry({ component: 'pilot', version: '1' });
    const endpoint = new HttpEndpoint({
      name: 'monitoring',
      listen: { bindAddress: '127.0.0.1', port: 0 },
      log: new Logging({ destination: new PassThrough() }).logger('test'),
      handler: (req, res) => sendMetrics(req, res, registry),
    });
    await endpoint.start();
    try {
      const get = await fetch(`http://127.0.0.1:${endpoint.port}/metrics`);
      assert.equal(get.headers.get('content-type'), registry.contentType);
      assert.match(await get.text(), /istio_build\{component="pilot",tag="1"\} 1/);
      const head = await fetch(`http://127.0.0.1:${endpoint.port}/metrics`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.ok(Number(head.headers.get('content-length')) > 0);
      assert.equal(await head.text(), '');
    } finally {
      await endpoint.stop({ mode: 'immediate', force: AbortSignal.abort(), deadline: Date.now() });
    }
  });
});

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { HttpEndpoint, HttpEndpointError, readBody, sendJson, sendText } from './http-endpoint.ts';
import { Logging } from './log.ts';

const log = new Logging({ destination: new PassThrough() }).logger('test');
const stopNow = () => ({ mode: 'immediate' as const, force: AbortSignal.abort(), deadline: Date.now() });

describe('HttpEndpoint', () => {
  it('routes requests with the parsed URL, and replies in JSON and text', async () => {
    const endpoint = new HttpEndpoint({
      name: 'debug',
      listen: { bindAddress: '127.0.0.1', port: 0 },
      log,
      handler: async (req, res, url) => {
        if (url.pathname === '/json') sendJson(res, 200, { n: 1n, m: new Map([['a', 1]]), s: new Set([2]) });
        else if (url.pathname === '/echo') sendText(res, 200, await readBody(req));
        else if (url.pathname === '/boom') throw new Error('boom');
        else sendText(res, 404, `no ${url.searchParams.get('q')}\n`);
      },
    });
    assert.throws(
      () => endpoint.port,
      (e: unknown) => e instanceof HttpEndpointError && e.code === 'NOT_STARTED',
    );
    await endpoint.start();
    try {
      const base = `http://127.0.0.1:${endpoint.port}`;
      const json = await fetch(`${base}/json`);
      assert.equal(json.headers.get('content-type'), 'application/json; charset=utf-8');
      assert.deepEqual(await json.json(), { n: '1', m: { a: 1 }, s: [2] });
      const echo = await fetch(`${base}/echo`, { method: 'POST', body: 'hello' });
      assert.equal(await echo.text(), 'hello');
      const missing = await fetch(`${base}/x?q=y`);
      assert.equal(missing.status, 404);
      assert.equal(await missing.text(), 'no y\n');
      const boom = await fetch(`${base}/boom`);
      assert.equal(boom.status, 500);
      assert.equal(await boom.text(), 'internal error\n');
    } finally {
      await endpoint.stop(stopNow());
    }
    await assert.rejects(fetch(`http://127.0.0.1:${endpoint.port}/json`));
  });

  it('fails to start with HTTP_LISTEN_FAILED naming the server and the address in use', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    const endpoint = new HttpEndpoint({
      name: 'stats',
      label: 'the stats server',
      listen: { bindAddress: '127.0.0.1', port },
      log,
      handler: () => {},
    });
    try {
      await assert.rejects(
        endpoint.start(),
        (e: unknown) =>
          e instanceof HttpEndpointError &&
          e.code === 'HTTP_LISTEN_FAILED' &&
          e.message.startsWith(`the stats server cannot listen on 127.0.0.1:${port}: `),
      );
      // Stopping an endpoint that never listened is a no-op.
      await endpoint.stop(stopNow());
    } finally {
      taken.close();
    }
  });
});

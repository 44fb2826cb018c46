import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Logging } from '@ambient/common/log';
import { credentials, ServerCredentials, status } from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { XdsError } from '../src/xds/errors.ts';
import { XdsServer } from '../src/xds/server.ts';
import { CertificateAuthenticator, ZTUNNEL_CALLER } from './support/authenticators.ts';
import { DeltaXdsClient } from './support/delta-xds-client.ts';
import { MemoryResourceSource } from './support/memory-resource-source.ts';
import { issueTestCertificates } from './support/test-certificates.ts';
import { ADDRESS_TYPE, podAddress } from './support/wds-fixtures.ts';
import { startHarness, waitFor, ztunnelNode } from './support/xds-harness.ts';

function sourceWithPods(n: number): MemoryResourceSource {
  const source = new MemoryResourceSource([ADDRESS_TYPE]);
  for (let i = 0; i < n; i++) {
    const p = podAddress('default', `p${i}`, `10.1.0.${i + 1}`);
    source.apply(ADDRESS_TYPE, { set: { [p.uid]: p.value } });
  }
  return source;
}

describe('XdsServer lifecycle', () => {
  it('drains: keeps streams until the deadline, then ends them UNAVAILABLE and refuses new ones', async () => {
    const h = await startHarness(sourceWithPods(2));
    const c = h.client();
    c.subscribe(ADDRESS_TYPE);
    c.ack(await c.next());
    await waitFor('the connection', () => h.server.connectionCount === 1);

    const started = Date.now();
    const stopped = h.server.stop({
      mode: 'graceful',
      force: AbortSignal.timeout(300),
      deadline: started + 300,
    });
    const s = await c.status;
    const ended = Date.now() - started;
    assert.equal(s.code, status.UNAVAILABLE);
    assert.match(s.details, /shutting down/);
    assert.ok(ended >= 250, `the stream was kept until the deadline (ended after ${ended} ms)`);
    await stopped;
    assert.equal(h.server.connectionCount, 0);
    assert.equal(h.server.debugState().draining, true);

    const late = new DeltaXdsClient({ address: h.address, ...ztunnelNode() });
    late.subscribe(ADDRESS_TYPE);
    assert.equal((await late.status).code, status.UNAVAILABLE);
    late.close();
    await h.close();
  });

  it('stops at once when no stream is left to drain', async () => {
    const h = await startHarness(sourceWithPods(1));
    const c = h.client();
    c.subscribe(ADDRESS_TYPE);
    await c.next();
    c.close();
    await waitFor('the disconnect', () => h.server.connectionCount === 0);
    const started = Date.now();
    await h.server.stop({ mode: 'graceful', force: AbortSignal.timeout(5000), deadline: started + 5000 });
    assert.ok(
      Date.now() - started < 2000,
      'a graceful stop with nothing open does not wait for the deadline',
    );
    await h.close();
  });

  it('refuses requests above the receive limit', async () => {
    const h = await startHarness(sourceWithPods(1), { maxReceiveMessageBytes: 4096 });
    const c = h.client();
    const versions: Record<string, string> = {};
    for (let i = 0; i < 200; i++) versions[`Kubernetes//Pod/default/pod-${i}`] = 'v1';
    c.subscribe(ADDRESS_TYPE, { initialVersions: versions });
    assert.equal((await c.status).code, status.RESOURCE_EXHAUSTED);
    await h.close();
  });

  it('merges pushes for a proxy that stops reading, and catches it up when it reads again', async (t) => {
    const source = new MemoryResourceSource([ADDRESS_TYPE]);
    const big = (i: number): Uint8Array => new Uint8Array(256 * 1024).fill(i + 1);
    source.apply(ADDRESS_TYPE, { set: { big: big(0) } });
    const h = await startHarness(source, { debounce: { quietMs: 1000, maxDelayMs: 5000 } });
    const c = h.client();
    c.subscribe(ADDRESS_TYPE);
    c.ack(await c.next());
    await waitFor('the connection', () => h.server.connectionCount === 1);
    c.pause();
    const pushes = 40;
    for (let i = 1; i <= pushes; i++) {
      source.apply(ADDRESS_TYPE, { set: { big: big(i), [`small-${i}`]: new Uint8Array([i]) } });
      h.server.flush();
      await new Promise((r) => setImmediate(r));
    }
    const sent = h.server.debugState().connections[0]?.types[0]?.responsesSent ?? 0;
    assert.ok(sent < pushes + 1, `pushes were deferred while the proxy did not read (${sent} responses)`);
    c.resume();
    const finalVersion = source.get(ADDRESS_TYPE, 'big')?.version;
    await waitFor(
      'the catch-up',
      () => c.received.some((r) => r.resources.some((x) => x.name === 'big' && x.version === finalVersion)),
      10_000,
    );
    // Every small resource arrived despite the merging.
    const names = new Set(c.received.flatMap((r) => r.resources.map((x) => x.name)));
    for (let i = 1; i <= pushes; i++) assert.ok(names.has(`small-${i}`), `small-${i} arrived`);
    assert.ok(c.received.length < pushes + 1, `fewer responses than pushes (${c.received.length})`);
    t.diagnostic(
      `${pushes} pushes while paused: ${sent} written before resuming, ${c.received.length} received`,
    );
    await h.close();
  });

  it('authenticates a proxy by its client certificate over TLS', async (t) => {
    let certs: ReturnType<typeof issueTestCertificates>;
    try {
      certs = issueTestCertificates(String(ZTUNNEL_CALLER.identity));
    } catch (err) {
      t.skip(`openssl could not issue test certificates: ${String(err)}`);
      return;
    }
    const server = new XdsServer({
      source: sourceWithPods(1),
      registry: new Registry(),
      log: new Logging({ levels: 'off' }).logger('xds'),
      authenticator: new CertificateAuthenticator(),
      listeners: [
        {
          host: '127.0.0.1',
          port: 0,
          credentials: ServerCredentials.createSsl(
            certs.ca,
            [{ private_key: certs.serverKey, cert_chain: certs.serverCert }],
            true,
          ),
          authenticate: true,
        },
      ],
    });
    await server.start();
    const address = `127.0.0.1:${server.addresses()[0]?.port}`;
    const c = new DeltaXdsClient({
      address,
      ...ztunnelNode(),
      credentials: credentials.createSsl(certs.ca, certs.clientKey, certs.clientCert),
    });
    try {
      c.subscribe(ADDRESS_TYPE);
      assert.equal((await c.next()).resources.length, 1);
      assert.equal(server.debugState().connections[0]?.identity, ZTUNNEL_CALLER.identity);
    } finally {
      c.close();
      const force = new AbortController();
      force.abort();
      await server.stop({ mode: 'immediate', force: force.signal, deadline: Date.now() });
    }
  });

  it('rejects contradictory options', () => {
    assert.throws(
      () =>
        new XdsServer({
          source: sourceWithPods(0),
          registry: new Registry(),
          listeners: [
            {
              host: '127.0.0.1',
              port: 0,
              credentials: ServerCredentials.createInsecure(),
              authenticate: true,
            },
          ],
        }),
      (err: unknown) => err instanceof XdsError && err.code === 'OPTIONS_INVALID',
    );
    assert.throws(
      () => new XdsServer({ source: sourceWithPods(0), registry: new Registry(), listeners: [] }),
      (err: unknown) => err instanceof XdsError && err.code === 'OPTIONS_INVALID',
    );
  });

  it('reports a port it cannot bind', async () => {
    const h = await startHarness(sourceWithPods(0));
    const port = h.server.addresses()[0]?.port ?? 0;
    const other = new XdsServer({
      source: sourceWithPods(0),
      registry: new Registry(),
      log: new Logging({ levels: 'off' }).logger('xds'),
      listeners: [
        { host: '127.0.0.1', port, credentials: ServerCredentials.createInsecure(), authenticate: false },
      ],
    });
    await assert.rejects(
      other.start(),
      (err: unknown) => err instanceof XdsError && err.code === 'BIND_FAILED',
    );
    await h.close();
  });
});

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import * as tls from 'node:tls';
import { openTunnel } from '@ambient/common/hbone/client';
import { HboneError } from '@ambient/common/hbone/errors';
import { formatIdentity } from '@ambient/common/identity';
import { hboneClientTlsOptions } from '@ambient/common/tls/secure-context';
import type { WorkloadProxy } from '../src/proxy/index.ts';
import { closed, payload, readToEnd, sha256, type TestApp, TestMesh } from './proxy-harness.ts';

// One mesh for the file: client pod A and server pod B, each with its own proxy and IP.
describe('HBONE between two workload proxies', () => {
  let mesh: TestMesh;
  let a: ReturnType<TestMesh['addPod']>;
  let b: ReturnType<TestMesh['addPod']>;
  let proxyA: WorkloadProxy;
  let echoApp: TestApp;
  const APP_PORT = 8080;

  before(async () => {
    mesh = await TestMesh.create({ subnet: 61 });
    a = mesh.addPod({ name: 'client', namespace: 'ns-a', serviceAccount: 'sa-client', host: 1 });
    b = mesh.addPod({
      name: 'server',
      namespace: 'ns-b',
      serviceAccount: 'sa-server',
      host: 2,
      workloadName: 'server-deploy',
      canonicalName: 'server-app',
    });
    proxyA = await mesh.startProxy(a);
    await mesh.startProxy(b);
    echoApp = await mesh.startApp(b.ip, APP_PORT);
  });
  after(() => mesh[Symbol.asyncDispose]());

  test('bytes arrive intact both ways; the app sees the client pod IP; both sides log the connection', async () => {
    const { data, sha256: sent } = payload(1024 * 1024);
    const client = await mesh.connect(a.ip, { ip: b.ip, port: APP_PORT });
    const reply = readToEnd(client);
    client.end(data);
    const echoed = await reply;
    assert.equal(echoed.length, data.length);
    assert.equal(sha256(echoed), sent, 'the echo must be byte-identical');
    // The inbound proxy connected to the app with the client pod's IP as source.
    assert.deepEqual(
      echoApp.peers.map((p) => p.ip),
      [a.ip],
    );

    const inbound = await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' &&
        l.direction === 'inbound' &&
        l['dst.hbone_addr'] === `${b.ip}:${APP_PORT}`,
    );
    const outbound = await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' &&
        l.direction === 'outbound' &&
        l['dst.hbone_addr'] === `${b.ip}:${APP_PORT}`,
    );
    // The server side knows the client by its certificate.
    assert.equal(inbound.level, 'info');
    assert.equal(inbound['src.identity'], formatIdentity(a.identity));
    assert.equal(inbound['src.workload'], 'client');
    assert.equal(inbound['src.namespace'], 'ns-a');
    assert.equal(inbound['dst.workload'], 'server');
    assert.equal(inbound['dst.namespace'], 'ns-b');
    assert.equal(inbound['dst.identity'], formatIdentity(b.identity));
    assert.equal(inbound['dst.addr'], `${b.ip}:15008`);
    assert.match(String(inbound['src.addr']), new RegExp(`^${a.ip.replaceAll('.', '\\.')}:\\d+$`));
    assert.match(String(inbound.duration), /^\d+ms$/);
    // Inbound: received from the client = request bytes; sent = the echo.
    assert.equal(inbound.bytes_recv, data.length);
    assert.equal(inbound.bytes_sent, data.length);
    assert.equal(outbound['src.identity'], formatIdentity(a.identity));
    assert.equal(outbound['dst.addr'], `${b.ip}:15008`);
    assert.equal(outbound['dst.identity'], formatIdentity(b.identity));
    assert.equal(outbound.bytes_sent, data.length);
    assert.equal(outbound.bytes_recv, data.length);
    assert.equal(outbound.error, undefined);
  });

  test('half-close: the app sees EOF, then its reply still reaches the client (checklist 37)', async () => {
    const request = Buffer.from('request-then-FIN');
    let appSawEof = false;
    const app = await mesh.startApp(b.ip, APP_PORT + 1, (socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('end', () => {
        appSawEof = true;
        // Reply only after EOF, in two writes with a pause between: the path must stay open.
        socket.write(Buffer.concat([Buffer.from('got:'), ...chunks]));
        setTimeout(() => socket.end(Buffer.from(':done')), 50);
      });
    });
    const client = await mesh.connect(a.ip, app.address);
    const reply = readToEnd(client);
    client.write(request);
    client.end();
    assert.equal((await reply).toString(), `got:${request.toString()}:done`);
    assert.ok(appSawEof, 'the FIN must travel as END_STREAM and come out as a FIN');
  });

  test('the HBONE connection is pooled: more connections reuse it', async () => {
    const before = proxyA.inputs.pool.stats;
    for (let i = 0; i < 3; i++) {
      const client = await mesh.connect(a.ip, { ip: b.ip, port: APP_PORT });
      const reply = readToEnd(client);
      client.end(`ping-${i}`);
      assert.equal((await reply).toString(), `ping-${i}`);
    }
    const after = proxyA.inputs.pool.stats;
    assert.equal(after.connectionsCreated, before.connectionsCreated, 'no new HBONE connection');
    assert.equal(after.connectionsReused - before.connectionsReused, 3);
  });

  test('metrics: opened and closed per reporter, bytes flipped for reporter=source', async () => {
    const before = {
      srcRecv: await mesh.counter('istio_tcp_received_bytes_total', { reporter: 'source' }),
      srcSent: await mesh.counter('istio_tcp_sent_bytes_total', { reporter: 'source' }),
      dstRecv: await mesh.counter('istio_tcp_received_bytes_total', { reporter: 'destination' }),
      dstSent: await mesh.counter('istio_tcp_sent_bytes_total', { reporter: 'destination' }),
      closed: await mesh.counter('istio_tcp_connections_closed_total', { reporter: 'destination' }),
    };
    const app = await mesh.startApp(b.ip, APP_PORT + 2, (socket) => {
      socket.on('error', () => {});
      socket.resume();
      socket.on('end', () => socket.end(Buffer.alloc(300, 1)));
    });
    const client = await mesh.connect(a.ip, app.address);
    const reply = readToEnd(client);
    client.end(Buffer.alloc(1000, 2));
    assert.equal((await reply).length, 300);
    await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' &&
        l.direction === 'inbound' &&
        l['dst.hbone_addr'] === `${b.ip}:${APP_PORT + 2}`,
    );
    await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' &&
        l.direction === 'outbound' &&
        l['dst.hbone_addr'] === `${b.ip}:${APP_PORT + 2}`,
    );
    // received = downstream → upstream (the 1000-byte request) for both reporters.
    assert.equal(
      (await mesh.counter('istio_tcp_received_bytes_total', { reporter: 'source' })) - before.srcRecv,
      1000,
    );
    assert.equal(
      (await mesh.counter('istio_tcp_sent_bytes_total', { reporter: 'source' })) - before.srcSent,
      300,
    );
    assert.equal(
      (await mesh.counter('istio_tcp_received_bytes_total', { reporter: 'destination' })) - before.dstRecv,
      1000,
    );
    assert.equal(
      (await mesh.counter('istio_tcp_sent_bytes_total', { reporter: 'destination' })) - before.dstSent,
      300,
    );
    assert.equal(
      (await mesh.counter('istio_tcp_connections_closed_total', { reporter: 'destination' })) - before.closed,
      1,
    );
    // The full label set, as the destination reports it.
    const data = await mesh.registry.getSingleMetric('istio_tcp_connections_opened_total')?.get();
    const labels = data?.values.find((v) => v.labels.reporter === 'destination')?.labels;
    assert.deepEqual(labels, {
      reporter: 'destination',
      source_workload: 'client',
      source_canonical_service: 'client',
      source_canonical_revision: 'v1',
      source_workload_namespace: 'ns-a',
      source_principal: formatIdentity(a.identity),
      source_app: 'client',
      source_version: 'v1',
      source_cluster: 'Kubernetes',
      destination_service: 'unknown',
      destination_service_namespace: 'unknown',
      destination_service_name: 'unknown',
      destination_workload: 'server-deploy',
      destination_canonical_service: 'server-app',
      destination_canonical_revision: 'v1',
      destination_workload_namespace: 'ns-b',
      destination_principal: formatIdentity(b.identity),
      destination_app: 'server-app',
      destination_version: 'v1',
      destination_cluster: 'Kubernetes',
      request_protocol: 'tcp',
      response_flags: '-',
      connection_security_policy: 'mutual_tls',
    });
  });

  test('a CONNECT naming another IP than the connection is 400 "ip mismatch" (checklist 7)', async () => {
    const app = await mesh.startApp(a.ip, 9090);
    const hbone = await mesh.hboneClient(b, a.identity, a.ip);
    try {
      await assert.rejects(
        openTunnel(hbone.session, { target: `${a.ip}:9090` }),
        (err: unknown) => err instanceof HboneError && err.code === 'HBONE_STATUS' && err.status === 400,
      );
      const line = await mesh.waitForLine(
        (l) => l.msg === 'connection failed' && l.error_code === 'IP_MISMATCH',
      );
      assert.equal(line.error, `ip mismatch: ${b.ip} != ${a.ip}`);
      assert.equal(line.level, 'warn');
      assert.equal(line.direction, 'inbound');
      assert.equal(app.peers.length, 0, 'no upstream connection may be made');
    } finally {
      hbone.session.destroy();
    }
  });

  test('non-CONNECT and a bad authority are 400 with no upstream dial (checklist 9)', async () => {
    const app = await mesh.startApp(b.ip, 9091);
    const hbone = await mesh.hboneClient(b, a.identity, a.ip);
    try {
      const get = hbone.session.request({ ':method': 'GET', ':path': '/', ':authority': `${b.ip}:9091` });
      get.end();
      const [getHeaders] = (await once(get, 'response')) as [Record<string, unknown>];
      assert.equal(getHeaders[':status'], 400);
      for (const authority of ['foo', `${b.ip}:0`, `${b.ip}:99999`]) {
        const bad = hbone.session.request(
          { ':method': 'CONNECT', ':authority': authority },
          { endStream: false },
        );
        const [headers] = (await once(bad, 'response')) as [Record<string, unknown>];
        assert.equal(headers[':status'], 400, `authority ${authority}`);
        bad.close();
      }
      await mesh.waitForLine((l) => l.msg === 'connection failed' && l.error_code === 'NON_CONNECT_METHOD');
      await mesh.waitForLine((l) => l.msg === 'connection failed' && l.error_code === 'INVALID_AUTHORITY');
      assert.equal(app.peers.length, 0);
    } finally {
      hbone.session.destroy();
    }
  });

  test('self-calls are refused (checklist 8, in-process subset)', async () => {
    // Outbound to loopback on a ztunnel port.
    const toLoopback = await mesh.connect(a.ip, { ip: '127.0.0.1', port: 15008 });
    await closed(toLoopback);
    await mesh.waitForLine(
      (l) =>
        l.msg === 'connection failed' && l.error_code === 'SELF_CALL' && l['dst.addr'] === '127.0.0.1:15008',
    );
    // Straight to the outbound listener, not redirected: the original destination is itself.
    const direct = await mesh.connect(a.ip, { ip: a.ip, port: 15001 });
    await closed(direct);
    await mesh.waitForLine(
      (l) =>
        l.msg === 'connection failed' && l.error_code === 'SELF_CALL' && l['dst.addr'] === `${a.ip}:15001`,
    );
    // Inbound plaintext to the pod's own 15006.
    const plain = await mesh.connect(a.ip, { ip: b.ip, port: 15006 }, { via: b.ip, listenerPort: 15006 });
    await closed(plain);
    await mesh.waitForLine(
      (l) =>
        l.msg === 'connection failed' &&
        l.error_code === 'SELF_CALL' &&
        l.direction === 'inbound' &&
        l['dst.addr'] === `${b.ip}:15006`,
    );
    // HBONE whose target port is a ztunnel port.
    const hbone = await mesh.hboneClient(b, a.identity, a.ip);
    try {
      for (const port of [15001, 15006, 15008]) {
        await assert.rejects(
          openTunnel(hbone.session, { target: `${b.ip}:${port}` }),
          (err: unknown) => err instanceof HboneError && err.status === 503,
        );
      }
    } finally {
      hbone.session.destroy();
    }
  });

  test('the inbound listener presents a rotated certificate to new connections', async () => {
    // A bare TLS handshake: the serial of the certificate the listener presents.
    const serial = async (): Promise<string> => {
      const socket = tls.connect({
        ...hboneClientTlsOptions(await mesh.certificates.fetch(a.identity), [b.identity]),
        host: b.ip,
        port: 15008,
        localAddress: a.ip,
      } as tls.ConnectionOptions);
      try {
        await once(socket, 'secureConnect');
        return socket.getPeerX509Certificate()?.serialNumber ?? '';
      } finally {
        socket.destroy();
      }
    };
    const before = await serial();
    assert.equal(await serial(), before, 'an unchanged certificate is presented again');
    await mesh.certificates.rotate(b.identity);
    const after = await serial();
    assert.notEqual(after, before);
  });

  test('a pod unknown to WDS is refused after the wait, with UNKNOWN_SOURCE', async () => {
    const quick = await TestMesh.create({ subnet: 161, config: { workloadWaitTimeoutMs: 100 } });
    try {
      // A pod announced by ZDS that WDS never sent.
      const ghostHere = {
        spec: { name: 'ghost', namespace: 'ns-a', serviceAccount: 'sa-ghost', host: 9 },
        uid: 'Kubernetes//Pod/ns-a/ghost',
        ip: quick.ip(9),
        identity: a.identity,
      };
      await quick.startProxy(ghostHere);
      const client = await quick.connect(ghostHere.ip, { ip: quick.ip(2), port: 80 });
      const t0 = Date.now();
      await closed(client);
      assert.ok(Date.now() - t0 >= 90, 'the proxy waits for WDS before refusing');
      const line = await quick.waitForLine((l) => l.msg === 'connection failed');
      assert.equal(line.error_code, 'UNKNOWN_SOURCE');
    } finally {
      await quick[Symbol.asyncDispose]();
    }
  });
});

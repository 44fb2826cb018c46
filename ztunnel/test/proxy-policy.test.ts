import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { openTunnel } from '@ambient/common/hbone/client';
import { HboneError } from '@ambient/common/hbone/errors';
import { makeIdentity } from '@ambient/common/identity';
import {
  type Pod,
  principal,
  readToEnd,
  sec,
  type TestApp,
  TestMesh,
  TRUST_DOMAIN,
} from './proxy-harness.ts';

const APP_PORT = 8080;
const OTHER_PORT = 8081;

describe('L4 authorization at the inbound proxies', () => {
  let mesh: TestMesh;
  let client: Pod;
  let admin: Pod;
  let server: Pod;
  let app: TestApp;
  let otherApp: TestApp;
  const policies: string[] = [];

  before(async () => {
    mesh = await TestMesh.create({ subnet: 62 });
    client = mesh.addPod({ name: 'client', namespace: 'ns-a', serviceAccount: 'sa-client', host: 1 });
    admin = mesh.addPod({ name: 'admin', namespace: 'ns-admin', serviceAccount: 'sa-admin', host: 3 });
    server = mesh.addPod({
      name: 'server',
      namespace: 'ns-b',
      serviceAccount: 'sa-server',
      host: 2,
      // The static STRICT policy is selector-scoped: the workload names it.
      authorizationPolicies: ['istio-system/istio_converted_static_strict'],
    });
    await mesh.startProxy(client);
    await mesh.startProxy(admin);
    await mesh.startProxy(server);
    app = await mesh.startApp(server.ip, APP_PORT);
    otherApp = await mesh.startApp(server.ip, OTHER_PORT);
  });
  after(() => mesh[Symbol.asyncDispose]());
  beforeEach(() => {
    for (const key of policies.splice(0)) mesh.removePolicy(key);
  });

  function policy(init: Parameters<TestMesh['setPolicy']>[0]): string {
    const key = mesh.setPolicy(init);
    policies.push(key);
    return key;
  }

  /** Echo through the mesh from `from`; resolves with what came back. */
  async function roundTrip(from: Pod, port = APP_PORT): Promise<string> {
    const socket = await mesh.connect(from.ip, { ip: server.ip, port });
    const reply = readToEnd(socket);
    socket.end('hello');
    return (await reply).toString();
  }

  async function connectStatus(from: Pod, port = APP_PORT): Promise<number> {
    const hbone = await mesh.hboneClient(server, from.identity, from.ip);
    try {
      const tunnel = await openTunnel(hbone.session, { target: `${server.ip}:${port}` });
      tunnel.destroy();
      return 200;
    } catch (err) {
      if (err instanceof HboneError && err.status !== undefined) return err.status;
      throw err;
    } finally {
      hbone.session.destroy();
    }
  }

  test('ALLOW by principal: the named identity passes, any other gets 401 (checklist 15)', async () => {
    policy({
      name: 'allow-admin',
      namespace: 'ns-b',
      scope: sec.Scope.NAMESPACE,
      action: sec.Action.ALLOW,
      rules: [{ clauses: [{ matches: [{ principals: [principal(admin.identity)] }] }] }],
    });
    assert.equal(await roundTrip(admin), 'hello');
    assert.equal(await connectStatus(client), 401);
    assert.equal(await connectStatus(admin), 200);

    // Through the client's own proxy: the connection is closed and both sides say why.
    const before = await mesh.counter('istio_tcp_connections_closed_total', {
      reporter: 'destination',
      response_flags: 'DENY',
    });
    assert.equal(await roundTrip(client), '', 'a denied connection carries no data');
    const denied = await mesh.waitForLine(
      (l) => l.msg === 'connection complete' && l.direction === 'inbound' && l.error_code === 'POLICY_DENIED',
    );
    assert.equal(denied.level, 'error');
    assert.match(String(denied.error), /allow policies exist, but none allowed/);
    const refused = await mesh.waitForLine(
      (l) => l.msg === 'connection complete' && l.direction === 'outbound' && l.error_code === 'HBONE_STATUS',
    );
    assert.match(String(refused.error), /401/);
    assert.equal(
      (await mesh.counter('istio_tcp_connections_closed_total', {
        reporter: 'destination',
        response_flags: 'DENY',
      })) - before,
      1,
    );
    assert.ok(
      (await mesh.counter('istio_tcp_connections_failed_total', {
        reporter: 'source',
        response_flags: 'CONNECT',
      })) >= 1,
    );
  });

  test('DENY by namespace: 401 from that namespace only', async () => {
    policy({
      name: 'deny-ns-a',
      namespace: 'ns-b',
      scope: sec.Scope.NAMESPACE,
      action: sec.Action.DENY,
      rules: [
        { clauses: [{ matches: [{ namespaces: [{ matchType: { case: 'exact', value: 'ns-a' } }] }] }] },
      ],
    });
    assert.equal(await connectStatus(client), 401);
    assert.equal(await connectStatus(admin), 200);
  });

  test('ALLOW by destination port: the other port gets 401 and is never dialled', async () => {
    const dialsBefore = otherApp.peers.length;
    policy({
      name: 'allow-8080',
      namespace: 'ns-b',
      scope: sec.Scope.NAMESPACE,
      action: sec.Action.ALLOW,
      rules: [{ clauses: [{ matches: [{ destinationPorts: [APP_PORT] }] }] }],
    });
    assert.equal(await connectStatus(client, APP_PORT), 200);
    assert.equal(await connectStatus(client, OTHER_PORT), 401);
    assert.equal(otherApp.peers.length, dialsBefore);
  });

  test('STRICT: plaintext on 15006 is denied while HBONE passes (checklist 21 subset)', async () => {
    // Without STRICT, plaintext gets through and the app sees the client's IP.
    const plainOk = await mesh.connect(
      client.ip,
      { ip: server.ip, port: APP_PORT },
      { via: server.ip, listenerPort: 15006 },
    );
    const okReply = readToEnd(plainOk);
    plainOk.end('plain');
    assert.equal((await okReply).toString(), 'plain');
    assert.equal(app.peers.at(-1)?.ip, client.ip);
    await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' &&
        l.direction === 'inbound' &&
        l['dst.hbone_addr'] === undefined &&
        l['src.identity'] === undefined &&
        l.error === undefined,
    );

    policy({
      name: 'istio_converted_static_strict',
      namespace: 'istio-system',
      scope: sec.Scope.WORKLOAD_SELECTOR,
      action: sec.Action.DENY,
      rules: [
        { clauses: [{ matches: [{ notPrincipals: [{ matchType: { case: 'presence', value: {} } }] }] }] },
      ],
    });
    const plain = await mesh.connect(
      client.ip,
      { ip: server.ip, port: APP_PORT },
      { via: server.ip, listenerPort: 15006 },
    );
    const reply = readToEnd(plain);
    plain.end('plain');
    assert.equal((await reply).toString(), '', 'plaintext must be refused under STRICT');
    const line = await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' &&
        l.error_code === 'POLICY_DENIED' &&
        String(l.error).includes('istio-system/istio_converted_static_strict'),
    );
    assert.equal(line.direction, 'inbound');
    assert.equal(await roundTrip(client), 'hello', 'HBONE carries an identity and passes STRICT');
  });

  test('a policy change closes a live connection that is now denied (checklist 19)', async () => {
    const socket = await mesh.connect(client.ip, { ip: server.ip, port: APP_PORT });
    const received: Buffer[] = [];
    socket.on('data', (c: Buffer) => received.push(c));
    const ended = new Promise<void>((resolve) => {
      socket.once('end', () => resolve());
      socket.once('close', () => resolve());
    });
    socket.write('before');
    await waitFor(() => Buffer.concat(received).toString() === 'before');
    // An unrelated policy change leaves it alone.
    policy({
      name: 'allow-client',
      namespace: 'ns-b',
      scope: sec.Scope.NAMESPACE,
      action: sec.Action.ALLOW,
      rules: [{ clauses: [{ matches: [{ principals: [principal(client.identity)] }] }] }],
    });
    socket.write('-still');
    await waitFor(() => Buffer.concat(received).toString() === 'before-still');

    policy({
      name: 'deny-client',
      namespace: 'ns-b',
      scope: sec.Scope.NAMESPACE,
      action: sec.Action.DENY,
      rules: [{ clauses: [{ matches: [{ principals: [principal(client.identity)] }] }] }],
    });
    await ended;
    const line = await mesh.waitForLine(
      (l) => l.scope === 'proxy' && String(l.msg).includes('policy change'),
    );
    assert.equal(line.rbac, 'explicitly denied by: ns-b/deny-client');
    const access = await mesh.waitForLine(
      (l) => l.msg === 'connection complete' && l.error_code === 'POLICY_CHANGED',
    );
    assert.equal(access.direction, 'inbound');
    assert.equal(access.bytes_recv, 'before-still'.length);
    assert.equal(mesh.connectionManager.size, 0);
    socket.destroy();
  });

  test('identities from another trust domain never reach authorization', async () => {
    const foreign = makeIdentity('clusterset.local', 'ns-a', 'sa-client');
    assert.notEqual(foreign.trustDomain, TRUST_DOMAIN);
    await assert.rejects(mesh.hboneClient(server, foreign, client.ip));
    const line = await mesh.waitForLine((l) => l.msg === 'hbone connection rejected');
    assert.equal((line.err as { code?: string }).code, 'TRUST_DOMAIN_MISMATCH');
  });
});

async function waitFor(check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

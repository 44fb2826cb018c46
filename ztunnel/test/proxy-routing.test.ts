import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openTunnel } from '@ambient/common/hbone/client';
import { HboneError } from '@ambient/common/hbone/errors';
import { formatIdentity } from '@ambient/common/identity';
import { type Pod, readToEnd, TestMesh } from './proxy-harness.ts';

describe('outbound routes and inbound targets', () => {
  let mesh: TestMesh;
  let client: Pod;
  let server: Pod;
  let plain: Pod;
  let service: { hostname: string; vip: string };

  before(async () => {
    mesh = await TestMesh.create({ subnet: 68 });
    client = mesh.addPod({ name: 'client', namespace: 'ns', serviceAccount: 'client', host: 1 });
    server = mesh.addPod({
      name: 'server',
      namespace: 'ns',
      serviceAccount: 'server',
      host: 2,
      services: { 'ns/web.ns.svc.cluster.local': [[80, 8080]] },
    });
    plain = mesh.addPod({
      name: 'legacy',
      namespace: 'ns',
      serviceAccount: 'legacy',
      host: 3,
      protocol: 'TCP',
    });
    service = mesh.addService({ name: 'web', namespace: 'ns', vipHost: 100, ports: [[80, 8080]] });
    await mesh.startProxy(client);
    await mesh.startProxy(server);
    await mesh.startApp(server.ip, 8080);
    await mesh.startApp(plain.ip, 9000);
  });
  after(() => mesh[Symbol.asyncDispose]());

  async function roundTrip(destination: { ip: string; port: number }, text = 'ping'): Promise<string> {
    const socket = await mesh.connect(client.ip, destination);
    const reply = readToEnd(socket);
    socket.end(text);
    return (await reply).toString();
  }

  test('a service VIP is load-balanced to an endpoint over HBONE; both sides name the service', async () => {
    assert.equal(await roundTrip({ ip: service.vip, port: 80 }, 'via-vip'), 'via-vip');
    const out = await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' &&
        l.direction === 'outbound' &&
        l['dst.service'] === service.hostname,
    );
    assert.equal(out['dst.hbone_addr'], `${server.ip}:8080`, 'authority is the endpoint and its target port');
    assert.equal(out['dst.addr'], `${server.ip}:15008`);
    // The inbound side picks the service from `forwarded: host=`.
    const inbound = await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' && l.direction === 'inbound' && l['dst.service'] === service.hostname,
    );
    assert.equal(inbound['src.identity'], formatIdentity(client.identity));
  });

  test('a workload without HBONE gets plain TCP; an unknown destination is passed through', async () => {
    assert.equal(await roundTrip({ ip: plain.ip, port: 9000 }, 'legacy'), 'legacy');
    const tcp = await mesh.waitForLine(
      (l) => l.msg === 'connection complete' && l['dst.addr'] === `${plain.ip}:9000`,
    );
    assert.equal(tcp.direction, 'outbound');
    assert.equal(tcp['dst.workload'], 'legacy');
    assert.equal(tcp['src.identity'], undefined, 'no identity is claimed without mTLS');
    assert.equal(tcp['dst.hbone_addr'], undefined);

    const outside = mesh.ip(50);
    await mesh.startApp(outside, 9001);
    assert.equal(await roundTrip({ ip: outside, port: 9001 }, 'outside'), 'outside');
    const passthrough = await mesh.waitForLine(
      (l) => l.msg === 'connection complete' && l['dst.addr'] === `${outside}:9001`,
    );
    assert.equal(passthrough['dst.workload'], undefined);
    assert.ok(
      (await mesh.counter('istio_tcp_connections_closed_total', {
        reporter: 'source',
        connection_security_policy: 'unknown',
      })) >= 2,
    );
  });

  test('a service without a usable endpoint is refused early', async () => {
    const empty = mesh.addService({ name: 'empty', namespace: 'ns', vipHost: 101, ports: [[80, 8080]] });
    assert.equal(await roundTrip({ ip: empty.vip, port: 80 }), '');
    const line = await mesh.waitForLine(
      (l) => l.msg === 'connection failed' && l['dst.addr'] === `${empty.vip}:80`,
    );
    assert.equal(line.error_code, 'NO_HEALTHY_UPSTREAM');
  });

  test('a hostname authority resolves through the service to the target port; unknown names get 503', async () => {
    const hbone = await mesh.hboneClient(server, client.identity, client.ip);
    try {
      const tunnel = await openTunnel(hbone.session, { target: `${service.hostname}:80` });
      const reply = new Promise<string>((resolve) => {
        const chunks: Buffer[] = [];
        tunnel.on('data', (c: Buffer) => chunks.push(c));
        tunnel.on('end', () => resolve(Buffer.concat(chunks).toString()));
      });
      tunnel.end('by-name');
      assert.equal(await reply, 'by-name');
      await assert.rejects(
        openTunnel(hbone.session, { target: 'nope.ns.svc.cluster.local:80' }),
        (err: unknown) => err instanceof HboneError && err.status === 503,
      );
      await assert.rejects(
        openTunnel(hbone.session, { target: `${service.hostname}:81` }),
        (err: unknown) => err instanceof HboneError && err.status === 503,
      );
    } finally {
      hbone.session.destroy();
    }
  });

  test('a service waypoint gets the VIP as authority; its proxy accepts it, other VIPs are an ip mismatch', async () => {
    const waypoint = mesh.addPod({
      name: 'waypoint-svc',
      namespace: 'ns',
      serviceAccount: 'waypoint',
      host: 5,
    });
    const viaWaypoint = mesh.addService({
      name: 'reviews',
      namespace: 'ns',
      vipHost: 102,
      ports: [[80, 8080]],
      waypointIp: waypoint.ip,
    });
    await mesh.startProxy(waypoint);
    // The waypoint's "Envoy": whatever listens on the service port in the waypoint pod.
    const envoy = await mesh.startApp(waypoint.ip, 80);
    assert.equal(await roundTrip({ ip: viaWaypoint.vip, port: 80 }, 'to-waypoint'), 'to-waypoint');
    assert.equal(envoy.peers.at(-1)?.ip, client.ip);
    const out = await mesh.waitForLine(
      (l) =>
        l.msg === 'connection complete' &&
        l.direction === 'outbound' &&
        l['dst.hbone_addr'] === `${viaWaypoint.vip}:80`,
    );
    assert.equal(out['dst.addr'], `${waypoint.ip}:15008`);
    assert.equal(out['dst.identity'], formatIdentity(waypoint.identity));

    // The same waypoint is not attached to `web`: naming its VIP is an ip mismatch.
    const hbone = await mesh.hboneClient(waypoint, client.identity, client.ip);
    try {
      await assert.rejects(
        openTunnel(hbone.session, { target: `${service.vip}:80` }),
        (err: unknown) => err instanceof HboneError && err.status === 400,
      );
    } finally {
      hbone.session.destroy();
    }
    await mesh.waitForLine((l) => l.error === `ip mismatch: ${waypoint.ip} != ${service.vip}`);
  });

  test('a sandwiched waypoint gets a PROXY v2 header on its tunnel port, and any authority IP', async () => {
    const waypoint = mesh.addPod({
      name: 'waypoint',
      namespace: 'ns',
      serviceAccount: 'waypoint',
      host: 4,
      applicationTunnel: { proxy: true, port: 15088 },
    });
    await mesh.startProxy(waypoint);
    let header: Buffer | undefined;
    await mesh.startApp(waypoint.ip, 15088, (socket) => {
      socket.on('error', () => {});
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('end', () => {
        header = Buffer.concat(chunks);
        socket.end('ok');
      });
    });
    const hbone = await mesh.hboneClient(waypoint, client.identity, client.ip);
    try {
      // The authority is the service VIP, not the waypoint's IP: allowed with an app tunnel.
      const tunnel = await openTunnel(hbone.session, { target: `${service.vip}:80` });
      const reply = new Promise<string>((resolve) => {
        const chunks: Buffer[] = [];
        tunnel.on('data', (c: Buffer) => chunks.push(c));
        tunnel.on('end', () => resolve(Buffer.concat(chunks).toString()));
      });
      tunnel.end('payload');
      assert.equal(await reply, 'ok');
    } finally {
      hbone.session.destroy();
    }
    assert.ok(header !== undefined);
    const h = header as Buffer;
    assert.equal(h[13], 0x11, 'TCP over IPv4');
    const len = h.readUInt16BE(14);
    assert.equal([...h.subarray(16, 20)].join('.'), client.ip, 'source: the HBONE peer');
    assert.equal([...h.subarray(20, 24)].join('.'), service.vip, 'destination: the authority');
    assert.equal(h.readUInt16BE(26), 80);
    const tlv = h.subarray(28, 16 + len);
    assert.equal(tlv[0], 0xd0);
    assert.equal(tlv.subarray(3).toString(), formatIdentity(client.identity));
    assert.equal(h.subarray(16 + len).toString(), 'payload');
  });
});

/**
 * The data plane's delta xDS client (`@ambient/common/xds/client`) against the real istiod
 * XdsServer on 127.0.0.1, fed from an in-memory ResourceSource: full state, changes, partial NACK
 * and what it means for `initial_resource_versions`, reconnect backoff, readiness, TLS and auth.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { type Address, AddressSchema } from '@ambient/common/gen/istio/workload/workload_pb';
import { Readiness } from '@ambient/common/lifecycle';
import { Logging } from '@ambient/common/log';
import {
  rawXdsHandler,
  XDS_CLIENT_METRICS,
  XdsClient,
  type XdsClientEvents,
  type XdsClientOptions,
  type XdsReject,
  xdsHandler,
  ztunnelNode,
} from '@ambient/common/xds/client';
import { TYPE_URL } from '@ambient/common/xds/types';
import { ServerCredentials } from '@grpc/grpc-js';
import { Counter, Registry } from 'prom-client';
import type { XdsAuthenticator } from '../src/xds/authorize.ts';
import { XdsServer } from '../src/xds/server.ts';
import { TokenAuthenticator, ZTUNNEL_CALLER } from './support/authenticators.ts';
import { eventually } from './support/eventually.ts';
import { MemoryResourceSource } from './support/memory-resource-source.ts';
import { metricValue } from './support/metrics.ts';
import { issueTestCertificates } from './support/test-certificates.ts';
import { authorization, podAddress } from './support/wds-fixtures.ts';

const quietLogging = new Logging({ levels: 'off' });
const NODE = ztunnelNode({
  instanceIp: '10.0.0.1',
  podName: 'ztunnel-a',
  podNamespace: 'istio-system',
  nodeName: 'node-a',
  clusterId: 'Kubernetes',
});
// Bytes that are not an istio.workload.Address: field 1, length 127, then one byte.
const GARBAGE = Uint8Array.of(0x0a, 0x7f, 0x01);

/** A tiny in-memory WDS consumer, standing in for the ProxyStateUpdater. */
class AddressStore {
  readonly byName = new Map<string, Address>();
  readonly calls: { updates: string[]; removed: string[] }[] = [];

  handler() {
    return xdsHandler(TYPE_URL.ADDRESS, AddressSchema, (updates, removed) => {
      this.calls.push({ updates: updates.map((u) => u.name), removed: [...removed] });
      const rejects: XdsReject[] = [];
      for (const u of updates) {
        // A resource that decodes but that the model refuses (as the updater refuses a bad workload).
        if (u.name.includes('refuse')) rejects.push({ name: u.name, reason: 'refused by the test model' });
        else this.byName.set(u.name, u.resource);
      }
      for (const name of removed) this.byName.delete(name);
      return rejects;
    });
  }
}

/** An XdsServer on 127.0.0.1 that can be stopped and started again on the same port. */
class Istiod {
  readonly source: MemoryResourceSource;
  readonly #options: {
    authenticator?: XdsAuthenticator;
    credentials?: () => ServerCredentials;
  };
  server: XdsServer | undefined;
  port = 0;

  constructor(
    source: MemoryResourceSource,
    options: { authenticator?: XdsAuthenticator; credentials?: () => ServerCredentials } = {},
  ) {
    this.source = source;
    this.#options = options;
  }

  async start(): Promise<void> {
    const server = new XdsServer({
      source: this.source,
      registry: new Registry(),
      log: quietLogging.logger('xds'),
      debounce: { quietMs: 10, maxDelayMs: 100 },
      ...(this.#options.authenticator && { authenticator: this.#options.authenticator }),
      listeners: [
        {
          host: '127.0.0.1',
          port: this.port,
          credentials: this.#options.credentials?.() ?? ServerCredentials.createInsecure(),
          authenticate: this.#options.authenticator !== undefined,
        },
      ],
    });
    await server.start();
    this.server = server;
    this.port = server.addresses()[0]?.port ?? 0;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const force = new AbortController();
    force.abort();
    await server?.stop({ mode: 'immediate', force: force.signal, deadline: Date.now() });
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }
}

function recordEvents(client: XdsClient) {
  const events = {
    connected: [] as XdsClientEvents['connected'][0][],
    ack: [] as XdsClientEvents['ack'][0][],
    nack: [] as XdsClientEvents['nack'][0][],
    terminated: [] as XdsClientEvents['terminated'][0][],
  };
  client.on('connected', (e) => events.connected.push(e));
  client.on('ack', (e) => events.ack.push(e));
  client.on('nack', (e) => events.nack.push(e));
  client.on('terminated', (e) => events.terminated.push(e));
  return events;
}

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function newClient(
  options: Partial<XdsClientOptions> & Pick<XdsClientOptions, 'address' | 'handlers'>,
): XdsClient {
  const client = new XdsClient({
    clusterId: 'Kubernetes',
    node: NODE,
    log: quietLogging.logger('xds'),
    ...options,
  });
  cleanups.push(() => client.stop());
  return client;
}

describe('XdsClient against istiod', () => {
  test('gets the full state, applies changes, and readiness waits for both types', async () => {
    const source = new MemoryResourceSource([TYPE_URL.ADDRESS, TYPE_URL.AUTHORIZATION]);
    const a = podAddress('default', 'a', '10.1.0.1');
    const b = podAddress('default', 'b', '10.1.0.2');
    const allow = authorization('default', 'allow');
    source.apply(TYPE_URL.ADDRESS, { set: { [a.uid]: a.value, [b.uid]: b.value } });
    source.apply(TYPE_URL.AUTHORIZATION, { set: { [allow.name]: allow.value } });
    const istiod = new Istiod(source);
    await istiod.start();
    cleanups.push(() => istiod.stop());

    const addresses = new AddressStore();
    const policies = new Map<string, Uint8Array>();
    const readiness = new Readiness();
    const registry = new Registry();
    const metrics = {
      connectionTerminations: new Counter({
        ...XDS_CLIENT_METRICS.connectionTerminations,
        registers: [registry],
      }),
      messages: new Counter({ ...XDS_CLIENT_METRICS.messages, registers: [registry] }),
      messageBytes: new Counter({ ...XDS_CLIENT_METRICS.messageBytes, registers: [registry] }),
    };
    const client = newClient({
      address: istiod.address,
      readiness,
      metrics,
      handlers: [
        addresses.handler(),
        rawXdsHandler(TYPE_URL.AUTHORIZATION, (updates, removed) => {
          for (const u of updates) policies.set(u.name, u.resource.value);
          for (const r of removed) policies.delete(r);
          return [];
        }),
      ],
    });
    assert.deepEqual(readiness.pending(), ['xds istio.security.Authorization', 'xds istio.workload.Address']);
    client.start();
    await readiness.whenReady(AbortSignal.timeout(5000));
    assert.deepEqual([...addresses.byName.keys()].sort(), [a.uid, b.uid]);
    assert.deepEqual([...policies.keys()], [allow.name]);
    assert.deepEqual(Buffer.from(policies.get(allow.name) ?? []), Buffer.from(allow.value));
    const workload = addresses.byName.get(a.uid)?.type;
    assert.equal(workload?.case === 'workload' && workload.value.name, 'a');

    // A change, an addition and a removal arrive as one delta.
    const a2 = podAddress('default', 'a', '10.1.0.9');
    const c = podAddress('default', 'c', '10.1.0.3');
    source.apply(TYPE_URL.ADDRESS, { set: { [a2.uid]: a2.value, [c.uid]: c.value }, remove: [b.uid] });
    istiod.server?.flush();
    await eventually('the delta to apply', () => addresses.byName.has(c.uid) && !addresses.byName.has(b.uid));
    const moved = addresses.byName.get(a.uid)?.type;
    assert.deepEqual(moved?.case === 'workload' && [...(moved.value.addresses[0] ?? [])], [10, 1, 0, 9]);
    assert.deepEqual(addresses.calls.at(-1), { updates: [a.uid, c.uid].sort(), removed: [b.uid] });

    // The versions held are exactly istiod's.
    assert.deepEqual(
      Object.fromEntries(client.held(TYPE_URL.ADDRESS)),
      Object.fromEntries([a.uid, c.uid].map((n) => [n, source.get(TYPE_URL.ADDRESS, n)?.version])),
    );
    assert.ok((await metricValue(registry, 'istio_xds_message_total', { url: TYPE_URL.ADDRESS })) >= 2);
    assert.ok((await metricValue(registry, 'istio_xds_message_bytes_total', { url: TYPE_URL.ADDRESS })) > 0);
    const conn = istiod.server?.debugState().connections[0];
    assert.equal(conn?.nodeId, NODE.id);
    assert.equal(conn?.proxyType, 'ztunnel');
  });

  test('one bad resource is NACKed while the rest apply, and is left out of initial_resource_versions', async () => {
    const source = new MemoryResourceSource([TYPE_URL.ADDRESS, TYPE_URL.AUTHORIZATION]);
    const good1 = podAddress('default', 'good1', '10.2.0.1');
    const good2 = podAddress('default', 'good2', '10.2.0.2');
    const refused = podAddress('default', 'refuse-me', '10.2.0.3');
    source.apply(TYPE_URL.ADDRESS, {
      set: { [good1.uid]: good1.value, [good2.uid]: good2.value, bad: GARBAGE, [refused.uid]: refused.value },
    });
    const istiod = new Istiod(source);
    await istiod.start();
    cleanups.push(() => istiod.stop());

    const addresses = new AddressStore();
    const readiness = new Readiness();
    const client = newClient({
      address: istiod.address,
      readiness,
      handlers: [addresses.handler(), rawXdsHandler(TYPE_URL.AUTHORIZATION, () => [])],
    });
    const events = recordEvents(client);
    client.start();
    await eventually('the first address response', () => events.nack.length === 1);

    assert.deepEqual([...addresses.byName.keys()].sort(), [good1.uid, good2.uid]);
    assert.deepEqual(addresses.calls[0]?.updates.sort(), [good1.uid, good2.uid, refused.uid].sort());
    const nack = events.nack[0];
    assert.equal(nack?.typeUrl, TYPE_URL.ADDRESS);
    assert.deepEqual(nack?.rejects.map((r) => r.name).sort(), ['bad', refused.uid].sort());
    assert.deepEqual([...client.held(TYPE_URL.ADDRESS).keys()].sort(), [good1.uid, good2.uid]);
    // istiod received the NACK with the per-resource reasons.
    await eventually('istiod to record the NACK', () =>
      Boolean(
        istiod.server?.debugState().connections[0]?.types.find((t) => t.typeUrl === TYPE_URL.ADDRESS)
          ?.lastNack,
      ),
    );
    const lastNack = istiod.server
      ?.debugState()
      .connections[0]?.types.find((t) => t.typeUrl === TYPE_URL.ADDRESS)?.lastNack;
    assert.match(lastNack?.message ?? '', /bad: cannot decode payload/);
    assert.match(lastNack?.message ?? '', /refuse-me: refused by the test model/);
    // The authorization type was ACKed; the address type's first response was not (ztunnel
    // readiness waits for an ACK of each type).
    // (The Authorization response may still be on its way when the Address NACK is seen.)
    await eventually(
      'the authorization type to be ACKed',
      () => readiness.pending().join() === 'xds istio.workload.Address',
    );

    // istiod goes away; meanwhile good2 is deleted. After the reconnect istiod re-sends only what
    // the client did not hold (the two refused resources) and the removal of good2.
    await istiod.stop();
    source.apply(TYPE_URL.ADDRESS, { remove: [good2.uid] });
    await istiod.start();
    await eventually('the reconnect', () => events.nack.length === 2, 8000);
    const afterReconnect = addresses.calls.at(-1);
    assert.deepEqual(afterReconnect, { updates: [refused.uid], removed: [good2.uid] });
    assert.deepEqual(events.nack[1]?.rejects.map((r) => r.name).sort(), ['bad', refused.uid].sort());
    assert.deepEqual([...addresses.byName.keys()], [good1.uid], 'good1 was kept across the reconnect');

    // Fixing the resources ACKs the type and the client becomes ready.
    const fixed = podAddress('default', 'bad', '10.2.0.4');
    source.apply(TYPE_URL.ADDRESS, { set: { bad: fixed.value }, remove: [refused.uid] });
    istiod.server?.flush();
    await readiness.whenReady(AbortSignal.timeout(5000));
    assert.deepEqual([...client.held(TYPE_URL.ADDRESS).keys()].sort(), ['bad', good1.uid].sort());
  });

  test('a ztunnel started while istiod is unreachable stays not ready until both types are ACKed', async () => {
    const source = new MemoryResourceSource([TYPE_URL.ADDRESS, TYPE_URL.AUTHORIZATION]);
    const a = podAddress('default', 'a', '10.6.0.1');
    source.apply(TYPE_URL.ADDRESS, { set: { [a.uid]: a.value } });
    const istiod = new Istiod(source);
    await istiod.start();
    await istiod.stop();
    cleanups.push(() => istiod.stop());

    const readiness = new Readiness();
    const addresses = new AddressStore();
    const client = newClient({
      address: istiod.address,
      readiness,
      handlers: [addresses.handler(), rawXdsHandler(TYPE_URL.AUTHORIZATION, () => [])],
    });
    const events = recordEvents(client);
    client.start();
    await eventually('a few failed attempts', () => events.terminated.length >= 3);
    assert.equal(readiness.ready, false);
    assert.equal(readiness.pending().length, 2);

    await istiod.start();
    await readiness.whenReady(AbortSignal.timeout(8000));
    assert.ok(addresses.byName.has(a.uid), 'ready only once the state is in');
  });

  test('a handler that throws NACKs the whole response and records nothing', async () => {
    const source = new MemoryResourceSource([TYPE_URL.ADDRESS]);
    const a = podAddress('default', 'a', '10.3.0.1');
    source.apply(TYPE_URL.ADDRESS, { set: { [a.uid]: a.value } });
    const istiod = new Istiod(source);
    await istiod.start();
    cleanups.push(() => istiod.stop());
    const client = newClient({
      address: istiod.address,
      handlers: [
        xdsHandler(TYPE_URL.ADDRESS, AddressSchema, () => {
          throw new Error('store is broken');
        }),
      ],
    });
    const events = recordEvents(client);
    client.start();
    await eventually('the NACK', () => events.nack.length === 1);
    assert.match(events.nack[0]?.rejects[0]?.reason ?? '', /handler failed: store is broken/);
    assert.equal(client.held(TYPE_URL.ADDRESS).size, 0);
  });

  test('reconnects with growing backoff while istiod is down, keeps its state, and recovers', async () => {
    const source = new MemoryResourceSource([TYPE_URL.ADDRESS]);
    const a = podAddress('default', 'a', '10.4.0.1');
    source.apply(TYPE_URL.ADDRESS, { set: { [a.uid]: a.value } });
    const istiod = new Istiod(source);
    await istiod.start();
    cleanups.push(() => istiod.stop());
    const addresses = new AddressStore();
    const registry = new Registry();
    const client = newClient({
      address: istiod.address,
      handlers: [addresses.handler()],
      metrics: {
        connectionTerminations: new Counter({
          ...XDS_CLIENT_METRICS.connectionTerminations,
          registers: [registry],
        }),
        messages: new Counter({ ...XDS_CLIENT_METRICS.messages, registers: [registry] }),
        messageBytes: new Counter({ ...XDS_CLIENT_METRICS.messageBytes, registers: [registry] }),
      },
    });
    const events = recordEvents(client);
    client.start();
    await eventually('the first ACK', () => events.ack.length === 1);

    await istiod.stop();
    const downAt = Date.now();
    await new Promise((r) => setTimeout(r, 1500));
    const attempts = events.terminated.length;
    // 10 ms doubling: 10+20+…+640 ≈ 1.3 s, so about 8 attempts fit; a busy loop would make hundreds.
    assert.ok(attempts >= 3 && attempts <= 14, `${attempts} attempts in ${Date.now() - downAt} ms`);
    const delays = events.terminated.map((e) => e.retryInMs);
    assert.ok(
      (delays.at(-1) ?? 0) >= 8 * (delays[1] ?? Infinity),
      `delays grow exponentially: ${delays.join(', ')}`,
    );
    assert.ok(delays.every((d) => d <= 15_000));
    assert.ok(
      events.terminated.slice(1).every((e) => e.reason === 'ConnectionError'),
      JSON.stringify(events.terminated),
    );
    assert.ok(
      (await metricValue(registry, 'istio_xds_connection_terminations_total', {
        reason: 'ConnectionError',
      })) >= 2,
    );
    assert.deepEqual([...addresses.byName.keys()], [a.uid], 'the last known good state is kept');
    assert.equal(client.connected, false);

    const b = podAddress('default', 'b', '10.4.0.2');
    source.apply(TYPE_URL.ADDRESS, { set: { [b.uid]: b.value } });
    await istiod.start();
    await eventually('the client to come back and catch up', () => addresses.byName.has(b.uid), 8000);
    assert.equal(client.connected, true);
    assert.deepEqual(addresses.calls.at(-1), { updates: [b.uid], removed: [] }, 'only what changed');
  });

  test('over TLS, with the bearer token read on every connect and the clusterid header', async (t) => {
    let certs: ReturnType<typeof issueTestCertificates>;
    try {
      certs = issueTestCertificates(String(ZTUNNEL_CALLER.identity));
    } catch (err) {
      t.skip(`openssl could not issue test certificates: ${String(err)}`);
      return;
    }
    const tokens = new TokenAuthenticator({ 'token-1': ZTUNNEL_CALLER, 'token-2': ZTUNNEL_CALLER });
    const seen: { authorization: unknown; clusterid: unknown; team: unknown }[] = [];
    const authenticator: XdsAuthenticator = {
      authenticate: (req) => {
        seen.push({
          authorization: req.metadata.get('authorization')[0],
          clusterid: req.metadata.get('clusterid')[0],
          team: req.metadata.get('x-team')[0],
        });
        return tokens.authenticate(req);
      },
    };
    const source = new MemoryResourceSource([TYPE_URL.ADDRESS]);
    const a = podAddress('default', 'a', '10.5.0.1');
    source.apply(TYPE_URL.ADDRESS, { set: { [a.uid]: a.value } });
    const istiod = new Istiod(source, {
      authenticator,
      credentials: () =>
        ServerCredentials.createSsl(
          null,
          [{ private_key: certs.serverKey, cert_chain: certs.serverCert }],
          false,
        ),
    });
    await istiod.start();
    cleanups.push(() => istiod.stop());

    let token = 'token-1';
    let tokenReads = 0;
    const addresses = new AddressStore();
    const client = newClient({
      address: istiod.address,
      // The certificate names istiod's service, not the test's 127.0.0.1 (ALT_XDS_HOSTNAME).
      tls: { rootCert: certs.ca, serverName: 'istiod.istio-system.svc' },
      token: () => {
        tokenReads++;
        return token;
      },
      clusterId: 'cluster-east',
      headers: { 'x-team': 'mesh' },
      handlers: [addresses.handler()],
    });
    const events = recordEvents(client);
    client.start();
    await eventually('the first ACK over TLS', () => events.ack.length === 1, 5000);
    assert.deepEqual(seen[0], { authorization: 'Bearer token-1', clusterid: 'cluster-east', team: 'mesh' });
    assert.equal(istiod.server?.debugState().connections[0]?.identity, ZTUNNEL_CALLER.identity);

    // The token file rotated; the next connect uses the new one.
    token = 'token-2';
    await istiod.stop();
    await istiod.start();
    await eventually('the reconnect', () => events.ack.length === 2, 8000);
    assert.equal(seen.at(-1)?.authorization, 'Bearer token-2');
    assert.ok(tokenReads >= 2);

    // A token istiod refuses ends each stream UNAUTHENTICATED; the client backs off.
    token = 'stolen';
    await istiod.stop();
    await istiod.start();
    const refused = () => events.terminated.filter((e) => e.code === 16 /* UNAUTHENTICATED */);
    await eventually('refused streams', () => refused().length >= 2, 8000);
    const refusals = refused();
    assert.ok(refusals.every((e) => e.reason === 'Error'));
    assert.ok((refusals[1]?.retryInMs ?? 0) > (refusals[0]?.retryInMs ?? Infinity) * 1.2, 'backoff grows');
  });

  test('a server whose certificate does not chain to the root is not trusted', async (t) => {
    let certs: ReturnType<typeof issueTestCertificates>;
    let other: ReturnType<typeof issueTestCertificates>;
    try {
      certs = issueTestCertificates(String(ZTUNNEL_CALLER.identity));
      other = issueTestCertificates(String(ZTUNNEL_CALLER.identity));
    } catch (err) {
      t.skip(`openssl could not issue test certificates: ${String(err)}`);
      return;
    }
    const source = new MemoryResourceSource([TYPE_URL.ADDRESS]);
    const istiod = new Istiod(source, {
      credentials: () =>
        ServerCredentials.createSsl(
          null,
          [{ private_key: certs.serverKey, cert_chain: certs.serverCert }],
          false,
        ),
    });
    await istiod.start();
    cleanups.push(() => istiod.stop());
    const client = newClient({
      address: istiod.address,
      tls: { rootCert: other.ca, serverName: 'istiod.istio-system.svc' },
      handlers: [new AddressStore().handler()],
    });
    const events = recordEvents(client);
    client.start();
    await eventually('failed connects', () => events.terminated.length >= 2, 5000);
    assert.equal(events.connected.length, 0);
    assert.ok(events.terminated.every((e) => e.reason === 'ConnectionError'));
  });
});

import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DeltaDiscoveryResponse } from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { AddressSchema } from '@ambient/common/gen/istio/workload/workload_pb';
import { fromBinary } from '@bufbuild/protobuf';
import { status } from '@grpc/grpc-js';
import type { XdsTypeDebug } from '../src/xds/connection.ts';
import { TokenAuthenticator, ZTUNNEL_CALLER } from './support/authenticators.ts';
import { MemoryResourceSource } from './support/memory-resource-source.ts';
import { metricValue } from './support/metrics.ts';
import { ADDRESS_TYPE, AUTHORIZATION_TYPE, authorization, podAddress } from './support/wds-fixtures.ts';
import { type Harness, startHarness, waitFor, ztunnelNode } from './support/xds-harness.ts';

function names(res: DeltaDiscoveryResponse): string[] {
  return res.resources.map((r) => r.name).sort();
}

function seedPods(source: MemoryResourceSource, ...pods: string[]): Record<string, string> {
  const uids: Record<string, string> = {};
  const set: Record<string, Uint8Array> = {};
  pods.forEach((p, i) => {
    const a = podAddress('default', p, `10.1.0.${i + 1}`);
    uids[p] = a.uid;
    set[a.uid] = a.value;
  });
  source.apply(ADDRESS_TYPE, { set });
  return uids;
}

function typeState(h: Harness, typeUrl: string, conn = 0): XdsTypeDebug | undefined {
  return h.server.debugState().connections[conn]?.types.find((t) => t.typeUrl === typeUrl);
}

describe('delta ADS', () => {
  let source: MemoryResourceSource;
  let h: Harness;
  let uid: Record<string, string>;

  beforeEach(async () => {
    source = new MemoryResourceSource([ADDRESS_TYPE, AUTHORIZATION_TYPE]);
    uid = seedPods(source, 'a', 'b', 'c');
    h = await startHarness(source);
  });

  afterEach(async () => {
    await h.close();
  });

  it('sends the full state to a wildcard subscriber, then only what changed', async () => {
    const c = h.client();
    c.subscribe(ADDRESS_TYPE);
    const full = await c.next();
    assert.equal(full.typeUrl, ADDRESS_TYPE);
    assert.deepEqual(names(full), [uid.a, uid.b, uid.c].sort());
    assert.deepEqual(full.removedResources, []);
    assert.notEqual(full.nonce, '');
    assert.notEqual(full.systemVersionInfo, '');
    for (const r of full.resources) {
      const want = source.get(ADDRESS_TYPE, r.name);
      assert.equal(r.version, want?.version);
      assert.equal(r.resource?.typeUrl, ADDRESS_TYPE);
      assert.deepEqual(Buffer.from(r.resource?.value ?? []), Buffer.from(want?.value ?? []));
      const address = fromBinary(AddressSchema, r.resource?.value ?? new Uint8Array());
      assert.equal(address.type.case, 'workload');
    }
    c.ack(full);
    await waitFor('the ACK', () => typeState(h, ADDRESS_TYPE)?.lastAckedNonce === full.nonce);
    assert.equal(typeState(h, ADDRESS_TYPE)?.resourcesAcked, 3);
    assert.equal(await metricValue(h.registry, 'istiod_xds_connected_proxies'), 1);

    // One edit: b changes, c goes, d arrives.
    const b2 = podAddress('default', 'b', '10.1.9.9');
    const d = podAddress('default', 'd', '10.1.0.4');
    source.apply(ADDRESS_TYPE, { set: { [b2.uid]: b2.value, [d.uid]: d.value }, remove: [uid.c ?? ''] });
    const delta = await c.next();
    assert.deepEqual(names(delta), [uid.b, d.uid].sort());
    assert.deepEqual(delta.removedResources, [uid.c]);
    assert.notEqual(delta.nonce, full.nonce);
    assert.notEqual(delta.systemVersionInfo, full.systemVersionInfo);
    c.ack(delta);
    await waitFor('the second ACK', () => typeState(h, ADDRESS_TYPE)?.lastAckedNonce === delta.nonce);
    assert.deepEqual([...c.held(ADDRESS_TYPE).keys()].sort(), [uid.a, uid.b, d.uid].sort());
    assert.equal(typeState(h, ADDRESS_TYPE)?.resourcesAcked, 3);
    assert.equal(typeState(h, ADDRESS_TYPE)?.resourcesSent, 5);

    // A change event naming a resource whose version the proxy already holds sends nothing.
    source.emit('updated', { typeUrl: ADDRESS_TYPE, names: new Set([uid.a ?? '']) });
    await c.expectNoResponse(150);

    assert.equal(
      await metricValue(h.registry, 'istiod_xds_pushes_total', { type: 'istio.workload.Address' }),
      2,
    );
    assert.equal(await metricValue(h.registry, 'istiod_xds_resources_sent_total'), 5);
    // Only the debounced push is timed, not the initial response.
    assert.equal(await metricValue(h.registry, 'istiod_xds_push_time_seconds'), 1);
  });

  it('gives fresh wildcard proxies one shared full push, rebuilt after a change', async () => {
    const first = h.client();
    first.subscribe(ADDRESS_TYPE);
    const r1 = await first.next();
    const d = podAddress('default', 'd', '10.1.0.4');
    source.apply(ADDRESS_TYPE, { set: { [d.uid]: d.value } });
    // Connected after the change but before its debounced push: it must see d already.
    const second = h.client();
    second.subscribe(ADDRESS_TYPE);
    const r2 = await second.next();
    assert.deepEqual(names(r1), [uid.a, uid.b, uid.c].sort());
    assert.deepEqual(names(r2), [uid.a, uid.b, uid.c, d.uid].sort());
    // The first proxy gets d from the push; the second already holds it and gets nothing.
    const push = await first.next();
    assert.deepEqual(names(push), [d.uid]);
    await second.expectNoResponse(150);
    first.ack(r1);
    first.ack(push);
    await waitFor('both ACKs', () => typeState(h, ADDRESS_TYPE)?.lastAckedNonce === push.nonce);
    assert.equal(typeState(h, ADDRESS_TYPE)?.resourcesAcked, 4);
  });

  it('answers a reconnect with initial_resource_versions with only what changed, plus removals', async () => {
    const first = h.client();
    first.subscribe(ADDRESS_TYPE);
    const full = await first.next();
    first.ack(full);
    await waitFor('the ACK', () => typeState(h, ADDRESS_TYPE)?.lastAckedNonce === full.nonce);
    first.close();
    await waitFor('the disconnect', () => h.server.connectionCount === 0);

    // While the proxy is away: b changes, c goes, d arrives.
    const b2 = podAddress('default', 'b', '10.1.9.9');
    const d = podAddress('default', 'd', '10.1.0.4');
    source.apply(ADDRESS_TYPE, { set: { [b2.uid]: b2.value, [d.uid]: d.value }, remove: [uid.c ?? ''] });
    await sleep(60); // past the debounce: the push finds nobody connected.

    const second = h.client();
    second.adoptHeld(first);
    const held = second.versions(ADDRESS_TYPE);
    assert.equal(Object.keys(held).length, 3);
    // A name the proxy holds from some older istiod that never existed here.
    second.subscribe(ADDRESS_TYPE, { initialVersions: { ...held, 'Kubernetes//Pod/default/ghost': 'v0' } });
    const res = await second.next();
    assert.deepEqual(names(res), [uid.b, d.uid].sort());
    assert.deepEqual(res.removedResources.sort(), [uid.c, 'Kubernetes//Pod/default/ghost'].sort());
    second.ack(res);
    await waitFor('the ACK', () => typeState(h, ADDRESS_TYPE)?.lastAckedNonce === res.nonce);
    // a was confirmed by the reconnect, b and d by the ACK.
    assert.equal(typeState(h, ADDRESS_TYPE)?.resourcesAcked, 3);
    assert.deepEqual(second.versions(ADDRESS_TYPE), {
      [uid.a ?? '']: source.get(ADDRESS_TYPE, uid.a ?? '')?.version,
      [b2.uid]: source.get(ADDRESS_TYPE, b2.uid)?.version,
      [d.uid]: source.get(ADDRESS_TYPE, d.uid)?.version,
    });

    // Reconnecting with everything current gets an empty (but present) response.
    const third = h.client();
    third.adoptHeld(second);
    third.subscribe(ADDRESS_TYPE, { initialVersions: third.versions(ADDRESS_TYPE) });
    const empty = await third.next();
    assert.deepEqual(empty.resources, []);
    assert.deepEqual(empty.removedResources, []);
  });

  it('keeps pushing after a NACK, for the same type and the others', async () => {
    const authz = authorization('default', 'allow-all');
    source.apply(AUTHORIZATION_TYPE, { set: { [authz.name]: authz.value } });
    const c = h.client();
    c.subscribe(ADDRESS_TYPE);
    c.subscribe(AUTHORIZATION_TYPE);
    const fullA = await c.next();
    const fullZ = await c.next();
    assert.equal(fullA.typeUrl, ADDRESS_TYPE);
    assert.equal(fullZ.typeUrl, AUTHORIZATION_TYPE);
    c.ack(fullA);
    c.ack(fullZ);
    await waitFor('both ACKs', () => typeState(h, AUTHORIZATION_TYPE)?.lastAckedNonce === fullZ.nonce);

    const a2 = podAddress('default', 'a', '10.1.8.1');
    const b2 = podAddress('default', 'b', '10.1.8.2');
    source.apply(ADDRESS_TYPE, { set: { [a2.uid]: a2.value, [b2.uid]: b2.value } });
    const bad = await c.next();
    assert.deepEqual(names(bad), [uid.a, uid.b].sort());
    c.nack(bad, [uid.a ?? ''], `${uid.a}: invalid workload address`);
    await waitFor('the NACK', () => typeState(h, ADDRESS_TYPE)?.lastNack?.nonce === bad.nonce);
    const st = typeState(h, ADDRESS_TYPE);
    assert.equal(st?.lastNack?.message, `${uid.a}: invalid workload address`);
    assert.equal(st?.nacks, 1);
    assert.equal(st?.lastAckedNonce, fullA.nonce);
    assert.equal(
      await metricValue(h.registry, 'istiod_xds_nacks_total', { type: 'istio.workload.Address' }),
      1,
    );

    // A later change of the same type still goes out, with only what changed since.
    const c2 = podAddress('default', 'c', '10.1.8.3');
    source.apply(ADDRESS_TYPE, { set: { [c2.uid]: c2.value } });
    const next = await c.next();
    assert.deepEqual(names(next), [uid.c]);
    c.ack(next);
    await waitFor('the ACK after the NACK', () => typeState(h, ADDRESS_TYPE)?.lastAckedNonce === next.nonce);

    // And so does a change of the other type.
    const authz2 = authorization('default', 'deny', true);
    source.apply(AUTHORIZATION_TYPE, { set: { [authz2.name]: authz2.value } });
    const z = await c.next();
    assert.equal(z.typeUrl, AUTHORIZATION_TYPE);
    assert.deepEqual(names(z), ['default/deny']);
    c.ack(z);

    // The rejected resource is sent again once it changes again.
    const a3 = podAddress('default', 'a', '10.1.7.1');
    source.apply(ADDRESS_TYPE, { set: { [a3.uid]: a3.value } });
    const again = await c.next();
    assert.deepEqual(names(again), [uid.a]);
    c.ack(again);
    await waitFor('the last ACK', () => typeState(h, ADDRESS_TYPE)?.lastAckedNonce === again.nonce);
    assert.equal(
      c.held(ADDRESS_TYPE).get(uid.a ?? '')?.version,
      source.get(ADDRESS_TYPE, uid.a ?? '')?.version,
    );
  });

  it('serves explicit subscriptions and unsubscriptions', async () => {
    const c = h.client();
    c.subscribe(ADDRESS_TYPE, { subscribe: [uid.a ?? '', 'Kubernetes//Pod/default/missing'] });
    const first = await c.next();
    assert.deepEqual(names(first), [uid.a]);
    // A subscribed name that does not exist is reported as removed.
    assert.deepEqual(first.removedResources, ['Kubernetes//Pod/default/missing']);
    c.ack(first);
    assert.equal(typeState(h, ADDRESS_TYPE)?.wildcard, false);

    // Only subscribed names are pushed.
    const a2 = podAddress('default', 'a', '10.1.8.1');
    const b2 = podAddress('default', 'b', '10.1.8.2');
    source.apply(ADDRESS_TYPE, { set: { [a2.uid]: a2.value, [b2.uid]: b2.value } });
    const push = await c.next();
    assert.deepEqual(names(push), [uid.a]);
    c.ack(push);

    c.subscribe(ADDRESS_TYPE, { subscribe: [uid.b ?? ''] });
    const sub = await c.next();
    assert.deepEqual(names(sub), [uid.b]);
    assert.equal(sub.resources[0]?.version, source.get(ADDRESS_TYPE, uid.b ?? '')?.version);
    c.ack(sub);

    c.subscribe(ADDRESS_TYPE, { unsubscribe: [uid.a ?? ''] });
    await waitFor('the unsubscribe', () => {
      const n = typeState(h, ADDRESS_TYPE)?.names;
      return n !== undefined && !n.includes(uid.a ?? '');
    });
    assert.deepEqual(typeState(h, ADDRESS_TYPE)?.names, ['Kubernetes//Pod/default/missing', uid.b].sort());
    const a3 = podAddress('default', 'a', '10.1.7.1');
    source.apply(ADDRESS_TYPE, { set: { [a3.uid]: a3.value } });
    await c.expectNoResponse(120);

    // The missing name appears: the subscriber gets it.
    const m = podAddress('default', 'missing', '10.1.0.50');
    source.apply(ADDRESS_TYPE, { set: { [m.uid]: m.value } });
    const appeared = await c.next();
    assert.deepEqual(names(appeared), [m.uid]);
    c.ack(appeared);

    // Switching to wildcard sends what the proxy lacks: a (dropped on unsubscribe) and c.
    c.subscribe(ADDRESS_TYPE, { subscribe: ['*'] });
    const all = await c.next();
    assert.deepEqual(names(all), [uid.a, uid.c].sort());
    c.ack(all);
    await waitFor('wildcard', () => typeState(h, ADDRESS_TYPE)?.wildcard === true);
  });

  it('asks for nothing with the on-demand first request (subscribe and unsubscribe *)', async () => {
    const c = h.client();
    c.subscribe(ADDRESS_TYPE, { subscribe: ['*'], unsubscribe: ['*'] });
    const first = await c.next();
    assert.deepEqual(first.resources, []);
    assert.deepEqual(first.removedResources, []);
    c.ack(first);
    const a2 = podAddress('default', 'a', '10.1.8.1');
    source.apply(ADDRESS_TYPE, { set: { [a2.uid]: a2.value } });
    await c.expectNoResponse(120);
    c.subscribe(ADDRESS_TYPE, { subscribe: [uid.a ?? ''] });
    assert.deepEqual(names(await c.next()), [uid.a]);
  });

  it('debounces a burst of changes into one push', async () => {
    const c = h.client();
    c.subscribe(ADDRESS_TYPE);
    c.ack(await c.next());
    const before = c.received.length;
    const burst: string[] = [];
    for (let i = 0; i < 10; i++) {
      const p = podAddress('default', `burst-${i}`, `10.2.0.${i + 1}`);
      burst.push(p.uid);
      source.apply(ADDRESS_TYPE, { set: { [p.uid]: p.value } });
      await sleep(2);
    }
    const push = await c.next();
    assert.deepEqual(names(push), burst.sort());
    await c.expectNoResponse(150);
    assert.equal(c.received.length - before, 1);
  });

  it('serves two types on one stream, each with its own nonces', async () => {
    const authz = authorization('default', 'allow-all');
    source.apply(AUTHORIZATION_TYPE, { set: { [authz.name]: authz.value } });
    const c = h.client();
    c.subscribe(ADDRESS_TYPE);
    c.subscribe(AUTHORIZATION_TYPE);
    const r1 = await c.next();
    const r2 = await c.next();
    assert.deepEqual([r1.typeUrl, r2.typeUrl].sort(), [ADDRESS_TYPE, AUTHORIZATION_TYPE].sort());
    c.ack(r1);
    c.ack(r2);
    // One burst touching both types: one response per type.
    const d = podAddress('default', 'd', '10.1.0.4');
    source.apply(ADDRESS_TYPE, { set: { [d.uid]: d.value } });
    source.apply(AUTHORIZATION_TYPE, { remove: [authz.name] });
    const p1 = await c.next();
    const p2 = await c.next();
    const byType = new Map([p1, p2].map((r) => [r.typeUrl, r]));
    assert.deepEqual(names(byType.get(ADDRESS_TYPE) as DeltaDiscoveryResponse), [d.uid]);
    assert.deepEqual(byType.get(AUTHORIZATION_TYPE)?.removedResources, [authz.name]);
    c.ack(p1);
    c.ack(p2);
    await waitFor('both ACKs', () => {
      const conn = h.server.debugState().connections[0];
      return (
        conn?.types.length === 2 &&
        conn.types.every((t) => t.lastAckedNonce !== undefined && t.lastAckedNonce === t.lastNonceSent)
      );
    });
    const conn = h.server.debugState().connections[0];
    assert.equal(conn?.proxyType, 'ztunnel');
    assert.equal(conn?.nodeId, ztunnelNode().nodeId);
    assert.equal(conn?.node.namespace, 'istio-system');
    assert.equal(conn?.node.nodeName, 'node-a');
    assert.match(conn?.id ?? '', /^ztunnel-a\.istio-system-\d+$/);
    assert.equal(c.held(AUTHORIZATION_TYPE).size, 0);
  });

  it('answers a type it does not serve with an empty response', async () => {
    const c = h.client();
    c.subscribe('type.googleapis.com/envoy.config.cluster.v3.Cluster');
    const res = await c.next();
    assert.deepEqual(res.resources, []);
    c.ack(res);
    c.subscribe(ADDRESS_TYPE);
    assert.equal((await c.next()).resources.length, 3);
    assert.equal(await metricValue(h.registry, 'istiod_xds_pushes_total', { type: 'other' }), 1);
  });

  it('ends the stream OK when the proxy half-closes, and forgets it', async () => {
    const c = h.client();
    c.subscribe(ADDRESS_TYPE);
    await c.next();
    assert.equal(h.server.connectionCount, 1);
    c.end();
    const s = await c.status;
    assert.equal(s.code, status.OK);
    await waitFor('the disconnect', () => h.server.connectionCount === 0);
    assert.equal(await metricValue(h.registry, 'istiod_xds_connected_proxies'), 0);
  });

  it('refuses a request without a valid node', async () => {
    const c = h.client({ nodeId: 'ztunnel~10.0.0.1~ztunnel-a.istio-system' });
    c.subscribe(ADDRESS_TYPE);
    const s = await c.status;
    assert.equal(s.code, status.INVALID_ARGUMENT);
    assert.match(s.details, /has 3 fields, want 4/);
    const bad = h.client({ nodeId: 'gateway~10.0.0.1~x.ns~ns.svc.cluster.local' });
    bad.subscribe(ADDRESS_TYPE);
    assert.match((await bad.status).details, /proxy type "gateway"/);
    assert.equal(
      await metricValue(h.registry, 'istiod_xds_rejected_streams_total', { reason: 'invalid_argument' }),
      2,
    );
  });

  it('pushes to 50 concurrent proxies', async () => {
    const clients = Array.from({ length: 50 }, (_, i) =>
      h.client(ztunnelNode(`ztunnel-${i}`, `10.0.1.${i + 1}`)),
    );
    for (const c of clients) c.subscribe(ADDRESS_TYPE);
    const initial = await Promise.all(clients.map((c) => c.next(10_000)));
    for (const [i, c] of clients.entries()) c.ack(initial[i] as DeltaDiscoveryResponse);
    await waitFor('50 connections', () => h.server.connectionCount === 50, 10_000);
    assert.equal(
      await metricValue(h.registry, 'istiod_xds_connected_proxies', { proxy_type: 'ztunnel' }),
      50,
    );

    const d = podAddress('default', 'd', '10.1.0.4');
    source.apply(ADDRESS_TYPE, { set: { [d.uid]: d.value }, remove: [uid.a ?? ''] });
    const pushes = await Promise.all(clients.map((c) => c.next(10_000)));
    for (const p of pushes) {
      assert.deepEqual(names(p), [d.uid]);
      assert.deepEqual(p.removedResources, [uid.a]);
    }
    assert.equal(new Set(pushes.map((p) => p.nonce)).size, 50);
    for (const [i, c] of clients.entries()) c.ack(pushes[i] as DeltaDiscoveryResponse);
    await waitFor(
      'every ACK',
      () =>
        h.server
          .debugState()
          .connections.every((conn) => conn.types[0]?.lastAckedNonce === conn.types[0]?.lastNonceSent),
      10_000,
    );
    assert.equal(await metricValue(h.registry, 'istiod_xds_push_time_seconds'), 50);
  });
});

describe('delta ADS authentication', () => {
  let source: MemoryResourceSource;
  let h: Harness;
  const authenticator = new TokenAuthenticator({
    ztunnel: ZTUNNEL_CALLER,
    sleep: {
      identity: 'spiffe://cluster.local/ns/default/sa/sleep',
      namespace: 'default',
      serviceAccount: 'sleep',
    },
  });

  beforeEach(async () => {
    source = new MemoryResourceSource([ADDRESS_TYPE]);
    seedPods(source, 'a');
    h = await startHarness(source, { authenticate: true, authenticator });
  });

  afterEach(async () => {
    await h.close();
  });

  it('serves an authenticated proxy whose identity matches its node', async () => {
    const c = h.client({ headers: { authorization: 'Bearer ztunnel' } });
    c.subscribe(ADDRESS_TYPE);
    assert.equal((await c.next()).resources.length, 1);
    assert.equal(h.server.debugState().connections[0]?.identity, ZTUNNEL_CALLER.identity);
  });

  it('refuses a missing or invalid token with UNAUTHENTICATED', async () => {
    const none = h.client();
    none.subscribe(ADDRESS_TYPE);
    const s1 = await none.status;
    assert.equal(s1.code, status.UNAUTHENTICATED);
    // The caller learns nothing about why; istiod's log has the reason.
    assert.equal(s1.details, 'authentication failed');
    assert.deepEqual(authenticator.rejections.slice(-1), ['no bearer token in the authorization header']);
    const wrong = h.client({ headers: { authorization: 'Bearer forged' } });
    wrong.subscribe(ADDRESS_TYPE);
    const s2 = await wrong.status;
    assert.equal(s2.code, status.UNAUTHENTICATED);
    assert.equal(s2.details, 'authentication failed');
    assert.deepEqual(authenticator.rejections.slice(-1), ['the bearer token is not valid']);
    assert.equal(h.server.connectionCount, 0);
    assert.equal(
      await metricValue(h.registry, 'istiod_xds_rejected_streams_total', { reason: 'unauthenticated' }),
      2,
    );
  });

  it('refuses an identity that does not match the node with PERMISSION_DENIED', async () => {
    // A workload's token presenting itself as the ztunnel of istio-system.
    const impostor = h.client({ headers: { authorization: 'Bearer sleep' } });
    impostor.subscribe(ADDRESS_TYPE);
    const s1 = await impostor.status;
    assert.equal(s1.code, status.PERMISSION_DENIED);
    assert.match(s1.details, /namespace "default".*claims namespace "istio-system"/);

    // The right namespace, but a SERVICE_ACCOUNT in the metadata that is not the caller's.
    const node = ztunnelNode();
    const wrongSa = h.client({
      headers: { authorization: 'Bearer ztunnel' },
      metadata: { ...node.metadata, SERVICE_ACCOUNT: 'istio-cni' },
    });
    wrongSa.subscribe(ADDRESS_TYPE);
    const s2 = await wrongSa.status;
    assert.equal(s2.code, status.PERMISSION_DENIED);
    assert.match(s2.details, /service account "ztunnel".*claims "istio-cni"/);
    assert.equal(h.server.connectionCount, 0);
  });
});

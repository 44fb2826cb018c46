/**
 * Unit tests of the xDS client's pure parts: resource decoding, the ztunnel node, and the
 * control-plane options. The client against a real istiod is tested in istiod/test/clients-xds.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ResourceSchema } from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { AuthorizationSchema } from '@ambient/common/gen/istio/security/authorization_pb';
import { AddressSchema, WorkloadSchema } from '@ambient/common/gen/istio/workload/workload_pb';
import { create, toBinary } from '@bufbuild/protobuf';
import { AnySchema, anyPack } from '@bufbuild/protobuf/wkt';
import {
  bearerTokenFile,
  ControlPlaneError,
  decodeResources,
  rawXdsHandler,
  xdsHandler,
  ztunnelNode,
} from './client.ts';
import { controlPlaneMetadata, validateControlPlaneOptions } from './control-plane.ts';
import { TYPE_URL } from './types.ts';

const noop = () => [];

function address(uid: string) {
  return create(AddressSchema, {
    type: { case: 'workload', value: create(WorkloadSchema, { uid, name: uid, namespace: 'default' }) },
  });
}

test('decodeResources decodes good resources and turns each bad one into a reject', () => {
  const handler = xdsHandler(TYPE_URL.ADDRESS, AddressSchema, noop);
  const resources = [
    create(ResourceSchema, {
      name: 'good',
      version: 'v1',
      resource: anyPack(AddressSchema, address('good')),
    }),
    create(ResourceSchema, { name: 'no-payload', version: 'v1' }),
    create(ResourceSchema, {
      name: 'wrong-type',
      version: 'v1',
      resource: anyPack(AuthorizationSchema, create(AuthorizationSchema, { name: 'x' })),
    }),
    create(ResourceSchema, {
      name: 'garbage',
      version: 'v1',
      // Field 1, length-delimited, with a length running past the end.
      resource: create(AnySchema, { typeUrl: TYPE_URL.ADDRESS, value: Uint8Array.of(0x0a, 0x7f, 0x01) }),
    }),
    create(ResourceSchema, {
      name: 'good2',
      version: 'v2',
      aliases: ['net/10.0.0.2'],
      resource: anyPack(AddressSchema, address('good2')),
    }),
  ];
  const { updates, rejects } = decodeResources(handler, resources);
  assert.deepEqual(
    updates.map((u) => [u.name, u.version, u.aliases]),
    [
      ['good', 'v1', []],
      ['good2', 'v2', ['net/10.0.0.2']],
    ],
  );
  const first = updates[0]?.resource as ReturnType<typeof address>;
  assert.equal(first.type.case === 'workload' && first.type.value.uid, 'good');
  assert.deepEqual(
    rejects.map((r) => r.name),
    ['no-payload', 'wrong-type', 'garbage'],
  );
  assert.match(rejects[0]?.reason ?? '', /no payload/);
  assert.match(rejects[1]?.reason ?? '', /istio\.security\.Authorization.*is not.*istio\.workload\.Address/);
  assert.match(rejects[2]?.reason ?? '', /cannot decode/);
});

test('a raw handler receives the Any itself, after the type check', () => {
  const handler = rawXdsHandler(TYPE_URL.AUTHORIZATION, noop);
  const any = anyPack(AuthorizationSchema, create(AuthorizationSchema, { name: 'p', namespace: 'ns' }));
  const { updates, rejects } = decodeResources(handler, [
    create(ResourceSchema, { name: 'ns/p', version: 'a', resource: any }),
  ]);
  assert.equal(rejects.length, 0);
  assert.deepEqual(updates[0]?.resource, any);
  assert.deepEqual(toBinary(AnySchema, updates[0]?.resource as typeof any), toBinary(AnySchema, any));
});

test('ztunnelNode builds the id and metadata ztunnel sends (spec §3.2)', () => {
  const node = ztunnelNode({
    instanceIp: '10.1.2.3',
    podName: 'ztunnel-abc',
    podNamespace: 'istio-system',
    nodeName: 'node-1',
    clusterId: 'Kubernetes',
    proxyMetadata: { ENABLE_HBONE: 'true' },
    metaJson: { LABELS: { app: 'ztunnel' } },
  });
  assert.equal(node.id, 'ztunnel~10.1.2.3~ztunnel-abc.istio-system~istio-system.svc.cluster.local');
  assert.deepEqual(node.metadata, {
    NAME: 'ztunnel-abc',
    NAMESPACE: 'istio-system',
    INSTANCE_IPS: '10.1.2.3',
    NODE_NAME: 'node-1',
    ENABLE_HBONE: 'true',
    LABELS: { app: 'ztunnel' },
    CLUSTER_ID: 'Kubernetes',
  });
  const fallback = ztunnelNode({ podName: 'z', podNamespace: 'ns', nodeName: 'n' });
  assert.equal(fallback.id, 'ztunnel~1.1.1.1~z.ns~ns.svc.cluster.local', 'no INSTANCE_IP means 1.1.1.1');
  assert.equal(fallback.metadata?.CLUSTER_ID, undefined);
  const explicit = ztunnelNode({
    podName: 'z',
    podNamespace: 'ns',
    nodeName: 'n',
    clusterId: 'from-option',
    proxyMetadata: { CLUSTER_ID: 'from-meta' },
  });
  assert.equal(explicit.metadata?.CLUSTER_ID, 'from-meta', 'ISTIO_META_CLUSTER_ID wins');
});

test('control-plane options: reserved and invalid headers are refused up front', () => {
  const base = { address: 'istiod:15012', clusterId: 'Kubernetes' };
  assert.doesNotThrow(() => validateControlPlaneOptions({ ...base, headers: { 'x-team': 'a' } }, 'xds'));
  assert.throws(
    () => validateControlPlaneOptions({ ...base, headers: { Authorization: 'Bearer x' } }, 'xds'),
    (e: unknown) =>
      e instanceof ControlPlaneError && e.code === 'OPTIONS_INVALID' && /Authorization/.test(e.message),
  );
  assert.throws(
    () => validateControlPlaneOptions({ ...base, headers: { 'bad header': 'x' } }, 'ca'),
    (e: unknown) =>
      e instanceof ControlPlaneError && e.code === 'OPTIONS_INVALID' && /bad header/.test(e.message),
  );
  assert.throws(
    () => validateControlPlaneOptions({ ...base, address: ' ' }, 'xds'),
    (e: unknown) => e instanceof ControlPlaneError && /address is empty/.test(e.message),
  );
});

test('the token file is read on every call, so a rotated token is used at the next connect', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'xds-token-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'istio-token');
  await writeFile(path, 'first-token\n');
  const options = {
    address: 'istiod:15012',
    clusterId: 'c1',
    token: bearerTokenFile(path),
    headers: { 'x-a': 'b' },
  };
  let md = await controlPlaneMetadata(options);
  assert.deepEqual(md.get('authorization'), ['Bearer first-token']);
  assert.deepEqual(md.get('clusterid'), ['c1']);
  assert.deepEqual(md.get('x-a'), ['b']);
  await writeFile(path, 'second-token');
  md = await controlPlaneMetadata(options);
  assert.deepEqual(md.get('authorization'), ['Bearer second-token']);
  await rm(path);
  await assert.rejects(
    controlPlaneMetadata(options),
    (e: unknown) =>
      e instanceof ControlPlaneError && e.code === 'TOKEN_UNAVAILABLE' && e.message.includes(path),
  );
  const none = await controlPlaneMetadata({ address: 'x:1', clusterId: 'c' });
  assert.deepEqual(none.get('authorization'), [], 'no token source sends no authorization header');
});

/**
 * istiod in Kubernetes mode, in process, against fake API servers over real HTTP: list/watch of
 * the kinds (support/fake-apiserver.ts), and Secrets, ConfigMaps and TokenReviews (ca-fixtures.ts),
 * behind one address as a real API server would be. Checks the Kubernetes-only wiring: the root in
 * Secret istio-ca-secret, the root ConfigMap in every namespace, TokenReview authentication, and
 * watch events reaching a connected ztunnel.
 */
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Logging } from '@ambient/common/log';
import { type ChannelCredentials, credentials, status } from '@grpc/grpc-js';
import { KubeConfig } from '@kubernetes/client-node';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../src/ambient/index.ts';
import { Istiod } from '../src/app.ts';
import { ROOT_CONFIGMAP_KEY, ROOT_CONFIGMAP_NAME } from '../src/ca/root-distribution.ts';
import { ROOT_CERT_KEY } from '../src/ca/root-store.ts';
import { type Config, loadConfig } from '../src/config.ts';
import { FakeKubeApi, serviceAccountToken } from './ca-fixtures.ts';
import { DeltaXdsClient } from './support/delta-xds-client.ts';
import { eventually } from './support/eventually.ts';
import { FakeApiServer } from './support/fake-apiserver.ts';

const ZTUNNEL_TOKEN = 'projected-ztunnel-token';

/** An HTTP front that sends CA-side paths to one fake and list/watch to the other. */
async function routingFront(lists: FakeApiServer, ca: FakeKubeApi): Promise<{ server: Server; url: string }> {
  const caUrl = new URL(ca.kubeConfig().getCurrentCluster()?.server ?? '');
  const listUrl = new URL(lists.url);
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    const toCa =
      path.startsWith('/apis/authentication.k8s.io/') ||
      /^\/api\/v1\/namespaces\/[^/]+\/(secrets|configmaps)(\/|\?|$)/.test(path);
    const target = toCa ? caUrl : listUrl;
    const upstream = request(
      { host: target.hostname, port: target.port, method: req.method, path, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function kubeConfigFor(url: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
    users: [{ name: 'istiod', token: 'istiod-token' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'istiod' }],
    currentContext: 'fake',
  });
  return kc;
}

function pod(ns: string, name: string, o: { sa: string; node: string; ip: string; uid: string }) {
  return {
    metadata: { namespace: ns, name, uid: o.uid, annotations: { 'ambient.istio.io/redirection': 'enabled' } },
    spec: { nodeName: o.node, serviceAccountName: o.sa, containers: [{ name: 'app', image: 'app' }] },
    status: {
      phase: 'Running',
      podIP: o.ip,
      podIPs: [{ ip: o.ip }],
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  };
}

describe('istiod in Kubernetes mode', () => {
  let lists: FakeApiServer;
  let ca: FakeKubeApi;
  let front: { server: Server; url: string };
  let config: Config;
  let istiod: Istiod;
  let tls: ChannelCredentials;
  const clients: DeltaXdsClient[] = [];
  const logging = new Logging({ levels: 'off' });

  before(async () => {
    lists = await FakeApiServer.start();
    ca = new FakeKubeApi();
    await ca.start();
    front = await routingFront(lists, ca);
    for (const ns of ['istio-system', 'demo']) lists.upsert('Namespace', { metadata: { name: ns } });
    lists.upsert(
      'Pod',
      pod('istio-system', 'ztunnel-1', { sa: 'ztunnel', node: 'node-1', ip: '10.0.1.2', uid: 'zt-1' }),
    );
    lists.upsert('Pod', pod('demo', 'web-1', { sa: 'web', node: 'node-1', ip: '10.0.1.10', uid: 'web-1' }));
    ca.tokens.set(
      ZTUNNEL_TOKEN,
      serviceAccountToken('istio-system', 'ztunnel', { name: 'ztunnel-1', uid: 'zt-1' }),
    );
    config = loadConfig({
      CONFIG_SOURCE: 'kubernetes',
      ROOT_CA_DIR: '/nonexistent/cacerts',
      XDS_BIND_ADDRESS: '127.0.0.1',
      XDS_PORT: '0',
      MONITORING_BIND_ADDRESS: '127.0.0.1',
      MONITORING_PORT: '0',
      DEBUG_BIND_ADDRESS: '127.0.0.1',
      DEBUG_PORT: '0',
      PILOT_DEBOUNCE_AFTER: '10ms',
    });
    istiod = await Istiod.create(config, { logging, kubeConfig: kubeConfigFor(front.url) });
    await istiod.start();
    tls = credentials.createSsl(Buffer.from(istiod.authority.rootPem()));
  });

  after(async () => {
    for (const c of clients) c.close();
    await istiod?.stop({ mode: 'immediate' });
    front?.server.closeAllConnections();
    await new Promise<void>((resolve) => front?.server.close(() => resolve()));
    await lists?.close();
    await ca?.close();
  });

  it('keeps its self-signed root in Secret istio-system/istio-ca-secret', () => {
    const data = ca.data('secrets', 'istio-system', 'istio-ca-secret');
    assert.ok(data, 'the Secret was created');
    assert.equal(Buffer.from(data[ROOT_CERT_KEY] ?? '', 'base64').toString(), istiod.authority.rootPem());
  });

  it('writes the root ConfigMap into every namespace, including ones added later', async () => {
    await eventually(
      'istio-ca-root-cert in demo and istio-system',
      () =>
        ['demo', 'istio-system'].every(
          (ns) =>
            ca.data('configmaps', ns, ROOT_CONFIGMAP_NAME)?.[ROOT_CONFIGMAP_KEY] ===
            istiod.authority.rootPem(),
        ),
      5000,
    );
    lists.upsert('Namespace', { metadata: { name: 'late' } });
    await eventually(
      'istio-ca-root-cert in the new namespace',
      () =>
        ca.data('configmaps', 'late', ROOT_CONFIGMAP_NAME)?.[ROOT_CONFIGMAP_KEY] ===
        istiod.authority.rootPem(),
      5000,
    );
  });

  it('authenticates ztunnel by TokenReview and pushes a pod added through the API', async () => {
    const c = new DeltaXdsClient({
      address: `localhost:${istiod.ports().xds}`,
      credentials: tls,
      nodeId: 'ztunnel~10.0.1.2~ztunnel-1.istio-system~istio-system.svc.cluster.local',
      metadata: { NAMESPACE: 'istio-system', NODE_NAME: 'node-1' },
      headers: { authorization: `Bearer ${ZTUNNEL_TOKEN}` },
    });
    clients.push(c);
    c.subscribe(ADDRESS_TYPE_URL);
    c.subscribe(AUTHORIZATION_TYPE_URL);
    const initial = [await c.next(5000), await c.next(5000)];
    for (const r of initial) c.ack(r);
    const addresses = initial.find((r) => r.typeUrl === ADDRESS_TYPE_URL);
    assert.deepEqual(addresses?.resources.map((r) => r.name).sort(), [
      'Kubernetes//Pod/demo/web-1',
      'Kubernetes//Pod/istio-system/ztunnel-1',
    ]);
    assert.ok(
      ca.requests.some((r) => r.path === '/apis/authentication.k8s.io/v1/tokenreviews'),
      'the token was reviewed',
    );

    lists.upsert('Pod', pod('demo', 'web-2', { sa: 'web', node: 'node-1', ip: '10.0.1.11', uid: 'web-2' }));
    const pushed = await c.next(5000);
    assert.deepEqual(
      pushed.resources.map((r) => r.name),
      ['Kubernetes//Pod/demo/web-2'],
    );
  });

  it('refuses a token the API server does not accept', async () => {
    const c = new DeltaXdsClient({
      address: `localhost:${istiod.ports().xds}`,
      credentials: tls,
      nodeId: 'ztunnel~10.0.1.2~ztunnel-1.istio-system~istio-system.svc.cluster.local',
      metadata: { NAMESPACE: 'istio-system' },
      headers: { authorization: 'Bearer forged' },
    });
    clients.push(c);
    c.subscribe(ADDRESS_TYPE_URL);
    assert.equal((await c.status).code, status.UNAUTHENTICATED);
  });

  it('reuses the root in the Secret after a restart', async () => {
    const root = istiod.authority.rootPem();
    const again = await Istiod.create(config, { logging, kubeConfig: kubeConfigFor(front.url) });
    assert.equal(again.authority.rootPem(), root);
  });
});

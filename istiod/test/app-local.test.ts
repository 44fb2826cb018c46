/**
 * The whole istiod in local mode, in process, on ephemeral ports: a manifests directory, a token
 * file, delta xDS and CreateCertificate over TLS on one port, the debug and monitoring servers,
 * and a graceful stop. Clients are written from the protocol (test/support), not from istiod code.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { type Authorization, AuthorizationSchema } from '@ambient/common/gen/istio/security/authorization_pb';
import {
  type IstioCertificateRequest,
  IstioCertificateRequestSchema,
  type IstioCertificateResponse,
  IstioCertificateService,
} from '@ambient/common/gen/istio/v1/auth/ca_pb';
import { AddressSchema, TunnelProtocol, type Workload } from '@ambient/common/gen/istio/workload/workload_pb';
import { grpcClientConstructor, grpcServiceDefinition } from '@ambient/common/grpc';
import { Logging } from '@ambient/common/log';
import { create, fromBinary, type MessageInitShape } from '@bufbuild/protobuf';
import {
  type ChannelCredentials,
  type Client,
  credentials,
  Metadata,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../src/ambient/index.ts';
import { Istiod, READINESS_TASKS } from '../src/app.ts';
import { type Config, loadConfig } from '../src/config.ts';
import { x509 } from '../src/security/x509.ts';
import { generateKeys, makeCsr, privateKeyPem } from './ca-fixtures.ts';
import { DeltaXdsClient } from './support/delta-xds-client.ts';
import { eventually } from './support/eventually.ts';

const ZTUNNEL_1_TOKEN = 'ztunnel-node-1-token-0123456789';
const WEB_TOKEN = 'web-workload-token-0123456789abc';
const WEB_ID = 'spiffe://cluster.local/ns/demo/sa/web';
const DB_ID = 'spiffe://cluster.local/ns/demo/sa/db';
const WEB_UID = 'Kubernetes//Pod/demo/web-1';

const NAMESPACES = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
`;

function podYaml(o: {
  ns: string;
  name: string;
  sa: string;
  node: string;
  ip: string;
  uid: string;
  labels?: Record<string, string>;
}): string {
  const labels = Object.entries(o.labels ?? {})
    .map(([k, v]) => `\n    ${k}: ${v}`)
    .join('');
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${o.name}
  namespace: ${o.ns}
  uid: ${o.uid}
  labels:${labels || ' {}'}
  annotations:
    ambient.istio.io/redirection: enabled
spec:
  nodeName: ${o.node}
  serviceAccountName: ${o.sa}
  containers:
  - name: app
    image: app
status:
  phase: Running
  podIP: ${o.ip}
  podIPs:
  - ip: ${o.ip}
  conditions:
  - type: Ready
    status: "True"
`;
}

const ZTUNNELS = [
  podYaml({
    ns: 'istio-system',
    name: 'ztunnel-1',
    sa: 'ztunnel',
    node: 'node-1',
    ip: '10.0.1.2',
    uid: 'zt-1',
  }),
  podYaml({
    ns: 'istio-system',
    name: 'ztunnel-2',
    sa: 'ztunnel',
    node: 'node-2',
    ip: '10.0.2.2',
    uid: 'zt-2',
  }),
].join('---\n');

const webPod = (version: string) =>
  podYaml({
    ns: 'demo',
    name: 'web-1',
    sa: 'web',
    node: 'node-1',
    ip: '10.0.1.10',
    uid: 'web-1-uid',
    labels: { app: 'web', version },
  });

const DB_POD = podYaml({
  ns: 'demo',
  name: 'db-1',
  sa: 'db',
  node: 'node-2',
  ip: '10.0.2.10',
  uid: 'db-1-uid',
  labels: { app: 'db' },
});

const SERVICE_AND_POLICIES = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  clusterIP: 10.96.0.10
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-db
  namespace: demo
spec:
  selector:
    matchLabels:
      app: web
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/demo/sa/db"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: demo
spec:
  mtls:
    mode: STRICT
`;

/** Writes a file the way editors and ConfigMap volumes do: a hidden temporary file, then a rename. */
function writeAtomically(path: string, text: string): void {
  const dir = join(path, '..');
  const tmp = join(dir, `.tmp-${process.pid}-${Date.now()}`);
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

const CaClient = grpcClientConstructor(IstioCertificateService);
const createCertificate = (() => {
  const m = grpcServiceDefinition(IstioCertificateService).createCertificate;
  if (!m) throw new Error('generated descriptor lacks createCertificate');
  return m;
})();

function callCa(
  address: string,
  creds: ChannelCredentials,
  request: MessageInitShape<typeof IstioCertificateRequestSchema>,
  token: string,
): Promise<IstioCertificateResponse> {
  const client: Client = new CaClient(address, creds);
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  return new Promise<IstioCertificateResponse>((resolve, reject) => {
    client.makeUnaryRequest<IstioCertificateRequest, IstioCertificateResponse>(
      createCertificate.path,
      createCertificate.requestSerialize as (r: IstioCertificateRequest) => Buffer,
      createCertificate.responseDeserialize as (b: Buffer) => IstioCertificateResponse,
      create(IstioCertificateRequestSchema, request),
      md,
      { deadline: Date.now() + 10_000 },
      (err, response) => (err || !response ? reject(err) : resolve(response)),
    );
  }).finally(() => client.close());
}

function leafUri(chain: readonly string[]): string | undefined {
  const leaf = new X509Certificate(chain[0] ?? '');
  return leaf.subjectAltName?.replace(/^URI:/, '');
}

function testConfig(dir: string, extra: Record<string, string> = {}): Config {
  return loadConfig({
    LOCAL_DATA_DIR: dir,
    LOCAL_TOKEN_FILE: join(dir, 'tokens.yaml'),
    // An empty directory: never pick up a plugged-in CA from the host's /etc/cacerts.
    ROOT_CA_DIR: join(dir, 'no-cacerts'),
    XDS_BIND_ADDRESS: '127.0.0.1',
    XDS_PORT: '0',
    MONITORING_BIND_ADDRESS: '127.0.0.1',
    MONITORING_PORT: '0',
    DEBUG_BIND_ADDRESS: '127.0.0.1',
    DEBUG_PORT: '0',
    PILOT_DEBOUNCE_AFTER: '10ms',
    LOCAL_MANIFESTS_DEBOUNCE: '20ms',
    TERMINATION_DRAIN_DURATION: '500ms',
    ...extra,
  });
}

async function get(
  port: number,
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, init);
  return { status: res.status, text: await res.text() };
}

describe('istiod in local mode', () => {
  let dir: string;
  let istiod: Istiod;
  let logs: CapturedLogs;
  let rootPem: string;
  let tls: ChannelCredentials;
  let xdsAddress: string;
  const clients: DeltaXdsClient[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'istiod-app-local-'));
    const manifests = join(dir, 'manifests');
    mkdirSync(manifests);
    for (const [file, text] of [
      ['namespaces.yaml', NAMESPACES],
      ['ztunnels.yaml', ZTUNNELS],
      ['web.yaml', webPod('v1')],
      ['db.yaml', DB_POD],
      ['policy.yaml', SERVICE_AND_POLICIES],
    ] as const) {
      writeFileSync(join(manifests, file), text, { flag: 'w' });
    }
    writeFileSync(
      join(dir, 'tokens.yaml'),
      `${ZTUNNEL_1_TOKEN}: { namespace: istio-system, serviceAccount: ztunnel, podName: ztunnel-1, podUid: zt-1 }
${WEB_TOKEN}: { namespace: demo, serviceAccount: web, podName: web-1, podUid: web-1-uid }
`,
    );
    logs = new CapturedLogs('info');
    istiod = await Istiod.create(testConfig(dir), { logging: logs.logging });
    assert.deepEqual(
      istiod.readiness.pending(),
      [READINESS_TASKS.indexBuilt, READINESS_TASKS.configSynced, READINESS_TASKS.xdsListening].sort(),
      'not ready before start',
    );
    await istiod.start();
    rootPem = readFileSync(join(dir, 'root-cert.pem'), 'utf8');
    tls = credentials.createSsl(Buffer.from(rootPem));
    xdsAddress = `localhost:${istiod.ports().xds}`;
  });

  after(async () => {
    for (const c of clients) c.close();
    await istiod?.stop({ mode: 'immediate' });
    rmSync(dir, { recursive: true, force: true });
  });

  function ztunnelClient(options: { token?: string; creds?: ChannelCredentials; node?: string } = {}) {
    const c = new DeltaXdsClient({
      address: xdsAddress,
      credentials: options.creds ?? tls,
      nodeId: `ztunnel~10.0.1.2~ztunnel-1.istio-system~istio-system.svc.cluster.local`,
      metadata: { NAME: 'ztunnel-1', NAMESPACE: 'istio-system', NODE_NAME: options.node ?? 'node-1' },
      ...(options.token ? { headers: { authorization: `Bearer ${options.token}` } } : {}),
    });
    clients.push(c);
    return c;
  }

  it('writes the root certificate file and serves TLS with a certificate chained to it', () => {
    assert.equal(rootPem, istiod.authority.rootPem());
    assert.match(rootPem, /^-----BEGIN CERTIFICATE-----/);
  });

  it('turns /ready 200 once the config synced, the index is built and xDS listens', async () => {
    const ready = await get(istiod.ports().debug, '/ready');
    assert.equal(ready.status, 200);
    assert.deepEqual(JSON.parse(ready.text), { ready: true, pending: [] });
  });

  let ztunnel: DeltaXdsClient;
  let addresses: Map<string, Uint8Array>;

  it('sends a ztunnel authenticated by a token-file token the full state over TLS', async () => {
    ztunnel = ztunnelClient({ token: ZTUNNEL_1_TOKEN });
    ztunnel.subscribe(ADDRESS_TYPE_URL);
    ztunnel.subscribe(AUTHORIZATION_TYPE_URL);
    const responses = [await ztunnel.next(5000), await ztunnel.next(5000)];
    for (const r of responses) ztunnel.ack(r);
    const addressResponse = responses.find((r) => r.typeUrl === ADDRESS_TYPE_URL);
    const authResponse = responses.find((r) => r.typeUrl === AUTHORIZATION_TYPE_URL);
    assert.ok(addressResponse && authResponse, 'one response per type');
    addresses = new Map(
      addressResponse.resources.map((r) => [r.name, r.resource?.value ?? new Uint8Array()]),
    );
    assert.deepEqual(
      [...addresses.keys()].sort(),
      [
        'Kubernetes//Pod/demo/db-1',
        WEB_UID,
        'Kubernetes//Pod/istio-system/ztunnel-1',
        'Kubernetes//Pod/istio-system/ztunnel-2',
        'demo/web.demo.svc.cluster.local',
      ].sort(),
    );
    const web = workload(addresses.get(WEB_UID));
    assert.equal(web.uid, WEB_UID);
    assert.equal(web.node, 'node-1');
    assert.equal(web.tunnelProtocol, TunnelProtocol.HBONE);
    assert.equal(web.serviceAccount, 'web');
    assert.deepEqual(Object.keys(web.services), ['demo/web.demo.svc.cluster.local']);
    assert.ok(web.authorizationPolicies.includes('demo/allow-db'), 'the selecting policy is listed');
    assert.ok(
      web.authorizationPolicies.includes('istio-system/istio_converted_static_strict'),
      'STRICT mode in demo lists the converted strict policy',
    );

    const policies = new Map(
      authResponse.resources.map((r) => [
        r.name,
        fromBinary(AuthorizationSchema, r.resource?.value ?? new Uint8Array()),
      ]),
    );
    const strict = policies.get('istio-system/istio_converted_static_strict') as Authorization;
    assert.ok(strict, `the converted strict policy is sent (got ${[...policies.keys()].join(', ')})`);
    assert.equal(strict.action, 1, 'DENY');
    assert.equal(strict.rules[0]?.clauses[0]?.matches[0]?.notPrincipals.length, 1, 'denies plaintext');
    assert.ok(policies.has('demo/allow-db'));
  });

  it('pushes just the changed workload after a manifest edit, and counts a NACK of it', async () => {
    writeAtomically(join(dir, 'manifests', 'web.yaml'), webPod('v2'));
    const r = await ztunnel.next(5000);
    assert.equal(r.typeUrl, ADDRESS_TYPE_URL);
    assert.deepEqual(
      r.resources.map((x) => x.name),
      [WEB_UID],
    );
    assert.deepEqual(r.removedResources, []);
    assert.equal(workload(r.resources[0]?.resource?.value).canonicalRevision, 'v2');
    ztunnel.nack(r, [WEB_UID], 'test: refused on purpose');
    await ztunnel.expectNoResponse(150);
  });

  it('notices every later save of the same file, by rename and in place', async () => {
    // Node's recursive fs.watch on Linux loses a file once a rename replaced it; only the
    // periodic rescan (10 s here) would notice these, so a push within 3 s shows the watch did.
    for (const [version, write] of [
      ['v3', writeAtomically],
      ['v4', writeAtomically],
      ['v5', (path: string, text: string) => writeFileSync(path, text)],
    ] as const) {
      write(join(dir, 'manifests', 'web.yaml'), webPod(version));
      const r = await ztunnel.next(3000);
      assert.deepEqual(
        r.resources.map((x) => x.name),
        [WEB_UID],
      );
      assert.equal(workload(r.resources[0]?.resource?.value).canonicalRevision, version);
      ztunnel.ack(r);
    }
  });

  it('lists the connected ztunnel in /debug/connections', async () => {
    const res = await get(istiod.ports().debug, '/debug/connections');
    assert.equal(res.status, 200);
    const state = JSON.parse(res.text) as {
      connections: { nodeId: string; proxyType: string; identity?: string }[];
    };
    const conn = state.connections.find((c) => c.nodeId.includes('ztunnel-1.istio-system'));
    assert.ok(conn, res.text);
    assert.equal(conn.proxyType, 'ztunnel');
    assert.equal(conn.identity, 'spiffe://cluster.local/ns/istio-system/sa/ztunnel');
  });

  it('issues a certificate to ztunnel for a pod on its node and refuses one on another node', async () => {
    const caAddress = `localhost:${istiod.ports().xds}`;
    const issued = await callCa(
      caAddress,
      tls,
      {
        csr: await makeCsr({ uris: [WEB_ID] }),
        validityDuration: 3600n,
        metadata: { ImpersonatedIdentity: WEB_ID },
      },
      ZTUNNEL_1_TOKEN,
    );
    assert.equal(leafUri(issued.certChain), WEB_ID);
    assert.equal(issued.certChain.at(-1), rootPem, 'the root comes last');

    await assert.rejects(
      callCa(
        caAddress,
        tls,
        { csr: await makeCsr({ uris: [DB_ID] }), metadata: { ImpersonatedIdentity: DB_ID } },
        ZTUNNEL_1_TOKEN,
      ),
      (err: ServiceError) => {
        assert.equal(err.code, status.UNAUTHENTICATED);
        assert.equal(err.details, 'request authentication failure');
        return true;
      },
    );
    assert.equal(logs.find('impersonation refused').at(-1)?.code, 'IDENTITY_NOT_ON_NODE');
  });

  it('accepts a mesh client certificate obtained from CreateCertificate for xDS', async () => {
    const keys = await generateKeys();
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as never,
    });
    const issued = await callCa(
      `localhost:${istiod.ports().xds}`,
      tls,
      { csr: csr.toString('pem') },
      WEB_TOKEN,
    );
    const mtls = credentials.createSsl(
      Buffer.from(rootPem),
      Buffer.from(await privateKeyPem(keys)),
      Buffer.from(issued.certChain.slice(0, -1).join('')),
    );
    const c = new DeltaXdsClient({
      address: xdsAddress,
      credentials: mtls,
      nodeId: 'ztunnel~10.0.1.10~web-1.demo~demo.svc.cluster.local',
      metadata: { NAMESPACE: 'demo' },
    });
    clients.push(c);
    c.subscribe(AUTHORIZATION_TYPE_URL);
    const r = await c.next(5000);
    assert.equal(r.typeUrl, AUTHORIZATION_TYPE_URL);
    const state = JSON.parse((await get(istiod.ports().debug, '/debug/connections')).text) as {
      connections: { identity?: string }[];
    };
    assert.ok(
      state.connections.some((x) => x.identity === WEB_ID),
      'authenticated by its certificate',
    );
    c.close();
  });

  it('refuses an xDS stream without credentials', async () => {
    const c = ztunnelClient();
    c.subscribe(ADDRESS_TYPE_URL);
    const s = await c.status;
    assert.equal(s.code, status.UNAUTHENTICATED);
  });

  it('picks up a token added to the token file without a restart', async () => {
    const added = 'ztunnel-node-2-token-added-later';
    writeAtomically(
      join(dir, 'tokens.yaml'),
      `${readFileSync(join(dir, 'tokens.yaml'), 'utf8')}${added}: { namespace: istio-system, serviceAccount: ztunnel, podName: ztunnel-2, podUid: zt-2 }\n`,
    );
    await eventually(
      'the token file to be reloaded',
      () => logs.find('token file reloaded').some((l) => l.tokens === 3),
      6000,
    );
    const c = ztunnelClient({ token: added, node: 'node-2' });
    c.subscribe(AUTHORIZATION_TYPE_URL);
    assert.equal((await c.next(5000)).typeUrl, AUTHORIZATION_TYPE_URL);
    c.close();
  });

  it('serves the xDS, CA and process metrics on one registry at /metrics', async () => {
    const res = await get(istiod.ports().monitoring, '/metrics');
    assert.equal(res.status, 200);
    const value = (series: string): number => {
      const line = res.text.split('\n').find((l) => l.startsWith(`${series} `));
      assert.ok(line, `${series} is exported`);
      return Number(line.slice(series.length + 1));
    };
    assert.ok(value('istiod_xds_pushes_total{type="istio.workload.Address"}') >= 2);
    assert.ok(value('istiod_xds_connected_proxies{proxy_type="ztunnel"}') >= 1);
    assert.ok(value('istiod_xds_push_time_seconds_count{type="istio.workload.Address"}') >= 1);
    assert.equal(value('istiod_xds_nacks_total{type="istio.workload.Address"}'), 1);
    assert.equal(value('istiod_certificates_issued_total'), 2);
    assert.equal(value('istiod_certificates_refused_total{reason="unauthorized"}'), 1);
    assert.ok(value('istiod_xds_rejected_streams_total{reason="unauthenticated"}') >= 1);
    assert.ok(value('process_resident_memory_bytes') > 0, 'process metrics');
    assert.ok(value('nodejs_heap_size_used_bytes') > 0, 'heap metrics');
    assert.equal(value('istio_build{component="pilot",tag="0.1.0"}'), 1);
  });

  it('shows the ambient index and rejected manifests on the debug port', async () => {
    const port = istiod.ports().debug;
    const ambient = JSON.parse((await get(port, '/debug/ambient')).text) as {
      workloads: Record<string, { node?: string }>;
      policies: Record<string, unknown>;
      diagnostics: unknown[];
    };
    assert.equal(ambient.workloads[WEB_UID]?.node, 'node-1');
    assert.ok('demo/allow-db' in ambient.policies);
    assert.ok(Array.isArray(ambient.diagnostics));

    writeFileSync(
      join(dir, 'manifests', 'broken.yaml'),
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\n  namespace: demo\n',
    );
    await eventually(
      'the malformed pod to be rejected',
      () => istiod.store.rejections().some((r) => r.ref.name === 'Bad_Name'),
      5000,
    );
    const rejected = JSON.parse((await get(port, '/debug/config/rejected')).text) as {
      ref: { name: string };
      reason: string;
    }[];
    const bad = rejected.find((r) => r.ref.name === 'Bad_Name');
    assert.ok(bad, 'listed');
    assert.match(bad.reason, /broken\.yaml:1/);
    const sources = JSON.parse((await get(port, '/debug/config/sources')).text) as {
      source: string;
      healthy: boolean;
    };
    assert.deepEqual([sources.source, sources.healthy], ['local', true]);
  });

  it('reads and changes log levels at /logging', async () => {
    const port = istiod.ports().debug;
    const before = JSON.parse((await get(port, '/logging')).text) as { defaultLevel: string };
    assert.equal(before.defaultLevel, 'info');
    const changed = await get(port, '/logging?level=xds:debug', { method: 'POST' });
    assert.equal(changed.status, 200);
    assert.equal((JSON.parse(changed.text) as { scopes: Record<string, string> }).scopes.xds, 'debug');
    assert.equal(istiod.logging.levelOf('xds'), 'debug');
    const bad = await get(port, '/logging?level=xds:loud', { method: 'PUT' });
    assert.equal(bad.status, 400);
    assert.match(bad.text, /loud/);
    assert.equal((await get(port, '/logging', { method: 'DELETE' })).status, 405);
    assert.equal((await get(port, '/nope')).status, 404);
  });

  it('drains on stop: /ready turns 503, open streams end UNAVAILABLE at the deadline', async () => {
    const port = istiod.ports().debug;
    const started = Date.now();
    const stopping = istiod.stop({ deadlineMs: 400 });
    const notReady = await get(port, '/ready');
    assert.equal(notReady.status, 503);
    assert.deepEqual(JSON.parse(notReady.text), { ready: false, pending: [READINESS_TASKS.shuttingDown] });
    const end = await ztunnel.status;
    assert.equal(end.code, status.UNAVAILABLE);
    assert.match(end.details, /shutting down/);
    await stopping;
    assert.ok(Date.now() - started >= 350, 'the stream was kept until the drain deadline');
    await assert.rejects(get(port, '/ready'), 'the debug server is closed');
  });

  it('keeps the same root across a restart with the same data directory', async () => {
    const again = await Istiod.create(testConfig(dir), { logging: logs.logging });
    try {
      await again.start();
      assert.equal(again.authority.rootPem(), rootPem);
      assert.equal(readFileSync(join(dir, 'root-cert.pem'), 'utf8'), rootPem);
      const c = new DeltaXdsClient({
        address: `localhost:${again.ports().xds}`,
        credentials: tls,
        nodeId: 'ztunnel~10.0.1.2~ztunnel-1.istio-system~istio-system.svc.cluster.local',
        metadata: { NAMESPACE: 'istio-system' },
        headers: { authorization: `Bearer ${ZTUNNEL_1_TOKEN}` },
      });
      clients.push(c);
      c.subscribe(ADDRESS_TYPE_URL);
      const r = await c.next(5000);
      assert.ok(
        r.resources.some((x) => x.name === WEB_UID),
        'a client trusting the old root file reaches the restarted istiod',
      );
    } finally {
      await again.stop({ mode: 'immediate' });
    }
  });
});

function workload(bytes: Uint8Array | undefined): Workload {
  const a = fromBinary(AddressSchema, bytes ?? new Uint8Array());
  assert.equal(a.type.case, 'workload');
  return a.type.value as Workload;
}

/** JSON log lines kept in memory, from a real Logging (so /logging changes what is captured). */
class CapturedLogs {
  readonly lines: Record<string, unknown>[] = [];
  readonly logging: Logging;

  constructor(levels: string) {
    const lines = this.lines;
    this.logging = new Logging({
      levels,
      destination: new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (const t of chunk.toString('utf8').split('\n')) if (t.trim() !== '') lines.push(JSON.parse(t));
          cb();
        },
      }),
    });
  }

  find(msg: string): Record<string, unknown>[] {
    return this.lines.filter((l) => l.msg === msg);
  }
}

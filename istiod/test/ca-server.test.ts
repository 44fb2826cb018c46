/**
 * End to end: the CA gRPC service on 127.0.0.1 over TLS (serving certificate from the CA itself),
 * called by a grpc-js client built from the generated descriptor, with tokens reviewed by a fake
 * Kubernetes API server and pods in a real ConfigStore.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigStore } from '@ambient/common/config/store';
import {
  type IstioCertificateRequest,
  IstioCertificateRequestSchema,
  type IstioCertificateResponse,
  IstioCertificateService,
} from '@ambient/common/gen/istio/v1/auth/ca_pb';
import { grpcClientConstructor, grpcServiceDefinition } from '@ambient/common/grpc';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { type Client, credentials, Metadata, Server, type ServiceError, status } from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { CertificateAuthority, MAX_WORKLOAD_CERT_TTL_SECONDS } from '../src/ca/authority.ts';
import { DEFAULT_TRUSTED_NODE_ACCOUNTS, NodeAuthorizer } from '../src/ca/node-authorizer.ts';
import { DirectoryRootStore } from '../src/ca/root-store.ts';
import { CaServer } from '../src/ca/server.ts';
import { AuthenticatorChain, OPAQUE_AUTHENTICATION_MESSAGE } from '../src/security/authenticate.ts';
import { KubeTokenAuthenticator } from '../src/security/kube-token.ts';
import { PeerCertificateAuthenticator } from '../src/security/peer-certificate.ts';
import { ServingCertificateProvider } from '../src/security/serving-credentials.ts';
import { x509 } from '../src/security/x509.ts';
import {
  captureLog,
  certificatesOf,
  FakeKubeApi,
  generateKeys,
  makeCsr,
  pod,
  privateKeyPem,
  serviceAccountToken,
  TRUST_DOMAIN,
  verifyIssuedChain,
} from './ca-fixtures.ts';

const ISTIOD_HOST = 'istiod.istio-system.svc';
const RATE_BURST = 25;
const WEB = 'spiffe://cluster.local/ns/default/sa/web';
const DB = 'spiffe://cluster.local/ns/default/sa/db';

const method = (() => {
  const m = grpcServiceDefinition(IstioCertificateService).createCertificate;
  if (!m) throw new Error('generated descriptor lacks createCertificate');
  return m;
})();
const CaClient = grpcClientConstructor(IstioCertificateService);

let dir: string;
let kube: FakeKubeApi;
let ca: CertificateAuthority;
let store: ConfigStore;
let grpcServer: Server;
let provider: ServingCertificateProvider;
let registry: Registry;
let port: number;
const clients: Client[] = [];
const { log, lines } = captureLog('ca');

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ca-server-'));
  kube = new FakeKubeApi();
  await kube.start();
  ca = await CertificateAuthority.selfSigned(new DirectoryRootStore(join(dir, 'root')), {
    trustDomain: TRUST_DOMAIN,
    log,
  });

  store = new ConfigStore();
  store.apply({
    upsert: [
      pod('istio-system', 'ztunnel-a', { sa: 'ztunnel', node: 'node-a', uid: 'zt-a' }),
      pod('istio-system', 'ztunnel-b', { sa: 'ztunnel', node: 'node-b', uid: 'zt-b' }),
      pod('default', 'web-1', { sa: 'web', node: 'node-a', uid: 'web-1' }),
      pod('default', 'db-1', { sa: 'db', node: 'node-b', uid: 'db-1' }),
      pod('default', 'crashed', { sa: 'crashy', node: 'node-a', uid: 'crashed', phase: 'Failed' }),
    ],
  });
  kube.tokens.set(
    'tok-ztunnel-a',
    serviceAccountToken('istio-system', 'ztunnel', { name: 'ztunnel-a', uid: 'zt-a' }),
  );
  kube.tokens.set(
    'tok-ztunnel-a-old',
    serviceAccountToken('istio-system', 'ztunnel', { name: 'ztunnel-a', uid: 'zt-a-previous' }),
  );
  kube.tokens.set('tok-web', serviceAccountToken('default', 'web', { name: 'web-1', uid: 'web-1' }));
  kube.tokens.set('tok-db', serviceAccountToken('default', 'db', { name: 'db-1', uid: 'db-1' }));
  kube.tokens.set('tok-rate', serviceAccountToken('default', 'rate', { name: 'rate-1', uid: 'rate-1' }));

  registry = new Registry();
  const caServer = new CaServer({
    authority: ca,
    authenticator: new AuthenticatorChain([
      new PeerCertificateAuthenticator({ trustDomain: TRUST_DOMAIN }),
      new KubeTokenAuthenticator({ api: kube.authentication(), trustDomain: TRUST_DOMAIN, log }),
    ]),
    impersonation: new NodeAuthorizer({
      store,
      trustDomain: TRUST_DOMAIN,
      trustedNodeAccounts: DEFAULT_TRUSTED_NODE_ACCOUNTS,
    }),
    registry,
    rateLimit: { perSecond: 0.01, burst: RATE_BURST },
    log,
  });
  provider = new ServingCertificateProvider({ authority: ca, dnsNames: [ISTIOD_HOST], log });
  await provider.start();
  grpcServer = new Server();
  caServer.addTo(grpcServer);
  port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', provider.credentials(), (err, p) => (err ? reject(err) : resolve(p))),
  );
});

after(async () => {
  for (const c of clients) c.close();
  provider.stop();
  await new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
  await kube.close();
  await rm(dir, { recursive: true, force: true });
});

function client(clientCert?: { key: string; chain: string }): Client {
  const creds = credentials.createSsl(
    Buffer.from(ca.rootPem()),
    clientCert ? Buffer.from(clientCert.key) : null,
    clientCert ? Buffer.from(clientCert.chain) : null,
  );
  const c = new CaClient(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': ISTIOD_HOST });
  clients.push(c);
  return c;
}

function callCa(
  c: Client,
  request: MessageInitShape<typeof IstioCertificateRequestSchema>,
  token?: string,
): Promise<IstioCertificateResponse> {
  const md = new Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  md.set('clusterid', 'Kubernetes');
  return new Promise((resolve, reject) => {
    c.makeUnaryRequest<IstioCertificateRequest, IstioCertificateResponse>(
      method.path,
      method.requestSerialize as (r: IstioCertificateRequest) => Buffer,
      method.responseDeserialize as (b: Buffer) => IstioCertificateResponse,
      create(IstioCertificateRequestSchema, request),
      md,
      { deadline: Date.now() + 10_000 },
      (err, response) => (err || !response ? reject(err) : resolve(response)),
    );
  });
}

/** A workload certificate and its key, for a client that authenticates with mTLS. */
async function clientCertificate(
  authority: CertificateAuthority,
  namespace: string,
  serviceAccount: string,
): Promise<{ key: string; chain: string }> {
  const keys = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as never,
  });
  const signed = await authority.sign({
    csrPem: csr.toString('pem'),
    identity: { trustDomain: TRUST_DOMAIN, namespace, serviceAccount },
    ttlSeconds: 600,
  });
  return { key: await privateKeyPem(keys), chain: signed.certChain.slice(0, -1).join('') };
}

function failsWith(code: status, details?: string | RegExp): (err: unknown) => boolean {
  return (err) => {
    const e = err as ServiceError;
    assert.equal(e.code, code, `expected ${status[code]}, got ${status[e.code]}: ${e.details}`);
    if (typeof details === 'string') assert.equal(e.details, details);
    else if (details) assert.match(e.details, details);
    return true;
  };
}

/** The reason logged for the latest refusal whose message is `msg`. */
function loggedCode(msg: string): unknown {
  return lines.findLast((l) => l.msg === msg)?.code;
}

async function metricValue(name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const v = metric?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? 0;
}

describe('IstioCertificateService over TLS', () => {
  test('istiod serves a certificate from its own CA for istiod.istio-system.svc', () => {
    const current = provider.current;
    assert.ok(current);
    const [leaf] = certificatesOf(current.certChainPem);
    assert.equal(leaf?.checkHost(ISTIOD_HOST), ISTIOD_HOST);
  });

  test('the serving certificate is renewed at half-life and new connections get the new one', async () => {
    const shortLived = new ServingCertificateProvider({
      authority: ca,
      dnsNames: [ISTIOD_HOST],
      ttlSeconds: 1,
      log,
    });
    await shortLived.start();
    try {
      const first = shortLived.current?.certChainPem;
      const seen: string[] = [];
      shortLived.addIdentityCertificateListener((u) => {
        if (u) seen.push(u.certificate.toString());
      });
      const deadline = Date.now() + 5000;
      while (shortLived.current?.certChainPem === first && Date.now() < deadline) await sleep(50);
      assert.notEqual(shortLived.current?.certChainPem, first, 'renewed');
      assert.ok(
        seen.includes(shortLived.current?.certChainPem ?? ''),
        'listeners got the renewed certificate',
      );
    } finally {
      shortLived.stop();
    }
  });

  test('without ImpersonatedIdentity the caller gets its own identity, chain leaf first and root last', async () => {
    const response = await callCa(
      client(),
      { csr: await makeCsr({ uris: [WEB] }), validityDuration: 3600n },
      'tok-web',
    );
    verifyIssuedChain(response.certChain, {
      uri: WEB,
      rootPem: ca.rootPem(),
      ttlSeconds: 3600,
      intermediates: 0,
    });
    // An empty ImpersonatedIdentity means none, as upstream reads it.
    const empty = await callCa(
      client(),
      { csr: await makeCsr(), metadata: { ImpersonatedIdentity: '' } },
      'tok-web',
    );
    verifyIssuedChain(empty.certChain, { uri: WEB });
  });

  test("ztunnel impersonates an identity running on its node (ztunnel's own request shape)", async () => {
    const response = await callCa(
      client(),
      {
        csr: await makeCsr({ uris: [WEB] }),
        validityDuration: 86_400n,
        metadata: { ImpersonatedIdentity: WEB },
      },
      'tok-ztunnel-a',
    );
    verifyIssuedChain(response.certChain, { uri: WEB, rootPem: ca.rootPem(), ttlSeconds: 86_400 });
  });

  test('checklist 1: impersonating an SA that runs only on another node is UNAUTHENTICATED and opaque', async () => {
    const before = await metricValue('istiod_certificates_refused_total', { reason: 'unauthorized' });
    await assert.rejects(
      callCa(
        client(),
        { csr: await makeCsr({ uris: [DB] }), metadata: { ImpersonatedIdentity: DB } },
        'tok-ztunnel-a',
      ),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('impersonation refused'), 'IDENTITY_NOT_ON_NODE');
    assert.equal(
      await metricValue('istiod_certificates_refused_total', { reason: 'unauthorized' }),
      before + 1,
    );
    // The same request from the ztunnel of db's node succeeds, so the refusal was about the node.
    kube.tokens.set(
      'tok-ztunnel-b',
      serviceAccountToken('istio-system', 'ztunnel', { name: 'ztunnel-b', uid: 'zt-b' }),
    );
    const ok = await callCa(
      client(),
      { csr: await makeCsr(), metadata: { ImpersonatedIdentity: DB } },
      'tok-ztunnel-b',
    );
    verifyIssuedChain(ok.certChain, { uri: DB });
  });

  test('Failed pods do not authorize impersonation', async () => {
    await assert.rejects(
      callCa(
        client(),
        {
          csr: await makeCsr(),
          metadata: { ImpersonatedIdentity: 'spiffe://cluster.local/ns/default/sa/crashy' },
        },
        'tok-ztunnel-a',
      ),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('impersonation refused'), 'IDENTITY_NOT_ON_NODE');
  });

  test('checklist 2: a non-ztunnel SA sending ImpersonatedIdentity is refused, even for a co-located identity', async () => {
    await assert.rejects(
      callCa(client(), { csr: await makeCsr(), metadata: { ImpersonatedIdentity: DB } }, 'tok-db'),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('impersonation refused'), 'CALLER_NOT_TRUSTED');
    await assert.rejects(
      callCa(client(), { csr: await makeCsr(), metadata: { ImpersonatedIdentity: 42 } }, 'tok-ztunnel-a'),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('impersonation refused'), 'REQUESTED_IDENTITY_INVALID');
  });

  test('checklist 3: a token bound to a previous pod UID is refused', async () => {
    await assert.rejects(
      callCa(
        client(),
        { csr: await makeCsr(), metadata: { ImpersonatedIdentity: WEB } },
        'tok-ztunnel-a-old',
      ),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('impersonation refused'), 'CALLER_POD_UID_MISMATCH');
  });

  test('checklist 4: the CSR asks for "victim"; the certificate is for the caller; a TTL above max is an error', async () => {
    const victimCsr = await makeCsr({
      uris: ['spiffe://cluster.local/ns/kube-system/sa/victim', 'victim'],
      subject: 'CN=victim',
    });
    const own = await callCa(client(), { csr: victimCsr }, 'tok-web');
    verifyIssuedChain(own.certChain, { uri: WEB, ttlSeconds: 86_400 });
    const impersonated = await callCa(
      client(),
      { csr: victimCsr, metadata: { ImpersonatedIdentity: WEB } },
      'tok-ztunnel-a',
    );
    verifyIssuedChain(impersonated.certChain, { uri: WEB });
    await assert.rejects(
      callCa(
        client(),
        { csr: victimCsr, validityDuration: BigInt(MAX_WORKLOAD_CERT_TTL_SECONDS + 1) },
        'tok-web',
      ),
      failsWith(status.INVALID_ARGUMENT, /ttl .* above the maximum/),
    );
  });

  test('unauthenticated calls get the same opaque answer as unauthorized ones', async () => {
    const csr = await makeCsr();
    await assert.rejects(
      callCa(client(), { csr }),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('certificate request authentication failed'), 'NO_CREDENTIALS');
    await assert.rejects(
      callCa(client(), { csr }, 'forged'),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('certificate request authentication failed'), 'TOKEN_REJECTED');
  });

  test('an oversized CSR and a CSR with a bad signature are INVALID_ARGUMENT', async () => {
    const tooBig = await metricValue('istiod_certificates_refused_total', { reason: 'csr_too_large' });
    const csr = await makeCsr();
    await assert.rejects(
      callCa(client(), { csr: csr + 'x'.repeat(70 * 1024) }, 'tok-web'),
      failsWith(status.INVALID_ARGUMENT, /over the 65536-byte limit/),
    );
    assert.equal(
      await metricValue('istiod_certificates_refused_total', { reason: 'csr_too_large' }),
      tooBig + 1,
    );
    await assert.rejects(
      callCa(client(), { csr: await makeCsr({ corruptSignature: true }) }, 'tok-web'),
      failsWith(status.INVALID_ARGUMENT, /signature/),
    );
    await assert.rejects(
      callCa(client(), { csr: 'not a csr' }, 'tok-web'),
      failsWith(status.INVALID_ARGUMENT),
    );
    assert.ok((await metricValue('istiod_certificates_refused_total', { reason: 'invalid_csr' })) >= 2);
  });

  test('a caller above its rate gets RESOURCE_EXHAUSTED; other callers are unaffected', async () => {
    const csr = await makeCsr();
    const c = client();
    for (let i = 0; i < RATE_BURST; i++) await callCa(c, { csr, validityDuration: 60n }, 'tok-rate');
    await assert.rejects(callCa(c, { csr }, 'tok-rate'), failsWith(status.RESOURCE_EXHAUSTED));
    assert.ok((await metricValue('istiod_certificates_refused_total', { reason: 'rate_limited' })) >= 1);
    verifyIssuedChain((await callCa(c, { csr }, 'tok-db')).certChain, { uri: DB });
  });

  test('a client certificate from the mesh CA authenticates without a token, but cannot impersonate', async () => {
    const mtls = client(await clientCertificate(ca, 'default', 'web'));
    const response = await callCa(mtls, { csr: await makeCsr() });
    verifyIssuedChain(response.certChain, { uri: WEB });
    await assert.rejects(
      callCa(mtls, { csr: await makeCsr(), metadata: { ImpersonatedIdentity: WEB } }),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('impersonation refused'), 'CALLER_NOT_TRUSTED');
  });

  test('a client certificate from another CA is not trusted by the TLS layer, so the call is unauthenticated', async () => {
    const otherCa = await CertificateAuthority.selfSigned(new DirectoryRootStore(join(dir, 'other-root')), {
      trustDomain: TRUST_DOMAIN,
      log,
    });
    const c = client(await clientCertificate(otherCa, 'default', 'web'));
    await assert.rejects(
      callCa(c, { csr: await makeCsr() }),
      failsWith(status.UNAUTHENTICATED, OPAQUE_AUTHENTICATION_MESSAGE),
    );
    assert.equal(loggedCode('certificate request authentication failed'), 'NO_CREDENTIALS');
  });

  test('metrics count issued and refused certificates and time signing', async () => {
    const issued = await metricValue('istiod_certificates_issued_total');
    await callCa(client(), { csr: await makeCsr() }, 'tok-web');
    assert.equal(await metricValue('istiod_certificates_issued_total'), issued + 1);
    const text = await registry.metrics();
    assert.match(text, /istiod_certificates_refused_total\{reason="unauthenticated"\} [1-9]/);
    assert.match(text, /istiod_certificates_refused_total\{reason="ttl_too_long"\} 1/);
    assert.match(text, /istiod_certificate_signing_duration_seconds_count [1-9]/);
    const issuedLine = lines.findLast((l) => l.msg === 'certificate issued');
    assert.equal(issuedLine?.identity, WEB);
    assert.equal(issuedLine?.caller, WEB);
  });
});

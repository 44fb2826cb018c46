/**
 * The data plane's CA client and certificate manager (`@ambient/common/identity/ca-client`,
 * `/cert-manager`) against the real istiod CA: CertificateAuthority, CaServer with node
 * authorization, token-file authentication, over TLS with istiod's own serving certificate.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createSecureContext } from 'node:tls';
import { ConfigStore } from '@ambient/common/config/store';
import { formatIdentity, parseIdentity } from '@ambient/common/identity';
import {
  CaClient,
  type CaClientOptions,
  CaError,
  type CaErrorCode,
  type CertificateFetcher,
} from '@ambient/common/identity/ca-client';
import { CertManager, type CertManagerEvents } from '@ambient/common/identity/cert-manager';
import { Logging } from '@ambient/common/log';
import { Server } from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { CertificateAuthority } from '../src/ca/authority.ts';
import { DEFAULT_TRUSTED_NODE_ACCOUNTS, NodeAuthorizer } from '../src/ca/node-authorizer.ts';
import { DirectoryRootStore } from '../src/ca/root-store.ts';
import { CaServer } from '../src/ca/server.ts';
import { ServingCertificateProvider } from '../src/security/serving-credentials.ts';
import { TokenFileAuthenticator } from '../src/security/token-file.ts';
import { pod, TRUST_DOMAIN } from './ca-fixtures.ts';
import { eventually } from './support/eventually.ts';
import { metricValue } from './support/metrics.ts';

const ISTIOD_HOST = 'istiod.istio-system.svc';
const ZTUNNEL_TOKEN = 'ztunnel-a-token-0123456789';
const WEB_TOKEN = 'web-1-token-0123456789abcd';
const WEB = parseIdentity('spiffe://cluster.local/ns/default/sa/web');
const DB = parseIdentity('spiffe://cluster.local/ns/default/sa/db');
const quiet = new Logging({ levels: 'off' });

let dir: string;
let ca: CertificateAuthority;
let caServer: CaServer;
let provider: ServingCertificateProvider;
let registry: Registry;
let grpcServer: Server | undefined;
let port = 0;
const clients: CaClient[] = [];

/** Serves the CA on 127.0.0.1 (the same port after the first start). */
async function startCa(): Promise<void> {
  const server = new Server();
  caServer.addTo(server);
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, provider.credentials(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  grpcServer = server;
}

function stopCa(): void {
  grpcServer?.forceShutdown();
  grpcServer = undefined;
}

function caClient(token: string, options: Partial<CaClientOptions> = {}): CaClient {
  const c = new CaClient({
    address: `127.0.0.1:${port}`,
    tls: { rootCert: () => ca.rootPem(), serverName: ISTIOD_HOST },
    token: () => token,
    clusterId: 'Kubernetes',
    log: quiet.logger('ca'),
    ...options,
  });
  clients.push(c);
  return c;
}

function rejectsWith(code: CaErrorCode, pattern?: RegExp): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof CaError, `expected a CaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

/** Checks the chain with node:crypto alone, independent of the client's own verification. */
function assertChainsToRoot(certChainPem: string, rootPem: string): X509Certificate {
  const [leafPem, ...rest] =
    certChainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  assert.ok(leafPem);
  const leaf = new X509Certificate(leafPem);
  let current = leaf;
  for (const p of rest) {
    const next = new X509Certificate(p);
    assert.ok(current.verify(next.publicKey));
    current = next;
  }
  assert.ok(current.verify(new X509Certificate(rootPem).publicKey), 'the chain ends at the mesh root');
  return leaf;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'clients-ca-'));
  const log = quiet.logger('ca');
  ca = await CertificateAuthority.selfSigned(new DirectoryRootStore(join(dir, 'root')), {
    trustDomain: TRUST_DOMAIN,
    log,
  });
  const store = new ConfigStore();
  store.apply({
    upsert: [
      pod('istio-system', 'ztunnel-a', { sa: 'ztunnel', node: 'node-a', uid: 'zt-a' }),
      pod('default', 'web-1', { sa: 'web', node: 'node-a', uid: 'web-1' }),
      pod('default', 'db-1', { sa: 'db', node: 'node-b', uid: 'db-1' }),
    ],
  });
  const tokenFile = join(dir, 'tokens.yaml');
  await writeFile(
    tokenFile,
    JSON.stringify({
      [ZTUNNEL_TOKEN]: {
        namespace: 'istio-system',
        serviceAccount: 'ztunnel',
        podName: 'ztunnel-a',
        podUid: 'zt-a',
      },
      [WEB_TOKEN]: { namespace: 'default', serviceAccount: 'web', podName: 'web-1', podUid: 'web-1' },
    }),
  );
  registry = new Registry();
  caServer = new CaServer({
    authority: ca,
    authenticator: await TokenFileAuthenticator.load(tokenFile, { trustDomain: TRUST_DOMAIN }),
    impersonation: new NodeAuthorizer({
      store,
      trustDomain: TRUST_DOMAIN,
      trustedNodeAccounts: DEFAULT_TRUSTED_NODE_ACCOUNTS,
    }),
    registry,
    log,
  });
  provider = new ServingCertificateProvider({ authority: ca, dnsNames: [ISTIOD_HOST], log });
  await provider.start();
  await startCa();
});

after(async () => {
  for (const c of clients) c.close();
  stopCa();
  provider.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('CaClient against istiod', () => {
  test('ztunnel gets a certificate for a pod of its node by impersonation', async () => {
    const client = caClient(ZTUNNEL_TOKEN, { ttlSeconds: 3600 });
    const before = Date.now();
    const cert = await client.fetchCertificate(WEB, { impersonate: true });
    assert.equal(formatIdentity(cert.identity), formatIdentity(WEB));
    const leaf = assertChainsToRoot(cert.certChainPem, ca.rootPem());
    assert.equal(leaf.subjectAltName, `URI:${formatIdentity(WEB)}`);
    assert.equal(cert.rootsPem.trim(), ca.rootPem().trim(), 'trust roots are the last element');
    assert.doesNotThrow(() => createSecureContext({ key: cert.key, cert: cert.certChain, ca: cert.roots }));
    const ttl = (cert.notAfter.getTime() - before) / 1000;
    assert.ok(ttl > 3590 && ttl <= 3601, `validity_duration honoured: ${ttl}s`);
    assert.equal(cert.refreshAt.getTime(), (cert.notBefore.getTime() + cert.notAfter.getTime()) / 2);
  });

  test('a workload gets its own identity without impersonation', async () => {
    const cert = await caClient(WEB_TOKEN).fetchCertificate(WEB, { impersonate: false });
    assertChainsToRoot(cert.certChainPem, ca.rootPem());
    const ttl = (cert.notAfter.getTime() - Date.now()) / 1000;
    assert.ok(ttl > 86_000, `the default ttl is 24 h: ${ttl}s`);
  });

  test('istiod certifies the caller when not impersonating, and the client refuses that wrong identity', async () => {
    await assert.rejects(
      caClient(WEB_TOKEN).fetchCertificate(DB, { impersonate: false }),
      rejectsWith('CA_IDENTITY_MISMATCH', /sa\/web.*instead of.*sa\/db/),
    );
  });

  test('impersonating an identity that has no pod on ztunnel’s node is refused by istiod', async () => {
    await assert.rejects(
      caClient(ZTUNNEL_TOKEN).fetchCertificate(DB, { impersonate: true }),
      rejectsWith('CA_REQUEST_FAILED', /request authentication failure/),
    );
    await assert.rejects(
      caClient('not-a-known-token-at-all').fetchCertificate(WEB, { impersonate: true }),
      rejectsWith('CA_REQUEST_FAILED'),
    );
  });
});

describe('CertManager against istiod', () => {
  function countingFetcher(client: CaClient): CertificateFetcher & { count: number } {
    const f = {
      count: 0,
      fetchCertificate: (identity: typeof WEB) => {
        f.count++;
        return client.fetchCertificate(identity);
      },
    };
    return f;
  }

  function record(manager: CertManager) {
    const rotated: CertManagerEvents['rotated'][0][] = [];
    const failed: CertManagerEvents['failed'][0][] = [];
    manager.on('rotated', (e) => rotated.push(e));
    manager.on('failed', (e) => failed.push(e));
    return { rotated, failed };
  }

  test('concurrent callers share one CSR', async () => {
    const fetcher = countingFetcher(caClient(ZTUNNEL_TOKEN, { impersonate: true }));
    const manager = new CertManager({ client: fetcher, log: quiet.logger('ca') });
    const issuedBefore = await metricValue(registry, 'istiod_certificates_issued_total');
    const certs = await Promise.all(Array.from({ length: 10 }, () => manager.fetch(WEB)));
    assert.ok(certs.every((c) => c === certs[0]));
    assert.equal(fetcher.count, 1);
    assert.equal((await metricValue(registry, 'istiod_certificates_issued_total')) - issuedBefore, 1);
    manager.stop();
  });

  test('refreshes at half-life, keeps the old certificate while the CA is down, and recovers', async () => {
    // istiod backdates leaves by 2 minutes, so a 124 s ttl gives a 244 s certificate whose
    // half-life is 2 s from now.
    const fetcher = countingFetcher(caClient(ZTUNNEL_TOKEN, { impersonate: true, ttlSeconds: 124 }));
    const manager = new CertManager({
      client: fetcher,
      log: quiet.logger('ca'),
      // Shorter than ztunnel's 1 s start so the test stays quick; the cap is not reached here.
      backoff: { initialMs: 250 },
    });
    const events = record(manager);
    const first = await manager.fetch(WEB);
    const untilRefresh = first.refreshAt.getTime() - Date.now();
    assert.ok(untilRefresh > 500 && untilRefresh < 3000, `half-life ${untilRefresh} ms away`);

    await eventually('the half-life refresh', () => events.rotated.length === 2, 6000);
    const second = events.rotated[1];
    assert.equal(second?.previous, first);
    assert.ok(Date.now() >= first.refreshAt.getTime(), 'not before the half-life');
    assert.notEqual(second?.certificate.serialNumber, first.serialNumber);
    assert.equal(manager.get(WEB), second?.certificate);

    // The CA goes away before the next half-life.
    stopCa();
    await eventually('failed renewals', () => events.failed.length >= 2, 8000);
    assert.ok(
      events.failed.every((f) => f.retained),
      'the valid certificate is kept',
    );
    assert.ok(
      events.failed.every((f) => f.error instanceof CaError && f.error.code === 'CA_UNAVAILABLE'),
      String(events.failed[0]?.error),
    );
    assert.ok(
      (events.failed[1]?.retryInMs ?? 0) > (events.failed[0]?.retryInMs ?? Infinity),
      'backoff grows',
    );
    assert.equal(await manager.fetch(WEB), second?.certificate);
    assert.equal(manager.state(WEB), 'Available');
    assert.equal(manager.toJSON()[0]?.state, 'Available');

    await startCa();
    await eventually('the renewal after the CA returns', () => events.rotated.length === 3, 8000);
    assert.equal(events.rotated[2]?.previous, second?.certificate);
    assertChainsToRoot(events.rotated[2]?.certificate.certChainPem ?? '', ca.rootPem());
    manager.stop();
  });
});

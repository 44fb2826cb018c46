/**
 * The CA client's response verification against certificates from a test CA, and its request
 * against a fake IstioCertificateService. The fake is the point here: the real istiod CA never
 * returns a wrong identity or an empty chain (checklist 5), so a server that does must be made.
 * Issuance by the real istiod CA is tested in istiod/test/clients-ca.test.ts.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  type IstioCertificateRequest,
  type IstioCertificateResponse,
  IstioCertificateResponseSchema,
  IstioCertificateService,
} from '@ambient/common/gen/istio/v1/auth/ca_pb';
import { create } from '@bufbuild/protobuf';
import {
  type Metadata,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { grpcServiceDefinition } from '../grpc/service.ts';
import { Logging } from '../log.ts';
import { TestCa, VALIDITY } from '../testing/pki.ts';
import { CaClient, CaError, type CaErrorCode, workloadCertificateFromResponse } from './ca-client.ts';
import { formatIdentity, parseIdentity } from './identity.ts';

const WEB = parseIdentity('spiffe://cluster.local/ns/default/sa/web');
const DB = parseIdentity('spiffe://cluster.local/ns/default/sa/db');
const quiet = new Logging({ levels: 'off' }).logger('ca');

function spkiOf(keyPem: string): Buffer {
  return createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
}

function rejectsWith(code: CaErrorCode, pattern?: RegExp): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof CaError, `expected a CaError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

describe('workloadCertificateFromResponse', () => {
  let root: TestCa;
  let inter: TestCa;
  let other: TestCa;

  before(async () => {
    root = await TestCa.create();
    inter = await root.intermediate();
    other = await TestCa.create();
  });

  test('accepts leaf, intermediate, root and takes the roots from the last element', async () => {
    const issued = await inter.issue({ identity: WEB, freshKey: true });
    const cert = workloadCertificateFromResponse({
      identity: WEB,
      keyPem: issued.key,
      publicKeySpki: spkiOf(issued.key),
      certChain: issued.caResponse,
      now: Date.now(),
    });
    assert.equal(formatIdentity(cert.identity), formatIdentity(WEB));
    assert.equal(cert.certChainPem, `${issued.cert.trim()}\n${inter.cert.trim()}\n`);
    assert.equal(cert.rootsPem, `${root.root.trim()}\n`);
    assert.equal(cert.key, issued.key);
    assert.equal(cert.certChain, cert.certChainPem);
    assert.equal(cert.roots, cert.rootsPem);
    // X.509 times have whole seconds.
    assert.equal(cert.notBefore.getTime(), Math.floor(issued.notBefore.getTime() / 1000) * 1000);
    assert.equal(cert.notAfter.getTime(), Math.floor(issued.notAfter.getTime() / 1000) * 1000);
    assert.equal(cert.refreshAt.getTime(), (cert.notBefore.getTime() + cert.notAfter.getTime()) / 2);
    assert.match(cert.serialNumber, /^[0-9A-F]+$/);
  });

  test('a last element with several roots (rotation) keeps all of them as trust roots', async () => {
    const issued = await root.issue({ identity: WEB });
    const bundle = `${other.root.trim()}\n${root.root.trim()}\n`;
    const cert = workloadCertificateFromResponse({
      identity: WEB,
      keyPem: issued.key,
      publicKeySpki: spkiOf(issued.key),
      certChain: [issued.cert, bundle],
      now: Date.now(),
    });
    assert.equal(cert.rootsPem, bundle);
    assert.equal(cert.certChainPem, `${issued.cert.trim()}\n`);
  });

  test('refuses what ztunnel refuses and what would fail later', async () => {
    const web = await inter.issue({ identity: WEB });
    const good = { identity: WEB, keyPem: web.key, publicKeySpki: spkiOf(web.key), now: Date.now() };
    const check = (certChain: readonly string[], code: CaErrorCode, pattern?: RegExp, overrides = {}) =>
      assert.throws(
        () => workloadCertificateFromResponse({ ...good, certChain, ...overrides }),
        rejectsWith(code, pattern),
      );

    check([], 'CA_RESPONSE_EMPTY', /empty certificate chain/);
    const db = await inter.issue({ identity: DB });
    check(db.caResponse, 'CA_IDENTITY_MISMATCH', /sa\/db.*instead of.*sa\/web/);
    const twoSans = await inter.issue({ uris: [formatIdentity(WEB), formatIdentity(DB)] });
    check(twoSans.caResponse, 'CA_IDENTITY_MISMATCH');
    const noSan = await inter.issue({ uris: [] });
    check(noSan.caResponse, 'CA_IDENTITY_MISMATCH');
    const fresh = await inter.issue({ identity: WEB, freshKey: true });
    check(web.caResponse, 'CA_KEY_MISMATCH', undefined, { publicKeySpki: spkiOf(fresh.key) });
    const expired = await inter.issue({ identity: WEB, ...VALIDITY.expired() });
    check(expired.caResponse, 'CA_CERT_EXPIRED');
    check([web.cert], 'CA_RESPONSE_NO_ROOTS');
    check([web.cert, other.root], 'CA_CHAIN_INVALID', /does not lead to any/);
    check([web.cert, root.root], 'CA_CHAIN_INVALID', /does not lead/);
    check([web.cert, other.cert, root.root], 'CA_CHAIN_INVALID', /intermediate 1/);
    check([`${web.cert}${inter.cert}`, root.root], 'CA_RESPONSE_MALFORMED', /exactly the leaf/);
    check([web.cert, 'not a certificate', root.root], 'CA_RESPONSE_MALFORMED', /cert_chain\[1\]/);
    check(
      [web.cert, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', root.root],
      'CA_RESPONSE_MALFORMED',
      /unreadable/,
    );
  });
});

/** A fake CA: records each request and answers with whatever the test set. */
class FakeCa {
  readonly requests: { request: IstioCertificateRequest; metadata: Metadata }[] = [];
  answer: (req: IstioCertificateRequest) => IstioCertificateResponse | { code: status; details: string } =
    () => create(IstioCertificateResponseSchema, {});
  readonly #server = new Server();
  port = 0;

  async start(): Promise<void> {
    this.#server.addService(grpcServiceDefinition(IstioCertificateService), {
      createCertificate: (
        call: ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
        cb: sendUnaryData<IstioCertificateResponse>,
      ) => {
        this.requests.push({ request: call.request, metadata: call.metadata });
        const a = this.answer(call.request);
        if ('code' in a) cb(a);
        else cb(null, a);
      },
    });
    this.port = await new Promise((resolve, reject) =>
      this.#server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
  }

  stop(): void {
    this.#server.forceShutdown();
  }
}

describe('CaClient against a fake CA', () => {
  const fake = new FakeCa();
  let ca: TestCa;
  let client: CaClient;

  before(async () => {
    ca = await TestCa.create();
    await fake.start();
    client = new CaClient({
      address: `127.0.0.1:${fake.port}`,
      clusterId: 'cluster-7',
      token: () => 'the-token',
      headers: { 'x-extra': 'yes' },
      ttlSeconds: 3600,
      log: quiet,
    });
  });
  after(() => {
    client.close();
    fake.stop();
  });

  test('sends a P-256 CSR with one critical URI SAN, the ttl, the headers, and impersonation metadata', async () => {
    fake.answer = () => create(IstioCertificateResponseSchema, { certChain: [] });
    await assert.rejects(
      client.fetchCertificate(WEB, { impersonate: true }),
      rejectsWith('CA_RESPONSE_EMPTY'),
    );
    await assert.rejects(
      client.fetchCertificate(WEB, { impersonate: false }),
      rejectsWith('CA_RESPONSE_EMPTY'),
    );
    const [impersonating, own] = fake.requests.slice(-2);
    assert.ok(impersonating && own);
    assert.deepEqual(impersonating.request.metadata, { ImpersonatedIdentity: formatIdentity(WEB) });
    assert.equal(own.request.metadata, undefined, 'no metadata without impersonation');
    assert.equal(impersonating.request.validityDuration, 3600n);
    assert.deepEqual(impersonating.metadata.get('authorization'), ['Bearer the-token']);
    assert.deepEqual(impersonating.metadata.get('clusterid'), ['cluster-7']);
    assert.deepEqual(impersonating.metadata.get('x-extra'), ['yes']);

    const csrs = [impersonating, own].map((r) => new x509.Pkcs10CertificateRequest(r.request.csr));
    assert.notEqual(csrs[0]?.publicKey.rawData.byteLength, 0);
    assert.notDeepEqual(
      Buffer.from(csrs[0]?.publicKey.rawData ?? new ArrayBuffer(0)),
      Buffer.from(csrs[1]?.publicKey.rawData ?? new ArrayBuffer(0)),
      'a new key per request',
    );
    for (const csr of csrs) {
      assert.ok(await csr.verify(), 'the CSR is signed by its key');
      assert.equal(csr.subject, '', 'no subject, no CN');
      assert.deepEqual(csr.publicKey.algorithm, { name: 'ECDSA', namedCurve: 'P-256' });
      // By OID: a lookup by class compares constructors, which the extension factory does not keep.
      const san = csr.getExtension('2.5.29.17') as x509.SubjectAlternativeNameExtension | null;
      assert.ok(san?.critical, 'the SAN is critical (empty subject)');
      assert.deepEqual(san?.names.toJSON(), [{ type: 'url', value: formatIdentity(WEB) }]);
    }
  });

  test('a leaf for another identity is refused and nothing is returned (checklist 5, wrong_identity)', async () => {
    const db = await ca.issue({ identity: DB });
    fake.answer = () => create(IstioCertificateResponseSchema, { certChain: [...db.caResponse] });
    await assert.rejects(
      client.fetchCertificate(WEB, { impersonate: true }),
      rejectsWith('CA_IDENTITY_MISMATCH'),
    );
  });

  test('a gRPC refusal is a retryable CA_REQUEST_FAILED carrying the status details', async () => {
    fake.answer = () => ({ code: status.UNAUTHENTICATED, details: 'request authentication failure' });
    await assert.rejects(client.fetchCertificate(WEB), (e: unknown) => {
      rejectsWith('CA_REQUEST_FAILED', /request authentication failure/)(e);
      return (e as CaError).retryable;
    });
  });

  test('an unreachable CA is CA_UNAVAILABLE within the connect timeout', async () => {
    const down = new CaClient({
      address: '127.0.0.1:1',
      clusterId: 'c',
      connectTimeoutMs: 2000,
      log: quiet,
    });
    const started = Date.now();
    await assert.rejects(down.fetchCertificate(WEB), rejectsWith('CA_UNAVAILABLE', /127\.0\.0\.1:1/));
    assert.ok(Date.now() - started < 2000, 'a refused connection fails fast, before the timeout');
    down.close();
  });
});

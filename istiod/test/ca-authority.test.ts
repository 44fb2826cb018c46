import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeIdentity } from '@ambient/common/identity';
import {
  CertificateAuthority,
  MAX_CSR_BYTES,
  MAX_WORKLOAD_CERT_TTL_SECONDS,
  splitCertificates,
} from '../src/ca/authority.ts';
import { CaError } from '../src/ca/errors.ts';
import { DirectoryRootStore, SecretRootStore } from '../src/ca/root-store.ts';
import {
  captureLog,
  certificatesOf,
  FakeKubeApi,
  makeCsr,
  TRUST_DOMAIN,
  verifyIssuedChain,
  writePluggedCa,
} from './ca-fixtures.ts';

const ID = makeIdentity(TRUST_DOMAIN, 'default', 'app');
const URI = 'spiffe://cluster.local/ns/default/sa/app';

const quiet = captureLog().log;
let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ca-authority-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function rejectsWith(code: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof CaError, `expected CaError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

describe('self-signed root', () => {
  test('is ECDSA P-256, 10 years, O=<trust domain>, and is reloaded after a restart', async () => {
    const rootDir = join(dir, 'root-persist');
    const { log } = captureLog();
    const first = await CertificateAuthority.selfSigned(new DirectoryRootStore(rootDir), {
      trustDomain: TRUST_DOMAIN,
      log,
    });
    const root = new X509Certificate(first.rootPem());
    assert.equal(root.subject, 'O=cluster.local');
    assert.ok(root.ca);
    assert.equal(root.publicKey.asymmetricKeyType, 'ec');
    assert.equal(root.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const years = (new Date(root.validTo).getTime() - Date.now()) / (365 * 86_400_000);
    assert.ok(years > 9.9 && years < 10.1, `root lives ${years} years`);
    assert.equal((await stat(join(rootDir, 'ca-key.pem'))).mode & 0o777, 0o600, 'key file is private');

    // A new authority over the same directory (an istiod restart) signs under the same root.
    const second = await CertificateAuthority.selfSigned(new DirectoryRootStore(rootDir), {
      trustDomain: TRUST_DOMAIN,
      log,
    });
    assert.equal(second.rootPem(), first.rootPem());
    const signed = await second.sign({
      csrPem: await makeCsr({ uris: [URI] }),
      identity: ID,
      ttlSeconds: 3600,
    });
    verifyIssuedChain(signed.certChain, {
      uri: URI,
      rootPem: first.rootPem(),
      ttlSeconds: 3600,
      intermediates: 0,
    });
  });

  test('a root whose key does not match its certificate is refused, not replaced', async () => {
    const a = join(dir, 'root-a');
    const b = join(dir, 'root-b');
    await CertificateAuthority.selfSigned(new DirectoryRootStore(a), {
      trustDomain: TRUST_DOMAIN,
      log: quiet,
    });
    await CertificateAuthority.selfSigned(new DirectoryRootStore(b), {
      trustDomain: TRUST_DOMAIN,
      log: quiet,
    });
    await writeFile(join(a, 'ca-key.pem'), await readFile(join(b, 'ca-key.pem')));
    await assert.rejects(
      CertificateAuthority.selfSigned(new DirectoryRootStore(a), { trustDomain: TRUST_DOMAIN, log: quiet }),
      rejectsWith('ROOT_INVALID'),
    );
    await rm(join(a, 'ca-key.pem'));
    await assert.rejects(
      CertificateAuthority.selfSigned(new DirectoryRootStore(a), { trustDomain: TRUST_DOMAIN, log: quiet }),
      rejectsWith('ROOT_INVALID'),
    );
  });
});

describe('signing', () => {
  let ca: CertificateAuthority;
  before(async () => {
    ca = await CertificateAuthority.selfSigned(new DirectoryRootStore(join(dir, 'signing')), {
      trustDomain: TRUST_DOMAIN,
      log: captureLog().log,
    });
  });

  test('checklist 4: the CSR asks for SAN "victim" and a subject; the leaf carries only the given identity', async () => {
    const csrPem = await makeCsr({
      uris: ['spiffe://cluster.local/ns/kube-system/sa/victim', 'victim'],
      dns: ['victim.example.com'],
      subject: 'CN=victim,O=evil',
    });
    const signed = await ca.sign({ csrPem, identity: ID, ttlSeconds: 600 });
    verifyIssuedChain(signed.certChain, { uri: URI, rootPem: ca.rootPem(), ttlSeconds: 600 });
  });

  test('checklist 4: a ttl above the maximum is an error; zero and negative get the 24 h default', async () => {
    const csrPem = await makeCsr();
    await assert.rejects(
      ca.sign({ csrPem, identity: ID, ttlSeconds: BigInt(MAX_WORKLOAD_CERT_TTL_SECONDS + 1) }),
      rejectsWith('TTL_TOO_LONG'),
    );
    await assert.rejects(
      ca.sign({ csrPem, identity: ID, ttlSeconds: 2n ** 62n }),
      rejectsWith('TTL_TOO_LONG'),
    );
    const atMax = await ca.sign({ csrPem, identity: ID, ttlSeconds: MAX_WORKLOAD_CERT_TTL_SECONDS });
    verifyIssuedChain(atMax.certChain, { uri: URI, ttlSeconds: MAX_WORKLOAD_CERT_TTL_SECONDS });
    for (const ttl of [0, -5, 0n, -1n]) {
      const signed = await ca.sign({ csrPem, identity: ID, ttlSeconds: ttl });
      verifyIssuedChain(signed.certChain, { uri: URI, ttlSeconds: 86_400 });
    }
  });

  test('the chain checker itself fails a leaf for another identity or a chain against another root', async () => {
    const signed = await ca.sign({ csrPem: await makeCsr(), identity: ID, ttlSeconds: 60 });
    assert.throws(() =>
      verifyIssuedChain(signed.certChain, { uri: 'spiffe://cluster.local/ns/default/sa/other' }),
    );
    const other = await CertificateAuthority.selfSigned(new DirectoryRootStore(join(dir, 'other-root')), {
      trustDomain: TRUST_DOMAIN,
      log: captureLog().log,
    });
    assert.throws(() => verifyIssuedChain([signed.certChain[0] as string, other.rootPem()], { uri: URI }));
  });

  test('every leaf gets its own random positive serial, and notBefore is backdated', async () => {
    const csrPem = await makeCsr();
    const serials = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const signed = await ca.sign({ csrPem, identity: ID, ttlSeconds: 60 });
      const leaf = new X509Certificate(signed.certChain[0] as string);
      assert.equal(leaf.serialNumber.toLowerCase(), signed.serialNumber.toLowerCase());
      assert.ok(signed.serialNumber.length >= 32, 'at least 128 bits');
      assert.ok(Number.parseInt(signed.serialNumber.slice(0, 2), 16) < 0x80, 'positive');
      serials.add(signed.serialNumber);
      assert.ok(Date.now() - new Date(leaf.validFrom).getTime() >= 60_000, 'backdated at least a minute');
    }
    assert.equal(serials.size, 5);
  });

  test('accepts P-384 and RSA-2048 CSRs', async () => {
    for (const key of ['p384', 'rsa2048'] as const) {
      const signed = await ca.sign({ csrPem: await makeCsr({ key }), identity: ID, ttlSeconds: 60 });
      verifyIssuedChain(signed.certChain, { uri: URI });
    }
  });

  test('refuses bad CSRs: corrupted signature, weak or unsupported keys, junk, oversized, several blocks', async () => {
    await assert.rejects(
      ca.sign({ csrPem: await makeCsr({ corruptSignature: true }), identity: ID, ttlSeconds: 60 }),
      rejectsWith('CSR_SIGNATURE_INVALID'),
    );
    await assert.rejects(
      ca.sign({ csrPem: await makeCsr({ key: 'rsa1024' }), identity: ID, ttlSeconds: 60 }),
      rejectsWith('CSR_KEY_UNSUPPORTED'),
    );
    await assert.rejects(
      ca.sign({ csrPem: await makeCsr({ key: 'p521' }), identity: ID, ttlSeconds: 60 }),
      rejectsWith('CSR_KEY_UNSUPPORTED'),
    );
    await assert.rejects(
      ca.sign({ csrPem: 'hello', identity: ID, ttlSeconds: 60 }),
      rejectsWith('CSR_MALFORMED'),
    );
    await assert.rejects(
      ca.sign({
        csrPem: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
        identity: ID,
        ttlSeconds: 60,
      }),
      rejectsWith('CSR_MALFORMED'),
    );
    const one = await makeCsr();
    await assert.rejects(
      ca.sign({ csrPem: one + one, identity: ID, ttlSeconds: 60 }),
      rejectsWith('CSR_MALFORMED'),
    );
    await assert.rejects(
      ca.sign({ csrPem: ca.rootPem(), identity: ID, ttlSeconds: 60 }),
      rejectsWith('CSR_MALFORMED'),
      'a certificate is not a CSR',
    );
    await assert.rejects(
      ca.sign({ csrPem: one + ' '.repeat(MAX_CSR_BYTES), identity: ID, ttlSeconds: 60 }),
      rejectsWith('CSR_TOO_LARGE'),
    );
  });

  test('refuses to certify an identity outside the mesh trust domain', async () => {
    await assert.rejects(
      ca.sign({
        csrPem: await makeCsr(),
        identity: makeIdentity('evil.example', 'default', 'app'),
        ttlSeconds: 60,
      }),
      rejectsWith('IDENTITY_TRUST_DOMAIN'),
    );
  });

  test('issues istiod a serving certificate for its DNS names that verifies against the root', async () => {
    const serving = await ca.issueServingCertificate({
      dnsNames: ['istiod.istio-system.svc', 'istiod.istio-system.svc.cluster.local'],
      ipAddresses: ['127.0.0.1'],
      ttlSeconds: 3600,
    });
    const [leaf] = certificatesOf(serving.certChainPem);
    assert.ok(leaf);
    const root = new X509Certificate(serving.rootPem);
    assert.ok(leaf.checkIssued(root) && leaf.verify(root.publicKey));
    assert.equal(leaf.checkHost('istiod.istio-system.svc'), 'istiod.istio-system.svc');
    assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(leaf.checkHost('evil.example'), undefined);
    assert.ok(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(serving.privateKeyPem)));
    await assert.rejects(ca.issueServingCertificate({ dnsNames: [] }), rejectsWith('SERVING_NAMES_INVALID'));
    await assert.rejects(
      ca.issueServingCertificate({ dnsNames: ['bad name'] }),
      rejectsWith('SERVING_NAMES_INVALID'),
    );
  });
});

describe('plugged-in CA (cacerts)', () => {
  for (const chainIncludesRoot of [false, true]) {
    test(`the chain is leaf, signing CA, intermediate, root (cert-chain.pem ${chainIncludesRoot ? 'with' : 'without'} the root)`, async () => {
      const plugged = await writePluggedCa(join(dir, `cacerts-${chainIncludesRoot}`), { chainIncludesRoot });
      const ca = await CertificateAuthority.load({
        trustDomain: TRUST_DOMAIN,
        pluggedCertsDir: plugged.dir,
        rootStore: new DirectoryRootStore(join(dir, 'unused-root')),
        log: captureLog().log,
      });
      assert.equal(ca.mode, 'plugged-in');
      assert.equal(ca.rootPem(), plugged.rootPem);
      const signed = await ca.sign({ csrPem: await makeCsr(), identity: ID, ttlSeconds: 3600 });
      verifyIssuedChain(signed.certChain, { uri: URI, rootPem: plugged.rootPem, intermediates: 2 });
      assert.deepEqual(signed.certChain.slice(1), [
        plugged.caCertPem,
        plugged.intermediatePem,
        plugged.rootPem,
      ]);
      await assert.rejects(stat(join(dir, 'unused-root')), 'no self-signed root was made');
    });
  }

  test('refuses an inconsistent cacerts directory', async () => {
    const good = await writePluggedCa(join(dir, 'cacerts-good'));
    const other = await writePluggedCa(join(dir, 'cacerts-other'));
    // Root of another hierarchy: the chain no longer reaches it.
    const badRoot = join(dir, 'cacerts-bad-root');
    await writePluggedCa(badRoot);
    await writeFile(join(badRoot, 'root-cert.pem'), other.rootPem);
    await assert.rejects(
      CertificateAuthority.pluggedIn(badRoot, { trustDomain: TRUST_DOMAIN, log: quiet }),
      rejectsWith('CACERTS_INVALID'),
    );
    // Key of another signing CA.
    const badKey = join(dir, 'cacerts-bad-key');
    await writePluggedCa(badKey);
    await writeFile(join(badKey, 'ca-key.pem'), await readFile(join(good.dir, 'ca-key.pem')));
    await assert.rejects(
      CertificateAuthority.pluggedIn(badKey, { trustDomain: TRUST_DOMAIN, log: quiet }),
      rejectsWith('CACERTS_INVALID'),
    );
    // Missing root-cert.pem.
    const noRoot = join(dir, 'cacerts-no-root');
    await writePluggedCa(noRoot);
    await rm(join(noRoot, 'root-cert.pem'));
    await assert.rejects(
      CertificateAuthority.pluggedIn(noRoot, { trustDomain: TRUST_DOMAIN, log: quiet }),
      rejectsWith('CACERTS_INVALID'),
    );
  });

  test('splitCertificates normalizes a bundle into one PEM per certificate', async () => {
    const plugged = await writePluggedCa(join(dir, 'cacerts-split'), { chainIncludesRoot: true });
    const parts = splitCertificates(await readFile(join(plugged.dir, 'cert-chain.pem'), 'utf8'));
    assert.deepEqual(parts, [plugged.caCertPem, plugged.intermediatePem, plugged.rootPem]);
  });
});

describe('root in the istio-ca-secret Secret', () => {
  let kube: FakeKubeApi;
  before(async () => {
    kube = new FakeKubeApi();
    await kube.start();
  });
  after(async () => {
    await kube.close();
  });

  test('is created once with ca-cert.pem and ca-key.pem, then reused', async () => {
    const store = new SecretRootStore(kube.core());
    const first = await CertificateAuthority.selfSigned(store, {
      trustDomain: TRUST_DOMAIN,
      log: captureLog().log,
    });
    const secret = kube.get('secrets', 'istio-system', 'istio-ca-secret');
    assert.ok(secret);
    assert.equal(secret.type, 'istio.io/ca-root');
    const data = secret.data as Record<string, string>;
    assert.equal(Buffer.from(data['ca-cert.pem'] ?? '', 'base64').toString(), first.rootPem());
    assert.match(Buffer.from(data['ca-key.pem'] ?? '', 'base64').toString(), /BEGIN PRIVATE KEY/);
    const again = await CertificateAuthority.selfSigned(new SecretRootStore(kube.core()), {
      trustDomain: TRUST_DOMAIN,
      log: quiet,
    });
    assert.equal(again.rootPem(), first.rootPem());
    kube.delete('secrets', 'istio-system', 'istio-ca-secret');
  });

  test("a replica that loses the create race (409) adopts the winner's root", async () => {
    const winner = await CertificateAuthority.selfSigned(new DirectoryRootStore(join(dir, 'winner')), {
      trustDomain: TRUST_DOMAIN,
      log: quiet,
    });
    const winnerFiles = {
      'ca-cert.pem': Buffer.from(await readFile(join(dir, 'winner', 'ca-cert.pem'))).toString('base64'),
      'ca-key.pem': Buffer.from(await readFile(join(dir, 'winner', 'ca-key.pem'))).toString('base64'),
    };
    kube.beforeCreate = (resource, namespace, name) => {
      if (resource === 'secrets') kube.put('secrets', namespace, { metadata: { name }, data: winnerFiles });
    };
    const { log, lines } = captureLog();
    const loser = await CertificateAuthority.selfSigned(new SecretRootStore(kube.core()), {
      trustDomain: TRUST_DOMAIN,
      log,
    });
    kube.beforeCreate = undefined;
    assert.equal(loser.rootPem(), winner.rootPem());
    assert.ok(lines.some((l) => l.msg === 'adopted the root another replica created'));
    const signed = await loser.sign({ csrPem: await makeCsr(), identity: ID, ttlSeconds: 60 });
    verifyIssuedChain(signed.certChain, { uri: URI, rootPem: winner.rootPem() });
    kube.delete('secrets', 'istio-system', 'istio-ca-secret');
  });

  test('an API failure is a retryable ROOT_STORE_FAILED; a Secret lacking the key is ROOT_INVALID', async () => {
    kube.fail('GET', /secrets\/istio-ca-secret$/, 500);
    const err = await CertificateAuthority.selfSigned(new SecretRootStore(kube.core()), {
      trustDomain: TRUST_DOMAIN,
    }).catch((e: unknown) => e);
    assert.ok(err instanceof CaError && err.code === 'ROOT_STORE_FAILED' && err.retryable, String(err));
    kube.put('secrets', 'istio-system', {
      metadata: { name: 'istio-ca-secret' },
      data: { 'ca-cert.pem': 'AAAA' },
    });
    await assert.rejects(
      CertificateAuthority.selfSigned(new SecretRootStore(kube.core()), {
        trustDomain: TRUST_DOMAIN,
        log: quiet,
      }),
      rejectsWith('ROOT_INVALID'),
    );
    kube.delete('secrets', 'istio-system', 'istio-ca-secret');
  });
});

import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { uriSans } from '../tls/san.ts';
import { TestCa, VALIDITY } from './pki.ts';

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

describe('TestCa', () => {
  it('issues Istio-shaped leaves: P-256 key, one critical URI SAN, both EKUs, no subject', async () => {
    const ca = await TestCa.create();
    const leaf = await ca.issue({ identity: 'spiffe://td/ns/ns/sa/sa' });
    const key = createPrivateKey(leaf.key);
    assert.equal(key.asymmetricKeyType, 'ec');
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const cert = new X509Certificate(leaf.cert);
    assert.ok(!cert.subject, `subject should be empty, got ${JSON.stringify(cert.subject)}`);
    assert.deepEqual(uriSans(cert.raw), ['spiffe://td/ns/ns/sa/sa']);
    assert.deepEqual([...(cert.keyUsage ?? [])].sort(), [SERVER_AUTH, CLIENT_AUTH]);
    const san = new x509.X509Certificate(leaf.cert).getExtension(x509.SubjectAlternativeNameExtension);
    assert.equal(san?.critical, true);
    assert.ok(cert.checkIssued(new X509Certificate(ca.root)));
    assert.ok(cert.verify(new X509Certificate(ca.root).publicKey));
    assert.equal(cert.ca, false);
  });

  it('chains leaves through an intermediate and orders the CA response leaf first, root last', async () => {
    const root = await TestCa.create();
    const mid = await root.intermediate();
    const leaf = await mid.issue();
    assert.equal(leaf.root, root.root);
    assert.equal(leaf.caResponse.length, 3);
    assert.equal(leaf.caResponse[0]?.trim(), leaf.cert.trim());
    assert.equal(leaf.caResponse[2]?.trim(), root.root.trim());
    const [l, m] = leaf.caResponse.map((p) => new X509Certificate(p));
    assert.ok(l?.verify((m as X509Certificate).publicKey));
    assert.ok(m?.verify(new X509Certificate(root.root).publicKey));
    // The TLS chain is leaf + intermediate, without the root.
    assert.equal(leaf.chain.match(/BEGIN CERTIFICATE/g)?.length, 2);
  });

  it('loads an existing root from PEM (PKCS#8 or SEC1 key) and issues leaves that chain to it', async () => {
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
    const keys = (await webcrypto.subtle.generateKey(alg, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const rootCert = await x509.X509CertificateGenerator.createSelfSigned({
      name: 'O=cluster.local',
      keys,
      signingAlgorithm: alg,
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
    });
    const rootPem = rootCert.toString('pem');
    const pkcs8 = x509.PemConverter.encode(
      await webcrypto.subtle.exportKey('pkcs8', keys.privateKey),
      'PRIVATE KEY',
    );
    const sec1 = createPrivateKey(pkcs8).export({ format: 'pem', type: 'sec1' }).toString();
    for (const keyPem of [pkcs8, sec1]) {
      const ca = await TestCa.fromPem(rootPem, keyPem);
      assert.equal(ca.root, rootPem);
      const leaf = new X509Certificate(
        (await ca.issue({ identity: 'spiffe://clusterset.local/ns/a/sa/b' })).cert,
      );
      assert.ok(leaf.checkIssued(new X509Certificate(rootPem)));
      assert.ok(leaf.verify(new X509Certificate(rootPem).publicKey));
      assert.deepEqual(uriSans(leaf.raw), ['spiffe://clusterset.local/ns/a/sa/b']);
    }
  });

  it('makes expired, not-yet-valid and foreign-CA certificates on request', async () => {
    const ca = await TestCa.create();
    const foreign = await TestCa.create();
    const expired = new X509Certificate((await ca.issue(VALIDITY.expired())).cert);
    assert.ok(new Date(expired.validTo).getTime() < Date.now());
    const future = new X509Certificate((await ca.issue(VALIDITY.notYetValid())).cert);
    assert.ok(new Date(future.validFrom).getTime() > Date.now());
    const alien = new X509Certificate((await foreign.issue()).cert);
    assert.equal(alien.verify(new X509Certificate(ca.root).publicKey), false);
  });

  it('supports exact URI lists, DNS names and fresh keys', async () => {
    const ca = await TestCa.create();
    const a = await ca.issue({
      uris: ['spiffe://td/ns/a/sa/a', 'https://example.com/x'],
      dnsNames: ['x.example'],
    });
    assert.deepEqual(uriSans(new X509Certificate(a.cert).raw), [
      'spiffe://td/ns/a/sa/a',
      'https://example.com/x',
    ]);
    const none = await ca.issue({ uris: [], dnsNames: ['only.dns'] });
    assert.deepEqual(uriSans(new X509Certificate(none.cert).raw), []);
    const fresh = await ca.issue({ freshKey: true });
    assert.notEqual(fresh.key, a.key);
  });
});

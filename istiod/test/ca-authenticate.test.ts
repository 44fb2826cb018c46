import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeIdentity } from '@ambient/common/identity';
import { Metadata } from '@grpc/grpc-js';
import { CertificateAuthority } from '../src/ca/authority.ts';
import { DirectoryRootStore } from '../src/ca/root-store.ts';
import { type AuthenticationRequest, AuthenticatorChain, bearerToken } from '../src/security/authenticate.ts';
import { AuthenticationError } from '../src/security/errors.ts';
import { jwtExpiryMs, KubeTokenAuthenticator } from '../src/security/kube-token.ts';
import { PeerCertificateAuthenticator } from '../src/security/peer-certificate.ts';
import { TokenFileAuthenticator } from '../src/security/token-file.ts';
import { x509 } from '../src/security/x509.ts';
import {
  captureLog,
  certificatesOf,
  FakeKubeApi,
  generateKeys,
  makeCsr,
  serviceAccountToken,
  TRUST_DOMAIN,
} from './ca-fixtures.ts';

function withToken(token: string | undefined, extra: Record<string, string> = {}): AuthenticationRequest {
  const md = new Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  for (const [k, v] of Object.entries(extra)) md.set(k, v);
  return { metadata: md };
}

function refusedWith(code: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof AuthenticationError, `expected AuthenticationError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  };
}

/** A JWT-shaped token (unsigned: only the API server judges it; istiod reads `exp` to bound caching). */
function jwt(claims: Record<string, unknown>, tag: string): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64(claims)}.${Buffer.from(tag).toString('base64url')}`;
}

const quiet = captureLog('security').log;
let dir: string;
let kube: FakeKubeApi;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ca-authn-'));
  kube = new FakeKubeApi();
  await kube.start();
});
after(async () => {
  await kube.close();
  await rm(dir, { recursive: true, force: true });
});

describe('bearer token header', () => {
  test('reads "Bearer <token>"; refuses other schemes, several headers, oversized tokens', () => {
    assert.equal(bearerToken(withToken('abc').metadata), 'abc');
    const lower = new Metadata();
    lower.set('authorization', 'bearer   xyz');
    assert.equal(bearerToken(lower), 'xyz');
    assert.equal(bearerToken(new Metadata()), undefined);
    const basic = new Metadata();
    basic.set('authorization', 'Basic dXNlcjpwdw==');
    assert.throws(() => bearerToken(basic), refusedWith('TOKEN_MALFORMED'));
    const two = new Metadata();
    two.add('authorization', 'Bearer a');
    two.add('authorization', 'Bearer b');
    assert.throws(() => bearerToken(two), refusedWith('TOKEN_MALFORMED'));
    assert.throws(() => bearerToken(withToken('x'.repeat(20_000)).metadata), refusedWith('TOKEN_MALFORMED'));
  });
});

describe('Kubernetes TokenReview', () => {
  test('a bound ztunnel token yields its identity, pod name and pod uid', async () => {
    kube.tokens.set(
      'zt-token',
      serviceAccountToken('istio-system', 'ztunnel', { name: 'ztunnel-a', uid: 'uid-a' }),
    );
    const authn = new KubeTokenAuthenticator({
      api: kube.authentication(),
      trustDomain: TRUST_DOMAIN,
      log: quiet,
    });
    assert.deepEqual(await authn.authenticate(withToken('zt-token', { clusterid: 'Kubernetes' })), {
      identity: 'spiffe://cluster.local/ns/istio-system/sa/ztunnel',
      namespace: 'istio-system',
      serviceAccount: 'ztunnel',
      podName: 'ztunnel-a',
      podUid: 'uid-a',
      via: 'token',
    });
    const review = kube.requests.findLast((r) => r.path.endsWith('/tokenreviews'));
    assert.ok(review);
  });

  test('refuses unknown tokens, other audiences, non-service-account users, other clusters, missing tokens', async () => {
    const authn = new KubeTokenAuthenticator({
      api: kube.authentication(),
      trustDomain: TRUST_DOMAIN,
      log: quiet,
    });
    await assert.rejects(authn.authenticate(withToken('nobody')), refusedWith('TOKEN_REJECTED'));
    kube.tokens.set('wrong-aud', {
      ...serviceAccountToken('default', 'app'),
      audiences: ['https://kubernetes.default.svc'],
    });
    await assert.rejects(authn.authenticate(withToken('wrong-aud')), refusedWith('TOKEN_REJECTED'));
    kube.tokens.set('aud-ignored', {
      ...serviceAccountToken('default', 'app'),
      audiences: ['https://kubernetes.default.svc'],
      ignoreAudiences: true,
    });
    await assert.rejects(authn.authenticate(withToken('aud-ignored')), refusedWith('TOKEN_AUDIENCE'));
    kube.tokens.set('user', { username: 'alice', groups: ['system:authenticated'], audiences: ['istio-ca'] });
    await assert.rejects(authn.authenticate(withToken('user')), refusedWith('NOT_SERVICE_ACCOUNT'));
    kube.tokens.set('odd-name', {
      ...serviceAccountToken('default', 'app'),
      username: 'system:serviceaccount:default',
    });
    await assert.rejects(authn.authenticate(withToken('odd-name')), refusedWith('NOT_SERVICE_ACCOUNT'));
    kube.tokens.set('good', serviceAccountToken('default', 'app'));
    await assert.rejects(
      authn.authenticate(withToken('good', { clusterid: 'remote-1' })),
      refusedWith('UNKNOWN_CLUSTER'),
    );
    await assert.rejects(authn.authenticate(withToken(undefined)), refusedWith('NO_CREDENTIALS'));
  });

  test('accepted tokens are cached briefly (bounded, never past exp); refusals and failures are not', async () => {
    let now = Date.now();
    const authn = new KubeTokenAuthenticator({
      api: kube.authentication(),
      trustDomain: TRUST_DOMAIN,
      cacheTtlMs: 60_000,
      cacheMaxEntries: 2,
      now: () => now,
      log: quiet,
    });
    kube.tokens.set('t1', serviceAccountToken('default', 'a'));
    kube.tokens.set('t2', serviceAccountToken('default', 'b'));
    kube.tokens.set('t3', serviceAccountToken('default', 'c'));

    // Eight concurrent fetches from one ztunnel cost one review.
    const callers = await Promise.all(Array.from({ length: 8 }, () => authn.authenticate(withToken('t1'))));
    assert.equal(new Set(callers.map((c) => c.identity)).size, 1);
    assert.equal(authn.reviewCount, 1);
    await authn.authenticate(withToken('t1'));
    assert.equal(authn.reviewCount, 1, 'served from cache');

    now += 61_000;
    await authn.authenticate(withToken('t1'));
    assert.equal(authn.reviewCount, 2, 'expired entries are reviewed again');

    // Bounded: t2 and t3 push t1 out.
    await authn.authenticate(withToken('t2'));
    await authn.authenticate(withToken('t3'));
    await authn.authenticate(withToken('t1'));
    assert.equal(authn.reviewCount, 5);

    // A token whose exp has passed by our clock is never cached.
    const expired = jwt({ exp: Math.floor(now / 1000) - 10, sub: 'system:serviceaccount:default:d' }, 'd');
    kube.tokens.set(expired, serviceAccountToken('default', 'd'));
    await authn.authenticate(withToken(expired));
    await authn.authenticate(withToken(expired));
    assert.equal(authn.reviewCount, 7);

    // Refusals are not cached: once the API server accepts the token, so does istiod.
    await assert.rejects(authn.authenticate(withToken('late')), refusedWith('TOKEN_REJECTED'));
    kube.tokens.set('late', serviceAccountToken('default', 'late'));
    assert.equal((await authn.authenticate(withToken('late'))).serviceAccount, 'late');

    // An API failure is retryable and not cached either.
    kube.fail('POST', /tokenreviews$/, 500);
    const err = await authn.authenticate(withToken('t2')).catch((e: unknown) => e);
    assert.ok(
      err instanceof AuthenticationError && err.code === 'TOKEN_REVIEW_FAILED' && err.retryable,
      String(err),
    );
    assert.equal((await authn.authenticate(withToken('t2'))).serviceAccount, 'b');
  });

  test('jwtExpiryMs reads exp without trusting anything else', () => {
    assert.equal(jwtExpiryMs(jwt({ exp: 1_700_000_000 }, 'x')), 1_700_000_000_000);
    assert.equal(jwtExpiryMs('opaque-token'), undefined);
    assert.equal(jwtExpiryMs('a.!!!.c'), undefined);
  });
});

describe('token file (local mode)', () => {
  test('maps tokens to workloads from YAML or JSON; unknown tokens are refused', async () => {
    const yamlPath = join(dir, 'tokens.yaml');
    await writeFile(
      yamlPath,
      [
        'ztunnel-node-a-0123456789:',
        '  namespace: istio-system',
        '  serviceAccount: ztunnel',
        '  podName: ztunnel-a',
        '  podUid: uid-a',
        'app-token-0123456789abcdef: { namespace: default, serviceAccount: app }',
      ].join('\n'),
    );
    const authn = await TokenFileAuthenticator.load(yamlPath, { trustDomain: TRUST_DOMAIN });
    assert.equal(authn.size, 2);
    assert.deepEqual(await authn.authenticate(withToken('ztunnel-node-a-0123456789')), {
      identity: 'spiffe://cluster.local/ns/istio-system/sa/ztunnel',
      namespace: 'istio-system',
      serviceAccount: 'ztunnel',
      podName: 'ztunnel-a',
      podUid: 'uid-a',
      via: 'token',
    });
    assert.equal((await authn.authenticate(withToken('app-token-0123456789abcdef'))).podName, undefined);
    await assert.rejects(
      authn.authenticate(withToken('ztunnel-node-a-012345678')),
      refusedWith('TOKEN_REJECTED'),
    );
    await assert.rejects(authn.authenticate(withToken(undefined)), refusedWith('NO_CREDENTIALS'));

    const jsonPath = join(dir, 'tokens.json');
    await writeFile(
      jsonPath,
      JSON.stringify({ 'json-token-0123456789': { namespace: 'ns1', serviceAccount: 'sa1' } }),
    );
    const fromJson = await TokenFileAuthenticator.load(jsonPath, { trustDomain: TRUST_DOMAIN });
    assert.equal(
      (await fromJson.authenticate(withToken('json-token-0123456789'))).identity,
      'spiffe://cluster.local/ns/ns1/sa/sa1',
    );
  });

  test('a malformed file is refused whole; a failed reload keeps the previous tokens', async () => {
    const path = join(dir, 'tokens-bad.yaml');
    for (const bad of [
      'short: { namespace: a, serviceAccount: b }',
      'long-enough-token-000: { namespace: a }',
      'long-enough-token-000: { namespace: a, serviceAccount: b, role: admin }',
      'long-enough-token-000: { namespace: "a/b", serviceAccount: b }',
      '- a list',
      'long-enough-token-000: [',
    ]) {
      await writeFile(path, bad);
      await assert.rejects(
        TokenFileAuthenticator.load(path, { trustDomain: TRUST_DOMAIN }),
        refusedWith('TOKEN_FILE_INVALID'),
        bad,
      );
    }
    await writeFile(path, 'long-enough-token-000: { namespace: a, serviceAccount: b }');
    const authn = await TokenFileAuthenticator.load(path, { trustDomain: TRUST_DOMAIN });
    await writeFile(path, 'broken: [');
    await assert.rejects(authn.reload(), refusedWith('TOKEN_FILE_INVALID'));
    assert.equal((await authn.authenticate(withToken('long-enough-token-000'))).serviceAccount, 'b');
    await assert.rejects(
      TokenFileAuthenticator.load(join(dir, 'missing.yaml'), { trustDomain: TRUST_DOMAIN }),
      refusedWith('TOKEN_FILE_INVALID'),
    );
  });
});

describe('client certificate', () => {
  let ca: CertificateAuthority;
  before(async () => {
    ca = await CertificateAuthority.selfSigned(new DirectoryRootStore(join(dir, 'root')), {
      trustDomain: TRUST_DOMAIN,
      log: captureLog().log,
    });
  });

  async function leafDer(namespace: string, serviceAccount: string): Promise<Buffer> {
    const identity = makeIdentity(TRUST_DOMAIN, namespace, serviceAccount);
    const signed = await ca.sign({ csrPem: await makeCsr(), identity, ttlSeconds: 60 });
    const [leaf] = certificatesOf(signed.certChain[0] as string);
    assert.ok(leaf);
    return leaf.raw;
  }

  test('a mesh certificate authenticates as its SPIFFE identity, without a pod', async () => {
    const authn = new PeerCertificateAuthenticator({ trustDomain: TRUST_DOMAIN });
    const der = await leafDer('default', 'app');
    assert.deepEqual(await authn.authenticate({ metadata: new Metadata(), peerCertificate: der }), {
      identity: 'spiffe://cluster.local/ns/default/sa/app',
      namespace: 'default',
      serviceAccount: 'app',
      via: 'certificate',
    });
    await assert.rejects(authn.authenticate({ metadata: new Metadata() }), refusedWith('NO_CREDENTIALS'));
  });

  test('refuses certificates without exactly one SPIFFE SAN, or from another trust domain', async () => {
    const authn = new PeerCertificateAuthenticator({ trustDomain: TRUST_DOMAIN });
    const serving = await ca.issueServingCertificate({ dnsNames: ['istiod.istio-system.svc'] });
    const [servingLeaf] = certificatesOf(serving.certChainPem);
    assert.ok(servingLeaf);
    await assert.rejects(
      authn.authenticate({ metadata: new Metadata(), peerCertificate: servingLeaf.raw }),
      refusedWith('CERTIFICATE_IDENTITY'),
    );
    const selfSigned = async (uris: string[]): Promise<Buffer> => {
      const keys = await generateKeys();
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        keys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as never,
        extensions: [
          new x509.SubjectAlternativeNameExtension(
            uris.map((value) => ({ type: 'url' as const, value })),
            true,
          ),
        ],
      });
      return Buffer.from(cert.rawData);
    };
    await assert.rejects(
      authn.authenticate({
        metadata: new Metadata(),
        peerCertificate: await selfSigned(['spiffe://evil.example/ns/default/sa/app']),
      }),
      refusedWith('TRUST_DOMAIN_MISMATCH'),
    );
    await assert.rejects(
      authn.authenticate({
        metadata: new Metadata(),
        peerCertificate: await selfSigned([
          'spiffe://cluster.local/ns/a/sa/b',
          'spiffe://cluster.local/ns/c/sa/d',
        ]),
      }),
      refusedWith('CERTIFICATE_IDENTITY'),
    );
    await assert.rejects(
      authn.authenticate({
        metadata: new Metadata(),
        peerCertificate: await selfSigned(['spiffe://cluster.local/ns/a']),
      }),
      refusedWith('CERTIFICATE_IDENTITY'),
    );
  });

  test('a chain accepts the first authenticator that succeeds and reports why each refused', async () => {
    const tokenPath = join(dir, 'chain-tokens.yaml');
    await writeFile(tokenPath, 'chain-token-0123456789: { namespace: default, serviceAccount: tok }');
    const chain = new AuthenticatorChain([
      new PeerCertificateAuthenticator({ trustDomain: TRUST_DOMAIN }),
      await TokenFileAuthenticator.load(tokenPath, { trustDomain: TRUST_DOMAIN }),
    ]);
    const der = await leafDer('default', 'app');
    const both = withToken('chain-token-0123456789');
    assert.equal((await chain.authenticate({ ...both, peerCertificate: der })).via, 'certificate');
    assert.equal((await chain.authenticate(both)).serviceAccount, 'tok');
    await assert.rejects(chain.authenticate(withToken(undefined)), refusedWith('NO_CREDENTIALS'));
    await assert.rejects(
      chain.authenticate(withToken('unknown-token-0123456789')),
      refusedWith('TOKEN_REJECTED'),
    );
    const serving = await ca.issueServingCertificate({ dnsNames: ['istiod.istio-system.svc'] });
    const [servingLeaf] = certificatesOf(serving.certChainPem);
    assert.ok(servingLeaf);
    await assert.rejects(
      chain.authenticate({ ...withToken('unknown-token-0123456789'), peerCertificate: servingLeaf.raw }),
      (err: unknown) => {
        assert.ok(err instanceof AuthenticationError && err.code === 'NO_AUTHENTICATOR_ACCEPTED');
        assert.match(err.message, /peer-certificate: .*URI SANs/);
        assert.match(err.message, /token-file: token is not in/);
        return true;
      },
    );
  });
});

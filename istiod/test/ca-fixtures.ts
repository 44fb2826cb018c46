/**
 * Shared by the ca-*.test.ts suites: real CSRs, a chain checker built on node:crypto (not on the
 * library the CA signs with, so a bug there cannot hide itself), a plugged-in CA hierarchy, and a
 * minimal in-memory Kubernetes API server speaking the few endpoints the CA uses.
 */
import assert from 'node:assert/strict';
import { webcrypto, X509Certificate } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Pod } from '@ambient/common/config/objects';
import { Logging } from '@ambient/common/log';
import { AuthenticationV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { x509 } from '../src/security/x509.ts';

type CryptoKeyPair = webcrypto.CryptoKeyPair;

export const TRUST_DOMAIN = 'cluster.local';

/** A logger whose lines are kept for assertions instead of printed. */
export function captureLog(scope = 'ca'): {
  log: ReturnType<Logging['logger']>;
  lines: Record<string, unknown>[];
} {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  const logging = new Logging({ levels: 'debug', destination });
  return { log: logging.logger(scope), lines };
}

export type KeyKind = 'p256' | 'p384' | 'p521' | 'rsa1024' | 'rsa2048';

const KEY_PARAMS: Record<
  KeyKind,
  { gen: webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams; sign: object }
> = {
  p256: { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  p384: { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  p521: { gen: { name: 'ECDSA', namedCurve: 'P-521' }, sign: { name: 'ECDSA', hash: 'SHA-512' } },
  rsa1024: {
    gen: {
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
    },
    sign: { name: 'RSASSA-PKCS1-v1_5' },
  },
  rsa2048: {
    gen: {
      name: 'RSASSA-PKCS1-v1_5',
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
    },
    sign: { name: 'RSASSA-PKCS1-v1_5' },
  },
};

export async function generateKeys(kind: KeyKind = 'p256'): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_PARAMS[kind].gen, true, [
    'sign',
    'verify',
  ])) as CryptoKeyPair;
}

export async function privateKeyPem(keys: CryptoKeyPair): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
}

/**
 * A PKCS#10 CSR as ztunnel makes one (P-256, URI SAN of the identity it wants), or a hostile one:
 * other SANs, a subject, another key type, a corrupted signature.
 */
export async function makeCsr(
  options: {
    uris?: string[];
    dns?: string[];
    subject?: string;
    key?: KeyKind;
    corruptSignature?: boolean;
  } = {},
): Promise<string> {
  const kind = options.key ?? 'p256';
  const keys = await generateKeys(kind);
  const names: x509.JsonGeneralName[] = [
    ...(options.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(options.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    ...(options.subject ? { name: options.subject } : {}),
    keys,
    signingAlgorithm: KEY_PARAMS[kind].sign as Parameters<
      typeof x509.Pkcs10CertificateRequestGenerator.create
    >[0]['signingAlgorithm'],
    extensions: names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : [],
  });
  const der = new Uint8Array(csr.rawData);
  if (options.corruptSignature) {
    // The signature BIT STRING ends the DER; changing its last byte keeps the CSR parsable.
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
  }
  return x509.PemConverter.encode(der.buffer as ArrayBuffer, 'CERTIFICATE REQUEST');
}

/** Splits a PEM bundle into node:crypto certificates. */
export function certificatesOf(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}

const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/**
 * Checks an IstioCertificateResponse chain with node:crypto: one certificate per element ending
 * in "\n" (the last may hold several roots), each link issued and signed by the next, the root
 * self-signed, the leaf valid now, with exactly one critical URI SAN equal to `uri`, no subject,
 * serverAuth + clientAuth, not a CA. Returns the leaf.
 */
export function verifyIssuedChain(
  chain: readonly string[],
  expected: { uri: string; rootPem?: string; ttlSeconds?: number; intermediates?: number },
): X509Certificate {
  assert.ok(chain.length >= 2, `chain has ${chain.length} elements, expected leaf … root`);
  for (const [i, pem] of chain.entries()) {
    assert.ok(pem.endsWith('\n'), `chain element ${i} does not end in a newline`);
    if (i < chain.length - 1)
      assert.equal(certificatesOf(pem).length, 1, `chain element ${i} holds one certificate`);
  }
  if (expected.intermediates !== undefined) assert.equal(chain.length, expected.intermediates + 2);
  const links = chain.slice(0, -1).map((p) => new X509Certificate(p));
  const roots = certificatesOf(chain.at(-1) as string);
  assert.ok(roots.length >= 1, 'last element holds the root');
  if (expected.rootPem !== undefined)
    assert.equal(chain.at(-1), expected.rootPem, 'last element is the distributed root');
  for (const root of roots) {
    assert.ok(root.ca && root.checkIssued(root) && root.verify(root.publicKey), 'root is a self-signed CA');
  }
  for (let i = 0; i + 1 < links.length; i++) {
    const child = links[i] as X509Certificate;
    const parent = links[i + 1] as X509Certificate;
    assert.ok(parent.ca, `chain element ${i + 1} is a CA`);
    assert.ok(
      child.checkIssued(parent) && child.verify(parent.publicKey),
      `element ${i} is issued by element ${i + 1}`,
    );
  }
  const top = links.at(-1) as X509Certificate;
  assert.ok(
    roots.some((r) => top.checkIssued(r) && top.verify(r.publicKey)),
    'the top of the chain is issued by the root',
  );
  const leaf = links[0] as X509Certificate;
  const now = Date.now();
  assert.ok(new Date(leaf.validFrom).getTime() <= now, 'leaf is valid already (backdated)');
  assert.ok(new Date(leaf.validTo).getTime() > now, 'leaf is not expired');
  if (expected.ttlSeconds !== undefined) {
    const lifetime = (new Date(leaf.validTo).getTime() - now) / 1000;
    assert.ok(
      Math.abs(lifetime - expected.ttlSeconds) < 120,
      `leaf lives ${lifetime}s, expected ${expected.ttlSeconds}s`,
    );
  }
  assert.equal(leaf.ca, false, 'leaf is not a CA');
  assert.equal(leaf.subject ?? '', '', 'leaf has no subject');
  assert.equal(leaf.subjectAltName, `URI:${expected.uri}`, 'leaf SAN is exactly the expected identity');
  const parsed = new x509.X509Certificate(leaf.raw);
  const san = parsed.getExtension(x509.SubjectAlternativeNameExtension);
  assert.ok(san?.critical, 'SAN extension is critical');
  assert.deepEqual(
    san.names.items.map((n) => [n.type, n.value]),
    [['url', expected.uri]],
  );
  assert.deepEqual(
    [...(leaf.keyUsage ?? [])].sort(),
    [EKU_SERVER_AUTH, EKU_CLIENT_AUTH].sort(),
    'EKU is serverAuth+clientAuth',
  );
  const ku = parsed.getExtension(x509.KeyUsagesExtension);
  assert.equal(ku?.usages, x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
  assert.ok(ku?.critical, 'key usage is critical');
  return leaf;
}

/** A plugged-in CA hierarchy: root (P-384) → intermediate (RSA 2048) → signing CA (P-256). */
export interface PluggedCa {
  readonly dir: string;
  readonly rootPem: string;
  readonly intermediatePem: string;
  readonly caCertPem: string;
}

async function caCertificate(options: {
  name: string;
  keys: CryptoKeyPair;
  signWith?: { keys: CryptoKeyPair; cert: x509.X509Certificate; algorithm: object };
  algorithm: object;
}): Promise<x509.X509Certificate> {
  const extensions = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(options.keys.publicKey),
  ];
  const notBefore = new Date(Date.now() - 3600_000);
  const notAfter = new Date(Date.now() + 5 * 365 * 86_400_000);
  if (!options.signWith) {
    return x509.X509CertificateGenerator.createSelfSigned({
      name: options.name,
      keys: options.keys,
      signingAlgorithm: options.algorithm as Parameters<
        typeof x509.X509CertificateGenerator.createSelfSigned
      >[0]['signingAlgorithm'],
      notBefore,
      notAfter,
      extensions,
    });
  }
  return x509.X509CertificateGenerator.create({
    subject: options.name,
    issuer: options.signWith.cert.subjectName,
    publicKey: options.keys.publicKey,
    signingKey: options.signWith.keys.privateKey,
    signingAlgorithm: options.signWith.algorithm as Parameters<
      typeof x509.X509CertificateGenerator.create
    >[0]['signingAlgorithm'],
    notBefore,
    notAfter,
    extensions,
  });
}

/** Writes a `cacerts` directory; `chainIncludesRoot` mirrors istio's samples, whose cert-chain.pem ends with the root. */
export async function writePluggedCa(
  dir: string,
  options: { chainIncludesRoot?: boolean } = {},
): Promise<PluggedCa> {
  const rootKeys = await generateKeys('p384');
  const root = await caCertificate({
    name: 'O=Example Corp,CN=Root CA',
    keys: rootKeys,
    algorithm: KEY_PARAMS.p384.sign,
  });
  const interKeys = await generateKeys('rsa2048');
  const inter = await caCertificate({
    name: 'O=Example Corp,CN=Intermediate CA',
    keys: interKeys,
    algorithm: KEY_PARAMS.rsa2048.sign,
    signWith: { keys: rootKeys, cert: root, algorithm: KEY_PARAMS.p384.sign },
  });
  const caKeys = await generateKeys('p256');
  const ca = await caCertificate({
    name: 'O=Example Corp,CN=istiod cluster1',
    keys: caKeys,
    algorithm: KEY_PARAMS.p256.sign,
    signWith: { keys: interKeys, cert: inter, algorithm: KEY_PARAMS.rsa2048.sign },
  });
  const pem = (c: x509.X509Certificate): string => `${c.toString('pem')}\n`;
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'root-cert.pem'), pem(root));
  await writeFile(join(dir, 'ca-cert.pem'), pem(ca));
  await writeFile(join(dir, 'ca-key.pem'), await privateKeyPem(caKeys));
  await writeFile(
    join(dir, 'cert-chain.pem'),
    pem(ca) + pem(inter) + (options.chainIncludesRoot ? pem(root) : ''),
  );
  return { dir, rootPem: pem(root), intermediatePem: pem(inter), caCertPem: pem(ca) };
}

/** A validated Pod as the ConfigStore holds it. */
export function pod(
  namespace: string,
  name: string,
  options: { sa?: string; node?: string; uid?: string; phase?: NonNullable<Pod['status']>['phase'] } = {},
): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace, name, uid: options.uid ?? `uid-${namespace}-${name}` },
    spec: {
      ...(options.node === undefined ? {} : { nodeName: options.node }),
      ...(options.sa === undefined ? {} : { serviceAccountName: options.sa }),
    },
    status: { phase: options.phase ?? 'Running' },
  };
}

/** What the fake API server answers to a TokenReview of one token. */
export interface FakeToken {
  readonly username: string;
  readonly groups?: readonly string[];
  readonly audiences?: readonly string[];
  readonly podName?: string;
  readonly podUid?: string;
  /** Answer as an API server that ignores requested audiences: authenticated, with the token's own. */
  readonly ignoreAudiences?: boolean;
}

/** A pod-bound service-account token as the fake API server knows it. */
export function serviceAccountToken(
  namespace: string,
  serviceAccount: string,
  pod?: { name: string; uid: string },
): FakeToken {
  return {
    username: `system:serviceaccount:${namespace}:${serviceAccount}`,
    groups: ['system:serviceaccounts', `system:serviceaccounts:${namespace}`, 'system:authenticated'],
    audiences: ['istio-ca'],
    ...(pod ? { podName: pod.name, podUid: pod.uid } : {}),
  };
}

interface StoredObject {
  metadata: { name: string; namespace: string; resourceVersion: string; [k: string]: unknown };
  [k: string]: unknown;
}

/**
 * A minimal Kubernetes API server over plain HTTP on 127.0.0.1: Secrets and ConfigMaps (get,
 * create with 409 on conflict, replace with resourceVersion check, delete) and TokenReviews. It
 * records every request, and can fail requests on demand, so the real client-node code paths run.
 */
export class FakeKubeApi {
  readonly objects = new Map<string, StoredObject>();
  readonly tokens = new Map<string, FakeToken>();
  readonly requests: { method: string; path: string }[] = [];
  /** Called before a create is applied; lets a test create the object first (a lost race). */
  beforeCreate: ((resource: string, namespace: string, name: string) => void) | undefined;
  #failures: { method: string; pattern: RegExp; status: number; remaining: number }[] = [];
  #server: Server | undefined;
  #port = 0;
  #version = 1;

  async start(): Promise<void> {
    this.#server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => {
        body += c;
      });
      req.on('end', () => this.#handle(req, res, body));
    });
    await new Promise<void>((resolve) => this.#server?.listen(0, '127.0.0.1', resolve));
    this.#port = (this.#server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((resolve) => this.#server?.close(() => resolve()));
  }

  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: `http://127.0.0.1:${this.#port}`, skipTLSVerify: true }],
      users: [{ name: 'istiod', token: 'istiod-token' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'istiod' }],
      currentContext: 'fake',
    });
    return kc;
  }

  core(): CoreV1Api {
    return this.kubeConfig().makeApiClient(CoreV1Api);
  }

  authentication(): AuthenticationV1Api {
    return this.kubeConfig().makeApiClient(AuthenticationV1Api);
  }

  /** The next `count` requests with this method whose path matches answer `status`. */
  fail(method: string, pattern: RegExp, status: number, count = 1): void {
    this.#failures.push({ method, pattern, status, remaining: count });
  }

  get(resource: 'secrets' | 'configmaps', namespace: string, name: string): StoredObject | undefined {
    return this.objects.get(`${resource}/${namespace}/${name}`);
  }

  put(resource: 'secrets' | 'configmaps', namespace: string, obj: Record<string, unknown>): void {
    const metadata = {
      ...(obj.metadata as { name: string }),
      namespace,
      resourceVersion: String(this.#version++),
    };
    this.objects.set(`${resource}/${namespace}/${metadata.name}`, {
      ...obj,
      metadata,
    } as StoredObject);
  }

  /** The `data` of a stored Secret or ConfigMap, or undefined when there is no such object. */
  data(
    resource: 'secrets' | 'configmaps',
    namespace: string,
    name: string,
  ): Record<string, string> | undefined {
    return this.get(resource, namespace, name)?.data as Record<string, string> | undefined;
  }

  delete(resource: 'secrets' | 'configmaps', namespace: string, name: string): void {
    this.objects.delete(`${resource}/${namespace}/${name}`);
  }

  #handle(req: IncomingMessage, res: ServerResponse, body: string): void {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    this.requests.push({ method, path });
    const send = (status: number, obj: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    const statusBody = (code: number, reason: string) => ({
      kind: 'Status',
      apiVersion: 'v1',
      status: 'Failure',
      code,
      reason,
    });
    const failure = this.#failures.find(
      (f) => f.remaining > 0 && f.method === method && f.pattern.test(path),
    );
    if (failure) {
      failure.remaining--;
      send(failure.status, statusBody(failure.status, 'InjectedFailure'));
      return;
    }
    if (method === 'POST' && path === '/apis/authentication.k8s.io/v1/tokenreviews') {
      const review = JSON.parse(body) as { spec: { token: string; audiences?: string[] } };
      const token = this.tokens.get(review.spec.token);
      const wanted = review.spec.audiences ?? [];
      const matched = !token
        ? []
        : token.ignoreAudiences
          ? [...(token.audiences ?? [])]
          : (token.audiences ?? []).filter((a) => wanted.length === 0 || wanted.includes(a));
      const ok = token !== undefined && (matched.length > 0 || token.ignoreAudiences === true);
      send(201, {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: review.spec,
        status: ok
          ? {
              authenticated: true,
              audiences: matched,
              user: {
                username: token.username,
                uid: 'sa-uid',
                groups: token.groups ?? [],
                extra: {
                  ...(token.podName ? { 'authentication.kubernetes.io/pod-name': [token.podName] } : {}),
                  ...(token.podUid ? { 'authentication.kubernetes.io/pod-uid': [token.podUid] } : {}),
                },
              },
            }
          : {
              authenticated: false,
              error: token ? 'token audiences are invalid for the target audiences' : 'invalid bearer token',
            },
      });
      return;
    }
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/(secrets|configmaps)(?:\/([^/]+))?$/.exec(path);
    if (!m) {
      send(404, statusBody(404, 'NotFound'));
      return;
    }
    const [, namespace = '', resource = '', name] = m;
    const key = (n: string) => `${resource}/${namespace}/${n}`;
    if (method === 'GET' && name) {
      const obj = this.objects.get(key(name));
      if (obj) send(200, obj);
      else send(404, statusBody(404, 'NotFound'));
      return;
    }
    if (method === 'POST' && !name) {
      const obj = JSON.parse(body) as StoredObject;
      this.beforeCreate?.(resource, namespace, obj.metadata.name);
      if (this.objects.has(key(obj.metadata.name))) {
        send(409, statusBody(409, 'AlreadyExists'));
        return;
      }
      this.put(resource as 'secrets', namespace, obj);
      send(201, this.objects.get(key(obj.metadata.name)));
      return;
    }
    if (method === 'PUT' && name) {
      const obj = JSON.parse(body) as StoredObject;
      const current = this.objects.get(key(name));
      if (!current) {
        send(404, statusBody(404, 'NotFound'));
        return;
      }
      if (obj.metadata.resourceVersion !== current.metadata.resourceVersion) {
        send(409, statusBody(409, 'Conflict'));
        return;
      }
      this.put(resource as 'secrets', namespace, obj);
      send(200, this.objects.get(key(name)));
      return;
    }
    if (method === 'DELETE' && name) {
      this.objects.delete(key(name));
      send(200, statusBody(200, 'Success'));
      return;
    }
    send(405, statusBody(405, 'MethodNotAllowed'));
  }
}

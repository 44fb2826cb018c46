// @peculiar/x509 resolves its dependency-injection metadata at import time.
import 'reflect-metadata';
import { createPrivateKey, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { formatIdentity, type Identity } from '../identity/identity.ts';
import type { TlsCredentials } from '../tls/secure-context.ts';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

// ztunnel's CSRs and Istio's CA both use ECDSA P-256 with SHA-256 (spec §1.1).
const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** What a leaf certificate may be used for (Istio leaves carry both, spec §1.6). */
export type TestKeyPurpose = 'serverAuth' | 'clientAuth';

/** A leaf issued by a {@link TestCa}, in the PEM forms Node's TLS options take. */
export interface IssuedCertificate {
  /** PKCS#8 PEM private key. */
  readonly key: string;
  /** The leaf certificate alone. */
  readonly cert: string;
  /** Leaf followed by every intermediate: what a TLS endpoint presents (`cert` option). */
  readonly chain: string;
  /** The trust anchor that verifies {@link chain}. */
  readonly root: string;
  /** Istio `IstioCertificateResponse.cert_chain` order: leaf first, root last, one PEM each. */
  readonly caResponse: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** Options for {@link TestCa.issue}. */
export interface IssueOptions {
  /** The SPIFFE identity; becomes the single critical URI SAN. Ignored when `uris` is given. */
  readonly identity?: Identity | string;
  /** Exact URI SANs, for malformed-certificate tests; an empty list means no SAN extension. */
  readonly uris?: readonly string[];
  /** DNS SANs added after the URIs (Istio leaves have none; used to show they are ignored). */
  readonly dnsNames?: readonly string[];
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Extended key usages; default both, as Istio's CA issues. */
  readonly purposes?: readonly TestKeyPurpose[];
  /** Generate a new key instead of the process-wide shared leaf key. */
  readonly freshKey?: boolean;
  /** Raw extensions appended as given (DER `extnValue` contents), for malformed-certificate tests. */
  readonly extraExtensions?: readonly {
    readonly oid: string;
    readonly critical: boolean;
    readonly value: Uint8Array;
  }[];
}

/** Options for {@link TestCa.create} and {@link TestCa.intermediate}. */
export interface TestCaOptions {
  /** Distinguished name of the CA certificate; default like istiod's self-signed root. */
  readonly name?: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

// Sharing one leaf key between test certificates is harmless (each certificate still has its own
// identity and issuer) and keeps a suite that issues hundreds of leaves fast. CA keys are never
// shared: a "foreign" CA must not be able to verify the real one's signatures.
let sharedLeafKeys: Promise<CryptoKeyPair> | undefined;

function leafKeys(fresh: boolean): Promise<CryptoKeyPair> {
  if (fresh) return generateKeys();
  sharedLeafKeys ??= generateKeys();
  return sharedLeafKeys;
}

function generateKeys(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

let nameCounter = 0;

/**
 * An in-memory certificate authority for tests: a root (or intermediate) that issues SPIFFE
 * leaves shaped like Istio's: ECDSA P-256, a single critical URI SAN, serverAuth + clientAuth,
 * no subject. Every CA created gets its own key, so two CAs never trust each other.
 */
export class TestCa {
  /** This CA's certificate (PEM). */
  readonly cert: string;
  /** The root at the top of this CA's chain (PEM); equals {@link cert} for a root. */
  readonly root: string;
  readonly #keys: CryptoKeyPair;
  readonly #certificate: x509.X509Certificate;
  // PEMs of the intermediates between a leaf and the root, nearest first (this CA included when
  // it is an intermediate).
  readonly #intermediates: readonly string[];

  private constructor(
    keys: CryptoKeyPair,
    certificate: x509.X509Certificate,
    root: string,
    intermediates: readonly string[],
  ) {
    this.#keys = keys;
    this.#certificate = certificate;
    this.cert = certificate.toString('pem');
    this.root = root;
    this.#intermediates = intermediates;
  }

  /** A new self-signed root with its own key. */
  static async create(options: TestCaOptions = {}): Promise<TestCa> {
    const keys = await generateKeys();
    const certificate = await x509.X509CertificateGenerator.createSelfSigned({
      name: options.name ?? `O=cluster.local,CN=test-root-${++nameCounter}`,
      keys,
      signingAlgorithm: EC_ALGORITHM,
      notBefore: options.notBefore ?? new Date(Date.now() - HOUR),
      notAfter: options.notAfter ?? new Date(Date.now() + 3650 * DAY),
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const pem = certificate.toString('pem');
    return new TestCa(keys, certificate, pem, []);
  }

  /**
   * A root loaded from an existing certificate and its private key (PEM; PKCS#8, SEC1 or any form
   * node:crypto reads), e.g. istiod's self-signed root, so tests can issue leaves that CA's mesh
   * trusts but istiod itself would never sign (another trust domain).
   */
  static async fromPem(certPem: string, keyPem: string): Promise<TestCa> {
    const certificate = new x509.X509Certificate(certPem);
    const pkcs8 = createPrivateKey(keyPem).export({ format: 'der', type: 'pkcs8' });
    const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, EC_ALGORITHM, true, ['sign']);
    const publicKey = await certificate.publicKey.export(
      EC_ALGORITHM,
      ['verify'],
      webcrypto as unknown as Parameters<typeof certificate.publicKey.export>[2],
    );
    const pem = certificate.toString('pem');
    return new TestCa({ privateKey, publicKey }, certificate, pem, []);
  }

  /** An intermediate CA signed by this one; its leaves chain through it to the same root. */
  async intermediate(options: TestCaOptions = {}): Promise<TestCa> {
    const keys = await generateKeys();
    const certificate = await x509.X509CertificateGenerator.create({
      subject: options.name ?? `O=cluster.local,CN=test-intermediate-${++nameCounter}`,
      issuer: this.#certificate.subject,
      publicKey: keys.publicKey,
      signingKey: this.#keys.privateKey,
      signingAlgorithm: EC_ALGORITHM,
      notBefore: options.notBefore ?? new Date(Date.now() - HOUR),
      notAfter: options.notAfter ?? new Date(Date.now() + 365 * DAY),
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.#keys.publicKey),
      ],
    });
    return new TestCa(keys, certificate, this.root, [certificate.toString('pem'), ...this.#intermediates]);
  }

  /** Issues a leaf. Defaults: identity `spiffe://cluster.local/ns/default/sa/default`, valid from an hour ago for a day. */
  async issue(options: IssueOptions = {}): Promise<IssuedCertificate> {
    const keys = await leafKeys(options.freshKey === true);
    const identity =
      options.identity === undefined
        ? 'spiffe://cluster.local/ns/default/sa/default'
        : typeof options.identity === 'string'
          ? options.identity
          : formatIdentity(options.identity);
    const uris = options.uris ?? [identity];
    const names: x509.JsonGeneralName[] = [
      ...uris.map((value) => ({ type: 'url' as const, value })),
      ...(options.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ];
    const purposes = options.purposes ?? ['serverAuth', 'clientAuth'];
    const notBefore = options.notBefore ?? new Date(Date.now() - HOUR);
    const notAfter = options.notAfter ?? new Date(Date.now() + DAY);
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      await x509.AuthorityKeyIdentifierExtension.create(this.#keys.publicKey),
    ];
    if (purposes.length > 0) {
      extensions.push(new x509.ExtendedKeyUsageExtension(purposes.map((p) => x509.ExtendedKeyUsage[p])));
    }
    // RFC 5280 §4.2.1.6: with an empty subject the SAN extension must be critical.
    if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, true));
    for (const e of options.extraExtensions ?? [])
      extensions.push(new x509.Extension(e.oid, e.critical, e.value));
    const certificate = await x509.X509CertificateGenerator.create({
      issuer: this.#certificate.subject,
      publicKey: keys.publicKey,
      signingKey: this.#keys.privateKey,
      signingAlgorithm: EC_ALGORITHM,
      notBefore,
      notAfter,
      extensions,
    });
    const cert = certificate.toString('pem');
    return {
      key: await keyPem(keys.privateKey),
      cert,
      chain: [cert, ...this.#intermediates].map(withNewline).join(''),
      root: this.root,
      caResponse: [cert, ...this.#intermediates, this.root].map(withNewline),
      notBefore,
      notAfter,
    };
  }
}

/** The credentials an HBONE client or server takes, from an issued leaf. */
export function tlsCredentials(issued: IssuedCertificate): TlsCredentials {
  return { key: issued.key, certChain: issued.chain, roots: issued.root };
}

function withNewline(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

/** Validity windows for rejection tests, relative to now. */
export const VALIDITY = {
  expired: () => ({ notBefore: new Date(Date.now() - 2 * DAY), notAfter: new Date(Date.now() - DAY) }),
  notYetValid: () => ({ notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 2 * DAY) }),
} as const;

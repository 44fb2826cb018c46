// @peculiar/x509 resolves its dependency-injection metadata at import time, so this comes first.
import 'reflect-metadata';
import { webcrypto, X509Certificate } from 'node:crypto';
import {
  type IstioCertificateRequest,
  IstioCertificateRequestSchema,
  type IstioCertificateResponse,
  IstioCertificateService,
} from '@ambient/common/gen/istio/v1/auth/ca_pb';
import { create } from '@bufbuild/protobuf';
import { Client, type ServiceError, status } from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { errorMessage, MeshError } from '../errors.ts';
import { grpcServiceDefinition } from '../grpc/service.ts';
import { type Logger, logger } from '../log.ts';
import { uriSans } from '../tls/san.ts';
import type { TlsCredentials } from '../tls/secure-context.ts';
import {
  CONTROL_PLANE_DEFAULTS,
  type ControlPlaneOptions,
  controlPlaneChannelOptions,
  controlPlaneCredentials,
  controlPlaneMetadata,
  validateControlPlaneOptions,
  waitForChannelReady,
} from '../xds/control-plane.ts';
import { ControlPlaneError } from '../xds/errors.ts';
import { formatIdentity, type Identity } from './identity.ts';

/** Why a certificate could not be obtained; stable, used as the error code. */
export type CaErrorCode =
  /** No connection to the CA (refused, TLS failure, connect timeout, unreadable token or root). */
  | 'CA_UNAVAILABLE'
  /** The CA answered with a gRPC error (UNAUTHENTICATED, RESOURCE_EXHAUSTED, …). */
  | 'CA_REQUEST_FAILED'
  /** The response's `cert_chain` is empty (ztunnel `EmptyResponse`). */
  | 'CA_RESPONSE_EMPTY'
  /** An element is not PEM certificates, or the first holds other than exactly one. */
  | 'CA_RESPONSE_MALFORMED'
  /** The response holds only the leaf: no element left to take the trust roots from. */
  | 'CA_RESPONSE_NO_ROOTS'
  /** The leaf's URI SANs are not exactly the requested identity (ztunnel `SanError`). */
  | 'CA_IDENTITY_MISMATCH'
  /** The leaf certifies another public key than the one our CSR carried. */
  | 'CA_KEY_MISMATCH'
  /** The leaf is already expired. */
  | 'CA_CERT_EXPIRED'
  /** The leaf does not chain through the intermediates to one of the roots. */
  | 'CA_CHAIN_INVALID'
  /** The key pair or CSR could not be generated. */
  | 'CSR_FAILED'
  /** `CertManager.forget` ran while a caller waited for that identity. */
  | 'CERTIFICATE_FORGOTTEN'
  /** The CertManager was stopped while a caller waited. */
  | 'CERT_MANAGER_STOPPED';

export class CaError extends MeshError<CaErrorCode> {}

/**
 * A workload certificate and its private key, as ztunnel's `WorkloadCertificate`: the leaf and
 * intermediates for the TLS `cert` option, and the trust roots taken from the last element of the
 * CA response (spec §4.4), which is what HBONE peers are verified against. It satisfies
 * {@link TlsCredentials} (`key`, `certChain`, `roots`) so it goes straight into the HBONE TLS
 * options.
 */
export interface WorkloadCertificate extends TlsCredentials {
  readonly identity: Identity;
  /** PKCS#8 PEM of the P-256 key generated for this certificate. */
  readonly keyPem: string;
  /** The leaf followed by the intermediates, PEM. */
  readonly certChainPem: string;
  /** The root(s) of the last response element, PEM (possibly several concatenated). */
  readonly rootsPem: string;
  readonly key: string;
  readonly certChain: string;
  readonly roots: string;
  /** The leaf's serial number, upper-case hex as node:crypto reports it. */
  readonly serialNumber: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Half-way through the leaf's lifetime: when to renew (`ztunnel:src/tls/certificate.rs` `refresh_at`). */
  readonly refreshAt: Date;
}

/** Something that can produce a certificate for an identity: the CaClient, or a test CA. */
export interface CertificateFetcher {
  fetchCertificate(identity: Identity): Promise<WorkloadCertificate>;
}

/** Defaults of {@link CaClientOptions}. */
export const CA_CLIENT_DEFAULTS = {
  // `SECRET_TTL` (spec §4.2).
  ttlSeconds: 86_400,
  // Bounds a request to a CA that accepted the connection but does not answer.
  requestTimeoutMs: 10_000,
} as const;

/** Request metadata key istiod reads (`istio:pkg/security/security.go`). */
export const IMPERSONATED_IDENTITY_KEY = 'ImpersonatedIdentity';

export interface CaClientOptions extends ControlPlaneOptions {
  /** `validity_duration` of each request; default 24 h. */
  readonly ttlSeconds?: number;
  /**
   * Ask for other identities through `ImpersonatedIdentity` (ztunnel in shared mode, on behalf of
   * the pods of its node). The default of {@link CaClient.fetchCertificate}'s option.
   */
  readonly impersonate?: boolean;
  readonly requestTimeoutMs?: number;
  /** Epoch milliseconds; the clock the leaf's expiry is checked against. */
  readonly now?: () => number;
  readonly log?: Logger;
}

const CREATE_CERTIFICATE = (() => {
  const m = grpcServiceDefinition(IstioCertificateService).createCertificate;
  if (!m) throw new Error('the generated IstioCertificateService lacks CreateCertificate');
  return m;
})();

// ztunnel's CSRs are ECDSA P-256 with SHA-256 (spec §4.2).
const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

// The statuses after which the channel is rebuilt: the connection, not the request, failed, and a
// new channel also re-reads the root certificate (ztunnel `rebuild_channel`, PR #1775).
const REBUILD_ON = new Set<number>([status.UNAVAILABLE, status.UNKNOWN, status.INTERNAL]);

/**
 * ztunnel's CA client (`ztunnel:src/identity/caclient.rs`): for each request a new P-256 key, a
 * CSR whose only content is the SPIFFE ID as a critical URI SAN, and a unary `CreateCertificate`
 * with the same `authorization` and `clusterid` headers as xDS. The response is verified before
 * it is returned (reliability checklist 5): a wrong identity, an empty chain, a leaf for another
 * key or a chain that does not reach the roots is an error, and nothing is returned.
 */
export class CaClient implements CertificateFetcher {
  readonly #options: CaClientOptions;
  readonly #log: Logger;
  #channel: Promise<Client> | undefined;
  #closed = false;

  constructor(options: CaClientOptions) {
    validateControlPlaneOptions(options, 'ca');
    const ttl = options.ttlSeconds ?? CA_CLIENT_DEFAULTS.ttlSeconds;
    if (!Number.isInteger(ttl) || ttl <= 0) {
      throw new ControlPlaneError(
        'OPTIONS_INVALID',
        `certificate ttl ${ttl}s must be a positive whole number of seconds`,
      );
    }
    this.#options = options;
    this.#log = options.log ?? logger('ca');
  }

  /**
   * Requests, verifies and returns a certificate for `identity`. With `impersonate` (default from
   * the options) the request names the identity in `ImpersonatedIdentity`; otherwise istiod
   * certifies the caller's own identity, which must then equal `identity`.
   */
  async fetchCertificate(
    identity: Identity,
    options: { readonly impersonate?: boolean } = {},
  ): Promise<WorkloadCertificate> {
    const uri = formatIdentity(identity);
    const impersonate = options.impersonate ?? this.#options.impersonate ?? false;
    const { keyPem, spki, csrPem } = await generateCsr(uri);
    const request = create(IstioCertificateRequestSchema, {
      csr: csrPem,
      validityDuration: BigInt(this.#options.ttlSeconds ?? CA_CLIENT_DEFAULTS.ttlSeconds),
      ...(impersonate && { metadata: { [IMPERSONATED_IDENTITY_KEY]: uri } }),
    });
    const response = await this.#call(request, uri);
    const now = this.#options.now?.() ?? Date.now();
    try {
      const cert = workloadCertificateFromResponse({
        identity,
        keyPem,
        publicKeySpki: spki,
        certChain: response.certChain,
        now,
      });
      this.#log.debug(
        { identity: uri, serial: cert.serialNumber, notAfter: cert.notAfter.toISOString(), impersonate },
        'certificate received',
      );
      return cert;
    } catch (err) {
      this.#log.error({ identity: uri, err }, 'ca response refused');
      throw err;
    }
  }

  /** Closes the channel; later fetches fail. */
  close(): void {
    this.#closed = true;
    const channel = this.#channel;
    this.#channel = undefined;
    void channel?.then(
      (c) => c.close(),
      () => {},
    );
  }

  async #call(request: IstioCertificateRequest, uri: string): Promise<IstioCertificateResponse> {
    const o = this.#options;
    if (this.#closed) throw new CaError('CA_UNAVAILABLE', 'the ca client is closed');
    let client: Client;
    let metadata: Awaited<ReturnType<typeof controlPlaneMetadata>>;
    try {
      [client, metadata] = await Promise.all([this.#client(), controlPlaneMetadata(o)]);
      await waitForChannelReady(
        client,
        o.address,
        o.connectTimeoutMs ?? CONTROL_PLANE_DEFAULTS.connectTimeoutMs,
      );
    } catch (err) {
      this.#dropChannel();
      throw new CaError('CA_UNAVAILABLE', `cannot request a certificate for ${uri}: ${errorMessage(err)}`, {
        cause: err,
        retryable: true,
      });
    }
    const deadline = Date.now() + (o.requestTimeoutMs ?? CA_CLIENT_DEFAULTS.requestTimeoutMs);
    try {
      return await new Promise<IstioCertificateResponse>((resolve, reject) => {
        client.makeUnaryRequest(
          CREATE_CERTIFICATE.path,
          CREATE_CERTIFICATE.requestSerialize as (req: IstioCertificateRequest) => Buffer,
          CREATE_CERTIFICATE.responseDeserialize as (buf: Buffer) => IstioCertificateResponse,
          request,
          metadata,
          { deadline },
          (err, res) => (err || !res ? reject(err ?? new Error('empty reply')) : resolve(res)),
        );
      });
    } catch (err) {
      const code = (err as Partial<ServiceError>).code;
      if (code === undefined || REBUILD_ON.has(code)) this.#dropChannel();
      throw new CaError(
        'CA_REQUEST_FAILED',
        `certificate request for ${uri} failed: ${(err as Partial<ServiceError>).details ?? errorMessage(err)}`,
        { cause: err, retryable: true },
      );
    }
  }

  #client(): Promise<Client> {
    this.#channel ??= controlPlaneCredentials(this.#options.tls).then(
      (creds) => new Client(this.#options.address, creds, controlPlaneChannelOptions(this.#options)),
    );
    return this.#channel;
  }

  #dropChannel(): void {
    const channel = this.#channel;
    this.#channel = undefined;
    void channel?.then(
      (c) => c.close(),
      () => {},
    );
  }
}

/** A new key pair and a CSR for `uri`: no subject, one critical URI SAN (RFC 5280 §4.2.1.6). */
async function generateCsr(uri: string): Promise<{ keyPem: string; spki: Buffer; csrPem: string }> {
  try {
    const keys = (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, [
      'sign',
      'verify',
    ])) as CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create(
      {
        keys,
        signingAlgorithm: SIGNING_ALGORITHM,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }], true)],
      },
      webcrypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1],
    );
    const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
    const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey));
    return { keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), spki, csrPem: csr.toString('pem') };
  } catch (err) {
    throw new CaError('CSR_FAILED', `cannot generate a key and csr for ${uri}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** The certificates of one PEM element; throws CA_RESPONSE_MALFORMED naming the element. */
function certificatesOf(pem: string, index: number): X509Certificate[] {
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0 || pem.replace(PEM_CERTIFICATE, '').trim() !== '') {
    throw new CaError(
      'CA_RESPONSE_MALFORMED',
      `cert_chain[${index}] is not a sequence of PEM certificates (${pem.length} characters)`,
    );
  }
  return blocks.map((b) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new CaError('CA_RESPONSE_MALFORMED', `cert_chain[${index}] holds an unreadable certificate`, {
        cause: err,
      });
    }
  });
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

/**
 * Verifies an `IstioCertificateResponse.cert_chain` (leaf first, root last) for the identity and
 * key we asked about, and builds the certificate from it. Throws CaError (`CA_RESPONSE_EMPTY`,
 * `CA_RESPONSE_MALFORMED`, `CA_RESPONSE_NO_ROOTS`, `CA_IDENTITY_MISMATCH`, `CA_KEY_MISMATCH`,
 * `CA_CERT_EXPIRED`, `CA_CHAIN_INVALID`).
 *
 * The trust roots are every certificate of the last element, which may hold several (a root
 * rotation in progress); the leaf must chain through the middle elements to one of them.
 */
export function workloadCertificateFromResponse(params: {
  readonly identity: Identity;
  readonly keyPem: string;
  /** DER SubjectPublicKeyInfo of the key the CSR carried. */
  readonly publicKeySpki: Uint8Array;
  readonly certChain: readonly string[];
  /** Epoch milliseconds. */
  readonly now: number;
}): WorkloadCertificate {
  const uri = formatIdentity(params.identity);
  const chain = params.certChain;
  if (chain.length === 0) {
    throw new CaError('CA_RESPONSE_EMPTY', `the ca returned an empty certificate chain for ${uri}`);
  }
  const leafCerts = certificatesOf(chain[0] as string, 0);
  if (leafCerts.length !== 1) {
    throw new CaError(
      'CA_RESPONSE_MALFORMED',
      `cert_chain[0] must be exactly the leaf certificate; it holds ${leafCerts.length}`,
    );
  }
  const leaf = leafCerts[0] as X509Certificate;

  const sans = uriSans(leaf.raw);
  if (sans.length !== 1 || sans[0] !== uri) {
    throw new CaError(
      'CA_IDENTITY_MISMATCH',
      `the ca returned a certificate for ${JSON.stringify(sans)} instead of ${JSON.stringify(uri)}`,
    );
  }
  const leafSpki = leaf.publicKey.export({ type: 'spki', format: 'der' });
  if (!leafSpki.equals(Buffer.from(params.publicKeySpki))) {
    throw new CaError(
      'CA_KEY_MISMATCH',
      `the certificate for ${uri} does not certify the key our csr carried`,
    );
  }
  if (leaf.validToDate.getTime() <= params.now) {
    throw new CaError(
      'CA_CERT_EXPIRED',
      `the certificate for ${uri} expired at ${leaf.validToDate.toISOString()}, before it was received`,
    );
  }
  if (chain.length < 2) {
    throw new CaError(
      'CA_RESPONSE_NO_ROOTS',
      `the ca response for ${uri} holds only the leaf; the last element must carry the trust roots`,
    );
  }
  const intermediates: X509Certificate[] = [];
  for (let i = 1; i < chain.length - 1; i++) intermediates.push(...certificatesOf(chain[i] as string, i));
  const roots = certificatesOf(chain[chain.length - 1] as string, chain.length - 1);

  let current = leaf;
  for (const [i, inter] of intermediates.entries()) {
    if (!inter.ca || !issuedBy(current, inter)) {
      throw new CaError(
        'CA_CHAIN_INVALID',
        `the certificate chain for ${uri} breaks at intermediate ${i + 1} (${inter.subject || 'empty subject'})`,
      );
    }
    current = inter;
  }
  if (!roots.some((r) => r.ca && issuedBy(current, r))) {
    throw new CaError(
      'CA_CHAIN_INVALID',
      `the certificate chain for ${uri} does not lead to any of the ${roots.length} root(s) in the last element`,
    );
  }

  const pem = (c: X509Certificate): string =>
    c.toString().endsWith('\n') ? c.toString() : `${c.toString()}\n`;
  const certChainPem = [leaf, ...intermediates].map(pem).join('');
  const rootsPem = roots.map(pem).join('');
  const notBefore = leaf.validFromDate;
  const notAfter = leaf.validToDate;
  const refreshAt = new Date(notBefore.getTime() + (notAfter.getTime() - notBefore.getTime()) / 2);
  return Object.freeze({
    identity: params.identity,
    keyPem: params.keyPem,
    certChainPem,
    rootsPem,
    key: params.keyPem,
    certChain: certChainPem,
    roots: rootsPem,
    serialNumber: leaf.serialNumber,
    notBefore,
    notAfter,
    refreshAt,
  });
}

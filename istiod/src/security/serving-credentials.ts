import { errorMessage } from '@ambient/common/errors';
import type { Component } from '@ambient/common/lifecycle';
import { type Logger, logger } from '@ambient/common/log';
import { experimental, type ServerCredentials } from '@grpc/grpc-js';
import type { CertificateAuthority, ServingCertificate } from '../ca/authority.ts';

type CertificateProvider = Parameters<typeof experimental.createCertificateProviderServerCredentials>[0];
type CaListener = Parameters<CertificateProvider['addCaCertificateListener']>[0];
type IdentityListener = Parameters<CertificateProvider['addIdentityCertificateListener']>[0];

export interface ServingCertificateProviderOptions {
  readonly authority: CertificateAuthority;
  /** istiod's names: `istiod.istio-system.svc`, `istiod.istio-system.svc.cluster.local`, … */
  readonly dnsNames: readonly string[];
  /** Addresses clients dial directly (local mode: `127.0.0.1`). */
  readonly ipAddresses?: readonly string[];
  /** Lifetime of each serving certificate; renewed at half of it. Default: the CA's default TTL. */
  readonly ttlSeconds?: number;
  /** Delay before retrying a failed renewal. Default 30 s. */
  readonly retryMs?: number;
  readonly log?: Logger;
}

/**
 * istiod's own TLS certificate for 15012, issued by its CA and renewed at half-life, fed to
 * grpc-js as a certificate provider so renewals apply to new connections without a restart.
 * It also provides the mesh root as the CA for client certificates: {@link credentials} requests
 * a client certificate without requiring one, so ztunnel's token-only calls work and a
 * mesh-issued client certificate is verified and reported to the authenticators.
 */
export class ServingCertificateProvider implements CertificateProvider, Component {
  readonly name = 'istiod-serving-certificate';
  readonly #options: ServingCertificateProviderOptions;
  readonly #log: Logger;
  readonly #identityListeners = new Set<IdentityListener>();
  readonly #caListeners = new Set<CaListener>();
  #current: ServingCertificate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: ServingCertificateProviderOptions) {
    this.#options = options;
    this.#log = options.log ?? logger('security');
  }

  /** The certificate in use; undefined before {@link start}. */
  get current(): ServingCertificate | undefined {
    return this.#current;
  }

  /** Issues the first certificate; the server can serve TLS once this resolves. */
  async start(): Promise<void> {
    this.#stopped = false;
    await this.#renew();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  /** grpc-js server credentials backed by this provider; client certificates optional. */
  credentials(): ServerCredentials {
    return experimental.createCertificateProviderServerCredentials(this, this, false);
  }

  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    // Delivered on a later tick: grpc-js registers its own watcher only after adding listeners,
    // so a synchronous first update would be lost and the server would drop every connection.
    queueMicrotask(() => {
      if (this.#current && this.#caListeners.has(listener))
        listener({ caCertificate: Buffer.from(this.#current.rootPem) });
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    queueMicrotask(() => {
      if (this.#current && this.#identityListeners.has(listener)) listener(identityUpdate(this.#current));
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
  }

  async #renew(): Promise<void> {
    const o = this.#options;
    const cert = await o.authority.issueServingCertificate({
      dnsNames: o.dnsNames,
      ...(o.ipAddresses ? { ipAddresses: o.ipAddresses } : {}),
      ...(o.ttlSeconds ? { ttlSeconds: o.ttlSeconds } : {}),
    });
    this.#current = cert;
    for (const l of this.#identityListeners) l(identityUpdate(cert));
    for (const l of this.#caListeners) l({ caCertificate: Buffer.from(cert.rootPem) });
    this.#log.info(
      { dnsNames: o.dnsNames, notAfter: cert.notAfter.toISOString() },
      'serving certificate issued',
    );
    const halfLife = (cert.notAfter.getTime() - cert.notBefore.getTime()) / 2;
    this.#schedule(Math.max(1000, cert.notBefore.getTime() + halfLife - Date.now()));
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    // setTimeout caps at 2^31-1 ms (~24.8 days); longer waits are re-armed.
    const capped = Math.min(delayMs, 2 ** 31 - 1);
    this.#timer = setTimeout(() => {
      if (capped < delayMs) {
        this.#schedule(delayMs - capped);
        return;
      }
      this.#renew().catch((err: unknown) => {
        this.#log.error({ err: errorMessage(err) }, 'serving certificate renewal failed; retrying');
        this.#schedule(this.#options.retryMs ?? 30_000);
      });
    }, capped);
    this.#timer.unref();
  }
}

function identityUpdate(cert: ServingCertificate): { certificate: Buffer; privateKey: Buffer } {
  return { certificate: Buffer.from(cert.certChainPem), privateKey: Buffer.from(cert.privateKeyPem) };
}

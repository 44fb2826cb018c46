import { performance } from 'node:perf_hooks';
import { errorMessage } from '@ambient/common/errors';
import {
  type IstioCertificateRequest,
  type IstioCertificateResponse,
  IstioCertificateResponseSchema,
  IstioCertificateService,
} from '@ambient/common/gen/istio/v1/auth/ca_pb';
import { grpcServiceDefinition } from '@ambient/common/grpc';
import { formatIdentity, type Identity, parseIdentity } from '@ambient/common/identity';
import { type Logger, logger } from '@ambient/common/log';
import { create } from '@bufbuild/protobuf';
import {
  type Server,
  type ServerUnaryCall,
  type ServiceDefinition,
  type StatusObject,
  type sendUnaryData,
  status,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { Counter, Histogram, type Registry } from 'prom-client';
import {
  type AuthenticationRequest,
  type Authenticator,
  authenticationRequest,
  type Caller,
  OPAQUE_AUTHENTICATION_MESSAGE,
} from '../security/authenticate.ts';
import { AuthenticationError } from '../security/errors.ts';
import { type CertificateAuthority, MAX_CSR_BYTES } from './authority.ts';
import { CaError, ImpersonationError } from './errors.ts';
import type { ImpersonationAuthorizer } from './node-authorizer.ts';
import { KeyedRateLimiter, type RateLimit } from './rate-limit.ts';

/** Request metadata keys (`istio:pkg/security/security.go`). */
export const IMPERSONATED_IDENTITY_KEY = 'ImpersonatedIdentity';
export const CERT_SIGNER_KEY = 'CertSigner';

/**
 * Default per-caller limit. A ztunnel asks for one certificate per service account on its node
 * and renews at half-life, so even a node with hundreds of identities stays far below it; the
 * burst covers a ztunnel restart fetching all of them at once.
 */
export const DEFAULT_CA_RATE_LIMIT: RateLimit = { perSecond: 20, burst: 200 };

/** Why a request was refused: the `reason` label of `istiod_certificates_refused_total`. */
export type RefusalReason =
  | 'unauthenticated'
  | 'unauthorized'
  | 'rate_limited'
  | 'csr_too_large'
  | 'invalid_csr'
  | 'ttl_too_long'
  | 'internal';

/** A refused call: the gRPC status to answer with, and the metric label. */
export class CaRequestError extends Error {
  readonly code: status;
  readonly reason: RefusalReason;

  constructor(code: status, reason: RefusalReason, details: string, options: { cause?: unknown } = {}) {
    super(details, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.reason = reason;
  }

  /** The grpc-js error to pass to a unary callback. */
  toStatus(): Pick<StatusObject, 'code' | 'details'> {
    return { code: this.code, details: this.message };
  }
}

export interface CaServerOptions {
  readonly authority: CertificateAuthority;
  readonly authenticator: Authenticator;
  /** Decides `ImpersonatedIdentity` requests (the NodeAuthorizer). */
  readonly impersonation: ImpersonationAuthorizer;
  /** Where the CA's metrics are registered. */
  readonly registry: Registry;
  /** Largest CSR accepted, bytes; default 64 KiB. */
  readonly maxCsrBytes?: number;
  /** Per-caller token bucket (a caller is its pod, or its identity without one). */
  readonly rateLimit?: RateLimit;
  readonly log?: Logger;
}

/**
 * `istio.v1.auth.IstioCertificateService/CreateCertificate` (spec §4): authenticate the caller,
 * rate-limit it, bound the CSR, decide the identity (its own, or an impersonated one through node
 * authorization), sign, and answer the chain leaf first, root last. Authentication and
 * authorization failures are answered with an opaque UNAUTHENTICATED; the reason is logged.
 */
export class CaServer {
  readonly definition: ServiceDefinition = grpcServiceDefinition(IstioCertificateService);
  readonly implementation: UntypedServiceImplementation;
  readonly #authority: CertificateAuthority;
  readonly #authenticator: Authenticator;
  readonly #impersonation: ImpersonationAuthorizer;
  readonly #maxCsrBytes: number;
  readonly #limiter: KeyedRateLimiter;
  readonly #log: Logger;
  readonly #issued: Counter;
  readonly #refused: Counter<'reason'>;
  readonly #signing: Histogram;

  constructor(options: CaServerOptions) {
    this.#authority = options.authority;
    this.#authenticator = options.authenticator;
    this.#impersonation = options.impersonation;
    this.#maxCsrBytes = Math.min(options.maxCsrBytes ?? MAX_CSR_BYTES, MAX_CSR_BYTES);
    this.#limiter = new KeyedRateLimiter(options.rateLimit ?? DEFAULT_CA_RATE_LIMIT);
    this.#log = options.log ?? logger('ca');
    const registers = [options.registry];
    this.#issued = new Counter({
      name: 'istiod_certificates_issued_total',
      help: 'Workload certificates signed by the CA.',
      registers,
    });
    this.#refused = new Counter({
      name: 'istiod_certificates_refused_total',
      help: 'Certificate requests refused, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.#signing = new Histogram({
      name: 'istiod_certificate_signing_duration_seconds',
      help: 'Time to validate a CSR and sign its certificate.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.implementation = {
      createCertificate: (
        call: ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
        callback: sendUnaryData<IstioCertificateResponse>,
      ) => {
        this.createCertificate(call.request, authenticationRequest(call), call.getPeer()).then(
          (response) => callback(null, response),
          (err: unknown) => {
            const e =
              err instanceof CaRequestError
                ? err
                : new CaRequestError(status.INTERNAL, 'internal', 'certificate signing failed', {
                    cause: err,
                  });
            callback(e.toStatus());
          },
        );
      },
    };
  }

  /** Registers the service on a grpc-js server (istiod's 15012 listener). */
  addTo(server: Server): void {
    server.addService(this.definition, this.implementation);
  }

  /**
   * Handles one request. Resolves with the response, or rejects with a {@link CaRequestError}
   * carrying the status to answer; every refusal is counted and logged with its real reason.
   */
  async createCertificate(
    request: IstioCertificateRequest,
    auth: AuthenticationRequest,
    peer = 'unknown',
  ): Promise<IstioCertificateResponse> {
    let caller: Caller | undefined;
    try {
      caller = await this.#authenticate(auth, peer);
      this.#rateLimit(caller);
      const csrBytes = Buffer.byteLength(request.csr, 'utf8');
      if (csrBytes > this.#maxCsrBytes) {
        throw new CaRequestError(
          status.INVALID_ARGUMENT,
          'csr_too_large',
          `csr is ${csrBytes} bytes, over the ${this.#maxCsrBytes}-byte limit`,
        );
      }
      const requested = request.metadata?.[IMPERSONATED_IDENTITY_KEY];
      // Upstream treats an empty string as absent: the caller gets its own identity.
      const impersonated = requested === '' ? undefined : requested;
      if (request.metadata?.[CERT_SIGNER_KEY] !== undefined) {
        this.#log.debug(
          { caller: caller.identity },
          'CertSigner metadata ignored: this CA has a single signer',
        );
      }
      const identity = this.#decideIdentity(caller, impersonated, peer);
      const started = performance.now();
      let signed: Awaited<ReturnType<CertificateAuthority['sign']>>;
      try {
        signed = await this.#authority.sign({
          csrPem: request.csr,
          identity,
          ttlSeconds: request.validityDuration,
        });
      } catch (err) {
        throw signingRefusal(err);
      } finally {
        this.#signing.observe((performance.now() - started) / 1000);
      }
      this.#issued.inc();
      this.#log.info(
        {
          caller: caller.identity,
          pod: caller.podName,
          identity: formatIdentity(identity),
          impersonated: impersonated !== undefined,
          serial: signed.serialNumber,
          notAfter: signed.notAfter.toISOString(),
        },
        'certificate issued',
      );
      return create(IstioCertificateResponseSchema, { certChain: [...signed.certChain] });
    } catch (err) {
      const e =
        err instanceof CaRequestError
          ? err
          : new CaRequestError(status.INTERNAL, 'internal', 'certificate signing failed', { cause: err });
      this.#refused.inc({ reason: e.reason });
      if (e.reason === 'internal') {
        this.#log.error(
          { caller: caller?.identity, peer, err: errorMessage(err) },
          'certificate request failed',
        );
      } else if (e.reason !== 'unauthenticated' && e.reason !== 'unauthorized') {
        // Authentication and authorization refusals were logged with their reason where decided.
        this.#log.warn(
          { caller: caller?.identity, peer, reason: e.reason, err: e.message },
          'certificate request refused',
        );
      }
      throw e;
    }
  }

  async #authenticate(auth: AuthenticationRequest, peer: string): Promise<Caller> {
    try {
      return await this.#authenticator.authenticate(auth);
    } catch (err) {
      this.#log.warn(
        {
          peer,
          authenticator: this.#authenticator.name,
          code: err instanceof AuthenticationError ? err.code : 'UNEXPECTED',
          err: errorMessage(err),
        },
        'certificate request authentication failed',
      );
      throw new CaRequestError(status.UNAUTHENTICATED, 'unauthenticated', OPAQUE_AUTHENTICATION_MESSAGE, {
        cause: err,
      });
    }
  }

  #rateLimit(caller: Caller): void {
    const key = caller.podUid ? `pod:${caller.podUid}` : `id:${caller.identity}`;
    if (!this.#limiter.take(key)) {
      throw new CaRequestError(
        status.RESOURCE_EXHAUSTED,
        'rate_limited',
        'certificate request rate limit exceeded; retry later',
      );
    }
  }

  #decideIdentity(caller: Caller, impersonated: unknown, peer: string): Identity {
    if (impersonated === undefined) return parseIdentity(caller.identity);
    try {
      if (typeof impersonated !== 'string') {
        throw new ImpersonationError(
          'REQUESTED_IDENTITY_INVALID',
          `${IMPERSONATED_IDENTITY_KEY} is a ${impersonated === null ? 'null' : typeof impersonated}, not a string`,
        );
      }
      return this.#impersonation.authorize(caller, impersonated);
    } catch (err) {
      this.#log.warn(
        {
          peer,
          caller: caller.identity,
          pod: caller.podName,
          requested: typeof impersonated === 'string' ? impersonated.slice(0, 256) : undefined,
          code: err instanceof ImpersonationError ? err.code : 'UNEXPECTED',
          err: errorMessage(err),
        },
        'impersonation refused',
      );
      throw new CaRequestError(status.UNAUTHENTICATED, 'unauthorized', OPAQUE_AUTHENTICATION_MESSAGE, {
        cause: err,
      });
    }
  }
}

function signingRefusal(err: unknown): CaRequestError {
  if (!(err instanceof CaError)) {
    return new CaRequestError(status.INTERNAL, 'internal', 'certificate signing failed', { cause: err });
  }
  switch (err.code) {
    case 'CSR_TOO_LARGE':
      return new CaRequestError(status.INVALID_ARGUMENT, 'csr_too_large', err.message, { cause: err });
    case 'CSR_MALFORMED':
    case 'CSR_SIGNATURE_INVALID':
    case 'CSR_KEY_UNSUPPORTED':
      return new CaRequestError(status.INVALID_ARGUMENT, 'invalid_csr', err.message, { cause: err });
    case 'TTL_TOO_LONG':
      return new CaRequestError(status.INVALID_ARGUMENT, 'ttl_too_long', err.message, { cause: err });
    default:
      return new CaRequestError(status.INTERNAL, 'internal', 'certificate signing failed', { cause: err });
  }
}

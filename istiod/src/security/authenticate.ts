import { createHash } from 'node:crypto';
import { errorMessage } from '@ambient/common/errors';
import { type Metadata, type ServerUnaryCall, type StatusObject, status } from '@grpc/grpc-js';
import { AuthenticationError } from './errors.ts';

/** Who called: the authenticated workload, as the CA and the xDS server see it. */
export interface Caller {
  /** `spiffe://<mesh trust domain>/ns/<namespace>/sa/<serviceAccount>`. */
  readonly identity: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The pod the credential was bound to (bound service-account tokens, token file); absent for certificates. */
  readonly podName?: string;
  readonly podUid?: string;
  /** Which credential proved it. */
  readonly via: 'token' | 'certificate';
}

/** The credentials one gRPC call carries. */
export interface AuthenticationRequest {
  readonly metadata: Metadata;
  /**
   * DER of the client certificate, present only when the TLS handshake verified it against the
   * mesh root (grpc-js reports a peer certificate only for an authorized socket).
   */
  readonly peerCertificate?: Buffer;
}

/**
 * Authenticates a call. Resolves with the caller, or rejects with an {@link AuthenticationError}
 * whose code and message say why; servers log that and answer with {@link unauthenticatedStatus}.
 */
export interface Authenticator {
  /** Names the authenticator in logs (`kube-token`, `token-file`, `peer-certificate`). */
  readonly name: string;
  authenticate(request: AuthenticationRequest): Promise<Caller>;
}

/** What the caller sees of any authentication or authorization failure: nothing it could probe with. */
export const OPAQUE_AUTHENTICATION_MESSAGE = 'request authentication failure';

/** The gRPC status every authentication or authorization failure is answered with. */
export function unauthenticatedStatus(): Pick<StatusObject, 'code' | 'details'> {
  return { code: status.UNAUTHENTICATED, details: OPAQUE_AUTHENTICATION_MESSAGE };
}

/** The credentials of a grpc-js server call: its metadata and its verified client certificate, if any. */
export function authenticationRequest(
  call: Pick<ServerUnaryCall<unknown, unknown>, 'metadata' | 'getAuthContext'>,
): AuthenticationRequest {
  const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
  return raw && raw.length > 0
    ? { metadata: call.metadata, peerCertificate: raw }
    : { metadata: call.metadata };
}

// A projected service-account token is about 1 KiB; anything far larger is not one.
const MAX_TOKEN_BYTES = 16 * 1024;
const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;

/**
 * The bearer token of the `authorization` header, or undefined when there is no such header.
 * Throws `TOKEN_MALFORMED` for several headers, another scheme, or an oversized token.
 */
export function bearerToken(metadata: Metadata): string | undefined {
  const values = metadata.get('authorization');
  if (values.length === 0) return undefined;
  if (values.length > 1)
    throw new AuthenticationError(
      'TOKEN_MALFORMED',
      `request carries ${values.length} authorization headers`,
    );
  const value = values[0];
  const text = typeof value === 'string' ? value : (value?.toString('latin1') ?? '');
  if (text.length > MAX_TOKEN_BYTES) {
    throw new AuthenticationError(
      'TOKEN_MALFORMED',
      `authorization header is ${text.length} bytes, over ${MAX_TOKEN_BYTES}`,
    );
  }
  const m = BEARER.exec(text);
  if (!m?.[1])
    throw new AuthenticationError('TOKEN_MALFORMED', 'authorization header is not "Bearer <token>"');
  return m[1];
}

/** A SHA-256 of a token: what caches and maps are keyed by, so no token sits in memory as a key. */
export function tokenDigest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/**
 * Tries several authenticators, cheapest first; the first that accepts the call wins (as istiod
 * tries each of its authenticators). When every one refuses, the error is the refusal of the one
 * that found credentials, or `NO_AUTHENTICATOR_ACCEPTED` listing each reason.
 */
export class AuthenticatorChain implements Authenticator {
  readonly name: string;
  readonly #authenticators: readonly Authenticator[];

  constructor(authenticators: readonly Authenticator[]) {
    if (authenticators.length === 0)
      throw new RangeError('an authenticator chain needs at least one authenticator');
    this.#authenticators = authenticators;
    this.name = `chain(${authenticators.map((a) => a.name).join(',')})`;
  }

  async authenticate(request: AuthenticationRequest): Promise<Caller> {
    const refusals: { name: string; err: unknown }[] = [];
    for (const a of this.#authenticators) {
      try {
        return await a.authenticate(request);
      } catch (err) {
        if (err instanceof AuthenticationError && err.code === 'NO_CREDENTIALS') continue;
        refusals.push({ name: a.name, err });
      }
    }
    if (refusals.length === 0) {
      throw new AuthenticationError(
        'NO_CREDENTIALS',
        `request carries no credential any of ${this.name} reads (no bearer token, no verified client certificate)`,
      );
    }
    if (refusals.length === 1) {
      const only = refusals[0] as { name: string; err: unknown };
      if (only.err instanceof AuthenticationError) throw only.err;
    }
    throw new AuthenticationError(
      'NO_AUTHENTICATOR_ACCEPTED',
      refusals.map((r) => `${r.name}: ${errorMessage(r.err)}`).join('; '),
      { cause: refusals[0]?.err },
    );
  }
}

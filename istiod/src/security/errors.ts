import { MeshError } from '@ambient/common/errors';

/**
 * Why a caller could not be authenticated. The code and message are logged and counted; the
 * caller itself only ever sees an opaque UNAUTHENTICATED.
 */
export type AuthenticationErrorCode =
  /** The request carried no credential this authenticator reads (no bearer token, no client certificate). */
  | 'NO_CREDENTIALS'
  /** The `authorization` header is not `Bearer <token>`, or the token is empty or too long. */
  | 'TOKEN_MALFORMED'
  /** The API server (or the token file) does not accept the token. */
  | 'TOKEN_REJECTED'
  /** The TokenReview call itself failed (API server unreachable, forbidden, timeout). */
  | 'TOKEN_REVIEW_FAILED'
  /** The token is valid but not for any of the accepted audiences. */
  | 'TOKEN_AUDIENCE'
  /** The token authenticates a user that is not a service account. */
  | 'NOT_SERVICE_ACCOUNT'
  /** The `clusterid` header names a cluster this istiod does not serve. */
  | 'UNKNOWN_CLUSTER'
  /** The client certificate has no usable SPIFFE URI SAN, or more than one. */
  | 'CERTIFICATE_IDENTITY'
  /** The identity is in a trust domain other than the mesh's. */
  | 'TRUST_DOMAIN_MISMATCH'
  /** Several authenticators were tried and each refused the request; the message lists why. */
  | 'NO_AUTHENTICATOR_ACCEPTED'
  /** The token file cannot be read or is malformed. */
  | 'TOKEN_FILE_INVALID';

export class AuthenticationError extends MeshError<AuthenticationErrorCode> {}

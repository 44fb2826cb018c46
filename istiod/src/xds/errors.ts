import { MeshError } from '@ambient/common/errors';
import { status } from '@grpc/grpc-js';

/**
 * Why the xDS server refused or ended a stream. Each code maps to one gRPC status
 * ({@link grpcStatusOf}), which is what the proxy sees.
 */
export type XdsErrorCode =
  /** The first request of a stream carried no `node`. */
  | 'NODE_MISSING'
  /** The node id is not `<type>~<ip>~<id>~<domain>`, names an unknown proxy type or an invalid IP. */
  | 'NODE_ID_INVALID'
  /** A request carried no `type_url`; ADS multiplexes types, so it is required. */
  | 'TYPE_URL_MISSING'
  /** The authenticator refused the caller's credentials. */
  | 'UNAUTHENTICATED'
  /** The authenticated identity does not match the namespace or service account the node claims. */
  | 'IDENTITY_MISMATCH'
  /** The server is draining and accepts no new streams. */
  | 'SHUTTING_DOWN'
  /** A listener could not bind its address. */
  | 'BIND_FAILED'
  /** The options given to the server contradict each other. */
  | 'OPTIONS_INVALID';

export class XdsError extends MeshError<XdsErrorCode> {}

const GRPC_STATUS: Readonly<Record<XdsErrorCode, status>> = {
  NODE_MISSING: status.INVALID_ARGUMENT,
  NODE_ID_INVALID: status.INVALID_ARGUMENT,
  TYPE_URL_MISSING: status.INVALID_ARGUMENT,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  IDENTITY_MISMATCH: status.PERMISSION_DENIED,
  SHUTTING_DOWN: status.UNAVAILABLE,
  BIND_FAILED: status.UNAVAILABLE,
  OPTIONS_INVALID: status.INTERNAL,
};

/** The gRPC status a stream ends with for this error; anything unexpected is INTERNAL. */
export function grpcStatusOf(err: unknown): status {
  return err instanceof XdsError ? GRPC_STATUS[err.code] : status.INTERNAL;
}

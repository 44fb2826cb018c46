import { MeshError } from '../errors.ts';

/** Why the data plane's control-plane connection (xDS or CA channel) could not be used. */
export type ControlPlaneErrorCode =
  /** Options that can never work (empty address, a header name gRPC refuses). */
  | 'OPTIONS_INVALID'
  /** The bearer token (projected service-account token file) could not be read. */
  | 'TOKEN_UNAVAILABLE'
  /** The root certificate that verifies istiod could not be read. */
  | 'ROOT_CERT_UNAVAILABLE'
  /** No connection to istiod within the connect timeout. */
  | 'CONNECT_FAILED';

export class ControlPlaneError extends MeshError<ControlPlaneErrorCode> {}

/** Why one xDS resource was rejected (it is NACKed; the rest of the response still applies). */
export type XdsResourceErrorCode =
  /** The `Resource` carries no `Any`. */
  | 'RESOURCE_MISSING'
  /** The `Any.type_url` is not the type the response is for. */
  | 'RESOURCE_TYPE_MISMATCH'
  /** The bytes do not decode as the message of the type. */
  | 'RESOURCE_DECODE_FAILED';

export class XdsResourceError extends MeshError<XdsResourceErrorCode> {}

/** Why an xDS handler could not be registered or ran badly. */
export type XdsClientErrorCode =
  /** Two handlers for one type URL, or none at all. */
  | 'HANDLERS_INVALID'
  /** A handler threw instead of returning its rejects; the whole response is NACKed. */
  | 'HANDLER_FAILED'
  /** The client was started twice. */
  | 'ALREADY_STARTED';

export class XdsClientError extends MeshError<XdsClientErrorCode> {}

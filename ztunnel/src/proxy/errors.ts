import { MeshError } from '@ambient/common/errors';
import type { RoutingErrorCode } from '@ambient/common/model';

/**
 * Why a proxied connection was refused, failed or was closed. The code is the access log's
 * `error_code` and never changes meaning; the message (the access log's `error`) uses ztunnel's
 * wording where ztunnel has one, so operators can search for the same text.
 */
export type ProxyErrorCode =
  | RoutingErrorCode
  /** A destination on one of ztunnel's own ports (15001/15006/15008): a loop. */
  | 'SELF_CALL'
  /** The pod this proxy serves is not (yet) in WDS after the wait. */
  | 'UNKNOWN_SOURCE'
  /** Inbound plaintext to an address that is no known workload. */
  | 'UNKNOWN_DESTINATION'
  /** The chosen route needs double HBONE (another network), which this proxy does not speak. */
  | 'DOUBLE_HBONE_UNSUPPORTED'
  /** L4 authorization denied the connection (answered 401 on HBONE). */
  | 'POLICY_DENIED'
  /** A policy change made a live connection's authorization fail; it was closed. */
  | 'POLICY_CHANGED'
  /** The CONNECT was answered with a status other than 200. */
  | 'HBONE_STATUS'
  /** The HBONE connection could not be set up within the connect timeout. */
  | 'HBONE_CONNECT_TIMEOUT'
  /** TLS with the HBONE peer failed: certificate, identity, ALPN or handshake. */
  | 'HBONE_TLS_FAILED'
  /** The HBONE connection or stream failed before the tunnel was up (dial, reset, GOAWAY). */
  | 'HBONE_CONNECT_FAILED'
  /** A CONNECT authority IP that is not the connection's destination IP (answered 400). */
  | 'IP_MISMATCH'
  /** A request whose method is not CONNECT (answered 400). */
  | 'NON_CONNECT_METHOD'
  /** A CONNECT authority that does not parse (answered 400). */
  | 'INVALID_AUTHORITY'
  /** A hostname authority naming no service, or a service port without a target (answered 503). */
  | 'INBOUND_TARGET_UNKNOWN'
  /** The TCP connection to the app or the plain-TCP upstream failed or timed out. */
  | 'UPSTREAM_CONNECT_FAILED'
  /** The certificate of the local workload could not be obtained. */
  | 'CERTIFICATE_UNAVAILABLE'
  /** Copying from the downstream to the upstream failed with something other than a close. */
  | 'SEND_FAILED'
  /** Copying from the upstream to the downstream failed with something other than a close. */
  | 'RECEIVE_FAILED'
  /** The proxy stopped (pod removed, ztunnel shutting down) and the drain deadline passed. */
  | 'DRAINING'
  /** A listener could not be bound (port in use, netns gone); the proxy does not start. */
  | 'BIND_FAILED';

/** A failure of the data path, carrying the HBONE status it was answered with, if any. */
export class ProxyError extends MeshError<ProxyErrorCode> {
  /** The HTTP status an inbound CONNECT was answered with, or an outbound CONNECT received. */
  readonly status: number | undefined;

  constructor(
    code: ProxyErrorCode,
    message: string,
    options: { cause?: unknown; retryable?: boolean; status?: number } = {},
  ) {
    super(code, message, options);
    this.status = options.status;
  }

  override toJSON(): Record<string, unknown> {
    const out = super.toJSON();
    if (this.status !== undefined) out.status = this.status;
    return out;
  }
}

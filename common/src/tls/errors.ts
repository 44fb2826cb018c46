import { MeshError } from '../errors.ts';

/** Why a TLS peer or credential was refused; stable, used as the error code. */
export type TlsErrorCode =
  /** The peer's certificate has no URI SAN that parses as a SPIFFE ID. */
  | 'NO_SPIFFE_SAN'
  /** The server's SPIFFE IDs are valid but none is one of the identities the client expected. */
  | 'PEER_IDENTITY_MISMATCH'
  /** The client's SPIFFE IDs are all in a trust domain other than the server's. */
  | 'TRUST_DOMAIN_MISMATCH'
  /** The peer presented no certificate at all. */
  | 'NO_PEER_CERTIFICATE'
  /** The certificate did not chain to the trust roots, or was expired or not yet valid. */
  | 'PEER_CERTIFICATE_INVALID'
  /** The certificate's DER (or its SubjectAltName extension) does not decode strictly. */
  | 'CERTIFICATE_MALFORMED'
  /** Our own credentials cannot be used (no SPIFFE SAN, unreadable PEM). */
  | 'CREDENTIALS_INVALID'
  /** The peer did not negotiate ALPN `h2`. */
  | 'ALPN_MISMATCH'
  /** The TLS handshake failed for another reason (version, cipher, alert from the peer). */
  | 'HANDSHAKE_FAILED';

export class TlsError extends MeshError<TlsErrorCode> {}

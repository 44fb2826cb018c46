import { constants, X509Certificate } from 'node:crypto';
import type * as tls from 'node:tls';
import type { Identity } from '../identity/identity.ts';
import { TlsError } from './errors.ts';
import { spiffeIdentities, verifyClientTrustDomain, verifyServerIdentity } from './spiffe-verifier.ts';

/** HBONE offers only HTTP/2 on both sides (ztunnel `tls/certificate.rs`). */
export const HBONE_ALPN: readonly string[] = Object.freeze(['h2']);
/** ztunnel's TLS 1.3 suites, in its order; ChaCha20 is not offered. */
export const HBONE_CIPHERSUITES = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256';
/** TLS 1.3 only (ztunnel default; TLS 1.2 only behind `TLS12_ENABLED`). */
export const HBONE_TLS_VERSION = 'TLSv1.3' as const;

/** A workload's certificate material: what the CA returned plus the key we generated. */
export interface TlsCredentials {
  /** PEM private key (PKCS#8 or SEC1). */
  readonly key: string | Buffer;
  /** PEM leaf followed by its intermediates; the root is not needed here. */
  readonly certChain: string | Buffer;
  /** PEM trust anchors peers must chain to: the last element of the CA response (spec §4.4). */
  readonly roots: string | Buffer | readonly (string | Buffer)[];
}

/**
 * The SPIFFE identity our own leaf carries (its first SPIFFE URI SAN). The server's trust domain
 * comes from here, as ztunnel takes it from the certificate it serves.
 */
export function credentialsIdentity(credentials: TlsCredentials): Identity {
  let leaf: X509Certificate;
  try {
    // With a PEM bundle, X509Certificate parses the first certificate: the leaf.
    leaf = new X509Certificate(credentials.certChain);
  } catch (err) {
    throw new TlsError('CREDENTIALS_INVALID', 'certificate chain is not a readable PEM certificate', {
      cause: err,
    });
  }
  const ids = spiffeIdentities(leaf.raw);
  const id = ids[0];
  if (id === undefined) {
    throw new TlsError('CREDENTIALS_INVALID', 'our own certificate has no spiffe uri SAN');
  }
  return id;
}

function baseOptions(credentials: TlsCredentials): tls.SecureContextOptions & tls.CommonConnectionOptions {
  return {
    key: credentials.key,
    cert: credentials.certChain,
    ca: Array.isArray(credentials.roots) ? [...credentials.roots] : (credentials.roots as string | Buffer),
    minVersion: HBONE_TLS_VERSION,
    maxVersion: HBONE_TLS_VERSION,
    // Node takes TLS 1.3 suite names in `ciphers` (it has no `ciphersuites` option).
    ciphers: HBONE_CIPHERSUITES,
    ALPNProtocols: [...HBONE_ALPN],
  };
}

/**
 * `tls.connect` options for an HBONE client. The chain is verified against the roots by OpenSSL
 * (`rejectUnauthorized`, serverAuth purpose); then `checkServerIdentity` requires a SPIFFE URI SAN
 * equal to one of `expected` (parsed from DER, hostnames ignored). SNI is off (`servername: ''`)
 * and no session is ever offered for resumption. Add `socket` or `host`/`port` to dial.
 */
export function hboneClientTlsOptions(
  credentials: TlsCredentials,
  expected: readonly Identity[],
): tls.ConnectionOptions {
  const pinned = [...expected];
  return {
    ...baseOptions(credentials),
    servername: '',
    // No session is ever offered back (no `session` option), so TLS 1.3 never resumes; the flag
    // also keeps a TLS 1.2 ticket extension out of the ClientHello.
    secureOptions: constants.SSL_OP_NO_TICKET,
    rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) => {
      try {
        verifyServerIdentity(cert.raw, pinned);
        return undefined;
      } catch (err) {
        return err instanceof Error ? err : new TlsError('CERTIFICATE_MALFORMED', String(err));
      }
    },
  };
}

/**
 * `tls.createServer` options for an HBONE server: a client certificate is required and must chain
 * to the roots (clientAuth purpose). The trust-domain check runs after the handshake through
 * {@link verifyHboneClient}, because Node has no hook inside the handshake for it.
 */
export function hboneServerTlsOptions(credentials: TlsCredentials): tls.TlsOptions {
  return {
    ...baseOptions(credentials),
    requestCert: true,
    rejectUnauthorized: true,
  };
}

/**
 * What the server checks on a TLS connection before any HTTP/2 byte is read: ALPN `h2`, an
 * authorized chain, and a SPIFFE URI SAN in `trustDomain`. Returns the peer identity.
 */
export function verifyHboneClient(socket: tls.TLSSocket, trustDomain: string): Identity {
  if (socket.alpnProtocol !== 'h2') {
    throw new TlsError(
      'ALPN_MISMATCH',
      `client negotiated alpn ${JSON.stringify(socket.alpnProtocol)} instead of "h2"`,
    );
  }
  if (!socket.authorized) {
    throw new TlsError(
      'PEER_CERTIFICATE_INVALID',
      `client certificate was not verified: ${String(socket.authorizationError ?? 'no certificate')}`,
    );
  }
  const peer = socket.getPeerX509Certificate();
  if (peer === undefined) {
    throw new TlsError('NO_PEER_CERTIFICATE', 'client presented no certificate');
  }
  return verifyClientTrustDomain(peer.raw, trustDomain);
}

/**
 * What the client checks after its handshake: ALPN `h2` and (again, cheaply) the pinned identity.
 * Returns the server identity that matched.
 */
export function verifyHboneServer(socket: tls.TLSSocket, expected: readonly Identity[]): Identity {
  if (socket.alpnProtocol !== 'h2') {
    throw new TlsError(
      'ALPN_MISMATCH',
      `server negotiated alpn ${JSON.stringify(socket.alpnProtocol)} instead of "h2"`,
    );
  }
  const peer = socket.getPeerX509Certificate();
  if (peer === undefined) {
    throw new TlsError('NO_PEER_CERTIFICATE', 'server presented no certificate');
  }
  return verifyServerIdentity(peer.raw, expected);
}

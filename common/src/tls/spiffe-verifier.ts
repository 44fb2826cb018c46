import { formatIdentity, type Identity, tryParseIdentity } from '../identity/identity.ts';
import { TlsError } from './errors.ts';
import { uriSans } from './san.ts';

/** The SPIFFE IDs among a DER certificate's URI SANs, in certificate order; other URIs are ignored. */
export function spiffeIdentities(der: Uint8Array): Identity[] {
  const ids: Identity[] = [];
  for (const uri of uriSans(der)) {
    const id = tryParseIdentity(uri);
    if (id !== undefined) ids.push(id);
  }
  return ids;
}

/**
 * Client-side check of the server (ztunnel `IdentityVerifier::verify_full_san`): some SPIFFE URI
 * SAN of the peer must equal one of `expected`, compared byte-exactly as formatted SPIFFE IDs.
 * Chain validation is done before this by OpenSSL; DNS names and SNI play no part.
 * Returns the matching identity.
 */
export function verifyServerIdentity(der: Uint8Array, expected: readonly Identity[]): Identity {
  const ids = spiffeIdentities(der);
  if (ids.length === 0) {
    throw new TlsError('NO_SPIFFE_SAN', 'server certificate has no spiffe uri SAN');
  }
  const wanted = new Set(expected.map(formatIdentity));
  for (const id of ids) {
    if (wanted.has(formatIdentity(id))) return id;
  }
  throw new TlsError(
    'PEER_IDENTITY_MISMATCH',
    `server identity ${ids.map(formatIdentity).join(', ')} is not one of the expected ${
      expected.length === 0 ? '(none)' : [...wanted].join(', ')
    }`,
  );
}

/**
 * Server-side check of the client (ztunnel `TrustDomainVerifier`): the client certificate must
 * carry a SPIFFE URI SAN in the server's own trust domain. Which identity is allowed is left to
 * authorization policy. Returns the first identity in that trust domain: the peer identity.
 */
export function verifyClientTrustDomain(der: Uint8Array, trustDomain: string): Identity {
  const ids = spiffeIdentities(der);
  if (ids.length === 0) {
    throw new TlsError('NO_SPIFFE_SAN', 'client certificate has no spiffe uri SAN');
  }
  const match = ids.find((id) => id.trustDomain === trustDomain);
  if (match === undefined) {
    throw new TlsError(
      'TRUST_DOMAIN_MISMATCH',
      `client identity ${ids.map(formatIdentity).join(', ')} is not in trust domain ${JSON.stringify(trustDomain)}`,
    );
  }
  return match;
}

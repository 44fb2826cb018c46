import { X509Certificate } from 'node:crypto';
import { parseIdentity } from '@ambient/common/identity';
import type { XdsAuthenticationRequest, XdsAuthenticator, XdsCaller } from '../../src/xds/authorize.ts';

/**
 * An authenticator for the xDS server's tests: `authorization: Bearer <token>` looked up in a
 * fixed table, standing in for TokenReview. It rejects exactly as a real one does, on a missing
 * header or an unknown token, so the server's refusal paths run for real.
 */
export class TokenAuthenticator implements XdsAuthenticator {
  readonly #tokens: ReadonlyMap<string, XdsCaller>;
  /** The reason of each rejection, newest last. */
  readonly rejections: string[] = [];

  constructor(tokens: Readonly<Record<string, XdsCaller>>) {
    this.#tokens = new Map(Object.entries(tokens));
  }

  async authenticate(request: XdsAuthenticationRequest): Promise<XdsCaller> {
    const header = request.metadata.get('authorization')[0];
    if (typeof header !== 'string' || !header.startsWith('Bearer ')) {
      this.rejections.push('no bearer token in the authorization header');
      throw new Error('no bearer token in the authorization header');
    }
    const caller = this.#tokens.get(header.slice('Bearer '.length));
    if (!caller) {
      this.rejections.push('the bearer token is not valid');
      throw new Error('the bearer token is not valid');
    }
    return caller;
  }
}

/** The caller ztunnel authenticates as: `istio-system/ztunnel`. */
export const ZTUNNEL_CALLER: XdsCaller = {
  identity: 'spiffe://cluster.local/ns/istio-system/sa/ztunnel',
  namespace: 'istio-system',
  serviceAccount: 'ztunnel',
};

/**
 * Authenticates by the verified client certificate's URI SAN, as istiod's certificate
 * authenticator does for proxies that already hold a mesh certificate.
 */
export class CertificateAuthenticator implements XdsAuthenticator {
  async authenticate(request: XdsAuthenticationRequest): Promise<XdsCaller> {
    if (!request.peerCertificate) throw new Error('no client certificate');
    const san = new X509Certificate(request.peerCertificate).subjectAltName ?? '';
    const uri = san
      .split(', ')
      .find((s) => s.startsWith('URI:'))
      ?.slice('URI:'.length);
    if (!uri) throw new Error('the client certificate has no URI SAN');
    const id = parseIdentity(uri);
    return { identity: id, namespace: id.namespace, serviceAccount: id.serviceAccount };
  }
}

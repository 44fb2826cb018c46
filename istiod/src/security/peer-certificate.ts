import { errorMessage } from '@ambient/common/errors';
import { formatIdentity, parseIdentity } from '@ambient/common/identity';
import type { AuthenticationRequest, Authenticator, Caller } from './authenticate.ts';
import { AuthenticationError } from './errors.ts';
import { x509 } from './x509.ts';

/**
 * Authenticates a client certificate issued by the mesh CA (local mode, and any workload that
 * calls with its mesh certificate). TLS has already verified the chain to the mesh root; this
 * reads the single SPIFFE URI SAN and requires the mesh trust domain. A certificate caller has no
 * pod, so it can never pass node authorization (impersonation needs a token bound to a pod).
 */
export class PeerCertificateAuthenticator implements Authenticator {
  readonly name = 'peer-certificate';
  readonly #trustDomain: string;

  constructor(options: { trustDomain: string }) {
    this.#trustDomain = options.trustDomain;
  }

  async authenticate(request: AuthenticationRequest): Promise<Caller> {
    const der = request.peerCertificate;
    if (!der) throw new AuthenticationError('NO_CREDENTIALS', 'no verified client certificate');
    let uris: string[];
    try {
      const cert = new x509.X509Certificate(der);
      const sanExtensions = cert.extensions.filter(
        (e) => e.type === x509.SubjectAlternativeNameExtension.NAME,
      );
      if (sanExtensions.length > 1) throw new Error('certificate has several subjectAltName extensions');
      const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
      uris = (san?.names.items ?? []).filter((n) => n.type === 'url').map((n) => n.value);
    } catch (err) {
      throw new AuthenticationError(
        'CERTIFICATE_IDENTITY',
        `client certificate does not parse: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    if (uris.length !== 1) {
      throw new AuthenticationError(
        'CERTIFICATE_IDENTITY',
        `client certificate has ${uris.length} URI SANs, expected one`,
      );
    }
    let identity: ReturnType<typeof parseIdentity>;
    try {
      identity = parseIdentity(uris[0] as string);
    } catch (err) {
      throw new AuthenticationError('CERTIFICATE_IDENTITY', `client certificate SAN: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    if (identity.trustDomain !== this.#trustDomain) {
      throw new AuthenticationError(
        'TRUST_DOMAIN_MISMATCH',
        `client certificate identity ${formatIdentity(identity)} is not in trust domain ${JSON.stringify(this.#trustDomain)}`,
      );
    }
    return {
      identity: formatIdentity(identity),
      namespace: identity.namespace,
      serviceAccount: identity.serviceAccount,
      via: 'certificate',
    };
  }
}

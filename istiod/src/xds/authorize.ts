import type { PeerCertificate } from 'node:tls';
import { formatIdentity, type Identity } from '@ambient/common/identity';
import type { Metadata } from '@grpc/grpc-js';
import { XdsError } from './errors.ts';
import type { ProxyNode } from './node.ts';

/** The parts of a grpc-js server call that carry credentials. */
export interface XdsCall {
  readonly metadata: Metadata;
  getAuthContext(): {
    readonly transportSecurityType?: string;
    readonly sslPeerCertificate?: PeerCertificate;
  };
}

/**
 * The credentials of one stream: the request headers (`authorization: Bearer <JWT>`,
 * `clusterid`) and the DER client certificate when the TLS handshake verified one. The same
 * shape as istiod's `security/authenticate.ts` AuthenticationRequest, so its authenticators plug
 * in unchanged.
 */
export interface XdsAuthenticationRequest {
  readonly metadata: Metadata;
  readonly peerCertificate?: Buffer;
}

/** Extracts the credentials of a call. */
export function authenticationRequestOf(call: XdsCall): XdsAuthenticationRequest {
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  return raw && raw.length > 0
    ? { metadata: call.metadata, peerCertificate: raw }
    : { metadata: call.metadata };
}

/** The authenticated caller of a stream. */
export interface XdsCaller {
  /** The SPIFFE identity, parsed or as its URI. */
  readonly identity: Identity | string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly podName?: string;
  readonly podUid?: string;
}

/**
 * Authenticates a stream's credentials (a projected ServiceAccount JWT, a client certificate).
 * Rejects when they are missing or invalid; the stream then ends UNAUTHENTICATED, and the
 * rejection's message goes to istiod's log, not to the caller. istiod's
 * `security/authenticate.ts` authenticators satisfy this interface.
 */
export interface XdsAuthenticator {
  authenticate(request: XdsAuthenticationRequest): Promise<XdsCaller>;
}

/** The caller's identity as a SPIFFE URI, for logs and debug output. */
export function callerIdentity(caller: XdsCaller): string {
  return typeof caller.identity === 'string' ? caller.identity : formatIdentity(caller.identity);
}

/**
 * The xDS identity check (`PILOT_ENABLE_XDS_IDENTITY_CHECK`, `istio:pilot/pkg/xds/auth.go`
 * `checkConnectionIdentity`): a proxy may only claim its own namespace, and its own service
 * account when it names one. Without it any authenticated workload could pose as any proxy.
 * Throws XdsError `IDENTITY_MISMATCH`.
 */
export function checkProxyIdentity(caller: XdsCaller, node: ProxyNode): void {
  if (node.configNamespace !== '' && caller.namespace !== node.configNamespace) {
    throw new XdsError(
      'IDENTITY_MISMATCH',
      `identity ${callerIdentity(caller)} is in namespace ${JSON.stringify(caller.namespace)}, but node ${JSON.stringify(node.id)} claims namespace ${JSON.stringify(node.configNamespace)}`,
    );
  }
  const sa = node.metadata.serviceAccount;
  if (sa !== undefined && caller.serviceAccount !== sa) {
    throw new XdsError(
      'IDENTITY_MISMATCH',
      `identity ${callerIdentity(caller)} has service account ${JSON.stringify(caller.serviceAccount)}, but node ${JSON.stringify(node.id)} claims ${JSON.stringify(sa)}`,
    );
  }
}

import { access, readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import type { BearerTokenSource, ControlPlaneOptions, PemSource } from '@ambient/common/xds/client';
import { bearerTokenFile } from '@ambient/common/xds/client';
import type { AuthTokenSource, Config, ControlPlaneConfig, RootCertSource } from './config.ts';

/** A root certificate source as the xDS and CA clients read it (files are re-read per channel). */
export function pemSource(root: RootCertSource): PemSource {
  switch (root.kind) {
    case 'pem':
      return root.pem;
    case 'system':
      return rootCertificates.join('\n');
    case 'file':
      return () => readFile(root.path);
  }
}

/**
 * The bearer token source: a file re-read on every call (projected tokens rotate in place), or a
 * literal. The default path is optional, as upstream: without the file calls carry no token.
 */
export function tokenSource(token: AuthTokenSource): BearerTokenSource {
  if (token.kind === 'static') return () => token.token;
  const read = bearerTokenFile(token.path);
  if (!token.optional) return read;
  return async () => {
    try {
      await access(token.path);
    } catch {
      return undefined;
    }
    return read();
  };
}

/**
 * How the xDS or CA client reaches istiod (spec §3.1–3.2): `host:port` from the configured URL,
 * TLS verified with `XDS_ROOT_CA`/`CA_ROOT_CA` (plaintext for `http://`), `ALT_*_HOSTNAME` as the
 * server name, the bearer token, `clusterid` and the extra headers.
 */
export function controlPlaneOptions(config: Config, endpoint: ControlPlaneConfig): ControlPlaneOptions {
  const url = new URL(endpoint.address);
  const tls =
    url.protocol === 'http:'
      ? undefined
      : {
          rootCert: pemSource(endpoint.rootCert),
          ...(endpoint.altHostname === undefined ? {} : { serverName: endpoint.altHostname }),
        };
  return {
    address: url.host,
    ...(tls ? { tls } : {}),
    token: tokenSource(config.authToken),
    clusterId: config.clusterId,
    headers: endpoint.headers,
  };
}

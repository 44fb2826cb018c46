import type { HbonePool } from '@ambient/common/hbone/pool';
import type { Identity } from '@ambient/common/identity';
import type { Drain } from '@ambient/common/lifecycle';
import type { Logger } from '@ambient/common/log';
import type { ProxyState } from '@ambient/common/model';
import type { TlsCredentials } from '@ambient/common/tls/secure-context';
import type { ConnectionManager } from './connection-manager.ts';
import type { LiveConnections } from './live-connections.ts';
import type { LocalWorkload } from './local-workload.ts';
import type { ProxyMetrics } from './metrics.ts';
import type { ProxyConfig } from './proxy-config.ts';
import type { SocketFactory } from './socket-factory.ts';

/**
 * Certificates by identity: the cert manager (`common/identity/cert-manager.ts`, whose
 * WorkloadCertificate is a TlsCredentials) fetches from the CA, caches and refreshes. The proxy
 * asks on every new HBONE connection and presents whatever it gets, so rotation needs no signal;
 * a rotated certificate must be a new object.
 */
export interface CertificateProvider {
  fetch(identity: Identity): Promise<TlsCredentials>;
}

/**
 * What one per-pod proxy runs on (ztunnel `ProxyInputs`). `state`, `certificates`, `metrics`,
 * `accessLog`, `config` and `connectionManager` are shared by all pods' proxies; `pool`,
 * `socketFactory` and `drain` belong to this pod alone.
 */
export interface ProxyInputs {
  readonly state: ProxyState;
  readonly certificates: CertificateProvider;
  /** This pod's HBONE client pool; its connections are dialled through `socketFactory`. */
  readonly pool: HbonePool;
  /** Sockets inside this pod's network namespace (or plain local ones). */
  readonly socketFactory: SocketFactory;
  readonly metrics: ProxyMetrics;
  /** The `access` scope logger (text or JSON as the process logging is configured). */
  readonly accessLog: Logger;
  readonly config: ProxyConfig;
  readonly connectionManager: ConnectionManager;
  /** This proxy's drain: one hold per connection in flight. Used once; a new proxy gets a new one. */
  readonly drain: Drain;
  /** Operational log (listener events, TLS rejections); default the `proxy` scope. */
  readonly log?: Logger;
}

/** What the listeners of one proxy share. */
export interface ProxyContext {
  /** The pod uid (from ZDS); owner key in the connection manager. */
  readonly uid: string;
  readonly local: LocalWorkload;
  readonly inputs: ProxyInputs;
  readonly live: LiveConnections;
  readonly log: Logger;
}

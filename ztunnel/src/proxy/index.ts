/**
 * ztunnel's data path for in-pod mode: one {@link WorkloadProxy} per enrolled pod, made by a
 * {@link ProxyFactory}, with its listeners and sockets from a {@link SocketFactory}. The app owns
 * the shared parts (ProxyState, certificates, metrics registry, access logger, config, the
 * {@link ConnectionManager} watching the ProxyStateUpdater) and hands each pod's socket factory in.
 */
export type { AccessLogFields, TrafficDirection } from './access-log.ts';
export { errorFields, logEarlyDeny } from './access-log.ts';
export type {
  ConnectionRegistration,
  ProxyStateEventSource,
  TrackedConnectionInfo,
  TrackedConnectionInput,
} from './connection-manager.ts';
export { ConnectionManager } from './connection-manager.ts';
export type { CopyObserver, CopyTotals } from './copy.ts';
export { copyBidirectional } from './copy.ts';
export type { ProxyErrorCode } from './errors.ts';
export { ProxyError } from './errors.ts';
export type { InboundTarget } from './inbound.ts';
export { guessInboundService, resolveInboundTarget, validateDestination } from './inbound.ts';
export type { CertificateProvider, ProxyContext, ProxyInputs } from './inputs.ts';
export type { LiveConnection } from './live-connections.ts';
export { LocalWorkload } from './local-workload.ts';
export type {
  ConnectionOpen,
  ConnectionResultOptions,
  DerivedWorkload,
  Reporter,
  ResponseFlag,
  TrafficLabelName,
  TrafficLabels,
} from './metrics.ts';
export { ConnectionResult, ProxyMetrics, TRAFFIC_LABEL_NAMES, trafficLabels } from './metrics.ts';
export { upstreamError, workloadBaggage } from './outbound.ts';
export type { ProxyAddresses, ProxyStopOptions, ProxyWorkload, SharedProxyInputs } from './proxy.ts';
export { createWorkloadPool, ProxyFactory, WorkloadProxy } from './proxy.ts';
export type { ProxyConfig, ProxyConfigOverrides } from './proxy-config.ts';
export { PROXY_PORTS, resolveProxyConfig } from './proxy-config.ts';
export { PROXY_TLV_PEER_IDENTITY, proxyProtocolHeader } from './proxy-protocol.ts';
export type {
  InpodSocketFactoryOptions,
  LocalSocketFactoryOptions,
  ProxyListener,
  SocketConnectOptions,
  SocketFactory,
} from './socket-factory.ts';
export {
  connectPreservingSource,
  DEFAULT_INPOD_MARK,
  InpodSocketFactory,
  LocalSocketFactory,
} from './socket-factory.ts';

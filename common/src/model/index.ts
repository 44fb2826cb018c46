/**
 * The WDS-derived mesh model shared by ztunnel and the waypoint: model types converted from the
 * `istio.workload` / `istio.security` wire types, the stores behind ProxyState, its one writer
 * (ProxyStateUpdater), outbound routing decisions and L4 authorization.
 */
export type {
  Authorization,
  AuthorizationAction,
  AuthorizationScope,
  RbacClause,
  RbacMatch,
  RbacRule,
  ServiceAccountMatch,
  StringMatch,
} from './authorization.ts';
export { authorizationFromProto, policyKey } from './authorization.ts';
export type {
  ConfigDump,
  ConfigDumpEndpoint,
  ConfigDumpGatewayAddress,
  ConfigDumpHooks,
  ConfigDumpMatch,
  ConfigDumpPolicy,
  ConfigDumpService,
  ConfigDumpStringMatch,
  ConfigDumpWorkload,
} from './config-dump.ts';
export { buildConfigDump, dumpPolicy, dumpService, dumpWorkload } from './config-dump.ts';
export type { ModelErrorCode, RoutingErrorCode } from './errors.ts';
export { ModelError, RoutingError } from './errors.ts';
export type { Cidr, IpFamily, SocketAddr } from './ip-address.ts';
export {
  cidrContains,
  formatCidr,
  formatIp,
  formatSocketAddr,
  ipFamily,
  isLoopback,
  makeCidr,
  normalizeIp,
  parseIp,
} from './ip-address.ts';
export type { ReadonlyPolicyStore } from './policy-store.ts';
export type {
  Address,
  ProxyStateOptions,
  WaitForWorkloadOptions,
  WorkloadPolicies,
} from './proxy-state.ts';
export { ProxyState } from './proxy-state.ts';
export type { Connection, RbacDecision, RbacDryRunMatch, RbacReason } from './rbac.ts';
export { assertRbac, evaluateRbac, policyMatches, stringMatches } from './rbac.ts';
export type {
  EndpointSelection,
  OutboundRequest,
  ResolutionMode,
  RoutingOptions,
  UpstreamDecision,
  UpstreamRoute,
} from './routing.ts';
export {
  chooseServiceWaypoint,
  DEFAULT_HBONE_PORT,
  DEFAULT_ILLEGAL_PORTS,
  isFromWaypoint,
  pickWeighted,
  resolveUpstream,
  selectEndpoint,
} from './routing.ts';
export type {
  AppProtocolName,
  Endpoint,
  LoadBalancer,
  LoadBalancerHealthPolicy,
  LoadBalancerMode,
  LoadBalancerScope,
  Service,
  ServiceIpFamilies,
  ServicePort,
  ServiceVip,
  WeightedWaypoint,
} from './service.ts';
export { acceptsEndpointHealth, serviceFromProto, serviceKey } from './service.ts';
export type { ReadonlyServiceStore } from './service-store.ts';
export type {
  PoliciesChanged,
  ProxyStateEvents,
  ProxyStateUpdaterOptions,
  Rejected,
  ResourceUpdate,
  ServicesChanged,
  WorkloadsChanged,
} from './updater.ts';
export { ProxyStateUpdater } from './updater.ts';
export type {
  ApplicationTunnel,
  GatewayAddress,
  GatewayDestination,
  HealthStatus,
  Locality,
  NetworkAddress,
  PortMap,
  Workload,
  WorkloadInfo,
  WorkloadKind,
  WorkloadNetworkMode,
  WorkloadProtocol,
} from './workload.ts';
export {
  DEFAULT_CLUSTER_ID,
  formatGatewayDestination,
  gatewayAddressFromProto,
  networkAddressKey,
  workloadFromProto,
} from './workload.ts';
export type { ReadonlyWorkloadStore } from './workload-store.ts';

import type { JsonObject, JsonValue } from '@bufbuild/protobuf';

/** The xDS `Node` a client identifies itself with (spec §3.2). */
export interface XdsNode {
  /** `ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` for ztunnel. */
  readonly id: string;
  readonly cluster?: string;
  /** The `Struct` metadata: NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME, CLUSTER_ID, … */
  readonly metadata?: JsonObject;
}

/** What ztunnel's node is built from (its pod's downward-API values and proxy metadata). */
export interface ZtunnelNodeParams {
  /** `INSTANCE_IP`; ztunnel sends `1.1.1.1` when it is unset. */
  readonly instanceIp?: string;
  readonly podName: string;
  readonly podNamespace: string;
  readonly nodeName: string;
  /** Added as `CLUSTER_ID` unless `proxyMetadata` already has it. */
  readonly clusterId?: string;
  /** `ISTIO_META_*` variables (prefix stripped) and ProxyConfig `proxyMetadata`, as strings. */
  readonly proxyMetadata?: Readonly<Record<string, string>>;
  /** `ISTIO_METAJSON_*` variables (prefix stripped), already parsed. */
  readonly metaJson?: Readonly<Record<string, JsonValue>>;
}

// ztunnel's fallback when INSTANCE_IP is unset (`ztunnel:src/xds/client.rs` DEFAULT_IP).
const DEFAULT_INSTANCE_IP = '1.1.1.1';

/**
 * ztunnel's node exactly as `ztunnel:src/xds/client.rs` `node()` builds it. The `ztunnel` prefix of
 * the id is what makes istiod classify the proxy as a ztunnel; NAMESPACE is what istiod's identity
 * check compares with the token's namespace.
 */
export function ztunnelNode(params: ZtunnelNodeParams): XdsNode {
  const ip = params.instanceIp || DEFAULT_INSTANCE_IP;
  const ns = params.podNamespace;
  const metadata: JsonObject = {
    NAME: params.podName,
    NAMESPACE: ns,
    INSTANCE_IPS: ip,
    NODE_NAME: params.nodeName,
    ...params.proxyMetadata,
    ...params.metaJson,
  };
  if (params.clusterId !== undefined && metadata.CLUSTER_ID === undefined)
    metadata.CLUSTER_ID = params.clusterId;
  return {
    id: `ztunnel~${ip}~${params.podName}.${ns}~${ns}.svc.cluster.local`,
    metadata,
  };
}

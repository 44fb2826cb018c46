import { isIP } from 'node:net';
import type { Node } from '@ambient/common/gen/envoy/config/core/v3/base_pb';
import type { JsonObject, JsonValue } from '@bufbuild/protobuf';
import { XdsError } from './errors.ts';

/** The proxy kinds istiod serves, named by the node id's first field (`istio:pkg/model/context.go`). */
export const PROXY_TYPES = ['sidecar', 'router', 'waypoint', 'ztunnel'] as const;
export type ProxyType = (typeof PROXY_TYPES)[number];

/** The node metadata fields istiod reads; all optional, as proxies send what their env holds. */
export interface ProxyMetadata {
  /** `NAME`: the pod name. */
  readonly name?: string;
  /** `NAMESPACE`: the proxy's config namespace. */
  readonly namespace?: string;
  /** `NODE_NAME`: the Kubernetes node (ztunnel matches local workloads by it). */
  readonly nodeName?: string;
  /** `CLUSTER_ID` (from `ISTIO_META_CLUSTER_ID`). */
  readonly clusterId?: string;
  /** `SERVICE_ACCOUNT`: when set, the authenticated SA must equal it. */
  readonly serviceAccount?: string;
  /** `INSTANCE_IPS`, split on commas. */
  readonly instanceIps?: readonly string[];
  /** `ISTIO_VERSION`. */
  readonly istioVersion?: string;
}

/** A proxy as identified by the `node` of its first request. */
export interface ProxyNode {
  /** The full node id: `ztunnel~10.0.0.1~ztunnel-abc.istio-system~istio-system.svc.cluster.local`. */
  readonly id: string;
  readonly type: ProxyType;
  /** `INSTANCE_IPS` when sent, otherwise the node id's IP field. */
  readonly ipAddresses: readonly string[];
  /** The node id's third field, `<pod>.<namespace>`. */
  readonly proxyId: string;
  /** The node id's fourth field, `<namespace>.svc.cluster.local`. */
  readonly dnsDomain: string;
  /**
   * `NAMESPACE` metadata, or for older proxies the first label of the DNS domain
   * (`istio:pkg/model/context.go` `GetProxyConfigNamespace`); empty when neither says.
   */
  readonly configNamespace: string;
  /** `Node.cluster`. */
  readonly cluster: string;
  readonly metadata: ProxyMetadata;
}

function metadataString(md: JsonObject | undefined, key: string): string | undefined {
  const v: JsonValue | undefined = md?.[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** Reads the metadata fields istiod uses; unknown keys are ignored. */
export function parseProxyMetadata(md: JsonObject | undefined): ProxyMetadata {
  const ips = metadataString(md, 'INSTANCE_IPS')
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const out: {
    -readonly [K in keyof ProxyMetadata]: ProxyMetadata[K];
  } = {};
  const name = metadataString(md, 'NAME');
  if (name !== undefined) out.name = name;
  const namespace = metadataString(md, 'NAMESPACE');
  if (namespace !== undefined) out.namespace = namespace;
  const nodeName = metadataString(md, 'NODE_NAME');
  if (nodeName !== undefined) out.nodeName = nodeName;
  const clusterId = metadataString(md, 'CLUSTER_ID');
  if (clusterId !== undefined) out.clusterId = clusterId;
  const serviceAccount = metadataString(md, 'SERVICE_ACCOUNT');
  if (serviceAccount !== undefined) out.serviceAccount = serviceAccount;
  const istioVersion = metadataString(md, 'ISTIO_VERSION');
  if (istioVersion !== undefined) out.istioVersion = istioVersion;
  if (ips && ips.length > 0) out.instanceIps = ips;
  return out;
}

function isProxyType(s: string): s is ProxyType {
  return (PROXY_TYPES as readonly string[]).includes(s);
}

/**
 * Parses the node of a stream's first request, as `istio:pkg/model/context.go`
 * `ParseServiceNodeWithMetadata` does: four `~`-separated fields, a known proxy type, and valid
 * IPs. Throws XdsError `NODE_MISSING` / `NODE_ID_INVALID`.
 */
export function parseProxyNode(node: Node | undefined): ProxyNode {
  if (!node || node.id === '') {
    throw new XdsError('NODE_MISSING', 'the first request of the stream carries no node id');
  }
  const parts = node.id.split('~');
  if (parts.length !== 4) {
    throw new XdsError(
      'NODE_ID_INVALID',
      `node id ${JSON.stringify(node.id)} has ${parts.length} fields, want 4 (<type>~<ip>~<pod>.<namespace>~<domain>)`,
    );
  }
  const [type = '', ip = '', proxyId = '', dnsDomain = ''] = parts;
  if (!isProxyType(type)) {
    throw new XdsError(
      'NODE_ID_INVALID',
      `node id ${JSON.stringify(node.id)} has proxy type ${JSON.stringify(type)}, want one of ${PROXY_TYPES.join(', ')}`,
    );
  }
  const metadata = parseProxyMetadata(node.metadata);
  const ipAddresses = metadata.instanceIps ?? [ip];
  for (const addr of ipAddresses) {
    if (isIP(addr) === 0) {
      throw new XdsError(
        'NODE_ID_INVALID',
        `node ${JSON.stringify(node.id)} has invalid IP address ${JSON.stringify(addr)}`,
      );
    }
  }
  const domainParts = dnsDomain.split('.');
  const configNamespace = metadata.namespace ?? (domainParts.length > 1 ? (domainParts[0] ?? '') : '');
  return {
    id: node.id,
    type,
    ipAddresses,
    proxyId,
    dnsDomain,
    configNamespace,
    cluster: node.cluster,
    metadata,
  };
}

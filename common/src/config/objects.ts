/**
 * The shapes of the Kubernetes objects istiod reads: only the fields the ambient index uses, typed
 * as the API server serves them (everything optional). Objects reach the index only after
 * `validate.ts` accepted them, so builders may rely on the invariants documented here.
 */

export interface ObjectMeta {
  name: string;
  /** Absent for cluster-scoped kinds. */
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
  creationTimestamp?: string;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
}

export interface KubeObject<K extends string = string> {
  apiVersion: string;
  kind: K;
  metadata: ObjectMeta;
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: {
    key: string;
    operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
    values?: string[];
  }[];
}

export interface Namespace extends KubeObject<'Namespace'> {}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
}

export interface Pod extends KubeObject<'Pod'> {
  spec?: {
    nodeName?: string;
    serviceAccountName?: string;
    hostNetwork?: boolean;
    containers?: { name: string; ports?: ContainerPort[] }[];
  };
  status?: {
    phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
    podIP?: string;
    podIPs?: { ip: string }[];
    hostIP?: string;
    conditions?: { type: string; status: 'True' | 'False' | 'Unknown' }[];
  };
}

export interface ServicePort {
  name?: string;
  port: number;
  /** A number, or the name of a container port. */
  targetPort?: number | string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  appProtocol?: string;
}

export interface Service extends KubeObject<'Service'> {
  spec?: {
    type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
    clusterIP?: string;
    clusterIPs?: string[];
    selector?: Record<string, string>;
    ports?: ServicePort[];
    publishNotReadyAddresses?: boolean;
    trafficDistribution?: string;
    ipFamilies?: ('IPv4' | 'IPv6')[];
    externalName?: string;
  };
}

export interface EndpointSlice extends KubeObject<'EndpointSlice'> {
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints?: {
    addresses: string[];
    conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean };
    targetRef?: { kind?: string; name?: string; namespace?: string; uid?: string };
    nodeName?: string;
  }[];
  ports?: { name?: string; port?: number; protocol?: string; appProtocol?: string }[];
}

export interface AuthorizationPolicy extends KubeObject<'AuthorizationPolicy'> {
  spec?: {
    selector?: LabelSelector;
    targetRef?: PolicyTargetReference;
    targetRefs?: PolicyTargetReference[];
    action?: 'ALLOW' | 'DENY' | 'AUDIT' | 'CUSTOM';
    provider?: { name?: string };
    rules?: AuthorizationRule[];
  };
}

export interface PolicyTargetReference {
  group?: string;
  kind: string;
  name: string;
  namespace?: string;
}

export interface AuthorizationRule {
  from?: { source?: AuthorizationSource }[];
  to?: { operation?: AuthorizationOperation }[];
  when?: { key: string; values?: string[]; notValues?: string[] }[];
}

export interface AuthorizationSource {
  principals?: string[];
  notPrincipals?: string[];
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  serviceAccounts?: string[];
  notServiceAccounts?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  remoteIpBlocks?: string[];
  notRemoteIpBlocks?: string[];
}

export interface AuthorizationOperation {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

export type MtlsMode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

export interface PeerAuthentication extends KubeObject<'PeerAuthentication'> {
  spec?: {
    selector?: LabelSelector;
    mtls?: { mode?: MtlsMode };
    portLevelMtls?: Record<string, { mode?: MtlsMode }>;
  };
}

export interface WorkloadEntrySpec {
  address?: string;
  ports?: Record<string, number>;
  labels?: Record<string, string>;
  network?: string;
  locality?: string;
  weight?: number;
  serviceAccount?: string;
}

export interface ServiceEntry extends KubeObject<'ServiceEntry'> {
  spec?: {
    hosts?: string[];
    addresses?: string[];
    ports?: { number: number; protocol?: string; name?: string; targetPort?: number }[];
    location?: 'MESH_EXTERNAL' | 'MESH_INTERNAL';
    resolution?: 'NONE' | 'STATIC' | 'DNS' | 'DNS_ROUND_ROBIN';
    endpoints?: WorkloadEntrySpec[];
    workloadSelector?: { labels?: Record<string, string> };
    exportTo?: string[];
  };
}

export interface WorkloadEntry extends KubeObject<'WorkloadEntry'> {
  spec?: WorkloadEntrySpec;
}

export interface Gateway extends KubeObject<'Gateway'> {
  spec?: {
    gatewayClassName?: string;
    listeners?: {
      name: string;
      port: number;
      protocol: string;
      allowedRoutes?: { namespaces?: { from?: 'Same' | 'All' | 'Selector'; selector?: LabelSelector } };
    }[];
  };
  status?: { addresses?: { type?: string; value: string }[] };
}

/** Every kind istiod reads, by kind name. */
export interface ObjectsByKind {
  Namespace: Namespace;
  Pod: Pod;
  Service: Service;
  EndpointSlice: EndpointSlice;
  AuthorizationPolicy: AuthorizationPolicy;
  PeerAuthentication: PeerAuthentication;
  ServiceEntry: ServiceEntry;
  WorkloadEntry: WorkloadEntry;
  Gateway: Gateway;
}

export type AnyObject = ObjectsByKind[keyof ObjectsByKind];

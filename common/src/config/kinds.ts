/**
 * The Kubernetes kinds istiod reads, with what a watch needs to address them. The order is the
 * order a source syncs them in: namespaces first, so enablement labels are known before pods.
 */
export const KINDS = {
  Namespace: { group: '', version: 'v1', plural: 'namespaces', namespaced: false },
  Pod: { group: '', version: 'v1', plural: 'pods', namespaced: true },
  Service: { group: '', version: 'v1', plural: 'services', namespaced: true },
  EndpointSlice: { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', namespaced: true },
  AuthorizationPolicy: {
    group: 'security.istio.io',
    version: 'v1',
    plural: 'authorizationpolicies',
    namespaced: true,
  },
  PeerAuthentication: {
    group: 'security.istio.io',
    version: 'v1',
    plural: 'peerauthentications',
    namespaced: true,
  },
  ServiceEntry: { group: 'networking.istio.io', version: 'v1', plural: 'serviceentries', namespaced: true },
  WorkloadEntry: { group: 'networking.istio.io', version: 'v1', plural: 'workloadentries', namespaced: true },
  Gateway: { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'gateways', namespaced: true },
} as const;

export type Kind = keyof typeof KINDS;
export const KIND_NAMES = Object.keys(KINDS) as Kind[];

/** `apiVersion` as written in manifests: `v1`, `security.istio.io/v1`. */
export function apiVersionOf(kind: Kind): string {
  const k = KINDS[kind];
  return k.group === '' ? k.version : `${k.group}/${k.version}`;
}

/**
 * API versions accepted for each kind on input. Istio's CRDs serve v1beta1 (and v1alpha3 for
 * networking) beside v1 with the same schema for the fields used here, and users still write them.
 */
export const ACCEPTED_API_VERSIONS: Readonly<Record<Kind, readonly string[]>> = {
  Namespace: ['v1'],
  Pod: ['v1'],
  Service: ['v1'],
  EndpointSlice: ['discovery.k8s.io/v1'],
  AuthorizationPolicy: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
  PeerAuthentication: ['security.istio.io/v1', 'security.istio.io/v1beta1'],
  ServiceEntry: ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'],
  WorkloadEntry: ['networking.istio.io/v1', 'networking.istio.io/v1beta1', 'networking.istio.io/v1alpha3'],
  Gateway: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1'],
};

export function isKind(s: string): s is Kind {
  return Object.hasOwn(KINDS, s);
}

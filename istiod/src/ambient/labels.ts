import type { LabelSelector } from '@ambient/common/config/objects';

/**
 * The labels and annotations the ambient index reads (`api:label/labels.yaml`,
 * `api:annotation/annotations.yaml`), and the two label-selection rules Istio uses.
 */
export const LABELS = {
  useWaypoint: 'istio.io/use-waypoint',
  useWaypointNamespace: 'istio.io/use-waypoint-namespace',
  useWaypointCanary: 'istio.io/use-waypoint-canary',
  useWaypointCanaryNamespace: 'istio.io/use-waypoint-canary-namespace',
  waypointFor: 'istio.io/waypoint-for',
  ingressUseWaypoint: 'istio.io/ingress-use-waypoint',
  gatewayName: 'gateway.networking.k8s.io/gateway-name',
  gatewayManaged: 'gateway.istio.io/managed',
  tunnel: 'networking.istio.io/tunnel',
  canonicalName: 'service.istio.io/canonical-name',
  canonicalRevision: 'service.istio.io/canonical-revision',
  workloadName: 'service.istio.io/workload-name',
  endpointSliceService: 'kubernetes.io/service-name',
  podTemplateHash: 'pod-template-hash',
  rolloutsPodTemplateHash: 'rollouts-pod-template-hash',
  deploymentConfig: 'deploymentconfig',
} as const;

/** Annotations the ambient index reads. */
export const ANNOTATIONS = {
  redirection: 'ambient.istio.io/redirection',
  trafficDistribution: 'networking.istio.io/traffic-distribution',
  waypointInboundBinding: 'ambient.istio.io/waypoint-inbound-binding',
  dryRun: 'istio.io/dry-run',
  useWaypointCanaryWeight: 'istio.io/use-waypoint-canary-weight',
  autoRegistrationGroup: 'istio.io/autoRegistrationGroup',
} as const;

/** `gateway.istio.io/managed` value of istiod-deployed waypoints. */
export const MANAGED_MESH_CONTROLLER = 'istio.io-mesh-controller';
/** `gateway.istio.io/managed` value of istiod-deployed east-west gateways. */
export const MANAGED_EAST_WEST_CONTROLLER = 'istio.io-eastwest-controller';
/** The GatewayClass of waypoints (`WaypointGatewayClassName`). */
export const WAYPOINT_GATEWAY_CLASS = 'istio-waypoint';

/**
 * Istio's `SubsetOf` selection: every selector label must be present with the same value. An empty
 * or absent selector selects nothing here, because every caller (Service selectors, ServiceEntry
 * workload selectors, policy selectors) treats "no selector" separately.
 */
export function selectsNonEmpty(
  selector: Readonly<Record<string, string>> | undefined,
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  if (!selector) return false;
  let any = false;
  for (const k in selector) {
    any = true;
    if (labels?.[k] !== selector[k]) return false;
  }
  return any;
}

/** True when the record has at least one key. */
export function hasEntries(r: Readonly<Record<string, string>> | undefined): boolean {
  if (!r) return false;
  for (const _ in r) return true;
  return false;
}

/**
 * A Kubernetes `metav1.LabelSelector` match (matchLabels and matchExpressions, ANDed). An empty
 * selector matches everything, as in Kubernetes.
 */
export function labelSelectorMatches(
  selector: LabelSelector | undefined,
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  if (!selector) return true;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
    if (labels?.[k] !== v) return false;
  }
  for (const e of selector.matchExpressions ?? []) {
    const has = labels !== undefined && Object.hasOwn(labels, e.key);
    const value = labels?.[e.key];
    switch (e.operator) {
      case 'In':
        if (!has || !(e.values ?? []).includes(value as string)) return false;
        break;
      case 'NotIn':
        if (has && (e.values ?? []).includes(value as string)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        // An operator Kubernetes does not define cannot be satisfied.
        return false;
    }
  }
  return true;
}

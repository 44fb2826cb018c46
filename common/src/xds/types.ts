/**
 * xDS type URLs of the resources istiod serves to ztunnel (spec §3.1). ztunnel subscribes to
 * ADDRESS and AUTHORIZATION; WORKLOAD is served by istiod but unused by current ztunnel.
 */
export const TYPE_URL = {
  ADDRESS: 'type.googleapis.com/istio.workload.Address',
  AUTHORIZATION: 'type.googleapis.com/istio.security.Authorization',
  WORKLOAD: 'type.googleapis.com/istio.workload.Workload',
} as const;

/** One of the type URLs above. */
export type TypeUrl = (typeof TYPE_URL)[keyof typeof TYPE_URL];

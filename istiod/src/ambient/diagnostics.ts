/**
 * A problem the ambient index found in one object while building WDS resources: what istiod
 * writes as a status condition (`ZtunnelAccepted`, `istio.io/WaypointBound`). The object is still
 * served as well as it can be; the diagnostic says how its effect differs from what was written.
 */
export interface Diagnostic {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  /** Istio's status reason, e.g. `UnsupportedValue`, `WaypointIsNotReady`. */
  readonly reason: string;
  readonly message: string;
}

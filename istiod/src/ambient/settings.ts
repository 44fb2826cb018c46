/**
 * The mesh-wide values the ambient builders need. They come from istiod's configuration (mesh
 * config, cluster flags); the index receives them once and passes them to every builder.
 */
export interface MeshSettings {
  /** Written into every Workload's `cluster_id` and uid (`CLUSTER_ID`, default `Kubernetes`). */
  readonly clusterId: string;
  /** The local network (`topology.istio.io/network` of the system namespace); empty for the default. */
  readonly network: string;
  /** Mesh trust domain; sent as an empty `trust_domain` when it is `cluster.local`. */
  readonly trustDomain: string;
  /** Mesh config `rootNamespace`: policies here without a selector are mesh-wide. */
  readonly rootNamespace: string;
  /** Kubernetes DNS suffix used to form Service hostnames. */
  readonly domainSuffix: string;
  /**
   * Send `istio.io/dry-run` AuthorizationPolicies to ztunnel (istiod's
   * `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY`, off by default because ztunnel before 1.29
   * enforces them).
   */
  readonly dryRunPolicies: boolean;
}

/** istiod's defaults. */
export const DEFAULT_MESH_SETTINGS: MeshSettings = Object.freeze({
  clusterId: 'Kubernetes',
  network: '',
  trustDomain: 'cluster.local',
  rootNamespace: 'istio-system',
  domainSuffix: 'cluster.local',
  dryRunPolicies: false,
});

/** Fills unset values with the defaults. */
export function meshSettings(partial: Partial<MeshSettings> = {}): MeshSettings {
  return Object.freeze({ ...DEFAULT_MESH_SETTINGS, ...partial });
}

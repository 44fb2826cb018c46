/**
 * Which pods are ambient (spec §6.2; `istio:cni/pkg/util/enablement_selector.go` with the Helm
 * default selectors, plus the exclusions of `istio:cni/pkg/nodeagent/informers.go`). Pure.
 */
import type { Namespace, Pod } from '@ambient/common/config/objects';

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
export const DATAPLANE_MODE_AMBIENT = 'ambient';
export const DATAPLANE_MODE_NONE = 'none';
export const SIDECAR_STATUS_ANNOTATION = 'sidecar.istio.io/status';

export interface EnablementConfig {
  readonly excludeNamespaces: readonly string[];
  /** The agent's own pod, never enrolled. */
  readonly agentPod?: { readonly namespace: string; readonly name: string | undefined };
}

/** Why a pod is or is not ambient, for logs and tests. */
export type EnablementReason =
  | 'pod-label'
  | 'namespace-label'
  | 'pod-opted-out'
  | 'not-labelled'
  | 'host-network'
  | 'sidecar'
  | 'excluded-namespace'
  | 'agent-pod'
  | 'terminal';

export interface EnablementDecision {
  readonly ambient: boolean;
  readonly reason: EnablementReason;
}

/** Succeeded or Failed: its containers are gone for good, nothing to enroll. */
export function isTerminal(pod: Pod): boolean {
  const phase = pod.status?.phase;
  return phase === 'Succeeded' || phase === 'Failed';
}

/** The decision with its reason; {@link isAmbientEnabled} is its boolean. */
export function ambientDecision(
  pod: Pod,
  namespace: Namespace | undefined,
  cfg: EnablementConfig,
): EnablementDecision {
  const ns = pod.metadata.namespace ?? '';
  if (cfg.excludeNamespaces.includes(ns)) return { ambient: false, reason: 'excluded-namespace' };
  if (cfg.agentPod && cfg.agentPod.namespace === ns && cfg.agentPod.name === pod.metadata.name) {
    return { ambient: false, reason: 'agent-pod' };
  }
  if (pod.spec?.hostNetwork === true) return { ambient: false, reason: 'host-network' };
  if (pod.metadata.annotations?.[SIDECAR_STATUS_ANNOTATION] !== undefined) {
    return { ambient: false, reason: 'sidecar' };
  }
  if (isTerminal(pod)) return { ambient: false, reason: 'terminal' };
  const podMode = pod.metadata.labels?.[DATAPLANE_MODE_LABEL];
  if (podMode === DATAPLANE_MODE_AMBIENT) return { ambient: true, reason: 'pod-label' };
  if (podMode === DATAPLANE_MODE_NONE) return { ambient: false, reason: 'pod-opted-out' };
  if (namespace?.metadata.labels?.[DATAPLANE_MODE_LABEL] === DATAPLANE_MODE_AMBIENT) {
    return { ambient: true, reason: 'namespace-label' };
  }
  return { ambient: false, reason: 'not-labelled' };
}

/**
 * A pod is ambient when it has `istio.io/dataplane-mode=ambient`, or its namespace has it and the
 * pod's label is not `none`; never when it is host-network, already has a sidecar, lives in an
 * excluded namespace, is the agent itself, or has terminated.
 */
export function isAmbientEnabled(pod: Pod, namespace: Namespace | undefined, cfg: EnablementConfig): boolean {
  return ambientDecision(pod, namespace, cfg).ambient;
}

/** Whether a namespace opts its pods in (the enrollment state file lists these). */
export function isAmbientNamespace(namespace: Namespace | undefined): boolean {
  return namespace?.metadata.labels?.[DATAPLANE_MODE_LABEL] === DATAPLANE_MODE_AMBIENT;
}

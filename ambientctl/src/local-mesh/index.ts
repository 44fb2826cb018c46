/** The local mesh: nodes, istiod, ztunnel and istio-cni per node, and a pod runner, on one machine. */
export type { ComponentName, ComponentStatus } from './component.ts';
export {
  ApplyRejectedError,
  type ApplyResult,
  CONTROL_PLANE_NODE,
  LocalMesh,
  type LocalMeshNode,
  type LocalMeshOptions,
  type PodPhase,
  type PodStatus,
  type ProgressEvent,
  type RedirectMode,
  sweepLocalMeshes,
} from './mesh.ts';
export { normalizeKind } from './pod-runner.ts';
export { SUPPORTED_KINDS, type SupportedKind } from './resources.ts';

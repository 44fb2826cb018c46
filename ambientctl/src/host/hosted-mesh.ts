/**
 * What the host daemon and the guided check need of a running mesh: LocalMesh's operations
 * (ambientctl/src/local-mesh/mesh.ts) as an interface, so the guided check runs the same against a
 * LocalMesh in this process (`up --once`) or one owned by the daemon (through the control socket),
 * and the control protocol can be tested without a mesh behind it. The data types are LocalMesh's.
 */

import type {
  ApplyResult,
  ComponentName,
  ComponentStatus,
  LocalMeshNode,
  PodStatus,
  ProgressEvent,
  RedirectMode,
} from '../local-mesh/index.ts';

export type { ApplyResult, ComponentName, ComponentStatus, PodStatus, ProgressEvent, RedirectMode };
export type MeshNodeInfo = LocalMeshNode;

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * The operations on a running mesh, each async so a remote mesh (over the control socket) and
 * a LocalMesh in this process look the same to their callers.
 */
export interface MeshOperations {
  readonly redirectMode: RedirectMode;
  readonly nodes: readonly MeshNodeInfo[];
  /** The node istiod runs on (its own netns; no pods). */
  readonly controlPlane: MeshNodeInfo;
  readonly istiodAddress: string;
  components(): ComponentStatus[] | Promise<ComponentStatus[]>;
  pods(): PodStatus[] | Promise<PodStatus[]>;
  apply(yamlText: string): Promise<ApplyResult[]>;
  delete(kind: string, namespace: string | undefined, name: string): Promise<boolean>;
  waitPodsRunning(
    namespace: string,
    selector?: Record<string, string>,
    timeoutMs?: number,
  ): Promise<PodStatus[]>;
  ztunnelAdmin(node: string, path: string): Promise<{ status: number; body: string }>;
  ztunnelMetrics(node: string): Promise<string>;
  exec(
    namespace: string,
    pod: string,
    argv: readonly string[],
    opts?: { timeoutMs?: number; check?: boolean },
  ): Promise<ExecResult>;
  restartComponent(name: ComponentName, node?: string): Promise<void>;
}

/** A mesh the daemon owns: the operations, and taking it down. */
export interface HostedMesh extends MeshOperations {
  readonly stateDir: string;
  down(): Promise<void>;
}

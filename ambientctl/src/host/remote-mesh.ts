import { ControlClient } from './control-client.ts';
import type {
  ApplyResult,
  ComponentName,
  ComponentStatus,
  ExecResult,
  MeshNodeInfo,
  MeshOperations,
  PodStatus,
  RedirectMode,
} from './hosted-mesh.ts';
import {
  type ApplyBody,
  CONTROL_ROUTES,
  type DeleteBody,
  type DeleteRequest,
  type ExecBody,
  type ExecRequest,
  type PodsBody,
  type RestartRequest,
  type StatusBody,
  type WaitPodsRequest,
  type ZtunnelAdminBody,
  type ZtunnelMetricsBody,
} from './protocol.ts';

/** Slack on top of an operation's own timeout before the client gives up on the answer. */
const ANSWER_SLACK_MS = 15_000;

/**
 * A mesh owned by the daemon, driven through its control socket: the same operations as a
 * LocalMesh in this process, so the CLI and the guided check do not care which one they have.
 */
export class RemoteMesh implements MeshOperations {
  readonly client: ControlClient;
  readonly pid: number;
  readonly stateDir: string;
  readonly redirectMode: RedirectMode;
  readonly nodes: readonly MeshNodeInfo[];
  readonly controlPlane: MeshNodeInfo;
  readonly istiodAddress: string;

  private constructor(client: ControlClient, status: StatusBody) {
    this.client = client;
    this.pid = status.pid;
    this.stateDir = status.stateDir;
    this.redirectMode = status.redirectMode;
    this.nodes = status.nodes;
    this.controlPlane = status.controlPlane;
    this.istiodAddress = status.istiodAddress;
  }

  /** Connects and reads the mesh's shape; MESH_NOT_RUNNING when nothing answers. */
  static async connect(socketPath: string): Promise<RemoteMesh> {
    const client = new ControlClient(socketPath);
    return new RemoteMesh(client, await client.get<StatusBody>(CONTROL_ROUTES.status, 10_000));
  }

  status(): Promise<StatusBody> {
    return this.client.get<StatusBody>(CONTROL_ROUTES.status);
  }

  async components(): Promise<ComponentStatus[]> {
    return [...(await this.status()).components];
  }

  async pods(): Promise<PodStatus[]> {
    return [...(await this.status()).pods];
  }

  async apply(yamlText: string): Promise<ApplyResult[]> {
    return [...(await this.client.post<ApplyBody>(CONTROL_ROUTES.apply, yamlText, 180_000)).results];
  }

  async delete(kind: string, namespace: string | undefined, name: string): Promise<boolean> {
    const req: DeleteRequest = { kind, name, ...(namespace === undefined ? {} : { namespace }) };
    return (await this.client.post<DeleteBody>(CONTROL_ROUTES.delete, req, 120_000)).deleted;
  }

  async waitPodsRunning(
    namespace: string,
    selector?: Record<string, string>,
    timeoutMs = 60_000,
  ): Promise<PodStatus[]> {
    const req: WaitPodsRequest = { namespace, timeoutMs, ...(selector === undefined ? {} : { selector }) };
    return [
      ...(await this.client.post<PodsBody>(CONTROL_ROUTES.waitPods, req, timeoutMs + ANSWER_SLACK_MS)).pods,
    ];
  }

  ztunnelAdmin(node: string, path: string): Promise<{ status: number; body: string }> {
    const q = new URLSearchParams({ path });
    return this.client.get<ZtunnelAdminBody>(
      `${CONTROL_ROUTES.ztunnelPrefix}${encodeURIComponent(node)}/admin?${q}`,
    );
  }

  async ztunnelMetrics(node: string): Promise<string> {
    return (
      await this.client.get<ZtunnelMetricsBody>(
        `${CONTROL_ROUTES.ztunnelPrefix}${encodeURIComponent(node)}/metrics`,
      )
    ).text;
  }

  exec(
    namespace: string,
    pod: string,
    argv: readonly string[],
    opts: { timeoutMs?: number; check?: boolean } = {},
  ): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const req: ExecRequest = { namespace, pod, argv, timeoutMs, check: opts.check ?? false };
    return this.client.post<ExecBody>(CONTROL_ROUTES.exec, req, timeoutMs + ANSWER_SLACK_MS);
  }

  async restartComponent(name: ComponentName, node?: string): Promise<void> {
    const req: RestartRequest = { component: name, ...(node === undefined ? {} : { node }) };
    await this.client.post<unknown>(CONTROL_ROUTES.restart, req, 120_000);
  }

  async shutdown(): Promise<void> {
    await this.client.post<unknown>(CONTROL_ROUTES.shutdown, {}, 10_000);
  }
}

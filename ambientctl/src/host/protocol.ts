/**
 * The daemon's control protocol: JSON over HTTP/1.1 on `<stateDir>/control.sock`. Every route is
 * versioned under `/v1`; an error answers with a 4xx/5xx status and `{ "error": { code, message } }`,
 * the code being an AmbientctlErrorCode the client rethrows as is.
 */
import type {
  ApplyResult,
  ComponentName,
  ComponentStatus,
  ExecResult,
  MeshNodeInfo,
  PodStatus,
  RedirectMode,
} from './hosted-mesh.ts';

export const CONTROL_ROUTES = {
  status: '/v1/status',
  apply: '/v1/apply',
  delete: '/v1/delete',
  waitPods: '/v1/wait-pods',
  exec: '/v1/exec',
  restart: '/v1/restart',
  shutdown: '/v1/shutdown',
  /** `/v1/ztunnel/<node>/admin?path=/config_dump` and `/v1/ztunnel/<node>/metrics`. */
  ztunnelPrefix: '/v1/ztunnel/',
} as const;

/** GET /v1/status. */
export interface StatusBody {
  readonly pid: number;
  readonly stateDir: string;
  readonly redirectMode: RedirectMode;
  readonly nodes: readonly MeshNodeInfo[];
  /** The node istiod runs on (not a worker: no pods). */
  readonly controlPlane: MeshNodeInfo;
  readonly istiodAddress: string;
  readonly components: readonly ComponentStatus[];
  readonly pods: readonly PodStatus[];
}

/** POST /v1/apply: the body is the YAML text itself (`content-type: application/yaml`). */
export interface ApplyBody {
  readonly results: readonly ApplyResult[];
}

export interface DeleteRequest {
  readonly kind: string;
  readonly namespace?: string;
  readonly name: string;
}
export interface DeleteBody {
  readonly deleted: boolean;
}

export interface WaitPodsRequest {
  readonly namespace: string;
  readonly selector?: Record<string, string>;
  readonly timeoutMs?: number;
}
export interface PodsBody {
  readonly pods: readonly PodStatus[];
}

export interface ExecRequest {
  readonly namespace: string;
  readonly pod: string;
  readonly argv: readonly string[];
  readonly timeoutMs?: number;
  readonly check?: boolean;
}
export type ExecBody = ExecResult;

export interface RestartRequest {
  readonly component: ComponentName;
  readonly node?: string;
}

/** GET /v1/ztunnel/<node>/admin?path=…: ztunnel's own status and body, passed through. */
export interface ZtunnelAdminBody {
  readonly status: number;
  readonly body: string;
}
export interface ZtunnelMetricsBody {
  readonly text: string;
}

export interface ErrorBody {
  /** `applied` comes with MANIFEST_INVALID: the documents that were applied all the same. */
  readonly error: {
    readonly code: string;
    readonly message: string;
    readonly applied?: readonly ApplyResult[];
  };
}

/** The HTTP status an error code answers with. */
export function statusOfCode(code: string): number {
  switch (code) {
    case 'USAGE':
    case 'MANIFEST_INVALID':
      return 400;
    case 'POD_NOT_FOUND':
    case 'NOT_FOUND':
      return 404;
    case 'MESH_NOT_RUNNING':
      return 503;
    case 'TIMEOUT':
      return 504;
    default:
      return 500;
  }
}

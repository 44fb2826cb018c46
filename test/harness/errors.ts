import { MeshError } from '@ambient/common/errors';

/** Why the harness refused or failed an operation on its topology. */
export type HarnessErrorCode =
  /** A node, pod or namespace name cannot be used in a netns, link or cgroup name. */
  | 'NAME_INVALID'
  /** The requested topology cannot be built (too many nodes, duplicate node names). */
  | 'TOPOLOGY_INVALID'
  /** `mesh.node(name)` named a node this harness does not have. */
  | 'NODE_UNKNOWN'
  /** A pod with this namespace/name already exists in the harness (names are cluster-unique). */
  | 'POD_EXISTS'
  /** The pod was already removed, or belongs to another node or harness. */
  | 'POD_UNKNOWN'
  /** The CNI result named no IP address for the pod's eth0. */
  | 'POD_IP_MISSING'
  /** The harness (or node) was destroyed; nothing more can be created in it. */
  | 'HARNESS_DESTROYED'
  /** A teardown finished but something it created is still there (a busy cgroup, a mounted netns). */
  | 'TEARDOWN_INCOMPLETE'
  /** No cgroup v2 (unified) hierarchy is mounted on this machine. */
  | 'CGROUP_UNAVAILABLE'
  /** A spawned process did not print the awaited line in time. */
  | 'OUTPUT_TIMEOUT'
  /** A spawned process exited while a line was still awaited. */
  | 'PROCESS_EXITED';

export class HarnessError extends MeshError<HarnessErrorCode> {}

/** What went wrong running a command to completion. */
export type CommandErrorCode = 'COMMAND_FAILED' | 'COMMAND_TIMEOUT' | 'COMMAND_SPAWN_FAILED';

/** The outcome of a command run to completion. */
export interface ExecResult {
  /** The command as run, for messages (`ip -n ambh-... link`). */
  readonly command: string;
  /** Exit status; null when a signal ended the process. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

/**
 * A command that exited non-zero, timed out or could not start. It carries the whole
 * {@link ExecResult} (partial output on timeout) so a failing test shows what the command said.
 */
export class CommandError extends MeshError<CommandErrorCode> {
  readonly result: ExecResult;

  constructor(
    code: CommandErrorCode,
    message: string,
    result: ExecResult,
    options: { cause?: unknown } = {},
  ) {
    super(code, message, options);
    this.result = result;
  }
}

/** Why a CNI operation failed. */
export type CniErrorCode =
  /** The plugin exited non-zero; its error JSON (code, msg, details) is on the error. */
  | 'CNI_PLUGIN_FAILED'
  /** No binary named after the plugin `type` exists in any CNI_PATH directory. */
  | 'CNI_PLUGIN_NOT_FOUND'
  /** The plugin did not finish within the harness's deadline and was killed. */
  | 'CNI_PLUGIN_TIMEOUT'
  /** The plugin exited zero but its stdout was not a valid CNI result. */
  | 'CNI_RESULT_INVALID'
  /** The command is not defined for the conflist's cniVersion (CHECK before 0.4.0). */
  | 'CNI_COMMAND_UNSUPPORTED';

/** The CNI operations a runtime invokes. */
export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

/**
 * A CNI plugin failure, shaped after the spec's error result: `cniCode`, `msg` and `details` are
 * what the plugin printed (codes 1-99 are the spec's well-known ones, 100+ are plugin-specific).
 */
export class CniError extends MeshError<CniErrorCode> {
  /** The plugin `type` (binary name) that failed. */
  readonly plugin: string;
  readonly command: CniCommand;
  /** The plugin's error code from its error JSON, when it printed one. */
  readonly cniCode: number | undefined;
  /** The plugin's `msg`, or its stderr when it printed no error JSON. */
  readonly msg: string;
  readonly details: string | undefined;
  /** What the plugin wrote to stderr (plugins log there). */
  readonly stderr: string;

  constructor(
    code: CniErrorCode,
    message: string,
    fields: {
      plugin: string;
      command: CniCommand;
      cniCode?: number;
      msg: string;
      details?: string;
      stderr?: string;
      cause?: unknown;
    },
  ) {
    super(code, message, { cause: fields.cause });
    this.plugin = fields.plugin;
    this.command = fields.command;
    this.cniCode = fields.cniCode;
    this.msg = fields.msg;
    this.details = fields.details;
    this.stderr = fields.stderr ?? '';
  }

  override toJSON(): Record<string, unknown> {
    return {
      ...super.toJSON(),
      plugin: this.plugin,
      command: this.command,
      cniCode: this.cniCode,
      msg: this.msg,
      details: this.details,
    };
  }
}

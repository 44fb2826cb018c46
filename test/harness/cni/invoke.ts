import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { childEnv } from '../env.ts';
import { type CniCommand, CniError, CommandError } from '../errors.ts';
import { entryArgv } from '../netns.ts';
import { HarnessProcess } from '../process.ts';

/** The container a plugin is invoked for: the CNI_* variables other than the command. */
export interface CniAttachment {
  readonly containerId: string;
  /** CNI_NETNS: the pod's netns path. */
  readonly netnsPath: string;
  /** CNI_IFNAME. */
  readonly ifName: string;
  /** CNI_ARGS as ordered key/value pairs (`IgnoreUnknown=1` comes first). */
  readonly args: readonly (readonly [string, string])[];
}

/** One plugin execution. */
export interface PluginInvocation {
  readonly plugin: string;
  readonly command: CniCommand;
  readonly stdinConfig: Readonly<Record<string, unknown>>;
  readonly attachment: CniAttachment;
  /** CNI_PATH, searched in order for the binary named `plugin`. */
  readonly cniPath: readonly string[];
  /** The runtime's own netns (a node's root netns): plugins run there, as under a real runtime. */
  readonly runtimeNetnsPath: string;
  readonly timeoutMs: number;
}

/** The binary for a plugin type: the first CNI_PATH directory that has it. */
export function findPluginBinary(plugin: string, cniPath: readonly string[], command: CniCommand): string {
  // A type is a file name, never a path (the spec forbids path separators in `type`).
  if (plugin.includes('/') || plugin === '' || plugin.startsWith('.')) {
    throw new CniError(
      'CNI_PLUGIN_NOT_FOUND',
      `cni plugin type ${JSON.stringify(plugin)} is not a file name`,
      {
        plugin,
        command,
        msg: 'invalid plugin type',
      },
    );
  }
  for (const dir of cniPath) {
    const candidate = join(dir, plugin);
    if (existsSync(candidate)) return candidate;
  }
  throw new CniError(
    'CNI_PLUGIN_NOT_FOUND',
    `cni plugin "${plugin}" not found in CNI_PATH ${cniPath.join(':')}`,
    { plugin, command, msg: `failed to find plugin "${plugin}" in path [${cniPath.join(' ')}]` },
  );
}

/** CNI_ARGS as a runtime formats it: `K1=V1;K2=V2`. */
export function formatCniArgs(args: readonly (readonly [string, string])[]): string {
  return args.map(([k, v]) => `${k}=${v}`).join(';');
}

/**
 * Executes one plugin as a runtime does: the binary runs in the runtime's netns with the CNI_*
 * environment and the configuration on stdin. Returns the parsed stdout (undefined when empty, as
 * on DEL); a non-zero exit becomes a {@link CniError} carrying the plugin's error JSON.
 */
export async function invokePlugin(inv: PluginInvocation): Promise<unknown> {
  const { plugin, command, attachment: att } = inv;
  const binary = findPluginBinary(plugin, inv.cniPath, command);
  const env = childEnv({
    CNI_COMMAND: command,
    CNI_CONTAINERID: att.containerId,
    CNI_NETNS: att.netnsPath,
    CNI_IFNAME: att.ifName,
    CNI_ARGS: formatCniArgs(att.args),
    CNI_PATH: inv.cniPath.join(':'),
  });
  const proc = new HarnessProcess(
    entryArgv({ netnsPath: inv.runtimeNetnsPath }, binary, []),
    { env, input: JSON.stringify(inv.stdinConfig) },
    `cni ${plugin} ${command}`,
  );
  let stdout: string;
  let stderr: string;
  let exitCode: number | null;
  try {
    const r = await proc.result({ timeoutMs: inv.timeoutMs, check: false });
    ({ stdout, stderr, exitCode } = r);
  } catch (err) {
    if (err instanceof CommandError && err.code === 'COMMAND_TIMEOUT') {
      throw new CniError(
        'CNI_PLUGIN_TIMEOUT',
        `cni plugin "${plugin}" ${command} for container ${att.containerId} did not finish within ${inv.timeoutMs} ms`,
        { plugin, command, msg: 'timed out', stderr: err.result.stderr, cause: err },
      );
    }
    throw new CniError('CNI_PLUGIN_FAILED', `cni plugin "${plugin}" ${command} could not be started`, {
      plugin,
      command,
      msg: err instanceof Error ? err.message : String(err),
      cause: err,
    });
  }
  const trimmed = stdout.trim();
  if (exitCode !== 0) throw pluginFailure(plugin, command, att.containerId, trimmed, stderr, exitCode);
  if (trimmed === '') return undefined;
  try {
    return JSON.parse(trimmed);
  } catch (err) {
    throw new CniError(
      'CNI_RESULT_INVALID',
      `cni plugin "${plugin}" ${command} printed non-JSON output: ${trimmed.slice(0, 200)}`,
      { plugin, command, msg: 'output is not JSON', stderr, cause: err },
    );
  }
}

function pluginFailure(
  plugin: string,
  command: CniCommand,
  containerId: string,
  stdout: string,
  stderr: string,
  exitCode: number | null,
): CniError {
  let parsed: { code?: unknown; msg?: unknown; details?: unknown } | undefined;
  try {
    const v: unknown = JSON.parse(stdout);
    if (typeof v === 'object' && v !== null) parsed = v;
  } catch {
    // Not an error result: the plugin crashed or nsenter failed; stderr says why.
  }
  const cniCode = typeof parsed?.code === 'number' ? parsed.code : undefined;
  const details = typeof parsed?.details === 'string' && parsed.details !== '' ? parsed.details : undefined;
  const msg =
    typeof parsed?.msg === 'string'
      ? parsed.msg
      : stderr.trim() || `exit code ${exitCode} with no error result`;
  const codePart = cniCode === undefined ? `exit code ${exitCode}` : `code ${cniCode}`;
  return new CniError(
    'CNI_PLUGIN_FAILED',
    `cni plugin "${plugin}" ${command} for container ${containerId} failed (${codePart}): ${msg}${details === undefined ? '' : ` (${details})`}`,
    { plugin, command, cniCode, msg, details, stderr },
  );
}

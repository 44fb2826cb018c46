/**
 * CNI network configuration files as the installer reads and rewrites them: which file a runtime
 * loads, whether it is valid, and the pure transformations that chain istio-cni into a list or
 * take it out again. Files are never written here (see installer.ts).
 */
import { readdir } from 'node:fs/promises';
import { extname } from 'node:path';
import { ISTIO_CNI_PLUGIN_TYPE } from '../../plugin-protocol.ts';

/** The extensions istio-cni considers, as upstream's installer does (runtimes also read `.json`). */
export const CNI_CONF_EXTENSIONS = ['.conf', '.conflist'] as const;

export type JsonObject = Record<string, unknown>;

/** A parsed config file, always in list form (a `.conf` is wrapped as upstream does). */
export type ParsedConfFile =
  | { readonly ok: true; readonly kind: 'conf' | 'conflist'; readonly list: JsonObject }
  | { readonly ok: false; readonly problem: string };

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const rawJson = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;

/**
 * JSON.parse that keeps numbers exactly as written (`JSON.rawJSON`), so rewriting another CNI's
 * file never rounds a large integer or changes `1.0` to `1`.
 */
export function parseJsonPreservingNumbers(text: string): unknown {
  return JSON.parse(text, (_key: string, value: unknown, context?: { source?: string }) =>
    typeof value === 'number' && context?.source !== undefined ? rawJson(context.source) : value,
  );
}

/** The JSON text the installer writes: two-space indentation and a final newline. */
export function serializeConf(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Whether two parsed configs are the same JSON (key order included). */
export function sameConf(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function pluginProblem(plugin: unknown, i: number): string | undefined {
  if (!isObject(plugin)) return `plugins[${i}] is not an object`;
  if (typeof plugin.type !== 'string' || plugin.type === '') return `plugins[${i}] has no type`;
  return undefined;
}

/**
 * Parses a `.conf` or `.conflist` file with libcni's rules: a list needs a string `name` and a
 * non-empty `plugins` array of objects with a `type`; a single config needs a `type` (which also
 * catches a list saved as `.conf`). A `.conf` comes back wrapped in a list with its own name and
 * version, the plugin keeping everything but `cniVersion`.
 */
export function parseConfFile(fileName: string, text: string): ParsedConfFile {
  let value: unknown;
  try {
    value = parseJsonPreservingNumbers(text);
  } catch (err) {
    return { ok: false, problem: `is not valid JSON (${err instanceof Error ? err.message : String(err)})` };
  }
  if (!isObject(value))
    return {
      ok: false,
      problem: `is not a JSON object but ${Array.isArray(value) ? 'an array' : String(value)}`,
    };
  if (extname(fileName) === '.conflist') {
    if (typeof value.name !== 'string' || value.name === '')
      return { ok: false, problem: 'has no network name' };
    if (value.plugins === undefined) return { ok: false, problem: 'has no plugins list' };
    if (!Array.isArray(value.plugins))
      return { ok: false, problem: 'has a plugins field that is not an array' };
    if (value.plugins.length === 0) return { ok: false, problem: 'has an empty plugins list' };
    for (const [i, p] of value.plugins.entries()) {
      const problem = pluginProblem(p, i);
      if (problem !== undefined) return { ok: false, problem };
    }
    return { ok: true, kind: 'conflist', list: value };
  }
  if (typeof value.type !== 'string' || value.type === '') {
    return {
      ok: false,
      problem: Array.isArray(value.plugins) ? 'is a plugin list saved as a .conf file' : 'has no plugin type',
    };
  }
  const { cniVersion, ...plugin } = value;
  return {
    ok: true,
    kind: 'conf',
    list: {
      cniVersion: cniVersion ?? '0.3.1',
      name: typeof value.name === 'string' && value.name !== '' ? value.name : 'k8s-pod-network',
      plugins: [plugin],
    },
  };
}

/** Config file names in `dir` in the order runtimes pick them (byte order; the first one wins). */
export async function listConfFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries
    .filter(
      (e) =>
        (e.isFile() || e.isSymbolicLink()) &&
        (CNI_CONF_EXTENSIONS as readonly string[]).includes(extname(e.name)),
    )
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function isIstioEntry(p: unknown): boolean {
  return isObject(p) && p.type === ISTIO_CNI_PLUGIN_TYPE;
}

/**
 * The list with exactly one istio-cni entry, `entry`: it replaces the first existing one in place
 * (other copies are dropped), or is appended. An existing entry in first position is moved to the
 * end, since istio-cni needs the interface plugin's result before it.
 */
export function chainIstioCni(list: JsonObject, entry: JsonObject): JsonObject {
  const plugins = list.plugins as unknown[];
  const at = plugins.findIndex(isIstioEntry);
  const others = plugins.filter((p) => !isIstioEntry(p));
  const next = at > 0 ? [...others.slice(0, at), entry, ...others.slice(at)] : [...others, entry];
  return { ...list, plugins: next };
}

/** The list without istio-cni entries, or undefined when it has none. */
export function unchainIstioCni(list: JsonObject): JsonObject | undefined {
  const plugins = list.plugins as unknown[];
  if (!plugins.some(isIstioEntry)) return undefined;
  return { ...list, plugins: plugins.filter((p) => !isIstioEntry(p)) };
}

/** Number of istio-cni entries in a list (tests and status use it to prove "never duplicated"). */
export function istioEntryCount(list: JsonObject): number {
  return (list.plugins as unknown[]).filter(isIstioEntry).length;
}

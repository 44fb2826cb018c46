/** CNI spec versions the harness speaks; 1.0.0 is the default, the older two for older plugins. */
export const CNI_VERSIONS = ['1.0.0', '0.4.0', '0.3.1'] as const;
export type CniVersion = (typeof CNI_VERSIONS)[number];

/** Where Debian's containernetworking-plugins install the reference plugins. */
export const REFERENCE_PLUGIN_DIR = '/usr/lib/cni';

/** One plugin's entry in a network configuration list: its `type` plus its own fields. */
export interface CniPluginConf {
  readonly type: string;
  readonly [field: string]: unknown;
}

/** A network configuration list (`.conflist`), the data a runtime reads from /etc/cni/net.d. */
export interface CniNetworkConfigList {
  readonly cniVersion: CniVersion;
  readonly name: string;
  readonly plugins: readonly CniPluginConf[];
}

/**
 * A conflist plus the CNI_PATH its plugins are found in: what a runtime loads for one network.
 */
export interface CniNetwork {
  readonly list: CniNetworkConfigList;
  readonly cniPath: readonly string[];
}

/**
 * A plugin appended to the chain after the node's own plugins, the way an installer (istio-cni's)
 * appends itself to the primary conflist. `binDir` is added to CNI_PATH ahead of the reference
 * plugin directory; `config` is the plugin's conflist entry without `type`.
 */
export interface ChainedPlugin {
  readonly type: string;
  readonly binDir?: string;
  readonly config?: Readonly<Record<string, unknown>>;
}

/** The conflist entry for a chained plugin. */
export function chainedPluginConf(plugin: ChainedPlugin): CniPluginConf {
  return { ...plugin.config, type: plugin.type };
}

/**
 * The configuration one plugin of a list receives on stdin: its own entry plus the list's
 * `name` and `cniVersion`, and, for every plugin after the first (and for every plugin on DEL
 * and CHECK), the `prevResult` (CNI spec, "Section 3: Execution of Network Configurations").
 */
export function pluginStdinConfig(
  list: CniNetworkConfigList,
  plugin: CniPluginConf,
  prevResult: unknown,
): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return conf;
}

/** True when `version` is at least `min` (dotted numeric comparison). */
export function cniVersionAtLeast(version: string, min: string): boolean {
  const a = version.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

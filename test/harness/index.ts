/**
 * @ambient/test/harness: simulated Kubernetes nodes and pods in network namespaces, wired by the
 * real CNI reference plugins, for the mesh's integration and end-to-end tests.
 */
import { fileURLToPath } from 'node:url';

export { type AddressPlan, MAX_NODES } from './addressing.ts';
export { unifiedCgroupRoot } from './cgroup.ts';
export {
  type ChainedPlugin,
  CNI_VERSIONS,
  type CniNetwork,
  type CniNetworkConfigList,
  type CniPluginConf,
  type CniVersion,
  REFERENCE_PLUGIN_DIR,
} from './cni/config.ts';
export type { CniAttachment } from './cni/invoke.ts';
export type { CniInterface, CniIpConfig, CniResult, CniRoute } from './cni/result.ts';
export {
  type CniCommand,
  CniError,
  type CniErrorCode,
  CommandError,
  type CommandErrorCode,
  type ExecResult,
  HarnessError,
  type HarnessErrorCode,
} from './errors.ts';
export { Harness, type HarnessOptions, NODE_UNDERLAY_LINK, UNDERLAY_BRIDGE } from './harness.ts';
export { listNetns, NETNS_DIR, netnsPath } from './netns.ts';
export { MeshNode, POD_BRIDGE, POD_NETWORK_NAME } from './node.ts';
export { Pod, type PodSandbox, type PodSpec } from './pod.ts';
export { HarnessProcess, type ProcessExit, type RunOptions } from './process.ts';
export {
  type ExecOptions,
  type NodeExecOptions,
  type NodeScript,
  type NodeSpawnOptions,
  ProcessHost,
  type SpawnOptions,
} from './process-host.ts';
export { HARNESS_PREFIX, isRunOwnerAlive, parseRunKey, type RunId } from './run-id.ts';
export { type SweepReport, sweepLeftovers } from './sweep.ts';
export type { TeardownReport } from './teardown.ts';

/** A TCP echo server for `pod.spawnNode` (see the file header for its arguments and output). */
export const TCP_ECHO_SERVER = fileURLToPath(new URL('./apps/tcp-echo-server.ts', import.meta.url));
/** A one-shot TCP client for `pod.execNode` (see the file header for its arguments and output). */
export const TCP_CLIENT = fileURLToPath(new URL('./apps/tcp-client.ts', import.meta.url));

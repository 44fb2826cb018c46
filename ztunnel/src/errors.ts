import { MeshError } from '@ambient/common/errors';

/**
 * Why the ztunnel binary could not run or serve. Configuration problems are `ConfigError` (from
 * `@ambient/common/env`); the data path's failures live with the proxy; these codes cover what
 * only the binary's own wiring decides.
 */
export type ZtunnelErrorCode =
  /** The command line names an unknown command or flag. */
  | 'USAGE_INVALID'
  /** The `LOCAL_XDS_PATH` file could not be read, parsed or converted (the message names the entry). */
  | 'LOCAL_CONFIG_INVALID'
  /** The xDS or CA client cannot be built from the configuration (token, root certificate, address). */
  | 'CONTROL_PLANE_UNAVAILABLE';

export class ZtunnelError extends MeshError<ZtunnelErrorCode> {}

/**
 * Why the in-pod workload manager could not run a pod's proxy. The message is what the node agent
 * receives as the NACK text, so it names the pod and what to check.
 */
export type InpodErrorCode =
  /** Creating or starting the pod's listeners failed (`cause` holds the proxy's error). */
  | 'PROXY_START_FAILED'
  /** The netns fd received over ZDS cannot be inspected (closed, or not a namespace). */
  | 'NETNS_INVALID'
  /** The manager is stopping and takes no new pods. */
  | 'MANAGER_STOPPING'
  /** eBPF redirection mode: the pod's 15006 listener could not be put in its inbound map. */
  | 'EBPF_REGISTRATION_FAILED';

export class InpodError extends MeshError<InpodErrorCode> {}

/** Process exit codes of `ztunnel`, shared by every binary. */
export { EXIT_CODE } from '@ambient/common/cli';

import { MeshError } from '@ambient/common/errors';

/**
 * Why an `ambientctl` command or the local mesh failed. The CLI prints `code: message` and maps
 * the code to an exit status; the codes are stable so scripts may match on them.
 */
export type AmbientctlErrorCode =
  /** The command line names an unknown verb, flag or a bad flag value. */
  | 'USAGE'
  /** The verb needs root (network namespaces, veth pairs, nftables, eBPF) and the caller is not. */
  | 'NOT_ROOT'
  /** Something `up` needs has not been built (native addon, CNI plugin, BPF object, generated code). */
  | 'BUILD_MISSING'
  /** A step of bringing the mesh up failed; the message names the step, `cause` holds why. */
  | 'STEP_FAILED'
  /** `up` was asked for a mesh name whose daemon is already running. */
  | 'MESH_RUNNING'
  /** The verb needs a running mesh and none answers under that name. */
  | 'MESH_NOT_RUNNING'
  /** An applied manifest is malformed or of an unsupported kind (the message lists each bad document). */
  | 'MANIFEST_INVALID'
  /** No pod with that namespace and name exists in the local mesh. */
  | 'POD_NOT_FOUND'
  /** A component (ztunnel, istio-cni, istiod) or node named on the command line does not exist. */
  | 'NOT_FOUND'
  /** A ztunnel answered `/config_dump` with something that is not a ztunnel config dump. */
  | 'CONFIG_DUMP_INVALID'
  /** The guided check saw the mesh misbehave (the message names the failed checks). */
  | 'CHECK_FAILED'
  /** The host daemon answered with an error or could not be reached over its control socket. */
  | 'CONTROL_FAILED'
  /** A wait (pods Running, daemon ready, daemon exit) ran out of time. */
  | 'TIMEOUT'
  /** A command run in a pod could not be started, or (with `check`) exited non-zero. */
  | 'EXEC_FAILED'
  /** The local mesh was shut down; nothing more can be applied, run or restarted in it. */
  | 'MESH_STOPPED'
  /** `down` did all it could but something it created is still there (the message names it). */
  | 'TEARDOWN_INCOMPLETE';

export class AmbientctlError extends MeshError<AmbientctlErrorCode> {}

import { MeshError } from '@ambient/common/errors';

/**
 * Stable codes of in-pod redirection failures:
 * - `CONFIG_INVALID`: a mark, port, address or pod IP that cannot be expressed in the rules;
 * - `COMMAND_FAILED` / `COMMAND_TIMEOUT`: `nft`, `ip`, `tc`, `sysctl` or `bpftool` failed or hung;
 * - `OUTPUT_UNPARSEABLE`: one of those tools printed something this module cannot read;
 * - `BPF_OBJECT_MISSING`: the compiled eBPF object is not built (`npm run build -w @ambient/cni`);
 * - `BPF_ATTACH_FAILED`: loading, attaching or pinning an eBPF program failed;
 * - `PIN_DIR_INVALID`: a pin directory outside bpffs, or one that is not ours;
 * - `CGROUP_NOT_FOUND`: no cgroup v2 directory for a pod or process;
 * - `LISTENER_REGISTRATION_FAILED`: ztunnel's inbound listener could not be put in the pod's SOCKMAP.
 */
export type RedirectErrorCode =
  | 'CONFIG_INVALID'
  | 'COMMAND_FAILED'
  | 'COMMAND_TIMEOUT'
  | 'OUTPUT_UNPARSEABLE'
  | 'BPF_OBJECT_MISSING'
  | 'BPF_ATTACH_FAILED'
  | 'PIN_DIR_INVALID'
  | 'CGROUP_NOT_FOUND'
  | 'LISTENER_REGISTRATION_FAILED';

export class RedirectError extends MeshError<RedirectErrorCode> {}

/**
 * @ambient/cni/redirect: in-pod traffic redirection for ambient pods, in nftables mode (the
 * default, spec §6.3) or eBPF mode, plus the host-side kubelet probe SNAT and what ztunnel needs
 * to work with either (original destination recovery, inbound listener registration).
 */

export { cgroupOfPid, findPodCgroup, unifiedCgroupMount } from './cgroup.ts';
export type { RedirectCheck, RedirectReconcile } from './check.ts';
export {
  DEFAULT_REDIRECT_CONFIG,
  type PodRedirectOptions,
  type RedirectConfig,
  resolveRedirectConfig,
} from './config.ts';
export {
  attachPodRedirection,
  checkEbpfRedirection,
  DEFAULT_PIN_ROOT,
  detachPodRedirection,
  type EbpfAttachOptions,
  type EbpfCheck,
  type EbpfDetachOptions,
  type EbpfTarget,
  inboundListenerMapPath,
  type ListenerFamily,
  podPinDir,
  REDIRECT_OBJECT_PATH,
  reconcileEbpfRedirection,
  registerInboundListener,
  TC_FILTER_HANDLE,
  TC_FILTER_PREF,
} from './ebpf.ts';
export { encodeEbpfConfig } from './ebpf-config.ts';
export { RedirectError, type RedirectErrorCode } from './errors.ts';
export {
  addPodToProbeSet,
  applyHostProbeRules,
  checkHostProbeRules,
  listProbeSetEntries,
  type ProbeSetEntry,
  removeHostProbeRules,
  removePodFromProbeSet,
} from './host-probe.ts';
export { netnsPathOfFd } from './netns-path.ts';
export {
  applyNftablesRedirection,
  checkNftablesRedirection,
  reconcileNftablesRedirection,
  removeNftablesRedirection,
} from './nftables.ts';
export {
  buildHostProbeRemoval,
  buildHostProbeRules,
  buildPodRules,
  buildPodRulesRemoval,
  HOST_PROBE_SET_V4,
  HOST_PROBE_SET_V6,
  HOST_TABLE,
  type HostProbeOptions,
  POD_MANGLE_TABLE,
  POD_NAT_TABLE,
  POD_RAW_TABLE,
  POD_TABLES,
  podRuleset,
} from './nftables-rules.ts';
export { type OriginalDestination, originalDestination } from './original-destination.ts';
export {
  createRedirector,
  type PodTarget,
  type RedirectMode,
  type Redirector,
  type RedirectorOptions,
} from './redirector.ts';

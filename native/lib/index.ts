/**
 * @ambient/native: the Linux primitives Node lacks, for ztunnel and the istio-cni agent.
 *
 * - Sockets in another network namespace (listeners and non-blocking outbound connects), SO_MARK,
 *   IP_TRANSPARENT/IP_FREEBIND, SO_ORIGINAL_DST, socket cookies.
 * - Network namespace fds: open, verify, compare.
 * - SOCK_SEQPACKET unix sockets with SCM_RIGHTS fd passing (the ZDS transport).
 * - A small libbpf surface: load, attach (cgroup, sk_lookup, tc), pin, map access.
 *
 * Every failure is a NativeError whose `code` is the errno name. The addon is loaded on first use;
 * `isSupported()` tells whether this platform can load it at all.
 */
export { isSupported } from './binding.ts';
export {
  BpfLink,
  BpfMap,
  type BpfMapInfo,
  BpfObject,
  BpfProgram,
  type BpfUpdateMode,
  openCgroup,
  setPinnedSockmapSocket,
  TcAttachment,
} from './bpf.ts';
export { NativeError, type NativeErrorCode } from './errors.ts';
export { type MallocTuning, tuneMalloc } from './malloc-tuning.ts';
export { closeFd, currentNetnsInode, isNetns, netnsInode, openNetns, openNetnsOfPid } from './netns.ts';
export {
  type SeqpacketOptions,
  SeqpacketServer,
  type SeqpacketServerEvents,
  SeqpacketSocket,
  type SeqpacketSocketEvents,
} from './seqpacket.ts';
export {
  type ConnectOptions,
  connectFd,
  connectInNetns,
  createListenerFd,
  getMark,
  type ListenerFd,
  type ListenerOptions,
  listenInNetns,
  originalDst,
  setMark,
  setSendBufferSize,
  socketCookie,
  socketFd,
  type TransparentMode,
} from './sockets.ts';

import { callNative } from './binding.ts';

/**
 * Opens a network namespace file (e.g. `/var/run/netns/pod1`, `/proc/1234/ns/net`) and returns its fd.
 * The caller owns the fd and releases it with {@link closeFd}.
 * @throws NativeError `ENOENT` (syscall `open`) for a missing path, `EINVAL` (syscall `ioctl`) when the
 * file is not a network namespace.
 */
export function openNetns(path: string): number {
  return callNative((n) => n.openNetns(path));
}

/** Opens the network namespace of a process; see {@link openNetns}. */
export function openNetnsOfPid(pid: number): number {
  if (!Number.isInteger(pid) || pid <= 0) throw new TypeError(`pid ${pid} is not a positive integer`);
  return openNetns(`/proc/${pid}/ns/net`);
}

/**
 * Whether `fd` refers to a network namespace (ioctl NS_GET_NSTYPE == CLONE_NEWNET, falling back to the
 * nsfs magic on kernels without the ioctl). ZDS checks every fd it receives with this.
 * @throws NativeError `EBADF` when fd is not open.
 */
export function isNetns(fd: number): boolean {
  return callNative((n) => n.isNetns(fd));
}

/** Inode number of the namespace behind `fd`; two fds name the same namespace iff their inodes match. */
export function netnsInode(fd: number): number {
  return callNative((n) => n.netnsInode(fd));
}

/** Inode number of the calling thread's network namespace (compare with {@link netnsInode}). */
export function currentNetnsInode(): number {
  return callNative((n) => n.currentNetnsInode());
}

/** Closes an fd returned by this package (netns fds, fds received over SEQPACKET). */
export function closeFd(fd: number): void {
  callNative((n) => n.closeFd(fd));
}

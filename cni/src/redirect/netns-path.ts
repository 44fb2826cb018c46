/**
 * Every function here takes a network namespace as a path, because `nsenter --net=<path>` (nft,
 * ip, tc, sysctl) and the kernel's inode checks need one. A caller holding only an fd (ZDS hands
 * netns fds around) can name it through /proc: the path stays valid while the fd is open.
 */

/** A path for the network namespace behind `fd`, an fd this process holds open. */
export function netnsPathOfFd(fd: number): string {
  if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd ${fd} is not a file descriptor`);
  return `/proc/${process.pid}/fd/${fd}`;
}

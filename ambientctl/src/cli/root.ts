import { AmbientctlError } from '../errors.ts';

/**
 * Refuses to go on unless the process runs as root: the local mesh creates network namespaces,
 * veth pairs, nftables tables, eBPF programs and cgroups, and its control socket is root's only.
 */
export function requireRoot(verb: string, program: string): void {
  const uid = process.geteuid?.() ?? process.getuid?.();
  if (uid === 0) return;
  throw new AmbientctlError(
    'NOT_ROOT',
    `ambientctl ${verb} needs root (it creates network namespaces, veth pairs, nftables rules and eBPF programs); run it with sudo: sudo ${program} ${verb}`,
  );
}

import type { RunId } from './run-id.ts';

/** Most nodes one harness can build: node indexes are the last octet of underlay addresses. */
export const MAX_NODES = 250;

/**
 * The addresses of one run. Every address lives only inside namespaces the run created, so runs
 * never see each other's; the per-run octets just keep captures and logs from parallel runs
 * distinguishable. Ranges: underlay 172.31.<u>.0/24 (node i is .i), pods 10.<p>.<i>.0/24 with
 * <p> in 100-199 (clear of the usual Kubernetes defaults 10.96/12 for services and 10.244/16
 * for flannel pods).
 */
export interface AddressPlan {
  /** The underlay subnet the fabric bridge connects. */
  readonly underlayCidr: string;
  /** The /16 holding every node's pod CIDR. */
  readonly clusterCidr: string;
  /** A node's underlay address (its "node IP"); `index` starts at 1. */
  nodeIp(index: number): string;
  /** A node's pod CIDR; `index` starts at 1. */
  podCidr(index: number): string;
  /** The gateway host-local hands to pods of a node: the cni0 bridge address. */
  podGateway(index: number): string;
}

/** The plan for a run, derived from its pid and sequence number. */
export function planAddresses(run: RunId): AddressPlan {
  const hash = (Math.imul(run.pid, 31) + run.seq) >>> 0;
  const u = hash % 256;
  const p = 100 + (hash % 100);
  return {
    underlayCidr: `172.31.${u}.0/24`,
    clusterCidr: `10.${p}.0.0/16`,
    nodeIp: (i) => `172.31.${u}.${i}`,
    podCidr: (i) => `10.${p}.${i}.0/24`,
    podGateway: (i) => `10.${p}.${i}.1`,
  };
}

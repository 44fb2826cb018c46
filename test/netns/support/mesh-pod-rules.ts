import type { Pod } from '../../harness/index.ts';

/** ztunnel's in-pod socket mark (upstream 0x539). */
export const INPOD_MARK = 0x539;
const MARK = `0x${INPOD_MARK.toString(16)}`;

/**
 * A minimal version of istio-cni's in-pod nftables rules (spec §6.3), enough for ztunnel's data
 * path: outbound TCP to 15001 and inbound TCP to 15006 (15008 reached directly), ztunnel's own
 * marked packets and loopback let through, and the connmark 0x111 + table 100 routing that hands
 * replies of ztunnel's spoofed-source connections to the app back to ztunnel.
 */
export const POD_RULES = `table ip ambient-mesh-nat {
  chain prerouting {
    type nat hook prerouting priority dstnat;
    meta mark & 0xfff == ${MARK} return
    iifname "lo" return
    tcp dport 15008 return
    meta l4proto tcp redirect to :15006
  }
  chain output {
    type nat hook output priority -100;
    meta mark & 0xfff == ${MARK} return
    ip daddr 127.0.0.0/8 return
    oifname "lo" return
    meta l4proto tcp redirect to :15001
  }
}
table ip ambient-mesh-mangle {
  chain prerouting {
    type filter hook prerouting priority mangle;
    meta mark & 0xfff == ${MARK} ct mark set ct mark & 0xfffff000 | 0x111
  }
  chain output {
    type route hook output priority mangle;
    ct mark & 0xfff == 0x111 meta mark set ct mark
  }
}
`;

/** Installs {@link POD_RULES} and the table-100 local route in the pod's netns. */
export async function installPodRules(pod: Pod): Promise<void> {
  await pod.exec('nft', ['-f', '-'], { input: POD_RULES });
  await pod.exec('ip', ['rule', 'add', 'fwmark', '0x111/0xfff', 'pref', '32764', 'lookup', '100']);
  await pod.exec('ip', ['route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100']);
}

import { isIPv4, isIPv6 } from 'node:net';
import { RedirectError } from './errors.ts';

/**
 * The constants of in-pod redirection (spec §2.4, §6.3; upstream `istio:cni/pkg/config/config.go`).
 * Marks and ports must match what ztunnel uses: it sets {@link RedirectConfig.proxyMark} on every
 * socket it creates in a pod and listens on the three ports there.
 */
export interface RedirectConfig {
  /** SO_MARK of ztunnel's in-pod sockets (1337), matched under {@link markMask}. */
  readonly proxyMark: number;
  readonly markMask: number;
  /** The connmark / route mark (0x111) that sends replies to ztunnel's spoofed connections to table {@link routeTable}. */
  readonly routeMark: number;
  readonly routeTable: number;
  /** `ip rule` preference of the fwmark rule. */
  readonly routeRulePriority: number;
  readonly outboundPort: number;
  readonly inboundPort: number;
  readonly hbonePort: number;
  readonly dnsPort: number;
  /** Source the host SNATs kubelet probes to (`HOST_PROBE_SNAT_IP`). */
  readonly probeSnatIpv4: string;
  /** `HOST_PROBE_SNAT_IPV6`. */
  readonly probeSnatIpv6: string;
  /** Also write the IPv6 rules (and the `::/0` local route). */
  readonly ipv6: boolean;
  /** Node-wide DNS capture default; a pod can override it (`ambient.istio.io/dns-capture`). */
  readonly captureDns: boolean;
}

/** Upstream's defaults. */
export const DEFAULT_REDIRECT_CONFIG: RedirectConfig = Object.freeze({
  proxyMark: 0x539,
  markMask: 0xfff,
  routeMark: 0x111,
  routeTable: 100,
  routeRulePriority: 32764,
  outboundPort: 15001,
  inboundPort: 15006,
  hbonePort: 15008,
  dnsPort: 15053,
  probeSnatIpv4: '169.254.7.127',
  probeSnatIpv6: 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff',
  ipv6: true,
  captureDns: true,
});

/** What differs per pod: its addresses and the annotations that change its rules. */
export interface PodRedirectOptions {
  /** The pod's IPs (IPv4 and IPv6), as the CNI result lists them. */
  readonly ips: readonly string[];
  /** `ambient.istio.io/bypass-inbound-capture`: no inbound capture and no probe exemption. */
  readonly ingressMode?: boolean;
  /** `ambient.istio.io/dns-capture` override; defaults to {@link RedirectConfig.captureDns}. */
  readonly captureDns?: boolean;
}

/** Fills defaults and validates; throws RedirectError `CONFIG_INVALID` naming the field. */
export function resolveRedirectConfig(overrides: Partial<RedirectConfig> = {}): RedirectConfig {
  const cfg: RedirectConfig = { ...DEFAULT_REDIRECT_CONFIG, ...overrides };
  for (const key of ['proxyMark', 'markMask', 'routeMark'] as const) {
    checkInteger(key, cfg[key], 0, 0xffffffff);
  }
  if ((cfg.proxyMark & cfg.markMask) !== cfg.proxyMark || (cfg.routeMark & cfg.markMask) !== cfg.routeMark) {
    throw new RedirectError(
      'CONFIG_INVALID',
      `marks 0x${cfg.proxyMark.toString(16)} and 0x${cfg.routeMark.toString(16)} must lie within mask 0x${cfg.markMask.toString(16)}`,
    );
  }
  if (cfg.proxyMark === cfg.routeMark) {
    throw new RedirectError(
      'CONFIG_INVALID',
      `proxy mark and route mark are both 0x${cfg.proxyMark.toString(16)}`,
    );
  }
  checkInteger('routeTable', cfg.routeTable, 1, 0xfffffffe);
  checkInteger('routeRulePriority', cfg.routeRulePriority, 1, 0xfffffffe);
  for (const key of ['outboundPort', 'inboundPort', 'hbonePort', 'dnsPort'] as const) {
    checkInteger(key, cfg[key], 1, 65535);
  }
  if (!isIPv4(cfg.probeSnatIpv4)) {
    throw new RedirectError('CONFIG_INVALID', `probeSnatIpv4 ${cfg.probeSnatIpv4} is not an IPv4 address`);
  }
  if (!isIPv6(cfg.probeSnatIpv6)) {
    throw new RedirectError('CONFIG_INVALID', `probeSnatIpv6 ${cfg.probeSnatIpv6} is not an IPv6 address`);
  }
  return Object.freeze(cfg);
}

function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RedirectError('CONFIG_INVALID', `${name} ${value} is not an integer in [${min}, ${max}]`);
  }
}

/** Splits pod IPs by family, rejecting anything that is not an address. */
export function splitPodIps(ips: readonly string[]): { v4: string[]; v6: string[] } {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const ip of ips) {
    if (isIPv4(ip)) v4.push(ip);
    else if (isIPv6(ip)) v6.push(ip);
    else throw new RedirectError('CONFIG_INVALID', `pod IP ${JSON.stringify(ip)} is not an IP address`);
  }
  return { v4, v6 };
}

/** `0x539` as nft and ip print marks. */
export function hex(n: number): string {
  return `0x${(n >>> 0).toString(16)}`;
}

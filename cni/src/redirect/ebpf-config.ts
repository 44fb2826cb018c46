/**
 * The `config` map value of cni/bpf/inpod_redirect.bpf.c (`struct redirect_config`), encoded
 * purely. Addresses are written in network byte order (their bytes in order), ports, marks and
 * flags as little-endian u32 (host order on the little-endian machines this runs on: x86-64, arm64).
 */
import { isIPv4 } from 'node:net';
import { type PodRedirectOptions, type RedirectConfig, splitPodIps } from './config.ts';
import { RedirectError } from './errors.ts';

/** Pod IPs per family the program can hold (`MAX_POD_IPS`). */
export const MAX_POD_IPS = 4;
/** `sizeof(struct redirect_config)`. */
export const CONFIG_SIZE = 132;

const OFF = {
  podIp4: 0,
  podIp6: 16,
  probeIp4: 80,
  probeIp6: 84,
  proxyMark: 100,
  markMask: 104,
  routeMark: 108,
  outboundPort: 112,
  inboundPort: 116,
  hbonePort: 120,
  dnsPort: 124,
  flags: 128,
} as const;

const FLAG_CAPTURE_INBOUND = 1;
const FLAG_CAPTURE_DNS = 2;

/** The 4 or 16 bytes of an address in network order. */
export function addressBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  const [head = '', tail = ''] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const parse = (s: string): string[] => (s === '' ? [] : s.split(':'));
  let groups = parse(head);
  let tailGroups = parse(tail ?? '');
  // An embedded IPv4 tail (::ffff:10.0.0.1) is two groups.
  const expand = (gs: string[]): string[] =>
    gs.flatMap((g) => {
      if (!g.includes('.')) return [g];
      const b = addressBytes(g);
      return [b.readUInt16BE(0).toString(16), b.readUInt16BE(2).toString(16)];
    });
  groups = expand(groups);
  tailGroups = expand(tailGroups);
  const fill = ip.includes('::') ? 8 - groups.length - tailGroups.length : 0;
  const all = [...groups, ...Array<string>(fill).fill('0'), ...tailGroups];
  if (all.length !== 8) throw new RedirectError('CONFIG_INVALID', `${ip} is not an IPv6 address`);
  const out = Buffer.alloc(16);
  all.forEach((g, i) => {
    out.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return out;
}

/** Encodes the config map value for one pod. */
export function encodeEbpfConfig(cfg: RedirectConfig, pod: PodRedirectOptions): Buffer {
  const { v4, v6 } = splitPodIps(pod.ips);
  if (v4.length === 0 && v6.length === 0) {
    throw new RedirectError('CONFIG_INVALID', 'pod has no IP address to redirect to');
  }
  if (v4.length > MAX_POD_IPS || v6.length > MAX_POD_IPS) {
    throw new RedirectError(
      'CONFIG_INVALID',
      `pod has ${v4.length} IPv4 and ${v6.length} IPv6 addresses; the eBPF program holds ${MAX_POD_IPS} of each`,
    );
  }
  const buf = Buffer.alloc(CONFIG_SIZE);
  v4.forEach((ip, i) => {
    addressBytes(ip).copy(buf, OFF.podIp4 + i * 4);
  });
  v6.forEach((ip, i) => {
    addressBytes(ip).copy(buf, OFF.podIp6 + i * 16);
  });
  addressBytes(cfg.probeSnatIpv4).copy(buf, OFF.probeIp4);
  if (cfg.ipv6) addressBytes(cfg.probeSnatIpv6).copy(buf, OFF.probeIp6);
  buf.writeUInt32LE(cfg.proxyMark, OFF.proxyMark);
  buf.writeUInt32LE(cfg.markMask, OFF.markMask);
  buf.writeUInt32LE(cfg.routeMark, OFF.routeMark);
  buf.writeUInt32LE(cfg.outboundPort, OFF.outboundPort);
  buf.writeUInt32LE(cfg.inboundPort, OFF.inboundPort);
  buf.writeUInt32LE(cfg.hbonePort, OFF.hbonePort);
  buf.writeUInt32LE(cfg.dnsPort, OFF.dnsPort);
  let flags = 0;
  if (!(pod.ingressMode ?? false)) flags |= FLAG_CAPTURE_INBOUND;
  if (pod.captureDns ?? cfg.captureDns) flags |= FLAG_CAPTURE_DNS;
  buf.writeUInt32LE(flags, OFF.flags);
  return buf;
}

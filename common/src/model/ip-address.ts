import { isIPv4, isIPv6 } from 'node:net';

/**
 * IP handling for the model. Every IP the model stores or compares is a *canonical* string:
 * dotted IPv4, or RFC 5952 IPv6 (lower case, longest zero run compressed). IPv4-mapped IPv6
 * (`::ffff:10.0.0.1`) is unmapped to IPv4, as ztunnel's `to_canonical` does for socket
 * addresses, so a dual-stack socket's peer address finds the same workload as WDS bytes do.
 */

/** 4 or 6. */
export type IpFamily = 4 | 6;

/** A network prefix; `bytes` is the address as 4 or 16 bytes, kept for fast matching. */
export interface Cidr {
  readonly ip: string;
  readonly prefixLength: number;
  readonly bytes: Uint8Array;
}

function parseIpv4(text: string): Uint8Array | undefined {
  if (!isIPv4(text)) return undefined;
  return Uint8Array.from(text.split('.'), Number);
}

function parseIpv6(text: string): Uint8Array | undefined {
  if (!isIPv6(text) || text.includes('%')) return undefined;
  let hex = text;
  // An embedded IPv4 tail (`::ffff:1.2.3.4`) becomes two hex groups.
  const lastColon = hex.lastIndexOf(':');
  const tail = hex.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = parseIpv4(tail);
    if (v4 === undefined) return undefined;
    const hi = ((v4[0] as number) << 8) | (v4[1] as number);
    const lo = ((v4[2] as number) << 8) | (v4[3] as number);
    hex = `${hex.slice(0, lastColon + 1)}${hi.toString(16)}:${lo.toString(16)}`;
  }
  const [left, right] = hex.split('::') as [string, string | undefined];
  const leftGroups = left === '' ? [] : left.split(':');
  const rightGroups = right === undefined || right === '' ? [] : right.split(':');
  const missing = 8 - leftGroups.length - rightGroups.length;
  const groups = [
    ...leftGroups,
    ...new Array<string>(right === undefined ? 0 : missing).fill('0'),
    ...rightGroups,
  ];
  if (groups.length !== 8) return undefined;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = Number.parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

function isV4Mapped(b: Uint8Array): boolean {
  if (b.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Parses a textual IP into 4 or 16 bytes; IPv4-mapped IPv6 comes back as 4 bytes. Returns
 * undefined for anything that is not a plain IP (zone IDs included).
 */
export function parseIp(text: string): Uint8Array | undefined {
  const b = parseIpv4(text) ?? parseIpv6(text);
  if (b !== undefined && isV4Mapped(b)) return b.slice(12);
  return b;
}

/**
 * Formats 4 or 16 bytes canonically (IPv4-mapped IPv6 as IPv4). Returns undefined for any other
 * length; callers turn that into their own error.
 */
export function formatIp(bytes: Uint8Array): string | undefined {
  if (bytes.length === 4) return bytes.join('.');
  if (bytes.length !== 16) return undefined;
  if (isV4Mapped(bytes)) return bytes.slice(12).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] as number) << 8) | (bytes[i + 1] as number));
  // RFC 5952 §4.2: compress the longest run of two or more zero groups, the first on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** The canonical form of a textual IP, or undefined if it is not one. */
export function normalizeIp(text: string): string | undefined {
  const b = parseIp(text);
  return b === undefined ? undefined : formatIp(b);
}

/** Family of a canonical IP string. */
export function ipFamily(ip: string): IpFamily {
  return ip.includes(':') ? 6 : 4;
}

/** 127.0.0.0/8 or ::1 (after unmapping). */
export function isLoopback(ip: string): boolean {
  const b = parseIp(ip);
  if (b === undefined) return false;
  if (b.length === 4) return b[0] === 127;
  for (let i = 0; i < 15; i++) if (b[i] !== 0) return false;
  return b[15] === 1;
}

/**
 * Builds a prefix from address bytes and a prefix length; undefined when the bytes are not 4 or
 * 16 long or the length exceeds the family's width. Host bits may be set, as with ztunnel's
 * `IpNet::new`; matching compares only the prefix.
 */
export function makeCidr(bytes: Uint8Array, prefixLength: number): Cidr | undefined {
  const canonical = isV4Mapped(bytes) ? bytes.slice(12) : bytes;
  const ip = formatIp(canonical);
  if (ip === undefined) return undefined;
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > canonical.length * 8) {
    return undefined;
  }
  return Object.freeze({ ip, prefixLength, bytes: Uint8Array.from(canonical) });
}

/** Whether `ip` (4 or 16 bytes) lies in `cidr`; different families never match. */
export function cidrContains(cidr: Cidr, ip: Uint8Array): boolean {
  if (ip.length !== cidr.bytes.length) return false;
  const full = cidr.prefixLength >> 3;
  for (let i = 0; i < full; i++) if (ip[i] !== cidr.bytes[i]) return false;
  const rest = cidr.prefixLength & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((ip[full] as number) & mask) === ((cidr.bytes[full] as number) & mask);
}

/** `ip/len`, the form config_dump uses for policy addresses. */
export function formatCidr(cidr: Cidr): string {
  return `${cidr.ip}/${cidr.prefixLength}`;
}

/** An IP (canonical string) and a port. */
export interface SocketAddr {
  readonly ip: string;
  readonly port: number;
}

/** `10.0.0.1:80` or `[fd00::1]:80`: the form `:authority` and logs use. */
export function formatSocketAddr(addr: SocketAddr): string {
  return addr.ip.includes(':') ? `[${addr.ip}]:${addr.port}` : `${addr.ip}:${addr.port}`;
}

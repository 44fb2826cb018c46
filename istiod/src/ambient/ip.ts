/**
 * IP address parsing for the ambient builders. The rules follow Go's `net/netip` as istiod uses it:
 * IPv4 is four decimal octets without leading zeros, IPv6 may compress zeros with `::` and end in
 * an embedded IPv4, and a zone (`%eth0`) is accepted but dropped from the bytes. Every parser
 * returns `undefined` on bad input instead of throwing, because Kubernetes objects are user input
 * and one bad address must not stop the build of everything else.
 */

/** An address or CIDR prefix as 4 or 16 bytes plus a prefix length. */
export interface IpPrefix {
  readonly address: Uint8Array;
  readonly length: number;
}

const IPV4_OCTET = /^(0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIpv4(s: string): Uint8Array | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] as string;
    if (!IPV4_OCTET.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseIpv6(input: string): Uint8Array | undefined {
  const zone = input.indexOf('%');
  if (zone === 0 || zone === input.length - 1) return undefined;
  const s = zone === -1 ? input : input.slice(0, zone);
  const groups: number[] = [];
  let tail = s;
  // An embedded IPv4 address takes the place of the last two groups.
  let v4: Uint8Array | undefined;
  const lastColon = s.lastIndexOf(':');
  if (lastColon !== -1 && s.indexOf('.', lastColon) !== -1) {
    v4 = parseIpv4(s.slice(lastColon + 1));
    if (!v4) return undefined;
    tail = s.slice(0, lastColon + 1);
    // `::1.2.3.4` leaves `::`, `a::1.2.3.4` leaves `a::`; a single trailing `:` is the separator.
    if (!tail.endsWith('::')) tail = tail.slice(0, -1);
  }
  const want = v4 ? 6 : 8;
  const doubleColon = tail.indexOf('::');
  if (doubleColon !== -1 && tail.indexOf('::', doubleColon + 1) !== -1) return undefined;
  const parseGroups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const res: number[] = [];
    for (const g of part.split(':')) {
      if (!IPV6_GROUP.test(g)) return undefined;
      res.push(Number.parseInt(g, 16));
    }
    return res;
  };
  if (doubleColon === -1) {
    const all = parseGroups(tail);
    if (!all || all.length !== want) return undefined;
    groups.push(...all);
  } else {
    const head = parseGroups(tail.slice(0, doubleColon));
    const rest = parseGroups(tail.slice(doubleColon + 2));
    if (!head || !rest) return undefined;
    const missing = want - head.length - rest.length;
    // `::` stands for at least one group of zeros.
    if (missing < 1) return undefined;
    groups.push(...head, ...new Array<number>(missing).fill(0), ...rest);
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  if (v4) out.set(v4, 12);
  return out;
}

/** Parses a single IPv4 or IPv6 address into 4 or 16 bytes. */
export function parseIp(s: string): Uint8Array | undefined {
  if (s.includes(':')) return parseIpv6(s);
  return parseIpv4(s);
}

/**
 * Parses `addr` or `addr/len`. A plain address gets the full length (32 or 128). The address of a
 * CIDR is returned as written, not masked: istiod's policy conversion sends it that way, and
 * ztunnel masks it itself.
 */
export function parseCidr(s: string): IpPrefix | undefined {
  const slash = s.indexOf('/');
  if (slash === -1) {
    const address = parseIp(s);
    return address ? { address, length: address.length * 8 } : undefined;
  }
  const address = parseIp(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (!address || !/^(0|[1-9][0-9]{0,2})$/.test(lenText)) return undefined;
  const length = Number(lenText);
  if (length > address.length * 8) return undefined;
  return { address, length };
}

/** Zeroes the host bits of a prefix (Go's `netip.Prefix.Masked`). */
export function maskPrefix(p: IpPrefix): IpPrefix {
  const out = new Uint8Array(p.address);
  for (let bit = p.length; bit < out.length * 8; bit++) {
    out[bit >> 3] = (out[bit >> 3] as number) & ~(0x80 >> (bit & 7));
  }
  return { address: out, length: p.length };
}

/** Formats 4 or 16 bytes the way Go's `netip.Addr.String` does (RFC 5952 for IPv6). */
export function formatIp(b: Uint8Array): string {
  if (b.length === 4) return b.join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] as number) << 8) | (b[i + 1] as number));
  // IPv4-mapped addresses keep their dotted tail.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b.subarray(12).join('.')}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

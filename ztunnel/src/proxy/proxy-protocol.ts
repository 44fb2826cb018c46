import { formatIdentity, type Identity } from '@ambient/common/identity';
import { parseIp, type SocketAddr } from '@ambient/common/model';

/** The 12-byte PROXY protocol v2 signature. */
const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Version 2, command PROXY. */
const VERSION_PROXY = 0x21;
const TCP_OVER_IPV4 = 0x11;
const TCP_OVER_IPV6 = 0x21;
/** Istio's TLV carrying the client's SPIFFE ID (spec §1.3 step 8). */
export const PROXY_TLV_PEER_IDENTITY = 0xd0;

function ipv6Bytes(b: Uint8Array): Uint8Array {
  if (b.length === 16) return b;
  // IPv4-mapped, so both addresses share one family.
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(b, 12);
  return out;
}

/**
 * A PROXY protocol v2 header (haproxy proxy-protocol.txt §2.2) describing a proxied TCP
 * connection from `src` to `dst`, with the client's SPIFFE ID in TLV 0xD0 when it has one. Written
 * first on the connection to a workload whose `application_tunnel.protocol` is PROXY (a sandwiched
 * waypoint). Lengths are computed from what is written, never taken from input.
 */
export function proxyProtocolHeader(src: SocketAddr, dst: SocketAddr, identity?: Identity): Buffer {
  const s = parseIp(src.ip);
  const d = parseIp(dst.ip);
  if (s === undefined || d === undefined) {
    throw new TypeError(`proxy protocol needs IP addresses, got ${src.ip} and ${dst.ip}`);
  }
  const v4 = s.length === 4 && d.length === 4;
  const addrs = v4 ? Buffer.concat([s, d]) : Buffer.concat([ipv6Bytes(s), ipv6Bytes(d)]);
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(src.port, 0);
  ports.writeUInt16BE(dst.port, 2);
  const tlvs: Buffer[] = [];
  if (identity !== undefined) {
    const value = Buffer.from(formatIdentity(identity), 'utf8');
    const head = Buffer.alloc(3);
    head.writeUInt8(PROXY_TLV_PEER_IDENTITY, 0);
    head.writeUInt16BE(value.length, 1);
    tlvs.push(head, value);
  }
  const body = Buffer.concat([addrs, ports, ...tlvs]);
  const head = Buffer.alloc(4);
  head.writeUInt8(VERSION_PROXY, 0);
  head.writeUInt8(v4 ? TCP_OVER_IPV4 : TCP_OVER_IPV6, 1);
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([SIGNATURE, head, body]);
}

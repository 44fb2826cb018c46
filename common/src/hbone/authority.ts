import { isIPv4, isIPv6, SocketAddress } from 'node:net';
import { HboneError } from './errors.ts';

/**
 * A CONNECT `:authority` (spec §1.2/§1.3): an IP socket address, or `hostname:port` (used only by
 * double-HBONE and waypoints addressed by service name).
 */
export type HboneAuthority =
  | { readonly kind: 'ip'; readonly address: string; readonly family: 4 | 6; readonly port: number }
  | { readonly kind: 'hostname'; readonly hostname: string; readonly port: number };

// DNS names: total ≤ 253, labels 1–63 of letters, digits and inner hyphens (RFC 1123).
const MAX_HOSTNAME = 253;
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const PORT = /^[0-9]{1,5}$/;

function malformed(authority: string, why: string): HboneError {
  return new HboneError('HBONE_AUTHORITY', `authority ${JSON.stringify(authority)} ${why}`);
}

/**
 * Parses a CONNECT authority as ztunnel does (`SocketAddr`, else `host:port`): `10.0.0.5:8080`,
 * `[fd00::5]:8080` (IPv6 only in brackets, no zone), or `name.ns.svc.cluster.local:80`. A port is
 * required and must be 1–65535. IPv6 addresses come back in canonical form. Throws
 * `HboneError('HBONE_AUTHORITY')`; the server answers that with 400.
 */
export function parseAuthority(authority: string): HboneAuthority {
  if (authority.length === 0) throw malformed(authority, 'is empty');
  if (authority.length > MAX_HOSTNAME + 8) throw malformed(authority, 'is too long');
  let host: string;
  let portText: string;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0 || authority[close + 1] !== ':') {
      throw malformed(authority, 'has a bracketed host without "]:<port>"');
    }
    host = authority.slice(1, close);
    portText = authority.slice(close + 2);
    if (!isIPv6(host) || host.includes('%')) {
      throw malformed(authority, 'has a bracketed host that is not an IPv6 address without zone');
    }
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon < 0) throw malformed(authority, 'has no port');
    host = authority.slice(0, colon);
    portText = authority.slice(colon + 1);
    if (host.includes(':')) throw malformed(authority, 'has an IPv6 address without brackets');
  }
  if (!PORT.test(portText)) throw malformed(authority, `has port ${JSON.stringify(portText)}, not a number`);
  const port = Number(portText);
  if (port < 1 || port > 65_535) throw malformed(authority, `has port ${port}, outside 1..65535`);

  if (authority.startsWith('[')) {
    return {
      kind: 'ip',
      address: new SocketAddress({ address: host, family: 'ipv6' }).address,
      family: 6,
      port,
    };
  }
  if (isIPv4(host)) return { kind: 'ip', address: host, family: 4, port };
  if (!isHostname(host))
    throw malformed(authority, `has host ${JSON.stringify(host)}, not an IP or DNS name`);
  return { kind: 'hostname', hostname: host, port };
}

function isHostname(host: string): boolean {
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  if (name.length === 0 || name.length > MAX_HOSTNAME) return false;
  const labels = name.split('.');
  if (!labels.every((l) => LABEL.test(l))) return false;
  // A numeric last label is a malformed IPv4 address (`999.1.1.1`, `010.0.0.1`), not a name.
  return !/^[0-9]+$/.test(labels[labels.length - 1] as string);
}

/** `ip:port`, `[ipv6]:port` or `hostname:port`, the form `:authority` and `forwarded` use. */
export function formatAuthority(
  target: HboneAuthority | { readonly address: string; readonly port: number },
): string {
  if ('kind' in target && target.kind === 'hostname') return `${target.hostname}:${target.port}`;
  const { address, port } = target as { address: string; port: number };
  return isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`;
}

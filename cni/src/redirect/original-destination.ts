/**
 * How ztunnel recovers where a captured connection was going, identically in both modes (spec
 * §2.3): SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6 sockets), else the socket's local address.
 *
 * | path                  | nftables mode                        | eBPF mode                                               |
 * | --------------------- | ------------------------------------ | ------------------------------------------------------- |
 * | outbound (15001)      | conntrack NAT entry of the REDIRECT  | cgroup/getsockopt answers from the pod's `orig_by_peer` |
 * | inbound (15006)       | conntrack NAT entry of the REDIRECT  | no NAT (sk_lookup): the local address                   |
 * | HBONE (15008)         | local address                        | local address                                           |
 */
import type { Socket } from 'node:net';
import { NativeError, originalDst } from '@ambient/native';
import { RedirectError } from './errors.ts';

/** An original destination and how it was found. */
export interface OriginalDestination {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
  /** `original-dst`: from SO_ORIGINAL_DST (NAT or the eBPF answer); `local`: the socket's own address. */
  readonly via: 'original-dst' | 'local';
}

/** Errors meaning "this connection was not NATed", after which the local address is the answer. */
const NOT_NATED = new Set(['ENOENT', 'ENOPROTOOPT', 'EINVAL']);

/** The original destination of an accepted socket (see the module comment). */
export function originalDestination(socket: Socket): OriginalDestination {
  try {
    const d = originalDst(socket);
    return {
      address: d.address,
      port: d.port,
      family: d.family === 'IPv6' ? 'IPv6' : 'IPv4',
      via: 'original-dst',
    };
  } catch (err) {
    if (!(err instanceof NativeError && NOT_NATED.has(err.code))) throw err;
  }
  const { localAddress, localPort, localFamily } = socket;
  if (localAddress === undefined || localPort === undefined) {
    throw new RedirectError('OUTPUT_UNPARSEABLE', 'accepted socket has no local address (already closed)');
  }
  // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(localAddress);
  if (mapped?.[1]) return { address: mapped[1], port: localPort, family: 'IPv4', via: 'local' };
  return {
    address: localAddress,
    port: localPort,
    family: localFamily === 'IPv6' ? 'IPv6' : 'IPv4',
    via: 'local',
  };
}

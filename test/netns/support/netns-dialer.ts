import * as tls from 'node:tls';
import { type ConnectOptions, connectInNetns } from '@ambient/native';
import type { HboneDialer } from './hbone-api.ts';

/** An {@link HboneDialer} whose TCP sockets live in one network namespace, plus what it dialled. */
export interface NetnsDialer {
  readonly dial: HboneDialer;
  /** Every dial made, in order: the destination and the source it bound. */
  readonly dials: readonly { readonly address: string; readonly port: number; readonly source?: string }[];
}

/**
 * Dials HBONE peers from inside the network namespace `netnsFd`, as ztunnel does for a pod: the
 * TCP socket is created there by the addon (bound to the pool's source IP, marked with `mark`),
 * and TLS runs over it in this process.
 */
export function netnsDialer(
  netnsFd: number,
  options: { mark?: number; timeoutMs?: number } = {},
): NetnsDialer {
  const dials: { address: string; port: number; source?: string }[] = [];
  const dial: HboneDialer = async (tlsOptions) => {
    // The pool passes the source IP as `localAddress`, which tls.connect hands on to net.connect.
    const {
      host: address,
      port,
      localAddress,
    } = tlsOptions as tls.ConnectionOptions & { localAddress?: string };
    if (address === undefined || port === undefined) {
      throw new TypeError(`hbone dial needs host and port, got ${String(address)}:${String(port)}`);
    }
    dials.push({ address, port, ...(localAddress === undefined ? {} : { source: localAddress }) });
    const connect: ConnectOptions = {
      netnsFd,
      address,
      port,
      timeoutMs: options.timeoutMs ?? 10_000,
      ...(options.mark === undefined ? {} : { mark: options.mark }),
      ...(localAddress === undefined ? {} : { source: { address: localAddress } }),
    };
    // The TCP connect completes inside the netns first; TLS then runs on the native socket
    // (Node's fast TLS path, not a JavaScript stream wrapper).
    const socket = await connectInNetns(connect);
    return tls.connect({ ...tlsOptions, socket });
  };
  return { dial, dials };
}

import { existsSync } from 'node:fs';
import type * as net from 'node:net';
import { join } from 'node:path';
import { errorMessage } from '@ambient/common/errors';
import type { Logger } from '@ambient/common/log';
import { setPinnedSockmapSocket, socketFd } from '@ambient/native';
import { InpodError } from '../errors.ts';
import type { ProxyListener } from '../proxy/socket-factory.ts';

// The agent's layout (`cni/src/redirect/ebpf.ts`): one directory per pod uid, the SOCKMAP its
// sk_lookup program steers inbound connections with, keyed 0 for IPv4 and 1 for IPv6.
const INBOUND_LISTENERS_MAP = join('maps', 'inbound_listeners');
const POD_UID = /^[A-Za-z0-9._-]{1,128}$/;

/**
 * The path of a pod's inbound listener map under the agent's pin root, or undefined when the pod
 * has none: it is redirected with nftables (REDIRECT reaches 15006 without us), or its uid cannot
 * name a pin directory.
 */
export function inboundListenerMap(pinRoot: string, podUid: string): string | undefined {
  if (!POD_UID.test(podUid) || podUid.startsWith('.')) return undefined;
  const path = join(pinRoot, podUid, INBOUND_LISTENERS_MAP);
  return existsSync(path) ? path : undefined;
}

/**
 * ztunnel's side of the eBPF redirection contract: in that mode nothing rewrites a plaintext
 * connection to the pod, so the agent's sk_lookup program hands it to the socket registered
 * here, our 15006 listener (spec §2.3: the original destination is then the local address).
 * Without the registration, connections from outside the mesh to an ambient pod are refused.
 * Throws InpodError `EBPF_REGISTRATION_FAILED`, which fails the proxy's start (and so the Add).
 */
export function registerEbpfInbound(
  pinRoot: string,
  podUid: string,
  listener: ProxyListener | undefined,
  log: Logger,
): boolean {
  const mapPath = inboundListenerMap(pinRoot, podUid);
  if (mapPath === undefined || listener === undefined) return false;
  const ip = listener.address.ip;
  // A dual-stack wildcard listener serves both lookups.
  const keys = ip === '::' ? [0, 1] : ip.includes(':') ? [1] : [0];
  try {
    const fd = socketFd(listener.server as unknown as net.Socket);
    for (const key of keys) setPinnedSockmapSocket(mapPath, key, fd);
  } catch (err) {
    throw new InpodError(
      'EBPF_REGISTRATION_FAILED',
      `registering the inbound listener of pod ${podUid} in ${mapPath}: ${errorMessage(err)}`,
      { cause: err, retryable: true },
    );
  }
  log.info({ uid: podUid, map: mapPath, keys }, 'inbound listener registered for eBPF redirection');
  return true;
}

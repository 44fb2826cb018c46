import type * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { HboneError } from '@ambient/common/hbone/errors';
import type { WorkloadKey } from '@ambient/common/hbone/pool';
import type { BaggageSource } from '@ambient/common/hbone/request-headers';
import {
  formatSocketAddr,
  isLoopback,
  normalizeIp,
  resolveUpstream,
  type SocketAddr,
  type UpstreamDecision,
  type Workload,
} from '@ambient/common/model';
import { TlsError } from '@ambient/common/tls/errors';
import { logEarlyDeny } from './access-log.ts';
import { CaptureProxy } from './capture-listener.ts';
import { copyBidirectional } from './copy.ts';
import { ProxyError } from './errors.ts';
import type { ProxyContext } from './inputs.ts';
import { ConnectionResult } from './metrics.ts';

/** The source workload as the `baggage` header describes it (spec §1.4). */
export function workloadBaggage(w: Workload): BaggageSource {
  return {
    clusterId: w.clusterId,
    namespace: w.namespace,
    workloadType: w.workloadType,
    workloadName: w.workloadName,
    canonicalName: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    region: w.locality.region,
    zone: w.locality.zone,
  };
}

/** The peer of an accepted socket, IP canonical (IPv4-mapped IPv6 unmapped). */
export function peerAddress(socket: net.Socket): SocketAddr {
  const ip = socket.remoteAddress ?? '';
  return { ip: normalizeIp(ip) ?? ip, port: socket.remotePort ?? 0 };
}

/** Maps a failure to reach the upstream to the ProxyError the access log reports. */
export function upstreamError(err: unknown, target: string): ProxyError {
  if (err instanceof ProxyError) return err;
  if (err instanceof HboneError) {
    switch (err.code) {
      case 'HBONE_STATUS':
        return new ProxyError('HBONE_STATUS', `http status: ${err.status ?? 'unknown'} from ${target}`, {
          cause: err,
          ...(err.status === undefined ? {} : { status: err.status }),
        });
      case 'HBONE_CONNECT_TIMEOUT':
        return new ProxyError('HBONE_CONNECT_TIMEOUT', err.message, { cause: err, retryable: true });
      default:
        return new ProxyError(
          'HBONE_CONNECT_FAILED',
          `hbone connection to ${target} failed: ${err.message}`,
          {
            cause: err,
            retryable: err.retryable,
          },
        );
    }
  }
  if (err instanceof TlsError) {
    return new ProxyError('HBONE_TLS_FAILED', `tls with ${target} failed: ${err.message}`, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ProxyError('UPSTREAM_CONNECT_FAILED', `connecting to ${target} failed: ${message}`, {
    cause: err,
    retryable: true,
  });
}

/**
 * The outbound listener (15001, ztunnel `proxy/outbound.rs`): every connection the pod makes to
 * anywhere arrives here through the pod's NAT rules. Per connection:
 * 1. recover the original destination (SO_ORIGINAL_DST, else the local address);
 * 2. refuse loops: loopback on a ztunnel port, or ztunnel's own listener;
 * 3. wait (≤ 5 s) for the pod's Workload: the source is the pod whose netns this listener is in;
 * 4. route with `resolveUpstream` (spec §1.5);
 * 5. HBONE through the pod's pool (its certificate, the expected peer identities), or plain TCP;
 * 6. copy both ways; record metrics and one access log line.
 */
export class Outbound extends CaptureProxy {
  constructor(ctx: ProxyContext) {
    super(ctx, ctx.inputs.config.outboundPort, 'outbound');
  }

  protected async handle(socket: net.Socket): Promise<void> {
    const start = performance.now();
    // Until the copy takes over, a reset only means the client left; the copy reports errors.
    socket.on('error', () => {});
    const { inputs, live } = this.ctx;
    const { config, state } = inputs;
    const src = peerAddress(socket);
    const dst = inputs.socketFactory.originalDestination(socket);
    const deny = (err: unknown): void => {
      logEarlyDeny(inputs.accessLog, { src, dst, direction: 'outbound' }, err);
      socket.destroy();
    };
    const conn = live.open(`outbound ${formatSocketAddr(src)} to ${formatSocketAddr(dst)}`, {
      direction: 'outbound',
      src: formatSocketAddr(src),
      originalDst: formatSocketAddr(dst),
    });
    if (conn === undefined) {
      deny(new ProxyError('DRAINING', 'the proxy is stopping and accepts no new connections'));
      return;
    }
    try {
      // 2. Loops. Without NAT the "original destination" is this listener itself.
      const local = this.listener?.address;
      const toSelf =
        local !== undefined &&
        dst.port === local.port &&
        (dst.ip === local.ip || dst.ip === normalizeIp(socket.localAddress ?? ''));
      if ((isLoopback(dst.ip) && config.illegalPorts.includes(dst.port)) || toSelf) {
        deny(new ProxyError('SELF_CALL', `attempted recursive call to ourselves: ${formatSocketAddr(dst)}`));
        return;
      }

      // 3. The source workload.
      let source: Workload;
      try {
        source = await this.ctx.local.get(conn.signal);
      } catch (err) {
        deny(err);
        return;
      }

      // 4. Routing.
      const decision = resolveUpstream(
        state,
        { source, sourceIp: src.ip, destination: dst },
        { hbonePort: config.inboundPort, illegalPorts: config.illegalPorts },
      );
      if (decision.kind === 'reject') {
        deny(new ProxyError(decision.error.code, decision.error.message, { cause: decision.error }));
        return;
      }
      if (decision.kind === 'double-hbone') {
        deny(
          new ProxyError(
            'DOUBLE_HBONE_UNSUPPORTED',
            `destination ${formatSocketAddr(dst)} is on network ${JSON.stringify(decision.finalWorkload.network)} and needs double hbone through ${formatSocketAddr(decision.dial)}, which is not supported`,
          ),
        );
        return;
      }

      // 5. The upstream.
      conn.routed(formatSocketAddr(decision.dial), decision.kind === 'hbone' ? 'HBONE' : 'TCP');
      const result = new ConnectionResult({
        src,
        dst: decision.dial,
        ...(decision.kind === 'hbone' ? { hboneTarget: decision.authority } : {}),
        open: {
          reporter: 'source',
          source,
          ...(decision.kind === 'hbone' ? { derivedSource: { identity: source.identity } } : {}),
          ...(decision.kind === 'passthrough' ? {} : { destination: decision.destinationWorkload }),
          ...(decision.kind !== 'passthrough' && decision.destinationService !== undefined
            ? { destinationService: decision.destinationService }
            : {}),
          mtls: decision.kind === 'hbone',
        },
        metrics: inputs.metrics,
        accessLog: inputs.accessLog,
        start,
      });
      let upstream: Duplex;
      try {
        upstream = await this.#connect(decision, source, src, conn.signal);
      } catch (err) {
        result.record(
          conn.signal.aborted ? conn.signal.reason : upstreamError(err, formatSocketAddr(decision.dial)),
          'CONNECT',
        );
        socket.destroy();
        return;
      }

      // 6. Copy.
      const onAbort = (): void => {
        const reason = conn.signal.reason as Error;
        socket.destroy(reason);
        upstream.destroy(reason);
      };
      if (conn.signal.aborted) onAbort();
      else conn.signal.addEventListener('abort', onAbort, { once: true });
      try {
        await copyBidirectional(socket, upstream, result);
        result.record();
      } catch (err) {
        result.record(err);
      } finally {
        conn.signal.removeEventListener('abort', onAbort);
      }
    } finally {
      conn.release();
    }
  }

  #connect(
    decision: Exclude<UpstreamDecision, { kind: 'reject' | 'double-hbone' }>,
    source: Workload,
    src: SocketAddr,
    signal: AbortSignal,
  ): Promise<Duplex> {
    const { inputs } = this.ctx;
    if (decision.kind !== 'hbone') {
      return inputs.socketFactory.connect({
        address: decision.dial.ip,
        port: decision.dial.port,
        timeoutMs: inputs.config.connectTimeoutMs,
        signal,
      });
    }
    const key: WorkloadKey = {
      srcIdentity: source.identity,
      dstIdentities: decision.expectedIdentities,
      srcIp: src.ip,
      dst: { address: decision.dial.ip, port: decision.dial.port },
    };
    return inputs.pool.openTunnel(key, {
      target: decision.authority,
      source: { address: src.ip, port: src.port },
      ...(decision.destinationService === undefined
        ? {}
        : { serviceHost: decision.destinationService.hostname }),
      baggage: workloadBaggage(source),
      signal,
    });
  }
}

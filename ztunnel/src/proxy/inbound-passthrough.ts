import type * as net from 'node:net';
import { formatSocketAddr, type Workload } from '@ambient/common/model';
import { logEarlyDeny } from './access-log.ts';
import { CaptureProxy } from './capture-listener.ts';
import { copyBidirectional } from './copy.ts';
import { ProxyError } from './errors.ts';
import { guessInboundService } from './inbound.ts';
import type { ProxyContext } from './inputs.ts';
import { ConnectionResult } from './metrics.ts';
import { peerAddress, upstreamError } from './outbound.ts';
import { connectPreservingSource } from './socket-factory.ts';

/**
 * The inbound plaintext listener (15006, ztunnel `proxy/inbound_passthrough.rs`): connections to
 * the pod that did not come over HBONE. Per connection:
 * 1. recover the original destination; a ztunnel port is a self-call;
 * 2. the destination must be a known workload;
 * 3. authorize with no peer identity, so PeerAuthentication STRICT (`not_principals: presence`)
 *    denies it, tracked for later policy changes;
 * 4. connect to the app keeping the client's IP when possible, copy both ways.
 */
export class InboundPassthrough extends CaptureProxy {
  constructor(ctx: ProxyContext) {
    super(ctx, ctx.inputs.config.inboundPlaintextPort, 'inbound plaintext');
  }

  protected async handle(socket: net.Socket): Promise<void> {
    const start = performance.now();
    socket.on('error', () => {});
    const { inputs, live } = this.ctx;
    const { state, config } = inputs;
    const src = peerAddress(socket);
    const dst = inputs.socketFactory.originalDestination(socket);
    const deny = (err: unknown): void => {
      logEarlyDeny(inputs.accessLog, { src, dst, direction: 'inbound' }, err);
      socket.destroy();
    };
    const conn = live.open(`inbound plaintext ${formatSocketAddr(src)} to ${formatSocketAddr(dst)}`, {
      direction: 'inbound',
      src: formatSocketAddr(src),
      originalDst: formatSocketAddr(dst),
      actualDst: formatSocketAddr(dst),
      protocol: 'TCP',
    });
    if (conn === undefined) {
      deny(new ProxyError('DRAINING', 'the proxy is stopping and accepts no new connections'));
      return;
    }
    try {
      // 1. A connection to pod:15006 would come back here forever.
      if (config.illegalPorts.includes(dst.port)) {
        deny(new ProxyError('SELF_CALL', `attempted recursive call to ourselves: ${formatSocketAddr(dst)}`));
        return;
      }
      let local: Workload;
      try {
        local = await this.ctx.local.get(conn.signal);
      } catch (err) {
        deny(err);
        return;
      }
      // 2. The destination workload.
      const upstream = state.findWorkloadByAddress(local.network, dst.ip);
      if (upstream === undefined) {
        deny(new ProxyError('UNKNOWN_DESTINATION', `unknown destination: ${dst.ip} is no known workload`));
        return;
      }
      const source = state.findWorkloadByAddress(local.network, src.ip);
      const service = guessInboundService(
        state,
        state.servicesOfWorkload(upstream),
        undefined,
        dst.port,
        upstream,
      );
      const result = new ConnectionResult({
        src,
        dst,
        open: {
          reporter: 'destination',
          ...(source === undefined ? {} : { source }),
          derivedSource: {},
          destination: upstream,
          ...(service === undefined ? {} : { destinationService: service }),
          mtls: false,
        },
        metrics: inputs.metrics,
        accessLog: inputs.accessLog,
        start,
      });

      // 3. Authorization without identity.
      const registration = inputs.connectionManager.register({
        owner: this.ctx.uid,
        connection: { srcIp: src.ip, dstIp: dst.ip, dstPort: dst.port },
        dstWorkload: local,
        close: (reason) => conn.close(reason),
      });
      if (!registration.decision.allowed) {
        result.record(
          new ProxyError(
            'POLICY_DENIED',
            `connection closed due to policy rejection: ${registration.decision.message}`,
          ),
          'DENY',
        );
        socket.destroy();
        return;
      }
      try {
        // 4. The app.
        let app: net.Socket;
        try {
          ({ socket: app } = await connectPreservingSource(inputs.socketFactory, {
            address: dst.ip,
            port: dst.port,
            source: src.ip,
            preserveSource: config.preserveSource,
            timeoutMs: config.connectTimeoutMs,
            signal: conn.signal,
          }));
        } catch (err) {
          result.record(
            conn.signal.aborted ? conn.signal.reason : upstreamError(err, formatSocketAddr(dst)),
            'CONNECT',
          );
          socket.destroy();
          return;
        }
        const onAbort = (): void => {
          const reason = conn.signal.reason as Error;
          socket.destroy(reason);
          app.destroy(reason);
        };
        if (conn.signal.aborted) onAbort();
        else conn.signal.addEventListener('abort', onAbort, { once: true });
        try {
          await copyBidirectional(socket, app, result);
          result.record();
        } catch (err) {
          result.record(err);
        } finally {
          conn.signal.removeEventListener('abort', onAbort);
        }
      } finally {
        registration.release();
      }
    } finally {
      conn.release();
    }
  }
}

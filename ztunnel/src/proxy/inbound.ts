import type * as net from 'node:net';
import { formatAuthority, type HboneAuthority } from '@ambient/common/hbone/authority';
import type { HboneError } from '@ambient/common/hbone/errors';
import { forwardedHost, parseBaggage } from '@ambient/common/hbone/request-headers';
import { type HboneConnectionInfo, type HboneRequest, HboneServer } from '@ambient/common/hbone/server';
import type { HboneTunnel } from '@ambient/common/hbone/tunnel';
import {
  formatSocketAddr,
  normalizeIp,
  type ProxyState,
  type Service,
  type SocketAddr,
  type Workload,
} from '@ambient/common/model';
import type { TlsCredentials } from '@ambient/common/tls/secure-context';
import { logEarlyDeny } from './access-log.ts';
import { copyBidirectional } from './copy.ts';
import { ProxyError } from './errors.ts';
import type { ProxyContext } from './inputs.ts';
import { ConnectionResult, type DerivedWorkload } from './metrics.ts';
import { upstreamError, workloadBaggage } from './outbound.ts';
import type { ProxyConfig } from './proxy-config.ts';
import { proxyProtocolHeader } from './proxy-protocol.ts';
import { connectPreservingSource, type ProxyListener } from './socket-factory.ts';

/** Where an inbound request goes, and what it is, once validated (ztunnel `resolve_inbound_target`). */
export interface InboundTarget {
  /** The app's address: always the local pod IP; the port from the authority or the service. */
  readonly upstream: SocketAddr;
  /** Services the target may belong to, for telemetry. */
  readonly services: readonly Service[];
  /** A PROXY protocol header is written first (sandwiched waypoint), describing this target. */
  readonly proxyProtocolTarget?: SocketAddr;
}

function canonical(ip: string | undefined): string {
  return normalizeIp(ip ?? '') ?? ip ?? '';
}

/** Whether `gateway` (a waypoint reference) resolves to the local workload (ztunnel `validate_destination`). */
function waypointIsLocal(
  state: ProxyState,
  target: Workload | Service,
  local: Workload,
  localIp: string,
): boolean {
  const waypoint = target.waypoint;
  if (waypoint === undefined) return false;
  const found = state.findDestination(waypoint.destination);
  if (found === undefined) return false;
  if (found.kind === 'workload') return found.workload.workloadIps.includes(localIp);
  return state.serviceEndpoints(found.service).has(local.uid);
}

/**
 * Spec §1.3 step 4: an IP authority must be the IP the connection arrived on, unless this pod
 * has an application tunnel or is the waypoint of the service or workload the authority names.
 * Hostname authorities are checked when resolved.
 */
export function validateDestination(
  state: ProxyState,
  local: Workload,
  localIp: string,
  authority: HboneAuthority,
): void {
  if (authority.kind === 'hostname') return;
  const target = canonical(authority.address);
  if (target === localIp) return;
  if (local.applicationTunnel !== undefined) return;
  const addressed = state.findAddress(local.network, target);
  const allowed =
    addressed !== undefined &&
    waypointIsLocal(
      state,
      addressed.kind === 'service' ? addressed.service : addressed.workload,
      local,
      localIp,
    );
  if (!allowed) {
    throw new ProxyError('IP_MISMATCH', `ip mismatch: ${localIp} != ${target}`, { status: 400 });
  }
}

/**
 * Spec §1.3 step 5: the app address for a validated request. Errors are answered 503
 * (`INBOUND_TARGET_UNKNOWN`, `SELF_CALL`).
 */
export function resolveInboundTarget(
  config: ProxyConfig,
  state: ProxyState,
  local: Workload,
  localIp: string,
  authority: HboneAuthority,
): InboundTarget {
  let port: number;
  let services: readonly Service[];
  if (authority.kind === 'hostname') {
    const service = state.findBestServiceByHostname(authority.hostname, local.namespace);
    if (service === undefined) {
      throw new ProxyError('INBOUND_TARGET_UNKNOWN', `no service for hostname ${authority.hostname}`, {
        status: 503,
      });
    }
    const endpointPort = state.serviceEndpoints(service).get(local.uid)?.port.get(authority.port);
    const servicePort = service.ports.get(authority.port)?.targetPort ?? 0;
    const resolved = endpointPort !== undefined && endpointPort > 0 ? endpointPort : servicePort;
    if (resolved === 0) {
      throw new ProxyError(
        'INBOUND_TARGET_UNKNOWN',
        `service ${service.hostname} has no target port for port ${authority.port}`,
        { status: 503 },
      );
    }
    port = resolved;
    services = [service];
  } else {
    port = authority.port;
    services = state.servicesOfWorkload(local);
  }
  if (config.illegalPorts.includes(port)) {
    throw new ProxyError('SELF_CALL', `attempted recursive call to ourselves: port ${port}`, { status: 503 });
  }
  const tunnel = local.applicationTunnel;
  if (tunnel === undefined) return { upstream: { ip: localIp, port }, services };
  const upstream = { ip: localIp, port: tunnel.port ?? port };
  if (tunnel.protocol !== 'PROXY') return { upstream, services };
  let tunnelTarget: SocketAddr;
  if (authority.kind === 'ip') {
    tunnelTarget = { ip: canonical(authority.address), port: authority.port };
  } else {
    // PROXY carries no hostnames: use a VIP of the service on our network, IPv4 first.
    const vips = (services[0]?.vips ?? []).filter((v) => v.network === local.network);
    const vip = vips.find((v) => !v.ip.includes(':')) ?? vips[0];
    if (vip === undefined) {
      throw new ProxyError('INBOUND_TARGET_UNKNOWN', `no ip for service ${authority.hostname}`, {
        status: 503,
      });
    }
    tunnelTarget = { ip: vip.ip, port: authority.port };
  }
  return { upstream, services, proxyProtocolTarget: tunnelTarget };
}

/**
 * Which service an inbound connection was for, for telemetry (ztunnel `guess_inbound_service`):
 * the one the client named in `forwarded: host=`, if it is among the candidates; else the first
 * whose target port (service or endpoint mapping) is the port connected to.
 */
export function guessInboundService(
  state: ProxyState,
  services: readonly Service[],
  forHost: string | undefined,
  port: number,
  destination: Workload,
): Service | undefined {
  if (forHost !== undefined) {
    const named = services.find((s) => s.hostname === forHost);
    if (named !== undefined) return named;
  }
  return services.find((s) => {
    const endpoint = state.serviceEndpoints(s).get(destination.uid);
    for (const [servicePort, p] of s.ports) {
      if (p.targetPort === port) return true;
      if (endpoint?.port.get(servicePort) === port) return true;
    }
    return false;
  });
}

/**
 * The inbound HBONE listener (15008, ztunnel `proxy/inbound.rs`). TLS presents the pod's
 * certificate (fetched per connection, so rotation is picked up) and requires a client
 * certificate in our trust domain; the HBONE server answers non-CONNECT and unparsable
 * authorities with 400. Then per CONNECT, in the order of spec §1.3:
 * 1. the authority IP must be this connection's IP (400 `ip mismatch`);
 * 2. resolve the app address; a ztunnel port is a self-call (503);
 * 3. authorize with the peer's identity (401), tracked for later policy changes;
 * 4. connect to the app inside the pod, keeping the client's IP as source when possible (503);
 * 5. answer 200 and copy both ways.
 */
export class Inbound {
  readonly #ctx: ProxyContext;
  #listener: ProxyListener | undefined;
  #server: HboneServer | undefined;
  #credentials: TlsCredentials | undefined;

  constructor(ctx: ProxyContext) {
    this.#ctx = ctx;
  }

  get listener(): ProxyListener | undefined {
    return this.#listener;
  }

  /** The HBONE server, once a first connection made it exist. */
  get server(): HboneServer | undefined {
    return this.#server;
  }

  async listen(): Promise<ProxyListener> {
    const listener = await this.#ctx.inputs.socketFactory.listen(this.#ctx.inputs.config.inboundPort);
    listener.server.on('connection', (socket: net.Socket) => this.#accept(socket));
    this.#listener = listener;
    this.#ctx.log.info(
      {
        address: formatSocketAddr(listener.address),
        component: 'inbound',
        transparent: listener.transparent,
      },
      'listener established',
    );
    return listener;
  }

  /** Stops accepting; `graceful` sends GOAWAY on live HBONE connections, otherwise tears them down. */
  close(mode: 'graceful' | 'immediate'): void {
    this.#listener?.server.close();
    if (this.#server === undefined) return;
    if (mode === 'graceful') void this.#server.close();
    else this.#server.destroy();
  }

  /** Tears down whatever HBONE connections are left. */
  destroy(): void {
    this.#listener?.server.close();
    this.#server?.destroy();
  }

  #accept(socket: net.Socket): void {
    socket.on('error', () => {});
    // Nothing is read until TLS takes the socket over; the kernel holds the ClientHello.
    socket.pause();
    this.#serverForNextConnection().then(
      (server) => {
        if (socket.destroyed) return;
        server.handleConnection(socket);
      },
      (err: unknown) => {
        this.#ctx.log.warn(
          { err, src: canonical(socket.remoteAddress), workload: this.#ctx.local.describe() },
          'inbound connection refused: no certificate to present',
        );
        socket.destroy();
      },
    );
  }

  // The HBONE server with the pod's current certificate.
  async #serverForNextConnection(): Promise<HboneServer> {
    const { inputs } = this.#ctx;
    const workload = await this.#ctx.local.get();
    let credentials: TlsCredentials;
    try {
      credentials = await inputs.certificates.fetch(workload.identity);
    } catch (err) {
      throw new ProxyError('CERTIFICATE_UNAVAILABLE', `no certificate for ${this.#ctx.local.describe()}`, {
        cause: err,
        retryable: true,
      });
    }
    if (this.#server === undefined) {
      this.#server = this.#createServer(credentials);
      this.#credentials = credentials;
    } else if (credentials !== this.#credentials) {
      this.#server.setCredentials(credentials);
      this.#credentials = credentials;
    }
    return this.#server;
  }

  #createServer(credentials: TlsCredentials): HboneServer {
    const { inputs } = this.#ctx;
    const server = new HboneServer({
      credentials,
      settings: inputs.config.hbone,
      handler: (request) => this.#handle(request),
    });
    server.on('requestRejected', (err: HboneError, _status: number, info: HboneConnectionInfo) => {
      const code = err.code === 'HBONE_METHOD' ? 'NON_CONNECT_METHOD' : 'INVALID_AUTHORITY';
      logEarlyDeny(
        inputs.accessLog,
        {
          src: addr(info.remoteAddress, info.remotePort),
          dst: addr(info.localAddress, info.localPort),
          direction: 'inbound',
        },
        new ProxyError(code, err.message, { cause: err, status: 400 }),
      );
    });
    server.on('connectionRejected', (err, peer) => {
      this.#ctx.log.warn(
        { err, src: canonical(peer.remoteAddress), workload: this.#ctx.local.describe() },
        'hbone connection rejected',
      );
    });
    server.on('handlerError', (err) => {
      this.#ctx.log.error({ err }, 'inbound request handling failed');
    });
    return server;
  }

  async #handle(request: HboneRequest): Promise<void> {
    const start = performance.now();
    const { inputs, live } = this.#ctx;
    const { state, config } = inputs;
    const src = addr(request.remoteAddress, request.remotePort);
    const dst = addr(request.localAddress, request.localPort);
    const deny = (err: ProxyError, status: number): void => {
      logEarlyDeny(inputs.accessLog, { src, dst, direction: 'inbound' }, err);
      if (!request.answered) request.reject(status);
    };
    const conn = live.open(`inbound ${formatSocketAddr(src)} to ${formatAuthority(request.authority)}`, {
      direction: 'inbound',
      src: formatSocketAddr(src),
      originalDst: formatAuthority(request.authority),
      actualDst: formatAuthority(request.authority),
      protocol: 'HBONE',
    });
    if (conn === undefined) {
      deny(new ProxyError('DRAINING', 'the proxy is stopping and accepts no new connections'), 503);
      return;
    }
    try {
      const local = this.#ctx.local.current();
      if (local === undefined) {
        deny(new ProxyError('UNKNOWN_SOURCE', `workload ${this.#ctx.local.describe()} left WDS`), 503);
        return;
      }
      // 1–2. Destination.
      let target: InboundTarget;
      try {
        validateDestination(state, local, dst.ip, request.authority);
      } catch (err) {
        deny(err as ProxyError, 400);
        return;
      }
      try {
        target = resolveInboundTarget(config, state, local, dst.ip, request.authority);
      } catch (err) {
        deny(err as ProxyError, 503);
        return;
      }

      // Telemetry context. A hostname authority came through a gateway: the peer IP says
      // nothing about the source then (ztunnel#515).
      const source =
        request.authority.kind === 'hostname'
          ? undefined
          : state.findWorkloadByAddress(local.network, src.ip);
      const baggage = parseBaggage(request.headers.baggage);
      const derivedSource: DerivedWorkload = {
        identity: request.peerIdentity,
        ...(baggage.workloadName === undefined ? {} : { workloadName: baggage.workloadName }),
        ...(baggage.canonicalName === undefined ? {} : { app: baggage.canonicalName }),
        ...(baggage.canonicalRevision === undefined ? {} : { revision: baggage.canonicalRevision }),
        ...(baggage.namespace === undefined ? {} : { namespace: baggage.namespace }),
        ...(baggage.clusterId === undefined ? {} : { clusterId: baggage.clusterId }),
      };
      const service = guessInboundService(
        state,
        target.services,
        forwardedHost(request.headers.forwarded),
        target.upstream.port,
        local,
      );
      const result = new ConnectionResult({
        src,
        dst,
        hboneTarget: formatAuthority(request.authority),
        open: {
          reporter: 'destination',
          ...(source === undefined ? {} : { source }),
          derivedSource,
          destination: local,
          ...(service === undefined ? {} : { destinationService: service }),
          mtls: true,
        },
        metrics: inputs.metrics,
        accessLog: inputs.accessLog,
        start,
      });

      // 3. Authorization, tracked from here on.
      const registration = inputs.connectionManager.register({
        owner: this.#ctx.uid,
        connection: {
          srcIdentity: request.peerIdentity,
          srcIp: src.ip,
          dstIp: target.upstream.ip,
          dstPort: target.upstream.port,
        },
        dstWorkload: local,
        close: (reason) => conn.close(reason),
      });
      if (!registration.decision.allowed) {
        result.record(
          new ProxyError(
            'POLICY_DENIED',
            `connection closed due to policy rejection: ${registration.decision.message}`,
            { status: 401 },
          ),
          'DENY',
        );
        request.reject(401);
        return;
      }
      try {
        await this.#serve(request, target, src, local, result, conn.signal);
      } finally {
        registration.release();
      }
    } finally {
      conn.release();
    }
  }

  // Steps 4–5.
  async #serve(
    request: HboneRequest,
    target: InboundTarget,
    src: SocketAddr,
    local: Workload,
    result: ConnectionResult,
    signal: AbortSignal,
  ): Promise<void> {
    const { inputs } = this.#ctx;
    const { config } = inputs;
    // The client giving up the CONNECT stops the app connect too.
    const onStreamClose = (): void => {
      if (!request.answered) abortConnect.abort();
    };
    const abortConnect = new AbortController();
    request.stream.once('close', onStreamClose);
    let app: net.Socket;
    try {
      ({ socket: app } = await connectPreservingSource(inputs.socketFactory, {
        address: target.upstream.ip,
        port: target.upstream.port,
        source: src.ip,
        preserveSource: config.preserveSource,
        timeoutMs: config.connectTimeoutMs,
        signal: AbortSignal.any([signal, abortConnect.signal]),
      }));
    } catch (err) {
      const error = signal.aborted
        ? (signal.reason as ProxyError)
        : upstreamError(err, formatSocketAddr(target.upstream));
      result.record(error, 'CONNECT');
      if (!request.answered && !request.stream.destroyed) request.reject(503);
      return;
    } finally {
      request.stream.off('close', onStreamClose);
    }
    if (request.stream.destroyed || request.stream.closed) {
      app.destroy();
      result.record(
        new ProxyError('RECEIVE_FAILED', 'the client closed the stream before the tunnel was established'),
      );
      return;
    }
    let tunnel: HboneTunnel;
    try {
      tunnel = request.accept(config.responseBaggage ? { baggage: workloadBaggage(local) } : {});
    } catch (err) {
      app.destroy();
      result.record(new ProxyError('RECEIVE_FAILED', 'answering the CONNECT failed', { cause: err }));
      return;
    }
    if (target.proxyProtocolTarget !== undefined) {
      app.write(proxyProtocolHeader(src, target.proxyProtocolTarget, request.peerIdentity));
    }
    const onAbort = (): void => {
      const reason = signal.reason as Error;
      tunnel.destroy(reason);
      app.destroy(reason);
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    try {
      await copyBidirectional(tunnel, app, result);
      result.record();
    } catch (err) {
      result.record(err);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }
}

function addr(ip: string | undefined, port: number | undefined): SocketAddr {
  return { ip: canonical(ip), port: port ?? 0 };
}

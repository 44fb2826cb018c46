import { formatIdentity, type Identity, identityEquals, tryParseIdentity } from '../identity/identity.ts';
import { RoutingError } from './errors.ts';
import { formatSocketAddr, ipFamily, isLoopback, normalizeIp, type SocketAddr } from './ip-address.ts';
import type { ProxyState } from './proxy-state.ts';
import {
  acceptsEndpointHealth,
  type Endpoint,
  type LoadBalancerScope,
  type Service,
  type WeightedWaypoint,
} from './service.ts';
import { formatGatewayDestination, type GatewayAddress, type Workload } from './workload.ts';

/*
 * Outbound destination choice (spec §1.5; ztunnel `proxy/outbound.rs` `build_request`,
 * `state.rs` `find_upstream`, `load_balance`, `fetch_waypoint`, `fetch_network_gateway`).
 * Everything here is a pure function of the ProxyState and its inputs; randomness and DNS come
 * in through RoutingOptions so tests can pin them.
 */

/** ztunnel's own listener ports; a loopback connection to one of them is a loop (spec §1.5 step 1). */
export const DEFAULT_ILLEGAL_PORTS: readonly number[] = Object.freeze([15001, 15006, 15008]);
/** Port of the HBONE listener in every captured pod. */
export const DEFAULT_HBONE_PORT = 15008;

export interface RoutingOptions {
  /** Uniform in [0, 1); defaults to Math.random. */
  readonly random?: () => number;
  /** Port dialled on a destination pod for HBONE (ztunnel's inbound port). */
  readonly hbonePort?: number;
  /** Ports that may not be dialled on loopback. */
  readonly illegalPorts?: readonly number[];
  /**
   * Already-resolved IPs for a workload addressed by DNS hostname, or undefined when not yet
   * resolved; the decision is then `reject` with HOSTNAME_UNRESOLVED and the caller resolves
   * and asks again.
   */
  readonly resolveHostname?: (hostname: string) => readonly string[] | undefined;
}

/** One captured outbound connection. */
export interface OutboundRequest {
  /** The pod this in-pod proxy serves. */
  readonly source: Workload;
  /** The connection's source IP as seen by the proxy (used to recognise a waypoint source). */
  readonly sourceIp: string;
  /** SO_ORIGINAL_DST. */
  readonly destination: SocketAddr;
}

/** Which §1.5 path produced an HBONE decision. */
export type UpstreamRoute = 'direct' | 'service-waypoint' | 'workload-waypoint';

/**
 * What to do with an outbound connection. `destinationWorkload` is always the workload that
 * terminates the next hop (a waypoint, a gateway, or the pod itself); `destinationService` is
 * the service the client addressed, for telemetry.
 */
export type UpstreamDecision =
  | { readonly kind: 'reject'; readonly error: RoutingError }
  | {
      /** Plain TCP to the original destination: unknown to WDS, or a PASSTHROUGH service. */
      readonly kind: 'passthrough';
      readonly dial: SocketAddr;
      readonly reason: 'unknown-destination' | 'passthrough-service';
    }
  | {
      /** Plain TCP to a known workload that does not speak HBONE (`tunnel_protocol NONE`). */
      readonly kind: 'tcp';
      readonly dial: SocketAddr;
      readonly destinationWorkload: Workload;
      readonly destinationService?: Service;
    }
  | {
      readonly kind: 'hbone';
      readonly route: UpstreamRoute;
      /** TCP target: the pod's or waypoint's HBONE port. */
      readonly dial: SocketAddr;
      /** CONNECT `:authority`: `podIP:targetPort`, or the original `ip:port` through a waypoint. */
      readonly authority: string;
      /** Any of these SANs is acceptable on the peer certificate. */
      readonly expectedIdentities: readonly Identity[];
      readonly destinationWorkload: Workload;
      /** For a workload waypoint, the pod the client addressed. */
      readonly targetWorkload?: Workload;
      readonly destinationService?: Service;
    }
  | {
      /** HBONE inside HBONE through the destination network's east-west gateway. */
      readonly kind: 'double-hbone';
      readonly route: 'direct' | 'service-waypoint';
      /** The gateway's HBONE address. */
      readonly dial: SocketAddr;
      /** `<service hostname>:<service port>`, for both layers. */
      readonly authority: string;
      /** SANs for the outer (gateway) TLS. */
      readonly expectedIdentities: readonly Identity[];
      /** SANs for the inner TLS: the service's `subject_alt_names`. */
      readonly finalIdentities: readonly Identity[];
      /** The gateway workload. */
      readonly destinationWorkload: Workload;
      /** The endpoint or waypoint on the remote network. */
      readonly finalWorkload: Workload;
      readonly destinationService: Service;
    };

/** Endpoint filtering differs when resolving a waypoint service (ztunnel `ServiceResolutionMode`). */
export type ResolutionMode = 'standard' | 'waypoint';

export type EndpointSelection =
  | {
      readonly ok: true;
      readonly endpoint: Endpoint;
      readonly workload: Workload;
      /** Port on the endpoint: its own mapping, else the service's target port. */
      readonly targetPort: number;
    }
  | {
      readonly ok: false;
      readonly code: 'SERVICE_PORT_UNKNOWN' | 'NO_HEALTHY_UPSTREAM';
      readonly message: string;
    };

interface ResolvedOptions {
  readonly random: () => number;
  readonly hbonePort: number;
  readonly illegalPorts: readonly number[];
  readonly resolveHostname: (hostname: string) => readonly string[] | undefined;
}

function resolveOptions(o: RoutingOptions): ResolvedOptions {
  return {
    random: o.random ?? Math.random,
    hbonePort: o.hbonePort ?? DEFAULT_HBONE_PORT,
    illegalPorts: o.illegalPorts ?? DEFAULT_ILLEGAL_PORTS,
    resolveHostname: o.resolveHostname ?? (() => undefined),
  };
}

/** Picks an index with probability proportional to its weight; zero weights are never picked. */
export function pickWeighted<T>(
  items: readonly T[],
  weight: (t: T) => number,
  random: () => number,
): T | undefined {
  let total = 0;
  for (const item of items) total += Math.max(0, weight(item));
  if (total <= 0) return undefined;
  let r = random() * total;
  for (const item of items) {
    const w = Math.max(0, weight(item));
    if (w === 0) continue;
    if (r < w) return item;
    r -= w;
  }
  // Only reachable through floating-point rounding at the top end.
  for (let i = items.length - 1; i >= 0; i--) {
    const item = items[i] as T;
    if (weight(item) > 0) return item;
  }
  return undefined;
}

function scopeMatches(scope: LoadBalancerScope, src: Workload, dst: Workload): boolean {
  switch (scope) {
    case 'Region':
      return src.locality.region === dst.locality.region;
    case 'Zone':
      return src.locality.zone === dst.locality.zone;
    case 'Subzone':
      return src.locality.subzone === dst.locality.subzone;
    case 'Node':
      return src.node === dst.node;
    case 'Cluster':
      return src.clusterId === dst.clusterId;
    case 'Network':
      return src.network === dst.network;
  }
}

/**
 * Chooses an endpoint of `service` for a connection to `servicePort` from `source` (ztunnel
 * `load_balance`): drops endpoints whose workload is unknown, unhealthy (unless ALLOW_ALL),
 * unreachable (no address and no usable network gateway) or without the port; with STRICT or
 * FAILOVER ranks them by how many leading routing-preference scopes match the source, STRICT
 * keeping only full matches and both keeping the best rank; then picks at random weighted by
 * capacity.
 */
export function selectEndpoint(
  state: ProxyState,
  source: Workload,
  service: Service,
  servicePort: number,
  options: { readonly mode?: ResolutionMode; readonly random?: () => number } = {},
): EndpointSelection {
  const mode = options.mode ?? 'standard';
  const random = options.random ?? Math.random;
  const svcPort = service.ports.get(servicePort);
  if (mode === 'standard' && svcPort === undefined) {
    return {
      ok: false,
      code: 'SERVICE_PORT_UNKNOWN',
      message: `service ${service.key} has no port ${servicePort}`,
    };
  }
  const candidates: { endpoint: Endpoint; workload: Workload }[] = [];
  for (const endpoint of state.serviceEndpoints(service).values()) {
    if (!acceptsEndpointHealth(service, endpoint.status)) continue;
    const workload = state.findWorkloadByUid(endpoint.workloadUid);
    if (workload === undefined) continue;
    const hasAddress = workload.workloadIps.length > 0 || workload.hostname !== '';
    // WDS is the same for every client, so a same-network workload may carry a gateway it must
    // not be reached through; an address-less workload is usable only across networks.
    if (!hasAddress && (workload.network === source.network || workload.networkGateway === undefined))
      continue;
    if (mode === 'standard') {
      if ((svcPort?.targetPort ?? 0) === 0 && !endpoint.port.has(servicePort)) continue;
    } else if (svcPort === undefined && workload.applicationTunnel === undefined) {
      // A waypoint without the HBONE port on its service is only usable with an app tunnel.
      continue;
    }
    candidates.push({ endpoint, workload });
  }
  let pool = candidates;
  const lb = service.loadBalancer;
  if (lb !== undefined && (lb.mode === 'Strict' || lb.mode === 'Failover')) {
    // Rank = how many leading scopes match: [network, region, zone] matching network and region
    // but not zone is rank 2.
    let best = -1;
    pool = [];
    for (const c of candidates) {
      let rank = 0;
      for (const scope of lb.routingPreferences) {
        if (!scopeMatches(scope, source, c.workload)) break;
        rank++;
      }
      if (lb.mode === 'Strict' && rank !== lb.routingPreferences.length) continue;
      if (rank > best) {
        best = rank;
        pool = [];
      }
      if (rank === best) pool.push(c);
    }
  }
  const chosen = pickWeighted(pool, (c) => c.workload.capacity, random);
  if (chosen === undefined) {
    return {
      ok: false,
      code: 'NO_HEALTHY_UPSTREAM',
      message: `service ${service.key} has no usable endpoint for port ${servicePort}`,
    };
  }
  const svcTarget = svcPort?.targetPort ?? 0;
  const targetPort =
    chosen.endpoint.port.get(servicePort) ??
    (svcTarget > 0
      ? svcTarget
      : chosen.workload.applicationTunnel?.port !== undefined
        ? servicePort
        : undefined);
  if (targetPort === undefined) {
    return {
      ok: false,
      code: 'NO_HEALTHY_UPSTREAM',
      message: `service ${service.key} port ${servicePort} has no target port on workload ${chosen.workload.uid}`,
    };
  }
  return { ok: true, endpoint: chosen.endpoint, workload: chosen.workload, targetPort };
}

/** The waypoint a service-addressed connection goes through: weighted choice, else the primary. */
export function chooseServiceWaypoint(service: Service, random: () => number): GatewayAddress | undefined {
  if (service.weightedWaypoints.length > 0) {
    const w = pickWeighted<WeightedWaypoint>(service.weightedWaypoints, (x) => x.weight, random);
    if (w !== undefined) return w.destination;
  }
  return service.waypoint;
}

/** A workload (and port) chosen for a destination, before an IP is picked. */
interface UpstreamParts {
  readonly workload: Workload;
  readonly port: number;
  readonly service?: Service;
}

type FindResult =
  | { readonly kind: 'parts'; readonly parts: UpstreamParts }
  | { readonly kind: 'original-destination' }
  | { readonly kind: 'none'; readonly failure?: EndpointSelection & { ok: false } };

/** A next hop with its IP picked. `ip` is undefined only for a remote workload behind a gateway. */
interface Resolved extends UpstreamParts {
  readonly ip: string | undefined;
}

// ztunnel `find_upstream`: a VIP (load-balanced) first, else a workload IP.
function findUpstream(
  state: ProxyState,
  network: string,
  source: Workload,
  addr: SocketAddr,
  mode: ResolutionMode,
  random: () => number,
): FindResult {
  const service = state.findServiceByVip(network, addr.ip);
  if (service !== undefined) {
    if (service.loadBalancer?.mode === 'Passthrough') return { kind: 'original-destination' };
    const sel = selectEndpoint(state, source, service, addr.port, { mode, random });
    if (!sel.ok) return { kind: 'none', failure: sel };
    return { kind: 'parts', parts: { workload: sel.workload, port: sel.targetPort, service } };
  }
  const workload = state.findWorkloadByAddress(network, addr.ip);
  return workload === undefined ? { kind: 'none' } : { kind: 'parts', parts: { workload, port: addr.port } };
}

// ztunnel `pick_workload_destination_or_resolve`: the addressed IP if it is the workload's, else
// one allowed by the service's IP families, preferring the family of the original destination.
function pickWorkloadIp(
  parts: UpstreamParts,
  target: SocketAddr,
  opts: ResolvedOptions,
): Resolved | RoutingError {
  const wl = parts.workload;
  if (wl.workloadIps.includes(target.ip)) return { ...parts, ip: target.ip };
  const families = parts.service?.ipFamilies;
  const allowed = wl.workloadIps.filter(
    (ip) => families === undefined || families === 'Dual' || (families === 'IPv4') === (ipFamily(ip) === 4),
  );
  const wanted = ipFamily(target.ip);
  const ip = allowed.find((a) => ipFamily(a) === wanted) ?? allowed[0];
  if (ip !== undefined) return { ...parts, ip };
  if (wl.hostname === '') {
    if (wl.networkGateway !== undefined) return { ...parts, ip: undefined };
    return new RoutingError('NO_VALID_DESTINATION', `workload ${wl.uid} has no suitable IP for routing`);
  }
  const resolved = (opts.resolveHostname(wl.hostname) ?? [])
    .map((a) => normalizeIp(a))
    .filter((a): a is string => a !== undefined);
  if (resolved.length === 0) {
    return new RoutingError(
      'HOSTNAME_UNRESOLVED',
      `workload ${wl.uid} is addressed by hostname ${wl.hostname}, which has no resolved address yet`,
    );
  }
  const matching = resolved.filter((a) => ipFamily(a) === wanted);
  const pool = matching.length > 0 ? matching : resolved;
  return { ...parts, ip: pool[Math.min(pool.length - 1, Math.floor(opts.random() * pool.length))] };
}

/** The workload's identity plus the service's `subject_alt_names` (invalid SANs are skipped, as ztunnel does). */
function upstreamIdentities(workload: Workload, service: Service | undefined): readonly Identity[] {
  const out: Identity[] = [workload.identity];
  const seen = new Set([formatIdentity(workload.identity)]);
  for (const id of serviceSans(service)) {
    const s = formatIdentity(id);
    if (!seen.has(s)) {
      seen.add(s);
      out.push(id);
    }
  }
  return Object.freeze(out);
}

function serviceSans(service: Service | undefined): readonly Identity[] {
  if (service === undefined) return [];
  return service.subjectAltNames.map(tryParseIdentity).filter((id): id is Identity => id !== undefined);
}

// ztunnel `fetch_waypoint` / `fetch_network_gateway`: a hostname finds a Service (load-balanced
// over its endpoints on the gateway's HBONE port) or a Workload; an address is looked up like
// any destination. `undefined` means "not found", reported by the caller with its own code.
function resolveGateway(
  state: ProxyState,
  gateway: GatewayAddress,
  source: Workload,
  originalDestination: SocketAddr,
  mode: ResolutionMode,
  opts: ResolvedOptions,
): Resolved | RoutingError | undefined {
  const dest = gateway.destination;
  if (dest.kind === 'hostname') {
    const found = state.findHostname(dest.namespace, dest.hostname);
    if (found === undefined) return undefined;
    let parts: UpstreamParts;
    if (found.kind === 'service') {
      const sel = selectEndpoint(state, source, found.service, gateway.hboneMtlsPort, {
        mode,
        random: opts.random,
      });
      if (!sel.ok) return undefined;
      parts = { workload: sel.workload, port: sel.targetPort, service: found.service };
    } else {
      parts = { workload: found.workload, port: gateway.hboneMtlsPort };
    }
    // A hostname gateway adapts to the caller's IP family.
    return pickWorkloadIp(parts, originalDestination, opts);
  }
  const target = { ip: dest.address.ip, port: gateway.hboneMtlsPort };
  const found = findUpstream(state, dest.address.network, source, target, mode, opts.random);
  if (found.kind !== 'parts') return undefined;
  return pickWorkloadIp(found.parts, target, opts);
}

function reject(code: RoutingError['code'], message: string): UpstreamDecision {
  return { kind: 'reject', error: new RoutingError(code, message) };
}

/**
 * Whether the connection comes from the destination's own waypoint: the source identity and IP
 * belong to a workload behind `destination.waypoint` (ztunnel `check_from_waypoint`). Such
 * traffic must not be sent to the waypoint again.
 */
export function isFromWaypoint(
  state: ProxyState,
  destination: Workload,
  sourceIdentity: Identity | undefined,
  sourceIp: string,
): boolean {
  if (destination.waypoint === undefined || sourceIdentity === undefined) return false;
  const ip = normalizeIp(sourceIp);
  const isWaypoint = (w: Workload) =>
    identityEquals(w.identity, sourceIdentity) && ip !== undefined && w.workloadIps.includes(ip);
  const found = state.findDestination(destination.waypoint.destination);
  if (found === undefined) return false;
  if (found.kind === 'workload') return isWaypoint(found.workload);
  for (const ep of state.serviceEndpoints(found.service).values()) {
    const w = state.findWorkloadByUid(ep.workloadUid);
    if (w !== undefined && isWaypoint(w)) return true;
  }
  return false;
}

// ztunnel `build_request_through_gateway`: the next hop is on another network, so go through its
// network gateway, naming the service in both CONNECTs.
function throughGateway(
  state: ProxyState,
  request: OutboundRequest,
  upstream: Resolved,
  service: Service,
  destination: SocketAddr,
  route: 'direct' | 'service-waypoint',
  opts: ResolvedOptions,
): UpstreamDecision {
  const gatewayAddress = upstream.workload.networkGateway;
  if (gatewayAddress === undefined) {
    return reject(
      'NO_VALID_DESTINATION',
      `workload ${upstream.workload.uid} is on network ${JSON.stringify(upstream.workload.network)}, which has no network gateway`,
    );
  }
  const gw = resolveGateway(state, gatewayAddress, request.source, destination, 'standard', opts);
  if (gw instanceof RoutingError) return { kind: 'reject', error: gw };
  if (gw === undefined || gw.ip === undefined) {
    return reject(
      'UNKNOWN_NETWORK_GATEWAY',
      `network gateway ${formatGatewayDestination(gatewayAddress.destination)} for workload ${upstream.workload.uid} not found`,
    );
  }
  return {
    kind: 'double-hbone',
    route,
    dial: { ip: gw.ip, port: gw.port },
    authority: `${service.hostname}:${destination.port}`,
    expectedIdentities: upstreamIdentities(gw.workload, gw.service),
    finalIdentities: Object.freeze([...serviceSans(upstream.service)]),
    destinationWorkload: gw.workload,
    finalWorkload: upstream.workload,
    destinationService: service,
  };
}

/**
 * Decides where an outbound connection goes (spec §1.5):
 * 1. a loopback destination on an illegal port is a self-call;
 * 2. a Service VIP with a waypoint goes to the waypoint (weighted choice), authority = the VIP;
 * 3. an unknown destination or PASSTHROUGH service is passed through as plain TCP; a service
 *    without a usable endpoint is rejected;
 * 4. an endpoint on another network goes through its network gateway (double HBONE);
 * 5. a pod with a workload waypoint, not addressed through a service and not called by that
 *    waypoint, goes to the waypoint, authority = the pod ip:port;
 * 6. otherwise HBONE to `endpointIP:15008` with authority `endpointIP:targetPort`, or plain TCP
 *    to `endpointIP:targetPort` for `tunnel_protocol NONE`.
 */
export function resolveUpstream(
  state: ProxyState,
  request: OutboundRequest,
  options: RoutingOptions = {},
): UpstreamDecision {
  const opts = resolveOptions(options);
  const ip = normalizeIp(request.destination.ip);
  if (ip === undefined) {
    return reject(
      'NO_VALID_DESTINATION',
      `original destination ${request.destination.ip} is not an IP address`,
    );
  }
  const destination: SocketAddr = { ip, port: request.destination.port };
  const { source } = request;

  // 1. Self-call.
  if (isLoopback(ip) && opts.illegalPorts.includes(destination.port)) {
    return reject(
      'SELF_CALL',
      `connection to ${formatSocketAddr(destination)} would loop into ztunnel itself`,
    );
  }

  // 2. Service VIP with a waypoint.
  const network = source.network;
  let service: Service | undefined;
  const addressed = state.findAddress(network, ip);
  if (addressed?.kind === 'service') {
    service = addressed.service;
    const waypoint = chooseServiceWaypoint(service, opts.random);
    if (waypoint !== undefined) {
      const wp = resolveGateway(state, waypoint, source, destination, 'waypoint', opts);
      if (wp instanceof RoutingError) return { kind: 'reject', error: wp };
      if (wp === undefined) {
        return reject(
          'UNKNOWN_WAYPOINT',
          `waypoint ${formatGatewayDestination(waypoint.destination)} of service ${service.key} not found`,
        );
      }
      if (wp.workload.network !== source.network) {
        return throughGateway(state, request, wp, service, destination, 'service-waypoint', opts);
      }
      if (wp.ip === undefined) {
        return reject('NO_VALID_DESTINATION', `waypoint workload ${wp.workload.uid} has no address`);
      }
      return {
        kind: 'hbone',
        route: 'service-waypoint',
        dial: { ip: wp.ip, port: wp.port },
        authority: formatSocketAddr(destination),
        expectedIdentities: upstreamIdentities(wp.workload, wp.service),
        destinationWorkload: wp.workload,
        destinationService: service,
      };
    }
  }

  // 3. Upstream lookup; unknown and PASSTHROUGH destinations keep the original address.
  const found = findUpstream(state, network, source, destination, 'standard', opts.random);
  if (found.kind !== 'parts') {
    if (found.kind === 'none' && service !== undefined) {
      return reject(
        found.failure?.code ?? 'NO_HEALTHY_UPSTREAM',
        found.failure?.message ?? `service ${service.key} has no healthy endpoint`,
      );
    }
    return {
      kind: 'passthrough',
      dial: destination,
      reason: found.kind === 'original-destination' ? 'passthrough-service' : 'unknown-destination',
    };
  }
  const upstream = pickWorkloadIp(found.parts, destination, opts);
  if (upstream instanceof RoutingError) return { kind: 'reject', error: upstream };

  // 4. Another network: only reachable as a service, through the gateway.
  if (upstream.workload.network !== source.network) {
    if (service === undefined) {
      return reject(
        'REMOTE_WORKLOAD_WITHOUT_SERVICE',
        `workload ${upstream.workload.uid} on network ${JSON.stringify(upstream.workload.network)} was not addressed through a service`,
      );
    }
    return throughGateway(state, request, upstream, service, destination, 'direct', opts);
  }

  // 5. Workload waypoint.
  if (
    service === undefined &&
    upstream.workload.waypoint !== undefined &&
    !isFromWaypoint(state, upstream.workload, source.identity, request.sourceIp)
  ) {
    const waypoint = upstream.workload.waypoint;
    const wp = resolveGateway(state, waypoint, source, destination, 'waypoint', opts);
    if (wp instanceof RoutingError) return { kind: 'reject', error: wp };
    if (wp === undefined) {
      return reject(
        'UNKNOWN_WAYPOINT',
        `waypoint ${formatGatewayDestination(waypoint.destination)} of workload ${upstream.workload.uid} not found`,
      );
    }
    if (wp.ip === undefined) {
      return reject('NO_VALID_DESTINATION', `waypoint workload ${wp.workload.uid} has no address`);
    }
    return {
      kind: 'hbone',
      route: 'workload-waypoint',
      dial: { ip: wp.ip, port: wp.port },
      authority: formatSocketAddr(destination),
      expectedIdentities: upstreamIdentities(wp.workload, wp.service),
      destinationWorkload: wp.workload,
      targetWorkload: upstream.workload,
      ...(upstream.service === undefined ? {} : { destinationService: upstream.service }),
    };
  }

  // 6. Direct.
  if (upstream.ip === undefined) {
    return reject('NO_VALID_DESTINATION', `workload ${upstream.workload.uid} has no address`);
  }
  const target = { ip: upstream.ip, port: upstream.port };
  const svc = upstream.service === undefined ? {} : { destinationService: upstream.service };
  if (upstream.workload.protocol === 'TCP') {
    return { kind: 'tcp', dial: target, destinationWorkload: upstream.workload, ...svc };
  }
  return {
    kind: 'hbone',
    route: 'direct',
    dial: { ip: upstream.ip, port: opts.hbonePort },
    authority: formatSocketAddr(target),
    expectedIdentities: upstreamIdentities(upstream.workload, upstream.service),
    destinationWorkload: upstream.workload,
    ...svc,
  };
}

import type { Gateway, LabelSelector, ObjectMeta } from '@ambient/common/config/objects';
import {
  ApplicationTunnel_Protocol,
  type GatewayAddress,
  GatewayAddressSchema,
  type WeightedWaypoint,
  WeightedWaypointSchema,
} from '@ambient/common/gen/istio/workload/workload_pb';
import { create } from '@bufbuild/protobuf';
import { parseIp } from './ip.ts';
import {
  ANNOTATIONS,
  LABELS,
  labelSelectorMatches,
  MANAGED_EAST_WEST_CONTROLLER,
  MANAGED_MESH_CONTROLLER,
  WAYPOINT_GATEWAY_CLASS,
} from './labels.ts';
import type { MeshSettings } from './settings.ts';
import type { AmbientInputs } from './state.ts';

/** HBONE port of every waypoint; istiod hard-codes it too. */
export const WAYPOINT_HBONE_PORT = 15008;
/** Listener protocol of a sandwiched waypoint's PROXY-protocol listener. */
const SANDWICH_LISTENER_PROTOCOL = 'istio.io/PROXY';

/** Traffic a waypoint accepts (`istio.io/waypoint-for`); other values bind nothing. */
export type TrafficType = 'service' | 'workload' | 'all' | 'none';

/** A ready waypoint: an `istio-waypoint` Gateway that has a status address. */
export interface Waypoint {
  readonly namespace: string;
  readonly name: string;
  /** What Workload/Service `waypoint` fields point at. */
  readonly address: GatewayAddress;
  readonly trafficType: string;
  /** Which namespaces may bind (listener `allowedRoutes.namespaces`). */
  readonly allowedRoutes: { readonly from: 'Same' | 'All' | 'Selector'; readonly selector?: LabelSelector };
  /** Sandwich mode: how ztunnel hands inbound traffic to this waypoint's own pods. */
  readonly inboundBinding?: { readonly protocol: ApplicationTunnel_Protocol; readonly port: number };
}

/** Why an object that asked for a waypoint did not get one (istiod's `Report*` messages). */
export interface WaypointError {
  readonly reason: 'WaypointIsNotReady' | 'AttachmentDenied' | 'UnsupportedTrafficType' | string;
  readonly message: string;
}

/** The outcome of resolving an object's waypoint: bound, or not with the reason (or neither). */
export interface WaypointBinding {
  readonly waypoint?: Waypoint;
  readonly error?: WaypointError;
}

function notReady(key: string): WaypointError {
  return { reason: 'WaypointIsNotReady', message: `waypoint ${JSON.stringify(key)} is not ready` };
}

function attachmentDenied(key: string): WaypointError {
  return {
    reason: 'AttachmentDenied',
    message: `we are not permitted to attach to waypoint ${JSON.stringify(key)} (missing allowedRoutes?)`,
  };
}

function unsupportedTrafficType(key: string, type: string): WaypointError {
  return {
    reason: 'UnsupportedTrafficType',
    message: `attempting to bind to traffic type ${JSON.stringify(type)} which the waypoint ${JSON.stringify(key)} does not support`,
  };
}

function keyOf(w: { namespace: string; name: string }): string {
  return `${w.namespace}/${w.name}`;
}

function gatewayAddress(gw: Gateway, settings: MeshSettings): GatewayAddress | undefined {
  const ns = gw.metadata.namespace ?? '';
  const addrs = gw.status?.addresses ?? [];
  // A hostname is the stable key (it is the Service's xDS name); IPs can be reallocated.
  for (const a of addrs) {
    if (a.type === 'Hostname') {
      return create(GatewayAddressSchema, {
        destination: { case: 'hostname', value: { namespace: ns, hostname: a.value } },
        hboneMtlsPort: WAYPOINT_HBONE_PORT,
      });
    }
  }
  for (const a of addrs) {
    // The Gateway API defaults an address without a type to IPAddress.
    if (a.type !== undefined && a.type !== 'IPAddress') continue;
    const ip = parseIp(a.value);
    if (!ip) continue;
    return create(GatewayAddressSchema, {
      destination: { case: 'address', value: { network: settings.network, address: ip } },
      hboneMtlsPort: WAYPOINT_HBONE_PORT,
    });
  }
  return undefined;
}

function inboundBinding(gw: Gateway): Waypoint['inboundBinding'] {
  const ann = gw.metadata.annotations?.[ANNOTATIONS.waypointInboundBinding];
  if (ann === undefined) return undefined;
  const parts = ann.split('/');
  if (parts.length > 2) return undefined;
  let protocol: ApplicationTunnel_Protocol;
  if (parts[0] === 'NONE') protocol = ApplicationTunnel_Protocol.NONE;
  else if (parts[0] === 'PROXY') protocol = ApplicationTunnel_Protocol.PROXY;
  else return undefined;
  let port = 0;
  if (parts.length === 2) {
    const n = Number(parts[1]);
    // istiod logs an unparsable port and keeps 0 (no override).
    port = Number.isInteger(n) && n >= 0 && n <= 0xffffffff ? n : 0;
  }
  return { protocol, port };
}

function allowedRoutes(gw: Gateway, binding: Waypoint['inboundBinding']): Waypoint['allowedRoutes'] {
  const listeners = gw.spec?.listeners ?? [];
  let listener: (typeof listeners)[number] | undefined;
  if (binding) {
    listener = listeners.find((l) =>
      binding.port !== 0
        ? l.port === binding.port
        : binding.protocol === ApplicationTunnel_Protocol.PROXY && l.protocol === SANDWICH_LISTENER_PROTOCOL,
    );
  }
  listener ??= listeners.find((l) => l.protocol === 'HBONE' && l.port === WAYPOINT_HBONE_PORT);
  const ns = listener?.allowedRoutes?.namespaces;
  if (!ns) return { from: 'Same' };
  const from = ns.from ?? 'Same';
  return from === 'Selector' ? { from, selector: ns.selector ?? {} } : { from };
}

/**
 * Resolves a Gateway into a waypoint, or undefined when it is not one: a class other than
 * `istio-waypoint`, or no status address yet (istiod only binds once the waypoint has a ready pod).
 * `istio.io/waypoint-for` defaults to `service`. The GatewayClass's own label is not consulted:
 * the class is fixed, and istiod's built-in class carries no such label.
 */
export function waypointFromGateway(gw: Gateway, settings: MeshSettings): Waypoint | undefined {
  if (gw.spec?.gatewayClassName !== WAYPOINT_GATEWAY_CLASS) return undefined;
  const address = gatewayAddress(gw, settings);
  if (!address) return undefined;
  const binding = inboundBinding(gw);
  return {
    namespace: gw.metadata.namespace ?? '',
    name: gw.metadata.name,
    address,
    trafficType: gw.metadata.labels?.[LABELS.waypointFor] ?? 'service',
    allowedRoutes: allowedRoutes(gw, binding),
    ...(binding ? { inboundBinding: binding } : {}),
  };
}

/** The waypoint an object names with `istio.io/use-waypoint[-namespace]`; `none` opts out. */
export function useWaypointLabel(
  meta: Pick<ObjectMeta, 'labels'>,
  defaultNamespace: string,
): { ref?: { namespace: string; name: string }; none: boolean } {
  const labels = meta.labels;
  if (!labels || !Object.hasOwn(labels, LABELS.useWaypoint)) return { none: false };
  const name = labels[LABELS.useWaypoint] as string;
  // Istio reserves "none": a waypoint of that name cannot be used.
  if (name === 'none') return { none: true };
  return { ref: { namespace: labels[LABELS.useWaypointNamespace] ?? defaultNamespace, name }, none: false };
}

/**
 * The waypoint keys (`ns/name`) an object asks for — its primary (own label, else its
 * namespace's) and a canary — whether or not those waypoints exist yet. The index records them so
 * a Gateway change reaches everything waiting for it.
 */
export function requestedWaypoints(meta: ObjectMeta, inputs: AmbientInputs): string[] {
  const ns = meta.namespace ?? '';
  const own = useWaypointLabel(meta, ns);
  if (own.none) return [];
  const nsMeta = own.ref ? undefined : inputs.namespace(ns)?.metadata;
  const primary = own.ref ?? (nsMeta ? useWaypointLabel(nsMeta, ns).ref : undefined);
  const out: string[] = [];
  if (primary) out.push(keyOf(primary));
  const canary = canaryRef(meta, nsMeta, ns);
  if (canary) out.push(keyOf(canary));
  return out;
}

function allowsAttachment(w: Waypoint, namespace: string, inputs: AmbientInputs): boolean {
  switch (w.allowedRoutes.from) {
    case 'All':
      return true;
    case 'Selector':
      return labelSelectorMatches(
        w.allowedRoutes.selector,
        inputs.namespace(namespace)?.metadata.labels ?? {},
      );
    default:
      return w.namespace === namespace;
  }
}

/** istiod's `fetchWaypointForTarget`: the object's own label wins over its namespace's. */
function waypointForTarget(meta: ObjectMeta, inputs: AmbientInputs): WaypointBinding {
  const ns = meta.namespace ?? '';
  const own = useWaypointLabel(meta, ns);
  if (own.none) return {};
  let ref = own.ref;
  if (!ref) {
    const nsObj = inputs.namespace(ns);
    if (!nsObj) return {};
    ref = useWaypointLabel(nsObj.metadata, ns).ref;
    if (!ref) return {};
  }
  const w = inputs.waypoint(ref.namespace, ref.name);
  if (!w) return { error: notReady(keyOf(ref)) };
  if (!allowsAttachment(w, ns, inputs)) return { error: attachmentDenied(keyOf(w)) };
  return { waypoint: w };
}

function isManagedGateway(meta: ObjectMeta): boolean {
  const managed = meta.labels?.[LABELS.gatewayManaged];
  return managed === MANAGED_MESH_CONTROLLER || managed === MANAGED_EAST_WEST_CONTROLLER;
}

/** The waypoint for a Service or ServiceEntry (traffic type `service` or `all`). */
export function waypointForService(meta: ObjectMeta, inputs: AmbientInputs): WaypointBinding {
  // A waypoint's (or east-west gateway's) own Service never gets a waypoint.
  if (isManagedGateway(meta)) return {};
  const b = waypointForTarget(meta, inputs);
  if (!b.waypoint) return b;
  if (b.waypoint.trafficType === 'service' || b.waypoint.trafficType === 'all') return b;
  return { error: unsupportedTrafficType(keyOf(b.waypoint), 'service') };
}

/** The waypoint for a Pod or WorkloadEntry (traffic type `workload` or `all`). */
export function waypointForWorkload(meta: ObjectMeta, inputs: AmbientInputs): WaypointBinding {
  const b = waypointForTarget(meta, inputs);
  if (!b.waypoint) return b;
  if (b.waypoint.trafficType === 'workload' || b.waypoint.trafficType === 'all') return b;
  // A namespace-wide binding to a service waypoint is normal, not an error for the workload.
  if (!Object.hasOwn(meta.labels ?? {}, LABELS.useWaypoint)) return {};
  return { error: unsupportedTrafficType(keyOf(b.waypoint), 'workload') };
}

/**
 * Whether a workload is itself a waypoint (or east-west gateway) instance, which never gets a
 * waypoint. istiod decides by the `gateway-name` label naming a ready waypoint; the managed label
 * is also accepted so a waypoint pod is never bound while its Gateway is not yet ready.
 */
export function waypointInstanceOf(
  meta: ObjectMeta,
  inputs: AmbientInputs,
): { instance: boolean; waypoint?: Waypoint } {
  const gwName = meta.labels?.[LABELS.gatewayName];
  const w = gwName ? inputs.waypoint(meta.namespace ?? '', gwName) : undefined;
  if (w) return { instance: true, waypoint: w };
  return { instance: isManagedGateway(meta) };
}

function canaryRef(
  meta: ObjectMeta,
  nsMeta: ObjectMeta | undefined,
  defaultNamespace: string,
): { namespace: string; name: string } | undefined {
  let labels = meta.labels ?? {};
  if (!Object.hasOwn(labels, LABELS.useWaypointCanary) && nsMeta?.labels) {
    if (Object.hasOwn(nsMeta.labels, LABELS.useWaypointCanary)) labels = nsMeta.labels;
  }
  const name = labels[LABELS.useWaypointCanary];
  if (!name || name === 'none') return undefined;
  return { namespace: labels[LABELS.useWaypointCanaryNamespace] ?? defaultNamespace, name };
}

/**
 * Weighted waypoints for a Service with a canary (`istio.io/use-waypoint-canary`, weight from
 * the annotation `istio.io/use-waypoint-canary-weight`, 0–100): `[{primary, 100-w}, {canary, w}]`.
 * Canary labels are read from the level (object or namespace) the primary came from.
 */
export function weightedWaypoints(
  meta: ObjectMeta,
  primary: Waypoint | undefined,
  inputs: AmbientInputs,
): { weighted: WeightedWaypoint[]; error?: WaypointError } {
  if (!primary) return { weighted: [] };
  const ns = meta.namespace ?? '';
  const own = useWaypointLabel(meta, ns);
  const nsMeta = own.ref ? undefined : inputs.namespace(ns)?.metadata;
  const ref = canaryRef(meta, nsMeta, ns);
  if (!ref) return { weighted: [] };
  const key = keyOf(ref);
  if (key === keyOf(primary)) {
    return {
      weighted: [],
      error: {
        reason: 'CanarySameAsPrimary',
        message: `canary waypoint ${JSON.stringify(key)} must differ from the primary waypoint`,
      },
    };
  }
  const ann =
    meta.annotations?.[ANNOTATIONS.useWaypointCanaryWeight] ??
    nsMeta?.annotations?.[ANNOTATIONS.useWaypointCanaryWeight];
  const weight = ann === undefined ? 0 : /^[0-9]+$/.test(ann) ? Number(ann) : Number.NaN;
  if (!(weight >= 0 && weight <= 100)) {
    return {
      weighted: [],
      error: {
        reason: 'CanaryInvalidWeight',
        message: `canary waypoint ${JSON.stringify(key)} has an invalid weight; must be an integer in [0,100]`,
      },
    };
  }
  const canary = inputs.waypoint(ref.namespace, ref.name);
  if (!canary) return { weighted: [], error: notReady(key) };
  if (!allowsAttachment(canary, ns, inputs)) return { weighted: [], error: attachmentDenied(key) };
  if (canary.trafficType !== 'service' && canary.trafficType !== 'all') {
    return { weighted: [], error: unsupportedTrafficType(key, 'service') };
  }
  return {
    weighted: [
      create(WeightedWaypointSchema, { destination: primary.address, weight: 100 - weight }),
      create(WeightedWaypointSchema, { destination: canary.address, weight }),
    ],
  };
}

import { MeshError } from '../errors.ts';

/**
 * Why a WDS resource (Address, Workload, Service, Authorization) could not become a model
 * object. The xDS client NACKs the resource with the message; the code is stable.
 */
export type ModelErrorCode =
  /** The Address oneof carries neither a Workload nor a Service. */
  | 'EMPTY_ADDRESS'
  /** The xDS resource name is not the key its content implies (uid, `ns/hostname`, `ns/name`). */
  | 'RESOURCE_NAME_MISMATCH'
  | 'MISSING_UID'
  | 'MISSING_NAME'
  | 'MISSING_NAMESPACE'
  | 'MISSING_HOSTNAME'
  /** Workload namespace / trust domain / service account do not form a valid SPIFFE identity. */
  | 'INVALID_IDENTITY'
  /** `tunnel_protocol = LEGACY_ISTIO_MTLS`, which ztunnel refuses (spec §1.5). */
  | 'LEGACY_ISTIO_MTLS'
  /** An enum value this implementation does not know (protobuf open enums keep unknown numbers). */
  | 'UNKNOWN_ENUM'
  /** IP bytes that are neither 4 nor 16 long. */
  | 'ADDRESS_LENGTH'
  /** A prefix length longer than the address family allows. */
  | 'INVALID_CIDR'
  /** A port outside 0..65535 (the wire type is uint32). */
  | 'PORT_RANGE'
  /** A GatewayAddress with neither hostname nor address, or a WeightedWaypoint without one. */
  | 'GATEWAY_DESTINATION_MISSING'
  /** A `Workload.services` key that is not `namespace/hostname`. */
  | 'NAMESPACED_HOSTNAME'
  /** A StringMatch with no match type; dropping it would widen the policy, so it is refused. */
  | 'EMPTY_STRING_MATCH'
  /** An update carried a name but no resource body. */
  | 'MISSING_RESOURCE'
  /** A second ProxyStateUpdater tried to claim a ProxyState that already has its writer. */
  | 'WRITER_ALREADY_CLAIMED';

/** A WDS resource that failed conversion into the model; the whole resource is rejected. */
export class ModelError extends MeshError<ModelErrorCode> {}

/** Why a connection has no upstream (spec §1.5); the code is the access log's `error`. */
export type RoutingErrorCode =
  /** Loopback destination on one of ztunnel's own ports (15001/15006/15008). */
  | 'SELF_CALL'
  /** Service-addressed, not PASSTHROUGH, and no endpoint survived selection. */
  | 'NO_HEALTHY_UPSTREAM'
  /** Service-addressed to a port the Service does not declare. */
  | 'SERVICE_PORT_UNKNOWN'
  /** A waypoint is configured but cannot be resolved to a reachable workload. */
  | 'UNKNOWN_WAYPOINT'
  /** An endpoint on another network has no network gateway, or that gateway cannot be resolved. */
  | 'UNKNOWN_NETWORK_GATEWAY'
  /** The chosen workload has no address usable from here. */
  | 'NO_VALID_DESTINATION'
  /** The chosen workload is addressed by DNS hostname and the caller has no resolved IP for it yet. */
  | 'HOSTNAME_UNRESOLVED'
  /** A workload on another network was reached without a Service (istiod or model bug). */
  | 'REMOTE_WORKLOAD_WITHOUT_SERVICE';

/** Carried inside a `reject` routing decision; callers throw or log it as they see fit. */
export class RoutingError extends MeshError<RoutingErrorCode> {}

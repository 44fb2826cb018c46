import type { EventEmitter } from 'node:events';

/**
 * One xDS resource ready to send: encoded once when it changes and shared by every connection,
 * so a push to N proxies costs N writes, not N encodings.
 */
export interface XdsResource {
  /** The xDS name: a Workload uid, `namespace/hostname` for a Service, `namespace/name` for an Authorization. */
  readonly name: string;
  /** A content hash of `value`; equal versions mean equal bytes. */
  readonly version: string;
  /** The serialized message of the resource type (e.g. `istio.workload.Address`), to wrap in an Any. */
  readonly value: Uint8Array;
  /** On-demand aliases (`<network>/<ip>`); empty for wildcard subscribers. */
  readonly aliases?: readonly string[];
}

/** What changed in one type: the names whose resource was added, changed or removed. */
export interface ResourcesUpdated {
  readonly typeUrl: string;
  readonly names: ReadonlySet<string>;
}

interface ResourceSourceEvents {
  updated: [update: ResourcesUpdated];
}

/**
 * The read side of the ambient index as the xDS server sees it: the current resources of each
 * type, plus an event naming what changed. `get` and `names` reflect the state after the event's
 * changes; a name absent from `get` was removed.
 */
export interface ResourceSource extends EventEmitter<ResourceSourceEvents> {
  typeUrls(): readonly string[];
  get(typeUrl: string, name: string): XdsResource | undefined;
  names(typeUrl: string): Iterable<string>;
}

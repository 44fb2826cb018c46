import { type Resource, ResourceSchema } from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { create } from '@bufbuild/protobuf';
import { type Any, AnySchema } from '@bufbuild/protobuf/wkt';
import type { VersionSnapshot } from './delta-watch.ts';
import type { ResourceSource, XdsResource } from './resources.ts';
import { shareListEncoding } from './response-encoding.ts';

/** What one delta response for one type carries. */
export interface DeltaPlan {
  readonly resources: readonly XdsResource[];
  readonly removed: readonly string[];
}

/** The parts of a {@link DeltaWatch} generation reads. */
export interface DeltaWatchView {
  readonly wildcard: boolean;
  subscribes(name: string): boolean;
  versionOf(name: string): string | undefined;
  knownNames(): Iterable<string>;
  explicitNames(): Iterable<string>;
}

/**
 * The resources of one type as a connection sees them: the source's when it serves the type,
 * none otherwise (a type nobody generates is answered as empty rather than left hanging).
 */
export interface TypeView {
  readonly typeUrl: string;
  get(name: string): XdsResource | undefined;
  names(): Iterable<string>;
}

export function typeView(source: ResourceSource, typeUrl: string): TypeView {
  if (!source.typeUrls().includes(typeUrl)) {
    return { typeUrl, get: () => undefined, names: () => [] };
  }
  return { typeUrl, get: (name) => source.get(typeUrl, name), names: () => source.names(typeUrl) };
}

export function isEmptyPlan(plan: DeltaPlan): boolean {
  return plan.resources.length === 0 && plan.removed.length === 0;
}

/**
 * Everything a connection lacks: on a stream's first request for the type (with the versions of
 * `initial_resource_versions` already seeded into the watch), or when wildcard is switched on.
 * Resources whose version the proxy holds are skipped; names it holds that no longer exist or
 * are no longer subscribed are removed; explicitly subscribed names that do not exist are listed
 * as removed too, which is how delta xDS says "does not exist" (`istio:pilot/pkg/xds/workload.go`).
 */
export function generateFullDeltas(view: TypeView, watch: DeltaWatchView): DeltaPlan {
  const resources: XdsResource[] = [];
  const removed = new Set<string>();
  const present = new Set<string>();
  const consider = (name: string, reportMissing: boolean): void => {
    const r = view.get(name);
    if (!r) {
      if (reportMissing) removed.add(name);
      return;
    }
    present.add(name);
    if (watch.versionOf(name) !== r.version) resources.push(r);
  };
  if (watch.wildcard) for (const name of view.names()) consider(name, false);
  for (const name of watch.explicitNames()) if (!present.has(name)) consider(name, true);
  for (const name of watch.knownNames()) {
    if (!present.has(name) && (!watch.subscribes(name) || !view.get(name))) removed.add(name);
  }
  return { resources, removed: [...removed] };
}

/**
 * The full push of a fresh wildcard watch (see `DeltaWatch.fresh`): every resource of the type.
 * It is the same for every such watch until the type changes, so the server builds it once and
 * shares it, with its versions map and its Resource envelopes (whose encoding is shared too).
 */
export interface WildcardSnapshot extends VersionSnapshot {
  readonly typeUrl: string;
  readonly resources: readonly XdsResource[];
  readonly envelopes: readonly Resource[];
}

export function wildcardSnapshot(view: TypeView): WildcardSnapshot {
  const resources: XdsResource[] = [];
  const versions = new Map<string, string>();
  for (const name of view.names()) {
    const r = view.get(name);
    if (!r) continue;
    resources.push(r);
    versions.set(name, r.version);
  }
  const envelopes = resources.map((r) => toDeltaResource(view.typeUrl, r, false));
  shareListEncoding(envelopes);
  return { typeUrl: view.typeUrl, resources, versions, envelopes };
}

/** The named resources for a connection: what was newly subscribed explicitly. */
export function generateSubscribedDeltas(
  view: TypeView,
  watch: DeltaWatchView,
  names: Iterable<string>,
): DeltaPlan {
  const resources: XdsResource[] = [];
  const removed: string[] = [];
  for (const name of names) {
    const r = view.get(name);
    if (!r) removed.push(name);
    else if (watch.versionOf(name) !== r.version) resources.push(r);
  }
  return { resources, removed };
}

/**
 * A push: of the changed names, those the connection subscribes to and whose version it lacks,
 * plus removals of changed names it holds that no longer exist.
 */
export function generateChangedDeltas(
  view: TypeView,
  watch: DeltaWatchView,
  changed: Iterable<string>,
): DeltaPlan {
  const resources: XdsResource[] = [];
  const removed: string[] = [];
  for (const name of changed) {
    if (!watch.subscribes(name)) continue;
    const r = view.get(name);
    const have = watch.versionOf(name);
    if (r) {
      if (have !== r.version) resources.push(r);
    } else if (have !== undefined) {
      removed.push(name);
    }
  }
  return { resources, removed };
}

// Keyed by the XdsResource object, which the source replaces when the resource changes: each
// resource's envelope is built once and shared by every connection and response.
const resourceMessages = new WeakMap<XdsResource, Resource>();
const anyMessages = new WeakMap<XdsResource, Any>();

/** `Any{type_url, value}` around the pre-encoded bytes; no re-encoding of the resource. */
export function toAny(typeUrl: string, r: XdsResource): Any {
  let any = anyMessages.get(r);
  if (!any || any.typeUrl !== typeUrl) {
    any = create(AnySchema, { typeUrl, value: r.value });
    anyMessages.set(r, any);
  }
  return any;
}

/**
 * The delta `Resource{name, version, resource}`. Aliases are only for explicit (on-demand)
 * subscribers; wildcard subscribers get the shared envelope without them.
 */
export function toDeltaResource(typeUrl: string, r: XdsResource, withAliases: boolean): Resource {
  if (withAliases && r.aliases && r.aliases.length > 0) {
    return create(ResourceSchema, {
      name: r.name,
      version: r.version,
      resource: toAny(typeUrl, r),
      aliases: [...r.aliases],
    });
  }
  let msg = resourceMessages.get(r);
  if (!msg || msg.resource?.typeUrl !== typeUrl) {
    msg = create(ResourceSchema, { name: r.name, version: r.version, resource: toAny(typeUrl, r) });
    resourceMessages.set(r, msg);
  }
  return msg;
}

import {
  type DeltaDiscoveryResponse,
  DeltaDiscoveryResponseSchema,
  type Resource,
  ResourceSchema,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { create, toBinary } from '@bufbuild/protobuf';

// `resources` is field 2 (length-delimited: tag byte 0x12) of DeltaDiscoveryResponse;
// `system_version_info` (1) is the only field before it, so writing 1, then 2, then the rest
// gives the field order of toBinary.
const RESOURCES_TAG = 0x12;

// Keyed by the Resource envelope, which generators.ts shares between every connection and
// response for as long as the resource is unchanged.
const encoded = new WeakMap<Resource, Uint8Array>();
// Keyed by a shared list of envelopes (a full push every fresh wildcard proxy gets): the
// encoding of the whole `resources` field, tags and lengths included.
const encodedLists = new WeakMap<readonly Resource[], Uint8Array | undefined>();

function encodedResource(r: Resource): Uint8Array {
  let bytes = encoded.get(r);
  if (!bytes) {
    bytes = toBinary(ResourceSchema, r);
    encoded.set(r, bytes);
  }
  return bytes;
}

/**
 * Serializes a DeltaDiscoveryResponse to the same bytes as `toBinary`, but encodes each shared
 * Resource envelope once instead of once per connection: the initial push of a 10,000-pod mesh to
 * 50 proxies is then 11,000 encodings and 550,000 copies instead of 550,000 encodings.
 */
export function encodeDeltaResponse(res: DeltaDiscoveryResponse): Buffer {
  const head = toBinary(
    DeltaDiscoveryResponseSchema,
    create(DeltaDiscoveryResponseSchema, { systemVersionInfo: res.systemVersionInfo }),
  );
  const tail = toBinary(DeltaDiscoveryResponseSchema, { ...res, systemVersionInfo: '', resources: [] });
  const list = encodedList(res.resources);
  const out = Buffer.allocUnsafe(head.length + list.length + tail.length);
  out.set(head, 0);
  out.set(list, head.length);
  out.set(tail, head.length + list.length);
  return out;
}

/** Marks a list of envelopes that many responses carry as is, so its encoding is kept. */
export function shareListEncoding(resources: readonly Resource[]): void {
  if (!encodedLists.has(resources)) encodedLists.set(resources, undefined);
}

/** The `resources` field's bytes, remembered for a list marked with {@link shareListEncoding}. */
function encodedList(resources: readonly Resource[]): Uint8Array {
  const cached = encodedLists.get(resources);
  if (cached) return cached;
  const parts = resources.map(encodedResource);
  let size = 0;
  for (const p of parts) size += 1 + varintSize(p.length) + p.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const p of parts) {
    out[at++] = RESOURCES_TAG;
    at = writeVarint(out, at, p.length);
    out.set(p, at);
    at += p.length;
  }
  if (encodedLists.has(resources)) encodedLists.set(resources, out);
  return out;
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n >>>= 7;
    size++;
  }
  return size;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  buf[at++] = n;
  return at;
}

import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  type DiscoveryRequest,
  type DiscoveryResponse,
  DiscoveryResponseSchema,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { create } from '@bufbuild/protobuf';
import type { Any } from '@bufbuild/protobuf/wkt';
import { nackDebug, XdsConnection, type XdsTypeDebug } from './connection.ts';
import type { NackRecord } from './delta-watch.ts';
import { toAny, typeView } from './generators.ts';
import { typeLabel } from './metrics.ts';
import type { PushBatch } from './push-queue.ts';

/** One state-of-the-world type on one stream. */
interface SotwWatch {
  readonly typeUrl: string;
  wildcard: boolean;
  names: Set<string>;
  nonceSent: string | undefined;
  versionSent: string | undefined;
  ackedNonce: string | undefined;
  ackedVersion: string | undefined;
  lastNack: NackRecord | undefined;
  nacks: number;
  responsesSent: number;
  resourcesSent: number;
  lastPushAt: number | undefined;
}

function sameNames(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const n of a) if (!b.has(n)) return false;
  return true;
}

/**
 * A `StreamAggregatedResources` stream (state of the world) for the same types: every response
 * carries the whole subscribed set. istiod registers one generator for both variants; ztunnel
 * never uses this one, but xDS tools and Envoy-based clients may.
 */
export class SotwConnection extends XdsConnection<DiscoveryRequest, DiscoveryResponse> {
  readonly variant = 'sotw' as const;
  readonly #watches = new Map<string, SotwWatch>();
  #deferred = new Set<string>();
  #deferredSince: number | undefined;

  protected onRequest(req: DiscoveryRequest): void {
    const typeUrl = req.typeUrl;
    const requested = new Set(req.resourceNames.filter((n) => n !== '*'));
    let watch = this.#watches.get(typeUrl);
    if (!watch) {
      watch = {
        typeUrl,
        wildcard: req.resourceNames.length === 0 || req.resourceNames.includes('*'),
        names: requested,
        nonceSent: undefined,
        versionSent: undefined,
        ackedNonce: undefined,
        ackedVersion: undefined,
        lastNack: undefined,
        nacks: 0,
        responsesSent: 0,
        resourcesSent: 0,
        lastPushAt: undefined,
      };
      this.#watches.set(typeUrl, watch);
      this.log.debug({ type: typeUrl, wildcard: watch.wildcard, names: requested.size }, 'subscribe');
      this.#send(watch, undefined);
      return;
    }
    if (req.errorDetail) {
      watch.lastNack = {
        nonce: req.responseNonce,
        message: req.errorDetail.message,
        code: req.errorDetail.code,
        at: Date.now(),
      };
      watch.nacks++;
      this.ctx.metrics.nacks.inc({ type: typeLabel(typeUrl, this.ctx.serves(typeUrl)) });
      this.log.warn(
        { type: typeUrl, nonce: req.responseNonce, message: req.errorDetail.message },
        'proxy rejected a response (NACK)',
      );
      return;
    }
    // Envoy's rule: a request whose nonce is not the latest sent is stale and ignored.
    if (req.responseNonce !== watch.nonceSent) {
      this.log.debug(
        { type: typeUrl, nonce: req.responseNonce, sent: watch.nonceSent },
        'stale nonce ignored',
      );
      return;
    }
    watch.ackedNonce = req.responseNonce;
    watch.ackedVersion = req.versionInfo;
    // Legacy wildcard: an empty list keeps a wildcard subscription a wildcard.
    const wildcard = req.resourceNames.includes('*') || (req.resourceNames.length === 0 && watch.wildcard);
    if (wildcard !== watch.wildcard || !sameNames(requested, watch.names)) {
      watch.wildcard = wildcard;
      watch.names = requested;
      this.#send(watch, undefined);
    }
  }

  push(batch: PushBatch): void {
    if (this.closed) return;
    for (const [typeUrl, names] of batch.changes) {
      const watch = this.#watches.get(typeUrl);
      if (!watch) continue;
      let affected = watch.wildcard;
      if (!affected) {
        for (const n of names) {
          if (watch.names.has(n)) {
            affected = true;
            break;
          }
        }
      }
      if (!affected) continue;
      if (this.blocked) {
        this.#deferred.add(typeUrl);
        this.#deferredSince = Math.min(this.#deferredSince ?? batch.firstChangeAt, batch.firstChangeAt);
      } else {
        this.#send(watch, batch.firstChangeAt);
      }
    }
  }

  protected override onDrain(): void {
    const since = this.#deferredSince;
    if (this.#deferred.size === 0 || since === undefined) return;
    const types = this.#deferred;
    this.#deferred = new Set();
    this.#deferredSince = undefined;
    for (const typeUrl of types) {
      const watch = this.#watches.get(typeUrl);
      if (watch) this.#send(watch, since);
    }
  }

  #send(watch: SotwWatch, firstChangeAt: number | undefined): void {
    const typeUrl = watch.typeUrl;
    const view = typeView(this.ctx.source, typeUrl);
    const resources: Any[] = [];
    const names = watch.wildcard ? view.names() : watch.names;
    for (const name of names) {
      const r = view.get(name);
      if (r) resources.push(toAny(typeUrl, r));
    }
    const nonce = randomUUID();
    const version = this.ctx.systemVersion();
    const res = create(DiscoveryResponseSchema, {
      versionInfo: version,
      resources,
      typeUrl,
      nonce,
      ...(this.ctx.controlPlane && { controlPlane: this.ctx.controlPlane }),
    });
    watch.nonceSent = nonce;
    watch.versionSent = version;
    watch.responsesSent++;
    watch.resourcesSent += resources.length;
    watch.lastPushAt = Date.now();
    const type = typeLabel(typeUrl, this.ctx.serves(typeUrl));
    const m = this.ctx.metrics;
    m.pushes.inc({ type });
    if (resources.length > 0) m.resourcesSent.inc({ type }, resources.length);
    this.write(
      res,
      firstChangeAt === undefined
        ? undefined
        : () => m.pushTime.observe({ type }, (performance.now() - firstChangeAt) / 1000),
    );
  }

  typeDebug(): XdsTypeDebug[] {
    return [...this.#watches.values()].map((w) => ({
      typeUrl: w.typeUrl,
      wildcard: w.wildcard,
      names: [...w.names].sort(),
      ...(w.nonceSent !== undefined && { lastNonceSent: w.nonceSent }),
      ...(w.ackedNonce !== undefined && { lastAckedNonce: w.ackedNonce }),
      ...(w.ackedVersion !== undefined && { ackedVersion: w.ackedVersion }),
      ...(w.lastNack && { lastNack: nackDebug(w.lastNack) }),
      nacks: w.nacks,
      responsesSent: w.responsesSent,
      resourcesSent: w.resourcesSent,
      ...(w.lastPushAt !== undefined && { lastPushAt: new Date(w.lastPushAt).toISOString() }),
    }));
  }
}

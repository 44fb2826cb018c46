import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  DeltaDiscoveryResponseSchema,
  type Resource,
} from '@ambient/common/gen/envoy/service/discovery/v3/discovery_pb';
import { create } from '@bufbuild/protobuf';
import { nackDebug, XdsConnection, type XdsTypeDebug } from './connection.ts';
import { DeltaWatch } from './delta-watch.ts';
import {
  type DeltaPlan,
  generateChangedDeltas,
  generateFullDeltas,
  generateSubscribedDeltas,
  isEmptyPlan,
  toDeltaResource,
  typeView,
  type WildcardSnapshot,
} from './generators.ts';
import { typeLabel } from './metrics.ts';
import type { PushBatch } from './push-queue.ts';

/**
 * A `DeltaAggregatedResources` stream (incremental xDS, what ztunnel speaks): one
 * {@link DeltaWatch} per type URL, responses carrying only what the proxy lacks, and removals.
 */
export class DeltaConnection extends XdsConnection<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
  readonly variant = 'delta' as const;
  readonly #watches = new Map<string, DeltaWatch>();
  // Pushes that arrived while the stream's buffer was full, merged until it drains, so a slow
  // proxy gets one catch-up response instead of a backlog of stale ones.
  #deferred = new Map<string, Set<string>>();
  #deferredSince: number | undefined;

  /** The watch of a type, for tests and debug. */
  watch(typeUrl: string): DeltaWatch | undefined {
    return this.#watches.get(typeUrl);
  }

  protected onRequest(req: DeltaDiscoveryRequest): void {
    const typeUrl = req.typeUrl;
    let watch = this.#watches.get(typeUrl);
    const first = watch === undefined;
    if (!watch) {
      watch = new DeltaWatch(typeUrl);
      this.#watches.set(typeUrl, watch);
    }
    // A first request may still carry a nonce from the proxy's previous stream; it matches
    // nothing here and is ignored.
    if (req.responseNonce !== '') this.#onResponseNonce(watch, req);

    if (first) {
      watch.applySubscription(req.resourceNamesSubscribe, req.resourceNamesUnsubscribe, true);
      const initial = Object.keys(req.initialResourceVersions).length;
      if (initial > 0) watch.seed(req.initialResourceVersions);
      this.log.debug(
        {
          type: typeUrl,
          wildcard: watch.wildcard,
          subscribe: req.resourceNamesSubscribe.length,
          initialResourceVersions: initial,
        },
        initial > 0 ? 'reconnect' : 'subscribe',
      );
      // Always answered, even when empty: ztunnel is not ready until each type's first response.
      if (watch.fresh && this.ctx.serves(typeUrl))
        this.#sendSnapshot(watch, this.ctx.wildcardSnapshot(typeUrl));
      else this.#send(watch, generateFullDeltas(typeView(this.ctx.source, typeUrl), watch), undefined);
      return;
    }

    if (req.resourceNamesSubscribe.length === 0 && req.resourceNamesUnsubscribe.length === 0) return;
    const change = watch.applySubscription(req.resourceNamesSubscribe, req.resourceNamesUnsubscribe, false);
    this.log.debug(
      { type: typeUrl, wildcard: watch.wildcard, added: change.added.length, dropped: change.dropped.length },
      'subscription changed',
    );
    const view = typeView(this.ctx.source, typeUrl);
    const plan = change.wildcardAdded
      ? generateFullDeltas(view, watch)
      : generateSubscribedDeltas(view, watch, change.added);
    if (!isEmptyPlan(plan)) this.#send(watch, plan, undefined);
  }

  #onResponseNonce(watch: DeltaWatch, req: DeltaDiscoveryRequest): void {
    const nonce = req.responseNonce;
    const type = typeLabel(watch.typeUrl, this.ctx.serves(watch.typeUrl));
    if (req.errorDetail) {
      // A NACK is recorded and not answered; it stalls nothing: later pushes for this and other
      // types go out as usual (upstream `shouldRespondDelta`).
      const known = watch.nack(nonce, req.errorDetail.message, req.errorDetail.code, Date.now());
      this.ctx.metrics.nacks.inc({ type });
      this.log.warn(
        { type: watch.typeUrl, nonce, code: req.errorDetail.code, message: req.errorDetail.message, known },
        'proxy rejected a response (NACK)',
      );
      return;
    }
    if (!watch.ack(nonce)) {
      this.log.debug({ type: watch.typeUrl, nonce }, 'ACK of an unknown nonce ignored');
    }
  }

  push(batch: PushBatch): void {
    if (this.closed) return;
    if (this.blocked) {
      for (const [typeUrl, names] of batch.changes) {
        if (!this.#watches.has(typeUrl)) continue;
        let set = this.#deferred.get(typeUrl);
        if (!set) {
          set = new Set();
          this.#deferred.set(typeUrl, set);
        }
        for (const n of names) set.add(n);
      }
      this.#deferredSince = Math.min(this.#deferredSince ?? batch.firstChangeAt, batch.firstChangeAt);
      return;
    }
    for (const [typeUrl, names] of batch.changes) {
      const watch = this.#watches.get(typeUrl);
      if (!watch) continue;
      const plan = generateChangedDeltas(typeView(this.ctx.source, typeUrl), watch, names);
      if (!isEmptyPlan(plan)) this.#send(watch, plan, batch.firstChangeAt);
    }
  }

  protected override onDrain(): void {
    if (this.#deferred.size === 0 || this.#deferredSince === undefined) return;
    const batch: PushBatch = { changes: this.#deferred, firstChangeAt: this.#deferredSince, events: 0 };
    this.#deferred = new Map();
    this.#deferredSince = undefined;
    this.push(batch);
  }

  /** The first response of a fresh wildcard watch: the shared snapshot, bookkept in O(1). */
  #sendSnapshot(watch: DeltaWatch, snapshot: WildcardSnapshot): void {
    const nonce = randomUUID();
    const res = this.#response(watch.typeUrl, nonce, [], []);
    // The shared array itself, so the encoder finds the encoding of the whole list it cached.
    res.resources = snapshot.envelopes as Resource[];
    watch.recordSentSnapshot(nonce, snapshot, Date.now());
    this.#written(watch, res, { resources: snapshot.resources, removed: [] }, undefined);
  }

  #response(
    typeUrl: string,
    nonce: string,
    resources: Resource[],
    removed: readonly string[],
  ): DeltaDiscoveryResponse {
    return create(DeltaDiscoveryResponseSchema, {
      systemVersionInfo: this.ctx.systemVersion(),
      typeUrl,
      nonce,
      resources,
      removedResources: [...removed],
      ...(this.ctx.controlPlane && { controlPlane: this.ctx.controlPlane }),
    });
  }

  /** Sends one response; `firstChangeAt` marks a push, whose latency is observed once written. */
  #send(watch: DeltaWatch, plan: DeltaPlan, firstChangeAt: number | undefined): void {
    const typeUrl = watch.typeUrl;
    const nonce = randomUUID();
    const res = this.#response(
      typeUrl,
      nonce,
      plan.resources.map((r) => toDeltaResource(typeUrl, r, !watch.wildcard)),
      plan.removed,
    );
    watch.recordSent(nonce, plan.resources, plan.removed, Date.now());
    this.#written(watch, res, plan, firstChangeAt);
  }

  #written(
    watch: DeltaWatch,
    res: DeltaDiscoveryResponse,
    plan: DeltaPlan,
    firstChangeAt: number | undefined,
  ): void {
    const typeUrl = watch.typeUrl;
    const nonce = res.nonce;
    const type = typeLabel(typeUrl, this.ctx.serves(typeUrl));
    const m = this.ctx.metrics;
    m.pushes.inc({ type });
    if (plan.resources.length > 0) m.resourcesSent.inc({ type }, plan.resources.length);
    if (plan.removed.length > 0) m.resourcesRemoved.inc({ type }, plan.removed.length);
    this.write(
      res,
      firstChangeAt === undefined
        ? undefined
        : () => m.pushTime.observe({ type }, (performance.now() - firstChangeAt) / 1000),
    );
    this.log.debug(
      { type: typeUrl, nonce, resources: plan.resources.length, removed: plan.removed.length },
      firstChangeAt === undefined ? 'response' : 'push',
    );
  }

  typeDebug(): XdsTypeDebug[] {
    return [...this.#watches.values()].map((w) => ({
      typeUrl: w.typeUrl,
      wildcard: w.wildcard,
      names: [...w.explicitNames()].sort(),
      ...(w.lastNonceSent !== undefined && { lastNonceSent: w.lastNonceSent }),
      ...(w.lastAckedNonce !== undefined && { lastAckedNonce: w.lastAckedNonce }),
      ...(w.lastNack && { lastNack: nackDebug(w.lastNack) }),
      nacks: w.nacks,
      responsesSent: w.responsesSent,
      resourcesSent: w.resourcesSent,
      resourcesAcked: w.heldCount,
      ...(w.lastPushAt !== undefined && { lastPushAt: new Date(w.lastPushAt).toISOString() }),
    }));
  }
}

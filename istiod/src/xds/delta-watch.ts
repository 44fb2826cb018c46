import type { XdsResource } from './resources.ts';

/** A proxy's rejection of one response. */
export interface NackRecord {
  readonly nonce: string;
  /** `error_detail.message`: ztunnel joins the per-resource reasons (`name: reason; …`). */
  readonly message: string;
  /** `error_detail.code`, a google.rpc.Code. */
  readonly code: number;
  /** Epoch milliseconds. */
  readonly at: number;
}

/** What a subscription request changed. */
export interface SubscriptionChange {
  /** Wildcard was off and is now on: the proxy needs everything it lacks. */
  readonly wildcardAdded: boolean;
  /** Names newly subscribed explicitly while not wildcard: the proxy needs these. */
  readonly added: readonly string[];
  /** Names no longer covered by the subscription; the proxy drops them and so do we. */
  readonly dropped: readonly string[];
}

interface SentResponse {
  readonly upserts: ReadonlyArray<readonly [name: string, version: string]>;
  readonly removed: readonly string[];
}

interface Unconfirmed {
  /** The version sent, or undefined for a removal. */
  readonly version: string | undefined;
  readonly nonce: string;
}

// A proxy that never ACKs must not make us keep every response it was sent.
const MAX_IN_FLIGHT = 64;

/**
 * The versions of a full push shared by every fresh wildcard watch of a type (see
 * {@link DeltaWatch.recordSentSnapshot}); never mutated once built.
 */
export interface VersionSnapshot {
  readonly versions: ReadonlyMap<string, string>;
}

/**
 * One delta xDS type on one stream (upstream `model.WatchedResource`): the subscription, the
 * versions the proxy holds, and the ACK/NACK bookkeeping.
 *
 * Versions live in two layers. `held` is what the proxy confirmed, updated when it ACKs the nonce
 * that carried a change. `unconfirmed` overlays it with what was sent since and not yet ACKed:
 * in flight, or NACKed. {@link versionOf} reads through both, so a push never repeats bytes the
 * proxy already has or was just sent. A NACKed change stays unconfirmed: the proxy applied the
 * resources it could (ztunnel rejects per resource), and re-sending identical bytes would only be
 * rejected again; the next change to those names sends them anew (upstream istiod does not answer
 * a NACK either).
 *
 * Under both sits `base`: the first full push of a fresh wildcard watch records a snapshot shared
 * by every connection instead of copying its ~10,000 versions into each connection's maps (the
 * initial push to 50 proxies would otherwise be 1.1 million map writes, a third of its CPU).
 * `held` then holds only what changed since (`null` for a name removed from the base).
 */
export class DeltaWatch {
  readonly typeUrl: string;
  #wildcard = false;
  readonly #names = new Set<string>();
  readonly #held = new Map<string, string | null>();
  #base: VersionSnapshot | undefined;
  /** The nonce that carried the base while unACKed; undefined once confirmed. */
  #baseNonce: string | undefined;
  readonly #unconfirmed = new Map<string, Unconfirmed>();
  readonly #inFlight = new Map<string, SentResponse>();
  lastNonceSent: string | undefined;
  lastAckedNonce: string | undefined;
  lastNack: NackRecord | undefined;
  nacks = 0;
  responsesSent = 0;
  resourcesSent = 0;
  /** Epoch milliseconds of the last response written for this type. */
  lastPushAt: number | undefined;

  constructor(typeUrl: string) {
    this.typeUrl = typeUrl;
  }

  get wildcard(): boolean {
    return this.#wildcard;
  }

  /** Explicitly subscribed names (besides any wildcard). */
  explicitNames(): ReadonlySet<string> {
    return this.#names;
  }

  subscribes(name: string): boolean {
    return this.#wildcard || this.#names.has(name);
  }

  /** The version the proxy holds or was last sent; undefined when it has none. */
  versionOf(name: string): string | undefined {
    const u = this.#unconfirmed.get(name);
    if (u) return u.version;
    const h = this.#held.get(name);
    if (h !== undefined) return h ?? undefined;
    return this.#base?.versions.get(name);
  }

  /** Every name the proxy holds or was sent (removals excluded). */
  *knownNames(): Iterable<string> {
    for (const [name, u] of this.#unconfirmed) if (u.version !== undefined) yield name;
    for (const [name, v] of this.#held) if (v !== null && !this.#unconfirmed.has(name)) yield name;
    if (this.#base) {
      for (const name of this.#base.versions.keys()) {
        if (!this.#held.has(name) && !this.#unconfirmed.has(name)) yield name;
      }
    }
  }

  /**
   * True while nothing was sent, held or asked for by name: the next full push is exactly the
   * type's current resources, the same for every such watch.
   */
  get fresh(): boolean {
    return (
      this.#wildcard &&
      this.#names.size === 0 &&
      this.#held.size === 0 &&
      this.#unconfirmed.size === 0 &&
      this.#base === undefined
    );
  }

  /** Count of ACK-confirmed resources. */
  get heldCount(): number {
    return this.heldVersions().size;
  }

  /** Confirmed versions, for debug output and tests. */
  heldVersions(): ReadonlyMap<string, string> {
    const out = new Map<string, string>();
    if (this.#base && this.#baseNonce === undefined) {
      for (const [name, version] of this.#base.versions) if (!this.#held.has(name)) out.set(name, version);
    }
    for (const [name, version] of this.#held) if (version !== null) out.set(name, version);
    return out;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * Applies `resource_names_subscribe` / `_unsubscribe` (Envoy xDS protocol, "delta" variant):
   * an empty subscribe list on the first request means wildcard; `*` subscribes or unsubscribes
   * the wildcard explicitly, so on-demand ztunnel's first request (subscribe and unsubscribe `*`)
   * asks for nothing.
   */
  applySubscription(
    subscribe: readonly string[],
    unsubscribe: readonly string[],
    first: boolean,
  ): SubscriptionChange {
    const wasWildcard = this.#wildcard;
    if (first && subscribe.length === 0) this.#wildcard = true;
    const added: string[] = [];
    for (const name of subscribe) {
      if (name === '*') this.#wildcard = true;
      else if (!this.#names.has(name)) {
        this.#names.add(name);
        added.push(name);
      }
    }
    for (const name of unsubscribe) {
      if (name === '*') this.#wildcard = false;
      else this.#names.delete(name);
    }
    // Only an unsubscribe can uncover names; ACKs (no names) must stay O(1).
    const dropped = new Set<string>();
    if (unsubscribe.length > 0) {
      this.#flattenBase();
      for (const name of this.#held.keys()) if (!this.subscribes(name)) dropped.add(name);
      for (const name of this.#unconfirmed.keys()) if (!this.subscribes(name)) dropped.add(name);
      for (const name of dropped) {
        this.#held.delete(name);
        this.#unconfirmed.delete(name);
      }
    }
    const wildcardAdded = this.#wildcard && !wasWildcard;
    return {
      wildcardAdded,
      added: this.#wildcard ? [] : added.filter((n) => this.#names.has(n)),
      dropped: [...dropped],
    };
  }

  /** Seeds the held versions from `initial_resource_versions` of a reconnecting proxy. */
  seed(initial: Readonly<Record<string, string>>): void {
    this.#flattenBase();
    for (const [name, version] of Object.entries(initial)) this.#held.set(name, version);
  }

  /**
   * Records the full push of a {@link fresh} watch: `snapshot` is shared with other watches and
   * stands for every resource the response carried.
   */
  recordSentSnapshot(nonce: string, snapshot: VersionSnapshot, at: number): void {
    if (!this.fresh) throw new Error('recordSentSnapshot on a watch that is not fresh');
    this.#base = snapshot;
    this.#baseNonce = nonce;
    this.#inFlight.set(nonce, { upserts: [], removed: [] });
    this.lastNonceSent = nonce;
    this.responsesSent++;
    this.resourcesSent += snapshot.versions.size;
    this.lastPushAt = at;
  }

  /**
   * Copies the base into the per-connection maps, for the rare operations that rewrite many
   * names at once (an unsubscribe, a reseed).
   */
  #flattenBase(): void {
    const base = this.#base;
    if (base === undefined) return;
    const nonce = this.#baseNonce;
    this.#base = undefined;
    this.#baseNonce = undefined;
    for (const [name, version] of base.versions) {
      if (this.#held.has(name) || this.#unconfirmed.has(name)) continue;
      if (nonce === undefined) this.#held.set(name, version);
      else this.#unconfirmed.set(name, { version, nonce });
    }
    for (const [name, version] of this.#held) if (version === null) this.#held.delete(name);
    if (nonce !== undefined) {
      const sent = this.#inFlight.get(nonce);
      if (sent) this.#inFlight.set(nonce, { upserts: [...base.versions], removed: sent.removed });
    }
  }

  recordSent(nonce: string, resources: readonly XdsResource[], removed: readonly string[], at: number): void {
    const upserts = resources.map((r) => [r.name, r.version] as const);
    for (const [name, version] of upserts) this.#unconfirmed.set(name, { version, nonce });
    for (const name of removed) this.#unconfirmed.set(name, { version: undefined, nonce });
    this.#inFlight.set(nonce, { upserts, removed });
    if (this.#inFlight.size > MAX_IN_FLIGHT) {
      const oldest = this.#inFlight.keys().next().value;
      if (oldest !== undefined) this.#inFlight.delete(oldest);
    }
    this.lastNonceSent = nonce;
    this.responsesSent++;
    this.resourcesSent += resources.length;
    this.lastPushAt = at;
  }

  /** Confirms the response `nonce` carried; false when the nonce is unknown (stale or foreign). */
  ack(nonce: string): boolean {
    const sent = this.#inFlight.get(nonce);
    if (!sent) return false;
    this.#inFlight.delete(nonce);
    if (nonce === this.#baseNonce) this.#baseNonce = undefined;
    for (const [name, version] of sent.upserts) {
      if (this.subscribes(name)) this.#held.set(name, version);
      if (this.#unconfirmed.get(name)?.nonce === nonce) this.#unconfirmed.delete(name);
    }
    for (const name of sent.removed) {
      if (this.#base?.versions.has(name)) this.#held.set(name, null);
      else this.#held.delete(name);
      if (this.#unconfirmed.get(name)?.nonce === nonce) this.#unconfirmed.delete(name);
    }
    this.lastAckedNonce = nonce;
    return true;
  }

  /** Records a rejection; false when the nonce is unknown. The change stays unconfirmed. */
  nack(nonce: string, message: string, code: number, at: number): boolean {
    const known = this.#inFlight.delete(nonce);
    this.lastNack = { nonce, message, code, at };
    this.nacks++;
    return known;
  }
}

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
 */
export class DeltaWatch {
  readonly typeUrl: string;
  #wildcard = false;
  readonly #names = new Set<string>();
  readonly #held = new Map<string, string>();
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
    return u ? u.version : this.#held.get(name);
  }

  /** Every name the proxy holds or was sent (removals excluded). */
  *knownNames(): Iterable<string> {
    for (const [name, u] of this.#unconfirmed) if (u.version !== undefined) yield name;
    for (const name of this.#held.keys()) if (!this.#unconfirmed.has(name)) yield name;
  }

  /** Count of ACK-confirmed resources. */
  get heldCount(): number {
    return this.#held.size;
  }

  /** Confirmed versions, for debug output and tests. */
  heldVersions(): ReadonlyMap<string, string> {
    return this.#held;
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
    for (const [name, version] of Object.entries(initial)) this.#held.set(name, version);
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
    for (const [name, version] of sent.upserts) {
      if (this.subscribes(name)) this.#held.set(name, version);
      if (this.#unconfirmed.get(name)?.nonce === nonce) this.#unconfirmed.delete(name);
    }
    for (const name of sent.removed) {
      this.#held.delete(name);
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

/** Parameters of an {@link ExponentialBackoff}. */
export interface BackoffOptions {
  /** The first delay (before jitter). */
  readonly initialMs: number;
  /** No delay is ever longer than this, jitter included. */
  readonly maxMs: number;
  /** Growth per attempt; default 2. */
  readonly multiplier?: number;
  /**
   * Each delay is the current interval times a factor drawn from `[1 - jitter, 1 + jitter]`, so
   * that a fleet of proxies losing istiod together does not come back in lockstep. Default 0.2
   * (the `backoff` crate's randomization factor that ztunnel uses).
   */
  readonly jitter?: number;
  /** Source of randomness in [0, 1); injectable so tests can pin the delays. */
  readonly random?: () => number;
}

/**
 * Exponential backoff with jitter: `next()` returns the delay before the next attempt and grows
 * the interval, `reset()` returns to the initial interval after a success. The data plane uses
 * it for the xDS stream (10 ms → 15 s, ztunnel `INITIAL_BACKOFF`/`MAX_BACKOFF`) and per identity
 * for certificate fetches (1 s → 150 s, ztunnel `CERT_REFRESH_FAILURE_RETRY_DELAY_MAX_INTERVAL`).
 */
export class ExponentialBackoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #multiplier: number;
  readonly #jitter: number;
  readonly #random: () => number;
  #currentMs: number;
  #attempts = 0;

  constructor(options: BackoffOptions) {
    const multiplier = options.multiplier ?? 2;
    const jitter = options.jitter ?? 0.2;
    if (!(options.initialMs > 0) || !(options.maxMs >= options.initialMs)) {
      throw new RangeError(
        `backoff needs 0 < initial (${options.initialMs} ms) <= max (${options.maxMs} ms)`,
      );
    }
    if (!(multiplier >= 1)) throw new RangeError(`backoff multiplier ${multiplier} must be at least 1`);
    if (!(jitter >= 0 && jitter < 1)) throw new RangeError(`backoff jitter ${jitter} must be in [0, 1)`);
    this.#initialMs = options.initialMs;
    this.#maxMs = options.maxMs;
    this.#multiplier = multiplier;
    this.#jitter = jitter;
    this.#random = options.random ?? Math.random;
    this.#currentMs = this.#initialMs;
  }

  /** The delay before the next attempt; each call grows the interval up to the maximum. */
  next(): number {
    const base = this.#currentMs;
    this.#currentMs = Math.min(this.#maxMs, base * this.#multiplier);
    this.#attempts++;
    const factor = 1 - this.#jitter + 2 * this.#jitter * this.#random();
    return Math.min(this.#maxMs, Math.max(0, Math.round(base * factor)));
  }

  /** Back to the initial interval (after a success or a healthy connection). */
  reset(): void {
    this.#currentMs = this.#initialMs;
    this.#attempts = 0;
  }

  /** Delays handed out since the last reset. */
  get attempts(): number {
    return this.#attempts;
  }
}

/** Exponential backoff with jitter, for the list/watch retry loop. */
export interface BackoffOptions {
  /** The first delay. */
  readonly initialMs: number;
  /** The ceiling the delay grows to. */
  readonly maxMs: number;
  readonly factor?: number;
  /** The fraction of each delay that is randomised (0.2: ±20%), so replicas do not retry in step. */
  readonly jitter?: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 30_000, factor: 2, jitter: 0.2 };

export class Backoff {
  readonly #options: BackoffOptions;
  readonly #random: () => number;
  #attempt = 0;

  constructor(options: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random) {
    this.#options = options;
    this.#random = random;
  }

  /** Consecutive failures since the last reset. */
  get attempts(): number {
    return this.#attempt;
  }

  /** The delay before the next attempt; each call counts one more failure. */
  next(): number {
    const { initialMs, maxMs, factor = 2, jitter = 0.2 } = this.#options;
    const base = Math.min(maxMs, initialMs * factor ** this.#attempt);
    this.#attempt++;
    const spread = base * jitter * (this.#random() * 2 - 1);
    return Math.max(0, Math.min(maxMs, Math.round(base + spread)));
  }

  reset(): void {
    this.#attempt = 0;
  }
}

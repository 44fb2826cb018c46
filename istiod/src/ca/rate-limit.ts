/** Token-bucket parameters: a steady rate and how much may be spent at once. */
export interface RateLimit {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** Bucket size: the burst a caller may spend after being idle. */
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/**
 * One token bucket per key (a caller), in bounded memory: when `maxKeys` buckets exist, the least
 * recently used is dropped. A dropped bucket comes back full, which errs on the side of serving a
 * caller that had been idle anyway.
 */
export class KeyedRateLimiter {
  readonly #limit: RateLimit;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(limit: RateLimit, options: { maxKeys?: number; now?: () => number } = {}) {
    if (!(limit.perSecond > 0) || !(limit.burst >= 1)) {
      throw new RangeError(
        `rate limit needs perSecond > 0 and burst >= 1, got ${limit.perSecond}/s burst ${limit.burst}`,
      );
    }
    this.#limit = limit;
    this.#maxKeys = options.maxKeys ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  /** Spends one token of `key`'s bucket; false when it is empty. */
  take(key: string): boolean {
    const now = this.#now();
    let bucket = this.#buckets.get(key);
    if (bucket) {
      this.#buckets.delete(key);
      const refill = ((now - bucket.updatedAt) / 1000) * this.#limit.perSecond;
      bucket.tokens = Math.min(this.#limit.burst, bucket.tokens + Math.max(0, refill));
      bucket.updatedAt = now;
    } else {
      while (this.#buckets.size >= this.#maxKeys) {
        const oldest = this.#buckets.keys().next();
        if (oldest.done) break;
        this.#buckets.delete(oldest.value);
      }
      bucket = { tokens: this.#limit.burst, updatedAt: now };
    }
    // Re-inserting keeps the map in least-recently-used order.
    this.#buckets.set(key, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Buckets currently held. */
  get size(): number {
    return this.#buckets.size;
  }
}

import { performance } from 'node:perf_hooks';
import type { ResourcesUpdated } from './resources.ts';

/** Debounce timing: push after `quietMs` without a change, or `maxDelayMs` after the first. */
export interface DebounceOptions {
  /** Quiet period; upstream `PILOT_DEBOUNCE_AFTER` is 100 ms. */
  readonly quietMs?: number;
  /** Upper bound from the first pending change, so a steady trickle of changes still gets pushed. */
  readonly maxDelayMs?: number;
}

export const DEFAULT_DEBOUNCE = { quietMs: 100, maxDelayMs: 1000 } as const;

/** The merged changes of one debounce window. */
export interface PushBatch {
  /** Changed names per type URL. */
  readonly changes: ReadonlyMap<string, ReadonlySet<string>>;
  /** `performance.now()` of the first change in the batch: the start of the push-time metric. */
  readonly firstChangeAt: number;
  /** Number of ResourcesUpdated events merged. */
  readonly events: number;
}

/**
 * Collects ResourcesUpdated events, merges their name sets per type, and hands one batch to
 * `push` after a quiet period or a maximum delay since the first pending change, whichever
 * comes first. `push` runs synchronously on the timer, so batches never overlap.
 */
export class PushQueue {
  readonly #quietMs: number;
  readonly #maxDelayMs: number;
  readonly #push: (batch: PushBatch) => void;
  #changes = new Map<string, Set<string>>();
  #events = 0;
  #firstChangeAt = 0;
  #lastChangeAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(push: (batch: PushBatch) => void, options: DebounceOptions = {}) {
    this.#push = push;
    this.#quietMs = options.quietMs ?? DEFAULT_DEBOUNCE.quietMs;
    this.#maxDelayMs = Math.max(this.#quietMs, options.maxDelayMs ?? DEFAULT_DEBOUNCE.maxDelayMs);
  }

  /** Changes waiting for the next push, for debug output. */
  get pending(): { readonly types: number; readonly names: number; readonly events: number } {
    let names = 0;
    for (const s of this.#changes.values()) names += s.size;
    return { types: this.#changes.size, names, events: this.#events };
  }

  enqueue(update: ResourcesUpdated): void {
    if (this.#closed || update.names.size === 0) return;
    const now = performance.now();
    if (this.#events === 0) this.#firstChangeAt = now;
    this.#lastChangeAt = now;
    this.#events++;
    let set = this.#changes.get(update.typeUrl);
    if (!set) {
      set = new Set();
      this.#changes.set(update.typeUrl, set);
    }
    for (const n of update.names) set.add(n);
    this.#schedule();
  }

  /** Pushes what is pending now, skipping the rest of the debounce window. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#events === 0) return;
    const batch: PushBatch = {
      changes: this.#changes,
      firstChangeAt: this.#firstChangeAt,
      events: this.#events,
    };
    this.#changes = new Map();
    this.#events = 0;
    this.#push(batch);
  }

  /** Drops pending changes and stops the timer; later enqueues are ignored. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#changes = new Map();
    this.#events = 0;
  }

  #schedule(): void {
    // One timer, re-armed to the earlier of the two deadlines on every change.
    const due = Math.min(this.#lastChangeAt + this.#quietMs, this.#firstChangeAt + this.#maxDelayMs);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, due - performance.now()));
  }

  #fire(): void {
    this.#timer = undefined;
    const now = performance.now();
    const due = Math.min(this.#lastChangeAt + this.#quietMs, this.#firstChangeAt + this.#maxDelayMs);
    // Timers may fire a little early; re-arm rather than push before the window closes.
    if (now + 1 < due) {
      this.#schedule();
      return;
    }
    this.flush();
  }
}

import type { Drain } from '@ambient/common/lifecycle';
import { ProxyError } from './errors.ts';

/** One proxied connection as its proxy sees it: closable at any time, released when done. */
export interface LiveConnection {
  /** Aborted (with a ProxyError reason) when the connection must close: policy change, drain. */
  readonly signal: AbortSignal;
  /** Closes the connection with `reason` (idempotent). */
  close(reason: ProxyError): void;
  /** Marks the connection finished (idempotent); the drain stops waiting for it. */
  release(): void;
}

/**
 * The connections a per-pod proxy has in flight. Each holds the proxy's Drain until released, so
 * a graceful stop waits for them; when the drain deadline passes (or the stop is immediate) every
 * one still open is closed with `DRAINING`.
 */
export class LiveConnections {
  readonly #drain: Drain;
  readonly #open = new Set<AbortController>();

  constructor(drain: Drain) {
    this.#drain = drain;
    drain.force.addEventListener(
      'abort',
      () =>
        this.closeAll(
          new ProxyError('DRAINING', 'connection closed: the proxy stopped and the drain deadline passed'),
        ),
      { once: true },
    );
  }

  get size(): number {
    return this.#open.size;
  }

  /** Whether the proxy is stopping: new connections are refused. */
  get draining(): boolean {
    return this.#drain.draining.aborted;
  }

  /** Starts tracking a connection; undefined when the proxy is stopping (refuse it). */
  open(what: string): LiveConnection | undefined {
    if (this.#drain.draining.aborted) return undefined;
    const controller = new AbortController();
    const releaseHold = this.#drain.hold(what);
    this.#open.add(controller);
    let released = false;
    return {
      signal: controller.signal,
      close: (reason) => {
        if (!controller.signal.aborted) controller.abort(reason);
      },
      release: () => {
        if (released) return;
        released = true;
        this.#open.delete(controller);
        releaseHold();
      },
    };
  }

  /** Closes every open connection with `reason`. */
  closeAll(reason: ProxyError): void {
    for (const c of [...this.#open]) {
      if (!c.signal.aborted) c.abort(reason);
    }
  }
}

import type { Drain } from '@ambient/common/lifecycle';
import { ProxyError } from './errors.ts';

/** One connection in `/config_dump` `workloadState.<uid>.connections` (ztunnel `admin.rs`). */
export interface ConnectionDump {
  /** The client's address and port. */
  readonly src: string;
  /** Where the client sent it (a Service VIP, a pod, or the HBONE authority). */
  readonly originalDst: string;
  /** Where the proxy sent it: the app (inbound), or the chosen endpoint or its HBONE port (outbound). */
  readonly actualDst: string;
  readonly protocol: 'HBONE' | 'TCP';
}

/** What {@link LiveConnections.open} records of a connection for the dump. */
export interface ConnectionDescription {
  readonly direction: 'inbound' | 'outbound';
  readonly src: string;
  readonly originalDst: string;
  /** Known at once inbound; outbound once routed ({@link LiveConnection.routed}). */
  readonly actualDst?: string;
  readonly protocol?: 'HBONE' | 'TCP';
}

/** One proxied connection as its proxy sees it: closable at any time, released when done. */
export interface LiveConnection {
  /** Records where an outbound connection goes, once routing chose (for the dump). */
  routed(actualDst: string, protocol: 'HBONE' | 'TCP'): void;
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
  readonly #described = new Map<
    AbortController,
    { -readonly [K in keyof ConnectionDescription]: ConnectionDescription[K] }
  >();

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
  open(what: string, description?: ConnectionDescription): LiveConnection | undefined {
    if (this.#drain.draining.aborted) return undefined;
    const controller = new AbortController();
    const releaseHold = this.#drain.hold(what);
    this.#open.add(controller);
    if (description) this.#described.set(controller, { ...description });
    let released = false;
    return {
      signal: controller.signal,
      routed: (actualDst, protocol) => {
        const d = this.#described.get(controller);
        if (d) {
          d.actualDst = actualDst;
          d.protocol = protocol;
        }
      },
      close: (reason) => {
        if (!controller.signal.aborted) controller.abort(reason);
      },
      release: () => {
        if (released) return;
        released = true;
        this.#open.delete(controller);
        this.#described.delete(controller);
        releaseHold();
      },
    };
  }

  /** The described connections in flight, by direction; outbound ones not yet routed are left out. */
  dump(): { inbound: ConnectionDump[]; outbound: ConnectionDump[] } {
    const out = { inbound: [] as ConnectionDump[], outbound: [] as ConnectionDump[] };
    for (const d of this.#described.values()) {
      if (d.actualDst === undefined || d.protocol === undefined) continue;
      out[d.direction].push({
        src: d.src,
        originalDst: d.originalDst,
        actualDst: d.actualDst,
        protocol: d.protocol,
      });
    }
    return out;
  }

  /** Closes every open connection with `reason`. */
  closeAll(reason: ProxyError): void {
    for (const c of [...this.#open]) {
      if (!c.signal.aborted) c.abort(reason);
    }
  }
}

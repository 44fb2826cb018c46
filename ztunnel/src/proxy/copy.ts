import type { Duplex } from 'node:stream';
import { ProxyError } from './errors.ts';

/** Receives the byte counts of a copy as they happen (metrics, access log). */
export interface CopyObserver {
  /** Bytes read from the downstream and handed to the upstream (ztunnel "recv"). */
  downstreamToUpstream(bytes: number): void;
  /** Bytes read from the upstream and handed to the downstream (ztunnel "sent"). */
  upstreamToDownstream(bytes: number): void;
}

/** Totals of a finished copy. */
export interface CopyTotals {
  readonly downstreamToUpstream: number;
  readonly upstreamToDownstream: number;
}

// How a peer going away shows up; ztunnel treats these as the end of that direction, not as a
// failure (copy.rs `ignore_io_errors`): connections can close at any time.
const CLOSED_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ENOTCONN',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_STREAM_DESTROYED',
  'ERR_STREAM_WRITE_AFTER_END',
  'HBONE_BROKEN_PIPE',
]);

function isClose(err: unknown): boolean {
  return CLOSED_CODES.has(String((err as { code?: unknown } | undefined)?.code));
}

interface Direction {
  readonly from: Duplex;
  readonly to: Duplex;
  readonly count: (n: number) => void;
  readonly failCode: 'SEND_FAILED' | 'RECEIVE_FAILED';
  readonly label: string;
  bytes: number;
  done: boolean;
}

/**
 * Copies bytes both ways between a downstream (the side that opened the connection) and an
 * upstream until both directions are finished (ztunnel `copy_bidirectional`):
 *
 * - Half-close is kept: the end of one side's data (FIN, or END_STREAM on an HBONE tunnel)
 *   becomes `end()` on the other side, and the opposite direction carries on until it ends too.
 * - Backpressure: a direction stops reading when the writer's buffer is full and resumes on
 *   `'drain'`, so memory per connection stays within the two sides' buffers (and, through
 *   HTTP/2 flow control, the tunnel's window), whatever the peers' speeds.
 * - A reset or broken pipe ends the affected directions quietly, as a close. Anything else fails
 *   the copy with `SEND_FAILED` (downstream → upstream) or `RECEIVE_FAILED` (upstream →
 *   downstream); destroying a side with a ProxyError (policy change, drain) fails it with that.
 *
 * Both sides are destroyed when the copy settles. Sides must allow half-open.
 */
export function copyBidirectional(
  downstream: Duplex,
  upstream: Duplex,
  observer?: CopyObserver,
): Promise<CopyTotals> {
  return new Promise<CopyTotals>((resolve, reject) => {
    const send: Direction = {
      from: downstream,
      to: upstream,
      count: (n) => observer?.downstreamToUpstream(n),
      failCode: 'SEND_FAILED',
      label: 'downstream to upstream',
      bytes: 0,
      done: false,
    };
    const receive: Direction = {
      from: upstream,
      to: downstream,
      count: (n) => observer?.upstreamToDownstream(n),
      failCode: 'RECEIVE_FAILED',
      label: 'upstream to downstream',
      bytes: 0,
      done: false,
    };
    let settled = false;
    const cleanups: (() => void)[] = [];
    const on = (target: Duplex, event: string, fn: (...args: never[]) => void): void => {
      target.on(event, fn as (...args: unknown[]) => void);
      cleanups.push(() => target.off(event, fn as (...args: unknown[]) => void));
    };

    const settle = (err?: Error): void => {
      if (settled) return;
      settled = true;
      for (const fn of cleanups) fn();
      // Late errors from either side (a reset racing the close) must not go unhandled.
      downstream.on('error', () => {});
      upstream.on('error', () => {});
      downstream.destroy();
      upstream.destroy();
      if (err === undefined) {
        resolve({ downstreamToUpstream: send.bytes, upstreamToDownstream: receive.bytes });
      } else {
        reject(err);
      }
    };

    const finish = (d: Direction): void => {
      if (d.done) return;
      d.done = true;
      if (send.done && receive.done) settle();
    };

    // A side that went away: nothing more can be read from it or written to it. The direction
    // out of it delivers its end to the other side; the direction into it is over.
    const closed = (side: Duplex): void => {
      const out = side === downstream ? send : receive;
      const into = side === downstream ? receive : send;
      into.from.pause();
      finish(into);
      if (!out.done && !out.to.writableEnded) out.to.end();
      if (out.to.writableFinished || out.to.destroyed) finish(out);
    };

    const onError = (side: Duplex) => (err: Error) => {
      if (settled) return;
      if (err instanceof ProxyError) {
        settle(err);
        return;
      }
      if (isClose(err)) {
        closed(side);
        return;
      }
      // A write error belongs to the direction into this side, a read error to the one out of
      // it; Node does not say which, so name the side in the message.
      const d = side === upstream ? send : receive;
      settle(
        new ProxyError(
          d.failCode,
          `copying ${d.label} failed: ${side === upstream ? 'upstream' : 'downstream'} error: ${err.message}`,
          { cause: err },
        ),
      );
    };

    for (const d of [send, receive]) {
      on(d.from, 'data', (chunk: Buffer) => {
        // The side it would go to is gone; what is left is discarded, as ztunnel drops it.
        if (d.done) return;
        d.bytes += chunk.length;
        d.count(chunk.length);
        if (!d.to.write(chunk)) d.from.pause();
      });
      on(d.to, 'drain', () => {
        if (!d.done) d.from.resume();
      });
      on(d.from, 'end', () => {
        if (!d.to.writableEnded && !d.to.destroyed) d.to.end();
      });
      // All data handed over and the end delivered: this direction is complete.
      on(d.to, 'finish', () => finish(d));
    }
    for (const side of [downstream, upstream]) {
      on(side, 'error', onError(side));
      on(side, 'close', () => {
        if (settled) return;
        // Destroyed with an error: 'error' has settled it. Destroyed without: the side is gone.
        const err = side.errored;
        if (err instanceof ProxyError) settle(err);
        else if (err === null || isClose(err)) closed(side);
      });
    }
    // Either side may already be finished or gone when the copy starts.
    for (const side of [downstream, upstream]) {
      if (side.destroyed) {
        const err = side.errored;
        if (err instanceof ProxyError) {
          settle(err);
          return;
        }
        closed(side);
      }
    }
    for (const d of [send, receive]) {
      if (d.from.readableEnded && !d.to.writableEnded && !d.to.destroyed) d.to.end();
      if (d.to.writableFinished) finish(d);
    }
    if (!settled) {
      downstream.resume();
      upstream.resume();
    }
  });
}

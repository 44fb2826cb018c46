import type * as http2 from 'node:http2';
import { HboneError } from './errors.ts';

/**
 * Keeps an HBONE connection honest the way ztunnel's `do_ping_pong` does: wait `intervalMs`, send a
 * PING, and destroy the session with `HBONE_KEEPALIVE_TIMEOUT` if no PONG arrives within
 * `timeoutMs`; after each PONG wait `intervalMs` again. A dead peer behind a silent network path is
 * thus found within interval + timeout. Timers are unref'd; the loop stops with the session.
 * Returns a function that stops it early.
 */
export function startKeepalive(
  session: http2.Http2Session,
  intervalMs: number,
  timeoutMs: number,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  const stop = (): void => {
    stopped = true;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };

  const schedule = (): void => {
    if (stopped || session.destroyed) return;
    timer = setTimeout(ping, intervalMs);
    timer.unref();
  };

  const ping = (): void => {
    if (stopped || session.destroyed || session.closed) return;
    let answered = false;
    timer = setTimeout(() => {
      if (answered || stopped || session.destroyed) return;
      stop();
      session.destroy(
        new HboneError(
          'HBONE_KEEPALIVE_TIMEOUT',
          `no PING acknowledgement within ${timeoutMs} ms; dropping connection`,
        ),
      );
    }, timeoutMs);
    timer.unref();
    session.ping((err) => {
      answered = true;
      if (timer !== undefined) clearTimeout(timer);
      // A ping that fails because the session is closing is not the keepalive's business.
      if (err && !session.destroyed && !session.closed) {
        stop();
        session.destroy(new HboneError('HBONE_KEEPALIVE_TIMEOUT', 'keepalive PING failed', { cause: err }));
        return;
      }
      schedule();
    });
  };

  session.once('close', stop);
  schedule();
  return stop;
}

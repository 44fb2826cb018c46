import * as http2 from 'node:http2';
import { Duplex } from 'node:stream';
import { HboneError } from './errors.ts';

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL } = http2.constants;

// Large enough that a 64 KiB+ write from a socket goes through without splitting, small enough
// that a slow reader on one stream does not pin megabytes per tunnel.
const DEFAULT_HIGH_WATER_MARK = 256 * 1024;

/** Options for {@link HboneTunnel}. */
export interface HboneTunnelOptions {
  /** Buffering on each side of the wrapper, in bytes (default 256 KiB). */
  readonly highWaterMark?: number;
  /** Response headers (client side) kept for the caller, e.g. the destination's `baggage`. */
  readonly responseHeaders?: http2.IncomingHttpHeaders;
}

/**
 * One HBONE tunnel: a CONNECT stream as a byte Duplex with TCP half-close semantics (spec §1.1).
 *
 * - `end()` sends END_STREAM; the peer's END_STREAM ends the readable side (`'end'`), so a FIN on
 *   the user connection and END_STREAM map onto each other in both directions.
 * - An incoming RST_STREAM with NO_ERROR or CANCEL is an EOF, as in ztunnel: `'end'`, no error.
 *   Writing after it fails with `HBONE_BROKEN_PIPE`; `end()` after NO_ERROR succeeds.
 * - Any other reset code fails the tunnel with `HBONE_STREAM_RESET` (`rstCode` set), and losing
 *   the HTTP/2 connection underneath fails it with `HBONE_SESSION_CLOSED` (or the session's own
 *   HboneError, e.g. `HBONE_KEEPALIVE_TIMEOUT`), never with a silent EOF.
 * - `destroy()` resets the stream with CANCEL (EOF for the peer), `destroy(err)` with
 *   INTERNAL_ERROR (an error for the peer).
 */
export class HboneTunnel extends Duplex {
  /** The underlying HTTP/2 stream, for ids, timing and tests; do not read or write it directly. */
  readonly stream: http2.Http2Stream;
  /** Headers of the 200 response (client side); empty on the server side. */
  readonly responseHeaders: http2.IncomingHttpHeaders;
  readonly #session: http2.Http2Session | undefined;
  // The reader has been given EOF (END_STREAM, or a graceful reset).
  #eof = false;
  // RST_STREAM code received while we still had data to send (NO_ERROR or CANCEL).
  #peerStopped: number | undefined;
  #streamError: Error | undefined;
  #bytesRead = 0;
  #bytesWritten = 0;
  // A write acknowledged only once the HTTP/2 stream's queue drains.
  #awaitingDrain: ((err?: Error | null) => void) | undefined;

  constructor(stream: http2.Http2Stream, options: HboneTunnelOptions = {}) {
    const highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    super({
      allowHalfOpen: true,
      readableHighWaterMark: highWaterMark,
      writableHighWaterMark: highWaterMark,
    });
    this.stream = stream;
    this.responseHeaders = options.responseHeaders ?? {};
    // Captured now: Node clears `stream.session` once the stream is destroyed, and the session's
    // state is what tells a dead connection apart from a peer's CANCEL (both close the stream
    // with code 8).
    this.#session = stream.session;
    stream.on('data', (chunk: Buffer) => {
      this.#bytesRead += chunk.length;
      if (!this.push(chunk)) stream.pause();
    });
    stream.on('end', () => {
      // Node also emits 'end' while tearing a reset stream down; those are judged in 'close'.
      if (stream.destroyed) return;
      this.#deliverEof();
    });
    stream.on('error', (err: Error) => {
      this.#streamError ??= err;
    });
    stream.on('drain', () => this.#releaseWriter());
    stream.on('close', () => {
      if (this.#awaitingDrain !== undefined) this.#releaseWriter(this.#writeError());
      this.#onStreamClose();
    });
    if (stream.destroyed) queueMicrotask(() => this.#onStreamClose());
  }

  /** Payload bytes received from the peer. */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** Payload bytes handed to HTTP/2 for the peer. */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  #deliverEof(): void {
    if (this.#eof) return;
    this.#eof = true;
    this.push(null);
  }

  /**
   * How the stream ended, judged once it is closed: an EOF (END_STREAM, or a NO_ERROR/CANCEL
   * reset by the peer) or an error. A lost connection also closes streams with CANCEL, so the
   * session's state decides between the two.
   */
  #closeOutcome(): { readonly eof: true; readonly code: number } | { readonly error: Error } {
    const code = this.stream.rstCode ?? NGHTTP2_NO_ERROR;
    if (this.#streamError instanceof HboneError) return { error: this.#streamError };
    if (this.#eof && code === NGHTTP2_NO_ERROR) return { eof: true, code };
    if (this.#session === undefined || this.#session.destroyed) {
      return {
        error: new HboneError('HBONE_SESSION_CLOSED', 'the http/2 connection carrying the tunnel closed', {
          cause: this.#streamError,
          rstCode: code,
        }),
      };
    }
    if (code === NGHTTP2_NO_ERROR || code === NGHTTP2_CANCEL) return { eof: true, code };
    return {
      error: new HboneError(
        'HBONE_STREAM_RESET',
        `peer reset the tunnel with ${http2ErrorName(code)} (${code})`,
        {
          cause: this.#streamError,
          rstCode: code,
        },
      ),
    };
  }

  #onStreamClose(): void {
    if (this.destroyed) return;
    if (this.#eof && this.writableFinished) return; // both directions done; autoDestroy follows
    const outcome = this.#closeOutcome();
    if ('error' in outcome) {
      this.destroy(outcome.error);
      return;
    }
    if (!this.writableFinished) this.#peerStopped = outcome.code;
    this.#deliverEof();
  }

  // The error a write (or end) gets once the stream can no longer carry data.
  #writeError(): Error {
    if (this.#peerStopped === undefined && this.stream.destroyed) {
      const outcome = this.#closeOutcome();
      if ('error' in outcome) return outcome.error;
      this.#peerStopped = outcome.code;
    }
    const code = this.#peerStopped ?? this.stream.rstCode ?? NGHTTP2_CANCEL;
    return new HboneError(
      'HBONE_BROKEN_PIPE',
      `peer reset the tunnel with ${http2ErrorName(code)} and reads no more`,
      { rstCode: code },
    );
  }

  /**
   * Hands chunks to the HTTP/2 stream and acknowledges them as soon as its queue is below our
   * high-water mark, instead of after each one reached the socket: nghttp2 then always has data
   * to frame, which matters more for throughput than anything else on this path. As with a TCP
   * socket, acknowledged bytes can still be lost if the peer resets the stream.
   */
  #forward(chunks: readonly Buffer[], callback: (err?: Error | null) => void): void {
    if (this.#peerStopped !== undefined || this.stream.closed || this.stream.destroyed) {
      callback(this.#writeError());
      return;
    }
    if (chunks.length > 1) this.stream.cork();
    for (const chunk of chunks) {
      this.#bytesWritten += chunk.length;
      this.stream.write(chunk);
    }
    if (chunks.length > 1) this.stream.uncork();
    if (this.stream.writableLength < this.writableHighWaterMark) callback();
    else this.#awaitingDrain = callback;
  }

  #releaseWriter(err?: Error): void {
    const callback = this.#awaitingDrain;
    if (callback === undefined) return;
    this.#awaitingDrain = undefined;
    callback(err ?? null);
  }

  override _read(): void {
    if (this.stream.isPaused()) this.stream.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#forward([chunk], callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (err?: Error | null) => void): void {
    this.#forward(
      chunks.map((c) => c.chunk),
      callback,
    );
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (this.#peerStopped === undefined && !this.stream.closed && !this.stream.destroyed) {
      this.stream.end((err?: Error | null) => {
        // When our END_STREAM completes a stream the peer had already ended, Node closes and
        // destroys it at once and may then report "cannot call end after a stream was
        // destroyed" to this callback: a clean close, not a failed write. A NO_ERROR close
        // after the peer's EOF is success either way (as after a NO_ERROR reset, below).
        const cleanClose = this.#eof && (this.stream.rstCode ?? NGHTTP2_NO_ERROR) === NGHTTP2_NO_ERROR;
        callback(err && !cleanClose ? this.#writeError() : null);
      });
      return;
    }
    const err = this.#writeError();
    // ztunnel: shutting down after the peer's NO_ERROR reset is fine, after CANCEL a broken pipe.
    callback(this.#peerStopped === NGHTTP2_NO_ERROR ? null : err);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.stream.closed && !this.stream.destroyed) {
      // Node's stream.close() ends the writable side (END_STREAM) before its RST_STREAM, which
      // would show the peer a clean EOF; destroying with an error sends RST_STREAM
      // INTERNAL_ERROR alone. For CANCEL the END_STREAM is harmless: the peer reads both as EOF.
      if (err) this.stream.destroy(err);
      else this.stream.close(NGHTTP2_CANCEL);
    }
    callback(err);
  }
}

// RFC 9113 §7, indexed by code.
const ERROR_NAMES = [
  'NO_ERROR',
  'PROTOCOL_ERROR',
  'INTERNAL_ERROR',
  'FLOW_CONTROL_ERROR',
  'SETTINGS_TIMEOUT',
  'STREAM_CLOSED',
  'FRAME_SIZE_ERROR',
  'REFUSED_STREAM',
  'CANCEL',
  'COMPRESSION_ERROR',
  'CONNECT_ERROR',
  'ENHANCE_YOUR_CALM',
  'INADEQUATE_SECURITY',
  'HTTP_1_1_REQUIRED',
];

/** `CANCEL`, `PROTOCOL_ERROR`, … for an HTTP/2 error code. */
export function http2ErrorName(code: number): string {
  return ERROR_NAMES[code] ?? `error code ${code}`;
}

import { Duplex } from 'node:stream';

// Upper bound on one coalesced read, so a fast sender cannot make us build huge buffers.
const MAX_COALESCE = 256 * 1024;

/**
 * The byte pipe between an HTTP/2 session and its TLS socket, completing the session's writes
 * early so that two Node peers cannot deadlock.
 *
 * Why: node:http2 stops reading its socket while one of its socket writes is pending (a guard
 * against peers that flood frames without reading the answers). A write is pending when the
 * kernel buffers are full because the peer is not reading. With ztunnel's 16 MiB windows, far
 * more data can be in flight than the kernel buffers hold, so when both directions are busy
 * (a bidirectional stream, or many streams each way) both peers block on writes, both stop
 * reading, and the connection hangs until keepalive kills it.
 *
 * How: writes are handed to the socket at once and acknowledged while less than `budget` bytes
 * sit in the socket's queue, so the session goes back to reading. HTTP/2 flow control bounds
 * what a well-behaved peer can make us queue (the DATA it lets us send is at most its
 * connection window), so a budget above that never applies backpressure to legitimate traffic,
 * while a peer that stops reading still meets it and the original guard.
 *
 * Where: on the server side of an HBONE connection, and only when the server cannot keep the
 * same budget in the kernel send buffer instead (`HboneServer` tries SO_SNDBUFFORCE first, which
 * needs CAP_NET_ADMIN). One peer that keeps reading breaks the cycle, and this layer costs ~40%
 * of the receive throughput (Node wraps a JS stream in its JSStreamSocket), so the client keeps
 * Node's native TLS↔HTTP/2 path.
 */
export class SessionTransport extends Duplex {
  readonly #socket: Duplex;
  readonly #budget: number;
  #waiting: (() => void) | undefined;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #flushScheduled = false;
  readonly #onImmediate = (): void => {
    this.#flushScheduled = false;
    this.#flush();
  };

  constructor(socket: Duplex, budget: number) {
    super({ allowHalfOpen: false, readableHighWaterMark: 1024 * 1024, writableHighWaterMark: 1024 * 1024 });
    this.#socket = socket;
    this.#budget = budget;
    socket.on('data', (chunk: Buffer) => {
      // TLS hands over one 16 KiB record at a time. Gathering the records of one event-loop turn
      // and passing them to HTTP/2 as one buffer halves the JS↔C++ crossings on the receive path
      // and keeps DATA frames from being split at record boundaries. (Paused-mode read() was
      // tried too: cheaper per byte, but it sometimes settled into a latency-bound ~250 MB/s.)
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
      if (this.#pendingBytes >= MAX_COALESCE) this.#flush();
      else if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(this.#onImmediate);
      }
    });
    socket.on('end', () => {
      this.#flush();
      this.push(null);
    });
    socket.on('drain', () => this.#release());
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => {
      if (!this.destroyed) this.destroy();
    });
  }

  /** Bytes accepted from the session but not yet taken by the kernel. */
  get queuedBytes(): number {
    return this.#socket.writableLength;
  }

  #flush(): void {
    if (this.#pendingBytes === 0 || this.destroyed) return;
    const data =
      this.#pending.length === 1
        ? (this.#pending[0] as Buffer)
        : Buffer.concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    if (!this.push(data)) this.#socket.pause();
  }

  #release(): void {
    const waiting = this.#waiting;
    if (waiting === undefined || this.#socket.writableLength >= this.#budget) return;
    this.#waiting = undefined;
    waiting();
  }

  #acknowledge(callback: (err?: Error | null) => void): void {
    if (this.#socket.writableLength < this.#budget) {
      callback();
      return;
    }
    this.#waiting = () => callback();
  }

  override _read(): void {
    if (this.#socket.isPaused()) this.#socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#socket.write(chunk);
    this.#acknowledge(callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (err?: Error | null) => void): void {
    this.#socket.cork();
    for (const { chunk } of chunks) this.#socket.write(chunk);
    this.#socket.uncork();
    this.#acknowledge(callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#socket.end(() => callback());
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
    if (!this.#socket.destroyed) this.#socket.destroy(err ?? undefined);
    callback(err);
  }
}

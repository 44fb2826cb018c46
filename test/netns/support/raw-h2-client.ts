/**
 * An HTTP/2 client that writes frames by hand over an established TLS socket, for the abuse a
 * well-behaved client library never sends: streams beyond the peer's SETTINGS_MAX_CONCURRENT_STREAMS,
 * HEADERS immediately followed by RST_STREAM (rapid reset, CVE-2023-44487), endless CONTINUATION
 * frames. It answers the peer's SETTINGS and PINGs, records every frame it receives, and encodes
 * request headers as HPACK literals (no dynamic table), which is all these cases need.
 */
import type { TLSSocket } from 'node:tls';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

const FLAG = { ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

/** RFC 9113 §7 error codes used here. */
export const H2_ERROR = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  ENHANCE_YOUR_CALM: 0xb,
} as const;

/** One frame received from the peer. */
export interface ReceivedFrame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

/** A GOAWAY the peer sent. */
export interface Goaway {
  readonly lastStreamId: number;
  readonly errorCode: number;
  readonly debug: string;
}

export function frame(
  type: number,
  flags: number,
  streamId: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), the first byte's high bits in `mask`. */
function hpackInt(value: number, n: number, mask: number): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([mask | value]);
  const out = [mask | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

function hpackString(s: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(b.length, 7, 0), b]);
}

// RFC 7541 Appendix A indices of the names requests use.
const STATIC_NAME: Readonly<Record<string, number>> = { ':authority': 1, ':method': 2, ':path': 4 };

/** Header fields as "literal without indexing" (§6.2.2): no dynamic table state on either side. */
export function hpackLiterals(headers: readonly (readonly [string, string])[]): Buffer {
  return Buffer.concat(
    headers.map(([name, value]) => {
      const index = STATIC_NAME[name];
      return index === undefined
        ? Buffer.concat([Buffer.from([0]), hpackString(name), hpackString(value)])
        : Buffer.concat([hpackInt(index, 4, 0), hpackString(value)]);
    }),
  );
}

/** The header block of a CONNECT to `authority`. */
export function connectBlock(authority: string): Buffer {
  return hpackLiterals([
    [':method', 'CONNECT'],
    [':authority', authority],
  ]);
}

/** A HEADERS frame opening `streamId` (END_HEADERS unless `endHeaders` is false; never END_STREAM). */
export function headersFrame(streamId: number, block: Buffer, endHeaders = true): Buffer {
  return frame(FRAME.HEADERS, endHeaders ? FLAG.END_HEADERS : 0, streamId, block);
}

export function continuationFrame(streamId: number, block: Buffer, endHeaders = false): Buffer {
  return frame(FRAME.CONTINUATION, endHeaders ? FLAG.END_HEADERS : 0, streamId, block);
}

export function rstStreamFrame(streamId: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, streamId, p);
}

/** The raw client over one TLS socket (ALPN h2 already negotiated). */
export class RawH2Client {
  readonly socket: TLSSocket;
  readonly frames: ReceivedFrame[] = [];
  /** The peer's SETTINGS, by identifier, from its first SETTINGS frame. */
  readonly peerSettings = new Map<number, number>();
  goaway: Goaway | undefined;
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;
  #buffered: Buffer = Buffer.alloc(0);
  #pingSeq = 0;
  readonly #pings = new Map<string, () => void>();
  readonly #listeners = new Set<(f: ReceivedFrame) => void>();

  constructor(socket: TLSSocket) {
    this.socket = socket;
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
  }

  /** Sends the preface and an empty SETTINGS, and waits for the peer's SETTINGS (which it ACKs). */
  async start(timeoutMs: number): Promise<void> {
    const settings = this.waitFor((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0, timeoutMs);
    this.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
    await settings;
  }

  write(bytes: Buffer): boolean {
    if (this.socket.destroyed) return false;
    return this.socket.write(bytes);
  }

  /** Resolves when the peer answers a PING; false when the connection closed or `timeoutMs` passed. */
  ping(timeoutMs: number): Promise<boolean> {
    const data = Buffer.alloc(8);
    data.writeUInt32BE(++this.#pingSeq, 4);
    const key = data.toString('hex');
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        this.#pings.delete(key);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.#pings.set(key, () => done(true));
      void this.closed.then(() => done(false));
      if (!this.write(frame(FRAME.PING, 0, 0, data)) && this.socket.destroyed) done(false);
    });
  }

  /** The first frame (already received or to come) matching `match`; rejects after `timeoutMs`. */
  waitFor(match: (f: ReceivedFrame) => boolean, timeoutMs: number): Promise<ReceivedFrame> {
    const seen = this.frames.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const listener = (f: ReceivedFrame): void => {
        if (!match(f)) return;
        clearTimeout(timer);
        this.#listeners.delete(listener);
        resolve(f);
      };
      const timer = setTimeout(() => {
        this.#listeners.delete(listener);
        reject(new Error(`no matching HTTP/2 frame within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#listeners.add(listener);
    });
  }

  /** Streams the peer answered with HEADERS whose block starts with `:status: 200` (HPACK static 8). */
  acceptedStreams(): Set<number> {
    return new Set(
      this.frames
        .filter(
          (f) =>
            f.type === FRAME.HEADERS &&
            (f.flags & (FLAG.PADDED | FLAG.PRIORITY)) === 0 &&
            f.payload[0] === 0x88,
        )
        .map((f) => f.streamId),
    );
  }

  /** RST_STREAM frames from the peer: stream id → error code. */
  resets(): Map<number, number> {
    return new Map(
      this.frames
        .filter((f) => f.type === FRAME.RST_STREAM)
        .map((f) => [f.streamId, f.payload.readUInt32BE(0)]),
    );
  }

  destroy(): void {
    this.socket.destroy();
  }

  #onData(chunk: Buffer): void {
    this.#buffered = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    while (this.#buffered.length >= 9) {
      const length = this.#buffered.readUIntBE(0, 3);
      if (this.#buffered.length < 9 + length) break;
      const f: ReceivedFrame = {
        type: this.#buffered[3] ?? 0,
        flags: this.#buffered[4] ?? 0,
        streamId: this.#buffered.readUInt32BE(5) & 0x7fffffff,
        payload: Buffer.from(this.#buffered.subarray(9, 9 + length)),
      };
      this.#buffered = this.#buffered.subarray(9 + length);
      this.#onFrame(f);
    }
  }

  #onFrame(f: ReceivedFrame): void {
    // DATA is counted, not kept: an echo could be large.
    this.frames.push(f.type === FRAME.DATA ? { ...f, payload: Buffer.alloc(0) } : f);
    if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) {
      if (this.peerSettings.size === 0) {
        for (let i = 0; i + 6 <= f.payload.length; i += 6) {
          this.peerSettings.set(f.payload.readUInt16BE(i), f.payload.readUInt32BE(i + 2));
        }
      }
      this.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
    } else if (f.type === FRAME.PING) {
      if ((f.flags & FLAG.ACK) === 0) this.write(frame(FRAME.PING, FLAG.ACK, 0, f.payload));
      else this.#pings.get(f.payload.toString('hex'))?.();
    } else if (f.type === FRAME.GOAWAY) {
      this.goaway = {
        lastStreamId: f.payload.readUInt32BE(0) & 0x7fffffff,
        errorCode: f.payload.readUInt32BE(4),
        debug: f.payload.subarray(8).toString('latin1'),
      };
    }
    for (const l of [...this.#listeners]) l(f);
  }
}

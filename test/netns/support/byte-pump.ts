import { createHash } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';

/** What went through one direction of a stream. */
export interface Transfer {
  readonly bytes: number;
  /** SHA-256 of every byte, hex. */
  readonly sha256: string;
}

/**
 * Writes `total` bytes cycling through `pattern` in `chunkSize` writes, honouring backpressure,
 * then ends the stream. The pattern's length should not divide the chunk size, so chunks differ.
 */
export async function pump(
  stream: Writable,
  total: number,
  pattern: Buffer,
  chunkSize = 256 * 1024,
): Promise<Transfer> {
  const hash = createHash('sha256');
  let sent = 0;
  while (sent < total) {
    const n = Math.min(chunkSize, total - sent);
    const offset = sent % pattern.length;
    const piece =
      offset + n <= pattern.length
        ? pattern.subarray(offset, offset + n)
        : Buffer.concat([pattern.subarray(offset), pattern.subarray(0, n - (pattern.length - offset))]);
    hash.update(piece);
    sent += n;
    if (!stream.write(piece)) await drained(stream, `${sent} of ${total} bytes written`);
  }
  stream.end();
  return { bytes: sent, sha256: hash.digest('hex') };
}

/** Waits for 'drain'; a stream that closes or fails first rejects, naming `progress`. */
function drained(stream: Writable, progress: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      stream.off('error', done);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(new Error(`stream closed with ${progress}`));
    stream.on('drain', onDrain);
    stream.on('close', onClose);
    stream.on('error', done);
  });
}

/** Reads a stream to its end (without destroying it: a Duplex keeps its writable side), hashing it. */
export function drain(stream: Readable): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    stream.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    stream.once('error', reject);
    stream.once('end', () => {
      stream.off('error', reject);
      resolve({ bytes, sha256: hash.digest('hex') });
    });
  });
}

/** Reads a stream to its end and returns the bytes (for small messages). */
export function readAll(stream: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.once('error', reject);
    stream.once('end', () => {
      stream.off('error', reject);
      resolve(Buffer.concat(chunks));
    });
  });
}

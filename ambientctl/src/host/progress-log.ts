import { appendFileSync, closeSync, openSync, readSync } from 'node:fs';
import type { ProgressEvent } from './hosted-mesh.ts';

/** One line of `progress.jsonl`: a step of `up`, then how it ended. */
export type ProgressRecord =
  | ({ readonly type: 'step'; readonly at: string } & ProgressEvent)
  | { readonly type: 'ready'; readonly at: string }
  | { readonly type: 'failed'; readonly at: string; readonly code: string; readonly message: string };

/** The daemon's side: appends one JSON line per record (synchronously, so a crash loses none). */
export class ProgressWriter {
  readonly #path: string;

  constructor(path: string) {
    this.#path = path;
  }

  step(e: ProgressEvent): void {
    this.#append({ type: 'step', at: new Date().toISOString(), ...e });
  }

  ready(): void {
    this.#append({ type: 'ready', at: new Date().toISOString() });
  }

  failed(code: string, message: string): void {
    this.#append({ type: 'failed', at: new Date().toISOString(), code, message });
  }

  #append(r: ProgressRecord): void {
    appendFileSync(this.#path, `${JSON.stringify(r)}\n`);
  }
}

/**
 * The CLI's side: reads the records appended since the last call. A line still being written
 * (no newline yet) waits for the next call.
 */
export class ProgressReader {
  readonly #path: string;
  #offset = 0;
  #partial = '';

  constructor(path: string) {
    this.#path = path;
  }

  read(): ProgressRecord[] {
    let fd: number;
    try {
      fd = openSync(this.#path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const chunks: Buffer[] = [];
    try {
      const buf = Buffer.alloc(64 * 1024);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.#offset);
        if (n === 0) break;
        this.#offset += n;
        chunks.push(Buffer.from(buf.subarray(0, n)));
      }
    } finally {
      closeSync(fd);
    }
    const lines = (this.#partial + Buffer.concat(chunks).toString('utf8')).split('\n');
    this.#partial = lines.pop() ?? '';
    const out: ProgressRecord[] = [];
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        out.push(JSON.parse(line) as ProgressRecord);
      } catch {
        // A line the daemon never finished (it was killed mid-write): nothing to show.
      }
    }
    return out;
  }
}

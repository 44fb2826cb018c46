import { Writable } from 'node:stream';
import { type Logger, Logging } from '@ambient/common/log';

/** One parsed log line. */
export type LogLine = Record<string, unknown> & { readonly msg?: string; readonly level?: string };

/** A Logging whose JSON lines are kept in memory, for asserting on what a component logged. */
export class LogCapture {
  readonly lines: LogLine[] = [];
  readonly #logging: Logging;

  constructor(levels = 'debug') {
    const lines = this.lines;
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const text of chunk.toString('utf8').split('\n')) {
          if (text.trim() !== '') lines.push(JSON.parse(text) as LogLine);
        }
        cb();
      },
    });
    this.#logging = new Logging({ levels, destination });
  }

  logger(scope: string): Logger {
    return this.#logging.logger(scope);
  }

  /** Lines whose message is `msg`, optionally also matching some fields. */
  find(msg: string, fields: Readonly<Record<string, unknown>> = {}): LogLine[] {
    return this.lines.filter((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v));
  }
}

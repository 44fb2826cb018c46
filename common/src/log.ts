import { Writable } from 'node:stream';
import { type DestinationStream, type Logger, type LoggerOptions, pino } from 'pino';
import { MeshError } from './errors.ts';

export type { Logger } from 'pino';

/** The levels a scope can be set to, lowest first. `off` silences a scope. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'off'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** `json` (one object a line, the default for control-plane components) or `text` (tab-separated, like ztunnel's). */
export type LogFormat = 'json' | 'text';

export class LogError extends MeshError<'LOG_LEVEL_INVALID'> {}

/**
 * A parsed level specification: a default level plus per-scope overrides, written as
 * `info,xds:debug,hbone:warn` (the same shape as Istio's `--log_output_level`, with `:`).
 */
export interface LevelSpec {
  readonly defaultLevel: LogLevel;
  readonly scopes: Readonly<Record<string, LogLevel>>;
}

function isLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

/** Parses `info,xds:debug`; throws LogError naming the part that is wrong. */
export function parseLevelSpec(spec: string, base?: LevelSpec): LevelSpec {
  let defaultLevel: LogLevel = base?.defaultLevel ?? 'info';
  const scopes: Record<string, LogLevel> = { ...base?.scopes };
  for (const rawPart of spec.split(',')) {
    const part = rawPart.trim();
    if (part === '') continue;
    const colon = part.lastIndexOf(':');
    const scope = colon === -1 ? undefined : part.slice(0, colon).trim();
    const level = (colon === -1 ? part : part.slice(colon + 1)).trim().toLowerCase();
    // `warning` is what Istio's scopes call warn.
    const normalized = level === 'warning' ? 'warn' : level === 'none' ? 'off' : level;
    if (!isLevel(normalized)) {
      throw new LogError(
        'LOG_LEVEL_INVALID',
        `log level ${JSON.stringify(level)}${scope === undefined ? '' : ` for scope ${JSON.stringify(scope)}`} is not one of ${LOG_LEVELS.join(', ')}`,
      );
    }
    if (scope === undefined) defaultLevel = normalized;
    else if (scope === '' || !/^[a-z0-9_.-]+$/i.test(scope)) {
      throw new LogError(
        'LOG_LEVEL_INVALID',
        `log scope ${JSON.stringify(scope)} in ${JSON.stringify(part)} is not a scope name`,
      );
    } else scopes[scope] = normalized;
  }
  return { defaultLevel, scopes };
}

export function formatLevelSpec(spec: LevelSpec): string {
  return [spec.defaultLevel, ...Object.entries(spec.scopes).map(([s, l]) => `${s}:${l}`)].join(',');
}

const PINO_LEVEL_NAMES: Readonly<Record<number, string>> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/**
 * Turns pino's JSON lines into ztunnel-style text: `time  level  scope  message  key=value…`.
 * Text is the opt-in format, so the cost of re-parsing a line is acceptable.
 */
function textDestination(out: DestinationStream | NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      let line: string;
      try {
        const rec = JSON.parse(chunk.toString('utf8')) as Record<string, unknown>;
        const { time, level, scope, msg, ...fields } = rec;
        const parts = [
          new Date(typeof time === 'number' ? time : Date.now()).toISOString(),
          PINO_LEVEL_NAMES[Number(level)] ?? String(level),
          typeof scope === 'string' ? scope : '-',
          typeof msg === 'string' ? msg : '',
        ];
        const kv = Object.entries(fields).map(
          ([k, v]) => `${k}=${typeof v === 'string' && !/[\s"=]/.test(v) ? v : JSON.stringify(v)}`,
        );
        line = `${[...parts, ...kv].join('\t')}\n`;
      } catch {
        line = chunk.toString('utf8');
      }
      out.write(line);
      cb();
    },
  });
}

export interface LoggingOptions {
  readonly levels?: string;
  readonly format?: LogFormat;
  /** Where lines go; defaults to stdout. Tests pass a capture stream. */
  readonly destination?: DestinationStream | NodeJS.WritableStream;
  /** Fields added to every line (component name, node). */
  readonly base?: Record<string, unknown>;
}

/**
 * The logging of one process: a root logger, one child per scope, and the level of each scope,
 * changeable at runtime (ztunnel's `/logging` admin endpoint, istiod's ControlZ).
 */
export class Logging {
  readonly #root: Logger;
  readonly #scopes = new Map<string, Logger>();
  #spec: LevelSpec;

  constructor(options: LoggingOptions = {}) {
    this.#spec = parseLevelSpec(options.levels ?? 'info');
    const dest = options.destination ?? pino.destination({ dest: 1, sync: false });
    const pinoOptions: LoggerOptions = {
      level: 'trace',
      base: options.base ?? null,
      messageKey: 'msg',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: pino.stdSerializers.err },
    };
    if (options.format === 'text') {
      // The text formatter reads epoch millis and numeric levels.
      pinoOptions.timestamp = pino.stdTimeFunctions.epochTime;
      pinoOptions.formatters = {};
      this.#root = pino(pinoOptions, textDestination(dest));
    } else {
      this.#root = pino(pinoOptions, dest);
    }
  }

  /** The logger of a scope (`xds`, `ca`, `hbone`, `access`…); the same object for the same scope. */
  logger(scope: string): Logger {
    let l = this.#scopes.get(scope);
    if (!l) {
      l = this.#root.child({ scope });
      l.level = this.levelOf(scope) === 'off' ? 'silent' : this.levelOf(scope);
      this.#scopes.set(scope, l);
    }
    return l;
  }

  levelOf(scope: string): LogLevel {
    return this.#spec.scopes[scope] ?? this.#spec.defaultLevel;
  }

  /**
   * Applies a level spec on top of the current one (`debug` changes the default, `xds:debug` one
   * scope). With `reset`, scopes not named return to the default. Throws LogError and changes
   * nothing when any part is invalid.
   */
  setLevels(spec: string, options: { reset?: boolean } = {}): LevelSpec {
    this.#spec = parseLevelSpec(spec, options.reset ? undefined : this.#spec);
    for (const [scope, l] of this.#scopes) {
      const level = this.levelOf(scope);
      l.level = level === 'off' ? 'silent' : level;
    }
    return this.#spec;
  }

  levels(): LevelSpec & { readonly active: Readonly<Record<string, LogLevel>> } {
    const active: Record<string, LogLevel> = {};
    for (const scope of [...this.#scopes.keys()].sort()) active[scope] = this.levelOf(scope);
    return { ...this.#spec, active };
  }

  /** Flushes buffered output; call before exit. */
  flush(): Promise<void> {
    return new Promise((resolve) => this.#root.flush(() => resolve()));
  }
}

let processLogging: Logging | undefined;

/**
 * The process-wide Logging, configured once by the binary's `main.ts` through
 * {@link configureProcessLogging}. Libraries take a Logger through their options and fall back to
 * this, so tests inject a capture without touching globals.
 */
export function processLoggingInstance(): Logging {
  processLogging ??= new Logging();
  return processLogging;
}

export function configureProcessLogging(options: LoggingOptions): Logging {
  processLogging = new Logging(options);
  return processLogging;
}

/** A scoped logger from the process-wide Logging. */
export function logger(scope: string): Logger {
  return processLoggingInstance().logger(scope);
}

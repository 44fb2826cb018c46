import { MeshError } from './errors.ts';

/** One environment variable that could not be used, and why. */
export interface EnvProblem {
  readonly envVar: string;
  readonly value: string;
  readonly reason: string;
}

/**
 * A configuration error. It carries every problem found, so an operator fixes all of them in one
 * round instead of one per restart; the message names each variable, its value and the reason.
 */
export class ConfigError extends MeshError<'CONFIG_INVALID'> {
  readonly problems: readonly EnvProblem[];

  constructor(problems: readonly EnvProblem[]) {
    super('CONFIG_INVALID', formatProblems(problems));
    this.problems = problems;
  }
}

function formatProblems(problems: readonly EnvProblem[]): string {
  const lines = problems.map((p) => `${p.envVar}=${JSON.stringify(p.value)}: ${p.reason}`);
  return lines.length === 1
    ? `invalid environment variable ${lines[0]}`
    : `invalid environment variables:\n  ${lines.join('\n  ')}`;
}

export type Env = Readonly<Record<string, string | undefined>>;

const DURATION_UNITS_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

/**
 * Reads typed values out of an environment, once. Each getter returns the default when the
 * variable is unset or empty, records a problem (and returns the default) when it is malformed,
 * and {@link EnvReader.finish} throws one {@link ConfigError} listing every problem.
 *
 * Only `config.ts` files construct one; nothing else reads `process.env`.
 */
export class EnvReader {
  readonly #env: Env;
  readonly #problems: EnvProblem[] = [];

  constructor(env: Env) {
    this.#env = env;
  }

  /** The raw value, or undefined when unset or empty (Kubernetes renders unset values as ""). */
  raw(name: string): string | undefined {
    const v = this.#env[name];
    return v === undefined || v === '' ? undefined : v;
  }

  /** Records a problem found by a caller's own cross-field validation. */
  problem(envVar: string, value: string, reason: string): void {
    this.#problems.push({ envVar, value, reason });
  }

  string(name: string, fallback: string): string;
  string(name: string, fallback?: undefined): string | undefined;
  string(name: string, fallback?: string): string | undefined {
    const v = this.raw(name);
    if (v?.includes('\0')) {
      this.problem(name, v, 'contains a NUL byte');
      return fallback;
    }
    return v ?? fallback;
  }

  /** A value that must be present. */
  required(name: string): string {
    const v = this.string(name);
    if (v === undefined) {
      this.problem(name, '', 'is required but not set');
      return '';
    }
    return v;
  }

  int(name: string, fallback: number, bounds: { min?: number; max?: number } = {}): number {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    if (!/^-?\d+$/.test(v.trim())) {
      this.problem(name, v, 'is not an integer');
      return fallback;
    }
    const n = Number(v.trim());
    if (!Number.isSafeInteger(n)) {
      this.problem(name, v, 'is out of the safe integer range');
      return fallback;
    }
    if (bounds.min !== undefined && n < bounds.min) {
      this.problem(name, v, `must be at least ${bounds.min}`);
      return fallback;
    }
    if (bounds.max !== undefined && n > bounds.max) {
      this.problem(name, v, `must be at most ${bounds.max}`);
      return fallback;
    }
    return n;
  }

  port(name: string, fallback: number): number {
    const before = this.#problems.length;
    const n = this.int(name, fallback, { min: 0, max: 65535 });
    if (this.#problems.length > before) {
      const last = this.#problems.pop() as EnvProblem;
      this.problem(name, last.value, 'is not a TCP port (an integer from 0 to 65535)');
    }
    return n;
  }

  /** Accepts true/false, 1/0, yes/no, on/off, case-insensitively. */
  bool(name: string, fallback: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    const s = v.trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(s)) return true;
    if (['false', '0', 'no', 'off'].includes(s)) return false;
    this.problem(name, v, 'is not a boolean (use true or false)');
    return fallback;
  }

  /** A duration such as `500ms`, `10s`, `5m`, `24h`, returned in milliseconds. */
  durationMs(name: string, fallbackMs: number, bounds: { minMs?: number; maxMs?: number } = {}): number {
    const v = this.raw(name);
    if (v === undefined) return fallbackMs;
    const ms = parseDurationMs(v);
    if (ms === undefined) {
      this.problem(name, v, 'is not a duration (a number followed by ms, s, m or h, e.g. 10s)');
      return fallbackMs;
    }
    if (bounds.minMs !== undefined && ms < bounds.minMs) {
      this.problem(name, v, `must be at least ${bounds.minMs}ms`);
      return fallbackMs;
    }
    if (bounds.maxMs !== undefined && ms > bounds.maxMs) {
      this.problem(name, v, `must be at most ${bounds.maxMs}ms`);
      return fallbackMs;
    }
    return ms;
  }

  oneOf<const T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    if ((allowed as readonly string[]).includes(v)) return v as T;
    this.problem(name, v, `must be one of ${allowed.join(', ')}`);
    return fallback;
  }

  /** A comma-separated list with blanks dropped. */
  list(name: string, fallback: readonly string[] = []): readonly string[] {
    const v = this.raw(name);
    if (v === undefined) return fallback;
    return v
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
  }

  /** Every variable whose name starts with `prefix`, with the prefix stripped (e.g. ISTIO_META_*). */
  withPrefix(prefix: string): Readonly<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(this.#env)) {
      if (k.startsWith(prefix) && k.length > prefix.length && v !== undefined)
        out[k.slice(prefix.length)] = v;
    }
    return out;
  }

  /**
   * Records a problem for each port that repeats an earlier one (`[ENV_NAME, port]` pairs, in
   * order); port 0 (any free port) never collides.
   */
  distinctPorts(ports: readonly (readonly [string, number])[]): void {
    const seen = new Map<number, string>();
    for (const [name, port] of ports) {
      if (port === 0) continue;
      const other = seen.get(port);
      if (other !== undefined) this.problem(name, String(port), `is the same port as ${other}`);
      else seen.set(port, name);
    }
  }

  /** Throws a ConfigError listing every problem recorded so far. */
  finish(): void {
    if (this.#problems.length > 0) throw new ConfigError([...this.#problems]);
  }
}

/** Parses `500ms`, `10s`, `1.5m`, `24h`; undefined when malformed. */
export function parseDurationMs(text: string): number | undefined {
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * DURATION_UNITS_MS[m[2] as keyof typeof DURATION_UNITS_MS];
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/** Freezes a configuration object and everything it holds, so no component changes it. */
export function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/** One environment variable a binary reads, as its README and `--help` document it. */
export interface EnvVarDoc {
  readonly name: string;
  /** The default as text (`15012`, `100ms`), or a description of it (`<LOCAL_DATA_DIR>/ca`). */
  readonly default: string;
  readonly description: string;
}

export function envVar(name: string, def: string, description: string): EnvVarDoc {
  return { name, default: def, description };
}

/**
 * The environment variable table of a README and `--help`, as Markdown: one row per variable
 * with its default (in code quotes when `defaultAsCode`) and meaning.
 */
export function renderEnvTable(
  vars: Iterable<EnvVarDoc>,
  options: { readonly defaultAsCode?: boolean } = {},
): string {
  const rows = [...vars].map((v) => {
    const def = options.defaultAsCode ? `\`${v.default}\`` : v.default;
    return `| \`${v.name}\` | ${def} | ${v.description} |`;
  });
  return ['| Variable | Default | Meaning |', '|---|---|---|', ...rows].join('\n');
}

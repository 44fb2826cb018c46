/**
 * The error base every package builds on. Each package declares its own subclass in its own
 * `errors.ts` with a string-literal union of stable codes; the code is what metrics label and what
 * the access log prints as `error`, so codes never change meaning once released.
 */
export class MeshError<C extends string = string> extends Error {
  readonly code: C;
  /** True when the operation may succeed if tried again unchanged (a retry loop reads this). */
  readonly retryable: boolean;

  constructor(code: C, message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    // Subclasses keep their own name in stack traces and logs without redeclaring it.
    this.name = new.target.name;
  }

  /** A log-friendly shape: pino and JSON.stringify drop non-enumerable Error fields otherwise. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { name: this.name, code: this.code, message: this.message };
    if (this.retryable) out.retryable = true;
    if (this.cause !== undefined) {
      out.cause = this.cause instanceof MeshError ? this.cause.toJSON() : errorMessage(this.cause);
    }
    return out;
  }
}

/**
 * Walks the `cause` chain and reports whether any link carries this code: a MeshError, a
 * NativeError from the addon (same shape, no shared base) or a Node system error (`ECONNRESET`).
 */
export function causedBy(err: unknown, code: string): boolean {
  const seen = new Set<unknown>();
  let cur: unknown = err;
  while (cur instanceof Error && !seen.has(cur)) {
    if ((cur as { code?: unknown }).code === code) return true;
    seen.add(cur);
    cur = cur.cause;
  }
  return false;
}

/** The message of anything thrown, for log lines; never throws itself. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

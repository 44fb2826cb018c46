import { constants } from 'node:os';

/**
 * The errno name reported by the kernel, e.g. `'EPERM'`, `'ENOENT'`, `'ETIMEDOUT'`. The addon reports
 * whatever the failing system call returned, so the set is the kernel's errno list rather than a list
 * of our own.
 */
export type NativeErrorCode = `E${string}`;

/** Errors that can go away when the same call is made again later. */
const retryableCodes: ReadonlySet<string> = new Set([
  'EAGAIN',
  'EWOULDBLOCK',
  'EINTR',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOBUFS',
]);

/**
 * A failed system call in @ambient/native: `code` is the errno name, `errno` its (positive) number.
 *
 * It has the shape of `MeshError` (code, retryable, cause, toJSON) without extending it: the addon
 * is the lowest layer and `@ambient/common` depends on it (ZDS), so it cannot import common back.
 * `causedBy` in common matches it by code all the same.
 */
export class NativeError extends Error {
  readonly code: NativeErrorCode;
  readonly retryable: boolean;
  /** Positive errno value, as in errno(3). */
  readonly errno: number;
  /** The system call (or libbpf function) that failed, e.g. `'open'`, `'setns'`, `'bpf_object__load'`. */
  readonly syscall: string;

  constructor(
    code: NativeErrorCode,
    message: string,
    options: { errno?: number; syscall: string; cause?: unknown; retryable?: boolean },
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NativeError';
    this.code = code;
    this.retryable = options.retryable ?? retryableCodes.has(code);
    this.errno = options.errno ?? errnoOf(code);
    this.syscall = options.syscall;
  }

  toJSON(): Record<string, unknown> {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      errno: this.errno,
      syscall: this.syscall,
      ...(this.retryable ? { retryable: true } : {}),
    };
  }
}

function errnoOf(code: string): number {
  return (constants.errno as Record<string, number | undefined>)[code] ?? 0;
}

interface RawNativeError extends Error {
  code: NativeErrorCode;
  errno: number;
  syscall: string;
}

function isRawNativeError(err: unknown): err is RawNativeError {
  if (!(err instanceof Error) || err instanceof NativeError) return false;
  const e = err as Partial<RawNativeError>;
  return (
    typeof e.code === 'string' &&
    e.code.startsWith('E') &&
    typeof e.errno === 'number' &&
    typeof e.syscall === 'string'
  );
}

/**
 * Turns an error thrown by the addon (a plain Error carrying code/errno/syscall) into a NativeError.
 * Anything else (a TypeError for a bad argument, an existing NativeError) is returned unchanged.
 */
export function toNativeError(err: unknown): unknown {
  if (!isRawNativeError(err)) return err;
  return new NativeError(err.code, err.message, { errno: err.errno, syscall: err.syscall });
}

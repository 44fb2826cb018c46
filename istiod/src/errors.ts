import { MeshError } from '@ambient/common/errors';

/**
 * Why the istiod binary could not run. Configuration problems are `ConfigError` (from
 * `@ambient/common/env`), component failures keep their own classes (`CaError`, `XdsError`,
 * `LocalSourceError`, …); these codes cover what only the binary itself decides.
 */
export type IstiodErrorCode =
  /** The command line names an unknown command or flag. */
  | 'USAGE_INVALID'
  /** The admin (8080) or monitoring (15014) HTTP server could not listen on its address. */
  | 'HTTP_LISTEN_FAILED'
  /** A port or address was asked for before the component serving it started. */
  | 'NOT_STARTED';

export class IstiodError extends MeshError<IstiodErrorCode> {}

/** Process exit codes of `istiod` (sysexits-like: 2 is a usage or configuration error). */
export const EXIT_CODE = {
  OK: 0,
  /** Start failed, or a component failed while running. */
  FAILURE: 1,
  /** Bad command line or bad environment: fix the invocation, a retry will not help. */
  USAGE: 2,
} as const;

import { MeshError } from '@ambient/common/errors';

/**
 * Why the istiod binary could not run. Configuration problems are `ConfigError` (from
 * `@ambient/common/env`), component failures keep their own classes (`CaError`, `XdsError`,
 * `LocalSourceError`, …); these codes cover what only the binary itself decides.
 */
export type IstiodErrorCode =
  /** The command line names an unknown command or flag. */
  'USAGE_INVALID';

export class IstiodError extends MeshError<IstiodErrorCode> {}

/** Process exit codes of `istiod`, shared by every binary. */
export { EXIT_CODE } from '@ambient/common/cli';

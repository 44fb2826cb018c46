import { MeshError } from '@ambient/common/errors';

/**
 * Why the installer is not ready (each is also the `problem` of a not-ready InstallStatus):
 * - `OPTIONS_INVALID`: an installer option is unusable (relative path, bad file name);
 * - `BINARY_INSTALL_FAILED`: the plugin binary could not be read or copied into the CNI bin dir;
 * - `NO_PRIMARY_CONFIG`: the CNI conf dir holds no network config yet (the primary CNI has not
 *   started); the installer waits for one;
 * - `CONFIG_INVALID`: the config file pods would use is malformed; it is left untouched;
 * - `CONFIG_SHADOWED`: istio-cni's own conflist is not the one runtimes load (another file sorts
 *   first), so pods would start without the plugin;
 * - `CONFIG_CONTENDED`: another writer kept changing the file while it was being chained;
 * - `CONFIG_WRITE_FAILED`: reading or writing a config file failed.
 */
export type InstallErrorCode =
  | 'OPTIONS_INVALID'
  | 'BINARY_INSTALL_FAILED'
  | 'NO_PRIMARY_CONFIG'
  | 'CONFIG_INVALID'
  | 'CONFIG_SHADOWED'
  | 'CONFIG_CONTENDED'
  | 'CONFIG_WRITE_FAILED';

export class InstallError extends MeshError<InstallErrorCode> {}

import { join } from 'node:path';
import { AmbientctlError } from '../errors.ts';

export const DEFAULT_MESH_NAME = 'ambient';

/**
 * The state directory of the mesh called `name`: `<stateRoot>/<name>`. Names are short DNS
 * labels, since they end up in paths of unix sockets (108 bytes at most).
 */
export function stateDirOf(stateRoot: string, name: string): string {
  if (!/^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$/.test(name)) {
    throw new AmbientctlError(
      'USAGE',
      `--name ${JSON.stringify(name)}: use 1 to 24 lowercase letters, digits and dashes, starting and ending with a letter or digit`,
    );
  }
  return join(stateRoot, name);
}

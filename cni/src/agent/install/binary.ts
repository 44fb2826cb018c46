import { chmod, mkdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ISTIO_CNI_PLUGIN_TYPE } from '../../plugin-protocol.ts';
import { writeFileAtomic } from './atomic-file.ts';

/** Where the plugin binary goes in a CNI bin dir (runtimes look the `type` up there). */
export function installedBinaryPath(binDir: string): string {
  return join(binDir, ISTIO_CNI_PLUGIN_TYPE);
}

/**
 * Puts the plugin binary into the CNI bin dir: nothing happens when an identical executable is
 * already there; otherwise it is replaced atomically, so a runtime executing the plugin at that
 * moment runs either the old or the new binary, never a truncated one. Returns whether it wrote.
 */
export async function installBinary(source: string, binDir: string): Promise<boolean> {
  const wanted = await readFile(source);
  const target = installedBinaryPath(binDir);
  try {
    const [current, st] = await Promise.all([readFile(target), stat(target)]);
    if (current.equals(wanted)) {
      if ((st.mode & 0o111) !== 0o111) await chmod(target, 0o755);
      return false;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(binDir, { recursive: true });
  await writeFileAtomic(target, wanted, { mode: 0o755 });
  return true;
}

/** Removes the plugin binary; returns whether it was there. */
export async function removeBinary(binDir: string): Promise<boolean> {
  try {
    await unlink(installedBinaryPath(binDir));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

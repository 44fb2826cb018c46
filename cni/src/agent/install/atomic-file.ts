import { randomBytes } from 'node:crypto';
import { renameSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * The temp file a write goes through: hidden, in the target's directory (so the rename stays on
 * one filesystem), and with a suffix no container runtime loads (`.conf`, `.conflist` and `.json`
 * are the extensions they read).
 */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/**
 * Replaces `path` with `data` so that a reader sees either the old or the new content, never a
 * mix: write a temp file, fsync it, rename it over the target. `beforeRename` runs last and may
 * veto the rename (return false), for compare-and-swap on files another agent rewrites; the temp
 * file is removed then. It is synchronous and directly followed by a synchronous rename, so no
 * other work of this process (and no thread-pool delay) falls between the check and the swap.
 * Returns whether the file was replaced.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: { mode: number; beforeRename?: () => boolean },
): Promise<boolean> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx', options.mode);
  let renamed = false;
  try {
    try {
      await fh.writeFile(data);
      // The process umask applies at open; the target mode must not depend on it.
      await fh.chmod(options.mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (options.beforeRename !== undefined && !options.beforeRename()) return false;
    renameSync(tmp, path);
    renamed = true;
    return true;
  } finally {
    if (!renamed) await unlink(tmp).catch(() => {});
  }
}

/**
 * Builds the istio-cni plugin binary: `plugin/istio-cni.c` becomes `build/istio-cni`, compiled by
 * the system C compiler with `-Wall -Wextra -Werror -O2` and linked statically, so the copy the
 * installer puts in the host's CNI bin dir needs nothing from the host (not even a matching glibc).
 * Skips the compile when the binary is newer than its source. Run directly, or import
 * {@link buildPlugin} (the plugin tests do, so they always run the current source).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = dirname(dirname(fileURLToPath(import.meta.url)));
/** The plugin's C source. */
export const PLUGIN_SOURCE = join(packageDir, 'plugin', 'istio-cni.c');
/** Where the build puts the binary (also the directory to use as a CNI bin dir in tests). */
export const PLUGIN_BUILD_DIR = join(packageDir, 'build');
export const PLUGIN_BINARY = join(PLUGIN_BUILD_DIR, 'istio-cni');

const FLAGS = ['-std=c11', '-Wall', '-Wextra', '-Werror', '-O2'];

/** Compiles the plugin if needed; returns the binary's path. Throws with the compiler's output. */
export function buildPlugin(options: { force?: boolean; quiet?: boolean } = {}): string {
  if (
    !options.force &&
    existsSync(PLUGIN_BINARY) &&
    statSync(PLUGIN_BINARY).mtimeMs >= statSync(PLUGIN_SOURCE).mtimeMs
  ) {
    return PLUGIN_BINARY;
  }
  mkdirSync(PLUGIN_BUILD_DIR, { recursive: true });
  // Compile beside the target and rename, so a test or installer never sees a half-written binary.
  const tmp = `${PLUGIN_BINARY}.tmp-${process.pid}`;
  const compile = (extra: string[]) =>
    spawnSync('cc', [...FLAGS, ...extra, '-o', tmp, PLUGIN_SOURCE], { cwd: packageDir, encoding: 'utf8' });
  let result = compile(['-static']);
  if (result.status !== 0 && /cannot find -lc|static/.test(result.stderr ?? '')) {
    // No static libc on this machine: a dynamic binary still works on the machine that built it.
    console.warn('@ambient/cni build: static libc unavailable; istio-cni is linked dynamically');
    result = compile([]);
  }
  if (result.error) throw new Error(`cc could not start: ${result.error.message}`);
  if (result.status !== 0 || (result.stderr ?? '').trim() !== '') {
    rmSync(tmp, { force: true });
    throw new Error(`cc ${FLAGS.join(' ')} ${PLUGIN_SOURCE} failed:\n${result.stderr}`);
  }
  renameSync(tmp, PLUGIN_BINARY);
  if (!options.quiet) console.log(`@ambient/cni build: cc istio-cni.c -> ${PLUGIN_BINARY}`);
  return PLUGIN_BINARY;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    buildPlugin({ force: process.argv.includes('--force') });
  } catch (err) {
    console.error(`@ambient/cni build: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}

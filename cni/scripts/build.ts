/**
 * `npm run build -w @ambient/cni`: every native artefact of the package, one step after another
 * (each step is its own script and skips work that is up to date):
 * - `build-bpf.ts`: the eBPF redirection objects (`build/bpf/*.bpf.o`);
 * - `build-plugin.ts`: the istio-cni plugin binary (`build/istio-cni`).
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const scriptsDir = dirname(fileURLToPath(import.meta.url));

for (const step of ['build-bpf.ts', 'build-plugin.ts']) {
  const result = spawnSync(process.execPath, [join(scriptsDir, step)], { stdio: 'inherit' });
  if (result.error) {
    console.error(`@ambient/cni build: ${step} could not start: ${result.error.message}`);
    process.exit(1);
  }
  if (result.status !== 0) {
    console.error(`@ambient/cni build: ${step} failed`);
    process.exit(result.status ?? 1);
  }
}

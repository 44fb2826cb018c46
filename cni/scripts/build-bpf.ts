/**
 * Builds @ambient/cni's eBPF objects: every `bpf/*.bpf.c` becomes `build/bpf/<name>.bpf.o`, with the
 * same clang invocation as @ambient/native's build (`-O2 -g -target bpf` plus the multiarch include
 * directory for asm/ headers). Offline; skips objects newer than their source.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = dirname(dirname(fileURLToPath(import.meta.url)));
const sourceDir = join(packageDir, 'bpf');
const outDir = join(packageDir, 'build', 'bpf');

function fail(message: string): never {
  console.error(`@ambient/cni build: ${message}`);
  process.exit(1);
}

function multiarchInclude(): string {
  const triples: Partial<Record<NodeJS.Architecture, string>> = {
    x64: 'x86_64-linux-gnu',
    arm64: 'aarch64-linux-gnu',
  };
  const triple = triples[process.arch];
  if (!triple) return fail(`no multiarch include directory known for ${process.arch}`);
  return `/usr/include/${triple}`;
}

if (process.platform !== 'linux') fail(`linux only; this platform is ${process.platform}`);
mkdirSync(outDir, { recursive: true });
for (const file of readdirSync(sourceDir).filter((f) => f.endsWith('.bpf.c'))) {
  const source = join(sourceDir, file);
  const output = join(outDir, `${basename(file, '.c')}.o`);
  if (existsSync(output) && statSync(output).mtimeMs >= statSync(source).mtimeMs) continue;
  console.log(`@ambient/cni build: clang ${file}`);
  const args = [
    '-O2',
    '-g',
    '-Wall',
    '-target',
    'bpf',
    `-I${multiarchInclude()}`,
    '-c',
    source,
    '-o',
    output,
  ];
  const result = spawnSync('clang', args, { cwd: packageDir, stdio: 'inherit' });
  if (result.error) fail(`clang could not start: ${result.error.message}`);
  if (result.status !== 0) fail(`clang ${args.join(' ')} exited with ${result.status ?? result.signal}`);
}

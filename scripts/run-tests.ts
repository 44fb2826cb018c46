// The project's test command (`npm test`): builds what the tests need, checks types and lint,
// runs every node:test suite, and fails a CI run in which a required suite was skipped.
//
// Usage: npm test [-- --quick] [-- <test file or glob>...]
//   --quick   skip the build, typecheck and lint steps (for a fast local loop)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const bin = (name: string): string => join(root, 'node_modules', '.bin', name);
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const explicitFiles = args.filter((a) => !a.startsWith('--'));
const inCi = process.env.CI === 'true' || process.env.CI === '1';

// Unit tests live beside the code, package integration tests under <pkg>/test, network and
// end-to-end suites under test/. Listed in the order they run: fast first.
const DEFAULT_GLOBS = [
  'common/src/**/*.test.ts',
  '*/src/**/*.test.ts',
  '*/test/**/*.test.ts',
  'native/test/**/*.test.ts',
  'test/**/*.test.ts',
];

function step(title: string, cmd: string, cmdArgs: string[], env: NodeJS.ProcessEnv = {}): void {
  console.log(`\n▶ ${title}: ${[cmd.replace(`${root}`, ''), ...cmdArgs].join(' ')}`);
  const t0 = Date.now();
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) {
    console.error(`✖ ${title} failed (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
  console.log(`✔ ${title} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
}

console.log(
  `node ${process.version} (${process.platform}/${process.arch}), uid ${process.getuid?.() ?? '?'}${inCi ? ', CI' : ''}`,
);
if (!process.version.startsWith('v24.')) {
  console.error(
    `✖ the project runs on Node 24; this is ${process.version}. Run it through npm (npm test), which uses the pinned node@24.`,
  );
  process.exit(1);
}

const turboEnv = { TURBO_TELEMETRY_DISABLED: '1', DO_NOT_TRACK: '1' };
if (!quick) {
  step(
    'build (generate protos, compile)',
    bin('turbo'),
    ['run', 'build', '--output-logs=errors-only'],
    turboEnv,
  );
  step('typecheck', bin('turbo'), ['run', 'typecheck', '--output-logs=errors-only'], turboEnv);
  step('lint', bin('biome'), ['check', '.']);
}

const TEST_RUN_DEADLINE_MS = 60 * 60_000;
const work = mkdtempSync(join(tmpdir(), 'ambient-tests-'));
const skipReport = join(work, 'skips.jsonl');
const testArgs = [
  '--conditions=@ambient/source',
  '--test',
  '--test-timeout=600000',
  // No --test-force-exit: with it, Node drops the tail of a file's results before the runner reads
  // them, failures included, and still exits 0 (nodejs/node#64833). A file that keeps a handle
  // open is caught by the deadline below instead.
  '--test-reporter=spec',
  '--test-reporter-destination=stdout',
  `--test-reporter=${join(root, 'scripts', 'test-reporter.ts')}`,
  `--test-reporter-destination=${join(work, 'skip-reporter.out')}`,
  ...(explicitFiles.length > 0 ? explicitFiles : DEFAULT_GLOBS),
];
console.log(`\n▶ tests: node ${testArgs.join(' ')}`);
const r = spawnSync(process.execPath, testArgs, {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, AMBIENT_SKIP_REPORT: skipReport },
  // Well under CI's 90 minutes: a test file that never exits (an open handle) fails the run here,
  // with the spec output above showing the last file that reported.
  timeout: TEST_RUN_DEADLINE_MS,
  killSignal: 'SIGKILL',
});
if (r.error !== undefined || r.signal !== null) {
  console.error(
    `✖ the test run did not finish within ${TEST_RUN_DEADLINE_MS / 60_000} minutes (${r.error?.message ?? r.signal}); a test file probably keeps a handle open`,
  );
  process.exit(1);
}

let skips: { file?: string; name: string; reason: string }[] = [];
try {
  skips = readFileSync(skipReport, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));
} catch {
  // No test was skipped.
}
rmSync(work, { recursive: true, force: true });

// A skip is acceptable in CI only when its reason says the suite is optional there (e.g. the kind
// e2e suite on a machine without a container engine). Anything else hides coverage.
const required = skips.filter((s) => !s.reason.startsWith('[optional]'));
for (const s of skips) console.log(`  skipped: ${s.file ?? '?'} › ${s.name}: ${s.reason}`);
if (r.status !== 0) process.exit(r.status ?? 1);
if (inCi && required.length > 0) {
  console.error(
    `✖ ${required.length} required test(s) were skipped in CI; a skipped suite is a failed suite here.`,
  );
  process.exit(1);
}

import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { EXIT_CODE, parseCommandLine, runProgram, UsageError } from './cli.ts';
import { EnvReader } from './env.ts';
import { MeshError } from './errors.ts';
import { Lifecycle } from './lifecycle.ts';

const SPEC = { program: 'demo', run: 'serve' } as const;

describe('parseCommandLine', () => {
  it('defaults to the run command and accepts version and help', () => {
    assert.equal(parseCommandLine(SPEC, []), 'serve');
    assert.equal(parseCommandLine(SPEC, ['serve']), 'serve');
    assert.equal(parseCommandLine(SPEC, ['version']), 'version');
    assert.equal(parseCommandLine(SPEC, ['help']), 'help');
  });

  it('lets --help, -h and --version win over anything else', () => {
    assert.equal(parseCommandLine(SPEC, ['serve', '-h']), 'help');
    assert.equal(parseCommandLine(SPEC, ['--help', '--bogus']), 'help');
    assert.equal(parseCommandLine(SPEC, ['serve', '--version']), 'version');
  });

  for (const [args, message] of [
    [['--bogus'], 'unknown flag "--bogus"; see demo --help'],
    [['serve', 'extra'], 'unexpected argument "extra" after serve; see demo --help'],
    [['proxy'], 'unknown command "proxy"; see demo --help'],
  ] as const) {
    it(`rejects ${args.join(' ')} naming what is wrong`, () => {
      assert.throws(
        () => parseCommandLine(SPEC, args),
        (err: unknown) =>
          err instanceof UsageError && err.code === 'USAGE_INVALID' && err.message === message,
      );
    });
  }

  it('throws the error the spec builds', () => {
    class DemoError extends MeshError<'USAGE_INVALID'> {}
    const spec = { ...SPEC, usageError: (m: string) => new DemoError('USAGE_INVALID', m) };
    assert.throws(() => parseCommandLine(spec, ['-x']), DemoError);
  });
});

/** Runs `fn` with process.stdout/stderr writes captured (runProgram prints help and errors there). */
async function captured<T>(fn: () => Promise<T>): Promise<{ result: T; stdout: string; stderr: string }> {
  const out = { stdout: '', stderr: '' };
  const original = { stdout: process.stdout.write, stderr: process.stderr.write };
  process.stdout.write = ((chunk: string) => {
    out.stdout += chunk;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => {
    out.stderr += chunk;
    return true;
  }) as typeof process.stderr.write;
  try {
    return { result: await fn(), ...out };
  } finally {
    process.stdout.write = original.stdout;
    process.stderr.write = original.stderr;
  }
}

function program(
  env: Record<string, string>,
  start: (lifecycle: Lifecycle) => Promise<void> | void = () => {},
) {
  const logs = new PassThrough();
  let logText = '';
  logs.on('data', (b: Buffer) => {
    logText += b.toString();
  });
  const spec = {
    ...SPEC,
    usage: 'Usage: demo [serve | version | help]\n',
    envTable: () => '| Variable | Default | Meaning |',
    version: () => '1.2.3',
    loadConfig: () => {
      const r = new EnvReader(env);
      const config = { drainMs: r.durationMs('DRAIN', 1000) };
      r.finish();
      return config;
    },
    logConfig: () => ({ levels: 'info', destination: logs }),
    drainDeadlineMs: (config: { drainMs: number }) => config.drainMs,
    start: async () => {
      const lifecycle = new Lifecycle();
      await start(lifecycle);
      await lifecycle.start();
      return { lifecycle };
    },
  };
  return { spec, logs: () => logText };
}

describe('runProgram', () => {
  it('prints help with the environment table and the version, exiting 0', async () => {
    const { spec } = program({});
    const help = await captured(() => runProgram(spec, ['help']));
    assert.equal(help.result, EXIT_CODE.OK);
    assert.equal(help.stdout, 'Usage: demo [serve | version | help]\n\n| Variable | Default | Meaning |\n');
    const version = await captured(() => runProgram(spec, ['--version']));
    assert.equal(version.result, EXIT_CODE.OK);
    assert.equal(version.stdout, '1.2.3\n');
  });

  it('exits 2 on a usage error and on a configuration error, naming the problem', async () => {
    const usage = await captured(() => runProgram(program({}).spec, ['nope']));
    assert.equal(usage.result, EXIT_CODE.USAGE);
    assert.equal(usage.stderr, 'demo: unknown command "nope"; see demo --help\n');
    const config = await captured(() => runProgram(program({ DRAIN: 'soon' }).spec, []));
    assert.equal(config.result, EXIT_CODE.USAGE);
    assert.match(config.stderr, /^demo: invalid environment variable DRAIN="soon": is not a duration/);
  });

  it('exits 1 when the program cannot start', async () => {
    const { spec, logs } = program({}, (lifecycle) => {
      lifecycle.add({
        name: 'listener',
        start: () => {
          throw new Error('port in use');
        },
        stop: () => {},
      });
    });
    const r = await captured(() => runProgram(spec, []));
    assert.equal(r.result, EXIT_CODE.FAILURE);
    assert.match(logs(), /demo failed to start/);
    assert.match(logs(), /port in use/);
  });

  it('drains on SIGTERM and exits 0 once stopped', async () => {
    let stops = 0;
    const { spec, logs } = program({ DRAIN: '2s' }, (lifecycle) => {
      lifecycle.add({ name: 'server', start: () => {}, stop: () => void stops++ });
    });
    const before = process.listenerCount('SIGTERM');
    const running = runProgram(spec, ['serve']);
    // The signal handlers are installed once the program has started.
    while (process.listenerCount('SIGTERM') === before) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    process.kill(process.pid, 'SIGTERM');
    assert.equal(await running, EXIT_CODE.OK);
    assert.equal(stops, 1);
    assert.match(logs(), /demo stopped/);
  });
});

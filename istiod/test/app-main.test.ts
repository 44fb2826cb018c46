/** The istiod binary as an operator runs it: command line, exit codes, signals. */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { IstiodError } from '../src/errors.ts';
import { parseCommandLine } from '../src/main.ts';

const MAIN = new URL('../src/main.ts', import.meta.url).pathname;

function run(
  args: string[],
  env: Record<string, string> = {},
): { child: ChildProcess; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, ['--conditions=@ambient/source', MAIN, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const done = once(child, 'exit').then(([code]) => ({ code: code as number | null, stdout, stderr }));
  return { child, done };
}

describe('parseCommandLine', () => {
  it('runs discovery by default and by name', () => {
    assert.equal(parseCommandLine([]), 'discovery');
    assert.equal(parseCommandLine(['discovery']), 'discovery');
  });

  it('reads version and help in their usual spellings', () => {
    assert.equal(parseCommandLine(['version']), 'version');
    assert.equal(parseCommandLine(['--version']), 'version');
    assert.equal(parseCommandLine(['help']), 'help');
    assert.equal(parseCommandLine(['--help']), 'help');
    assert.equal(parseCommandLine(['discovery', '-h']), 'help');
  });

  it('refuses unknown commands, flags and extra arguments, naming them', () => {
    const usage = (args: string[], pattern: RegExp) =>
      assert.throws(
        () => parseCommandLine(args),
        (err: unknown) =>
          err instanceof IstiodError && err.code === 'USAGE_INVALID' && pattern.test(err.message),
      );
    usage(['proxy'], /unknown command "proxy"/);
    usage(['--port=1'], /unknown flag "--port=1"/);
    usage(['discovery', 'extra'], /unexpected argument "extra" after discovery/);
  });
});

describe('istiod binary', () => {
  it('prints its version and usage', async () => {
    const version = await run(['version']).done;
    assert.equal(version.code, 0);
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    assert.equal(version.stdout.trim(), pkg.version);
    const help = await run(['--help']).done;
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: istiod/);
    assert.match(help.stdout, /\| `XDS_PORT` \| `15012` \|/);
  });

  it('exits 2 naming each bad variable', async () => {
    const r = await run([], { XDS_PORT: 'abc', CONFIG_SOURCE: 'etcd' }).done;
    assert.equal(r.code, 2);
    assert.match(r.stderr, /CONFIG_SOURCE="etcd": must be one of local, kubernetes/);
    assert.match(r.stderr, /XDS_PORT="abc": is not a TCP port/);
  });

  it('exits 2 on an unknown command', async () => {
    const r = await run(['serve']).done;
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "serve"/);
  });

  it('exits 1 with a fatal log line when it cannot start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'istiod-main-'));
    try {
      // No manifests directory.
      const r = await run([], {
        LOCAL_DATA_DIR: dir,
        ROOT_CA_DIR: join(dir, 'no-cacerts'),
        XDS_PORT: '0',
        MONITORING_PORT: '0',
        DEBUG_PORT: '0',
      }).done;
      assert.equal(r.code, 1);
      const fatal = r.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l.level === 'fatal');
      assert.ok(fatal, r.stdout);
      assert.equal(fatal.msg, 'istiod failed to start');
      assert.match(String(fatal.err), /manifests directory .* cannot be read/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('starts, becomes ready, and drains and exits 0 on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'istiod-main-'));
    mkdirSync(join(dir, 'manifests'));
    try {
      const { child, done } = run([], {
        LOCAL_DATA_DIR: dir,
        ROOT_CA_DIR: join(dir, 'no-cacerts'),
        XDS_BIND_ADDRESS: '127.0.0.1',
        XDS_PORT: '0',
        MONITORING_BIND_ADDRESS: '127.0.0.1',
        MONITORING_PORT: '0',
        DEBUG_BIND_ADDRESS: '127.0.0.1',
        DEBUG_PORT: '0',
        TERMINATION_DRAIN_DURATION: '1s',
        LOG_FORMAT: 'json',
      });
      const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
      let ports: { debug: number; monitoring: number } | undefined;
      for await (const line of lines) {
        const rec = JSON.parse(line) as { msg?: string; ports?: { debug: number; monitoring: number } };
        if (rec.msg === 'istiod ready') {
          ports = rec.ports;
          break;
        }
      }
      assert.ok(ports, 'logged its ports when ready');
      const ready = await fetch(`http://127.0.0.1:${ports.debug}/ready`);
      assert.equal(ready.status, 200);
      const metrics = await fetch(`http://127.0.0.1:${ports.monitoring}/metrics`);
      assert.match(await metrics.text(), /process_cpu_user_seconds_total/);
      child.kill('SIGTERM');
      const r = await done;
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /"msg":"istiod stopped"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

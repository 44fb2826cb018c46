/**
 * The `ztunnel` command: argv parsing, `version` and `help`, and the exit code 2 with every bad
 * variable named when the environment is invalid.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EXIT_CODE, ZtunnelError } from '../src/errors.ts';
import { parseCommandLine } from '../src/main.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const VERSION = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['--conditions=@ambient/source', MAIN, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('ztunnel command line', () => {
  it('parses proxy (the default), version and help', () => {
    assert.equal(parseCommandLine([]), 'proxy');
    assert.equal(parseCommandLine(['proxy']), 'proxy');
    assert.equal(parseCommandLine(['version']), 'version');
    assert.equal(parseCommandLine(['--version']), 'version');
    assert.equal(parseCommandLine(['proxy', '--help']), 'help');
    for (const bad of [['bogus'], ['proxy', 'extra'], ['--frobnicate']]) {
      assert.throws(
        () => parseCommandLine(bad),
        (e: unknown) => e instanceof ZtunnelError && e.code === 'USAGE_INVALID',
      );
    }
  });

  it('prints the version and the environment table', () => {
    const v = run(['version']);
    assert.equal(v.code, EXIT_CODE.OK);
    assert.equal(v.stdout, `${VERSION}\n`);
    const h = run(['help']);
    assert.equal(h.code, EXIT_CODE.OK);
    assert.match(h.stdout, /Usage: ztunnel \[proxy \| version \| help\]/);
    assert.match(h.stdout, /\| `INPOD_UDS` \| \/var\/run\/ztunnel\/ztunnel\.sock \|/);
  });

  it('exits 2 on a usage error and on a bad environment, naming every problem', () => {
    const u = run(['bogus']);
    assert.equal(u.code, EXIT_CODE.USAGE);
    assert.match(u.stderr, /unknown command "bogus"/);
    const c = run(['proxy'], { PACKET_MARK: 'lots', SECRET_TTL: 'forever' });
    assert.equal(c.code, EXIT_CODE.USAGE);
    assert.match(c.stderr, /PACKET_MARK="lots": is not an integer/);
    assert.match(c.stderr, /SECRET_TTL="forever": is not a duration/);
  });
});

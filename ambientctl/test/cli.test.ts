/**
 * The `ambientctl` command line, run as a user runs it: bin/ambientctl in a child process (the
 * launcher finds the pinned Node from its real path). Help, usage errors (exit 2), the root check
 * (exit 2, as user nobody through setpriv), verbs without a mesh. No mesh is started here; the
 * state root is a temp dir so nothing touches /run/ambientctl.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseComponentEnv } from '../src/cli/component-env.ts';
import { renderEnvTable } from '../src/config.ts';

const LAUNCHER = fileURLToPath(new URL('../bin/ambientctl', import.meta.url));
const isRoot = process.getuid?.() === 0;
const stateRoot = mkdtempSync(join(tmpdir(), 'ambientctl-cli-'));

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function cli(
  args: readonly string[],
  o: { program?: string; asNobody?: boolean; env?: Record<string, string> } = {},
): Run {
  const cmd = o.asNobody ? 'setpriv' : (o.program ?? LAUNCHER);
  const argv = o.asNobody
    ? ['--reuid=65534', '--regid=65534', '--clear-groups', o.program ?? LAUNCHER, ...args]
    : [...args];
  const r = spawnSync(cmd, argv, {
    encoding: 'utf8',
    timeout: 60_000,
    cwd: '/',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', AMBIENTCTL_STATE_ROOT: stateRoot, ...o.env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

after(() => rmSync(stateRoot, { recursive: true, force: true }));

describe('ambientctl help', () => {
  it('--help lists every verb, the start commands and the environment, exit 0', () => {
    const r = cli(['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const verb of [
      'up',
      'down',
      'status',
      'apply',
      'delete',
      'get',
      'exec',
      'zc|ztunnel-config',
      'logs',
      'check',
      'restart',
    ]) {
      assert.match(r.stdout, new RegExp(`\\n  ${verb.replace('|', '\\|')} `), `verb ${verb} in the help`);
    }
    assert.doesNotMatch(r.stdout, /\n {2}host /, 'the daemon verb is hidden');
    assert.match(r.stdout, /sudo ambientctl\/bin\/ambientctl up/);
    assert.match(r.stdout, /AMBIENTCTL_STATE_ROOT/);
  });

  it('no verb prints the help too, as kubectl does', () => {
    const r = cli([]);
    assert.equal(r.code, 0);
    assert.match(r.stdout + r.stderr, /Usage: ambientctl/);
  });

  it("a verb's help shows its flags", () => {
    const r = cli(['up', '--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const flag of [
      '--nodes',
      '--redirect-mode',
      '--once',
      '--component-env',
      '--no-check',
      '--timeout',
    ]) {
      assert.ok(r.stdout.includes(flag), `${flag} in up --help`);
    }
    assert.match(
      cli(['ztunnel-config', '--help']).stdout,
      /workloads, services, policies, certificates,\s+connections/,
    );
  });
});

describe('usage errors exit 2 and name the problem', () => {
  const cases: [string[], RegExp][] = [
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['up', '--nodes', '0'], /--nodes must be an integer from 1 to 50/],
    [['up', '--redirect-mode', 'bpf'], /Allowed choices are nftables, ebpf/],
    [['up', '--bogus'], /unknown option '--bogus'/],
    [['apply'], /required option '-f, --filename <path>'/],
  ];
  for (const [args, message] of cases) {
    it(args.join(' '), () => {
      const r = cli(args);
      assert.equal(r.code, 2, `${r.stdout}${r.stderr}`);
      assert.match(r.stderr, message);
    });
  }

  it('bad values found by ambientctl itself are USAGE too', {
    skip: !isRoot && 'needs root to get past the root check',
  }, () => {
    for (const [args, message] of [
      [['up', '--component-env', 'ztunnel=LOG_LEVEL'], /expected <component>:<KEY>=<VALUE>/],
      [['up', '--name', 'Bad_Name'], /--name "Bad_Name": use 1 to 24 lowercase letters/],
      [['zc', 'listeners'], /unknown view "listeners"/],
      [['exec', 'deploy/client', '-n', 'demo'], /exec needs a command after --/],
    ] as [string[], RegExp][]) {
      const r = cli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /^ambientctl: USAGE: /);
      assert.match(r.stderr, message);
    }
    assert.deepEqual(readdirSync(stateRoot), [], 'nothing was started or written');
  });
});

describe('the root check', () => {
  it('refuses a non-root user with a clear error, exit 2, before doing anything', () => {
    for (const verb of [['up'], ['up', '--once'], ['down'], ['status'], ['zc', 'workloads']]) {
      const r = cli(verb, isRoot ? { asNobody: true } : {});
      assert.equal(r.code, 2, `${verb.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(
        r.stderr,
        new RegExp(`NOT_ROOT: ambientctl ${verb[0]} needs root \\(it creates network namespaces`),
      );
      assert.match(r.stderr, /run it with sudo: sudo \S*ambientctl/);
    }
    assert.deepEqual(readdirSync(stateRoot), [], 'nothing was created');
  });

  it('help needs no root', { skip: !isRoot && 'already not root: covered above' }, () => {
    assert.equal(cli(['--help'], { asNobody: true }).code, 0);
  });
});

describe('verbs without a mesh', { skip: !isRoot && 'needs root to get past the root check' }, () => {
  it('status: MESH_NOT_RUNNING, exit 1, with the command that starts one', () => {
    const r = cli(['status', '--name', 'nomesh']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /MESH_NOT_RUNNING: no mesh named nomesh is running; start one with: sudo \S+ambientctl up --name nomesh/,
    );
  });

  it('down with nothing to take down succeeds and says so', () => {
    const r = cli(['down', '--name', 'nomesh']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /No mesh named nomesh is running; nothing to remove/);
    assert.equal(existsSync(join(stateRoot, 'nomesh')), false);
  });

  it('the launcher runs through a symlink elsewhere, and hints name the command as it was run', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ambientctl-link-'));
    try {
      const link = join(dir, 'actl');
      symlinkSync(LAUNCHER, link);
      const r = cli(['get', 'pods'], { program: link });
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`start one with: sudo ${link} up`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('--component-env', () => {
  it('collects KEY=VALUE per component; istio-cni and cni are the same', () => {
    assert.deepEqual(
      parseComponentEnv([
        'ztunnel:LOG_LEVEL=debug',
        'istio-cni:EXCLUDE_NAMESPACES=kube-system,demo',
        'cni:X=',
        'ztunnel:A=b=c',
      ]),
      { ztunnel: { LOG_LEVEL: 'debug', A: 'b=c' }, cni: { EXCLUDE_NAMESPACES: 'kube-system,demo', X: '' } },
    );
    assert.throws(() => parseComponentEnv(['kube-proxy:A=b']), { code: 'USAGE' });
    assert.throws(() => parseComponentEnv(['ztunnel:1A=b']), { code: 'USAGE' });
  });
});

describe('README', () => {
  it('documents every environment variable ambientctl reads, as --help prints them', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    assert.ok(
      readme.includes(renderEnvTable()),
      'the Environment table of ambientctl/README.md is renderEnvTable()',
    );
  });
});

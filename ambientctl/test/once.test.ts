/**
 * `ambientctl up --once`, the scripts' and CI's entry point, run as a user runs it: exit 0 on a
 * working tree with every guided check passing; non-zero when a component is broken on purpose;
 * Ctrl-C in the middle takes the mesh down; and after each run nothing is left (network
 * namespaces with their links and nftables tables, BPF pins, cgroups, processes, state dir).
 *
 * The broken component: istio-cni told to leave namespace `demo` alone
 * (`EXCLUDE_NAMESPACES=kube-system,demo`), a real misconfiguration. Everything still starts and
 * every pod runs — only the mesh is missing, which is what the check has to notice: the client's
 * request to the Service VIP has nothing to carry it, and the plain-text request from `legacy`
 * does reach echo, but no ztunnel saw it, so the non-mesh check fails on what ztunnel counted, not
 * on whether the request worked.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isRoot, leftovers, pidsOf, runCli, runKeyOf, startCli } from './cli-process.ts';

const stateRoot = mkdtempSync(join(tmpdir(), 'actl-once-'));
const env = { AMBIENTCTL_STATE_ROOT: stateRoot };

after(() => rmSync(stateRoot, { recursive: true, force: true }));

describe('ambientctl up --once', {
  skip: !isRoot && 'needs root (network namespaces, nftables, cgroups)',
}, () => {
  it('exits 0 on a working tree: every check passes, and nothing is left', async () => {
    const r = await runCli(['up', '--once', '--name', 'once-ok'], env);
    const out = r.stdout + r.stderr;
    assert.equal(r.code, 0, out);
    for (const check of [
      'traffic flowing',
      'mTLS identity at the destination',
      'policy denial',
      'non-mesh path',
    ]) {
      assert.match(r.stdout, new RegExp(`✓ ${check}: `), `${check} passed:\n${out}`);
    }
    assert.match(
      r.stdout,
      /source_principal=spiffe:\/\/cluster\.local\/ns\/demo\/sa\/client over mutual_tls/,
    );
    assert.match(r.stdout, /response_flags=DENY/);
    assert.match(r.stdout, /nothing left behind/);
    assert.deepEqual(await leftovers(runKeyOf(r.stdout), join(stateRoot, 'once-ok'), pidsOf(r.stdout)), []);
  });

  it('exits non-zero when istio-cni is broken on purpose, and says which checks failed', async () => {
    const r = await runCli(
      [
        'up',
        '--once',
        '--name',
        'once-broken',
        '--component-env',
        'istio-cni:EXCLUDE_NAMESPACES=kube-system,demo',
      ],
      env,
    );
    const out = r.stdout + r.stderr;
    assert.equal(r.code, 1, out);
    assert.match(
      r.stdout,
      /✗ traffic flowing: demo\/client-\S+ \(node\d\) → http:\/\/10\.96\.\d+\.\d+:80\/: 0\/4 answered/,
      out,
    );
    // The request itself works (echo is not captured either); what fails is ztunnel never seeing it.
    assert.match(
      r.stdout,
      /✗ non-mesh path: .*2\/2 answered.*but ztunnel on node\d counted no plain-text connection/,
      out,
    );
    assert.doesNotMatch(r.stdout, /✓ (traffic flowing|mTLS identity|policy denial|non-mesh path)/, out);
    assert.match(r.stderr, /CHECK_FAILED: the guided check failed/);
    // The pods ran outside the mesh: no AMBIENT annotation.
    assert.match(r.stdout, /\ndemo +echo-\S+ +1\/1 +Running +\d+ +\S+ +node\d +- /);
    assert.deepEqual(
      await leftovers(runKeyOf(r.stdout), join(stateRoot, 'once-broken'), pidsOf(r.stdout)),
      [],
    );
  });

  it('takes the mesh down on SIGINT in the middle of up, exit 130', async () => {
    const p = startCli(['up', '--once', '--name', 'once-int'], env);
    await p.waitFor(/✓ istiod /);
    // The harness names everything after the process that owns the mesh: this one (the launcher execs node).
    const runKey = `ambh-${p.child.pid}-`;
    p.child.kill('SIGINT');
    const r = await p.done;
    assert.equal(r.code, 130, p.output());
    assert.match(r.stderr, /SIGINT: taking the mesh down/);
    assert.deepEqual(await leftovers(runKey, join(stateRoot, 'once-int')), []);
  });
});

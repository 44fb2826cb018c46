import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { errorMessage } from '@ambient/common/errors';
import { runGuidedCheck } from '../check/guided-check.ts';
import { AmbientctlError, type AmbientctlErrorCode } from '../errors.ts';
import { HostFiles } from '../host/files.ts';
import { type HostOptions, writeHostOptions } from '../host/host-options.ts';
import type { MeshOperations } from '../host/hosted-mesh.ts';
import { launchHost } from '../host/launch.ts';
import { ProgressReader } from '../host/progress-log.ts';
import { RemoteMesh } from '../host/remote-mesh.ts';
import { isHostAlive, readHostState } from '../host/state-file.ts';
import { sweepLocalMeshes } from '../local-mesh/index.ts';
import { parseConfigDump } from '../zc/dump.ts';
import { type CliContext, nameFlag, suggest } from './context.ts';
import { progressPrinter } from './progress-printer.ts';
import { meshSummary } from './summary.ts';

export interface UpOptions {
  readonly host: HostOptions;
  /** Run the guided check once the mesh is ready (needs the samples). */
  readonly check: boolean;
  /** How long `up` waits for the daemon to report ready. */
  readonly timeoutMs: number;
}

const POLL_MS = 100;

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** MESH_RUNNING when a live daemon owns this state directory; otherwise clears what a dead one left. */
export async function claimStateDir(ctx: CliContext): Promise<HostFiles> {
  const files = new HostFiles(ctx.stateDir);
  const state = readHostState(files.state);
  if (state !== undefined && isHostAlive(state.pid, ctx.stateDir)) {
    throw new AmbientctlError(
      'MESH_RUNNING',
      `mesh ${ctx.name} is already running (daemon pid ${state.pid}, ${state.phase}); see ${suggest(ctx, 'status')}, or remove it with ${suggest(ctx, 'down')}`,
    );
  }
  if (existsSync(ctx.stateDir)) {
    // A daemon that crashed or was killed: whatever it left behind goes before a new start.
    await sweepLocalMeshes();
    rmSync(ctx.stateDir, { recursive: true, force: true });
  }
  mkdirSync(ctx.config.stateRoot, { recursive: true, mode: 0o755 });
  mkdirSync(ctx.stateDir, { recursive: true, mode: 0o700 });
  return files;
}

/** Waits until the daemon's pid is gone. */
async function waitExit(pid: number, stateDir: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isHostAlive(pid, stateDir)) {
    if (Date.now() > deadline) return false;
    await sleep(POLL_MS);
  }
  return true;
}

function knownCode(code: string): AmbientctlErrorCode {
  const codes: readonly string[] = [
    'BUILD_MISSING',
    'NOT_ROOT',
    'USAGE',
    'STEP_FAILED',
    'TIMEOUT',
    'CONTROL_FAILED',
  ];
  return (codes.includes(code) ? code : 'STEP_FAILED') as AmbientctlErrorCode;
}

/**
 * `ambientctl up`: starts the daemon detached, prints its progress until it is ready, runs the
 * guided check, prints what runs where. Exit 0 when the mesh is up and the check passed; the
 * mesh stays up either way once it is ready (a failed check leaves it there to look at).
 */
export async function up(ctx: CliContext, o: UpOptions): Promise<number> {
  const files = await claimStateDir(ctx);
  writeHostOptions(files.options, o.host);
  const pid = launchHost(ctx.stateDir, files.hostLog);
  ctx.out(
    `Starting local mesh ${ctx.name}: ${o.host.nodes} node(s), ${o.host.redirectMode} redirection (daemon pid ${pid}, state in ${ctx.stateDir})`,
  );

  // Ctrl-C while waiting takes the half-built mesh down with the daemon, instead of leaving it.
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (s: NodeJS.Signals): void => {
    interrupted = s;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const print = progressPrinter(ctx.out);
  const reader = new ProgressReader(files.progress);
  const deadline = Date.now() + o.timeoutMs;
  let outcome: { ready: true } | { ready: false; code: string; message: string } | undefined;
  try {
    while (outcome === undefined) {
      for (const r of reader.read()) {
        if (r.type === 'step') print(r, Date.parse(r.at));
        else if (r.type === 'ready') outcome = { ready: true };
        else outcome = { ready: false, code: r.code, message: r.message };
      }
      if (outcome !== undefined) break;
      if (interrupted !== undefined) {
        ctx.err(`${interrupted}: stopping the daemon and removing what it built`);
        process.kill(pid, 'SIGTERM');
        await waitExit(pid, ctx.stateDir, 60_000);
        await sweepLocalMeshes();
        return interrupted === 'SIGINT' ? 130 : 143;
      }
      if (!isHostAlive(pid, ctx.stateDir)) {
        // The last lines may have landed between the read and the exit.
        for (const r of reader.read()) {
          if (r.type === 'step') print(r, Date.parse(r.at));
          else if (r.type === 'failed') outcome = { ready: false, code: r.code, message: r.message };
        }
        outcome ??= {
          ready: false,
          code: 'STEP_FAILED',
          message: `the daemon exited before the mesh was ready; see ${files.hostLog}`,
        };
        break;
      }
      if (Date.now() > deadline) {
        process.kill(pid, 'SIGTERM');
        await waitExit(pid, ctx.stateDir, 60_000);
        throw new AmbientctlError(
          'TIMEOUT',
          `the mesh was not ready within ${Math.round(o.timeoutMs / 1000)} s; it was taken down. Logs: ${files.logsDir}, ${files.hostLog}`,
        );
      }
      await sleep(POLL_MS);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  if (!outcome.ready) {
    await waitExit(pid, ctx.stateDir, 60_000);
    throw new AmbientctlError(
      knownCode(outcome.code),
      `${outcome.message}\nEverything it created was removed; logs stay in ${files.logsDir} and ${files.hostLog} (${suggest(ctx, 'down')} removes them).`,
    );
  }

  const mesh = await RemoteMesh.connect(files.controlSocket);
  let passed = true;
  if (o.check) {
    ctx.out('');
    ctx.out('Guided check:');
    try {
      const result = await runGuidedCheck(mesh, { print: (line) => ctx.out(`  ${line}`) });
      passed = result.passed;
    } catch (err) {
      ctx.out(`  ✗ the guided check could not run: ${errorMessage(err)}`);
      passed = false;
    }
  }
  const status = await mesh.status();
  ctx.out('');
  ctx.out(`Local mesh ${ctx.name} is up. What runs where:`);
  ctx.out(meshSummary(status));
  printHints(ctx, status.nodes[0]?.name ?? 'node1', await echoVip(mesh, status.nodes[0]?.name));
  if (!passed) {
    throw new AmbientctlError(
      'CHECK_FAILED',
      `the guided check failed (see the ✗ lines above); the mesh is left running to look at. Logs: ${files.logsDir}. Remove it with ${suggest(ctx, 'down')}`,
    );
  }
  return 0;
}

/** The echo sample's Service VIP as ztunnel on `node` knows it, for the hints. */
async function echoVip(mesh: MeshOperations, node: string | undefined): Promise<string | undefined> {
  if (node === undefined) return undefined;
  try {
    const dump = parseConfigDump((await mesh.ztunnelAdmin(node, '/config_dump')).body);
    const svc = dump.services.find((s) => s.namespace === 'demo' && s.name === 'echo');
    return svc?.vips[0]?.split('/')[1];
  } catch {
    return undefined;
  }
}

/** The next steps printed after `up`. */
export function printHints(ctx: CliContext, node: string, vip: string | undefined): void {
  const n = nameFlag(ctx);
  const p = `sudo ${ctx.config.program}`;
  const hints: [string, string][] = [
    ['what runs where', `${p} status${n}`],
    [
      'a request through the mesh, answered by an echo pod',
      `${p} exec${n} deploy/client -n demo -- curl -s http://${vip ?? '<echo VIP>'}/`,
    ],
    [
      "ztunnel's view (also services, policies, certificates, connections)",
      `${p} zc workloads${n} --node ${node}`,
    ],
    ["ztunnel's log: one access log line per connection", `${p} logs ztunnel${n} --node ${node} -f`],
    ['AuthorizationPolicy, PeerAuthentication, Deployments, Services', `${p} apply${n} -f policy.yaml`],
    ['remove everything', `${p} down${n}`],
  ];
  ctx.out('');
  ctx.out('Next:');
  for (const [what, cmd] of hints) {
    ctx.out(`  # ${what}`);
    ctx.out(`  ${cmd}`);
  }
}

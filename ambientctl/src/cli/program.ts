import { EXIT_CODE } from '@ambient/common/cli';
import { ConfigError } from '@ambient/common/env';
import { errorMessage, MeshError } from '@ambient/common/errors';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { type Config, loadConfig, renderEnvTable } from '../config.ts';
import { AmbientctlError } from '../errors.ts';
import type { ZcFilter } from '../zc/index.ts';
import { apply } from './apply.ts';
import { check } from './check.ts';
import { parseComponentEnv } from './component-env.ts';
import type { CliContext } from './context.ts';
import { del } from './delete.ts';
import { down } from './down.ts';
import { exec } from './exec.ts';
import { get } from './get.ts';
import { logs } from './logs.ts';
import { DEFAULT_MESH_NAME, stateDirOf } from './mesh-name.ts';
import { upOnce } from './once.ts';
import { restart } from './restart.ts';
import { requireRoot } from './root.ts';
import { status } from './status.ts';
import { up } from './up.ts';
import { zc } from './zc.ts';

const DESCRIPTION =
  "Istio's ambient mode on this Linux machine: nodes as network namespaces, istiod, a ztunnel and an istio-cni agent per node, pods wired through the real CNI chain; driven with istioctl/kubectl-style verbs. Every verb needs root.";

const START_HERE = `
Start here (from the repository root, after npm install):
  sudo ambientctl/bin/ambientctl up        the mesh, sample workloads, the guided check
  sudo ambientctl/bin/ambientctl status    what runs where
  sudo ambientctl/bin/ambientctl down      remove everything
`;

function intArg(name: string, min: number, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    }
    return n;
  };
}

function durationArg(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError('a duration such as 90s or 10m');
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm']);
}

function collect(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v];
}

/** The exit status of a failure: 2 for what the caller must fix in the invocation, 1 otherwise. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof ConfigError) return EXIT_CODE.USAGE;
  if (err instanceof AmbientctlError && (err.code === 'USAGE' || err.code === 'NOT_ROOT'))
    return EXIT_CODE.USAGE;
  return EXIT_CODE.FAILURE;
}

/**
 * Builds the `ambientctl` program. Each action records its exit status in `result.code`; errors
 * propagate to {@link run}, which prints them.
 */
function buildProgram(result: { code: number }, config: () => Config): Command {
  const program = new Command('ambientctl')
    .description(DESCRIPTION)
    .option('--name <name>', 'which local mesh (several can run side by side)', DEFAULT_MESH_NAME)
    .showHelpAfterError('(run ambientctl --help for usage)')
    .addHelpText('after', `${START_HERE}\nEnvironment:\n${renderEnvTable()}\n`)
    .configureHelp({ sortSubcommands: false })
    .exitOverride();

  const ctxOf = (cmd: Command): CliContext => {
    const name = (cmd.optsWithGlobals() as { name: string }).name;
    const c = config();
    return {
      config: c,
      name,
      stateDir: stateDirOf(c.stateRoot, name),
      out: (line) => process.stdout.write(`${line}\n`),
      err: (line) => process.stderr.write(`${line}\n`),
    };
  };
  // Every verb drives namespaces, nftables, eBPF or the root-only control socket.
  program.hook('preAction', (_root, action) => {
    requireRoot(action.name(), config().program);
  });
  const run =
    <A extends unknown[]>(fn: (...a: A) => Promise<number>) =>
    async (...a: A): Promise<void> => {
      result.code = await fn(...a);
    };

  program
    .command('up')
    .description(
      'bring a local mesh up: nodes, istiod, ztunnel and istio-cni per node, samples; run the guided check',
    )
    .option('--nodes <n>', 'worker nodes (network namespaces)', intArg('--nodes', 1, 50), 2)
    .addOption(
      new Option('--redirect-mode <mode>', 'how pod traffic reaches ztunnel')
        .choices(['nftables', 'ebpf'])
        .default('nftables'),
    )
    .option('--once', 'for scripts and CI: up, guided check, down; exit 0 when the check passed, 1 otherwise')
    .option('--keep-logs', 'with --once: keep <state dir>/logs afterwards')
    .option('--no-samples', 'no sample workloads (and so no guided check)')
    .option('--no-check', 'skip the guided check')
    .option(
      '--component-env <component:KEY=VALUE>',
      'extra environment for istiod, ztunnel or istio-cni (repeatable; for debugging, e.g. ztunnel:LOG_LEVEL=debug)',
      collect,
      [],
    )
    .option('--timeout <duration>', 'how long the mesh may take to be ready', durationArg, 600_000)
    .action(
      run(
        async (
          o: {
            nodes: number;
            redirectMode: 'nftables' | 'ebpf';
            once?: boolean;
            keepLogs?: boolean;
            samples: boolean;
            check: boolean;
            componentEnv: string[];
            timeout: number;
          },
          cmd: Command,
        ) => {
          const ctx = ctxOf(cmd);
          const options = {
            host: {
              name: ctx.name,
              nodes: o.nodes,
              redirectMode: o.redirectMode,
              samples: o.samples,
              componentEnv: parseComponentEnv(o.componentEnv),
            },
            check: o.check && o.samples,
            timeoutMs: o.timeout,
          };
          return o.once ? upOnce(ctx, { ...options, keepLogs: o.keepLogs ?? false }) : up(ctx, options);
        },
      ),
    );

  program
    .command('down')
    .description('take the mesh down and remove everything it created (also after a crash)')
    .option('--timeout <duration>', 'how long the daemon may take to stop', durationArg, 120_000)
    .action(run(async (o: { timeout: number }, cmd: Command) => down(ctxOf(cmd), { timeoutMs: o.timeout })));

  program
    .command('status')
    .description('what runs where: nodes, components with pids, pods')
    .option('-o, --output <format>', 'json for the raw status')
    .action(
      run(async (o: { output?: string }, cmd: Command) => status(ctxOf(cmd), { json: o.output === 'json' })),
    );

  program
    .command('apply')
    .description(
      'create or update Namespaces, Deployments, Pods, Services, AuthorizationPolicy, PeerAuthentication',
    )
    .requiredOption(
      '-f, --filename <path>',
      'a file, a directory of .yaml/.yml/.json, or - for stdin (repeatable)',
      collect,
    )
    .action(run(async (o: { filename: string[] }, cmd: Command) => apply(ctxOf(cmd), { files: o.filename })));

  program
    .command('delete')
    .description('delete what a file defines (-f), or one object: delete <kind> <name> -n <namespace>')
    .argument('[kind]', 'deployment, pod, service, namespace, authorizationpolicy, peerauthentication')
    .argument('[name]')
    .option('-f, --filename <path>', 'a file, a directory or - (repeatable)', collect, [])
    .option('-n, --namespace <ns>', 'namespace of the object', 'default')
    .option('--ignore-not-found', 'no error when the object does not exist')
    .action(
      run(
        async (
          kind: string | undefined,
          name: string | undefined,
          o: { filename: string[]; namespace: string; ignoreNotFound?: boolean },
          cmd: Command,
        ) =>
          del(ctxOf(cmd), {
            files: o.filename,
            ...(kind === undefined ? {} : { kind }),
            ...(name === undefined ? {} : { name }),
            namespace: o.namespace,
            ignoreNotFound: o.ignoreNotFound ?? false,
          }),
      ),
    );

  program
    .command('get')
    .description('list pods, svc, nodes or components')
    .argument('<resource>', 'pods (po), svc, nodes, components')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('-A, --all-namespaces', 'every namespace')
    .addOption(
      new Option('-o, --output <format>', 'output format')
        .choices(['table', 'wide', 'json', 'yaml'])
        .default('table'),
    )
    .action(
      run(
        async (
          resource: string,
          o: { namespace: string; allNamespaces?: boolean; output: string },
          cmd: Command,
        ) =>
          get(ctxOf(cmd), {
            resource,
            namespace: o.namespace,
            allNamespaces: o.allNamespaces ?? false,
            output: o.output === 'json' || o.output === 'yaml' ? o.output : 'table',
          }),
      ),
    );

  program
    .command('exec')
    .description("run a command inside a pod (its network namespace and cgroup), with this terminal's stdio")
    .usage('<pod> [-n <namespace>] -- <command> [args...]')
    .argument('<pod>', 'pod name, or deploy/<name>')
    .argument('[command...]', 'the command, after --')
    .option('-n, --namespace <ns>', 'namespace of the pod', 'default')
    .option('-i, --stdin', 'accepted for kubectl habits: stdin is always passed')
    .option('-t, --tty', 'accepted for kubectl habits: the terminal is always passed')
    .action(
      run(async (pod: string, command: string[], o: { namespace: string }, cmd: Command) =>
        exec(ctxOf(cmd), { pod, namespace: o.namespace, command }),
      ),
    );

  program
    .command('zc')
    .alias('ztunnel-config')
    .description("ztunnel's configuration as istioctl ztunnel-config prints it")
    .argument('<view>', 'workloads, services, policies, certificates, connections, all')
    .option('--node <node>', 'the node whose ztunnel to ask (default: the first)')
    .option('-o, --output <format>', 'table (default), json or yaml', 'table')
    .option('-n, --namespace <ns>', 'only this namespace (workloads, services, policies, connections)')
    .option('--workload-node <node>', 'workloads: only those on this node')
    .option('--address <ip>', 'workloads: only the one with this IP')
    .addOption(
      new Option('--direction <dir>', 'connections: only inbound or outbound').choices([
        'inbound',
        'outbound',
      ]),
    )
    .option('--raw', 'connections: addresses as they are, not names')
    .action(
      run(
        async (
          view: string,
          o: {
            node?: string;
            output: string;
            namespace?: string;
            workloadNode?: string;
            address?: string;
            direction?: 'inbound' | 'outbound';
            raw?: boolean;
          },
          cmd: Command,
        ) => {
          const filter: ZcFilter = {
            ...(o.namespace === undefined ? {} : { namespace: o.namespace }),
            ...(o.workloadNode === undefined ? {} : { node: o.workloadNode }),
            ...(o.address === undefined ? {} : { address: o.address }),
            ...(o.direction === undefined ? {} : { direction: o.direction }),
            ...(o.raw ? { raw: true } : {}),
          };
          return zc(ctxOf(cmd), {
            kind: view,
            output: o.output,
            filter,
            ...(o.node === undefined ? {} : { node: o.node }),
          });
        },
      ),
    );

  program
    .command('logs')
    .description('logs of a component (istiod, ztunnel, istio-cni, host) or of a pod')
    .argument('<target>', 'istiod, ztunnel, istio-cni, host (the daemon), or a pod name / deploy/<name>')
    .option('-n, --namespace <ns>', "the pod's namespace", 'default')
    .option('--node <node>', 'for ztunnel and istio-cni: only this node (default: every node, prefixed)')
    .option('-f, --follow', 'keep printing new lines until Ctrl-C')
    .option('--tail <lines>', 'only the last lines', intArg('--tail', 0, 1_000_000))
    .action(
      run(
        async (
          target: string,
          o: { namespace: string; node?: string; follow?: boolean; tail?: number },
          cmd: Command,
        ) =>
          logs(ctxOf(cmd), {
            target,
            namespace: o.namespace,
            follow: o.follow ?? false,
            ...(o.node === undefined ? {} : { node: o.node }),
            ...(o.tail === undefined ? {} : { tail: o.tail }),
          }),
      ),
    );

  program
    .command('check')
    .description('run the guided check again on the running mesh')
    .action(run(async (_o: unknown, cmd: Command) => check(ctxOf(cmd))));

  program
    .command('restart')
    .description('restart a component (every node, or --node), as a rollout restart')
    .argument('<component>', 'istiod, ztunnel or istio-cni')
    .option('--node <node>', 'only on this node')
    .action(
      run(async (component: string, o: { node?: string }, cmd: Command) =>
        restart(ctxOf(cmd), { component, ...(o.node === undefined ? {} : { node: o.node }) }),
      ),
    );

  program
    .command('host', { hidden: true })
    .description('the daemon `up` starts (not for direct use)')
    .requiredOption('--state-dir <dir>')
    .action(
      run(async (o: { stateDir: string }) => {
        const { runHostProcess } = await import('../host/main.ts');
        return runHostProcess(o.stateDir, config());
      }),
    );

  return program;
}

/** Runs `ambientctl` with these arguments; resolves with the exit status. */
export async function run(argv: readonly string[]): Promise<number> {
  const result = { code: EXIT_CODE.OK as number };
  let config: Config | undefined;
  const program = buildProgram(result, () => {
    config ??= loadConfig();
    return config;
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return result.code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander printed its message (and the help hint) already.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT_CODE.OK;
      // `ambientctl` alone prints the help, as kubectl and istioctl do.
      if (err.code === 'commander.help') return EXIT_CODE.OK;
      return EXIT_CODE.USAGE;
    }
    const code = err instanceof MeshError ? `${err.code}: ` : '';
    process.stderr.write(`ambientctl: ${code}${errorMessage(err)}\n`);
    return exitCodeOf(err);
  }
}

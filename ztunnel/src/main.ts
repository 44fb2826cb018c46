#!/usr/bin/env node
import { type Command as CliCommand, parseCommandLine as parseCli, runProgram } from '@ambient/common/cli';
import type { Env } from '@ambient/common/env';
import { Ztunnel, ztunnelVersion } from './app.ts';
import { loadConfig, renderEnvTable } from './config.ts';
import { ZtunnelError } from './errors.ts';

/** What the command line asks for. */
export type Command = CliCommand<'proxy'>;

const USAGE = `Usage: ztunnel [proxy | version | help] [--help]

Commands:
  proxy     Run the node proxy (the default): in-pod listeners for every pod the node agent
            enrolls over ZDS, admin on localhost:15000, metrics on 15020, readiness on 15021.
  version   Print the version and exit.
  help      Print this help and exit.

ztunnel is configured through environment variables only:
`;

const COMMAND_LINE = {
  program: 'ztunnel',
  run: 'proxy',
  usageError: (message: string) => new ZtunnelError('USAGE_INVALID', message),
} as const;

/**
 * Parses the command line (without `node` and the script): no command means `proxy`, as
 * upstream. Throws ZtunnelError USAGE_INVALID naming what is unknown.
 */
export function parseCommandLine(args: readonly string[]): Command {
  return parseCli(COMMAND_LINE, args);
}

/**
 * Runs ztunnel and resolves with the exit code once it has stopped (or failed to start), through
 * `runProgram`: the configuration comes from `env` (the process environment by default); 2 on a
 * usage or configuration error, 1 when ztunnel cannot start; on SIGTERM/SIGINT or
 * `POST /quitquitquit` it drains for up to the termination deadline, a second signal forcing it.
 */
export function main(args: readonly string[], env?: Env): Promise<number> {
  return runProgram(
    {
      ...COMMAND_LINE,
      usage: USAGE,
      envTable: renderEnvTable,
      version: ztunnelVersion,
      loadConfig: () => loadConfig(env),
      logConfig: (config) => config.log,
      drainDeadlineMs: (config) => config.terminationDeadlineMs,
      start: async (config, logging) => {
        const ztunnel = Ztunnel.create(config, { logging });
        await ztunnel.start();
        return ztunnel;
      },
    },
    args,
  );
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // Watchers and timers are unref'd or closed, but a library may hold a handle; exit explicitly.
  process.exit(code);
}

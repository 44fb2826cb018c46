#!/usr/bin/env node
import { type Command as CliCommand, parseCommandLine as parseCli, runProgram } from '@ambient/common/cli';
import { Istiod, istiodVersion } from './app.ts';
import { loadConfig, renderEnvTable } from './config.ts';
import { IstiodError } from './errors.ts';

/** What the command line asks for. */
export type Command = CliCommand<'discovery'>;

const USAGE = `Usage: istiod [discovery | version | help] [--help]

Commands:
  discovery   Run the ambient control plane (the default): delta xDS and the CA on 15012,
              metrics on 15014, readiness and debug on 8080.
  version     Print the version and exit.
  help        Print this help and exit.

istiod is configured through environment variables only:
`;

const COMMAND_LINE = {
  program: 'istiod',
  run: 'discovery',
  usageError: (message: string) => new IstiodError('USAGE_INVALID', message),
} as const;

/**
 * Parses the command line (without `node` and the script): no command means `discovery`, as
 * upstream's `pilot-discovery discovery`. Throws IstiodError USAGE_INVALID naming what is unknown.
 */
export function parseCommandLine(args: readonly string[]): Command {
  return parseCli(COMMAND_LINE, args);
}

/**
 * Runs istiod and resolves with the exit code once it has stopped (or failed to start), through
 * `runProgram`: 2 on a usage or configuration error, 1 when istiod cannot start; on SIGTERM/SIGINT
 * it drains for up to `TERMINATION_DRAIN_DURATION`, a second signal forcing it.
 */
export function main(args: readonly string[]): Promise<number> {
  return runProgram(
    {
      ...COMMAND_LINE,
      usage: USAGE,
      envTable: renderEnvTable,
      version: istiodVersion,
      loadConfig: () => loadConfig(),
      logConfig: (config) => config.log,
      drainDeadlineMs: (config) => config.drainDeadlineMs,
      start: async (config, logging) => {
        const istiod = await Istiod.create(config, { logging });
        await istiod.start();
        return istiod;
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

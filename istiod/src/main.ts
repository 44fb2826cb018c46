#!/usr/bin/env node
import { ConfigError } from '@ambient/common/env';
import { errorMessage } from '@ambient/common/errors';
import { stopOnSignals } from '@ambient/common/lifecycle';
import { configureProcessLogging } from '@ambient/common/log';
import { Istiod, istiodVersion } from './app.ts';
import { loadConfig, renderEnvTable } from './config.ts';
import { EXIT_CODE, IstiodError } from './errors.ts';

/** What the command line asks for. */
export type Command = 'discovery' | 'version' | 'help';

const USAGE = `Usage: istiod [discovery | version | help] [--help]

Commands:
  discovery   Run the ambient control plane (the default): delta xDS and the CA on 15012,
              metrics on 15014, readiness and debug on 8080.
  version     Print the version and exit.
  help        Print this help and exit.

istiod is configured through environment variables only:
`;

/**
 * Parses the command line (without `node` and the script): no command means `discovery`, as
 * upstream's `pilot-discovery discovery`. Throws IstiodError USAGE_INVALID naming what is unknown.
 */
export function parseCommandLine(args: readonly string[]): Command {
  let command: Command | undefined;
  for (const arg of args) {
    if (arg === '--help' || arg === '-h') return 'help';
    if (arg === '--version') return 'version';
    if (arg.startsWith('-')) {
      throw new IstiodError('USAGE_INVALID', `unknown flag ${JSON.stringify(arg)}; see istiod --help`);
    }
    if (command !== undefined) {
      throw new IstiodError(
        'USAGE_INVALID',
        `unexpected argument ${JSON.stringify(arg)} after ${command}; see istiod --help`,
      );
    }
    if (arg !== 'discovery' && arg !== 'version' && arg !== 'help') {
      throw new IstiodError('USAGE_INVALID', `unknown command ${JSON.stringify(arg)}; see istiod --help`);
    }
    command = arg;
  }
  return command ?? 'discovery';
}

/**
 * Runs istiod and resolves with the exit code once it has stopped (or failed to start):
 * 1. parse the command line (2 on a usage error);
 * 2. read the configuration from the environment (2, with every bad variable named, on error);
 * 3. configure process logging from `LOG_LEVEL` / `LOG_FORMAT`;
 * 4. build and start istiod (1 when it cannot start);
 * 5. on SIGTERM/SIGINT drain for up to `TERMINATION_DRAIN_DURATION`, a second signal forcing it.
 */
export async function main(args: readonly string[]): Promise<number> {
  let command: Command;
  try {
    command = parseCommandLine(args);
  } catch (err) {
    process.stderr.write(`istiod: ${errorMessage(err)}\n`);
    return EXIT_CODE.USAGE;
  }
  if (command === 'help') {
    process.stdout.write(`${USAGE}\n${renderEnvTable()}\n`);
    return EXIT_CODE.OK;
  }
  if (command === 'version') {
    process.stdout.write(`${istiodVersion()}\n`);
    return EXIT_CODE.OK;
  }

  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`istiod: ${err.message}\n`);
    return EXIT_CODE.USAGE;
  }
  const logging = configureProcessLogging({ levels: config.log.levels, format: config.log.format });
  const log = logging.logger('istiod');
  const fatal = (what: string) => (err: unknown) => {
    log.fatal({ err: errorMessage(err) }, what);
    void logging.flush().finally(() => process.exit(EXIT_CODE.FAILURE));
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled promise rejection'));

  let istiod: Istiod;
  try {
    istiod = await Istiod.create(config, { logging });
    await istiod.start();
  } catch (err) {
    log.fatal({ err: errorMessage(err), code: (err as { code?: unknown }).code }, 'istiod failed to start');
    await logging.flush();
    return EXIT_CODE.FAILURE;
  }
  await new Promise<void>((resolve) => {
    stopOnSignals(istiod.lifecycle, { deadlineMs: config.drainDeadlineMs, onStopped: resolve, log });
  });
  log.info('istiod stopped');
  await logging.flush();
  return EXIT_CODE.OK;
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // Watchers and timers are unref'd or closed, but a library may hold a handle; exit explicitly.
  process.exit(code);
}

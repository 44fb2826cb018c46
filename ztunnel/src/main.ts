#!/usr/bin/env node
import { ConfigError, type Env } from '@ambient/common/env';
import { errorMessage } from '@ambient/common/errors';
import { stopOnSignals } from '@ambient/common/lifecycle';
import { configureProcessLogging } from '@ambient/common/log';
import { Ztunnel, ztunnelVersion } from './app.ts';
import { type Config, loadConfig, renderEnvTable } from './config.ts';
import { EXIT_CODE, ZtunnelError } from './errors.ts';

/** What the command line asks for. */
export type Command = 'proxy' | 'version' | 'help';

const USAGE = `Usage: ztunnel [proxy | version | help] [--help]

Commands:
  proxy     Run the node proxy (the default): in-pod listeners for every pod the node agent
            enrolls over ZDS, admin on localhost:15000, metrics on 15020, readiness on 15021.
  version   Print the version and exit.
  help      Print this help and exit.

ztunnel is configured through environment variables only:
`;

/**
 * Parses the command line (without `node` and the script): no command means `proxy`, as
 * upstream. Throws ZtunnelError USAGE_INVALID naming what is unknown.
 */
export function parseCommandLine(args: readonly string[]): Command {
  let command: Command | undefined;
  for (const arg of args) {
    if (arg === '--help' || arg === '-h') return 'help';
    if (arg === '--version') return 'version';
    if (arg.startsWith('-')) {
      throw new ZtunnelError('USAGE_INVALID', `unknown flag ${JSON.stringify(arg)}; see ztunnel --help`);
    }
    if (command !== undefined) {
      throw new ZtunnelError(
        'USAGE_INVALID',
        `unexpected argument ${JSON.stringify(arg)} after ${command}; see ztunnel --help`,
      );
    }
    if (arg !== 'proxy' && arg !== 'version' && arg !== 'help') {
      throw new ZtunnelError('USAGE_INVALID', `unknown command ${JSON.stringify(arg)}; see ztunnel --help`);
    }
    command = arg;
  }
  return command ?? 'proxy';
}

/**
 * Runs ztunnel and resolves with the exit code once it has stopped (or failed to start):
 * 1. parse the command line (2 on a usage error);
 * 2. read the configuration from `env` (the process environment by default; 2, with every bad
 *    variable named, on error);
 * 3. configure process logging from `LOG_LEVEL` / `LOG_FORMAT`;
 * 4. build and start ztunnel (1 when it cannot start);
 * 5. on SIGTERM/SIGINT or `POST /quitquitquit` drain for up to the termination deadline, a
 *    second signal forcing it; exit once stopped.
 */
export async function main(args: readonly string[], env?: Env): Promise<number> {
  let command: Command;
  try {
    command = parseCommandLine(args);
  } catch (err) {
    process.stderr.write(`ztunnel: ${errorMessage(err)}\n`);
    return EXIT_CODE.USAGE;
  }
  if (command === 'help') {
    process.stdout.write(`${USAGE}\n${renderEnvTable()}\n`);
    return EXIT_CODE.OK;
  }
  if (command === 'version') {
    process.stdout.write(`${ztunnelVersion()}\n`);
    return EXIT_CODE.OK;
  }

  let config: Config;
  try {
    config = loadConfig(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`ztunnel: ${err.message}\n`);
    return EXIT_CODE.USAGE;
  }
  const logging = configureProcessLogging({ levels: config.log.levels, format: config.log.format });
  const log = logging.logger('ztunnel');
  const fatal = (what: string) => (err: unknown) => {
    log.fatal({ err: errorMessage(err) }, what);
    void logging.flush().finally(() => process.exit(EXIT_CODE.FAILURE));
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled promise rejection'));

  let ztunnel: Ztunnel;
  try {
    ztunnel = Ztunnel.create(config, { logging });
    await ztunnel.start();
  } catch (err) {
    log.fatal({ err: errorMessage(err), code: (err as { code?: unknown }).code }, 'ztunnel failed to start');
    await logging.flush();
    return EXIT_CODE.FAILURE;
  }
  await new Promise<void>((resolve) => {
    const removeHandlers = stopOnSignals(ztunnel.lifecycle, {
      deadlineMs: config.terminationDeadlineMs,
      onStopped: resolve,
      log,
    });
    // `/quitquitquit` stops through the app rather than a signal.
    void ztunnel.stopped.then(resolve);
    void ztunnel.stopped.finally(removeHandlers);
  });
  log.info('ztunnel stopped');
  await logging.flush();
  return EXIT_CODE.OK;
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  // Watchers and timers are unref'd or closed, but a library may hold a handle; exit explicitly.
  process.exit(code);
}

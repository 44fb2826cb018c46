import { ConfigError } from './env.ts';
import { errorMessage, MeshError } from './errors.ts';
import { type Lifecycle, stopOnSignals } from './lifecycle.ts';
import { configureProcessLogging, type Logging, type LoggingOptions } from './log.ts';
import { applyMallocTuning } from './malloc-tuning.ts';

/** Process exit codes of the binaries (sysexits-like: 2 is a usage or configuration error). */
export const EXIT_CODE = {
  OK: 0,
  /** Start failed, or a component failed while running. */
  FAILURE: 1,
  /** Bad command line or bad environment: fix the invocation, a retry will not help. */
  USAGE: 2,
} as const;

/** The command line names an unknown command or flag. */
export class UsageError extends MeshError<'USAGE_INVALID'> {}

/** What a binary's command line asks for: its one run command, `version` or `help`. */
export type Command<Run extends string> = Run | 'version' | 'help';

/** The shape of a binary's command line: `<program> [<run> | version | help] [--help]`. */
export interface CommandLineSpec<Run extends string> {
  /** The binary's name, as usage errors point at `<program> --help`. */
  readonly program: string;
  /** The command that runs the binary, also the default when none is given. */
  readonly run: Run;
  /**
   * Builds the error a usage problem throws, so each binary keeps its own error class; a
   * {@link UsageError} by default.
   */
  readonly usageError?: (message: string) => Error;
}

/**
 * Parses the command line (without `node` and the script): no command means `spec.run`;
 * `--help`/`-h` and `--version` win over anything else. Throws the spec's usage error naming
 * what is unknown or unexpected.
 */
export function parseCommandLine<Run extends string>(
  spec: CommandLineSpec<Run>,
  args: readonly string[],
): Command<Run> {
  const fail = spec.usageError ?? ((message: string) => new UsageError('USAGE_INVALID', message));
  const see = `see ${spec.program} --help`;
  let command: Command<Run> | undefined;
  for (const arg of args) {
    if (arg === '--help' || arg === '-h') return 'help';
    if (arg === '--version') return 'version';
    if (arg.startsWith('-')) throw fail(`unknown flag ${JSON.stringify(arg)}; ${see}`);
    if (command !== undefined) {
      throw fail(`unexpected argument ${JSON.stringify(arg)} after ${command}; ${see}`);
    }
    if (arg !== spec.run && arg !== 'version' && arg !== 'help') {
      throw fail(`unknown command ${JSON.stringify(arg)}; ${see}`);
    }
    command = arg as Command<Run>;
  }
  return command ?? spec.run;
}

/** What a running binary hands back to {@link runProgram}. */
export interface RunningProgram {
  /** Stopped on SIGTERM/SIGINT. */
  readonly lifecycle: Lifecycle;
  /** Resolves when the program stops by itself (`/quitquitquit`), besides a signal. */
  readonly stopped?: Promise<void>;
}

/** How {@link runProgram} runs one binary. */
export interface ProgramSpec<Run extends string, Config, App extends RunningProgram>
  extends CommandLineSpec<Run> {
  /** The `help` text, printed before the environment table. */
  readonly usage: string;
  /** The Markdown table of the environment variables the binary reads. */
  readonly envTable: () => string;
  readonly version: () => string;
  /** Reads the configuration; a {@link ConfigError} is a usage error (exit 2). */
  readonly loadConfig: () => Config;
  /** Process logging (`LOG_LEVEL`, `LOG_FORMAT`) from the configuration. */
  readonly logConfig: (config: Config) => LoggingOptions;
  /** How long a graceful stop may drain before connections are closed. */
  readonly drainDeadlineMs: (config: Config) => number;
  /** Builds and starts the program; a throw or rejection is a failed start (exit 1). */
  readonly start: (config: Config, logging: Logging) => Promise<App>;
}

/**
 * Runs a binary and resolves with the exit code once it has stopped (or failed to start):
 * 1. parse the command line (2 on a usage error; `help` and `version` print and return 0);
 * 2. read the configuration (2, with every bad variable named, on error);
 * 3. configure process logging, with uncaught errors logged as fatal before exiting 1, and
 *    tune malloc for large buffers (`malloc-tuning.ts`);
 * 4. build and start the program (1 when it cannot start);
 * 5. on SIGTERM/SIGINT drain for up to the deadline, a second signal forcing it; resolve with 0
 *    once stopped (or once the program stopped by itself).
 */
export async function runProgram<Run extends string, Config, App extends RunningProgram>(
  spec: ProgramSpec<Run, Config, App>,
  args: readonly string[],
): Promise<number> {
  const { program } = spec;
  let command: Command<Run>;
  try {
    command = parseCommandLine(spec, args);
  } catch (err) {
    process.stderr.write(`${program}: ${errorMessage(err)}\n`);
    return EXIT_CODE.USAGE;
  }
  if (command === 'help') {
    process.stdout.write(`${spec.usage}\n${spec.envTable()}\n`);
    return EXIT_CODE.OK;
  }
  if (command === 'version') {
    process.stdout.write(`${spec.version()}\n`);
    return EXIT_CODE.OK;
  }

  let config: Config;
  try {
    config = spec.loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${program}: ${err.message}\n`);
    return EXIT_CODE.USAGE;
  }
  const logging = configureProcessLogging(spec.logConfig(config));
  const log = logging.logger(program);
  const fatal = (what: string) => (err: unknown) => {
    log.fatal({ err: errorMessage(err) }, what);
    void logging.flush().finally(() => process.exit(EXIT_CODE.FAILURE));
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled promise rejection'));
  applyMallocTuning(log);

  let app: App;
  try {
    app = await spec.start(config, logging);
  } catch (err) {
    log.fatal(
      { err: errorMessage(err), code: (err as { code?: unknown }).code },
      `${program} failed to start`,
    );
    await logging.flush();
    return EXIT_CODE.FAILURE;
  }
  await new Promise<void>((resolve) => {
    const removeHandlers = stopOnSignals(app.lifecycle, {
      deadlineMs: spec.drainDeadlineMs(config),
      onStopped: resolve,
      log,
    });
    void app.stopped?.then(resolve);
    void app.stopped?.finally(removeHandlers);
  });
  log.info(`${program} stopped`);
  await logging.flush();
  return EXIT_CODE.OK;
}

import { errorMessage } from '@ambient/common/errors';
import { configureProcessLogging } from '@ambient/common/log';
import type { Config } from '../config.ts';
import { runHost } from './daemon.ts';

/**
 * The `host` verb's process: JSON log lines on stdout (which `up` pointed at host.log), uncaught
 * errors logged as fatal, then the daemon until the mesh is down.
 */
export async function runHostProcess(stateDir: string, config: Config): Promise<number> {
  const logging = configureProcessLogging({
    levels: config.logLevel,
    format: 'json',
    base: { pid: process.pid },
  });
  const log = logging.logger('host');
  const fatal = (what: string) => (err: unknown) => {
    log.fatal({ err: errorMessage(err) }, what);
    void logging.flush().finally(() => process.exit(1));
  };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled promise rejection'));
  const code = await runHost(stateDir, logging);
  await logging.flush();
  return code;
}

/**
 * The istio-cni node agent binary: `node --conditions=@ambient/source cni/src/agent/main.ts`.
 * Reads the environment (see config.ts), starts the agent, drains on SIGTERM/SIGINT.
 */
import { ConfigError } from '@ambient/common/env';
import { errorMessage } from '@ambient/common/errors';
import { Lifecycle, stopOnSignals } from '@ambient/common/lifecycle';
import { configureProcessLogging } from '@ambient/common/log';
import { CniAgent } from './app.ts';
import { type AgentConfig, loadAgentConfig } from './config.ts';

let config: AgentConfig;
try {
  config = loadAgentConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`istio-cni: ${err.message}\n`);
  process.exit(2);
}
const logging = configureProcessLogging({ base: { component: 'istio-cni', node: config.nodeName } });
const log = logging.logger('cni-agent');
const lifecycle = new Lifecycle({ log }).add(new CniAgent({ config, log }));
try {
  await lifecycle.start();
} catch (err) {
  log.fatal({ err: errorMessage(err) }, 'istio-cni node agent failed to start');
  process.exit(1);
}
stopOnSignals(lifecycle, { deadlineMs: 10_000, log, onStopped: () => process.exit(0) });

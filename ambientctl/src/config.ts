import {
  type Env,
  EnvReader,
  type EnvVarDoc,
  envVar,
  renderEnvTable as renderEnvDocs,
} from '@ambient/common/env';
import { parseLevelSpec } from '@ambient/common/log';

/** Every environment variable ambientctl reads (the README's table and `--help` come from here). */
export const ENV = {
  AMBIENTCTL_STATE_ROOT: envVar(
    'AMBIENTCTL_STATE_ROOT',
    '/run/ambientctl',
    'Where each mesh keeps its state directory (`<root>/<name>`): manifests, logs, state.json, control.sock.',
  ),
  AMBIENTCTL_PROGRAM: envVar(
    'AMBIENTCTL_PROGRAM',
    'ambientctl',
    'How the user ran ambientctl, for the commands its hints print; bin/ambientctl sets it to its own path.',
  ),
  AMBIENTCTL_LOG_LEVEL: envVar(
    'AMBIENTCTL_LOG_LEVEL',
    'info',
    'Log levels of the daemon (`info,local-mesh:debug`); its lines go to `<state dir>/host.log`.',
  ),
} as const satisfies Record<string, EnvVarDoc>;

export interface Config {
  readonly stateRoot: string;
  readonly logLevel: string;
  /** How the hints name the command (`ambientctl/bin/ambientctl`). */
  readonly program: string;
}

/** Reads the environment once; a ConfigError names every bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const r = new EnvReader(env);
  const stateRoot = r.string(ENV.AMBIENTCTL_STATE_ROOT.name, ENV.AMBIENTCTL_STATE_ROOT.default);
  if (!stateRoot.startsWith('/'))
    r.problem(ENV.AMBIENTCTL_STATE_ROOT.name, stateRoot, 'must be an absolute path');
  const logLevel = r.string(ENV.AMBIENTCTL_LOG_LEVEL.name, ENV.AMBIENTCTL_LOG_LEVEL.default);
  try {
    parseLevelSpec(logLevel);
  } catch (err) {
    r.problem(ENV.AMBIENTCTL_LOG_LEVEL.name, logLevel, (err as Error).message);
  }
  const program = r.string(ENV.AMBIENTCTL_PROGRAM.name, ENV.AMBIENTCTL_PROGRAM.default);
  r.finish();
  return { stateRoot, logLevel, program };
}

export function renderEnvTable(): string {
  return renderEnvDocs(Object.values(ENV), { defaultAsCode: true });
}

import { AmbientctlError } from '../errors.ts';
import type { ComponentEnv } from '../host/host-options.ts';

const COMPONENT_KEYS: Readonly<Record<string, keyof ComponentEnv>> = {
  istiod: 'istiod',
  ztunnel: 'ztunnel',
  cni: 'cni',
  'istio-cni': 'cni',
};

/**
 * Parses `--component-env` values, `<component>:<KEY>=<VALUE>` (component istiod, ztunnel,
 * istio-cni or cni), into extra environment per component. For debugging (`ztunnel:LOG_LEVEL=debug`)
 * and for tests that break a component on purpose.
 */
export function parseComponentEnv(values: readonly string[]): ComponentEnv {
  const out: ComponentEnv = {};
  for (const v of values) {
    const m = /^([a-z-]+):([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(v);
    const key = m ? COMPONENT_KEYS[m[1] ?? ''] : undefined;
    if (!m || key === undefined) {
      throw new AmbientctlError(
        'USAGE',
        `--component-env ${JSON.stringify(v)}: expected <component>:<KEY>=<VALUE> with component istiod, ztunnel or istio-cni`,
      );
    }
    out[key] = { ...(out[key] ?? {}), [m[2] ?? '']: m[3] ?? '' };
  }
  return out;
}

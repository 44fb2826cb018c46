import { readFileSync, writeFileSync } from 'node:fs';
import { AmbientctlError } from '../errors.ts';
import type { RedirectMode } from './hosted-mesh.ts';

/** Extra environment per component (debugging, and tests that break a component on purpose). */
export interface ComponentEnv {
  istiod?: Record<string, string>;
  ztunnel?: Record<string, string>;
  cni?: Record<string, string>;
}

/** What `up` asks the daemon for, written to `<stateDir>/host-options.json` before it starts. */
export interface HostOptions {
  readonly name: string;
  readonly nodes: number;
  readonly redirectMode: RedirectMode;
  readonly samples: boolean;
  readonly componentEnv: ComponentEnv;
}

export function writeHostOptions(path: string, options: HostOptions): void {
  writeFileSync(path, `${JSON.stringify(options, null, 2)}\n`, { mode: 0o600 });
}

export function readHostOptions(path: string): HostOptions {
  let doc: Partial<HostOptions>;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8')) as Partial<HostOptions>;
  } catch (err) {
    throw new AmbientctlError(
      'USAGE',
      `cannot read the host options ${path}; start the mesh with ambientctl up`,
      {
        cause: err,
      },
    );
  }
  if (typeof doc.name !== 'string' || typeof doc.nodes !== 'number') {
    throw new AmbientctlError('USAGE', `${path} lacks name or nodes; start the mesh with ambientctl up`);
  }
  return {
    name: doc.name,
    nodes: doc.nodes,
    redirectMode: doc.redirectMode === 'ebpf' ? 'ebpf' : 'nftables',
    samples: doc.samples ?? true,
    componentEnv: doc.componentEnv ?? {},
  };
}

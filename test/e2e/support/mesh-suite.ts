/**
 * One local mesh (ambientctl's LocalMesh: istiod, a real istio-cni agent and a ztunnel per node,
 * pods through the real CNI chain, the sample workloads) per redirection mode, shared by the tests
 * of one suite: up in `before`, down in `after`. Every e2e file runs its tests in both modes,
 * because nftables and eBPF capture are two different data paths into the same ztunnel.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe } from 'node:test';
import { LocalMesh, type RedirectMode } from '../../../ambientctl/src/local-mesh/index.ts';
import { REDIRECT_OBJECT_PATH } from '../../../cni/src/redirect/index.ts';

export const REDIRECT_MODES: readonly RedirectMode[] = ['nftables', 'ebpf'];

/** Why a mode cannot run here, or false. */
export function redirectModeSkip(mode: RedirectMode): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, nftables, eBPF, cgroups)';
  if (mode === 'ebpf' && !existsSync(REDIRECT_OBJECT_PATH)) {
    return `eBPF object not built (${REDIRECT_OBJECT_PATH}); npm run build`;
  }
  if (mode === 'ebpf' && !existsSync('/sys/fs/bpf')) return 'no bpffs at /sys/fs/bpf';
  return false;
}

/** What a suite's tests see: the mode, and the mesh once `before` brought it up. */
export interface MeshSuite {
  readonly mode: RedirectMode;
  readonly mesh: LocalMesh;
}

export interface MeshSuiteOptions {
  /** The whole suite, mesh up and down included. */
  readonly timeoutMs: number;
}

/**
 * `describe(<title> (<mode>))` for each redirection mode, with one LocalMesh (two nodes, samples)
 * shared by its tests. The state directory goes with the mesh; when a test (or a setup hook)
 * failed, its logs stay and their path is printed.
 */
export function describeEachRedirectMode(
  title: string,
  options: MeshSuiteOptions,
  body: (suite: MeshSuite) => void,
): void {
  for (const mode of REDIRECT_MODES) {
    describe(`${title} (${mode})`, { skip: redirectModeSkip(mode), timeout: options.timeoutMs }, () => {
      let mesh: LocalMesh | undefined;
      let stateDir: string | undefined;
      let failed = false;
      let ran = 0;
      const suite: MeshSuite = {
        mode,
        get mesh(): LocalMesh {
          if (mesh === undefined) throw new Error(`the ${mode} mesh is not up`);
          return mesh;
        },
      };

      before(async () => {
        stateDir = mkdtempSync(join(tmpdir(), 'e2e-'));
        const started = Date.now();
        mesh = await LocalMesh.up({ stateDir, redirectMode: mode, nodes: 2 });
        console.log(`# ${title} (${mode}): mesh up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      });

      afterEach((t) => {
        ran++;
        // TestContext.passed is in Node 24, not yet in @types/node.
        if ((t as { passed?: boolean }).passed === false) failed = true;
      });

      after(async () => {
        await mesh?.down();
        if (stateDir === undefined) return;
        // A failed `before` runs no test (and no afterEach): its logs are kept too.
        if (failed || ran === 0) {
          console.log(
            `# ${title} (${mode}): a test or its setup failed; logs kept in ${join(stateDir, 'logs')}`,
          );
        } else {
          rmSync(stateDir, { recursive: true, force: true });
        }
      });

      body(suite);
    });
  }
}

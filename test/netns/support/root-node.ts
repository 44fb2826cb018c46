import { HarnessProcess } from '../../harness/index.ts';
import { childEnv } from './env.ts';

/**
 * Starts a Node script in this process's own (root) network namespace, with the pinned Node and
 * `--conditions=@ambient/source` so it can import workspace packages from source. Unlike a pod's
 * `spawnNode`, the child enters no netns and no cgroup: whatever namespace its sockets end up in
 * is what it was handed. Stop it (`proc.stop()`) in the test's cleanup.
 */
export function spawnRootNode(script: string, args: readonly string[]): HarnessProcess {
  return new HarnessProcess(
    [process.execPath, '--conditions=@ambient/source', script, ...args],
    { env: childEnv() },
    `root netns: node ${script} ${args.join(' ')}`,
  );
}

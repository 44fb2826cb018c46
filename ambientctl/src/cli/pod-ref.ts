import { AmbientctlError } from '../errors.ts';
import type { PodStatus } from '../host/hosted-mesh.ts';

/**
 * Finds a pod as kubectl does: `name` or `pod/name`, or `deploy/name` (`deployment/name`) for a
 * Running pod of that Deployment. POD_NOT_FOUND lists the namespace's pods.
 */
export function resolvePod(pods: readonly PodStatus[], namespace: string, ref: string): PodStatus {
  const inNs = pods.filter((p) => p.namespace === namespace);
  const m = /^(deploy|deployment|deployments|deployment\.apps)\/(.+)$/.exec(ref);
  let found: PodStatus | undefined;
  if (m) {
    const owned = inNs.filter((p) => p.owner === m[2]);
    found = owned.find((p) => p.phase === 'Running') ?? owned[0];
  } else {
    const name = ref.replace(/^(pod|pods)\//, '');
    found = inNs.find((p) => p.name === name);
  }
  if (found === undefined) {
    const known = inNs.map((p) => p.name).join(', ');
    throw new AmbientctlError(
      'POD_NOT_FOUND',
      `no pod ${ref} in namespace ${namespace}${known === '' ? ' (it has no pods; try -n demo)' : `; pods there: ${known}`}`,
    );
  }
  return found;
}

import { ControlAnswerError } from '../host/control-client.ts';
import type { ApplyResult } from '../host/hosted-mesh.ts';
import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';
import { kubectlName, readManifests } from './manifests.ts';

function printResults(ctx: CliContext, results: readonly ApplyResult[]): void {
  for (const r of results) ctx.out(`${kubectlName(r.kind, r.name)} ${r.action}`);
}

/**
 * `ambientctl apply -f <file|dir|->`: Namespaces, Deployments, Pods, Services,
 * AuthorizationPolicy and PeerAuthentication. A malformed document is rejected alone: the others
 * are applied and printed, then the error lists each rejected one (exit 1).
 */
export async function apply(ctx: CliContext, o: { readonly files: readonly string[] }): Promise<number> {
  const text = await readManifests(o.files);
  const mesh = await connectMesh(ctx);
  try {
    printResults(ctx, await mesh.apply(text));
  } catch (err) {
    if (err instanceof ControlAnswerError && Array.isArray(err.details.applied)) {
      printResults(ctx, err.details.applied as ApplyResult[]);
    }
    throw err;
  }
  return 0;
}

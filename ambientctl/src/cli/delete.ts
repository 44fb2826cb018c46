import { AmbientctlError } from '../errors.ts';
import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';
import { kubectlName, objectRefs, readManifests } from './manifests.ts';

export interface DeleteOptions {
  readonly files: readonly string[];
  readonly kind?: string;
  readonly name?: string;
  readonly namespace: string;
  readonly ignoreNotFound: boolean;
}

/** `ambientctl delete -f <file>` or `delete <kind> <name> -n <ns>`, as kubectl. */
export async function del(ctx: CliContext, o: DeleteOptions): Promise<number> {
  let refs: { kind: string; namespace: string | undefined; name: string }[];
  if (o.files.length > 0) {
    if (o.kind !== undefined)
      throw new AmbientctlError('USAGE', 'delete takes either -f or <kind> <name>, not both');
    refs = objectRefs(await readManifests(o.files));
  } else {
    if (o.kind === undefined || o.name === undefined) {
      throw new AmbientctlError(
        'USAGE',
        'delete needs -f <file> or <kind> <name> (e.g. delete authorizationpolicy deny -n demo)',
      );
    }
    refs = [
      {
        kind: o.kind,
        namespace: o.kind.toLowerCase() === 'namespace' ? undefined : o.namespace,
        name: o.name,
      },
    ];
  }
  const mesh = await connectMesh(ctx);
  let missing = 0;
  // Reverse order, as kubectl: what a file creates first (its Namespace) goes last.
  for (const r of refs.reverse()) {
    const ns = r.kind.toLowerCase() === 'namespace' ? undefined : (r.namespace ?? o.namespace);
    if (await mesh.delete(r.kind, ns, r.name)) {
      ctx.out(`${kubectlName(r.kind, r.name)} deleted`);
    } else if (!o.ignoreNotFound) {
      missing++;
      ctx.err(
        `Error: ${kubectlName(r.kind, r.name)}${ns === undefined ? '' : ` in namespace ${ns}`} not found`,
      );
    }
  }
  return missing === 0 ? 0 : 1;
}

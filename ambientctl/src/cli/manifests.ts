import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { AmbientctlError } from '../errors.ts';

const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** Reads stdin to its end (`-f -`). */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The text of `-f` arguments as kubectl reads them: a file, every .yaml/.yml/.json file of a
 * directory (sorted, not recursive), or `-` for stdin; several joined as one multi-document YAML.
 */
export async function readManifests(paths: readonly string[]): Promise<string> {
  const texts: string[] = [];
  for (const p of paths) {
    if (p === '-') {
      texts.push(await readStdin());
      continue;
    }
    let isDir: boolean;
    try {
      isDir = statSync(p).isDirectory();
    } catch (err) {
      throw new AmbientctlError(
        'USAGE',
        `-f ${p}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : String(err)}`,
      );
    }
    if (isDir) {
      const files = readdirSync(p)
        .filter((f) => MANIFEST_EXTENSIONS.has(extname(f)))
        .sort();
      if (files.length === 0)
        throw new AmbientctlError('USAGE', `-f ${p}: no .yaml, .yml or .json files in it`);
      for (const f of files) texts.push(readFileSync(join(p, f), 'utf8'));
    } else {
      texts.push(readFileSync(p, 'utf8'));
    }
  }
  // A JSON document is YAML too; `---` separates what came from different files.
  return texts.map((t) => t.replace(/\s*$/, '\n')).join('---\n');
}

/** kind, namespace and name of each document (for `delete -f`). */
export function objectRefs(text: string): { kind: string; namespace: string | undefined; name: string }[] {
  const out: { kind: string; namespace: string | undefined; name: string }[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) {
      throw new AmbientctlError('MANIFEST_INVALID', `not YAML: ${doc.errors[0]?.message ?? 'parse error'}`);
    }
    const v = doc.toJS() as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } } | null;
    if (v === null || v === undefined) continue;
    if (typeof v.kind !== 'string' || typeof v.metadata?.name !== 'string') {
      throw new AmbientctlError('MANIFEST_INVALID', 'a document without kind or metadata.name');
    }
    out.push({
      kind: v.kind,
      namespace: typeof v.metadata.namespace === 'string' ? v.metadata.namespace : undefined,
      name: v.metadata.name,
    });
  }
  return out;
}

/** `deployment.apps/echo`, `service/echo`, `authorizationpolicy.security.istio.io/deny`, as kubectl names them. */
export function kubectlName(kind: string, name: string): string {
  const groups: Record<string, string> = {
    deployment: 'deployment.apps',
    authorizationpolicy: 'authorizationpolicy.security.istio.io',
    peerauthentication: 'peerauthentication.security.istio.io',
  };
  const k = kind.toLowerCase();
  return `${groups[k] ?? k}/${name}`;
}

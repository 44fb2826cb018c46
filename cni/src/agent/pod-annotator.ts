/**
 * Writing the `ambient.istio.io/redirection` annotation (spec §6.2), which istiod reads to mark
 * the pod's Workload HBONE-capable. Kubernetes: a JSON merge patch on the pod. Local config
 * source: the pod's manifest in the manifests directory is edited in place (the document is
 * updated through the `yaml` Document API, keeping comments and the other documents of the file,
 * and the file is replaced atomically), so every LocalSource reading that directory, istiod's
 * included, sees the annotation as it would see it from the API server. The agent is then one
 * more writer of that directory, as it is one more writer of the Pod in Kubernetes.
 */
import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { errorMessage } from '@ambient/common/errors';
import { loadKubeConfig } from '@ambient/common/kube/client';
import { HttpMethod, IsomorphicFetchHttpLibrary, RequestContext } from '@kubernetes/client-node';
import { isMap, parseAllDocuments } from 'yaml';
import { AgentError } from './errors.ts';
import { writeFileAtomic } from './install/atomic-file.ts';

export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';
export type RedirectionState = 'enabled' | 'pending';

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
}

export interface PodAnnotator {
  /** Sets the annotation, or removes it with `undefined`. A missing pod is not an error. */
  setRedirection(pod: PodRef, state: RedirectionState | undefined): Promise<void>;
}

const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

async function listManifests(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listManifests(p)));
    else if (e.isFile() && MANIFEST_EXTENSIONS.has(extname(e.name))) out.push(p);
  }
  return out;
}

/** Edits the pod's own manifest document in a local manifests directory. */
export class LocalPodAnnotator implements PodAnnotator {
  readonly #dir: string;
  /** Edits are serialized: two pods in one file must not overwrite each other. */
  #queue: Promise<void> = Promise.resolve();

  constructor(dir: string) {
    this.#dir = dir;
  }

  setRedirection(pod: PodRef, state: RedirectionState | undefined): Promise<void> {
    const run = this.#queue.catch(() => {}).then(() => this.#edit(pod, state));
    this.#queue = run;
    return run;
  }

  async #edit(pod: PodRef, state: RedirectionState | undefined): Promise<void> {
    try {
      for (const file of await listManifests(this.#dir)) {
        const text = await readFile(file, 'utf8');
        if (!text.includes(pod.name)) continue;
        const docs = parseAllDocuments(text);
        if (!Array.isArray(docs)) continue;
        let changed = false;
        for (const doc of docs) {
          if (doc.errors.length > 0 || !isMap(doc.contents)) continue;
          if (doc.get('kind') !== 'Pod') continue;
          const ns = doc.getIn(['metadata', 'namespace']) ?? 'default';
          if (doc.getIn(['metadata', 'name']) !== pod.name || ns !== pod.namespace) continue;
          const path = ['metadata', 'annotations', REDIRECTION_ANNOTATION];
          if (doc.getIn(path) === state) continue;
          if (state === undefined) doc.deleteIn(path);
          else doc.setIn(path, state);
          changed = true;
        }
        if (!changed) continue;
        const json = extname(file) === '.json';
        const out = json
          ? `${JSON.stringify(docs[0]?.toJS(), null, 2)}\n`
          : docs.map((d, i) => (i === 0 ? String(d) : `---\n${String(d)}`)).join('');
        const mode = 0o644;
        await writeFileAtomic(file, out, { mode });
        return;
      }
    } catch (err) {
      throw new AgentError(
        'ANNOTATION_FAILED',
        `annotating pod ${pod.namespace}/${pod.name} ${REDIRECTION_ANNOTATION}=${state ?? '(removed)'} in ${this.#dir} failed: ${errorMessage(err)}`,
        { cause: err, retryable: true },
      );
    }
  }
}

/** A JSON merge patch on the pod through the API server. */
export class KubePodAnnotator implements PodAnnotator {
  readonly #kc: ReturnType<typeof loadKubeConfig>;
  readonly #http = new IsomorphicFetchHttpLibrary();

  constructor(kubeconfigPath: string | undefined) {
    this.#kc = loadKubeConfig(kubeconfigPath === undefined ? {} : { kubeconfigPath });
  }

  async setRedirection(pod: PodRef, state: RedirectionState | undefined): Promise<void> {
    const server = (this.#kc.getCurrentCluster()?.server ?? '').replace(/\/+$/, '');
    const url = `${server}/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`;
    const ctx = new RequestContext(url, HttpMethod.PATCH);
    ctx.setHeaderParam('Content-Type', 'application/merge-patch+json');
    ctx.setHeaderParam('Accept', 'application/json');
    ctx.setBody(JSON.stringify({ metadata: { annotations: { [REDIRECTION_ANNOTATION]: state ?? null } } }));
    let status: number;
    let body = '';
    try {
      await this.#kc.applySecurityAuthentication(ctx);
      const resp = await this.#http.send(ctx).toPromise();
      status = resp.httpStatusCode;
      if (status < 200 || status > 299) body = await resp.body.text().catch(() => '');
    } catch (err) {
      throw new AgentError(
        'ANNOTATION_FAILED',
        `patching pod ${pod.namespace}/${pod.name} failed: ${errorMessage(err)}`,
        {
          cause: err,
          retryable: true,
        },
      );
    }
    if (status === 404) return;
    if (status < 200 || status > 299) {
      throw new AgentError(
        'ANNOTATION_FAILED',
        `patching pod ${pod.namespace}/${pod.name} answered ${status}: ${body.slice(0, 300)}`,
        { retryable: status >= 500 || status === 429 || status === 409 },
      );
    }
  }
}

import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { AmbientctlError } from '../errors.ts';
import { HostFiles } from '../host/files.ts';
import { connectMesh } from './connect.ts';
import type { CliContext } from './context.ts';
import { resolvePod } from './pod-ref.ts';

const COMPONENT_ALIASES: Readonly<Record<string, string>> = {
  istiod: 'istiod',
  ztunnel: 'ztunnel',
  'istio-cni': 'istio-cni',
  cni: 'istio-cni',
  'istio-cni-node': 'istio-cni',
};

export interface LogsOptions {
  readonly target: string;
  readonly namespace: string;
  readonly node?: string;
  readonly follow: boolean;
  /** Lines from the end; undefined for the whole file. */
  readonly tail?: number;
}

interface LogSource {
  readonly label: string;
  readonly file: string;
}

function lastLines(text: string, n: number | undefined): string {
  if (n === undefined) return text;
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines
    .slice(-n)
    .map((l) => `${l}\n`)
    .join('');
}

function readFrom(file: string, offset: number): { text: string; size: number } {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return { text: '', size: offset };
  }
  // A log that was rotated or truncated restarts from its beginning.
  const from = size < offset ? 0 : offset;
  if (size === from) return { text: '', size };
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(size - from);
    const n = readSync(fd, buf, 0, buf.length, from);
    return { text: buf.subarray(0, n).toString('utf8'), size: from + n };
  } finally {
    closeSync(fd);
  }
}

/**
 * `ambientctl logs <component|pod>`: a component's log (istiod, ztunnel, istio-cni; per node with
 * `--node`, every node's otherwise), `host` for the daemon's own, or a pod's (`-n`, and
 * `deploy/<name>` as kubectl). `-f` follows until Ctrl-C.
 */
export async function logs(ctx: CliContext, o: LogsOptions): Promise<number> {
  const sources: LogSource[] = [];
  if (o.target === 'host') {
    sources.push({ label: 'host', file: new HostFiles(ctx.stateDir).hostLog });
  } else {
    const mesh = await connectMesh(ctx);
    const component = COMPONENT_ALIASES[o.target];
    if (component !== undefined) {
      const all = (await mesh.components()).filter((c) => c.name === component);
      const picked = o.node === undefined ? all : all.filter((c) => c.node === o.node);
      if (picked.length === 0) {
        throw new AmbientctlError(
          'NOT_FOUND',
          `no ${component} on node ${o.node}; it runs on ${all.map((c) => c.node).join(', ')}`,
        );
      }
      for (const c of picked) sources.push({ label: `${c.name} ${c.node}`, file: c.logFile });
    } else {
      const pod = resolvePod(await mesh.pods(), o.namespace, o.target);
      sources.push({ label: `${pod.namespace}/${pod.name}`, file: pod.logFile });
    }
  }

  const many = sources.length > 1;
  const offsets = new Map<string, number>();
  const emit = (s: LogSource, text: string): void => {
    if (text === '') return;
    if (!many) {
      process.stdout.write(text);
      return;
    }
    for (const line of text.replace(/\n$/, '').split('\n')) process.stdout.write(`[${s.label}] ${line}\n`);
  };
  for (const s of sources) {
    const r = readFrom(s.file, 0);
    offsets.set(s.file, r.size);
    emit(s, lastLines(r.text, o.tail));
  }
  if (!o.follow) return 0;

  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      for (const s of sources) {
        const r = readFrom(s.file, offsets.get(s.file) ?? 0);
        offsets.set(s.file, r.size);
        emit(s, r.text);
      }
    }, 250);
    const stop = (): void => {
      clearInterval(timer);
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}

/**
 * Traffic from inside pods of the local mesh, always through `mesh.exec` (the pod's netns and
 * cgroup, so the in-pod capture applies exactly as it does to the pod's own app): a batch of
 * requests with the sample client, or a background request loop (request-loop.ts) that runs while
 * a test changes the mesh, then reports every request with its times.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LocalMesh, PodStatus } from '../../../ambientctl/src/local-mesh/index.ts';
import { CLIENT_PROGRAM } from '../../../ambientctl/src/samples/index.ts';

export const REQUEST_LOOP_PROGRAM = fileURLToPath(new URL('./request-loop.ts', import.meta.url));

/** One request's outcome as the sample client prints it. */
export interface Answer {
  readonly ok: boolean;
  readonly pod?: string;
  readonly status?: number;
  readonly error?: string;
}

/** `count` requests from `pod` to `url`, one connection each, with the sample client. */
export async function sendRequests(
  mesh: LocalMesh,
  pod: PodStatus,
  url: string,
  count: number,
  timeoutMs = 2000,
): Promise<Answer[]> {
  const r = await mesh.exec(
    pod.namespace,
    pod.name,
    [
      process.execPath,
      CLIENT_PROGRAM,
      '--url',
      url,
      '--count',
      String(count),
      '--timeout-ms',
      String(timeoutMs),
    ],
    { timeoutMs: count * (timeoutMs + 500) + 10_000 },
  );
  const answers = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Answer);
  if (answers.length !== count) {
    throw new Error(
      `client in ${pod.namespace}/${pod.name} printed ${answers.length}/${count} answers (exit ${r.code}): ${r.stderr.slice(-500)}`,
    );
  }
  return answers;
}

/** Which pods answered, and how many requests failed. */
export function summarize(answers: readonly Answer[]): { ok: number; failed: number; pods: string[] } {
  const ok = answers.filter((a) => a.ok);
  return {
    ok: ok.length,
    failed: answers.length - ok.length,
    pods: [...new Set(ok.map((a) => a.pod ?? '?'))].sort(),
  };
}

/** One request of the loop, with wall-clock times (ms since the epoch; same clock as the test). */
export interface LoopRecord {
  readonly i: number;
  readonly start: number;
  readonly end: number;
  readonly ok: boolean;
  readonly pod?: string;
  readonly error?: string;
  /** Keep-alive loops: the request went over the previous request's connection. */
  readonly reused?: boolean;
}

export interface RequestLoop {
  /** Ends the loop after its current request and returns every request it made. */
  stop(): Promise<LoopRecord[]>;
}

/**
 * Starts request-loop.ts in `pod` against `url`. Requests run back to back (`intervalMs` apart)
 * until `stop()`, or `maxMs` as a bound if the test never gets there.
 */
export function startRequestLoop(
  mesh: LocalMesh,
  pod: PodStatus,
  url: string,
  options: { intervalMs?: number; timeoutMs?: number; maxMs?: number; keepAlive?: boolean } = {},
): RequestLoop {
  const dir = mkdtempSync(join(tmpdir(), 'e2e-loop-'));
  const stopFile = join(dir, 'stop');
  const maxMs = options.maxMs ?? 120_000;
  const run = mesh.exec(
    pod.namespace,
    pod.name,
    [
      process.execPath,
      REQUEST_LOOP_PROGRAM,
      '--url',
      url,
      '--stop-file',
      stopFile,
      '--interval-ms',
      String(options.intervalMs ?? 20),
      '--timeout-ms',
      String(options.timeoutMs ?? 2000),
      '--max-ms',
      String(maxMs),
      ...(options.keepAlive === true ? ['--keep-alive'] : []),
    ],
    { timeoutMs: maxMs + 15_000 },
  );
  // The loop's outcome is read by stop(); until then a rejection must not go unhandled.
  run.catch(() => {});
  return {
    async stop(): Promise<LoopRecord[]> {
      writeFileSync(stopFile, '');
      try {
        const r = await run;
        const records = r.stdout
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as LoopRecord);
        if (records.length === 0) {
          throw new Error(
            `the request loop in ${pod.namespace}/${pod.name} made no request: ${r.stderr.slice(-500)}`,
          );
        }
        return records;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** `failed/total`, and the failure rate in percent, for the report lines. */
export function failureRate(records: readonly { ok: boolean }[]): {
  failed: number;
  total: number;
  pct: number;
} {
  const failed = records.filter((r) => !r.ok).length;
  return { failed, total: records.length, pct: records.length === 0 ? 0 : (100 * failed) / records.length };
}

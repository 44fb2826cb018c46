/**
 * istiod at 10,000 pods: `npm run bench:istiod [-- --changes=200 --file-changes=100 --debounce=10ms]`.
 *
 * istiod runs in this process (in local mode, on a generated manifests directory), exactly as
 * `main.ts` builds it; the 50 delta xDS clients run in a child process (`xds-clients.ts`), so
 * decoding what istiod sends costs istiod's process nothing. On this 2-core machine the two
 * processes mostly get a core each. This process does nothing but istiod while measuring: the
 * manifests are written before istiod starts, and a change is one store write or one file write.
 *
 * Measured:
 * 1. startup: `Istiod.create` + `start` (scan and validate the directory, build the index, load the
 *    CA, listen) until `/ready` would answer 200;
 * 2. full push: the 50 clients connect at once (TLS, token auth), each on its own connection; the
 *    time from opening the streams until the last client holds every Address and Authorization;
 * 3. heap used and RSS of this process after a forced GC, once the full push is done;
 * 4. incremental push through the ConfigStore: one pod object changed with `store.apply`, which is
 *    exactly what the Kubernetes source does with one watch event, until all 50 clients received
 *    it. This is the headline number: a 10,000-pod mesh is a Kubernetes cluster, and this path is
 *    index + debounce + push without the local directory's rescan;
 * 5. incremental push through the manifests directory: one pod's version label changed in its
 *    file (an atomic rename, as editors and ConfigMap volumes write) → LocalSource rescan → index
 *    → push; the time from the rename until all 50 clients received that Workload.
 *
 * Changes are made one at a time: the next starts once every client received the previous one.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import * as inspector from 'node:inspector/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Pod } from '@ambient/common/config/objects';
import { Logging } from '@ambient/common/log';
import { applyMallocTuning } from '@ambient/common/malloc-tuning';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../src/ambient/index.ts';
import { podUid } from '../src/ambient/workloads.ts';
import { Istiod } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { BENCH_SCALE, type MeshLayout, writeMesh } from './manifests.ts';
import type { ClientsCommand, ClientsReport } from './xds-clients.ts';

const TARGETS = { fullPushMs: 2000, incrementalP99Ms: 50, heapMb: 500 } as const;

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '50' },
    changes: { type: 'string', default: '200' },
    'file-changes': { type: 'string', default: '100' },
    debounce: { type: 'string', default: '10ms' },
    'debounce-max': { type: 'string', default: '1s' },
    'manifests-debounce': { type: 'string', default: '10ms' },
    // Writes a .cpuprofile of istiod's full-push phase (connect → all clients hold everything).
    'cpu-profile': { type: 'string' },
  },
});
const CLIENTS = Number(args.clients);
// What istiod's main does at start (runProgram), so the in-process istiod allocates as it would.
if (!applyMallocTuning())
  throw new Error('malloc tuning refused: the bench would not measure what istiod runs');
const STORE_CHANGES = Number(args.changes);
const FILE_CHANGES = Number(args['file-changes']);

const now = (): number => performance.timeOrigin + performance.now();
const mb = (bytes: number): number => Math.round((bytes / 1024 / 1024) * 10) / 10;
const ms = (v: number): number => Math.round(v * 10) / 10;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

/** The child process of clients, with a typed wait for its next report of a kind. */
class Clients {
  readonly child: ChildProcess;
  readonly #queue: ClientsReport[] = [];
  #wake: (() => void) | undefined;

  constructor() {
    this.child = fork(new URL('./xds-clients.ts', import.meta.url).pathname, [], {
      execArgv: ['--conditions=@ambient/source'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (m: ClientsReport) => {
      if (m.type === 'failed') {
        console.error(`clients: ${m.error}`);
        return;
      }
      this.#queue.push(m);
      this.#wake?.();
    });
  }

  send(cmd: ClientsCommand): void {
    this.child.send(cmd);
  }

  async next<T extends ClientsReport['type']>(
    type: T,
    timeoutMs = 60_000,
  ): Promise<Extract<ClientsReport, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#queue.findIndex((m) => m.type === type);
      if (i >= 0) return this.#queue.splice(i, 1)[0] as Extract<ClientsReport, { type: T }>;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no '${type}' report from the clients within ${timeoutMs}ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** Runs `change` and resolves with the time until every client received resource `name`. */
  async measure(name: string, change: () => Promise<number> | number): Promise<number> {
    this.send({ type: 'watch', name });
    await this.next('watching');
    const at = await change();
    const seen = await this.next('seen', 30_000).catch((err: unknown) => {
      throw new Error(`resource ${name}: ${(err as Error).message}`, { cause: err });
    });
    return Math.max(...seen.at) - at;
  }
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'istiod-bench-'));
  const manifests = join(work, 'manifests');
  const clients = new Clients();
  let istiod: Istiod | undefined;
  try {
    // Generate the mesh and a token per client before istiod exists.
    const generateStarted = now();
    const layout = await writeMesh(manifests, BENCH_SCALE);
    const tokens = Array.from(
      { length: CLIENTS },
      (_, i) => `bench-ztunnel-token-${String(i).padStart(4, '0')}`,
    );
    await writeFile(
      join(work, 'tokens.yaml'),
      tokens
        .map(
          (t, i) =>
            `${t}: { namespace: istio-system, serviceAccount: ztunnel, podName: ztunnel-${i}, podUid: zt-${i} }`,
        )
        .join('\n'),
    );
    const generateMs = now() - generateStarted;
    await clients.next('ready');

    const config = loadConfig({
      LOCAL_DATA_DIR: work,
      LOCAL_TOKEN_FILE: join(work, 'tokens.yaml'),
      ROOT_CA_DIR: join(work, 'no-cacerts'),
      XDS_BIND_ADDRESS: '127.0.0.1',
      XDS_PORT: '0',
      MONITORING_BIND_ADDRESS: '127.0.0.1',
      MONITORING_PORT: '0',
      DEBUG_BIND_ADDRESS: '127.0.0.1',
      DEBUG_PORT: '0',
      PILOT_DEBOUNCE_AFTER: args.debounce,
      PILOT_DEBOUNCE_MAX: args['debounce-max'],
      LOCAL_MANIFESTS_DEBOUNCE: args['manifests-debounce'],
      // Store-path changes below must not be reverted by the periodic safety rescan mid-run.
      LOCAL_MANIFESTS_RESCAN_INTERVAL: '1h',
      TERMINATION_DRAIN_DURATION: '1s',
    });
    gc();
    const heapBefore = process.memoryUsage();

    // 1. Startup.
    const startAt = now();
    const cpuAtStart = process.cpuUsage();
    istiod = await Istiod.create(config, { logging: new Logging({ levels: 'error' }) });
    await istiod.start();
    const readyAt = now();
    const cpuStartup = process.cpuUsage(cpuAtStart);
    if (!istiod.readiness.ready)
      throw new Error(`istiod not ready: ${istiod.readiness.pending().join(', ')}`);
    const expected = {
      [ADDRESS_TYPE_URL]: count(istiod.index.names(ADDRESS_TYPE_URL)),
      [AUTHORIZATION_TYPE_URL]: count(istiod.index.names(AUTHORIZATION_TYPE_URL)),
    };

    // 2. Full push to every client at once.
    const profiler = args['cpu-profile'] === undefined ? undefined : await startCpuProfile();
    const cpuAtConnect = process.cpuUsage();
    clients.send({
      type: 'connect',
      address: `localhost:${istiod.ports().xds}`,
      rootPem: istiod.authority.rootPem(),
      tokens,
      expected,
    });
    const full = await clients.next('full', 120_000);
    const fullDone = Math.max(...full.completedAt);
    const fullPushMs = fullDone - full.connectAt;
    const firstClientMs = Math.min(...full.completedAt) - full.connectAt;
    const cpuFullPush = process.cpuUsage(cpuAtConnect);
    if (profiler !== undefined && args['cpu-profile'] !== undefined) {
      await profiler.stop(args['cpu-profile']);
    }
    if (istiod.xds.connectionCount !== CLIENTS) {
      throw new Error(`${istiod.xds.connectionCount} connections, expected ${CLIENTS}`);
    }

    // 3. Memory once the full state is held by every connection.
    gc();
    const mem = process.memoryUsage();

    // 4. Incremental pushes through the ConfigStore (the Kubernetes source's write path).
    const storeLatencies: number[] = [];
    const pushTimeBefore = await pushTimeSeconds(istiod);
    const cpuAtStore = process.cpuUsage();
    const originals = new Map<string, Pod>();
    for (let j = 0; j < STORE_CHANGES; j++) {
      const i = (j * 104_729 + 7) % BENCH_SCALE.pods;
      const place = layout.pod(i);
      const pod = istiod.store.get('Pod', place.namespace, place.name) as Pod;
      if (!originals.has(`${place.namespace}/${place.name}`))
        originals.set(`${place.namespace}/${place.name}`, pod);
      const changed: Pod = {
        ...pod,
        metadata: { ...pod.metadata, labels: { ...pod.metadata.labels, version: `store-${j}` } },
      };
      const store = istiod.store;
      storeLatencies.push(
        await clients.measure(podUid(config.mesh, place.namespace, place.name), () => {
          const at = now();
          store.apply({ upsert: [changed] });
          return at;
        }),
      );
    }
    const cpuStore = process.cpuUsage(cpuAtStore);
    const pushTimeAfter = await pushTimeSeconds(istiod);
    // Put the pods back as the files say, in one batch, before the file phase: otherwise its first
    // rescan would revert them all and its first sample would carry 200 workloads, not one.
    const restored = [...originals.values()];
    const last = restored.at(-1);
    if (last) {
      const s = istiod.store;
      await clients.measure(podUid(config.mesh, last.metadata.namespace ?? '', last.metadata.name), () => {
        s.apply({ upsert: restored });
        return now();
      });
    }

    // 5. Incremental pushes through the manifests directory (after the store phase: a rescan
    // replaces the whole Pod kind with what the files say, so it would undo store writes).
    const fileLatencies: number[] = [];
    const versions = new Map<string, Map<number, string>>();
    for (let j = 0; j < FILE_CHANGES; j++) {
      const i = (j * 7919 + 13) % BENCH_SCALE.pods;
      const place = layout.pod(i);
      const fileVersions = versions.get(place.file) ?? new Map<number, string>();
      versions.set(place.file, fileVersions);
      fileVersions.set(i, `file-${j}`);
      const text = layout.podFileYaml(place.file, fileVersions);
      const path = join(manifests, place.file);
      // Written outside the watched directory, then renamed into it (same filesystem): only the
      // rename is an event, as when a ConfigMap volume or an editor swaps the file in.
      const tmp = join(work, `.bench-${j}.yaml`);
      await writeFile(tmp, text);
      fileLatencies.push(
        await clients.measure(podUid(config.mesh, place.namespace, place.name), async () => {
          const at = now();
          await rename(tmp, path);
          return at;
        }),
      );
    }

    report({
      layout,
      generateMs,
      startupMs: readyAt - startAt,
      cpuStartupMs: (cpuStartup.user + cpuStartup.system) / 1000,
      fullPushMs,
      firstClientMs,
      startToFullMs: fullDone - startAt,
      cpuFullPushMs: (cpuFullPush.user + cpuFullPush.system) / 1000,
      cpuFullPushSystemMs: cpuFullPush.system / 1000,
      clientsCpuMs: full.cpuMs,
      expected,
      heapBefore,
      mem,
      file: fileLatencies.sort((a, b) => a - b),
      store: storeLatencies.sort((a, b) => a - b),
      cpuPerStoreChangeMs: (cpuStore.user + cpuStore.system) / 1000 / Math.max(1, STORE_CHANGES),
      serverPushMeanMs:
        ((pushTimeAfter.sum - pushTimeBefore.sum) / Math.max(1, pushTimeAfter.count - pushTimeBefore.count)) *
        1000,
    });
  } finally {
    clients.send({ type: 'close' });
    await Promise.race([once(clients.child, 'exit'), new Promise((r) => setTimeout(r, 5000))]);
    if (clients.child.exitCode === null) clients.child.kill();
    await istiod?.stop({ mode: 'immediate' });
    await rm(work, { recursive: true, force: true });
  }
}

function count(names: Iterable<string>): number {
  let n = 0;
  for (const _ of names) n++;
  return n;
}

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (!g) throw new Error('run with --expose-gc (npm run bench:istiod does) so heap is measured after a GC');
  g();
}

/** Sum and count of istiod_xds_push_time_seconds for Address pushes (one observation per connection). */
async function pushTimeSeconds(istiod: Istiod): Promise<{ sum: number; count: number }> {
  const metric = istiod.registry.getSingleMetric('istiod_xds_push_time_seconds');
  const data = await metric?.get();
  let sum = 0;
  let n = 0;
  for (const v of data?.values ?? []) {
    const s = v as { labels: Record<string, string>; value: number; metricName?: string };
    if (s.labels.type !== 'istio.workload.Address') continue;
    if (s.metricName === 'istiod_xds_push_time_seconds_sum') sum += s.value;
    if (s.metricName === 'istiod_xds_push_time_seconds_count') n += s.value;
  }
  return { sum, count: n };
}

function report(r: {
  layout: MeshLayout;
  generateMs: number;
  startupMs: number;
  cpuStartupMs: number;
  fullPushMs: number;
  firstClientMs: number;
  startToFullMs: number;
  cpuFullPushMs: number;
  /** Of which kernel time. */
  cpuFullPushSystemMs: number;
  clientsCpuMs: number;
  expected: Record<string, number>;
  heapBefore: NodeJS.MemoryUsage;
  mem: NodeJS.MemoryUsage;
  file: number[];
  store: number[];
  serverPushMeanMs: number;
  cpuPerStoreChangeMs: number;
}): void {
  const s = BENCH_SCALE;
  const heapMb = mb(r.mem.heapUsed);
  const p50 = percentile(r.store, 50);
  const p99 = percentile(r.store, 99);
  const ratio = (v: number, target: number) => `${(v / target).toFixed(2)}× target`;
  const lines = [
    `istiod benchmark: local mode, ${s.pods} pods (ambient-annotated) on ${s.nodes} nodes in ${s.namespaces} namespaces, ${s.services} services, ${s.authorizationPolicies} AuthorizationPolicies (+ mesh-wide STRICT)`,
    `  ${CLIENTS} delta xDS clients in a child process, each on its own TLS connection, token-authenticated`,
    `  machine: ${cpus().length} cores, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} at the end (other work on the machine slows the full push first)`,
    `  debounce: PILOT_DEBOUNCE_AFTER=${args.debounce} PILOT_DEBOUNCE_MAX=${args['debounce-max']}; LOCAL_MANIFESTS_DEBOUNCE=${args['manifests-debounce']}`,
    `  resources per client: ${r.expected[ADDRESS_TYPE_URL]} Address, ${r.expected[AUTHORIZATION_TYPE_URL]} Authorization; manifests written in ${ms(r.generateMs)} ms`,
    '',
    `  startup (scan + validate + index + CA + listen) ${ms(r.startupMs)} ms (istiod CPU ${ms(r.cpuStartupMs)} ms)`,
    `  full push, connect → all ${CLIENTS} clients hold everything: ${ms(r.fullPushMs)} ms (first client ${ms(r.firstClientMs)} ms; istiod CPU ${ms(r.cpuFullPushMs)} ms of which kernel ${ms(r.cpuFullPushSystemMs)} ms, clients' CPU ${ms(r.clientsCpuMs)} ms)   target < ${TARGETS.fullPushMs} ms: ${ratio(r.fullPushMs, TARGETS.fullPushMs)}`,
    `  start → all clients hold everything: ${ms(r.startToFullMs)} ms`,
    `  heap used after full push (after GC) ${heapMb} MB (before istiod ${mb(r.heapBefore.heapUsed)} MB), RSS ${mb(r.mem.rss)} MB (external ${mb(r.mem.external)} MB)   target < ${TARGETS.heapMb} MB: ${ratio(heapMb, TARGETS.heapMb)}`,
    `  incremental, ConfigStore path (one watch event's write), ${r.store.length} single-pod changes → all ${CLIENTS} clients:`,
    `    p50 ${ms(p50)} ms  p90 ${ms(percentile(r.store, 90))} ms  p99 ${ms(p99)} ms  max ${ms(r.store.at(-1) ?? Number.NaN)} ms   p99 target < ${TARGETS.incrementalP99Ms} ms: ${ratio(p99, TARGETS.incrementalP99Ms)}`,
    `    istiod's own push time (first change → response written, mean over connections): ${ms(r.serverPushMeanMs)} ms; istiod CPU per change (index, push to all, ACKs): ${ms(r.cpuPerStoreChangeMs)} ms`,
    `  incremental, manifests directory path (file rename → rescan → push), ${r.file.length} single-pod changes:`,
    `    p50 ${ms(percentile(r.file, 50))} ms  p90 ${ms(percentile(r.file, 90))} ms  p99 ${ms(percentile(r.file, 99))} ms  max ${ms(r.file.at(-1) ?? Number.NaN)} ms`,
  ];
  console.log(lines.join('\n'));
  console.log(
    JSON.stringify({
      bench: 'istiod',
      full_push_ms: ms(r.fullPushMs),
      incremental_p50_ms: ms(p50),
      incremental_p99_ms: ms(p99),
      heap_mb: heapMb,
    }),
  );
}

await main();

async function startCpuProfile(): Promise<{ stop(path: string): Promise<void> }> {
  const session = new inspector.Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  return {
    async stop(path) {
      const { profile } = await session.post('Profiler.stop');
      await writeFile(path, JSON.stringify(profile));
      session.disconnect();
    },
  };
}

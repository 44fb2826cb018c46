/**
 * `npm run bench:ztunnel`: ztunnel's data path in the netns harness, in one run. Two ztunnels
 * (pod A → ztunnel on node1 → HBONE → ztunnel on node2 → pod B) against the direct path between
 * two pods that are not enrolled: one-connection throughput (iperf3), added latency of 1 KiB
 * request/response at a fixed 1000 rps, ztunnel CPU per 1000 rps, RSS idle and with 10,000 idle
 * connections, and new connections per second. Prints a table with the targets, then one JSON
 * line. Needs root.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { type HarnessProcess, type Pod, TCP_ECHO_SERVER } from '@ambient/test/harness';

/**
 * The mesh fixture of the netns suites. @ambient/test exports only `./harness`, and a relative
 * import would put test files under ztunnel's rootDir, so it is loaded by URL and typed by what
 * this bench uses of it.
 */
interface MeshPod {
  readonly pod: Pod;
}
interface Mesh {
  addPod(spec: {
    node: string;
    name: string;
    namespace: string;
    serviceAccount: string;
    enrolled: boolean;
  }): Promise<MeshPod>;
  ztunnel(node: string): HarnessProcess;
  destroy(): Promise<void>;
}
const support = (file: string) => new URL(`../../test/netns/support/${file}`, import.meta.url).href;
const { MeshFixture, ZTUNNEL_DIST_MAIN } = (await import(support('mesh-fixture.ts'))) as {
  MeshFixture: { create(options: { nodes: number; ztunnelBuild?: 'source' | 'dist' }): Promise<Mesh> };
  ZTUNNEL_DIST_MAIN: string;
};
const { connectFrom } = (await import(support('mesh-traffic.ts'))) as {
  connectFrom(from: Pod, address: string, port: number, options?: { timeoutMs?: number }): Promise<Socket>;
};

const ECHO_PORT = 7000;
const IPERF_PORT = 5201;
const IPERF_SECONDS = 4;
const RATE = 1000;
const LATENCY_SECONDS = 5;
const IDLE_CONNECTIONS = 10_000;
const MSG = 1024;
const CLK_TCK = 100;

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

function rssMb(pid: number, field: 'VmRSS' | 'RssAnon' = 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

/** Proportional set size: shared pages (the node binary) divided among the processes mapping them. */
function pssMb(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return Number(m?.[1] ?? 0) / 1024;
}

async function iperfGbps(client: Pod, server: Pod): Promise<number> {
  const srv = server.spawn('iperf3', ['-s', '-1', '-p', String(IPERF_PORT)]);
  // iperf3 block-buffers its banner when stdout is a pipe: wait for the listening socket instead.
  for (let i = 0; i < 50; i++) {
    const ss = await server.exec('ss', ['-Hltn', `sport = :${IPERF_PORT}`]);
    if (ss.stdout.trim() !== '') break;
    await sleep(100);
  }
  const r = await client.exec(
    'iperf3',
    ['-c', server.ip, '-p', String(IPERF_PORT), '-t', String(IPERF_SECONDS), '-J'],
    {
      timeoutMs: (IPERF_SECONDS + 20) * 1000,
    },
  );
  await srv.exited;
  const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

/** Fixed-rate 1 KiB request/response on one connection; latencies in ms. */
async function latencies(client: Pod, server: Pod): Promise<number[]> {
  const s = await connectFrom(client, server.ip, ECHO_PORT);
  s.setNoDelay(true);
  const out: number[] = [];
  const sent: bigint[] = [];
  let pending = 0;
  s.on('data', (c: Buffer) => {
    pending += c.length;
    while (pending >= MSG) {
      pending -= MSG;
      const t = sent.shift();
      if (t !== undefined) out.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  });
  const payload = Buffer.alloc(MSG, 7);
  const total = RATE * LATENCY_SECONDS;
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    else if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    sent.push(process.hrtime.bigint());
    s.write(payload);
  }
  const deadline = Date.now() + 5000;
  while (out.length < total && Date.now() < deadline) await sleep(20);
  s.destroy();
  return out;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** Opens `n` connections, each confirmed by a 1-byte echo; returns them and the rate. */
async function openMany(from: Pod, to: Pod, n: number): Promise<{ sockets: Socket[]; perSecond: number }> {
  const sockets: Socket[] = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < n) {
      next++;
      const s = await connectFrom(from, to.ip, ECHO_PORT, { timeoutMs: 10_000 });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no echo within 10 s')), 10_000);
        s.once('data', () => {
          clearTimeout(timer);
          resolve();
        });
        s.write('x');
      });
      sockets.push(s);
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  return { sockets, perSecond: n / ((performance.now() - t0) / 1000) };
}

const fmt = (v: number, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:ztunnel needs root (network namespaces)');
  // 10,000 connections take 10,000 fds in this process and in each ztunnel: raise the soft limit
  // to the hard one (children inherit it); the hard limit itself may not be raisable here.
  const hard = execFileSync('prlimit', [
    '--pid',
    String(process.pid),
    '--nofile',
    '--raw',
    '--noheadings',
    '-o',
    'HARD',
  ])
    .toString()
    .trim();
  execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${hard}:${hard}`]);
  if (Number(hard) < IDLE_CONNECTIONS + 2000) {
    throw new Error(`open-files hard limit ${hard} is too low for ${IDLE_CONNECTIONS} connections`);
  }
  if (!existsSync(ZTUNNEL_DIST_MAIN)) {
    throw new Error(`${ZTUNNEL_DIST_MAIN} is missing: run \`npm run build\` (npm run bench:ztunnel does)`);
  }
  // The compiled ztunnel, as its package ships it: what a deployment runs.
  const mesh = await MeshFixture.create({ nodes: 2, ztunnelBuild: 'dist' });
  const echoes: HarnessProcess[] = [];
  try {
    const add = (node: string, name: string, enrolled: boolean): Promise<MeshPod> =>
      mesh.addPod({ node, name, namespace: enrolled ? 'bench' : 'direct', serviceAccount: name, enrolled });
    const a = await add('node1', 'a', true);
    const b = await add('node2', 'b', true);
    const da = await add('node1', 'da', false);
    const db = await add('node2', 'db', false);
    for (const p of [b, db]) {
      const e = p.pod.spawnNode(TCP_ECHO_SERVER, ['--port', String(ECHO_PORT)]);
      await e.waitForLine('"listening"');
      echoes.push(e);
    }
    const zt = [mesh.ztunnel('node1').pid ?? 0, mesh.ztunnel('node2').pid ?? 0];
    const idleRss = zt.map((pid) => rssMb(pid));
    // RSS includes the pages of the node binary itself (file-backed, shared by every Node process
    // on the machine: ~41 MB for an empty `node -e ''`); RssAnon is what this ztunnel owns.
    const idleAnon = zt.map((pid) => rssMb(pid, 'RssAnon'));
    const idlePss = zt.map(pssMb);

    const meshGbps = await iperfGbps(a.pod, b.pod);
    const directGbps = await iperfGbps(da.pod, db.pod);

    const direct = (await latencies(da.pod, db.pod)).sort((x, y) => x - y);
    const cpu0 = zt.map(cpuSeconds);
    const t0 = performance.now();
    const meshLat = (await latencies(a.pod, b.pod)).sort((x, y) => x - y);
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = zt.map((pid, i) => (cpuSeconds(pid) - (cpu0[i] ?? 0)) / elapsed);
    const rps = meshLat.length / LATENCY_SECONDS;
    const per1000 = cpu.map((c) => c / (rps / 1000));
    const vcpuPer1000 = Math.max(...per1000);
    const added = [50, 90, 99].map((p) => pct(meshLat, p) - pct(direct, p));

    const { sockets, perSecond } = await openMany(a.pod, b.pod, IDLE_CONNECTIONS);
    await sleep(1000);
    const rss10k = zt.map((pid) => rssMb(pid));
    for (const s of sockets) s.destroy();

    const row = (name: string, value: string, target: string) =>
      console.log(`${name.padEnd(40)} ${value.padStart(14)}   ${target}`);
    console.log('\nztunnel data path (two ztunnels, HBONE) vs direct, netns harness\n');
    row('metric', 'value', 'target');
    row('throughput, one connection (Gb/s)', fmt(meshGbps), '>= 1.5');
    row('direct throughput (Gb/s)', fmt(directGbps), `ratio ${fmt(meshGbps / directGbps)}`);
    row('added latency p50 (ms)', fmt(added[0] ?? Number.NaN, 3), '');
    row('added latency p90 (ms)', fmt(added[1] ?? Number.NaN, 3), '<= 0.6');
    row('added latency p99 (ms)', fmt(added[2] ?? Number.NaN, 3), '');
    row('achieved rate (rps)', fmt(rps, 0), `${RATE}`);
    row(
      'vCPU per 1000 rps (node1, node2)',
      `${fmt(per1000[0] ?? 0, 3)}, ${fmt(per1000[1] ?? 0, 3)}`,
      '<= 0.12 each',
    );
    row('idle RSS (MB, node1, node2)', `${fmt(idleRss[0] ?? 0, 0)}, ${fmt(idleRss[1] ?? 0, 0)}`, '<= 70');
    row('  of which private, RssAnon (MB)', `${fmt(idleAnon[0] ?? 0, 0)}, ${fmt(idleAnon[1] ?? 0, 0)}`, '');
    row('  PSS, shared pages divided (MB)', `${fmt(idlePss[0] ?? 0, 0)}, ${fmt(idlePss[1] ?? 0, 0)}`, '');
    row(
      `RSS with ${IDLE_CONNECTIONS} idle conns (MB)`,
      `${fmt(rss10k[0] ?? 0, 0)}, ${fmt(rss10k[1] ?? 0, 0)}`,
      '',
    );
    row('new connections per second', fmt(perSecond, 0), '');
    console.log(
      JSON.stringify({
        bench: 'ztunnel',
        throughput_gbps: round(meshGbps),
        direct_gbps: round(directGbps),
        added_p50_ms: round(added[0] ?? Number.NaN, 3),
        added_p90_ms: round(added[1] ?? Number.NaN, 3),
        added_p99_ms: round(added[2] ?? Number.NaN, 3),
        vcpu_per_1000rps: round(vcpuPer1000, 3),
        idle_rss_mb: round(Math.max(...idleRss), 1),
        rss_10k_conns_mb: round(Math.max(...rss10k), 1),
        conns_per_s: round(perSecond, 0),
      }),
    );
  } finally {
    for (const e of echoes) e.kill('SIGKILL');
    await mesh.destroy();
  }
}

function round(v: number, d = 2): number {
  const f = 10 ** d;
  return Math.round(v * f) / f;
}

await main();

// Benchmark of the in-pod capture path, nftables mode against eBPF mode, in one run on the same
// harness topology with the same stand-in proxy (cni/test/redirect-standin-ztunnel.ts):
//
//   app in pod A (node1) → A:15001 stand-in → B:8080, captured → B:15006 stand-in → app in pod B (node2)
//
// - connect: time from connect() in A's app to the first byte of B's greeting (both captures, both
//   proxy hops and the upstream connects), over sequential fresh connections;
// - rr: one connection, 1 KiB request, 1 KiB echoed response, sequential.
// The machine is shared and noisy, so each mode's samples are gathered over --rounds rounds that
// alternate the two modes (and their order), then pooled. A run without any capture (direct) is
// printed for reference. Ends with one JSON line.
//
//   npm run bench:redirect [-- --connections 2000 --requests 5000 --rounds 4]
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Harness, type MeshNode, type Pod } from '@ambient/test/harness';
import {
  addPodToProbeSet,
  applyHostProbeRules,
  createRedirector,
  podPinDir,
  REDIRECT_OBJECT_PATH,
  type RedirectMode,
  type Redirector,
  removePodFromProbeSet,
} from '../src/redirect/index.ts';
import { BENCH_PIN_PREFIX, pinRoot, sweepPinRoots } from '../test/redirect-pins.ts';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '2000' },
    requests: { type: 'string', default: '5000' },
    size: { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '4' },
  },
});
const CONNECTIONS = Number(values.connections);
const REQUESTS = Number(values.requests);
const SIZE = Number(values.size);
const ROUNDS = Math.max(1, Number(values.rounds));
const STANDIN = fileURLToPath(new URL('../test/redirect-standin-ztunnel.ts', import.meta.url));
const APP = fileURLToPath(new URL('../test/redirect-app.ts', import.meta.url));
const PIN_ROOT = pinRoot(BENCH_PIN_PREFIX);

interface Samples {
  connect_us: number[];
  rr_us: number[];
}

interface Summary {
  connectP50: number;
  connectMean: number;
  connectP99: number;
  rrP50: number;
  rrP99: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function summarize(s: Samples): Summary {
  const c = [...s.connect_us].sort((a, b) => a - b);
  const r = [...s.rr_us].sort((a, b) => a - b);
  return {
    connectP50: percentile(c, 50),
    connectMean: c.reduce((a, b) => a + b, 0) / c.length,
    connectP99: percentile(c, 99),
    rrP50: percentile(r, 50),
    rrP99: percentile(r, 99),
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:redirect needs root (network namespaces, nft, bpf)');
  if (!existsSync(REDIRECT_OBJECT_PATH)) {
    throw new Error(`eBPF object ${REDIRECT_OBJECT_PATH} is missing; run npm run build -w @ambient/cni`);
  }
  sweepPinRoots();
  mkdirSync(PIN_ROOT, { recursive: true });
  const mesh = await Harness.create({ nodes: 2 });
  try {
    const [node1, node2] = mesh.nodes as [MeshNode, MeshNode];
    const client = await node1.addPod({ name: 'bench-client', namespace: 'bench' });
    const server = await node2.addPod({ name: 'bench-server', namespace: 'bench' });
    const app = server.spawnNode(APP, ['serve', '--port', '8080', '--greet']);
    await app.waitForLine('"listening"');
    const standins = new Map<MeshNode, ReturnType<MeshNode['spawnNode']>>();
    for (const node of [node1, node2]) {
      const s = node.spawnNode(STANDIN, ['--quiet']);
      await s.waitForLine('"ready"');
      standins.set(node, s);
      await applyHostProbeRules(node.netnsPath);
    }

    const run = async (connections: number, requests: number): Promise<Samples> => {
      const r = await client.execNode(
        APP,
        [
          'bench',
          '--host',
          server.ip,
          '--port',
          '8080',
          '--connections',
          String(connections),
          '--requests',
          String(requests),
          '--size',
          String(SIZE),
        ],
        { timeoutMs: 600_000 },
      );
      return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Samples;
    };
    const report = (label: string, samples: Samples): Summary => {
      const s = summarize(samples);
      console.log(
        `${label.padEnd(9)} connect p50 ${s.connectP50.toFixed(0)} us (mean ${s.connectMean.toFixed(0)}, p99 ${s.connectP99.toFixed(0)})   ` +
          `rr p50 ${s.rrP50.toFixed(0)} us (p99 ${s.rrP99.toFixed(0)})   [${samples.connect_us.length} connects, ${samples.rr_us.length} rr]`,
      );
      return s;
    };

    const withMode = async (mode: RedirectMode, connections: number, requests: number): Promise<Samples> => {
      const redirectors = new Map<MeshNode, Redirector>();
      for (const node of [node1, node2]) {
        redirectors.set(
          node,
          mode === 'nftables'
            ? createRedirector({ mode })
            : createRedirector({ mode, proxyCgroupPath: node.cgroupPath, pinRoot: PIN_ROOT }),
        );
      }
      const target = (pod: Pod) => ({
        uid: pod.uid,
        netnsPath: pod.netnsPath,
        cgroupPath: pod.cgroupPath,
        pod: { ips: pod.ips },
      });
      for (const pod of [client, server]) {
        await (redirectors.get(pod.node) as Redirector).apply(target(pod));
        await addPodToProbeSet(pod.node.netnsPath, pod.uid, pod.ips);
        const s = standins.get(pod.node);
        s?.stdin?.write(
          `${JSON.stringify({ op: 'add', uid: pod.uid, netns: pod.netnsPath, ...(mode === 'ebpf' ? { pinDir: podPinDir(pod.uid, PIN_ROOT) } : {}) })}\n`,
        );
        await s?.waitForJson((e) => e.event === 'added' && e.uid === pod.uid);
      }
      try {
        return await run(connections, requests);
      } finally {
        for (const pod of [client, server]) {
          await (redirectors.get(pod.node) as Redirector).remove(target(pod));
          await removePodFromProbeSet(pod.node.netnsPath, pod.uid);
          standins.get(pod.node)?.stdin?.write(`${JSON.stringify({ op: 'remove', uid: pod.uid })}\n`);
          await standins.get(pod.node)?.waitForJson((e) => e.event === 'removed' && e.uid === pod.uid);
        }
      }
    };

    console.log(
      `redirect bench: ${CONNECTIONS} connections and ${REQUESTS} request/responses of ${SIZE} B per mode, ` +
        `${ROUNDS} alternating rounds; path app → 15001 stand-in → 15006 stand-in → app across two nodes`,
    );
    const pooled: Record<RedirectMode, Samples> = {
      nftables: { connect_us: [], rr_us: [] },
      ebpf: { connect_us: [], rr_us: [] },
    };
    const share = (total: number, round: number): number =>
      Math.floor(total / ROUNDS) + (round < total % ROUNDS ? 1 : 0);
    for (let round = 0; round < ROUNDS; round++) {
      const order: RedirectMode[] = round % 2 === 0 ? ['nftables', 'ebpf'] : ['ebpf', 'nftables'];
      for (const mode of order) {
        const samples = await withMode(mode, share(CONNECTIONS, round), share(REQUESTS, round));
        pooled[mode].connect_us.push(...samples.connect_us);
        pooled[mode].rr_us.push(...samples.rr_us);
      }
    }
    const nft = report('nftables', pooled.nftables);
    const ebpf = report('ebpf', pooled.ebpf);
    const direct = report('direct', await run(share(CONNECTIONS, 0), share(REQUESTS, 0)));
    console.log(
      `ebpf / nftables: connect p50 ${(ebpf.connectP50 / nft.connectP50).toFixed(2)}x, rr p50 ${(ebpf.rrP50 / nft.rrP50).toFixed(2)}x ` +
        `(direct, no capture and no proxy: connect ${direct.connectP50.toFixed(0)} us, rr ${direct.rrP50.toFixed(0)} us)`,
    );
    console.log(
      JSON.stringify({
        bench: 'redirect',
        nftables_connect_us: Math.round(nft.connectP50),
        ebpf_connect_us: Math.round(ebpf.connectP50),
        nftables_rr_p50_us: Math.round(nft.rrP50),
        ebpf_rr_p50_us: Math.round(ebpf.rrP50),
      }),
    );
  } finally {
    await mesh.destroy();
    rmSync(PIN_ROOT, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench:redirect failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});

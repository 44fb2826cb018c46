// Reliability and security checklist cases 7, 9, 10, 12, 27, 28 and 38
// (../shared/design/reliability-and-security.md §7) against the real processes in network
// namespaces: istiod in local mode, one ztunnel per node, pods enrolled over ZDS by the mesh
// fixture's stand-in node agent. The in-process versions of these cases live in
// ztunnel/test/proxy-*.test.ts, common/src/xds/client.test.ts and istiod/test/clients-xds.test.ts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { connectHbone, type HboneClientConnection, openTunnel } from '@ambient/common/hbone/client';
import { HboneError } from '@ambient/common/hbone/errors';
import { formatIdentity, parseIdentity } from '@ambient/common/identity';
import { TestCa, tlsCredentials } from '@ambient/common/testing/pki';
import type { TlsCredentials } from '@ambient/common/tls/secure-context';
import { closeFd, listenInNetns, openNetns } from '@ambient/native';
import type { HarnessProcess } from '../harness/index.ts';
import {
  counterSum,
  eventually,
  type LogLine,
  MeshFixture,
  type MeshPod,
  parseLogLines,
  workloadUid,
} from './support/mesh-fixture.ts';
import { namespaceYaml, podYaml } from './support/mesh-manifests.ts';
import { INPOD_MARK } from './support/mesh-pod-rules.ts';
import { connectFrom, type EchoApp, readAll, sha256, startEchoApp, tryEcho } from './support/mesh-traffic.ts';
import { netnsDialer } from './support/netns-dialer.ts';

const skip = process.getuid?.() === 0 ? false : 'needs root: creates network namespaces and cgroups';
const FETCH_CERTIFICATE = fileURLToPath(new URL('./support/fetch-workload-certificate.ts', import.meta.url));
const ZTUNNEL_MAIN = fileURLToPath(new URL('../../ztunnel/src/main.ts', import.meta.url));
const ISTIOD_SAN = 'istiod.istio-system.svc';
const APP_PORT = 8080;
/** Per case; the whole file runs in about 25 s. */
const TEST_TIMEOUT = { timeout: 60_000 };
const KiB = 1024;
const MiB = 1024 * KiB;

/** Resolves with `promise`, or fails naming `what` after `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no outcome within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Everything a stream yields until it ends. */
async function readToEnd(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Resident set size of a process, from /proc. */
function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m?.[1] !== undefined, `no VmRSS for pid ${pid}`);
  return Number(m[1]) * KiB;
}

/** Writes `chunk` as long as the socket takes it; returns the bytes accepted once no drain came for `quietMs`. */
async function writeUntilStalled(
  socket: Socket,
  chunk: Buffer,
  quietMs: number,
  maxBytes: number,
): Promise<number> {
  let written = 0;
  for (;;) {
    while (written < maxBytes && socket.write(chunk)) written += chunk.length;
    if (written >= maxBytes) return written;
    written += chunk.length; // accepted, though over the high-water mark
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        socket.off('drain', onDrain);
        resolve(false);
      }, quietMs);
      const onDrain = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      socket.once('drain', onDrain);
    });
    if (!drained) return written;
  }
}

function workloadEntryYaml(name: string, address: string, serviceAccount: string): string {
  return `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: ${name}
  namespace: vm
spec:
  address: ${address}
  serviceAccount: ${JSON.stringify(serviceAccount)}
`;
}

/** What the tests read of istiod's /debug/connections. */
interface IstiodConnections {
  readonly connections: {
    readonly nodeId: string;
    readonly connectedAt: string;
    readonly types: {
      readonly typeUrl: string;
      readonly lastNack?: { readonly message: string };
      readonly responsesSent: number;
      readonly resourcesSent: number;
      readonly resourcesAcked: number;
    }[];
  }[];
}

describe('ztunnel reliability and security checklist in the netns harness', {
  skip,
  timeout: 150_000,
}, () => {
  let mesh: MeshFixture;
  let a: MeshPod;
  let b: MeshPod;
  let app: EchoApp;
  let nsA = -1;
  /** Pod A's certificate, issued by the mesh's istiod through node1's ztunnel token. */
  let certA: TlsCredentials;

  before(async () => {
    mesh = await MeshFixture.create({ nodes: 2 });
    a = await mesh.addPod({ node: 'node1', name: 'client-a', namespace: 'demo', serviceAccount: 'sa-a' });
    b = await mesh.addPod({ node: 'node2', name: 'server-b', namespace: 'demo', serviceAccount: 'sa-b' });
    app = await startEchoApp(b.pod, APP_PORT);
    nsA = openNetns(a.pod.netnsPath);
    certA = await istiodCertificate('node1', a.identity);
  });

  after(async () => {
    app?.server.close();
    for (const s of app?.sockets ?? []) s.destroy();
    if (nsA >= 0) closeFd(nsA);
    await mesh?.destroy();
  });

  /** A certificate istiod's CA issues to `node`'s ztunnel for `identity` (a pod on that node). */
  async function istiodCertificate(node: string, identity: string): Promise<TlsCredentials> {
    const r = await mesh
      .node(node)
      .execNode(
        FETCH_CERTIFICATE,
        [`${mesh.istiodIp}:15012`, mesh.rootCertPath, ISTIOD_SAN, mesh.tokenOf(node), identity],
        { timeoutMs: 30_000 },
      );
    const line = r.stdout.trim().split('\n').at(-1) ?? '';
    return JSON.parse(line) as TlsCredentials;
  }

  /**
   * An HBONE connection from inside pod A's netns to pod B's 15008, as a workload (or a rogue
   * process in it) would open it by hand: marked like ztunnel's own sockets so the pod's rules do
   * not capture it, bound to A's IP, TLS with `credentials`, B's identity pinned.
   */
  function hboneFromA(credentials: TlsCredentials): Promise<HboneClientConnection> {
    return connectHbone({
      address: b.pod.ip,
      port: 15008,
      localAddress: a.pod.ip,
      credentials,
      expectedIdentities: [parseIdentity(b.identity)],
      dial: netnsDialer(nsA, { mark: INPOD_MARK, timeoutMs: 5000 }).dial,
    });
  }

  /** node's ztunnel log lines from index `since` on. */
  function logSince(node: string, since: number): LogLine[] {
    return mesh.ztunnelLog(node).slice(since);
  }

  it(
    "checklist 7 (hbone-ip-mismatch): raw HBONE CONNECT to a pod's ztunnel naming another IP is answered 400 and logged",
    TEST_TIMEOUT,
    async () => {
      // An app at the client's own address: what B's ztunnel would dial if it trusted the authority.
      const decoy = await startEchoApp(a.pod, 9090);
      const since = mesh.ztunnelLog('node2').length;
      const opened = () =>
        mesh
          .metrics('node2')
          .then((m) => counterSum(m, 'istio_tcp_connections_opened_total', { reporter: 'destination' }));
      const openedBefore = await opened();
      const peersBefore = app.peers.length;
      const conn = await within(10_000, 'HBONE connection to B', hboneFromA(certA));
      try {
        assert.equal(formatIdentity(conn.peerIdentity), b.identity, "B's ztunnel presents B's identity");
        await within(
          5000,
          'CONNECT naming the client IP',
          assert.rejects(
            openTunnel(conn.session, { target: `${a.pod.ip}:9090` }),
            (err: unknown) => err instanceof HboneError && err.code === 'HBONE_STATUS' && err.status === 400,
          ),
        );
        // The same connection, same certificate, naming B's own IP: accepted. Only the authority
        // made the difference.
        const tunnel = await within(
          5000,
          'CONNECT naming B',
          openTunnel(conn.session, { target: `${b.pod.ip}:${APP_PORT}` }),
        );
        const echoed = within(5000, 'the echo through the valid tunnel', readToEnd(tunnel));
        tunnel.end('after-mismatch');
        assert.equal((await echoed).toString(), 'after-mismatch');
      } finally {
        conn.session.destroy();
        decoy.server.close();
        for (const s of decoy.sockets) s.destroy();
      }
      const line = await eventually('the ip mismatch line on node2', () =>
        logSince('node2', since).find((l) => l.msg === 'connection failed' && l.error_code === 'IP_MISMATCH'),
      );
      assert.equal(line.error, `ip mismatch: ${b.pod.ip} != ${a.pod.ip}`);
      assert.equal(line.direction, 'inbound');
      assert.equal(line['dst.addr'], `${b.pod.ip}:15008`);
      assert.match(String(line['src.addr']), new RegExp(`^${a.pod.ip.replaceAll('.', '\\.')}:\\d+$`));
      assert.equal(decoy.peers.length, 0, 'no upstream dial to the IP the CONNECT named');
      assert.deepEqual(app.peers.slice(peersBefore), [a.pod.ip], "B's app saw only the valid CONNECT");
      await eventually(
        'the valid CONNECT counted, the refused one not',
        async () => (await opened()) === openedBefore + 1,
      );
    },
  );

  it(
    'checklist 9 (hbone-non-connect-and-bad-authority): GET, and CONNECT to "foo" with no port, over valid mTLS are 400 with no upstream dial',
    TEST_TIMEOUT,
    async () => {
      const since = mesh.ztunnelLog('node2').length;
      const peersBefore = app.peers.length;
      const conn = await within(10_000, 'HBONE connection to B', hboneFromA(certA));
      const statusOf = async (headers: http2.OutgoingHttpHeaders, what: string): Promise<unknown> => {
        const req = conn.session.request(headers, { endStream: headers[':method'] !== 'CONNECT' });
        req.on('error', () => {});
        try {
          const [h] = (await within(5000, what, once(req, 'response'))) as [http2.IncomingHttpHeaders];
          return h[':status'];
        } finally {
          req.close();
        }
      };
      try {
        assert.equal(
          await statusOf({ ':method': 'GET', ':path': '/', ':authority': `${b.pod.ip}:${APP_PORT}` }, 'GET'),
          400,
          'GET',
        );
        for (const authority of ['foo', `${b.pod.ip}:0`]) {
          assert.equal(
            await statusOf({ ':method': 'CONNECT', ':authority': authority }, `CONNECT ${authority}`),
            400,
            `CONNECT ${authority}`,
          );
        }
        assert.equal(conn.session.destroyed, false, 'a bad request costs its stream, not the connection');
      } finally {
        conn.session.destroy();
      }
      const lines = await eventually('one early-deny line per bad request on node2', () => {
        const l = logSince('node2', since).filter(
          (x) => x.msg === 'connection failed' && x.direction === 'inbound',
        );
        return l.length >= 3 ? l : undefined;
      });
      assert.deepEqual(
        lines.map((l) => l.error_code),
        ['NON_CONNECT_METHOD', 'INVALID_AUTHORITY', 'INVALID_AUTHORITY'],
        JSON.stringify(lines),
      );
      assert.ok(lines.every((l) => l['dst.addr'] === `${b.pod.ip}:15008`));
      await sleep(200);
      assert.equal(app.peers.length, peersBefore, 'no upstream dial');
    },
  );

  it(
    'checklist 10 (tls-wrong-trust-domain): a client certificate for spiffe://clusterset.local/... from the mesh CA is rejected at the handshake',
    TEST_TIMEOUT,
    async () => {
      // istiod refuses to certify another trust domain, so the leaf is signed with istiod's own
      // root key (its local-mode root store): a chain the mesh trusts, as a peer mesh sharing the
      // root would present. The trust domain is then the only thing wrong with it.
      const meshCa = await TestCa.fromPem(
        readFileSync(join(mesh.dir, 'ca', 'ca-cert.pem'), 'utf8'),
        readFileSync(join(mesh.dir, 'ca', 'ca-key.pem'), 'utf8'),
      );
      assert.equal(meshCa.root.trim(), certA.roots.toString().trim(), 'the root istiod distributes');
      const foreignTd = tlsCredentials(
        await meshCa.issue({ identity: 'spiffe://clusterset.local/ns/demo/sa/sa-a' }),
      );
      const sameTd = tlsCredentials(await meshCa.issue({ identity: a.identity }));
      const since = mesh.ztunnelLog('node2').length;
      const peersBefore = app.peers.length;

      await within(
        10_000,
        'HBONE with a clusterset.local certificate',
        assert.rejects(hboneFromA(foreignTd), (err: unknown) => {
          // The client accepted B's certificate and finished its side of TLS 1.3; B's ztunnel then
          // checked the client certificate and dropped the connection (a reset, or EOF when it had
          // read everything) before any HTTP/2 SETTINGS. Not a TlsError: the client refused nothing.
          assert.ok(err instanceof HboneError, String(err));
          assert.equal(err.code, 'HBONE_DIAL_FAILED', String(err));
          return true;
        }),
      );
      const rejected = await eventually('the rejection on node2', () =>
        logSince('node2', since).find((l) => l.msg === 'hbone connection rejected'),
      );
      const err = rejected.err as { code?: string; message?: string } | undefined;
      assert.equal(err?.code, 'TRUST_DOMAIN_MISMATCH', JSON.stringify(rejected));
      assert.match(String(err?.message), /clusterset\.local/);
      assert.equal(rejected.src, a.pod.ip);

      // The same CA, key type and chain in the mesh's trust domain is accepted.
      const ok = await within(10_000, 'HBONE with a cluster.local certificate', hboneFromA(sameTd));
      ok.session.destroy();
      assert.equal(app.peers.length, peersBefore, 'nothing reached the app');
      assert.equal(
        logSince('node2', since).filter((l) => l.direction === 'inbound').length,
        0,
        'no CONNECT was ever handled',
      );
    },
  );

  it(
    'checklist 38 (backpressure-slow-reader): a 1 KiB/s reader holds its sender back with bounded ztunnel memory while a second stream on the same HBONE connection flows',
    TEST_TIMEOUT,
    async (t) => {
      const SLOW_PORT = 7000;
      const FAST_PORT = 7001;
      // Bound on each ztunnel's RSS growth while the stream is stalled: the 4 MiB HTTP/2 stream
      // window (at most that much of the stalled stream is in flight between the two ztunnels)
      // + 8 MiB of buffers (socket high-water marks, TLS records, one 1 MiB HTTP/2 frame each
      // way, the copy loop's chunks) + 20 MiB of slack for V8 and the allocator (heap growth from
      // the garbage of the copies, which a GC would return). Far below the 1 GiB the sender tries.
      const RSS_BOUND = 4 * MiB + 8 * MiB + 20 * MiB;
      const fast = await startEchoApp(b.pod, FAST_PORT);
      let slowSocket: Socket | undefined;
      let slowRead = 0;
      const slowServer = createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => {});
        s.pause();
        slowSocket = s;
      });
      const fd = openNetns(b.pod.netnsPath);
      try {
        await listenInNetns(slowServer, {
          netnsFd: fd,
          address: '0.0.0.0',
          port: SLOW_PORT,
          transparent: 'off',
        });
      } finally {
        closeFd(fd);
      }
      const slowTimer = setInterval(() => {
        const c = slowSocket?.read(KiB) as Buffer | null | undefined;
        if (c) slowRead += c.length;
      }, 1000);
      const sockets: Socket[] = [];
      const hboneToB = async (): Promise<number> => {
        const r = await a.pod.exec('ss', ['-Htn', 'state', 'established']);
        return r.stdout.split('\n').filter((l) => l.trim().split(/\s+/).at(-1) === `${b.pod.ip}:15008`)
          .length;
      };
      try {
        // Warm the pool and the processes: the pooled HBONE connection A→B exists from here on.
        const warm = await connectFrom(a.pod, b.pod.ip, FAST_PORT);
        sockets.push(warm);
        const warmData = randomBytes(2 * MiB);
        const warmReply = readAll(warm, 10_000);
        warm.end(warmData);
        assert.equal(sha256(await warmReply), sha256(warmData));
        assert.equal(await hboneToB(), 1, 'one HBONE connection from A to B');
        const pids = ['node1', 'node2'].map(
          (n) => mesh.ztunnel(n).pid ?? assert.fail(`no pid for ${n}'s ztunnel`),
        );
        const baseline = pids.map(rssBytes);

        const sender = await connectFrom(a.pod, b.pod.ip, SLOW_PORT);
        sockets.push(sender);
        const attempted = 1024 * MiB;
        const written = await within(
          30_000,
          'the sender to stall',
          writeUntilStalled(sender, Buffer.alloc(64 * KiB, 7), 1000, attempted),
        );
        assert.ok(
          written < 64 * MiB,
          `the sender must be held back, but ${written} of ${attempted} bytes went out`,
        );

        // The slow phase: 4 s at 1 KiB/s, RSS sampled, the second stream in the middle.
        const peak = [...baseline];
        const sample = (): void => {
          pids.forEach((pid, i) => {
            peak[i] = Math.max(peak[i] ?? 0, rssBytes(pid));
          });
        };
        const stalledAt = pids.map(rssBytes);
        const sampler = setInterval(sample, 200);
        let secondMs = 0;
        try {
          await sleep(1500);
          const data = randomBytes(2 * MiB);
          const t0 = Date.now();
          const second = await connectFrom(a.pod, b.pod.ip, FAST_PORT);
          sockets.push(second);
          const reply = readAll(second, 10_000);
          second.end(data);
          assert.equal(sha256(await reply), sha256(data), 'the second stream is echoed whole');
          secondMs = Date.now() - t0;
          assert.equal(await hboneToB(), 1, 'the second stream shared the HBONE connection');
          await sleep(2500);
        } finally {
          clearInterval(sampler);
        }
        sample();
        const more = await writeUntilStalled(sender, Buffer.alloc(64 * KiB, 7), 300, attempted);
        const end = pids.map(rssBytes);
        const fmt = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
        const report = ['node1 (source)', 'node2 (destination)']
          .map(
            (n, i) =>
              `${n}: baseline ${fmt(baseline[i] ?? 0)}, stalled ${fmt(stalledAt[i] ?? 0)}, peak ${fmt(peak[i] ?? 0)}, end ${fmt(end[i] ?? 0)}`,
          )
          .join('; ');
        t.diagnostic(
          `checklist 38: sender accepted ${fmt(written)} of ${fmt(attempted)}, ${more} more bytes while the app read ${slowRead} B; second stream 2 MiB in ${secondMs} ms; ${report}`,
        );
        assert.ok(secondMs < 5000, `the second stream took ${secondMs} ms`);
        assert.ok(
          more <= 2 * 64 * KiB + slowRead,
          `a stalled sender stays stalled, but ${more} more bytes went out`,
        );
        pids.forEach((_, i) => {
          const grown = (peak[i] ?? 0) - (baseline[i] ?? 0);
          assert.ok(
            grown <= RSS_BOUND,
            `ztunnel RSS grew by ${fmt(grown)} (bound ${fmt(RSS_BOUND)}): ${report}`,
          );
        });

        // Released, the reader gets every byte the sender's socket accepted, in one piece.
        clearInterval(slowTimer);
        const s = slowSocket ?? assert.fail('the slow app never got the connection');
        const all = new Promise<number>((resolve) => {
          let n = slowRead;
          s.on('data', (c: Buffer) => {
            n += c.length;
          });
          s.on('end', () => resolve(n));
        });
        s.resume();
        sender.end();
        assert.equal(await within(30_000, 'the slow app to read everything', all), written + more);
      } finally {
        clearInterval(slowTimer);
        for (const s of sockets) s.destroy();
        slowSocket?.destroy();
        slowServer.close();
        fast.server.close();
        for (const s of fast.sockets) s.destroy();
      }
    },
  );

  it(
    'checklist 12 (tls-server-san-mismatch): a destination ztunnel presenting an unexpected service account is dropped by the source ztunnel before CONNECT',
    TEST_TIMEOUT,
    async () => {
      // How this happens for real: pod db is deleted and recreated under another service account
      // and gets the same IP back (or another pod reuses its IP), while the source ztunnel has not
      // yet seen the change because its xDS stream is cut off from istiod. The destination ztunnel
      // is in sync: its new proxy for the pod serves the new service account's certificate. The
      // source still pins the old identity from its stale WDS state and must refuse to tunnel.
      // (A WDS service-account change alone would not do it: like upstream, a pod's proxy finds its
      // Workload by the name, namespace and service account ZDS gave it, so only a new ZDS Add,
      // i.e. a new pod, serves a new identity.)
      // Here: the source is B on node2, whose ztunnel is partitioned from istiod (istiod runs in
      // node1's netns); db runs on node1 and is recreated in place: same netns, so the same IP.
      const db = await mesh.addPod({ node: 'node1', name: 'db', namespace: 'demo', serviceAccount: 'sa-db' });
      const dbApp = await startEchoApp(db.pod, APP_PORT);
      const agent = mesh.agents.get('node1') ?? assert.fail('no node agent on node1');
      const recreatedUid = `${db.pod.uid}-recreated`;
      let enrolledUid = db.pod.uid;
      const newIdentity = db.identity.replace(/sa-db$/, 'sa-db-v2');
      const serviceAccountOf = async (node: string): Promise<string | undefined> =>
        ((await mesh.configDump(node)).workloads as { uid: string; serviceAccount?: string }[]).find(
          (w) => w.uid === workloadUid(db.pod),
        )?.serviceAccount;
      const partition = `table ip ckl12-partition {
  chain output {
    type filter hook output priority 0;
    ip daddr ${mesh.istiodIp} tcp dport 15012 reject with tcp reset
  }
  chain input {
    type filter hook input priority 0;
    ip saddr ${mesh.istiodIp} tcp sport 15012 drop
  }
}
`;
      const node2 = mesh.node('node2');
      let partitioned = false;
      try {
        await eventually('B holds its certificate on node2', async () =>
          (await mesh.configDump('node2')).certificates.some(
            (c) => c.identity === b.identity && c.state === 'Available',
          ),
        );
        await node2.exec('nft', ['-f', '-'], { input: partition });
        partitioned = true;

        // db is deleted, then recreated as sa-db-v2 with its IP.
        await agent.podDeleted(db.pod.uid);
        enrolledUid = '';
        mesh.writeManifest(
          'pod-demo-db.yaml',
          podYaml({
            namespace: 'demo',
            name: 'db',
            uid: recreatedUid,
            serviceAccount: 'sa-db-v2',
            node: 'node1',
            ip: db.pod.ip,
            redirected: true,
          }),
        );
        await eventually(
          'node1 sees db as sa-db-v2',
          async () => (await serviceAccountOf('node1')) === 'sa-db-v2',
        );
        const fd = openNetns(db.pod.netnsPath);
        try {
          await agent.podAdded(
            recreatedUid,
            { name: 'db', namespace: 'demo', serviceAccount: 'sa-db-v2' },
            fd,
          );
        } finally {
          closeFd(fd);
        }
        enrolledUid = recreatedUid;
        await eventually(
          "db's new proxy is up on node1",
          async () => (await mesh.configDump('node1')).workloadState[recreatedUid]?.state === 'Up',
        );
        assert.equal(await serviceAccountOf('node2'), 'sa-db', 'node2 is stale: it still expects sa-db');

        const since1 = mesh.ztunnelLog('node1').length;
        const since2 = mesh.ztunnelLog('node2').length;
        assert.equal(await tryEcho(b.pod, db.pod.ip, APP_PORT, { timeoutMs: 5000 }), 'denied');
        const line = await eventually('the outbound failure on node2', () =>
          logSince('node2', since2).find(
            (l) => l.direction === 'outbound' && l['dst.hbone_addr'] === `${db.pod.ip}:${APP_PORT}`,
          ),
        );
        const context = () =>
          `${JSON.stringify(line)}\nnode1: ${logSince('node1', since1)
            .map((l) => JSON.stringify(l))
            .join('\n')}`;
        assert.equal(line.error_code, 'HBONE_TLS_FAILED', context());
        assert.match(
          String(line.error),
          new RegExp(`server identity ${newIdentity} is not one of the expected ${db.identity}$`),
          context(),
        );
        assert.equal(line['dst.identity'], db.identity, 'the source pinned the identity it knew');
        assert.equal(dbApp.peers.length, 0, "db's app was never reached");
        await sleep(300);
        const inbound = logSince('node1', since1).filter(
          (l) => l.direction === 'inbound' && l['dst.hbone_addr'] === `${db.pod.ip}:${APP_PORT}`,
        );
        assert.deepEqual(inbound, [], 'no CONNECT reached the destination ztunnel');
        assert.ok(
          mesh.ztunnel('node1').exit === undefined && mesh.ztunnel('node2').exit === undefined,
          'both ztunnels still run',
        );

        // Healed, the source learns the new identity and the same connection goes through.
        await node2.exec('nft', ['delete', 'table', 'ip', 'ckl12-partition']);
        partitioned = false;
        await eventually(
          'node2 learns sa-db-v2',
          async () => (await serviceAccountOf('node2')) === 'sa-db-v2',
          30_000,
          200,
        );
        assert.equal(await tryEcho(b.pod, db.pod.ip, APP_PORT, { timeoutMs: 5000 }), 'ok');
        const ok = await eventually('the inbound line on node1', () =>
          logSince('node1', since1).find(
            (l) => l.msg === 'connection complete' && l['dst.hbone_addr'] === `${db.pod.ip}:${APP_PORT}`,
          ),
        );
        assert.equal(ok['dst.identity'], newIdentity);
        assert.equal(ok['src.identity'], b.identity);
      } finally {
        if (partitioned)
          await node2.exec('nft', ['delete', 'table', 'ip', 'ckl12-partition'], { check: false });
        dbApp.server.close();
        for (const s of dbApp.sockets) s.destroy();
        if (enrolledUid !== '') await agent.podDeleted(enrolledUid);
        mesh.pods.splice(mesh.pods.indexOf(db), 1);
        mesh.removeManifest('pod-demo-db.yaml');
        await db.pod.remove();
      }
    },
  );

  it(
    'checklist 27 (xds-partial-nack): one malformed Workload from istiod is NACKed by name, the others apply, and the reconnect leaves it out of initial_resource_versions',
    TEST_TIMEOUT,
    async () => {
      // istiod validates manifests, but a WorkloadEntry's serviceAccount is free text up to 253
      // characters (as in Istio's CRD), while a SPIFFE ID allows only letters, digits, '.', '-'
      // and '_'. istiod builds the Workload; ztunnel cannot form its identity and refuses it.
      const good = ['vm-1', 'vm-2', 'vm-3'];
      const uid = (name: string) => `Kubernetes/networking.istio.io/WorkloadEntry/vm/${name}`;
      const bad = uid('vm-legacy');
      const connectionsOf = async (): Promise<IstiodConnections> => {
        const r = await mesh.http('node1', 'http://127.0.0.1:8080/debug/connections');
        assert.equal(r.status, 200, r.body);
        return JSON.parse(r.body) as IstiodConnections;
      };
      const addressType = (c: IstiodConnections['connections'][number]) =>
        c.types.find((t) => t.typeUrl.endsWith('istio.workload.Address'));
      const since = mesh.ztunnelLog('node2').length;
      mesh.writeManifest('ns-vm.yaml', namespaceYaml('vm', false));
      mesh.writeManifest(
        'workloadentries-vm.yaml',
        [
          workloadEntryYaml('vm-1', '192.0.2.11', 'vm-sa'),
          workloadEntryYaml('vm-legacy', '192.0.2.14', 'legacy app'),
          workloadEntryYaml('vm-2', '192.0.2.12', 'vm-sa'),
          workloadEntryYaml('vm-3', '192.0.2.13', 'vm-sa'),
        ].join('---\n'),
      );
      try {
        for (const node of ['node1', 'node2']) {
          await eventually(`${node} applies the good entries`, async () => {
            const uids = new Set((await mesh.configDump(node)).workloads.map((w) => w.uid));
            return good.every((n) => uids.has(uid(n))) && !uids.has(bad);
          });
        }
        const nack = await eventually('the NACK in node2 ztunnel log', () =>
          logSince('node2', since).find((l) => l.msg === 'sent NACK'),
        );
        assert.equal(nack.rejected, 1, JSON.stringify(nack));
        assert.match(String(nack.error), new RegExp(`^${bad}: .*legacy app`), JSON.stringify(nack));
        await eventually('istiod to record both NACKs', async () => {
          const c = (await connectionsOf()).connections;
          return c.length === 2 && c.every((x) => addressType(x)?.lastNack?.message.startsWith(`${bad}: `));
        });

        // Reconnect: istiod restarts; each ztunnel sends what it holds as initial_resource_versions.
        // istiod re-sends exactly what a ztunnel did not list: only the refused Workload, which is
        // NACKed again; everything it held stays acknowledged.
        const held = (await mesh.configDump('node2')) as unknown as {
          workloads: unknown[];
          services: unknown[];
        };
        const heldCount = held.workloads.length + held.services.length;
        const restartedAt = new Date().toISOString();
        await mesh.stopIstiod();
        await mesh.startIstiod();
        const after = await eventually(
          'both ztunnels reconnected and NACKed again',
          async () => {
            const c = (await connectionsOf()).connections;
            return c.length === 2 &&
              c.every(
                (x) =>
                  x.connectedAt > restartedAt && addressType(x)?.lastNack?.message.startsWith(`${bad}: `),
              )
              ? c
              : undefined;
          },
          30_000,
          200,
        );
        for (const c of after) {
          const t = addressType(c);
          assert.equal(
            t?.resourcesSent,
            1,
            `${c.nodeId}: only the refused Workload is re-sent: ${JSON.stringify(t)}`,
          );
          if (c.nodeId.includes('node2')) {
            assert.equal(t?.resourcesAcked, heldCount, `${c.nodeId}: istiod holds what the ztunnel listed`);
          }
        }
        await Promise.all(['node1', 'node2'].map((n) => mesh.waitZtunnelReady(n)));

        // Fixed, the Workload is applied like any other.
        mesh.writeManifest(
          'workloadentries-vm.yaml',
          [
            ...good.map((n, i) => workloadEntryYaml(n, `192.0.2.1${i + 1}`, 'vm-sa')),
            workloadEntryYaml('vm-legacy', '192.0.2.14', 'legacy-app'),
          ].join('---\n'),
        );
        await eventually('node2 applies the fixed entry', async () =>
          (await mesh.configDump('node2')).workloads.some((w) => w.uid === bad),
        );
      } finally {
        mesh.removeManifest('workloadentries-vm.yaml');
        mesh.removeManifest('ns-vm.yaml');
      }
    },
  );

  it(
    'checklist 28 (xds-oversize-and-backoff): a ztunnel whose xDS server sends an oversize response, then UNAVAILABLE, backs off exponentially',
    TEST_TIMEOUT,
    async (t) => {
      // A real ztunnel process in node2's netns (its own admin/stats/readiness ports, no CA, no node
      // agent) against an HTTP/2 server that fails every DeltaAggregatedResources stream: first with
      // a gRPC message whose length prefix announces 2 GiB (over ztunnel's 200 MiB decode limit; the
      // client must refuse it from the prefix, not buffer it), then with UNAVAILABLE.
      const XDS_PORT = 15910;
      let mode: 'oversize' | 'unavailable' = 'oversize';
      const attempts: { at: number; mode: string }[] = [];
      const server = http2.createServer();
      server.on('sessionError', () => {});
      server.on('stream', (stream, headers) => {
        stream.on('error', () => {});
        if (
          headers[':path'] !==
          '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources'
        ) {
          stream.respond(
            { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' },
            { endStream: true },
          );
          return;
        }
        attempts.push({ at: Date.now(), mode });
        if (mode === 'oversize') {
          stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
          stream.write(Buffer.from([0, 0x7f, 0xff, 0xff, 0xff, 0x0a, 0x01, 0x00]));
        } else {
          stream.respond(
            {
              ':status': 200,
              'content-type': 'application/grpc',
              'grpc-status': '14',
              'grpc-message': 'overloaded',
            },
            { endStream: true },
          );
        }
      });
      const node2 = mesh.node('node2');
      const fd = openNetns(node2.netnsPath);
      try {
        await listenInNetns(server as unknown as import('node:net').Server, {
          netnsFd: fd,
          address: '127.0.0.1',
          port: XDS_PORT,
          transparent: 'off',
        });
      } finally {
        closeFd(fd);
      }
      let zt: HarnessProcess | undefined;
      try {
        zt = node2.spawnNode(ZTUNNEL_MAIN, ['proxy'], {
          env: {
            XDS_ADDRESS: `http://127.0.0.1:${XDS_PORT}`,
            CA_ADDRESS: '',
            NODE_NAME: 'node2',
            POD_NAME: 'ztunnel-backoff-probe',
            POD_NAMESPACE: 'istio-system',
            INSTANCE_IP: node2.ip,
            INPOD_UDS: join(mesh.dir, 'node2', 'no-agent.sock'),
            IPV6_ENABLED: 'false',
            LOG_FORMAT: 'json',
            ADMIN_PORT: '15900',
            STATS_PORT: '15920',
            READINESS_PORT: '15921',
          },
        });
        await zt.started;
        await eventually('the first attempt', () => attempts.length > 0, 20_000, 20);
        const first = attempts[0]?.at ?? 0;
        await sleep(Math.max(0, 2500 - (Date.now() - first)));
        mode = 'unavailable';
        await sleep(Math.max(0, 5000 - (Date.now() - first)));
        const seen = attempts.filter((x) => x.at - first <= 5000);
        const gaps = seen.slice(1).map((x, i) => x.at - (seen[i]?.at ?? 0));
        const ready = await mesh.http('node2', 'http://127.0.0.1:15921/healthz/ready');
        const lines = parseLogLines(`${zt.stdout}\n${zt.stderr}`).filter(
          (l) => l.msg === 'xds connection failed; retrying',
        );
        const retries = lines.map((l) => Number(l.retryInMs));
        const summary = `${seen.length} attempts in 5 s, gaps ${gaps.join(', ')} ms; retryInMs ${retries.join(', ')}`;
        t.diagnostic(`checklist 28: ${summary}`);

        assert.ok(zt.exit === undefined, 'ztunnel keeps running');
        assert.equal(ready.status, 503, 'not ready without an ACKed response');
        // 10 ms doubling (±20% jitter): 10+20+…+2560 ≈ 5.1 s, so about 9 attempts fit in 5 s; a
        // busy loop would make thousands.
        assert.ok(seen.length >= 6 && seen.length <= 14, summary);
        assert.ok(
          seen.some((x) => x.mode === 'oversize') && seen.some((x) => x.mode === 'unavailable'),
          `both failures were served: ${summary}`,
        );
        const oversize = lines.find((l) => l.code === 8);
        assert.match(String(oversize?.details), /larger than max/, JSON.stringify(lines.slice(0, 3)));
        const unavailable = lines.find((l) => l.code === 14);
        assert.equal(unavailable?.details, 'overloaded', JSON.stringify(lines.slice(-3)));
        // Each delay doubles (the jitter cannot make a step less than ×1.33), up to 15 s.
        for (let i = 1; i < retries.length; i++) {
          const prev = retries[i - 1] ?? 0;
          const cur = retries[i] ?? 0;
          assert.ok(cur >= prev * 1.3 || cur >= 15_000 * 0.8, `step ${i}: ${summary}`);
          assert.ok(cur <= 15_000 * 1.2, summary);
        }
        // On the wire, every gap is at least the delay ztunnel logged before it (no early retry).
        gaps.forEach((g, i) => {
          const delay = retries[i] ?? 0;
          assert.ok(g >= delay * 0.9, `gap ${i} (${g} ms) shorter than the ${delay} ms backoff: ${summary}`);
        });
        assert.ok((gaps.at(-1) ?? 0) >= 500, `the backoff reached hundreds of ms: ${summary}`);
      } finally {
        await zt?.stop(2000);
        server.close();
      }
    },
  );
});

// HBONE between two pods on two harness nodes. The server listens at podB.ip:15008 inside pod B's
// netns (a listener made by the addon, served by HboneServer with identity B's certificate); the
// client is an HbonePool whose dialer creates each TCP socket inside pod A's netns with the addon
// and runs TLS over it as identity A. Both ends live in this test process, but every byte crosses
// pod A's eth0, node1's bridge, the fabric, node2's bridge and pod B's eth0.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatIdentity, type Identity, makeIdentity } from '@ambient/common/identity';
import { closeFd, listenInNetns, openNetns } from '@ambient/native';
import { Harness, type Pod } from '../harness/index.ts';
import { drain, pump, readAll, type Transfer } from './support/byte-pump.ts';
import {
  HbonePool,
  type HboneRequest,
  HboneServer,
  type HboneTunnel,
  TestCa,
  type TlsCredentials,
  tlsCredentials,
  type WorkloadKey,
} from './support/hbone-api.ts';
import { type NetnsDialer, netnsDialer } from './support/netns-dialer.ts';

const skip = process.getuid?.() === 0 ? false : 'needs root: creates network namespaces and cgroups';

const HBONE_PORT = 15008;
/** ztunnel's in-pod socket mark. */
const INPOD_MARK = 0x539;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** What the server saw of one CONNECT. */
interface RequestSeen {
  readonly peerIdentity: string;
  readonly localAddress: string | undefined;
  readonly remoteAddress: string | undefined;
  readonly authority: string;
}

/** Byte counters of a pod's eth0, read inside its netns. */
async function eth0Bytes(pod: Pod): Promise<{ rx: number; tx: number }> {
  const r = await pod.exec('ip', ['-j', '-s', 'link', 'show', 'dev', 'eth0']);
  const [link] = JSON.parse(r.stdout) as { stats64: { rx: { bytes: number }; tx: { bytes: number } } }[];
  assert.ok(link !== undefined, `no eth0 in ${pod.key}`);
  return { rx: link.stats64.rx.bytes, tx: link.stats64.tx.bytes };
}

async function closedCleanly(tunnel: HboneTunnel): Promise<void> {
  if (!tunnel.closed) await once(tunnel, 'close');
  assert.equal(tunnel.errored, null, `tunnel closed with ${String(tunnel.errored)}`);
}

describe('HBONE between two pods', { skip, timeout: 300_000 }, () => {
  let mesh: Harness;
  let podA: Pod;
  let podB: Pod;
  let nsA = -1;
  let nsB = -1;
  let idA: Identity;
  let idA2: Identity;
  let idB: Identity;
  const credentials = new Map<string, TlsCredentials>();
  let listener: Server | undefined;
  let hbone: HboneServer | undefined;
  /** TCP connections the listener in pod B accepted. */
  let tcpAccepted = 0;
  /** mTLS + HTTP/2 connections the HBONE server established. */
  let sessions = 0;
  const requests: RequestSeen[] = [];
  /** What the server does with a CONNECT; each test sets its own. */
  let onRequest: (request: HboneRequest) => void = (request) => request.reject(503);

  before(async () => {
    mesh = await Harness.create({ nodes: 2 });
    [podA, podB] = await Promise.all([
      mesh.node('node1').addPod({ name: 'pod-a', namespace: 'hbone', serviceAccount: 'sa-a' }),
      mesh.node('node2').addPod({ name: 'pod-b', namespace: 'hbone', serviceAccount: 'sa-b' }),
    ]);
    nsA = openNetns(podA.netnsPath);
    nsB = openNetns(podB.netnsPath);

    const ca = await TestCa.create();
    idA = makeIdentity('cluster.local', podA.namespace, podA.serviceAccount);
    idA2 = makeIdentity('cluster.local', podA.namespace, 'sa-a-other');
    idB = makeIdentity('cluster.local', podB.namespace, podB.serviceAccount);
    for (const id of [idA, idA2, idB]) {
      credentials.set(formatIdentity(id), tlsCredentials(await ca.issue({ identity: id })));
    }

    hbone = new HboneServer({
      credentials: credentialsOf(idB),
      handler: (request) => {
        requests.push({
          peerIdentity: formatIdentity(request.peerIdentity),
          localAddress: request.localAddress,
          remoteAddress: request.remoteAddress,
          authority: String(request.rawHeaders[':authority']),
        });
        // Spec §1.3 step 4: an IP authority must be the address the connection arrived on.
        if (request.authority.kind !== 'ip' || request.authority.address !== request.localAddress) {
          request.reject(400);
          return;
        }
        onRequest(request);
      },
    });
    hbone.on('session', () => {
      sessions += 1;
    });
    listener = createServer();
    listener.on('connection', () => {
      tcpAccepted += 1;
    });
    await listenInNetns(listener, {
      netnsFd: nsB,
      address: podB.ip,
      port: HBONE_PORT,
      mark: INPOD_MARK,
      transparent: 'off',
    });
    hbone.attach(listener);
  });

  after(async () => {
    hbone?.destroy();
    listener?.close();
    if (nsA >= 0) closeFd(nsA);
    if (nsB >= 0) closeFd(nsB);
    await mesh?.destroy();
  });

  function credentialsOf(id: Identity): TlsCredentials {
    const c = credentials.get(formatIdentity(id));
    assert.ok(c !== undefined, `no credentials for ${formatIdentity(id)}`);
    return c;
  }

  function keyFor(srcIdentity: Identity): WorkloadKey {
    return {
      srcIdentity,
      dstIdentities: [idB],
      srcIp: podA.ip,
      dst: { address: podB.ip, port: HBONE_PORT },
    };
  }

  /** An in-pod pool for pod A: sockets made in A's netns, bound to A's IP, marked 0x539. */
  function podAPool(t: TestContext, options: { maxStreamsPerConnection?: number } = {}) {
    const dialer: NetnsDialer = netnsDialer(nsA, { mark: INPOD_MARK });
    const pool = new HbonePool({
      credentials: credentialsOf,
      dial: dialer.dial,
      ...options,
    });
    t.after(() => pool.destroy());
    return { pool, dialer };
  }

  /** Requests the server saw from index `from` on; all must have come from pod A to pod B. */
  function requestsFrom(from: number): RequestSeen[] {
    const seen = requests.slice(from);
    for (const r of seen) {
      assert.equal(r.remoteAddress, podA.ip, 'the connection came from pod A over the network');
      assert.equal(r.localAddress, podB.ip);
    }
    return seen;
  }

  it('1 GiB each way through one CONNECT stream with matching SHA-256', { timeout: 180_000 }, async (t) => {
    const total = GiB;
    // Odd pattern lengths so that no two chunks are alike; different ones per direction.
    const patternAtoB = randomBytes(MiB + 7);
    const patternBtoA = randomBytes(MiB + 13);
    const serverSide = Promise.withResolvers<{ received: Transfer; sent: Transfer }>();
    onRequest = (request) => {
      const tunnel = request.accept();
      Promise.all([drain(tunnel), pump(tunnel, total, patternBtoA)]).then(
        ([received, sent]) => serverSide.resolve({ received, sent }),
        serverSide.reject,
      );
    };
    const firstRequest = requests.length;
    const [a0, b0] = await Promise.all([eth0Bytes(podA), eth0Bytes(podB)]);
    const { pool, dialer } = podAPool(t);

    const t0 = performance.now();
    const tunnel = await pool.openTunnel(keyFor(idA), { target: { address: podB.ip, port: 9001 } });
    const [sent, received] = await Promise.all([pump(tunnel, total, patternAtoB), drain(tunnel)]);
    const server = await serverSide.promise;
    const seconds = (performance.now() - t0) / 1000;
    await closedCleanly(tunnel);
    t.diagnostic(
      `2 x 1 GiB in ${seconds.toFixed(1)} s (${((2 * total) / MiB / seconds).toFixed(0)} MiB/s combined)`,
    );

    assert.equal(sent.bytes, total);
    assert.equal(server.received.bytes, total);
    assert.equal(server.received.sha256, sent.sha256, 'pod B received exactly what pod A sent');
    assert.equal(server.sent.bytes, total);
    assert.equal(received.bytes, total);
    assert.equal(received.sha256, server.sent.sha256, 'pod A received exactly what pod B sent');
    assert.notEqual(sent.sha256, server.sent.sha256, 'the two directions carried different data');

    const [a1, b1] = await Promise.all([eth0Bytes(podA), eth0Bytes(podB)]);
    for (const [name, d] of [
      ['pod A eth0 tx', a1.tx - a0.tx],
      ['pod A eth0 rx', a1.rx - a0.rx],
      ['pod B eth0 tx', b1.tx - b0.tx],
      ['pod B eth0 rx', b1.rx - b0.rx],
    ] as const) {
      assert.ok(d >= total, `${name} grew by ${d} bytes, less than the 1 GiB sent through it`);
    }
    const seen = requestsFrom(firstRequest);
    assert.deepEqual(
      seen.map((r) => [r.peerIdentity, r.authority]),
      [[formatIdentity(idA), `${podB.ip}:9001`]],
    );
    assert.deepEqual(dialer.dials, [{ address: podB.ip, port: HBONE_PORT, source: podA.ip }]);
    assert.equal(pool.stats.connectionsCreated, 1);
  });

  it('half-close in both directions', { timeout: 30_000 }, async (t) => {
    const serverReadAfterItsEof = Promise.withResolvers<string>();
    onRequest = (request) => {
      const tunnel = request.accept();
      if (request.authority.port === 9002) {
        // Client ends first: read to EOF, then keep writing on the still-open side.
        readAll(tunnel).then(async (got) => {
          tunnel.write(`server read "${got}" to EOF;`);
          await sleep(50);
          tunnel.end(' and wrote after it');
        }, serverReadAfterItsEof.reject);
      } else {
        // Server ends first, then reads what the client still sends.
        tunnel.end('server ended first');
        readAll(tunnel).then(
          (got) => serverReadAfterItsEof.resolve(got.toString()),
          serverReadAfterItsEof.reject,
        );
      }
    };
    const firstRequest = requests.length;
    const { pool } = podAPool(t);

    // Client → server FIN first.
    const clientFirst = await pool.openTunnel(keyFor(idA), { target: { address: podB.ip, port: 9002 } });
    clientFirst.end('client request');
    const firstData = once(clientFirst, 'data');
    const reply = readAll(clientFirst);
    await firstData;
    assert.equal(clientFirst.writableFinished, true, 'our side was closed before the reply arrived');
    assert.equal((await reply).toString(), 'server read "client request" to EOF; and wrote after it');
    await closedCleanly(clientFirst);

    // Server → client FIN first.
    const serverFirst = await pool.openTunnel(keyFor(idA), { target: { address: podB.ip, port: 9003 } });
    assert.equal((await readAll(serverFirst)).toString(), 'server ended first');
    assert.equal(serverFirst.writable, true, 'EOF from the server left our writable side open');
    serverFirst.end('client wrote after EOF');
    assert.equal(await serverReadAfterItsEof.promise, 'client wrote after EOF');
    await closedCleanly(serverFirst);

    assert.equal(requestsFrom(firstRequest).length, 2);
    assert.equal(pool.stats.connectionsCreated, 1);
  });

  it('200 concurrent streams on one connection', { timeout: 30_000 }, async (t) => {
    const streams = 200;
    let open = 0;
    let peak = 0;
    const allOpen = Promise.withResolvers<void>();
    const serverSessions = new Set<unknown>();
    onRequest = (request) => {
      serverSessions.add(request.session);
      const tunnel = request.accept();
      open += 1;
      peak = Math.max(peak, open);
      if (open === streams) allOpen.resolve();
      tunnel.once('close', () => {
        open -= 1;
      });
      // Every answer waits until all streams are open at once.
      readAll(tunnel).then(async (got) => {
        await allOpen.promise;
        tunnel.end(Buffer.concat([Buffer.from('echo:'), got]));
      });
    };
    const firstRequest = requests.length;
    const tcpBefore = tcpAccepted;
    const sessionsBefore = sessions;
    // ztunnel opens a second connection past 100 streams; the server allows 200 (spec §1.1).
    const { pool, dialer } = podAPool(t, { maxStreamsPerConnection: streams });

    const results = await Promise.all(
      Array.from({ length: streams }, async (_, i) => {
        const tunnel = await pool.openTunnel(keyFor(idA), { target: { address: podB.ip, port: 9004 } });
        tunnel.end(`stream ${i}`);
        const got = (await readAll(tunnel)).toString();
        await closedCleanly(tunnel);
        return got;
      }),
    );
    assert.deepEqual(
      results,
      Array.from({ length: streams }, (_, i) => `echo:stream ${i}`),
    );
    assert.equal(peak, streams, `the server had ${peak} streams open at once`);
    assert.equal(requestsFrom(firstRequest).length, streams);
    assert.equal(serverSessions.size, 1, 'every stream arrived on one HTTP/2 connection');
    assert.equal(tcpAccepted - tcpBefore, 1, 'one TCP connection');
    assert.equal(sessions - sessionsBefore, 1);
    assert.equal(dialer.dials.length, 1);
    assert.equal(pool.stats.connectionsCreated, 1);
  });

  it('pool reuse shown by a connection count', { timeout: 30_000 }, async (t) => {
    onRequest = (request) => {
      const tunnel = request.accept();
      tunnel.on('error', () => {});
      tunnel.pipe(tunnel);
    };
    const firstRequest = requests.length;
    const tcpBefore = tcpAccepted;
    const sessionsBefore = sessions;
    const { pool, dialer } = podAPool(t);

    const tunnels = 50;
    for (let i = 0; i < tunnels; i++) {
      const tunnel = await pool.openTunnel(keyFor(idA), { target: { address: podB.ip, port: 9005 } });
      tunnel.end(`tunnel ${i}`);
      assert.equal((await readAll(tunnel)).toString(), `tunnel ${i}`);
      await closedCleanly(tunnel);
    }
    assert.equal(tcpAccepted - tcpBefore, 1, `${tunnels} sequential tunnels, one TCP connection accepted`);
    assert.equal(sessions - sessionsBefore, 1, 'one mTLS + HTTP/2 session on the server');
    assert.equal(dialer.dials.length, 1);
    assert.equal(pool.stats.connectionsCreated, 1);
    assert.equal(pool.stats.connectionsReused, tunnels - 1);

    // The count does move: another source identity is another key, so another connection.
    const other = await pool.openTunnel(keyFor(idA2), { target: { address: podB.ip, port: 9005 } });
    other.end('other identity');
    assert.equal((await readAll(other)).toString(), 'other identity');
    await closedCleanly(other);
    assert.equal(tcpAccepted - tcpBefore, 2);
    assert.equal(pool.stats.connectionsCreated, 2);
    const seen = requestsFrom(firstRequest);
    assert.equal(seen.length, tunnels + 1);
    assert.equal(seen.filter((r) => r.peerIdentity === formatIdentity(idA)).length, tunnels);
    assert.equal(seen.at(-1)?.peerIdentity, formatIdentity(idA2));
  });
});

import assert from 'node:assert/strict';
import * as net from 'node:net';
import { before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as tls from 'node:tls';
import { causedBy } from '../errors.ts';
import { makeIdentity } from '../identity/identity.ts';
import {
  type HbonePki,
  hbonePki,
  type RunningHboneServer,
  readAll,
  sinkHandler,
  startHboneServer,
} from '../testing/hbone-fixture.ts';
import { HbonePool, type HbonePoolOptions, type WorkloadKey, workloadKeyString } from './pool.ts';
import type { HboneTunnel } from './tunnel.ts';

let pki: HbonePki;
before(async () => {
  pki = await hbonePki();
});

function keyFor(s: RunningHboneServer, overrides: Partial<WorkloadKey> = {}): WorkloadKey {
  return {
    srcIdentity: pki.clientIdentity,
    dstIdentities: [pki.serverIdentity],
    srcIp: '127.0.0.1',
    dst: { address: '127.0.0.1', port: s.port },
    ...overrides,
  };
}

/** A pool whose dials are counted, dialling as the fixture client (or per identity). */
function countingPool(options: Partial<HbonePoolOptions> = {}) {
  const dials = { count: 0 };
  const pool = new HbonePool({
    credentials: async (id) => (id.serviceAccount === 'client' ? pki.client : pki.issue({ identity: id })),
    dial: (o) => {
      dials.count++;
      return tls.connect(o);
    },
    ...options,
  });
  return { pool, dials };
}

async function echo(t: HboneTunnel, text: string): Promise<string> {
  t.end(text);
  return (await readAll(t)).toString();
}

describe('HbonePool', () => {
  it('builds keys from sorted destination identities', () => {
    const a = makeIdentity('td', 'ns', 'a');
    const b = makeIdentity('td', 'ns', 'b');
    const base = { srcIdentity: a, srcIp: '10.0.0.1', dst: { address: 'fd00::1', port: 15008 } };
    assert.equal(
      workloadKeyString({ ...base, dstIdentities: [b, a] }),
      workloadKeyString({ ...base, dstIdentities: [a, b] }),
    );
    assert.equal(
      workloadKeyString({ ...base, dstIdentities: [a] }),
      'spiffe://td/ns/ns/sa/a|spiffe://td/ns/ns/sa/a|10.0.0.1|[fd00::1]:15008',
    );
  });

  it('reuses one connection for sequential tunnels with the same key', async () => {
    await using s = await startHboneServer(pki);
    const { pool, dials } = countingPool();
    try {
      for (let i = 0; i < 10; i++) {
        assert.equal(
          await echo(await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' }), `hello ${i}`),
          `hello ${i}`,
        );
      }
      assert.equal(dials.count, 1);
      assert.equal(pool.stats.connectionsCreated, 1);
      assert.equal(pool.stats.connectionsReused, 9);
      assert.equal(pool.stats.streamsOpened, 10);
      assert.equal(s.server.sessionCount, 1);
      assert.equal(s.requests.length, 10);
    } finally {
      pool.destroy();
    }
  });

  it('never shares a connection between different source identities or destination sets', async () => {
    await using s = await startHboneServer(pki);
    const { pool } = countingPool();
    try {
      const other = makeIdentity('td', 'ns', 'other-client');
      await echo(await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' }), 'a');
      await echo(await pool.openTunnel(keyFor(s, { srcIdentity: other }), { target: '10.0.0.1:80' }), 'b');
      await echo(
        await pool.openTunnel(
          keyFor(s, { dstIdentities: [pki.serverIdentity, makeIdentity('td', 'ns', 'waypoint')] }),
          {
            target: '10.0.0.1:80',
          },
        ),
        'c',
      );
      assert.equal(pool.stats.connectionsCreated, 3);
      assert.deepEqual(
        s.requests.map((r) => r.peerIdentity.serviceAccount),
        ['client', 'other-client', 'client'],
      );
    } finally {
      pool.destroy();
    }
  });

  it('opens another connection only when every connection is at its stream limit', async () => {
    await using s = await startHboneServer(pki, { handler: sinkHandler });
    const { pool } = countingPool({ maxStreamsPerConnection: 3 });
    try {
      const held = await Promise.all(
        Array.from({ length: 7 }, () => pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' })),
      );
      assert.equal(pool.stats.connectionsCreated, 3); // 3 + 3 + 1
      assert.equal(pool.stats.streamsActive, 7);
      // Closing one frees a slot: the next tunnel uses it instead of dialling.
      held[0]?.destroy();
      await sleep(20);
      held.push(await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' }));
      assert.equal(pool.stats.connectionsCreated, 3);
      for (const t of held) t.destroy();
    } finally {
      pool.destroy();
    }
  });

  it("caps streams per connection by the peer's SETTINGS_MAX_CONCURRENT_STREAMS", async () => {
    await using s = await startHboneServer(pki, {
      handler: sinkHandler,
      settings: { serverMaxConcurrentStreams: 2 },
    });
    const { pool } = countingPool();
    try {
      const held = await Promise.all(
        Array.from({ length: 5 }, () => pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' })),
      );
      assert.equal(pool.stats.connectionsCreated, 3); // 2 + 2 + 1, not 1 × 100
      assert.equal(s.server.sessionCount, 3);
      for (const t of held) t.destroy();
    } finally {
      pool.destroy();
    }
  });

  it('makes concurrent requests for one key wait for the dial in flight (no stampede)', async () => {
    await using s = await startHboneServer(pki);
    let sessions = 0;
    s.server.on('session', () => sessions++);
    const { pool, dials } = countingPool();
    try {
      const tunnels = await Promise.all(
        Array.from({ length: 50 }, () => pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' })),
      );
      assert.equal(dials.count, 1);
      assert.equal(sessions, 1);
      assert.equal(pool.stats.connectionsCreated, 1);
      assert.equal(pool.stats.connectionsReused, 49);
      const echoes = await Promise.all(tunnels.map((t, i) => echo(t, `#${i}`)));
      assert.deepEqual(
        echoes,
        tunnels.map((_, i) => `#${i}`),
      );
    } finally {
      pool.destroy();
    }
  });

  it('fails every waiter of a failed dial together, with one dial', async () => {
    await using s = await startHboneServer(pki);
    const { pool, dials } = countingPool();
    try {
      // The server is not who the key expects, so the single dial fails the identity check.
      const key = keyFor(s, { dstIdentities: [makeIdentity('td', 'ns', 'someone-else')] });
      const results = await Promise.allSettled(
        Array.from({ length: 5 }, () => pool.openTunnel(key, { target: '10.0.0.1:80' })),
      );
      assert.equal(dials.count, 1);
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        assert.ok(causedBy((r as PromiseRejectedResult).reason, 'PEER_IDENTITY_MISMATCH'));
      }
      assert.equal(pool.stats.dialsFailed, 1);
      assert.equal(pool.stats.connectionsOpen, 0);
    } finally {
      pool.destroy();
    }
  });

  it('takes no new streams on a connection that received GOAWAY, and drops it', async () => {
    await using s = await startHboneServer(pki, {
      handler: (req) => {
        const t = req.accept();
        t.on('error', () => {});
        t.pipe(t);
      },
    });
    const serverSessions: import('node:http2').ServerHttp2Session[] = [];
    s.server.on('session', (info) => serverSessions.push(info.session));
    const { pool } = countingPool();
    try {
      const first = await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' });
      assert.equal(pool.stats.connectionsCreated, 1);
      serverSessions[0]?.close(); // graceful GOAWAY: stream 1 may finish, nothing new is accepted
      for (let i = 0; i < 100 && pool.stats.goawaysReceived === 0; i++) await sleep(10);
      assert.equal(pool.stats.goawaysReceived, 1);
      // The stream in flight still works after the GOAWAY.
      assert.equal(await echo(first, 'still here'), 'still here');
      // A new tunnel goes over a new connection.
      assert.equal(await echo(await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' }), 'new'), 'new');
      assert.equal(pool.stats.connectionsCreated, 2);
      for (let i = 0; i < 100 && pool.stats.connectionsOpen > 1; i++) await sleep(10);
      assert.equal(pool.stats.connectionsOpen, 1, 'the GOAWAY connection is dropped once its stream ended');
    } finally {
      pool.destroy();
    }
  });

  it('releases a connection idle for idleTimeoutMs', async () => {
    await using s = await startHboneServer(pki);
    const { pool } = countingPool({ idleTimeoutMs: 150 });
    try {
      await echo(await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' }), 'x');
      assert.equal(pool.stats.connectionsOpen, 1);
      await sleep(50);
      assert.equal(pool.stats.connectionsOpen, 1, 'not released before the timeout');
      for (let i = 0; i < 100 && pool.stats.connectionsOpen > 0; i++) await sleep(10);
      assert.equal(pool.stats.connectionsOpen, 0);
      assert.equal(pool.stats.idleReleased, 1);
      for (let i = 0; i < 100 && s.server.sessionCount > 0; i++) await sleep(10);
      assert.equal(s.server.sessionCount, 0, 'the server sees the connection closed');
      await echo(await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' }), 'y');
      assert.equal(pool.stats.connectionsCreated, 2);
    } finally {
      pool.destroy();
    }
  });

  it('keeps a connection with an open stream past the idle timeout', async () => {
    await using s = await startHboneServer(pki);
    const { pool } = countingPool({ idleTimeoutMs: 50 });
    try {
      const t = await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' });
      await sleep(150);
      assert.equal(pool.stats.connectionsOpen, 1);
      assert.equal(await echo(t, 'alive'), 'alive');
    } finally {
      pool.destroy();
    }
  });

  it('refuses new tunnels after close and lets open ones finish', async () => {
    await using s = await startHboneServer(pki);
    const { pool } = countingPool();
    const t = await pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' });
    const closing = pool.close();
    await assert.rejects(pool.openTunnel(keyFor(s), { target: '10.0.0.1:80' }), (e) =>
      causedBy(e, 'HBONE_CLOSED'),
    );
    assert.equal(await echo(t, 'finishing'), 'finishing');
    await closing;
    assert.equal(pool.stats.connectionsOpen, 0);
  });
});

/**
 * A TCP relay in front of an HBONE server whose accepted sockets can be dropped the way the
 * kernel drops them when the peer process dies: RST (unread data) or FIN. The listener stays up,
 * like a restarted peer.
 */
async function startRelay(upstreamPort: number) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((down) => {
    const up = net.connect(upstreamPort, '127.0.0.1');
    sockets.add(down);
    down.on('error', () => {});
    up.on('error', () => {});
    down.on('close', () => {
      sockets.delete(down);
      up.destroy();
    });
    up.on('close', () => down.destroy());
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    kill(how: 'rst' | 'fin'): void {
      for (const s of sockets) {
        if (how === 'rst') s.resetAndDestroy();
        else s.destroy();
      }
    },
    [Symbol.asyncDispose]: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('HbonePool when the peer process dies', () => {
  for (const how of ['rst', 'fin'] as const) {
    it(`peer process dies (${how}): the next openTunnel dials a new connection instead of hanging`, async () => {
      await using s = await startHboneServer(pki, {
        handler: (req) => {
          const t = req.accept();
          t.on('error', () => {});
          t.pipe(t);
        },
      });
      await using relay = await startRelay(s.port);
      // Dial the way ztunnel does: a half-open-capable TCP socket, then TLS over it.
      const { pool, dials } = countingPool({
        dial: (o) => {
          dials.count++;
          const socket = net.connect({ host: o.host ?? '', port: o.port ?? 0, allowHalfOpen: true });
          return tls.connect({ ...o, socket });
        },
      });
      const key = keyFor(s, { dst: { address: '127.0.0.1', port: relay.port } });
      try {
        assert.equal(await echo(await pool.openTunnel(key, { target: '10.0.0.1:80' }), 'before'), 'before');
        const live = await pool.openTunnel(key, { target: '10.0.0.1:80' });
        live.on('error', () => {});
        const liveClosed = new Promise<void>((resolve) => live.once('close', () => resolve()));
        relay.kill(how);
        // Immediately, before the client may have processed the close.
        const started = Date.now();
        const next = await pool.openTunnel(key, { target: '10.0.0.1:80', signal: AbortSignal.timeout(5000) });
        assert.equal(await echo(next, 'after'), 'after');
        assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
        assert.equal(dials.count, 2);
        await liveClosed;
      } finally {
        pool.destroy();
      }
    });
  }
});

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  closed,
  type HbonePki,
  hbonePki,
  type RunningHboneServer,
  readAll,
  startHboneServer,
} from '../testing/hbone-fixture.ts';
import { openTunnel } from './client.ts';
import { HboneError } from './errors.ts';
import type { HboneRequest } from './server.ts';
import type { HboneSettings } from './settings.ts';
import type { HboneTunnel } from './tunnel.ts';

const { NGHTTP2_CANCEL, NGHTTP2_PROTOCOL_ERROR, NGHTTP2_INTERNAL_ERROR } = http2.constants;
const MiB = 1024 * 1024;

let pki: HbonePki;
before(async () => {
  pki = await hbonePki();
});

/** Runs `body` against a server whose handler is `handler`, over one fresh connection. */
async function withTunnelServer(
  handler: (request: HboneRequest) => void,
  body: (ctx: { s: RunningHboneServer; open: () => Promise<HboneTunnel> }) => Promise<void>,
  settings?: Partial<HboneSettings>,
): Promise<void> {
  await using s = await startHboneServer(pki, { handler, settings });
  const conn = await s.connect();
  try {
    await body({ s, open: () => openTunnel(conn.session, { target: '10.0.0.1:80' }) });
  } finally {
    conn.session.destroy();
  }
}

/** Writes `total` bytes of a repeating random pattern in `chunk`-sized writes, honouring backpressure. */
async function pump(
  stream: NodeJS.WritableStream,
  total: number,
  chunk: number,
  pattern: Buffer,
): Promise<string> {
  const hash = createHash('sha256');
  let sent = 0;
  while (sent < total) {
    const n = Math.min(chunk, total - sent);
    const offset = sent % pattern.length;
    const piece =
      offset + n <= pattern.length
        ? pattern.subarray(offset, offset + n)
        : Buffer.concat([pattern.subarray(offset), pattern.subarray(0, n - (pattern.length - offset))]);
    hash.update(piece);
    sent += n;
    if (!stream.write(piece)) await once(stream, 'drain');
  }
  stream.end();
  return hash.digest('hex');
}

function drainHash(stream: NodeJS.ReadableStream): Promise<{ hash: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    let bytes = 0;
    stream.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    stream.once('error', reject);
    stream.once('end', () => resolve({ hash: hash.digest('hex'), bytes }));
  });
}

describe('HBONE tunnel half-close', () => {
  it('client ends first, server keeps writing after reading EOF', async () => {
    const reply = randomBytes(3 * MiB);
    await withTunnelServer(
      async (req) => {
        const t = req.accept();
        const got = await readAll(t); // returns at the client's END_STREAM
        t.write(`got ${got.length} bytes;`);
        await sleep(20); // the write side must stay open after the read side ended
        t.end(reply);
      },
      async ({ open }) => {
        const t = await open();
        t.end(Buffer.from('request body'));
        const got = await readAll(t);
        assert.equal(got.subarray(0, 13).toString(), 'got 12 bytes;');
        assert.ok(got.subarray(13).equals(reply));
        assert.equal(await closed(t), undefined);
      },
    );
  });

  it('server ends first, client keeps writing after reading EOF', async () => {
    const upload = randomBytes(3 * MiB);
    let serverGot: Buffer | undefined;
    await withTunnelServer(
      async (req) => {
        const t = req.accept();
        t.end('hello, send me your data');
        serverGot = await readAll(t);
        assert.equal(await closed(t), undefined);
      },
      async ({ open }) => {
        const t = await open();
        const greeting = await readAll(t); // the server's END_STREAM
        assert.equal(greeting.toString(), 'hello, send me your data');
        await sleep(20);
        t.end(upload);
        assert.equal(await closed(t), undefined);
        for (let i = 0; i < 100 && serverGot === undefined; i++) await sleep(10);
        assert.ok(serverGot?.equals(upload), 'the server must receive everything written after its own end');
      },
    );
  });
});

describe('HBONE tunnel resets', () => {
  type ResetResult = {
    data: Buffer;
    ended: boolean;
    error: Error | undefined;
    writeError: Error | undefined;
  };

  /** The server writes "partial", then `reset` ends its side; reports what the client saw. */
  async function resetBy(reset: (tunnel: HboneTunnel) => void): Promise<ResetResult> {
    let result: ResetResult | undefined;
    await withTunnelServer(
      (req) => {
        const t = req.accept();
        t.on('error', () => {});
        t.write('partial', () => setTimeout(() => reset(t), 20));
      },
      async ({ open }) => {
        const t = await open();
        const chunks: Buffer[] = [];
        let ended = false;
        let error: Error | undefined;
        t.on('data', (c: Buffer) => chunks.push(c));
        t.on('end', () => {
          ended = true;
        });
        t.on('error', (e) => {
          error ??= e;
        });
        await new Promise((resolve) => t.stream.once('close', resolve));
        await sleep(10);
        const errorBeforeWrite = error;
        let writeError: Error | undefined;
        if (!t.destroyed) {
          writeError = await new Promise<Error | undefined>((resolve) =>
            t.write('after reset', (e) => resolve(e ?? undefined)),
          );
        }
        result = { data: Buffer.concat(chunks), ended, error: errorBeforeWrite, writeError };
        t.destroy();
      },
    );
    assert.ok(result);
    return result;
  }

  it('treats RST_STREAM CANCEL as EOF, and later writes as a broken pipe', async () => {
    const r = await resetBy((t) => t.destroy()); // RST_STREAM CANCEL
    assert.equal(r.data.toString(), 'partial');
    assert.equal(r.ended, true);
    assert.equal(r.error, undefined);
    assert.ok(
      r.writeError instanceof HboneError && r.writeError.code === 'HBONE_BROKEN_PIPE',
      String(r.writeError),
    );
  });

  it('treats RST_STREAM NO_ERROR as EOF', async () => {
    const r = await resetBy((t) => t.stream.destroy()); // RST_STREAM NO_ERROR without END_STREAM
    assert.equal(r.data.toString(), 'partial');
    assert.equal(r.ended, true);
    assert.equal(r.error, undefined);
  });

  it('treats any other RST_STREAM code as an error, never as EOF', async () => {
    // destroy(err) sends RST_STREAM INTERNAL_ERROR alone: the client must not see an end.
    const internal = await resetBy((t) => t.destroy(new Error('upstream connection failed')));
    assert.equal(internal.data.toString(), 'partial');
    assert.equal(internal.ended, false, 'INTERNAL_ERROR must not end the stream cleanly');
    assert.ok(
      internal.error instanceof HboneError && internal.error.code === 'HBONE_STREAM_RESET',
      String(internal.error),
    );
    assert.equal((internal.error as HboneError).rstCode, NGHTTP2_INTERNAL_ERROR);
    // Node's close(code) sends END_STREAM before its RST_STREAM; the reset is still an error.
    const protocol = await resetBy((t) => t.stream.close(NGHTTP2_PROTOCOL_ERROR));
    assert.ok(
      protocol.error instanceof HboneError && protocol.error.code === 'HBONE_STREAM_RESET',
      String(protocol.error),
    );
    assert.equal((protocol.error as HboneError).rstCode, NGHTTP2_PROTOCOL_ERROR);
  });

  it('reports a lost connection as HBONE_SESSION_CLOSED, not EOF', async () => {
    await withTunnelServer(
      (req) => {
        const t = req.accept();
        t.on('error', () => {});
        t.write('partial', () => setTimeout(() => req.socket.destroy(), 20));
      },
      async ({ open }) => {
        const t = await open();
        let ended = false;
        t.on('end', () => {
          ended = true;
        });
        t.resume();
        const err = await closed(t);
        assert.equal(ended, false);
        assert.ok(err instanceof HboneError && err.code === 'HBONE_SESSION_CLOSED', String(err));
      },
    );
  });

  it('resets the peer with CANCEL when the tunnel is destroyed, which the peer reads as EOF', async () => {
    const serverSide: { ended?: boolean; error?: Error } = {};
    await withTunnelServer(
      (req) => {
        const t = req.accept();
        t.on('end', () => {
          serverSide.ended = true;
        });
        t.on('error', (e) => {
          serverSide.error = e;
        });
        t.resume();
      },
      async ({ open, s }) => {
        const t = await open();
        t.write('x');
        await sleep(20);
        t.destroy();
        for (let i = 0; i < 100 && serverSide.ended === undefined; i++) await sleep(10);
        assert.equal(s.requests.at(-1)?.stream.rstCode, NGHTTP2_CANCEL);
        assert.equal(serverSide.ended, true);
        assert.equal(serverSide.error, undefined);
      },
    );
  });
});

describe('HBONE streams and keepalive', () => {
  it('carries 200 concurrent streams on one connection; the 201st waits for a free slot', async () => {
    await using s = await startHboneServer(pki);
    const conn = await s.connect();
    try {
      const payloads = Array.from({ length: 200 }, () => randomBytes(64 * 1024));
      const tunnels = await Promise.all(
        payloads.map(() => openTunnel(conn.session, { target: '10.0.0.1:80' })),
      );
      assert.equal(s.server.sessionCount, 1);
      assert.equal(s.requests.length, 200);
      // All 200 are open; the server allows no more, so a 201st gets no answer yet.
      let extraAnswered = false;
      const extra = openTunnel(conn.session, { target: '10.0.0.1:80' }).then((t) => {
        extraAnswered = true;
        return t;
      });
      await sleep(100);
      assert.equal(extraAnswered, false);
      const echoes = await Promise.all(
        tunnels.map(async (t, i) => {
          t.end(payloads[i]);
          return readAll(t);
        }),
      );
      for (const [i, e] of echoes.entries())
        assert.ok(e.equals(payloads[i] as Buffer), `stream ${i} echoed wrong bytes`);
      const last = await extra;
      last.end('201');
      assert.equal((await readAll(last)).toString(), '201');
      assert.equal(s.server.sessionCount, 1);
    } finally {
      conn.session.destroy();
    }
  });

  // Node's http2 stops reading while its own socket write is pending; with 16 MiB windows two
  // Node peers that both write more than the kernel buffers hold would wait on each other
  // forever. 8 × 8 MiB echoed at once puts 64 MiB in flight each way. Both places the server can
  // keep its write budget are checked (the kernel one needs CAP_NET_ADMIN or a large wmem_max).
  for (const writeBudget of ['auto', 'userspace'] as const) {
    it(`does not deadlock when both directions of many streams are saturated (write budget ${writeBudget})`, {
      timeout: 60_000,
    }, async () => {
      await using s = await startHboneServer(pki, { writeBudget });
      const places: string[] = [];
      s.server.on('session', (info) => places.push(info.writeBudget));
      const conn = await s.connect();
      try {
        const payloads = Array.from({ length: 8 }, () => randomBytes(8 * MiB));
        const tunnels = await Promise.all(
          payloads.map(() => openTunnel(conn.session, { target: '10.0.0.1:80' })),
        );
        const echoes = await Promise.all(
          tunnels.map((t, i) => {
            t.end(payloads[i]);
            return readAll(t);
          }),
        );
        for (const [i, e] of echoes.entries())
          assert.ok(e.equals(payloads[i] as Buffer), `stream ${i} echoed wrong bytes`);
        if (writeBudget === 'userspace') assert.deepEqual(places, ['userspace']);
        else if (process.getuid?.() === 0)
          assert.deepEqual(places, ['kernel'], 'root may size the send buffer');
      } finally {
        conn.session.destroy();
      }
    });
  }

  it('drops a connection whose peer stops answering PINGs', async () => {
    await using s = await startHboneServer(pki);
    // A relay that can silently black-hole the server-to-client direction.
    let blackhole = false;
    const relay = net.createServer((client) => {
      const upstream = net.connect(s.port, '127.0.0.1');
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.pipe(upstream);
      upstream.on('data', (d: Buffer) => {
        if (!blackhole) client.write(d);
      });
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    try {
      const conn = await s.connect({
        port: (relay.address() as net.AddressInfo).port,
        settings: { ...s.server.settings, keepaliveIntervalMs: 50, keepaliveTimeoutMs: 150 },
      });
      await sleep(200); // pings are answered while the path works
      assert.equal(conn.session.destroyed, false);
      blackhole = true;
      const started = Date.now();
      const [err] = (await once(conn.session, 'error')) as [Error];
      assert.ok(err instanceof HboneError && err.code === 'HBONE_KEEPALIVE_TIMEOUT', String(err));
      assert.ok(Date.now() - started < 1000);
    } finally {
      relay.close();
    }
  });
});

describe('HBONE throughput', () => {
  it('moves 1 GiB each way through one CONNECT stream concurrently with matching SHA-256', {
    timeout: 180_000,
  }, async () => {
    const total = 1024 * MiB;
    const pattern = randomBytes(16 * MiB + 4093); // odd length so chunks never align with it
    const serverResult: Promise<{ sentHash: string; got: { hash: string; bytes: number } }>[] = [];
    await withTunnelServer(
      (req) => {
        const t = req.accept();
        serverResult.push(
          Promise.all([pump(t, total, 256 * 1024, pattern.subarray(7)), drainHash(t)]).then(
            ([sentHash, got]) => ({ sentHash, got }),
          ),
        );
      },
      async ({ open }) => {
        const started = performance.now();
        const t = await open();
        const [sentHash, got] = await Promise.all([pump(t, total, 256 * 1024, pattern), drainHash(t)]);
        const server = await serverResult[0];
        const seconds = (performance.now() - started) / 1000;
        assert.equal(got.bytes, total);
        assert.equal(server?.got.bytes, total);
        assert.equal(server?.got.hash, sentHash, 'client→server bytes differ');
        assert.equal(got.hash, server?.sentHash, 'server→client bytes differ');
        const mbps = (2 * total) / 1e6 / seconds;
        console.log(
          `# 1 GiB each way in ${seconds.toFixed(1)} s (${mbps.toFixed(0)} MB/s combined, one process)`,
        );
      },
    );
  });
});

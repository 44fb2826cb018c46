import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as net from 'node:net';
import { Duplex } from 'node:stream';
import { describe, test } from 'node:test';
import { copyBidirectional } from '../src/proxy/copy.ts';
import { ProxyError } from '../src/proxy/errors.ts';

/** A connected pair of real TCP sockets on loopback, both allowing half-open. */
async function tcpPair(): Promise<[net.Socket, net.Socket, () => void]> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await once(client, 'connect');
  const [peer] = await accepted;
  return [client, peer, () => server.close()];
}

/**
 * downstreamClient ⇄ [downstream | copy | upstream] ⇄ upstreamServer: the two middle sockets are
 * what the proxy holds.
 */
async function proxiedPair() {
  const [downstreamClient, downstream, closeA] = await tcpPair();
  const [upstream, upstreamServer, closeB] = await tcpPair();
  for (const s of [downstreamClient, downstream, upstream, upstreamServer]) s.on('error', () => {});
  return {
    downstreamClient,
    downstream,
    upstream,
    upstreamServer,
    close: () => {
      for (const s of [downstreamClient, downstream, upstream, upstreamServer]) s.destroy();
      closeA();
      closeB();
    },
  };
}

function collect(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve) => socket.once('end', () => resolve(Buffer.concat(chunks))));
}

describe('copyBidirectional', () => {
  test('counts bytes per direction and reports them as they flow', async () => {
    const p = await proxiedPair();
    try {
      const seen = { down: 0, up: 0 };
      const copy = copyBidirectional(p.downstream, p.upstream, {
        downstreamToUpstream: (n) => {
          seen.down += n;
        },
        upstreamToDownstream: (n) => {
          seen.up += n;
        },
      });
      const atServer = collect(p.upstreamServer);
      const atClient = collect(p.downstreamClient);
      p.downstreamClient.end(Buffer.alloc(100_000, 1));
      assert.equal((await atServer).length, 100_000);
      p.upstreamServer.end(Buffer.alloc(7, 2));
      assert.equal((await atClient).length, 7);
      assert.deepEqual(await copy, { downstreamToUpstream: 100_000, upstreamToDownstream: 7 });
      assert.deepEqual(seen, { down: 100_000, up: 7 });
    } finally {
      p.close();
    }
  });

  test('keeps half-close: a FIN one way leaves the other way open until it ends too', async () => {
    const p = await proxiedPair();
    try {
      let settled = false;
      const copy = copyBidirectional(p.downstream, p.upstream).finally(() => {
        settled = true;
      });
      const atServer = collect(p.upstreamServer);
      p.downstreamClient.end('question');
      assert.equal((await atServer).toString(), 'question', 'the server sees the FIN');
      await new Promise((r) => setTimeout(r, 30));
      assert.equal(settled, false, 'the reply direction is still open');
      const atClient = collect(p.downstreamClient);
      p.upstreamServer.write('answer, ');
      await new Promise((r) => setTimeout(r, 20));
      p.upstreamServer.end('after a pause');
      assert.equal((await atClient).toString(), 'answer, after a pause');
      await copy;
    } finally {
      p.close();
    }
  });

  test('a reset is a close, not a failure; the other side is closed', async () => {
    const p = await proxiedPair();
    try {
      const copy = copyBidirectional(p.downstream, p.upstream);
      p.downstreamClient.write('x');
      await once(p.upstreamServer, 'data');
      const serverClosed = once(p.upstreamServer, 'close');
      p.upstreamServer.on('end', () => p.upstreamServer.end());
      p.downstreamClient.resetAndDestroy();
      await copy;
      await serverClosed;
    } finally {
      p.close();
    }
  });

  test('destroying a side with a ProxyError fails the copy with that error', async () => {
    const p = await proxiedPair();
    try {
      const copy = copyBidirectional(p.downstream, p.upstream);
      const reason = new ProxyError('POLICY_CHANGED', 'connection closed due to policy change');
      p.upstream.destroy(reason);
      await assert.rejects(copy, (err) => err === reason);
      // The other side is closed too.
      p.downstreamClient.resume();
      await once(p.downstreamClient, 'end');
    } finally {
      p.close();
    }
  });

  test('any other error fails it with SEND_FAILED or RECEIVE_FAILED naming the side', async () => {
    const p = await proxiedPair();
    try {
      // A byte stream that fails (not a network close).
      const failing = new Duplex({
        read() {},
        write(_c, _e, cb) {
          cb();
        },
      });
      const copy = copyBidirectional(p.downstream, failing);
      failing.destroy(new Error('decoder broke'));
      await assert.rejects(copy, (err: unknown) => {
        assert.ok(err instanceof ProxyError);
        assert.equal(err.code, 'SEND_FAILED');
        assert.match(err.message, /upstream error: decoder broke/);
        return true;
      });
    } finally {
      p.close();
    }
  });

  test('a side that already ended before the copy started still delivers its end', async () => {
    const p = await proxiedPair();
    try {
      p.downstreamClient.end('early');
      await once(p.downstream, 'readable');
      const atServer = collect(p.upstreamServer);
      const copy = copyBidirectional(p.downstream, p.upstream);
      assert.equal((await atServer).toString(), 'early');
      p.upstreamServer.end();
      await copy;
    } finally {
      p.close();
    }
  });
});

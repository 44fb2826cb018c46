/**
 * ZdsClient (ztunnel's side) against a hand-driven node agent on a real SEQPACKET socket, for the
 * inputs a correct ZdsServer never sends: bad fds, undecodable and oversized datagrams, requests out
 * of sequence, pipelined requests.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { openSync, readdirSync, readlinkSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { closeFd, netnsInode, openNetns, SeqpacketServer } from '@ambient/native';
import { Readiness } from '../lifecycle.ts';
import { ZdsChannel } from './channel.ts';
import { ZdsClient, type ZdsClientOptions } from './client.ts';
import type { ZdsError } from './errors.ts';
import { RecordingHandler, tempSocketDir, testLog, waitFor } from './fixtures/test-env.ts';
import {
  decodeHello,
  decodeResponse,
  encodeRequest,
  ZDS_SOCKET_OPTIONS,
  type ZdsRequestBody,
} from './protocol.ts';

const sockets = tempSocketDir();
let socketCount = 0;
const nextPath = (): string => sockets.path(`agent-${++socketCount}.sock`);
const log = testLog();
after(() => sockets.remove());

type T = { after(fn: () => unknown): void };

interface AgentConnection {
  readonly channel: ZdsChannel;
  readonly at: number;
  closedAt: number | undefined;
}

/** A node agent driven by the test: accepts connections and exposes each as a datagram channel. */
class RawAgent {
  readonly path: string;
  readonly connections: AgentConnection[] = [];
  readonly #server: SeqpacketServer;
  #taken = 0;

  constructor(t: T, path = nextPath()) {
    this.path = path;
    this.#server = new SeqpacketServer(ZDS_SOCKET_OPTIONS).listen(path);
    this.#server.on('connection', (socket) => {
      const conn: AgentConnection = { channel: new ZdsChannel(socket), at: Date.now(), closedAt: undefined };
      void conn.channel.closed.then(() => {
        conn.closedAt = Date.now();
      });
      this.connections.push(conn);
    });
    t.after(() => this.close());
  }

  /** The next connection not yet taken, with its hello read and checked. */
  async accept(timeoutMs = 3000): Promise<AgentConnection> {
    await waitFor('a client connection', () => this.connections.length > this.#taken, timeoutMs);
    const conn = this.connections[this.#taken++] as AgentConnection;
    const hello = await conn.channel.next(2000, 'hello');
    assert.deepEqual(decodeHello(hello.data, hello.fds), { version: 1 });
    return conn;
  }

  close(): void {
    this.#server.close();
    for (const c of this.connections) c.channel.close();
  }
}

async function ackText(channel: ZdsChannel): Promise<string> {
  const d = await channel.next(2000, 'ack');
  return decodeResponse(d.data, d.fds).error;
}

function startClient(t: T, path: string, handler: RecordingHandler, options: Partial<ZdsClientOptions> = {}) {
  const client = new ZdsClient({ path, handler, log, ...options });
  client.start();
  t.after(() => client.stop());
  return client;
}

/** fds of this process that refer to the namespace with `inode`. */
function fdsOnNetns(inode: number): number {
  let n = 0;
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`) === `net:[${inode}]`) n++;
    } catch {
      // the fd closed while listing (readdir's own)
    }
  }
  return n;
}

const info = { name: 'web', namespace: 'default', serviceAccount: 'sa' };
const add = (uid: string): ZdsRequestBody => ({ kind: 'add', uid, info });

describe('zds client protocol errors: NACK, drop, reconnect with backoff', () => {
  test('bad requests before the snapshot; the reconnect delay grows', async (t) => {
    const agent = new RawAgent(t);
    const handler = new RecordingHandler();
    const netnsFd = openNetns('/proc/self/ns/net');
    t.after(() => closeFd(netnsFd));
    const inode = netnsInode(netnsFd);
    const held = fdsOnNetns(inode);
    const client = startClient(t, agent.path, handler, { initialBackoffMs: 40, maxBackoffMs: 200 });
    const nacks: string[] = [];
    client.on('nack', (what) => nacks.push(what));

    const cases: { name: string; send: (ch: ZdsChannel) => Promise<void>; nack: RegExp }[] = [
      {
        name: 'add without an fd',
        send: (ch) => ch.send(encodeRequest(add('p1'))),
        nack: /carries no netns fd/,
      },
      {
        name: 'undecodable datagram',
        send: (ch) => ch.send(Buffer.from('0a64ffff', 'hex')),
        nack: /not a valid protobuf message/,
      },
      {
        name: 'oversized datagram',
        send: (ch) => ch.send(Buffer.alloc(2000, 0x0a)),
        nack: /2000 bytes is longer than the 1024-byte zds limit/,
      },
      {
        name: 'add whose fd is not a netns',
        send: async (ch) => {
          const devNull = openSync('/dev/null', 'r');
          try {
            await ch.send(encodeRequest(add('p1')), [devNull]);
          } finally {
            closeFd(devNull);
          }
        },
        nack: /not a network namespace/,
      },
      {
        name: 'add with two fds',
        send: (ch) => ch.send(encodeRequest(add('p1')), [netnsFd, netnsFd]),
        nack: /expected at most 1 fd with a workload request, got 2/,
      },
      {
        name: 'del before the snapshot',
        send: (ch) => ch.send(encodeRequest({ kind: 'del', uid: 'p1' })),
        nack: /before the snapshot was sent/,
      },
      {
        name: 'add without workload_info',
        send: (ch) => ch.send(Buffer.from(`0a040a02${Buffer.from('p1').toString('hex')}`, 'hex'), [netnsFd]),
        nack: /no workload_info/,
      },
    ];
    const expectedDelays = [40, 80, 160, 200, 200, 200];
    let previous: AgentConnection | undefined;
    for (const [i, c] of cases.entries()) {
      const conn = await agent.accept();
      if (previous?.closedAt !== undefined) {
        const gap = conn.at - previous.closedAt;
        const want = expectedDelays[i - 1] ?? 0;
        assert.ok(gap >= want - 5, `${c.name}: reconnected after ${gap}ms, expected at least ${want}ms`);
      }
      await c.send(conn.channel);
      assert.match(await ackText(conn.channel), c.nack, c.name);
      const reason = await conn.channel.closed;
      assert.match(reason.message, /peer closed/, `${c.name}: the client dropped the connection`);
      previous = conn;
    }
    assert.equal(nacks.length, cases.length);
    assert.deepEqual(handler.calls, [], 'no handler ran for a bad request');
    assert.equal(client.ready, false);
    await waitFor('received fds released', () => fdsOnNetns(inode) === held);
  });

  test('bad requests after the snapshot drop readiness; the delay starts over', async (t) => {
    const agent = new RawAgent(t);
    const handler = new RecordingHandler();
    const readiness = new Readiness();
    const netnsFd = openNetns('/proc/self/ns/net');
    t.after(() => closeFd(netnsFd));
    const inode = netnsInode(netnsFd);
    const held = fdsOnNetns(inode);
    const client = startClient(t, agent.path, handler, {
      initialBackoffMs: 40,
      maxBackoffMs: 1000,
      readiness,
    });

    const cases: { name: string; send: (ch: ZdsChannel) => Promise<void>; nack: RegExp }[] = [
      {
        name: 'del with an fd',
        send: (ch) => ch.send(encodeRequest({ kind: 'del', uid: 'p1' }), [netnsFd]),
        nack: /del request for pod p1 carries an unexpected fd/,
      },
      {
        name: 'keep after the snapshot',
        send: (ch) => ch.send(encodeRequest({ kind: 'keep', uid: 'p1' })),
        nack: /keep request for pod p1 after the snapshot was sent/,
      },
      {
        name: 'a second snapshot-sent',
        send: (ch) => ch.send(encodeRequest({ kind: 'snapshotSent' })),
        nack: /snapshot-sent request received twice/,
      },
    ];
    let previous: AgentConnection | undefined;
    for (const c of cases) {
      const conn = await agent.accept();
      if (previous?.closedAt !== undefined) {
        const gap = conn.at - previous.closedAt;
        assert.ok(gap >= 35 && gap < 400, `${c.name}: reconnected after ${gap}ms, expected the initial 40ms`);
      }
      await conn.channel.send(encodeRequest({ kind: 'snapshotSent' }));
      assert.equal(await ackText(conn.channel), '');
      assert.equal(readiness.ready, true, `${c.name}: ready after the snapshot`);
      await c.send(conn.channel);
      assert.match(await ackText(conn.channel), c.nack, c.name);
      await conn.channel.closed;
      await waitFor('not ready after the drop', () => !readiness.ready);
      previous = conn;
    }
    assert.equal(client.state().connects, 3);
    assert.equal(handler.count('snapshotSent'), 3);
    assert.equal(handler.count('del') + handler.count('keep'), 0);
    await waitFor('received fds released', () => fdsOnNetns(inode) === held);
  });

  test('a datagram beyond the transport limit drops the connection without a NACK', async (t) => {
    const agent = new RawAgent(t);
    const handler = new RecordingHandler();
    const client = startClient(t, agent.path, handler, { initialBackoffMs: 10 });
    const conn = await agent.accept();
    const disconnected = once(client, 'disconnect');
    await conn.channel.send(Buffer.alloc(70_000, 0x0a));
    const [reason] = (await disconnected) as [ZdsError];
    assert.equal(reason.code, 'ZDS_PROTOCOL');
    assert.match(reason.message, /MSG_TRUNC/);
    await assert.rejects(conn.channel.next(1000, 'ack'), /peer closed|reset/);
    await agent.accept();
    assert.equal(client.state().nacks, 0);
    assert.deepEqual(handler.calls, []);
  });
});

describe('zds client', () => {
  test('pipelined requests get exactly one ack each, in order; a handler failure NACKs and keeps the connection', async (t) => {
    const agent = new RawAgent(t);
    const handler = new RecordingHandler();
    handler.failAdds.set('pod-b', 'failed to start proxy: no room for pod-b');
    const netnsFd = openNetns('/proc/self/ns/net');
    t.after(() => closeFd(netnsFd));
    const inode = netnsInode(netnsFd);
    const client = startClient(t, agent.path, handler, { initialBackoffMs: 10 });
    const conn = await agent.accept();
    await conn.channel.send(encodeRequest(add('pod-a')), [netnsFd]);
    await conn.channel.send(encodeRequest(add('pod-b')), [netnsFd]);
    await conn.channel.send(encodeRequest({ kind: 'keep', uid: 'pod-k' }));
    await conn.channel.send(encodeRequest({ kind: 'snapshotSent' }));
    const acks = [];
    for (let i = 0; i < 4; i++) acks.push(await ackText(conn.channel));
    assert.deepEqual(acks, ['', 'failed to start proxy: no room for pod-b', '', '']);

    await conn.channel.send(encodeRequest({ kind: 'del', uid: 'pod-a' }));
    assert.equal(await ackText(conn.channel), '');
    assert.equal(conn.channel.isClosed, false, 'still connected');
    assert.equal(agent.connections.length, 1);
    assert.equal(client.state().connects, 1);
    assert.equal(client.state().nacks, 1);
    assert.equal(client.state().requests, 5);
    assert.deepEqual(handler.calls, [
      { kind: 'add', uid: 'pod-a', info, inode },
      { kind: 'add', uid: 'pod-b', info, inode },
      { kind: 'keep', uid: 'pod-k' },
      // a pod whose proxy failed still counts as in the snapshot (upstream inserts it before starting)
      { kind: 'snapshotSent', added: ['pod-a', 'pod-b'], kept: ['pod-k'], stale: [] },
      { kind: 'del', uid: 'pod-a' },
    ]);
  });

  test('ready only with a snapshot on the current connection; a clean EOF reconnects at once', async (t) => {
    const agent = new RawAgent(t);
    const handler = new RecordingHandler();
    const readiness = new Readiness();
    const client = startClient(t, agent.path, handler, { initialBackoffMs: 1000, readiness });
    const first = await agent.accept();
    assert.equal(client.connected, true);
    assert.equal(readiness.ready, false, 'connected but no snapshot yet');
    await first.channel.send(encodeRequest({ kind: 'snapshotSent' }));
    assert.equal(await ackText(first.channel), '');
    assert.equal(readiness.ready, true);
    assert.equal(client.ready, true);

    const disconnected = once(client, 'disconnect');
    first.channel.close();
    await disconnected;
    assert.equal(readiness.ready, false);
    const second = await agent.accept();
    assert.ok(second.at - (first.closedAt ?? 0) < 500, 'no 1000ms backoff after a clean end');
    assert.equal(readiness.ready, false, 'the new connection has no snapshot yet');
    await second.channel.send(encodeRequest({ kind: 'snapshotSent' }));
    assert.equal(await ackText(second.channel), '');
    assert.equal(readiness.ready, true);
  });

  test('connect retries back off from the initial delay up to the cap', async (t) => {
    const path = nextPath();
    const handler = new RecordingHandler();
    const client = startClient(t, path, handler, { initialBackoffMs: 10 });
    const capped = startClient(t, path, handler, { initialBackoffMs: 10, maxBackoffMs: 40 });
    await new Promise((r) => setTimeout(r, 400));
    // attempts at about 0, 10, 30, 70, 150, 310 ms
    const failed = client.state().failedConnects;
    assert.ok(failed >= 3 && failed <= 7, `${failed} failed connects in 400ms`);
    // the delay being waited out after the last failure
    assert.equal(client.state().backoffMs, 10 * 2 ** (failed - 1));
    assert.equal(capped.state().backoffMs, 40);
    assert.match(client.state().lastError ?? '', /no such file or directory/);
    assert.equal(client.connected, false);

    const agent = new RawAgent(t, path);
    await agent.accept(2000);
    await agent.accept(2000);
    assert.equal(client.connected, true);
  });

  test('stop closes the connection and does not reconnect', async (t) => {
    const agent = new RawAgent(t);
    const handler = new RecordingHandler();
    const readiness = new Readiness();
    const client = startClient(t, agent.path, handler, { initialBackoffMs: 10, readiness });
    const conn = await agent.accept();
    await conn.channel.send(encodeRequest({ kind: 'snapshotSent' }));
    assert.equal(await ackText(conn.channel), '');
    assert.equal(readiness.ready, true);
    await client.stop();
    await conn.channel.closed;
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(agent.connections.length, 1, 'no reconnect after stop');
    assert.equal(readiness.ready, false);
    assert.equal(client.connected, false);
  });
});

/**
 * ZdsServer (node agent) and ZdsClient (ztunnel) against each other over real SEQPACKET sockets with
 * real network-namespace fds, plus the server's own checks against a hand-driven raw peer.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { lstatSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { closeFd, currentNetnsInode, netnsInode, openNetns, SeqpacketSocket } from '@ambient/native';
import { Lifecycle, Readiness } from '../lifecycle.ts';
import { ZdsChannel } from './channel.ts';
import { ZdsClient, type ZdsClientOptions } from './client.ts';
import { ZdsError } from './errors.ts';
import {
  isRoot,
  RecordingHandler,
  sweepLeftoverNetns,
  TestNetns,
  tempSocketDir,
  testLog,
  waitFor,
} from './fixtures/test-env.ts';
import { decodeRequest, encodeAck, encodeHello, ZDS_SOCKET_OPTIONS } from './protocol.ts';
import { ZdsServer, type ZdsServerOptions } from './server.ts';

const sockets = tempSocketDir();
let socketCount = 0;
const nextPath = (): string => sockets.path(`zds-${++socketCount}.sock`);
const log = testLog();

before(() => {
  if (isRoot) sweepLeftoverNetns();
});
after(() => sockets.remove());

type T = { after(fn: () => unknown): void; skip(reason: string): void };

const info = (name: string) => ({ name, namespace: 'default', serviceAccount: `sa-${name}` });

function startServer(t: T, options: Partial<ZdsServerOptions> = {}): ZdsServer {
  const server = new ZdsServer({ path: nextPath(), snapshot: () => [], log, ...options });
  server.start();
  t.after(() => server.stop());
  return server;
}

function startClient(t: T, path: string, handler: RecordingHandler, options: Partial<ZdsClientOptions> = {}) {
  const client = new ZdsClient({ path, handler, log, initialBackoffMs: 10, ...options });
  client.start();
  t.after(() => client.stop());
  return client;
}

/** A netns of this test, opened; both released after the test. */
function podNetns(t: T): { ns: TestNetns; fd: number; inode: number } {
  const ns = new TestNetns();
  const fd = openNetns(ns.path);
  t.after(() => {
    closeFd(fd);
    ns.delete();
  });
  return { ns, fd, inode: netnsInode(fd) };
}

/** A raw peer acting as ztunnel (for behaviour the real client never shows). */
function rawZtunnel(t: T, path: string): ZdsChannel {
  const channel = new ZdsChannel(SeqpacketSocket.connect(path, ZDS_SOCKET_OPTIONS));
  t.after(() => channel.close());
  return channel;
}

function expectCode(code: string, text?: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof ZdsError, `expected ZdsError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (text !== undefined) assert.ok(err.message.includes(text), err.message);
    return true;
  };
}

describe('zds server ↔ client', () => {
  test('hello, snapshot (add with netns fds, keep), snapshot-sent, one ack each', async (t) => {
    if (!isRoot) return t.skip('needs root to create network namespaces');
    const { ns, fd, inode } = podNetns(t);
    const server = startServer(t, {
      snapshot: () => [
        { uid: 'pod-a', info: info('a'), netns: fd },
        { uid: 'pod-b', info: info('b'), netns: ns.path },
        { uid: 'pod-c', info: info('c') },
        { uid: 'pod-d', info: info('d'), netns: '/nonexistent/netns' },
      ],
    });
    const snapshotEvent = once(server, 'snapshot');
    const handler = new RecordingHandler();
    const readiness = new Readiness();
    const client = startClient(t, server.path, handler, { readiness });
    assert.equal(readiness.ready, false, 'not ready before the snapshot');
    assert.deepEqual(readiness.pending(), ['workload proxy manager']);

    const [state] = await snapshotEvent;
    await readiness.whenReady(AbortSignal.timeout(3000));
    assert.equal(client.ready, true);
    assert.notEqual(inode, currentNetnsInode(), 'the pod netns is not ours');
    assert.deepEqual(handler.calls, [
      { kind: 'add', uid: 'pod-a', info: info('a'), inode },
      { kind: 'add', uid: 'pod-b', info: info('b'), inode },
      { kind: 'keep', uid: 'pod-c' },
      { kind: 'keep', uid: 'pod-d' },
      { kind: 'snapshotSent', added: ['pod-a', 'pod-b'], kept: ['pod-c', 'pod-d'], stale: [] },
    ]);
    assert.equal(state.phase, 'ready');
    assert.equal(state.helloVersion, 1);
    assert.deepEqual(state.snapshot, { adds: 2, keeps: 2, nacks: 0 });
    assert.equal(state.sent, 5);
    assert.equal(state.acked, 5);
    assert.equal(state.nacked, 0);
    assert.equal(server.connectionCount, 1);
  });

  test('incremental add goes to the newest connection only; delete goes to all', async (t) => {
    if (!isRoot) return t.skip('needs root to create network namespaces');
    const { fd, inode } = podNetns(t);
    const server = startServer(t);
    const old = new RecordingHandler();
    const newer = new RecordingHandler();
    const first = once(server, 'snapshot');
    startClient(t, server.path, old);
    await first;
    const second = once(server, 'snapshot');
    startClient(t, server.path, newer);
    const [newest] = await second;
    assert.equal(server.connectionCount, 2);
    assert.equal(server.connections().at(-1)?.id, newest.id);

    await server.podAdded('pod-x', info('x'), fd);
    assert.deepEqual(
      newer.calls.filter((c) => c.kind === 'add'),
      [{ kind: 'add', uid: 'pod-x', info: info('x'), inode }],
    );
    assert.equal(old.count('add'), 0, 'the older ztunnel gets no add');

    await server.podDeleted('pod-x');
    assert.deepEqual(
      old.calls.filter((c) => c.kind === 'del'),
      [{ kind: 'del', uid: 'pod-x' }],
    );
    assert.deepEqual(
      newer.calls.filter((c) => c.kind === 'del'),
      [{ kind: 'del', uid: 'pod-x' }],
    );
    assert.deepEqual(
      server.connections().map((c) => [c.acked, c.nacked]),
      [
        [2, 0],
        [3, 0],
      ],
    );
  });

  test('a handler failure is a NACK: podAdded rejects with its text and the connection stays', async (t) => {
    if (!isRoot) return t.skip('needs root to create network namespaces');
    const { fd } = podNetns(t);
    const server = startServer(t);
    const handler = new RecordingHandler();
    handler.failAdds.set('pod-bad', 'failed to start proxy: address in use');
    const ready = once(server, 'snapshot');
    const client = startClient(t, server.path, handler);
    const [before] = await ready;
    const nack = once(client, 'nack');

    await assert.rejects(
      server.podAdded('pod-bad', info('bad'), fd),
      expectCode('ZDS_NACK', 'failed to start proxy: address in use'),
    );
    const [what] = await nack;
    assert.equal(what, 'add pod pod-bad');
    await server.podAdded('pod-good', info('good'), fd);

    const [after] = server.connections();
    assert.equal(after?.id, before.id, 'same connection');
    assert.equal(after?.nacked, 1);
    assert.equal(after?.acked, 2);
    assert.equal(client.state().connects, 1);
    assert.equal(client.state().nacks, 1);
    assert.equal(client.connected, true);
    assert.deepEqual([...handler.running], ['pod-good']);
  });

  test('after a node agent restart the snapshot is sent again and the client drops what it lacks', async (t) => {
    if (!isRoot) return t.skip('needs root to create network namespaces');
    const { fd, inode } = podNetns(t);
    const path = nextPath();
    const first = new ZdsServer({
      path,
      log,
      snapshot: () => [
        { uid: 'pod-a', info: info('a'), netns: fd },
        { uid: 'pod-b', info: info('b'), netns: fd },
      ],
    });
    first.start();
    t.after(() => first.stop());
    const handler = new RecordingHandler();
    const readiness = new Readiness();
    const client = startClient(t, path, handler, { readiness });
    await once(client, 'ready');
    assert.deepEqual([...handler.running].sort(), ['pod-a', 'pod-b']);

    const disconnected = once(client, 'disconnect');
    await first.stop();
    const [reason] = (await disconnected) as [ZdsError];
    assert.equal(reason.code, 'ZDS_CLOSED');
    assert.equal(readiness.ready, false, 'not ready while disconnected');

    // pod-b was deleted while the agent was down; pod-k's netns is not available to the new agent.
    const second = new ZdsServer({
      path,
      log,
      snapshot: () => [
        { uid: 'pod-a', info: info('a'), netns: fd },
        { uid: 'pod-k', info: info('k') },
      ],
    });
    second.start();
    t.after(() => second.stop());
    const [snapshot] = await once(client, 'ready');
    assert.deepEqual([...snapshot.added], ['pod-a']);
    assert.deepEqual([...snapshot.kept], ['pod-k']);
    assert.deepEqual(handler.calls.at(-1), {
      kind: 'snapshotSent',
      added: ['pod-a'],
      kept: ['pod-k'],
      stale: ['pod-b'],
    });
    assert.deepEqual([...handler.running], ['pod-a']);
    assert.equal(handler.calls.filter((c) => c.kind === 'add' && c.inode === inode).length, 3);
    assert.equal(client.state().connects, 2);
    assert.equal(readiness.ready, true);
  });
});

describe('zds server', () => {
  test('start creates the directory and replaces a stale socket; a regular file is refused', async (t) => {
    const path = sockets.path('run/ztunnel/ztunnel.sock');
    mkdirSync(dirname(path), { recursive: true });
    // A crashed agent leaves its socket file behind.
    try {
      execFileSync(
        process.execPath,
        [
          '-e',
          `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
        ],
        { stdio: 'ignore', timeout: 10_000 },
      );
    } catch {
      // killed by design
    }
    assert.equal(lstatSync(path).isSocket(), true, 'stale socket present');
    const server = startServer(t, { path });
    const handler = new RecordingHandler();
    const client = startClient(t, path, handler);
    await once(client, 'ready');
    await server.stop();
    assert.throws(() => lstatSync(path), /ENOENT/, 'stop removes the socket file');

    const file = sockets.path('not-a-socket');
    writeFileSync(file, 'x');
    assert.throws(
      () => new ZdsServer({ path: file, log, snapshot: () => [] }).start(),
      expectCode('ZDS_LISTEN', 'is not a socket'),
    );
  });

  test('more than 5 connections in one second: the excess is closed', async (t) => {
    const server = startServer(t);
    let connects = 0;
    let rejected = 0;
    server.on('connect', () => connects++);
    server.on('rejected', () => rejected++);
    const closed: number[] = [];
    const raws = Array.from({ length: 6 }, (_, i) => {
      const raw = rawZtunnel(t, server.path);
      void raw.closed.then(() => closed.push(i));
      return raw;
    });
    await waitFor('6 connections handled', () => connects + rejected === 6);
    assert.equal(connects, 5);
    assert.equal(rejected, 1);
    await waitFor('the refused socket to see EOF', () => closed.length === 1);
    assert.equal(raws.filter((r) => r.isClosed).length, 1);
    assert.equal(server.connectionCount, 5);

    // The window slides: a second later one more is accepted.
    await new Promise((r) => setTimeout(r, 1050));
    rawZtunnel(t, server.path);
    await waitFor('a seventh connection', () => connects === 6);
    assert.equal(rejected, 1);
  });

  test('no hello within the deadline closes the connection', async (t) => {
    const server = startServer(t, { helloTimeoutMs: 150 });
    const disconnect = once(server, 'disconnect');
    const t0 = Date.now();
    const raw = rawZtunnel(t, server.path);
    const [state, reason] = (await disconnect) as [{ phase: string }, ZdsError];
    assert.equal(reason.code, 'ZDS_TIMEOUT');
    assert.match(reason.message, /no hello from ztunnel within 150ms/);
    assert.ok(Date.now() - t0 >= 140);
    assert.equal(state.phase, 'closed');
    await raw.closed;
    assert.equal(server.connectionCount, 0);
  });

  test('a hello other than V1 closes the connection', async (t) => {
    const server = startServer(t);
    const disconnect = once(server, 'disconnect');
    const raw = rawZtunnel(t, server.path);
    await raw.send(Buffer.from('0802', 'hex'));
    const [, reason] = (await disconnect) as [unknown, ZdsError];
    assert.equal(reason.code, 'ZDS_PROTOCOL');
    assert.match(reason.message, /version 2 is not V1/);
  });

  test('no ack within the deadline: the request fails with ZDS_TIMEOUT and the connection closes', async (t) => {
    if (!isRoot) return t.skip('needs root to create network namespaces');
    const { fd, inode } = podNetns(t);
    const server = startServer(t, { ackTimeoutMs: 200 });
    const snapshot = once(server, 'snapshot');
    const raw = rawZtunnel(t, server.path);
    await raw.send(encodeHello());
    const snapSent = await raw.next(2000, 'snapshot-sent');
    assert.deepEqual(decodeRequest(snapSent.data, snapSent.fds), { kind: 'snapshotSent' });
    await raw.send(encodeAck());
    await snapshot;

    const disconnect = once(server, 'disconnect');
    const t0 = Date.now();
    const added = server.podAdded('pod-slow', info('slow'), fd);
    const queued = server.podAdded('pod-queued', info('queued'), fd);
    const req = await raw.next(2000, 'add');
    const decoded = decodeRequest(req.data, req.fds);
    assert.equal(decoded.kind, 'add');
    if (decoded.kind === 'add') {
      assert.equal(netnsInode(decoded.netnsFd), inode);
      closeFd(decoded.netnsFd);
    }
    await assert.rejects(added, expectCode('ZDS_TIMEOUT', 'no ack for add pod pod-slow within 200ms'));
    assert.ok(Date.now() - t0 >= 190);
    await assert.rejects(queued, expectCode('ZDS_CLOSED', 'closed before add pod pod-queued was sent'));
    const [, reason] = (await disconnect) as [unknown, ZdsError];
    assert.equal(reason.code, 'ZDS_TIMEOUT');
    await raw.closed;
  });

  test('the snapshot itself is subject to the ack deadline', async (t) => {
    const server = startServer(t, { ackTimeoutMs: 150, snapshot: () => [{ uid: 'pod-k', info: info('k') }] });
    const disconnect = once(server, 'disconnect');
    const raw = rawZtunnel(t, server.path);
    await raw.send(encodeHello());
    const keep = await raw.next(2000, 'keep');
    assert.deepEqual(decodeRequest(keep.data, keep.fds), { kind: 'keep', uid: 'pod-k' });
    const [state, reason] = (await disconnect) as [{ snapshot: unknown }, ZdsError];
    assert.equal(reason.code, 'ZDS_TIMEOUT');
    assert.deepEqual(state.snapshot, { adds: 0, keeps: 1, nacks: 0 });
  });

  test('ztunnel sending unasked, or an ack with an fd, is a protocol error', async (t) => {
    const server = startServer(t, { snapshot: () => [{ uid: 'pod-k', info: info('k') }] });
    // Unsolicited: after the snapshot, ztunnel must stay silent.
    const snapshot = once(server, 'snapshot');
    const raw = rawZtunnel(t, server.path);
    await raw.send(encodeHello());
    for (let i = 0; i < 2; i++) {
      const d = await raw.next(2000, 'request');
      decodeRequest(d.data, d.fds);
      await raw.send(encodeAck());
    }
    await snapshot;
    let disconnect = once(server, 'disconnect');
    await raw.send(encodeAck());
    let [, reason] = (await disconnect) as [unknown, ZdsError];
    assert.equal(reason.code, 'ZDS_PROTOCOL');
    assert.match(reason.message, /unsolicited message/);

    // An ack carrying an fd.
    disconnect = once(server, 'disconnect');
    const raw2 = rawZtunnel(t, server.path);
    await raw2.send(encodeHello());
    await raw2.next(2000, 'keep');
    const fd = openNetns('/proc/self/ns/net');
    await raw2.send(encodeAck(), [fd]);
    closeFd(fd);
    [, reason] = (await disconnect) as [unknown, ZdsError];
    assert.equal(reason.code, 'ZDS_PROTOCOL');
    assert.match(reason.message, /unexpected fd/);
  });

  test('podAdded needs a connection and a netns fd; podDeleted without connections succeeds', async (t) => {
    const server = startServer(t);
    const fd = openNetns('/proc/self/ns/net');
    t.after(() => closeFd(fd));
    await assert.rejects(server.podAdded('pod-a', info('a'), fd), expectCode('ZDS_NO_CONNECTION'));
    const notNetns = openSync('/dev/null', 'r');
    t.after(() => closeFd(notNetns));
    await assert.rejects(
      server.podAdded('pod-a', info('a'), notNetns),
      expectCode('ZDS_NOT_NETNS', 'is not a network namespace'),
    );
    await server.podDeleted('pod-a');
    await server.stop();
    await assert.rejects(server.podAdded('pod-a', info('a'), fd), expectCode('ZDS_CLOSED', 'not running'));
  });

  test('a graceful stop lets the request in flight finish, then closes (lifecycle)', async (t) => {
    const server = new ZdsServer({ path: nextPath(), log, snapshot: () => [] });
    const lifecycle = new Lifecycle().add(server);
    await lifecycle.start();
    t.after(() => lifecycle.stop({ mode: 'immediate' }));
    const fd = openNetns('/proc/self/ns/net');
    t.after(() => closeFd(fd));
    const snapshot = once(server, 'snapshot');
    const raw = rawZtunnel(t, server.path);
    await raw.send(encodeHello());
    const d = await raw.next(2000, 'snapshot-sent');
    decodeRequest(d.data, d.fds);
    await raw.send(encodeAck());
    await snapshot;

    const added = server.podAdded('pod-a', info('a'), fd);
    const req = await raw.next(2000, 'add');
    const decoded = decodeRequest(req.data, req.fds);
    if (decoded.kind === 'add') closeFd(decoded.netnsFd);
    const stopped = lifecycle.stop({ mode: 'graceful', deadlineMs: 2000 });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(server.listening, false, 'no longer accepting');
    assert.equal(raw.isClosed, false, 'the connection waits for the ack in flight');
    await raw.send(encodeAck());
    await added;
    await stopped;
    await raw.closed;
    assert.equal(server.connectionCount, 0);
  });

  test('a peer that goes away is removed at once', async (t) => {
    const server = startServer(t);
    const snapshot = once(server, 'snapshot');
    const raw = rawZtunnel(t, server.path);
    await raw.send(encodeHello());
    const d = await raw.next(2000, 'snapshot-sent');
    decodeRequest(d.data, d.fds);
    await raw.send(encodeAck());
    await snapshot;
    assert.equal(server.connectionCount, 1);
    const disconnect = once(server, 'disconnect');
    raw.close();
    const [, reason] = (await disconnect) as [unknown, ZdsError];
    assert.equal(reason.code, 'ZDS_CLOSED');
    assert.match(reason.message, /peer closed/);
    assert.equal(server.connectionCount, 0);
  });
});

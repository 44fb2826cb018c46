import assert from 'node:assert/strict';
import { fstatSync, openSync } from 'node:fs';
import { describe, test } from 'node:test';
import { closeFd, openNetns } from '@ambient/native';
import { ZdsError } from './errors.ts';
import {
  decodeHello,
  decodeRequest,
  decodeResponse,
  encodeAck,
  encodeHello,
  encodeRequest,
  ZDS_MAX_MESSAGE_SIZE,
} from './protocol.ts';
import { ZdsSnapshot, ZdsSnapshotTracker } from './snapshot.ts';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const ascii = (s: string): string => Buffer.from(s, 'ascii').toString('hex');

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'EBADF');
    return false;
  }
}

function expectZds(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ZdsError, `expected ZdsError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  });
}

describe('zds datagram bytes (hand-computed, as upstream prost/Go encode them)', () => {
  const info = { name: 'web', namespace: 'default', serviceAccount: 'sa' };

  test('ZdsHello{V1}', () => {
    assert.equal(hex(encodeHello()), '0801');
  });

  test('Add{uid "pod-1", info {web, default, sa}}', () => {
    // WorkloadInfo: 0a 03 "web" | 12 07 "default" | 1a 02 "sa"  = 18 bytes
    const workloadInfo = `0a03${ascii('web')}1207${ascii('default')}1a02${ascii('sa')}`;
    // AddWorkload: 0a 05 "pod-1" | 12 12 <info>               = 27 bytes
    const add = `0a05${ascii('pod-1')}1212${workloadInfo}`;
    // WorkloadRequest.add is field 1 (length-delimited)
    assert.equal(hex(encodeRequest({ kind: 'add', uid: 'pod-1', info })), `0a1b${add}`);
  });

  test('Del{uid "pod-1"}: DelWorkload.uid is field 2, and del is request field 2', () => {
    assert.equal(hex(encodeRequest({ kind: 'del', uid: 'pod-1' })), `1207${'1205'}${ascii('pod-1')}`);
  });

  test('Keep is request field 5; SnapshotSent is an empty field 3', () => {
    assert.equal(hex(encodeRequest({ kind: 'keep', uid: 'pod-1' })), `2a070a05${ascii('pod-1')}`);
    assert.equal(hex(encodeRequest({ kind: 'snapshotSent' })), '1a00');
  });

  test('Ack (empty error) and NACK "boom"', () => {
    assert.equal(hex(encodeAck()), '0a00');
    assert.equal(hex(encodeAck('boom')), `0a060a04${ascii('boom')}`);
    assert.deepEqual(decodeResponse(Buffer.from('0a00', 'hex'), []), { error: '' });
    assert.deepEqual(decodeResponse(Buffer.from(`0a060a04${ascii('boom')}`, 'hex'), []), { error: 'boom' });
  });

  test('decoding the hand-computed Add gives the same request back', () => {
    const fd = openNetns('/proc/self/ns/net');
    const data = Buffer.from(hex(encodeRequest({ kind: 'add', uid: 'pod-1', info })), 'hex');
    const req = decodeRequest(data, [fd]);
    assert.deepEqual(req, { kind: 'add', uid: 'pod-1', info, netnsFd: fd });
    closeFd(fd);
  });
});

describe('zds request validation (ztunnel side)', () => {
  const info = { name: 'n', namespace: 'ns', serviceAccount: 'sa' };
  const add = encodeRequest({ kind: 'add', uid: 'u1', info });

  test('Add without an fd is a protocol error', () => {
    expectZds(() => decodeRequest(add, []), 'ZDS_PROTOCOL', /carries no netns fd/);
  });

  test('Del with an fd is a protocol error and the fd is closed', () => {
    const fd = openNetns('/proc/self/ns/net');
    expectZds(
      () => decodeRequest(encodeRequest({ kind: 'del', uid: 'u1' }), [fd]),
      'ZDS_PROTOCOL',
      /unexpected fd/,
    );
    assert.equal(isOpen(fd), false);
  });

  test('Keep and SnapshotSent with an fd are protocol errors', () => {
    for (const body of [{ kind: 'keep', uid: 'u1' } as const, { kind: 'snapshotSent' } as const]) {
      const fd = openNetns('/proc/self/ns/net');
      expectZds(() => decodeRequest(encodeRequest(body), [fd]), 'ZDS_PROTOCOL', /unexpected fd/);
      assert.equal(isOpen(fd), false);
    }
  });

  test('Add with two fds is a protocol error and both are closed', () => {
    const a = openNetns('/proc/self/ns/net');
    const b = openNetns('/proc/self/ns/net');
    expectZds(() => decodeRequest(add, [a, b]), 'ZDS_PROTOCOL', /at most 1 fd.*got 2/);
    assert.equal(isOpen(a), false);
    assert.equal(isOpen(b), false);
  });

  test('Add whose fd is not a network namespace is ZDS_NOT_NETNS and the fd is closed', () => {
    const fd = openSync('/dev/null', 'r');
    expectZds(() => decodeRequest(add, [fd]), 'ZDS_NOT_NETNS', /not a network namespace/);
    assert.equal(isOpen(fd), false);
  });

  test('Add without workload_info is rejected (checklist 33)', () => {
    // WorkloadRequest{add: AddWorkload{uid: "u1"}} with no field 2
    const fd = openNetns('/proc/self/ns/net');
    expectZds(
      () => decodeRequest(Buffer.from(`0a040a02${ascii('u1')}`, 'hex'), [fd]),
      'ZDS_PROTOCOL',
      /no workload_info/,
    );
    assert.equal(isOpen(fd), false);
  });

  test('an undecodable datagram is a protocol error', () => {
    const fd = openNetns('/proc/self/ns/net');
    // field 1, length 100, but only 2 bytes follow
    expectZds(
      () => decodeRequest(Buffer.from('0a64ffff', 'hex'), [fd]),
      'ZDS_PROTOCOL',
      /not a valid protobuf/,
    );
    assert.equal(isOpen(fd), false);
  });

  test('a request with no known payload is a protocol error', () => {
    // only an unknown field 15 (varint 1)
    expectZds(() => decodeRequest(Buffer.from('7801', 'hex'), []), 'ZDS_PROTOCOL', /no known payload/);
  });

  test('a datagram longer than 1024 bytes is rejected as truncated', () => {
    const big = Buffer.alloc(ZDS_MAX_MESSAGE_SIZE + 1, 0);
    expectZds(() => decodeRequest(big, []), 'ZDS_PROTOCOL', /longer than the 1024-byte/);
    // exactly 1024 bytes passes the size check (and then fails to decode: all zero tags)
    expectZds(() => decodeRequest(Buffer.alloc(ZDS_MAX_MESSAGE_SIZE, 0), []), 'ZDS_PROTOCOL', /not a valid/);
  });

  test('an empty uid is rejected', () => {
    expectZds(() => decodeRequest(Buffer.from('1202' + '1200', 'hex'), []), 'ZDS_PROTOCOL', /empty uid/);
  });
});

describe('zds encoding limits', () => {
  test('a request that would exceed 1024 bytes is refused before sending', () => {
    expectZds(
      () => encodeRequest({ kind: 'del', uid: 'x'.repeat(1100) }),
      'ZDS_PROTOCOL',
      /more than the 1024-byte/,
    );
    expectZds(() => encodeRequest({ kind: 'keep', uid: '' }), 'ZDS_PROTOCOL', /empty uid/);
  });

  test('a long NACK text is cut to fit one datagram without splitting a character', () => {
    const text = `${'é'.repeat(600)}tail`;
    const bytes = encodeAck(text);
    assert.ok(bytes.length <= ZDS_MAX_MESSAGE_SIZE, `${bytes.length} bytes`);
    const { error } = decodeResponse(bytes, []);
    assert.ok(error.length > 400 && text.startsWith(error), 'a prefix of the text');
    assert.ok(!error.includes('\uFFFD'));
  });
});

describe('zds hello and responses (node agent side)', () => {
  test('hello V1 is accepted; NOT_USED and unknown versions are not', () => {
    assert.deepEqual(decodeHello(encodeHello(), []), { version: 1 });
    expectZds(() => decodeHello(Buffer.from('0802', 'hex'), []), 'ZDS_PROTOCOL', /version 2 is not V1/);
    expectZds(() => decodeHello(Buffer.from('7801', 'hex'), []), 'ZDS_PROTOCOL', /version 0 is not V1/);
  });

  test('a hello or response with an fd is a protocol error and the fd is closed', () => {
    const a = openNetns('/proc/self/ns/net');
    expectZds(() => decodeHello(encodeHello(), [a]), 'ZDS_PROTOCOL', /unexpected fd/);
    assert.equal(isOpen(a), false);
    const b = openNetns('/proc/self/ns/net');
    expectZds(() => decodeResponse(encodeAck(), [b]), 'ZDS_PROTOCOL', /unexpected fd/);
    assert.equal(isOpen(b), false);
  });

  test('a response without an ack is a protocol error', () => {
    expectZds(() => decodeResponse(Buffer.from('7801', 'hex'), []), 'ZDS_PROTOCOL', /no ack/);
  });
});

describe('zds snapshot bookkeeping', () => {
  test('stale() names the running proxies the snapshot neither added nor kept', () => {
    const s = new ZdsSnapshot(['a'], ['b']);
    assert.deepEqual(s.stale(['a', 'b', 'c', 'd']), ['c', 'd']);
    assert.equal(s.has('b'), true);
    assert.equal(s.has('c'), false);
  });

  test('upstream sequencing: keep only before, del only after, snapshot-sent once', () => {
    const t = new ZdsSnapshotTracker();
    t.add('a');
    t.keep('b');
    expectZds(() => t.del('a'), 'ZDS_PROTOCOL', /before the snapshot/);
    const s = t.finish();
    assert.deepEqual([...s.added], ['a']);
    assert.deepEqual([...s.kept], ['b']);
    assert.equal(t.received, true);
    t.add('c');
    t.del('c');
    expectZds(() => t.keep('c'), 'ZDS_PROTOCOL', /after the snapshot/);
    expectZds(() => t.finish(), 'ZDS_PROTOCOL', /twice/);
    t.reset();
    assert.equal(t.received, false);
  });
});

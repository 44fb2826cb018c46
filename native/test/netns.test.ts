import assert from 'node:assert/strict';
import { closeSync, openSync, statSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  closeFd,
  currentNetnsInode,
  isNetns,
  isSupported,
  NativeError,
  netnsInode,
  openNetns,
  openNetnsOfPid,
} from '../lib/index.ts';
import { type Netns, sweepLeftovers, Topology, uniqueName } from './topology.ts';

const isRoot = process.getuid?.() === 0;

test('the addon supports this platform', () => {
  assert.equal(isSupported(), true);
});

test('opening a missing netns path is NativeError ENOENT from open', () => {
  const path = `/var/run/netns/${uniqueName('missing')}`;
  assert.throws(
    () => openNetns(path),
    (err: unknown) => {
      assert.ok(err instanceof NativeError);
      assert.equal(err.code, 'ENOENT');
      assert.equal(err.errno, 2);
      assert.equal(err.syscall, 'open');
      assert.equal(err.message, `open ${path}: no such file or directory`);
      assert.equal(err.retryable, false);
      assert.deepEqual(err.toJSON(), {
        name: 'NativeError',
        code: 'ENOENT',
        message: err.message,
        errno: 2,
        syscall: 'open',
      });
      return true;
    },
  );
});

test('a file that is not a network namespace fails the netns check', () => {
  assert.throws(
    () => openNetns('/etc/hostname'),
    (err: unknown) =>
      err instanceof NativeError &&
      err.code === 'EINVAL' &&
      err.syscall === 'ioctl' &&
      err.message === 'ioctl /etc/hostname: not a network namespace',
  );
  const file = openSync('/etc/hostname', 'r');
  const uts = openSync('/proc/self/ns/uts', 'r');
  try {
    assert.equal(isNetns(file), false, 'a regular file');
    assert.equal(isNetns(uts), false, 'a namespace of another type');
  } finally {
    closeSync(file);
    closeSync(uts);
  }
});

test('closed fds are EBADF', () => {
  const fd = openNetnsOfPid(process.pid);
  closeFd(fd);
  assert.throws(
    () => isNetns(fd),
    (err: unknown) => err instanceof NativeError && err.code === 'EBADF',
  );
  assert.throws(
    () => closeFd(fd),
    (err: unknown) => err instanceof NativeError && err.code === 'EBADF',
  );
});

test('the own namespace opened by pid has the current inode', () => {
  const fd = openNetnsOfPid(process.pid);
  try {
    assert.equal(isNetns(fd), true);
    assert.equal(netnsInode(fd), currentNetnsInode());
    assert.equal(currentNetnsInode(), statSync('/proc/self/ns/net').ino);
  } finally {
    closeFd(fd);
  }
  assert.throws(() => openNetnsOfPid(0), TypeError);
});

describe('named namespaces', { skip: !isRoot && 'needs root for ip netns' }, () => {
  const topo = new Topology();
  let ns: Netns;

  before(() => {
    sweepLeftovers();
    ns = topo.netns('ns');
  });
  after(() => topo.dispose());

  test('a namespace made with ip netns opens, verifies and compares by inode', () => {
    const fd = openNetns(ns.path);
    const again = openNetns(ns.path);
    try {
      assert.equal(isNetns(fd), true);
      assert.equal(netnsInode(fd), statSync(ns.path).ino);
      assert.equal(netnsInode(fd), netnsInode(again), 'two fds of one namespace share the inode');
      assert.notEqual(netnsInode(fd), currentNetnsInode());
    } finally {
      closeFd(fd);
      closeFd(again);
    }
  });
});

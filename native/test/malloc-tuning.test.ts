import assert from 'node:assert/strict';
import { test } from 'node:test';
import { tuneMalloc } from '../lib/index.ts';

test('glibc takes the malloc tuning; out-of-range values are refused before it', () => {
  const MiB = 1024 * 1024;
  assert.equal(tuneMalloc({ mmapThreshold: 32 * MiB, trimThreshold: 128 * MiB, topPad: 32 * MiB }), true);
  assert.throws(() => tuneMalloc({ mmapThreshold: -1, trimThreshold: 0, topPad: 0 }), RangeError);
  assert.throws(() => tuneMalloc({ mmapThreshold: 1.5, trimThreshold: 0, topPad: 0 }), RangeError);
  assert.throws(() => tuneMalloc({ mmapThreshold: 0, trimThreshold: 2 ** 31, topPad: 0 }), RangeError);
});

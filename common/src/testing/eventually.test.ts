import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventually } from './eventually.ts';

test('eventually resolves with the first settled value, and times out naming the wait and the last error', async () => {
  let n = 0;
  assert.equal(await eventually('three calls', () => (++n >= 3 ? n : false), 1000, 1), 3);
  let calls = 0;
  await assert.rejects(
    eventually(
      'a thing that never comes',
      () => {
        calls++;
        throw new Error('still broken');
      },
      50,
      5,
    ),
    /timed out after 50 ms waiting for a thing that never comes: Error: still broken/,
  );
  assert.ok(calls >= 2);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExponentialBackoff } from './backoff.ts';

test('delays double from the initial interval and stop at the maximum', () => {
  const b = new ExponentialBackoff({ initialMs: 10, maxMs: 15_000, jitter: 0 });
  const delays = Array.from({ length: 14 }, () => b.next());
  assert.deepEqual(delays.slice(0, 5), [10, 20, 40, 80, 160]);
  assert.equal(Math.max(...delays), 15_000);
  assert.deepEqual(delays.slice(-3), [15_000, 15_000, 15_000]);
  assert.equal(b.attempts, 14);
});

test('jitter spreads each delay within ±factor and never past the maximum', () => {
  let r = 0;
  const b = new ExponentialBackoff({ initialMs: 1_000, maxMs: 150_000, jitter: 0.2, random: () => r });
  r = 0;
  assert.equal(b.next(), 800);
  r = 0.999999;
  assert.equal(b.next(), 2_400);
  for (let i = 0; i < 20; i++) b.next();
  r = 0.999999;
  assert.equal(
    b.next(),
    150_000,
    'jitter above the cap is clamped to the cap (ztunnel caps retries at 150 s)',
  );
});

test('reset returns to the initial interval', () => {
  const b = new ExponentialBackoff({ initialMs: 10, maxMs: 1_000, jitter: 0 });
  b.next();
  b.next();
  b.next();
  b.reset();
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 10);
});

test('options that cannot work are refused', () => {
  assert.throws(() => new ExponentialBackoff({ initialMs: 0, maxMs: 10 }), RangeError);
  assert.throws(() => new ExponentialBackoff({ initialMs: 20, maxMs: 10 }), RangeError);
  assert.throws(() => new ExponentialBackoff({ initialMs: 1, maxMs: 10, jitter: 1 }), RangeError);
  assert.throws(() => new ExponentialBackoff({ initialMs: 1, maxMs: 10, multiplier: 0.5 }), RangeError);
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type PushBatch, PushQueue } from '../src/xds/push-queue.ts';

const A = 'type.googleapis.com/istio.workload.Address';
const Z = 'type.googleapis.com/istio.security.Authorization';

function collect(): { batches: PushBatch[]; at: number[]; push: (b: PushBatch) => void } {
  const batches: PushBatch[] = [];
  const at: number[] = [];
  return {
    batches,
    at,
    push: (b) => {
      batches.push(b);
      at.push(performance.now());
    },
  };
}

describe('PushQueue', () => {
  it('merges a burst into one batch per quiet period, name sets per type', async () => {
    const c = collect();
    const q = new PushQueue(c.push, { quietMs: 40, maxDelayMs: 1000 });
    q.enqueue({ typeUrl: A, names: new Set(['a', 'b']) });
    await sleep(5);
    q.enqueue({ typeUrl: A, names: new Set(['b', 'c']) });
    q.enqueue({ typeUrl: Z, names: new Set(['ns/p']) });
    assert.deepEqual(q.pending, { types: 2, names: 4, events: 3 });
    assert.equal(c.batches.length, 0);
    await sleep(120);
    assert.equal(c.batches.length, 1);
    const b = c.batches[0];
    assert.deepEqual([...(b?.changes.get(A) ?? [])].sort(), ['a', 'b', 'c']);
    assert.deepEqual([...(b?.changes.get(Z) ?? [])], ['ns/p']);
    assert.equal(b?.events, 3);
    assert.deepEqual(q.pending, { types: 0, names: 0, events: 0 });
    q.close();
  });

  it('pushes at the maximum delay while changes keep coming', async () => {
    const c = collect();
    const q = new PushQueue(c.push, { quietMs: 60, maxDelayMs: 150 });
    const start = performance.now();
    // A change every 10 ms never leaves a 60 ms quiet period.
    for (let i = 0; i < 40; i++) {
      q.enqueue({ typeUrl: A, names: new Set([`n${i}`]) });
      await sleep(10);
    }
    const burstEnd = performance.now();
    await sleep(100);
    q.close();
    const during = c.at.filter((t) => t < burstEnd);
    assert.ok(
      during.length >= 2,
      `expected pushes during the ${Math.round(burstEnd - start)} ms burst, got ${during.length}`,
    );
    const first = c.batches[0];
    assert.ok(first && first.firstChangeAt - start < 5, 'the first batch starts at the first change');
    assert.ok((c.at[0] ?? 0) - start >= 140, 'not before the maximum delay');
    // Every name is pushed exactly once.
    const all = c.batches.flatMap((b) => [...(b.changes.get(A) ?? [])]);
    assert.equal(all.length, 40);
    assert.equal(new Set(all).size, 40);
  });

  it('flushes on demand and ignores empty updates and updates after close', async () => {
    const c = collect();
    const q = new PushQueue(c.push, { quietMs: 1000, maxDelayMs: 5000 });
    q.enqueue({ typeUrl: A, names: new Set() });
    assert.equal(q.pending.events, 0);
    q.enqueue({ typeUrl: A, names: new Set(['x']) });
    q.flush();
    assert.equal(c.batches.length, 1);
    q.flush();
    assert.equal(c.batches.length, 1, 'nothing pending, nothing pushed');
    q.enqueue({ typeUrl: A, names: new Set(['y']) });
    q.close();
    q.enqueue({ typeUrl: A, names: new Set(['z']) });
    await sleep(20);
    assert.equal(c.batches.length, 1);
    assert.equal(q.pending.events, 0);
  });
});

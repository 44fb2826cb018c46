import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeltaWatch } from '../src/xds/delta-watch.ts';
import {
  generateChangedDeltas,
  generateFullDeltas,
  generateSubscribedDeltas,
  toDeltaResource,
  typeView,
} from '../src/xds/generators.ts';
import { MemoryResourceSource } from './support/memory-resource-source.ts';

const T = 'type.googleapis.com/istio.workload.Address';
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

function sourceWith(entries: Record<string, string>): MemoryResourceSource {
  const s = new MemoryResourceSource([T]);
  s.apply(T, { set: Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, bytes(v)])) });
  return s;
}

const names = (rs: readonly { name: string }[]): string[] => rs.map((r) => r.name).sort();

describe('DeltaWatch subscriptions', () => {
  it('treats an empty first subscribe as wildcard, and * / unsubscribe * explicitly', () => {
    const legacy = new DeltaWatch(T);
    legacy.applySubscription([], [], true);
    assert.equal(legacy.wildcard, true);

    const onDemand = new DeltaWatch(T);
    onDemand.applySubscription(['*'], ['*'], true);
    assert.equal(onDemand.wildcard, false);
    assert.equal(onDemand.subscribes('x'), false);

    const explicit = new DeltaWatch(T);
    const c = explicit.applySubscription(['a', 'b'], [], true);
    assert.equal(explicit.wildcard, false);
    assert.deepEqual(c.added, ['a', 'b']);
    const later = explicit.applySubscription(['*'], [], false);
    assert.equal(later.wildcardAdded, true);
    assert.deepEqual(later.added, []);
  });

  it('forgets what an unsubscribe uncovers', () => {
    const w = new DeltaWatch(T);
    w.applySubscription(['a', 'b'], [], true);
    w.seed({ a: 'v1', b: 'v1' });
    const c = w.applySubscription([], ['a'], false);
    assert.deepEqual(c.dropped, ['a']);
    assert.equal(w.versionOf('a'), undefined);
    assert.equal(w.versionOf('b'), 'v1');
  });
});

describe('DeltaWatch versions', () => {
  it('confirms versions on ACK and reads through unconfirmed sends', () => {
    const w = new DeltaWatch(T);
    w.applySubscription([], [], true);
    const r = (name: string, version: string) => ({ name, version, value: bytes(version) });
    w.recordSent('n1', [r('a', 'v1'), r('b', 'v1')], [], 1);
    assert.equal(w.versionOf('a'), 'v1', 'in flight counts as sent');
    assert.equal(w.heldCount, 0, 'but is not confirmed');
    w.recordSent('n2', [r('a', 'v2')], ['b'], 2);
    assert.equal(w.ack('n1'), true);
    assert.equal(w.heldVersions().get('a'), 'v1');
    assert.equal(w.versionOf('a'), 'v2', 'the newer send still overlays');
    assert.equal(w.versionOf('b'), undefined, 'a pending removal overlays too');
    assert.equal(w.ack('n2'), true);
    assert.deepEqual([...w.heldVersions()], [['a', 'v2']]);
    assert.equal(w.ack('n2'), false, 'a nonce is confirmed once');
    assert.equal(w.lastAckedNonce, 'n2');
  });

  it('records a NACK without confirming, and without resending the same bytes', () => {
    const w = new DeltaWatch(T);
    w.applySubscription([], [], true);
    w.recordSent('n1', [{ name: 'a', version: 'v1', value: bytes('x') }], [], 1);
    assert.equal(w.nack('n1', 'a: bad', 3, 5), true);
    assert.equal(w.heldCount, 0);
    assert.equal(w.versionOf('a'), 'v1');
    assert.deepEqual(w.lastNack, { nonce: 'n1', message: 'a: bad', code: 3, at: 5 });
    assert.equal(w.nacks, 1);
    assert.equal(w.inFlight, 0);
  });
});

describe('DeltaWatch shared full-push snapshot', () => {
  const snapshotOf = (entries: Record<string, string>) => ({ versions: new Map(Object.entries(entries)) });
  const r = (name: string, version: string) => ({ name, version, value: bytes(version) });

  it('is only for a fresh wildcard watch', () => {
    const w = new DeltaWatch(T);
    w.applySubscription([], [], true);
    assert.equal(w.fresh, true);
    const explicit = new DeltaWatch(T);
    explicit.applySubscription(['a'], [], true);
    assert.equal(explicit.fresh, false);
    const seeded = new DeltaWatch(T);
    seeded.applySubscription([], [], true);
    seeded.seed({ a: 'v1' });
    assert.equal(seeded.fresh, false);
    assert.throws(() => seeded.recordSentSnapshot('n', snapshotOf({ a: 'v1' }), 1), /not fresh/);
  });

  it('reads versions through the snapshot, confirms it on ACK, and overlays later changes', () => {
    const shared = snapshotOf({ a: 'v1', b: 'v1', c: 'v1' });
    const w = new DeltaWatch(T);
    w.applySubscription([], [], true);
    w.recordSentSnapshot('n1', shared, 1);
    assert.equal(w.fresh, false);
    assert.equal(w.versionOf('a'), 'v1', 'sent counts before the ACK');
    assert.equal(w.heldCount, 0);
    assert.deepEqual([...w.knownNames()].sort(), ['a', 'b', 'c']);
    assert.equal(w.ack('n1'), true);
    assert.equal(w.heldCount, 3);

    w.recordSent('n2', [r('b', 'v2'), r('d', 'v1')], ['c'], 2);
    assert.equal(w.versionOf('b'), 'v2');
    assert.equal(w.versionOf('c'), undefined);
    assert.equal(w.ack('n2'), true);
    assert.deepEqual([...w.heldVersions()].sort(), [
      ['a', 'v1'],
      ['b', 'v2'],
      ['d', 'v1'],
    ]);
    assert.deepEqual([...w.knownNames()].sort(), ['a', 'b', 'd']);
    assert.equal(w.versionOf('c'), undefined, 'a removed base name stays removed');
    assert.deepEqual([...shared.versions.keys()], ['a', 'b', 'c'], 'the shared snapshot is never written');
  });

  it('flattens the snapshot when an unsubscribe needs per-name state', () => {
    const w = new DeltaWatch(T);
    w.applySubscription([], [], true);
    w.recordSentSnapshot('n1', snapshotOf({ a: 'v1', b: 'v1' }), 1);
    w.applySubscription(['a'], ['*'], false);
    assert.equal(w.wildcard, false);
    assert.equal(w.versionOf('a'), 'v1');
    assert.equal(w.versionOf('b'), undefined, 'b is no longer subscribed');
    assert.equal(w.heldCount, 0, 'still unconfirmed');
    assert.equal(w.ack('n1'), true);
    assert.deepEqual([...w.heldVersions()], [['a', 'v1']]);
  });
});

describe('delta generation', () => {
  it('full state skips held versions and removes what is gone or unsubscribed', () => {
    const s = sourceWith({ a: 'A', b: 'B', c: 'C' });
    const w = new DeltaWatch(T);
    w.applySubscription([], [], true);
    w.seed({ a: s.get(T, 'a')?.version ?? '', b: 'stale', gone: 'v' });
    const plan = generateFullDeltas(typeView(s, T), w);
    assert.deepEqual(names(plan.resources), ['b', 'c']);
    assert.deepEqual(plan.removed, ['gone']);

    const e = new DeltaWatch(T);
    e.applySubscription(['a', 'missing'], [], true);
    e.seed({ c: s.get(T, 'c')?.version ?? '' });
    const ex = generateFullDeltas(typeView(s, T), e);
    assert.deepEqual(names(ex.resources), ['a']);
    assert.deepEqual([...ex.removed].sort(), ['c', 'missing']);
  });

  it('changes send what the subscriber lacks and remove what it holds', () => {
    const s = sourceWith({ a: 'A', b: 'B' });
    const w = new DeltaWatch(T);
    w.applySubscription(['a', 'b', 'z'], [], true);
    w.seed({ a: s.get(T, 'a')?.version ?? '', z: 'old' });
    s.apply(T, { set: { b: bytes('B2') }, remove: ['z'] });
    const plan = generateChangedDeltas(typeView(s, T), w, ['a', 'b', 'z', 'unsubscribed']);
    assert.deepEqual(names(plan.resources), ['b']);
    assert.deepEqual(plan.removed, ['z']);
    const sub = generateSubscribedDeltas(typeView(s, T), w, ['a', 'nothing']);
    assert.deepEqual(sub.resources, [], 'a is held at its current version');
    assert.deepEqual(sub.removed, ['nothing']);
  });

  it('answers a type the source does not serve as empty', () => {
    const s = sourceWith({ a: 'A' });
    const w = new DeltaWatch('type.googleapis.com/other');
    w.applySubscription(['a'], [], true);
    const plan = generateFullDeltas(typeView(s, 'type.googleapis.com/other'), w);
    assert.deepEqual(plan.resources, []);
    assert.deepEqual(plan.removed, ['a']);
  });

  it('builds each resource envelope once, sharing the encoded bytes', () => {
    const s = sourceWith({ a: 'A' });
    s.apply(T, { set: { b: bytes('B') }, aliases: { b: ['net/10.0.0.2'] } });
    const a = s.get(T, 'a');
    const b = s.get(T, 'b');
    assert.ok(a && b);
    const r1 = toDeltaResource(T, a, false);
    assert.equal(toDeltaResource(T, a, true), r1, 'no aliases: the same envelope for everyone');
    assert.equal(r1.resource?.value, a.value, 'the source bytes, not a copy');
    assert.deepEqual(toDeltaResource(T, b, true).aliases, ['net/10.0.0.2']);
    assert.deepEqual(toDeltaResource(T, b, false).aliases, []);
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type Component,
  Drain,
  Lifecycle,
  LifecycleError,
  Readiness,
  type StopContext,
} from './lifecycle.ts';

function recorder(events: string[], name: string, behaviour: Partial<Component> = {}): Component {
  return {
    name,
    start: behaviour.start ?? (() => void events.push(`start ${name}`)),
    stop: behaviour.stop ?? ((ctx: StopContext) => void events.push(`stop ${name} ${ctx.mode}`)),
  };
}

describe('Lifecycle', () => {
  test('starts in order and stops in reverse', async () => {
    const events: string[] = [];
    const lc = new Lifecycle()
      .add(recorder(events, 'a'))
      .add(recorder(events, 'b'))
      .add(recorder(events, 'c'));
    await lc.start();
    await lc.stop({ deadlineMs: 1000 });
    assert.deepEqual(events, [
      'start a',
      'start b',
      'start c',
      'stop c graceful',
      'stop b graceful',
      'stop a graceful',
    ]);
  });

  test('a failed start stops what started and names the component', async () => {
    const events: string[] = [];
    const lc = new Lifecycle()
      .add(recorder(events, 'a'))
      .add(
        recorder(events, 'b', {
          start: () => {
            throw new Error('port 15008 in use');
          },
        }),
      )
      .add(recorder(events, 'c'));
    await assert.rejects(lc.start(), (err: unknown) => {
      assert.ok(err instanceof LifecycleError);
      assert.equal(err.code, 'START_FAILED');
      assert.equal(err.message, 'b failed to start: port 15008 in use');
      return true;
    });
    assert.deepEqual(events, ['start a', 'stop a immediate']);
  });

  test('a component that drains past the deadline is forced, and a stuck one is abandoned', async () => {
    const events: string[] = [];
    const lc = new Lifecycle()
      .add(
        recorder(events, 'stuck', {
          stop: () => new Promise(() => events.push('stuck never returns')),
        }),
      )
      .add(
        recorder(events, 'slow', {
          stop: (ctx) =>
            new Promise<void>((resolve) => {
              ctx.force.addEventListener('abort', () => {
                events.push('slow forced');
                resolve();
              });
            }),
        }),
      );
    await lc.start();
    const t0 = Date.now();
    await lc.stop({ deadlineMs: 100, forceGraceMs: 100 });
    const took = Date.now() - t0;
    assert.deepEqual(events.slice(2), ['slow forced', 'stuck never returns']);
    assert.ok(took >= 90 && took < 1000, `stop took ${took}ms`);
  });

  test('an immediate stop during a graceful one forces it', async () => {
    let forced = false;
    const lc = new Lifecycle().add({
      name: 'conn',
      start() {},
      stop: (ctx) =>
        new Promise<void>((resolve) =>
          ctx.force.addEventListener('abort', () => {
            forced = true;
            resolve();
          }),
        ),
    });
    await lc.start();
    const graceful = lc.stop({ deadlineMs: 60_000 });
    setTimeout(() => void lc.stop({ mode: 'immediate' }), 20);
    const t0 = Date.now();
    await graceful;
    assert.ok(forced);
    assert.ok(Date.now() - t0 < 2000);
  });
});

describe('Drain', () => {
  test('graceful when holds are released before the deadline', async () => {
    const drain = new Drain();
    const release = drain.hold('conn 1');
    let sawDraining = false;
    drain.draining.addEventListener('abort', () => {
      sawDraining = true;
      setTimeout(release, 20);
    });
    const result = await drain.drain(Date.now() + 1000);
    assert.ok(sawDraining);
    assert.deepEqual(result, { forced: [], leaked: [] });
    assert.equal(drain.force.aborted, false);
  });

  test('forced at the deadline, reporting what was held and what leaked', async () => {
    const drain = new Drain();
    const releaseA = drain.hold('conn a');
    drain.hold('conn b');
    drain.force.addEventListener('abort', () => releaseA());
    const result = await drain.drain(Date.now() + 50, 50);
    assert.deepEqual(result.forced.sort(), ['conn a', 'conn b']);
    assert.deepEqual(result.leaked, ['conn b']);
    assert.equal(drain.inFlight, 1);
  });

  test('release is idempotent', () => {
    const drain = new Drain();
    const r = drain.hold();
    drain.hold();
    r();
    r();
    assert.equal(drain.inFlight, 1);
  });
});

describe('Readiness', () => {
  test('ready only when no task is pending, and tasks can come back', async () => {
    const readiness = new Readiness();
    const xds = readiness.register('xds');
    const zds = readiness.register('zds');
    assert.equal(readiness.ready, false);
    assert.deepEqual(readiness.pending(), ['xds', 'zds']);
    const waiting = readiness.whenReady();
    xds();
    xds();
    assert.deepEqual(readiness.pending(), ['zds']);
    zds();
    await waiting;
    assert.equal(readiness.ready, true);
    const again = readiness.register('zds');
    assert.equal(readiness.ready, false);
    again();
    assert.equal(readiness.ready, true);
  });

  test('the same name registered twice needs both done', () => {
    const readiness = new Readiness();
    const a = readiness.register('certs');
    const b = readiness.register('certs');
    a();
    assert.deepEqual(readiness.pending(), ['certs']);
    b();
    assert.ok(readiness.ready);
  });

  test('whenReady honours an abort signal', async () => {
    const readiness = new Readiness();
    readiness.register('never');
    await assert.rejects(readiness.whenReady(AbortSignal.timeout(20)), { name: 'AbortError' });
  });
});

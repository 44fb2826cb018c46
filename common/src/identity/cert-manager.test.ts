/**
 * CertManager with a manual clock and a scripted CA: the clock is the point (half-lives of hours,
 * backoffs of minutes), and so is a CA whose answers the test controls. The manager against the
 * real istiod CA is tested in istiod/test/clients-ca.test.ts.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { describe, test } from 'node:test';
import { Logging } from '../log.ts';
import { TestCa } from '../testing/pki.ts';
import {
  CaError,
  type CertificateFetcher,
  type WorkloadCertificate,
  workloadCertificateFromResponse,
} from './ca-client.ts';
import { CertManager, type CertManagerEvents, type Clock, systemClock } from './cert-manager.ts';
import { formatIdentity, type Identity, makeIdentity } from './identity.ts';

const quiet = new Logging({ levels: 'off' }).logger('ca');
const SEC = 1000;
const id = (sa: string): Identity => makeIdentity('cluster.local', 'test', sa);

/** A clock that moves only when told, firing due timers in order. */
class ManualClock implements Clock {
  #now = Date.parse('2030-01-01T00:00:00Z');
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.#now;
  }

  setTimer(ms: number, fn: () => void): () => void {
    const key = ++this.#seq;
    this.#timers.set(key, { at: this.#now + ms, fn });
    return () => this.#timers.delete(key);
  }

  /** Moves time forward by `ms`, firing each timer at its own time and letting promises settle. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      await settle();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) if (!next || entry[1].at < next[1].at) next = entry;
      if (!next || next[1].at > target) break;
      this.#timers.delete(next[0]);
      this.#now = Math.max(this.#now, next[1].at);
      next[1].fn();
    }
    this.#now = target;
    await settle();
  }

  get pendingTimers(): number {
    return this.#timers.size;
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
}

let serial = 0;
function fakeCert(identity: Identity, notBefore: number, notAfter: number): WorkloadCertificate {
  const s = (++serial).toString(16).toUpperCase();
  return {
    identity,
    keyPem: `key-${s}`,
    certChainPem: `chain-${s}`,
    rootsPem: 'roots',
    key: `key-${s}`,
    certChain: `chain-${s}`,
    roots: 'roots',
    serialNumber: s,
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    refreshAt: new Date(notBefore + (notAfter - notBefore) / 2),
  };
}

/** A CA the test scripts: answers at once (`auto`), fails, or holds each request for the test. */
class ScriptedCa implements CertificateFetcher {
  readonly calls: string[] = [];
  readonly held: {
    identity: Identity;
    resolve: (c: WorkloadCertificate) => void;
    reject: (e: unknown) => void;
  }[] = [];
  mode: 'auto' | 'hold' | 'fail' = 'auto';
  lifetimeMs = 100 * SEC;
  readonly #clock: Clock;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  fetchCertificate(identity: Identity): Promise<WorkloadCertificate> {
    this.calls.push(identity.serviceAccount);
    if (this.mode === 'fail') {
      return Promise.reject(new CaError('CA_UNAVAILABLE', 'ca is down', { retryable: true }));
    }
    if (this.mode === 'hold') {
      return new Promise((resolve, reject) => this.held.push({ identity, resolve, reject }));
    }
    const now = this.#clock.now();
    return Promise.resolve(fakeCert(identity, now, now + this.lifetimeMs));
  }

  /** Answers the oldest held request with a fresh certificate. */
  release(): void {
    const h = this.held.shift();
    assert.ok(h, 'no request is held');
    const now = this.#clock.now();
    h.resolve(fakeCert(h.identity, now, now + this.lifetimeMs));
  }
}

function setup(options: { concurrency?: number } = {}) {
  const clock = new ManualClock();
  const ca = new ScriptedCa(clock);
  const manager = new CertManager({
    client: ca,
    clock,
    log: quiet,
    // No jitter: the retry times below are exact.
    backoff: { random: () => 0.5 },
    ...(options.concurrency !== undefined && { concurrency: options.concurrency }),
  });
  const events: { rotated: CertManagerEvents['rotated'][0][]; failed: CertManagerEvents['failed'][0][] } = {
    rotated: [],
    failed: [],
  };
  manager.on('rotated', (e) => events.rotated.push(e));
  manager.on('failed', (e) => events.failed.push(e));
  return { clock, ca, manager, events };
}

describe('CertManager', () => {
  test('concurrent callers share one fetch, and the cached certificate is served after it', async () => {
    const { ca, manager } = setup();
    ca.mode = 'hold';
    const waits = Array.from({ length: 5 }, () => manager.fetch(id('web')));
    await settle();
    assert.deepEqual(ca.calls, ['web']);
    assert.equal(manager.state(id('web')), 'Initializing');
    ca.release();
    const certs = await Promise.all(waits);
    for (const c of certs) assert.equal(c, certs[0]);
    assert.equal(await manager.fetch(id('web')), certs[0]);
    assert.equal(manager.get(id('web')), certs[0]);
    assert.deepEqual(ca.calls, ['web']);
  });

  test('higher priorities start first among due fetches (ztunnel test_priority)', async () => {
    const { ca, manager } = setup({ concurrency: 1 });
    ca.mode = 'hold';
    const all = [
      manager.fetch(id('id1'), 'background'),
      manager.fetch(id('id2'), 'background'),
      manager.fetch(id('id3'), 'warmup'),
      manager.fetch(id('id4'), 'realtime'),
    ];
    await settle();
    for (let i = 0; i < 4; i++) {
      ca.release();
      await settle();
    }
    await Promise.all(all);
    assert.deepEqual(ca.calls, ['id1', 'id4', 'id3', 'id2']);
  });

  test('a realtime request for a queued prefetch moves it ahead (ztunnel test_warmup_existing)', async () => {
    const { ca, manager } = setup({ concurrency: 1 });
    ca.mode = 'hold';
    for (let i = 1; i <= 4; i++) manager.prefetch(id(`warmup-${i}`));
    const realtime = manager.fetch(id('warmup-4'), 'realtime');
    await settle();
    ca.release();
    await settle();
    ca.release();
    assert.equal((await realtime).identity.serviceAccount, 'warmup-4');
    assert.deepEqual(ca.calls, ['warmup-1', 'warmup-4']);
  });

  test('at most 8 fetches are in flight', async () => {
    const { ca, manager } = setup();
    ca.mode = 'hold';
    const all = Array.from({ length: 20 }, (_, i) => manager.fetch(id(`sa-${i}`)));
    await settle();
    assert.equal(ca.calls.length, 8);
    ca.release();
    await settle();
    assert.equal(ca.calls.length, 9);
    while (ca.held.length > 0) {
      ca.release();
      await settle();
    }
    assert.equal((await Promise.all(all)).length, 20);
    assert.equal(ca.calls.length, 20);
  });

  test('refreshes at half-life and announces the rotation', async () => {
    const { clock, ca, manager, events } = setup();
    const first = await manager.fetch(id('web'));
    await clock.advance(50 * SEC - 1);
    assert.deepEqual(ca.calls, ['web'], 'nothing before the half-life');
    await clock.advance(1);
    assert.deepEqual(ca.calls, ['web', 'web']);
    const second = manager.get(id('web'));
    assert.ok(second && second !== first);
    assert.equal(second.notBefore.getTime(), clock.now());
    assert.deepEqual(
      events.rotated.map((e) => [e.certificate, e.previous]),
      [
        [first, undefined],
        [second, first],
      ],
    );
    await clock.advance(50 * SEC);
    assert.equal(ca.calls.length, 3, 'and again at the new certificate’s half-life');
  });

  test('a failed refresh keeps the valid certificate until it expires, then recovers (checklist 25)', async () => {
    const { clock, ca, manager, events } = setup();
    const cert = await manager.fetch(id('web'));
    ca.mode = 'fail';
    await clock.advance(50 * SEC);
    assert.equal(ca.calls.length, 2);
    assert.equal(manager.get(id('web')), cert, 'the old certificate is still served');
    assert.equal(await manager.fetch(id('web')), cert);
    assert.equal(manager.state(id('web')), 'Available');
    assert.deepEqual(
      events.failed.map((e) => [e.retained, e.retryInMs]),
      [[true, 1 * SEC]],
    );

    // Retries at 1, 2, 4, 8, 16 s after each failure: t = 51, 53, 57, 65, 81 s, then 32 s would
    // pass the expiry at 100 s, so the next retry is at the expiry itself.
    await clock.advance(50 * SEC - 1);
    assert.deepEqual(
      events.failed.map((e) => e.retryInMs),
      [1, 2, 4, 8, 16, 19].map((s) => s * SEC),
    );
    assert.ok(events.failed.every((e) => e.retained));
    assert.equal(manager.get(id('web')), cert, 'still valid one millisecond before expiry');

    await clock.advance(1);
    assert.equal(manager.get(id('web')), undefined, 'expired');
    assert.equal(manager.state(id('web')), 'Unavailable');
    const last = events.failed.at(-1);
    assert.deepEqual([last?.retained, last?.retryInMs], [false, 64 * SEC]);
    await assert.rejects(
      manager.fetch(id('web')),
      (e: unknown) => e instanceof CaError && e.code === 'CA_UNAVAILABLE',
    );

    const callsBefore = ca.calls.length;
    ca.mode = 'auto';
    await clock.advance(64 * SEC);
    assert.equal(ca.calls.length, callsBefore + 1);
    assert.equal(manager.state(id('web')), 'Available');
    const fresh = await manager.fetch(id('web'));
    assert.notEqual(fresh, cert);

    // The backoff restarted: the next failure retries after 1 s again.
    ca.mode = 'fail';
    await clock.advance(50 * SEC);
    assert.equal(events.failed.at(-1)?.retryInMs, 1 * SEC);
  });

  test('retries without a certificate back off per identity, capped at 150 s', async () => {
    const { clock, ca, manager, events } = setup();
    ca.mode = 'fail';
    await assert.rejects(manager.fetch(id('broken')), /ca is down/);
    await clock.advance(20 * 60 * SEC);
    const delays = events.failed.map((e) => e.retryInMs / SEC);
    assert.deepEqual(delays.slice(0, 9), [1, 2, 4, 8, 16, 32, 64, 128, 150]);
    assert.ok(delays.slice(8).every((d) => d === 150));

    // Another identity is not held back by the failing one's backoff.
    ca.mode = 'auto';
    const other = await manager.fetch(id('healthy'));
    assert.equal(other.identity.serviceAccount, 'healthy');
    assert.equal(manager.state(id('broken')), 'Unavailable', 'still waiting for its own retry');
    await assert.rejects(
      manager.fetch(id('broken')),
      /ca is down/,
      'an unavailable identity answers at once',
    );
  });

  test('forget rejects waiters, discards the fetch in flight and cancels refreshes', async () => {
    const { clock, ca, manager, events } = setup();
    ca.mode = 'hold';
    const waiting = manager.fetch(id('gone'));
    await settle();
    manager.forget(id('gone'));
    await assert.rejects(waiting, (e: unknown) => e instanceof CaError && e.code === 'CERTIFICATE_FORGOTTEN');
    ca.release();
    await settle();
    assert.equal(manager.state(id('gone')), undefined);
    assert.equal(events.rotated.length, 0, 'the late result was dropped');

    ca.mode = 'auto';
    await manager.fetch(id('web'));
    manager.forget(id('web'));
    await clock.advance(200 * SEC);
    assert.deepEqual(ca.calls, ['gone', 'web'], 'no refresh after forget');
    assert.equal(clock.pendingTimers, 0);
  });

  test('a certificate received past its half-life is refreshed half-way through what is left', async () => {
    const clock = new ManualClock();
    const calls: number[] = [];
    const manager = new CertManager({
      clock,
      log: quiet,
      client: {
        fetchCertificate: async (identity) => {
          calls.push(clock.now());
          // Backdated by 120 s with 4 s to go, as istiod issues a short-lived leaf.
          return fakeCert(identity, clock.now() - 120 * SEC, clock.now() + 4 * SEC);
        },
      },
    });
    await manager.fetch(id('short'));
    await clock.advance(1999);
    assert.equal(calls.length, 1, 'no immediate refetch loop');
    await clock.advance(1);
    assert.equal(calls.length, 2);
  });

  test('stop fails the waiting callers and leaves no timers', async () => {
    const { clock, ca, manager } = setup();
    await manager.fetch(id('web'));
    ca.mode = 'hold';
    const waiting = manager.fetch(id('db'));
    await settle();
    manager.stop();
    await assert.rejects(waiting, (e: unknown) => e instanceof CaError && e.code === 'CERT_MANAGER_STOPPED');
    assert.equal(clock.pendingTimers, 0);
    await assert.rejects(manager.fetch(id('web')), /stopped/);
  });

  test('toJSON has the shape istioctl reads (CertsDump)', async () => {
    const testCa = await TestCa.create();
    const inter = await testCa.intermediate();
    const web = id('web');
    let down = false;
    const manager = new CertManager({
      clock: systemClock,
      log: quiet,
      client: {
        fetchCertificate: async (identity) => {
          if (down) throw new CaError('CA_REQUEST_FAILED', 'certificate request failed: refused');
          if (identity.serviceAccount === 'pending') return new Promise(() => {});
          const issued = await inter.issue({ identity, freshKey: true });
          return workloadCertificateFromResponse({
            identity,
            keyPem: issued.key,
            publicKeySpki: createPublicKey(createPrivateKey(issued.key)).export({
              type: 'spki',
              format: 'der',
            }),
            certChain: issued.caResponse,
            now: Date.now(),
          });
        },
      },
    });
    const cert = await manager.fetch(web);
    down = true;
    await assert.rejects(manager.fetch(id('broken')));
    manager.prefetch(id('pending'));
    const dump = manager.toJSON();
    assert.deepEqual(
      dump.map((d) => [d.identity, d.state]),
      [
        ['spiffe://cluster.local/ns/test/sa/broken', 'Unavailable: certificate request failed: refused'],
        ['spiffe://cluster.local/ns/test/sa/pending', 'Initializing'],
        [formatIdentity(web), 'Available'],
      ],
    );
    const available = dump[2];
    assert.ok(available);
    assert.equal(available.certChain.length, 2, 'leaf and intermediate');
    assert.equal(available.rootCerts.length, 1);
    const leaf = available.certChain[0];
    assert.ok(leaf);
    assert.equal(leaf.serialNumber, BigInt(`0x${cert.serialNumber}`).toString(10));
    assert.match(leaf.validFrom, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(leaf.expirationTime, cert.notAfter.toISOString().replace('.000Z', 'Z'));
    assert.match(Buffer.from(leaf.pem, 'base64').toString(), /^-----BEGIN CERTIFICATE-----/);
    assert.deepEqual(JSON.parse(JSON.stringify({ certificates: manager })).certificates, dump);
    manager.stop();
  });

  test('the system clock chains timers longer than setTimeout allows instead of firing at once', async () => {
    let fired = false;
    const cancel = systemClock.setTimer(2 ** 31 + 10, () => {
      fired = true;
    });
    await new Promise((r) => setTimeout(r, 20));
    cancel();
    assert.equal(fired, false);
    const short = await new Promise<boolean>((resolve) => systemClock.setTimer(5, () => resolve(true)));
    assert.equal(short, true);
  });
});

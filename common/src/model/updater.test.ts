import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import * as sec from '@ambient/common/gen/istio/security/authorization_pb';
import * as wl from '@ambient/common/gen/istio/workload/workload_pb';
import { create } from '@bufbuild/protobuf';
import { type Logger, Logging } from '../log.ts';
import { ModelError } from './errors.ts';
import {
  addressUpdate,
  authorizationUpdate,
  ipBytes,
  loadState,
  pbAuthorization,
  pbService,
  pbWorkload,
  quietLog,
} from './fixtures/wds.ts';
import { ProxyState } from './proxy-state.ts';
import { type ProxyStateEvents, ProxyStateUpdater } from './updater.ts';

const good = (i: number) => pbWorkload({ name: `good-${i}`, namespace: 'ns', ips: [`10.0.0.${i}`] });

describe('ProxyStateUpdater: addresses', () => {
  test('one malformed workload is rejected while the rest of the push applies (checklist 27)', () => {
    const { state, updater } = loadState({});
    const bad = pbWorkload({ name: 'bad', namespace: 'ns', addresses: [new Uint8Array([1, 2, 3])] });
    const rejected = updater.handleAddresses(
      [addressUpdate(good(1)), addressUpdate(bad), addressUpdate(good(2))],
      [],
    );
    assert.deepEqual(
      rejected.map((r) => [r.name, r.error.code]),
      [['cluster1//Pod/ns/bad', 'ADDRESS_LENGTH']],
    );
    assert.match(rejected[0]?.reason ?? '', /cluster1\/\/Pod\/ns\/bad addresses\[0\] has 3 bytes/);
    assert.equal(state.workloads.size, 2);
    assert.ok(state.findWorkloadByUid('cluster1//Pod/ns/good-1'));
    assert.ok(state.findWorkloadByUid('cluster1//Pod/ns/good-2'));
    assert.equal(state.findWorkloadByUid('cluster1//Pod/ns/bad'), undefined);
  });

  test('a rejected update leaves the previous version in place', () => {
    const { state, updater } = loadState({ addresses: [good(1)] });
    const broken = pbWorkload({
      name: 'good-1',
      namespace: 'ns',
      tunnelProtocol: wl.TunnelProtocol.LEGACY_ISTIO_MTLS,
    });
    const rejected = updater.handleAddresses([addressUpdate(broken)], []);
    assert.equal(rejected[0]?.error.code, 'LEGACY_ISTIO_MTLS');
    assert.deepEqual(state.findWorkloadByUid('cluster1//Pod/ns/good-1')?.workloadIps, ['10.0.0.1']);
  });

  test('rejects names that do not match the content, empty Addresses and missing bodies', () => {
    const { state, updater } = loadState({});
    const svc = pbService({ name: 'web', namespace: 'ns' });
    const rejected = updater.handleAddresses(
      [
        { ...addressUpdate(good(1)), name: 'wrong-uid' },
        { ...addressUpdate(svc), name: 'ns/other.host' },
        { name: 'empty', resource: create(wl.AddressSchema, {}) },
        { name: 'nothing' },
      ],
      [],
    );
    assert.deepEqual(
      rejected.map((r) => [r.name, r.error.code]),
      [
        ['wrong-uid', 'RESOURCE_NAME_MISMATCH'],
        ['ns/other.host', 'RESOURCE_NAME_MISMATCH'],
        ['empty', 'EMPTY_ADDRESS'],
        ['nothing', 'MISSING_RESOURCE'],
      ],
    );
    assert.equal(state.workloads.size + state.services.size, 0);
  });

  test('removal by name: a workload by uid, a service by ns/hostname; unknown names are ignored', () => {
    const web = pbService({ name: 'web', namespace: 'ns', vips: ['10.96.0.1'] });
    const { state, updater } = loadState({ addresses: [good(1), good(2), web] });
    const rejected = updater.handleAddresses(
      [],
      ['cluster1//Pod/ns/good-1', 'ns/web.ns.svc.cluster.local', 'cluster1//Pod/ns/never', 'ns/nope'],
    );
    assert.deepEqual(rejected, []);
    assert.equal(state.findWorkloadByUid('cluster1//Pod/ns/good-1'), undefined);
    assert.equal(state.findWorkloadByAddress('', '10.0.0.1'), undefined);
    assert.ok(state.findWorkloadByUid('cluster1//Pod/ns/good-2'));
    assert.equal(state.findServiceByVip('', '10.96.0.1'), undefined);
    assert.equal(state.services.size, 0);
  });

  test('a name both removed and updated in one push ends up present', () => {
    const { state, updater } = loadState({ addresses: [good(1)] });
    updater.handleAddresses(
      [addressUpdate(pbWorkload({ name: 'good-1', namespace: 'ns', ips: ['10.0.0.99'] }))],
      ['cluster1//Pod/ns/good-1'],
    );
    assert.deepEqual(state.findWorkloadByUid('cluster1//Pod/ns/good-1')?.workloadIps, ['10.0.0.99']);
    assert.equal(state.findWorkloadByAddress('', '10.0.0.1'), undefined, 'the old address is unindexed');
  });

  test('emits workloadsChanged / servicesChanged with what changed', () => {
    const { updater } = loadState({ addresses: [good(1), pbService({ name: 'old', namespace: 'ns' })] });
    const events: Partial<Record<keyof ProxyStateEvents, unknown>>[] = [];
    updater.on('workloadsChanged', (e) =>
      events.push({
        workloadsChanged: { up: e.upserted.map((w) => w.name), rm: e.removed.map((w) => w.name) },
      }),
    );
    const off = updater.on('servicesChanged', (e) =>
      events.push({
        servicesChanged: { up: e.upserted.map((s) => s.name), rm: e.removed.map((s) => s.name) },
      }),
    );
    updater.handleAddresses(
      [addressUpdate(good(2)), addressUpdate(pbService({ name: 'new', namespace: 'ns' }))],
      ['cluster1//Pod/ns/good-1', 'ns/old.ns.svc.cluster.local'],
    );
    assert.deepEqual(events, [
      { workloadsChanged: { up: ['good-2'], rm: ['good-1'] } },
      { servicesChanged: { up: ['new'], rm: ['old'] } },
    ]);
    off();
    updater.handleAddresses([addressUpdate(pbService({ name: 'again', namespace: 'ns' }))], []);
    assert.equal(events.length, 2, 'unsubscribed listeners hear nothing; empty changes emit nothing');
  });

  test('a throwing listener does not undo the push or stop other listeners', () => {
    const state = new ProxyState();
    const lines: string[] = [];
    const updater = new ProxyStateUpdater(state, { log: captureLog(lines) });
    let heard = 0;
    updater.on('workloadsChanged', () => {
      throw new Error('listener bug');
    });
    updater.on('workloadsChanged', () => heard++);
    assert.deepEqual(updater.handleAddresses([addressUpdate(good(1))], []), []);
    assert.equal(heard, 1);
    assert.equal(state.workloads.size, 1);
    assert.equal(lines.length, 1);
    assert.match(lines[0] ?? '', /proxy state listener failed/);
    assert.match(lines[0] ?? '', /listener bug/);
  });

  test('a ProxyState has exactly one writer', () => {
    const state = new ProxyState();
    new ProxyStateUpdater(state, { log: quietLog() });
    assert.throws(
      () => new ProxyStateUpdater(state, { log: quietLog() }),
      (err: unknown) => err instanceof ModelError && err.code === 'WRITER_ALREADY_CLAIMED',
    );
  });
});

describe('ProxyStateUpdater: no partial push is visible', () => {
  test('the apply is synchronous and listeners see the whole push', () => {
    const { state, updater } = loadState({});
    const batch = Array.from({ length: 50 }, (_, i) => addressUpdate(good(i + 1)));
    let seenInListener = -1;
    updater.on('workloadsChanged', () => {
      seenInListener = state.workloads.size;
    });
    const result = updater.handleAddresses(batch, []);
    assert.ok(Array.isArray(result), 'handleAddresses returns its rejects, not a promise');
    assert.equal(seenInListener, 50);
  });

  test('an interleaved async reader sees each push whole or not at all', async () => {
    const { state, updater } = loadState({});
    const pushes = 40;
    const perPush = 25;
    const violations: string[] = [];
    let done = false;
    const reader = (async () => {
      while (!done) {
        // Every push replaces the whole set with one generation's workloads, all at once.
        const gens = new Set([...state.workloads.all()].map((w) => w.canonicalRevision));
        if (gens.size > 1) violations.push(`mixed generations ${[...gens].join(',')}`);
        const size = state.workloads.size;
        if (size !== 0 && size !== perPush) violations.push(`saw ${size} workloads`);
        await nextTurn();
      }
    })();
    let previous: string[] = [];
    for (let g = 0; g < pushes; g++) {
      const batch = Array.from({ length: perPush }, (_, i) =>
        addressUpdate(
          pbWorkload({
            name: `g${g}-${i}`,
            namespace: 'ns',
            canonicalRevision: `v${g}`,
            ips: [`10.${g}.0.${i + 1}`],
          }),
        ),
      );
      updater.handleAddresses(batch, previous);
      previous = batch.map((b) => b.name);
      await nextTurn();
    }
    done = true;
    await reader;
    assert.deepEqual(violations, []);
    assert.equal(state.workloads.size, perPush);
  });
});

describe('ProxyStateUpdater: authorizations', () => {
  const strict = pbAuthorization({
    name: 'strict',
    namespace: 'ns',
    action: sec.Action.DENY,
    scope: sec.Scope.NAMESPACE,
    rules: [
      { clauses: [{ matches: [{ notPrincipals: [{ matchType: { case: 'presence', value: {} } }] }] }] },
    ],
  });

  test('an invalid CIDR rejects that policy only; the others apply (checklist 20, 27)', () => {
    const { state, updater } = loadState({});
    const badCidr = pbAuthorization({
      name: 'bad',
      namespace: 'ns',
      rules: [{ clauses: [{ matches: [{ sourceIps: [{ address: ipBytes('10.0.0.0'), length: 40 }] }] }] }],
    });
    const rejected = updater.handleAuthorizations(
      [authorizationUpdate(strict), authorizationUpdate(badCidr)],
      [],
    );
    assert.deepEqual(
      rejected.map((r) => [r.name, r.error.code]),
      [['ns/bad', 'INVALID_CIDR']],
    );
    assert.ok(state.findPolicy('ns/strict'));
    assert.equal(state.findPolicy('ns/bad'), undefined);
  });

  test('removal by ns/name and policiesChanged with the affected keys', () => {
    const { state, updater } = loadState({ policies: [strict] });
    const events: ProxyStateEvents['policiesChanged'][] = [];
    updater.on('policiesChanged', (e) => events.push(e));
    updater.handleAuthorizations(
      [authorizationUpdate(pbAuthorization({ name: 'allow', namespace: 'ns' }))],
      ['ns/strict', 'ns/unknown'],
    );
    assert.equal(state.findPolicy('ns/strict'), undefined);
    assert.ok(state.findPolicy('ns/allow'));
    assert.deepEqual(events, [{ upserted: ['ns/allow'], removed: ['ns/strict'] }]);
    const mismatched = updater.handleAuthorizations(
      [{ ...authorizationUpdate(strict), name: 'ns/other' }],
      [],
    );
    assert.equal(mismatched[0]?.error.code, 'RESOURCE_NAME_MISMATCH');
    assert.equal(events.length, 1, 'a push that changed nothing emits nothing');
  });
});

/** A real logger writing JSON lines into `lines`. */
function captureLog(lines: string[]): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return new Logging({ destination: sink }).logger('xds');
}
